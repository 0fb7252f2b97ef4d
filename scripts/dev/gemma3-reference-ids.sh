#!/usr/bin/env bash
# Rewrites the reference token ids in tests/fixtures/gemma3_tokens.json with llama.cpp's own tokenizer on the Gemma 3
# GGUF (the texts stay as written there). tests/it/tokenizer_gemma3.rs checks our GGUF tokenizer against these ids.
# llama.cpp comes from PyPI as llama-cpp-python, built into .cache/ (scripts/dev/llamacpp-venv.sh).
set -euo pipefail
cd "$(dirname "$0")/../.."
bash scripts/fetch-gemma3.sh
source scripts/dev/llamacpp-venv.sh
llamacpp_venv native "-DGGML_NATIVE=ON"
"$venv/bin/python" - models/gemma-3-270m-q4_k_m.gguf tests/fixtures/gemma3_tokens.json <<'PY'
import json, sys
import llama_cpp

model, fixture = sys.argv[1:]
llm = llama_cpp.Llama(model_path=model, vocab_only=True, verbose=False)
with open(fixture, encoding="utf-8") as f:
    data = json.load(f)
data["llama_cpp_python"] = llama_cpp.__version__
for case in data["cases"]:
    case["ids"] = llm.tokenize(case["text"].encode(), add_bos=False, special=case["special"])
# One case per line keeps the file short and its diffs readable.
lines = [json.dumps(case, ensure_ascii=False) for case in data.pop("cases")]
head = json.dumps(data, ensure_ascii=False, indent=1)
with open(fixture, "w", encoding="utf-8") as f:
    f.write(head[:-2] + ',\n "cases": [\n  ' + ",\n  ".join(lines) + "\n ]\n}\n")
PY
echo "wrote tests/fixtures/gemma3_tokens.json" >&2
