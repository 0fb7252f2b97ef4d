"""transformers' logits for the token ids of a llama.cpp reference file, and how both compare.

    python transformers_logits.py HF_FOLDER REFERENCE.json [--llamacpp-full LOGITS.f32] [--write]

HF_FOLDER is `autodidact convert`'s output (weights dequantized exactly, in f32). Prints top-1 agreement and the
maximum logit difference against llama.cpp's full logits when given; --write adds transformers' five largest
logits per position to REFERENCE.json (key `transformers_top5`), an f32 reference without llama.cpp's rounding of
activations to 8 bits.
"""
import argparse, json

import numpy as np
import torch
import transformers
from transformers import AutoModelForCausalLM

ap = argparse.ArgumentParser()
ap.add_argument("hf")
ap.add_argument("reference")
ap.add_argument("--llamacpp-full")
ap.add_argument("--write", action="store_true")
a = ap.parse_args()
ref = json.load(open(a.reference))
torch.set_num_threads(2)
model = AutoModelForCausalLM.from_pretrained(a.hf, torch_dtype=torch.float32, attn_implementation="eager").eval()
with torch.no_grad():
    logits = model(torch.tensor([ref["ids"]])).logits[0].float().numpy()
if a.llamacpp_full:
    theirs = np.fromfile(a.llamacpp_full, dtype=np.float32).reshape(logits.shape)
    same = int((logits.argmax(1) == theirs.argmax(1)).sum())
    print(f"transformers vs llama.cpp: top-1 equal at {same}/{len(logits)} positions, max |diff| {np.abs(logits - theirs).max():.4f}")
if a.write:
    top = []
    for row in logits:
        best = np.argsort(-row, kind="stable")[:5]
        top.append([[int(i), round(float(row[i]), 5)] for i in best])
    ref["transformers_top5"] = top
    ref["transformers"] = f"transformers {transformers.__version__}, torch {torch.__version__}, f32, eager attention, on `autodidact convert`'s folder"
    json.dump(ref, open(a.reference, "w"))
    print(f"wrote transformers_top5 to {a.reference}")
