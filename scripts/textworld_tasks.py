#!/usr/bin/env python3
"""Generates TextWorld games with tw-make and writes autodidact task files for them.

    python scripts/textworld_tasks.py OUT_DIR TW_MAKE PYTHON_WITH_TEXTWORLD

Games go to OUT_DIR/games/{train,dev,test}/ (120 train, 30 dev, 50 test; quests of 1 to 3 actions in worlds of 1
to 3 rooms, seeds apart per split), tasks to OUT_DIR/textworld.{train,dev,test}.jsonl. Each task names its game and
carries the game's walkthrough as its reference actions (privileged context for hinted rollouts and SDAR's
teacher, never shown to the trained model). A game whose opening text equals an earlier one's (train first, then dev, then test)
is dropped, so the splits share no game.
"""
import concurrent.futures
import json
import os
import subprocess
import sys

SPLITS = {"train": (120, 10_000), "dev": (30, 20_000), "test": (50, 30_000)}


def shape(seed):
    """Quest length (the difficulty) and world size for a game seed: 1, 2 or 3 of each, in turn."""
    length = 1 + seed % 3
    return length, 1 + (seed // 3) % 3


def make(tw_make, out, seed):
    length, rooms = shape(seed)
    path = os.path.join(out, f"g{seed}.z8")
    if not os.path.exists(path):
        subprocess.run(
            [tw_make, "custom", "--world-size", str(rooms), "--nb-objects", str(2 + rooms), "--quest-length", str(length),
             "--seed", str(seed), "--output", path, "-f", "--silent"],
            check=True, stdout=subprocess.DEVNULL)
    return seed, path


INFO = r'''
import json, sys, textworld
sys.path.insert(0, sys.argv[1])
from textworld_env import clean
out = []
for path in sys.argv[2:]:
    env = textworld.start(path, request_infos=textworld.EnvInfos(policy_commands=True, max_score=True))
    s = env.reset()
    out.append({"path": path, "walkthrough": s.policy_commands, "opening": clean(s.feedback)})
    env.close()
print(json.dumps(out))
'''


def main():
    out_dir, tw_make, python = sys.argv[1], sys.argv[2], sys.argv[3]
    here = os.path.dirname(os.path.abspath(__file__))
    games = os.path.join(out_dir, "games")
    seen = set()
    for split, (n, base) in SPLITS.items():
        os.makedirs(os.path.join(games, split), exist_ok=True)
        with concurrent.futures.ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
            made = list(pool.map(lambda s: make(tw_make, os.path.join(games, split), s), range(base, base + n)))
        info = json.loads(subprocess.run([python, "-c", INFO, os.path.join(here, "envs")] + [p for _, p in made],
                                         check=True, capture_output=True, text=True).stdout)
        tasks, dropped = [], 0
        for (seed, path), i in zip(made, info):
            if i["opening"] in seen:
                dropped += 1
                continue
            seen.add(i["opening"])
            length, _ = shape(seed)
            walk = i["walkthrough"]
            tasks.append({
                "id": f"tw-{split}-{seed}", "suite": "env", "split": split, "difficulty": length, "instruction": "",
                "tools": [], "data": {"kind": "env", "env": "textworld", "game": os.path.relpath(path, games)},
                "expected": {"kind": "reward"}, "max_turns": 2 * len(walk) + 4, "optimal_steps": len(walk),
                "reference": {"actions": walk},
            })
        with open(os.path.join(out_dir, f"textworld.{split}.jsonl"), "w") as f:
            for t in tasks:
                f.write(json.dumps(t) + "\n")
        print(f"{split}: {len(tasks)} games ({dropped} dropped as repeats)", file=sys.stderr)


if __name__ == "__main__":
    main()
