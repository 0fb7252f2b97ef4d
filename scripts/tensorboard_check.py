"""Reads autodidact's TensorBoard event files back with TensorBoard's own reader (EventAccumulator) and checks that
they hold exactly the numbers of the JSONL files beside them: every number of every line, each step once.

    .cache/tensorboard-venv/bin/python scripts/tensorboard_check.py DIR...

DIR is a loop run folder (runs/<name>: metrics.jsonl's round lines against tensorboard/rounds, every round's
train*/metrics.jsonl against tensorboard/round-NNN/<sub>) or an `autodidact train --out` folder (metrics.jsonl
against tensorboard/). The TensorBoard install comes from scripts/tensorboard-venv.sh. Prints one line per pair
checked; exits 1 on the first difference.
"""
import glob
import json
import os
import sys

import numpy as np
from tensorboard.backend.event_processing import event_accumulator


def flatten(record, prefix, skip):
    """The scalars autodidact writes for a JSONL record: numbers, booleans as 1/0, objects flattened by '/'."""
    out = {}
    for k, v in record.items():
        if k in skip:
            continue
        tag = f"{prefix}/{k}"
        if isinstance(v, bool):
            out[tag] = 1.0 if v else 0.0
        elif isinstance(v, (int, float)):
            out[tag] = float(v)
        elif isinstance(v, dict):
            out.update(flatten(v, tag, ()))
    return out


def check(lines, step_key, events_dir, prefix, skip):
    want = {}
    for rec in lines:
        for tag, v in flatten(rec, prefix, skip).items():
            want.setdefault(tag, []).append((rec[step_key], np.float32(v)))
    acc = event_accumulator.EventAccumulator(events_dir, size_guidance={event_accumulator.SCALARS: 0})
    acc.Reload()
    tags = sorted(acc.Tags()["scalars"])
    if tags != sorted(want):
        sys.exit(f"{events_dir}: tags {tags} != the JSONL's {sorted(want)}")
    for tag in tags:
        got = [(e.step, np.float32(e.value)) for e in acc.Scalars(tag)]
        if got != want[tag]:
            sys.exit(f"{events_dir}: {tag}: {got} != the JSONL's {want[tag]}")
    steps = len({s for v in want.values() for s, _ in v})
    print(f"ok {events_dir}: {len(tags)} tags x {steps} steps equal the JSONL's")


def read_jsonl(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    for d in sys.argv[1:]:
        tb = os.path.join(d, "tensorboard")
        if os.path.isdir(os.path.join(tb, "rounds")):
            rounds = [r for r in read_jsonl(os.path.join(d, "metrics.jsonl")) if r.get("event") == "round"]
            check(rounds, "round", os.path.join(tb, "rounds"), "round", ("event", "round"))
            for steps in sorted(glob.glob(os.path.join(d, "round-*", "train*", "metrics.jsonl"))):
                sub = os.path.relpath(os.path.dirname(steps), d)
                check(read_jsonl(steps), "step", os.path.join(tb, sub), "train", ("step",))
        else:
            check(read_jsonl(os.path.join(d, "metrics.jsonl")), "step", tb, "train", ("step",))


if __name__ == "__main__":
    main()
