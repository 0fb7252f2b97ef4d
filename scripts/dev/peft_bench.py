"""PyTorch + PEFT reference for `autodidact train --bench`: the same LoRA (r=8, alpha=16, no dropout, all seven
projections), f32, random tokens, every token after the first trained, one full step = forward, backward,
gradient clipping and AdamW. Medians over timed steps after one warm-up.

    python3 scripts/dev/peft_bench.py HF_DIR [--threads 2] [--shapes 1x256,4x256] [--repeats 5]

HF_DIR is a Hugging Face folder, e.g. from `autodidact convert --dtype f32 --out HF_DIR`; a folder with only a
config.json gets random weights (the speed is the same). Prints one JSON object.
"""
import argparse
import glob
import json
import os
import resource
import statistics
import time

import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoConfig, AutoModelForCausalLM


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--shapes", default="1x256,4x256")
    ap.add_argument("--repeats", type=int, default=5)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(7)
    random_init = not glob.glob(os.path.join(a.model, "*.safetensors"))
    if random_init:
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(a.model)).float()
    else:
        model = AutoModelForCausalLM.from_pretrained(a.model, dtype=torch.float32)
    model.config.use_cache = False
    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules=targets))
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    vocab = model.config.vocab_size
    results = []
    for shape in a.shapes.split(","):
        b, t = (int(x) for x in shape.split("x"))
        ids = torch.randint(0, vocab, (b, t))
        steps = []
        for i in range(a.repeats + 1):
            start = time.perf_counter()
            loss = model(input_ids=ids, labels=ids).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
            if i > 0:
                steps.append(time.perf_counter() - start)
        step = statistics.median(steps)
        results.append({"batch": b, "seq_len": t, "tokens_per_second": b * (t - 1) / step, "median_step_s": step})
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"torch": torch.__version__, "threads": a.threads, "random_weights": random_init, "results": results, "peak_rss_mb_whole_run": peak_mb}))


if __name__ == "__main__":
    main()
