"""llama.cpp's logits on real text, for checking ours against them.

    python llamacpp_logits.py MODEL.gguf OUT.json [--positions 200] [--full OUT.f32] [--lora ADAPTER.gguf]

Runs llama.cpp (llama-cpp-python) on the first POSITIONS tokens of a fixed English passage (BOS first), and writes
the token ids and, per position, the five largest logits with their ids (OUT.json); --full also writes every
logit as little-endian f32, positions x vocab (for the maximum difference over the whole vocabulary); --lora applies a
LoRA GGUF (llama.cpp's `--lora`) on the model.
"""
import argparse, json, struct, sys

import numpy as np
from llama_cpp import Llama

# The opening of Jane Austen's "Pride and Prejudice" (1813, public domain).
TEXT = (
    "It is a truth universally acknowledged, that a single man in possession of a good fortune, must be in want of "
    "a wife. However little known the feelings or views of such a man may be on his first entering a neighbourhood, "
    "this truth is so well fixed in the minds of the surrounding families, that he is considered the rightful "
    "property of some one or other of their daughters. \"My dear Mr. Bennet,\" said his lady to him one day, \"have "
    "you heard that Netherfield Park is let at last?\" Mr. Bennet replied that he had not. \"But it is,\" returned "
    "she; \"for Mrs. Long has just been here, and she told me all about it.\" Mr. Bennet made no answer. \"Do you "
    "not want to know who has taken it?\" cried his wife impatiently. \"You want to tell me, and I have no objection "
    "to hearing it.\" This was invitation enough. \"Why, my dear, you must know, Mrs. Long says that Netherfield is "
    "taken by a young man of large fortune from the north of England; that he came down on Monday in a chaise and "
    "four to see the place, and was so much delighted with it, that he agreed with Mr. Morris immediately; that he "
    "is to take possession before Michaelmas, and some of his servants are to be in the house by the end of next week.\""
)

ap = argparse.ArgumentParser()
ap.add_argument("model")
ap.add_argument("out")
ap.add_argument("--positions", type=int, default=200)
ap.add_argument("--full")
ap.add_argument("--lora")
a = ap.parse_args()
llm = Llama(model_path=a.model, lora_path=a.lora, n_ctx=512, n_batch=512, logits_all=True, n_threads=2, verbose=False)
ids = llm.tokenize(TEXT.encode(), add_bos=True, special=False)[: a.positions]
if len(ids) < a.positions:
    sys.exit(f"the passage has only {len(ids)} tokens")
llm.eval(ids)
logits = np.array(llm.scores[: len(ids)], dtype=np.float32)
top = []
for row in logits:
    best = np.argsort(-row, kind="stable")[:5]
    top.append([[int(i), float(row[i])] for i in best])
json.dump({"model": a.model.split("/")[-1], "lora": a.lora and a.lora.split("/")[-1], "llama_cpp_python": __import__("llama_cpp").__version__, "text": TEXT, "ids": ids, "top5": top}, open(a.out, "w"))
if a.full:
    logits.tofile(a.full)
print(f"{len(ids)} positions, vocab {logits.shape[1]}: {a.out}" + (f", {a.full}" if a.full else ""), file=sys.stderr)
