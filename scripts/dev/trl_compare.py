"""The TRL backend against autodidact's own trainer: for every round of a loop run trained with `train.backend =
"trl"`, trains the same rows with `autodidact train` from the same starting adapter (the round's
train/trl/start-adapter), seed (the config's + the round) and settings, and reports per step |loss difference|,
|grad norm difference| and the largest difference between the two trained adapters' weights.

    .cache/trl-venv/bin/python scripts/dev/trl_compare.py runs/trl-cpu [--bin target/release/autodidact] [--tol 1e-4]

Needs a run whose rounds continue the current adapter (train.mode = "continue": the round trained on its own
filter/dataset.jsonl) and dropout 0 (the trainers draw different dropout masks). Exits 1 when a step's loss differs
by more than --tol.
"""
import argparse
import glob
import json
import os
import subprocess
import sys
import tomllib

from safetensors.numpy import load_file


def lines(path):
    with open(path) as f:
        return [json.loads(x) for x in f if x.strip()]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("run")
    ap.add_argument("--bin", default="target/release/autodidact")
    ap.add_argument("--tol", type=float, default=1e-4)
    a = ap.parse_args()
    with open(os.path.join(a.run, "config.toml"), "rb") as f:
        cfg = tomllib.load(f)
    t = cfg["train"]
    if t.get("mode", "continue") != "continue" or t.get("dropout", 0.05) != 0:
        sys.exit("needs train.mode = continue and train.dropout = 0")
    worst = 0.0
    for trl_dir in sorted(glob.glob(os.path.join(a.run, "round-*", "train", "trl"))):
        rdir = os.path.dirname(os.path.dirname(trl_dir))
        rnd = int(os.path.basename(rdir).split("-")[1])
        out = os.path.join(a.run, "compare-autodidact", os.path.basename(rdir))
        cmd = [a.bin, "train", "--model", cfg["model"], "--adapter", os.path.join(trl_dir, "start-adapter"),
               "--data", os.path.join(rdir, "filter", "dataset.jsonl"), "--out", out, "--seed", str(t.get("seed", 0) + rnd),
               "--json"]
        for key in ["epochs", "batch_size", "grad_accum", "lr", "warmup", "min_lr_ratio", "max_grad_norm", "weight_decay"]:
            if key in t:
                cmd += ["--" + key.replace("_", "-"), str(t[key])]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        ours, trl = lines(os.path.join(out, "metrics.jsonl")), lines(os.path.join(rdir, "train", "metrics.jsonl"))
        if len(ours) != len(trl):
            sys.exit(f"{rdir}: {len(ours)} steps here, {len(trl)} with TRL")
        dl = [abs(x["loss"] - y["loss"]) for x, y in zip(ours, trl)]
        dg = [abs(x["grad_norm"] - y["grad_norm"]) for x, y in zip(ours, trl)]
        dlr = max(abs(x["lr"] - y["lr"]) for x, y in zip(ours, trl))
        wa = load_file(os.path.join(out, "adapter", "adapter_model.safetensors"))
        wb = load_file(os.path.join(rdir, "train", "adapter", "adapter_model.safetensors"))
        if sorted(wa) != sorted(wb):
            sys.exit(f"{rdir}: the adapters have different tensors")
        dw = max(float(abs(wa[k] - wb[k]).max()) for k in wa)
        scale = max(float(abs(wa[k]).max()) for k in wa)
        worst = max(worst, max(dl))
        print(f"round {rnd}: {len(ours)} steps; loss autodidact {ours[0]['loss']:.5f} -> {ours[-1]['loss']:.5f}, "
              f"TRL {trl[0]['loss']:.5f} -> {trl[-1]['loss']:.5f}; max |loss diff| {max(dl):.2e} (step {dl.index(max(dl)) + 1}), "
              f"max |grad norm diff| {max(dg):.2e}, max |lr diff| {dlr:.1e}; adapters: max |weight diff| {dw:.2e} (largest weight {scale:.3f})")
        print("  per step |loss diff|: " + " ".join(f"{d:.1e}" for d in dl))
    if worst > a.tol:
        sys.exit(f"a step's loss differs by {worst:.2e} > {a.tol}")


if __name__ == "__main__":
    main()
