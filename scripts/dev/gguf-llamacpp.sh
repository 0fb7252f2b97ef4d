#!/usr/bin/env bash
# The GGUF exports in llama.cpp itself, on the default model: a LoRA adapter trained here (a few steps at a high
# learning rate on sentences of the reference passage with "Bennet" changed to "Darcy", so that it changes the
# model's predictions), exported as a merged F16 and Q8_0 GGUF and as a llama.cpp LoRA GGUF. llama.cpp
# (llama-cpp-python) computes logits on 200 tokens of real text (scripts/dev/llamacpp_logits.py) with the merged
# files alone and with the base model plus the LoRA file (`lora_path`, llama.cpp's `--lora`); each is compared with
# our own logits of base + adapter: top-1 agreement and the largest difference over the whole vocabulary. It also
# rewrites tests/fixtures/gguf_llamacpp_logits.json (llama.cpp's top-5 logits for the suite's seeded adapter).
#
#   scripts/dev/gguf-llamacpp.sh          # work files in target/gguf-llamacpp
#
# llama.cpp comes from PyPI (llama-cpp-python, built from source into .cache/: about 15 minutes on 2 cores the
# first time; scripts/dev/llamacpp-venv.sh).
set -euo pipefail
cd "$(dirname "$0")/../.."
bash scripts/fetch-model.sh
source scripts/dev/llamacpp-venv.sh
llamacpp_venv native "-DGGML_NATIVE=ON"
cargo build --release --quiet
bin="${CARGO_TARGET_DIR:-target}/release/autodidact"
base=models/SmolLM2-135M-Instruct.Q4_1.gguf
work="${WORK:-target/gguf-llamacpp}"
rm -rf "$work" && mkdir -p "$work/data"
py="$venv/bin/python"

# A dataset in `filter`'s row format, tokenized by llama.cpp (its ids are ours on this model), the loss on the
# assistant's turn.
"$py" - "$base" "$work/data/dataset.jsonl" <<'PY'
import json, re, sys
sys.path.insert(0, "scripts/dev")
from llama_cpp import Llama
src = open("scripts/dev/llamacpp_logits.py").read()
text = eval(re.search(r"TEXT = (\(.*?\n\))", src, re.S).group(1)).replace("Bennet", "Darcy")
llm = Llama(model_path=sys.argv[1], vocab_only=True, verbose=False)
tok = lambda s: llm.tokenize(s.encode(), add_bos=False, special=True)
sentences = [s.strip() for s in re.split(r"(?<=[.?!\"])\s+", text) if len(s.strip()) > 20]
with open(sys.argv[2], "w") as f:
    for i, s in enumerate(sentences):
        prompt = tok("<|im_start|>user\nContinue the story.<|im_end|>\n<|im_start|>assistant\n")
        answer = tok(s + "<|im_end|>")
        row = {"id": f"darcy-{i}#0", "suite": "text", "difficulty": 1,
               "messages": [{"role": "user", "content": "Continue the story."}, {"role": "assistant", "content": s}],
               "tools": [], "token_ids": prompt + answer, "loss_mask": [0] * len(prompt) + [1] * len(answer)}
        f.write(json.dumps(row) + "\n")
print(f"{len(sentences)} rows", file=sys.stderr)
PY
"$bin" train --model "$base" --data "$work/data/dataset.jsonl" --out "$work/run" --lr 3e-3 --warmup 2 --max-steps 30 --dropout 0 --seed 1
cp -r "$work/run/adapter" "$work/adapter"
"$bin" export --model "$base" --adapter "$work/adapter" --gguf "$work/merged-f16.gguf" --gguf-type f16 --lora-gguf "$work/lora.gguf"
"$bin" export --model "$base" --adapter "$work/adapter" --gguf "$work/merged-q8_0.gguf" --gguf-type q8_0

logits() { "$py" scripts/dev/llamacpp_logits.py "$@"; }
logits "$base" "$work/ids.json" --full "$work/llama-base.f32"
logits "$work/merged-f16.gguf" "$work/llama-merged-f16.json" --full "$work/llama-merged-f16.f32"
logits "$work/merged-q8_0.gguf" "$work/llama-merged-q8_0.json" --full "$work/llama-merged-q8_0.f32"
logits "$base" "$work/llama-lora.json" --full "$work/llama-lora.f32" --lora "$work/lora.gguf"
AUTODIDACT_GGUF_CHECK="$PWD/$work" cargo test --release --quiet --test it export_gguf::our_logits_for_the_llama_cpp_check -- --ignored --exact >/dev/null

# The suite's fixture: the same files for its seeded adapter (tests/it/export_gguf.rs rebuilds the adapter).
"$bin" export --model "$base" --adapter "$work/adapter-seeded" --gguf "$work/seeded-q8_0.gguf" --gguf-type q8_0 --lora-gguf "$work/seeded-lora.gguf"
logits "$work/seeded-q8_0.gguf" "$work/seeded-q8_0.json"
logits "$base" "$work/seeded-lora.json" --lora "$work/seeded-lora.gguf"
"$py" - "$work" "$(git rev-parse --short HEAD)" tests/fixtures/gguf_llamacpp_logits.json <<'PY'
import json, sys
w, commit, out = sys.argv[1:]
merged, lora = json.load(open(f"{w}/seeded-q8_0.json")), json.load(open(f"{w}/seeded-lora.json"))
assert merged["ids"] == lora["ids"]
r = lambda rows: [[[i, round(x, 4)] for i, x in row] for row in rows]
fixture = {"what": "llama.cpp's five largest logits per position, on the merged Q8_0 GGUF and on the base GGUF with the LoRA GGUF of tests/it/export_gguf.rs's seeded adapter (scripts/dev/gguf-llamacpp.sh)",
           "commit": commit, "llama_cpp_python": merged["llama_cpp_python"], "ids": merged["ids"],
           "merged_q8_0_top5": r(merged["top5"]), "lora_top5": r(lora["top5"])}
json.dump(fixture, open(out, "w"), separators=(",", ":"))
print(f"wrote {out}", file=sys.stderr)
PY

"$py" - "$work" <<'PY'
import json, sys
import numpy as np
w = sys.argv[1]
n = len(json.load(open(f"{w}/ids.json"))["ids"])
load = lambda name: np.fromfile(f"{w}/{name}.f32", dtype=np.float32).reshape(n, -1)
ours_base, ours = load("ours-base"), load("ours-adapter")
changed = int((ours_base.argmax(1) != ours.argmax(1)).sum())
print(f"the adapter changes our top-1 token at {changed}/{n} positions (max |logit change| {np.abs(ours - ours_base).max():.2f})")
def report(what, theirs, mine):
    same = int((theirs.argmax(1) == mine.argmax(1)).sum())
    print(f"{what:<44} top-1 equal at {same}/{n} positions, max |diff| {np.abs(theirs - mine).max():.3f}")
report("llama.cpp base (Q4_1) vs ours, no adapter", load("llama-base"), ours_base)
report("llama.cpp merged F16 vs ours base + adapter", load("llama-merged-f16"), ours)
report("llama.cpp merged Q8_0 vs ours base + adapter", load("llama-merged-q8_0"), ours)
report("llama.cpp base + LoRA GGUF vs ours + adapter", load("llama-lora"), ours)
PY
