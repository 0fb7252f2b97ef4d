"""Question/answer pairs from DeepMind's mathematics_dataset (Apache-2.0; PyPI mathematics_dataset==1.0.1), the
generator behind "Analysing Mathematical Reasoning Abilities of Neural Models" (Saxton et al., 2019). Writes a CSV
(id, question, answer) for `autodidact tasks make`. Usage: python public_tasks.py OUT.csv [PER_MODULE] [SEED]"""
import csv
import random
import sys

import numpy as np
from mathematics_dataset import generate
from mathematics_dataset.modules import modules

# Arithmetic modules whose answers are numbers (integers, decimals or fractions such as -51/106), at the
# dataset's own "train-easy" entropy level.
MODULES = ["add_or_sub", "add_sub_multiple", "mul", "div", "mixed", "mul_div_multiple"]


def main():
    out = sys.argv[1]
    per = int(sys.argv[2]) if len(sys.argv) > 2 else 70
    seed = int(sys.argv[3]) if len(sys.argv) > 3 else 0
    random.seed(seed)
    np.random.seed(seed)
    arithmetic = modules.train(generate._make_entropy_fn(0, 3))["arithmetic"]
    seen, rows = set(), []
    for name in MODULES:
        made = 0
        while made < per:
            problem, _ = generate.sample_from_module(arithmetic[name])
            q, a = str(problem.question).strip(), str(problem.answer).strip()
            if q in seen:
                continue
            seen.add(q)
            rows.append({"id": f"mathds-{name}-{made}", "question": q, "answer": a})
            made += 1
    with open(out, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["id", "question", "answer"])
        w.writeheader()
        w.writerows(rows)
    print(f"wrote {len(rows)} question/answer pairs ({per} per module: {', '.join(MODULES)}) to {out}")


if __name__ == "__main__":
    main()
