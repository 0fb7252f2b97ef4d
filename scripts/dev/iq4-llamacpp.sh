#!/usr/bin/env bash
# IQ4_NL and IQ4_XS files beside llama.cpp: llama.cpp's own quantizer (llama-cpp-python's `llama_model_quantize`)
# rewrites a GGUF file as IQ4_NL and as IQ4_XS (IQ4_XS falls back to IQ4_NL where a row is not a multiple of 256
# long, so the IQ4_XS file holds both), then llama.cpp and autodidact compute the logits of the same 200 tokens of
# real text (scripts/dev/llamacpp_logits.py) on each file: top-1 agreement and the largest difference over the
# whole vocabulary, with the source file as the yardstick of how far llama.cpp and we differ anyway.
#
#   scripts/dev/iq4-llamacpp.sh                                         # SmolLM2 (Q4_1), work files in target/iq4
#   SOURCE=models/gemma-3-270m-q4_k_m.gguf scripts/dev/iq4-llamacpp.sh  # Gemma 3 270M (Q4_K_M)
#
# The source is already quantized, so its weights are requantized (allow_requantize): the files are real IQ4 files
# as llama.cpp writes them, not a measure of IQ4's quality. llama.cpp comes from PyPI (llama-cpp-python, built from
# source into .cache/: about 15 minutes on 2 cores the first time; scripts/dev/llamacpp-venv.sh).
set -euo pipefail
cd "$(dirname "$0")/../.."
bash scripts/fetch-model.sh
source=${SOURCE:-models/SmolLM2-135M-Instruct.Q4_1.gguf}
[ -f "$source" ] || { echo "$source: not found (Gemma 3: bash scripts/fetch-gemma3.sh)" >&2; exit 1; }
source scripts/dev/llamacpp-venv.sh
llamacpp_venv native "-DGGML_NATIVE=ON"
cargo build --release --quiet
py="$venv/bin/python"
work="${WORK:-target/iq4}"
mkdir -p "$work"
stem=$(basename "$source" .gguf)

"$py" - "$source" "$work/$stem" <<'PY'
import ctypes, sys
import llama_cpp as l
src, out = sys.argv[1:]
for name, ftype in [("IQ4_NL", l.LLAMA_FTYPE_MOSTLY_IQ4_NL), ("IQ4_XS", l.LLAMA_FTYPE_MOSTLY_IQ4_XS)]:
    p = l.llama_model_quantize_default_params()
    p.ftype, p.allow_requantize, p.nthread = ftype, True, 2
    rc = l.llama_model_quantize(src.encode(), f"{out}.{name}.gguf".encode(), ctypes.byref(p))
    assert rc == 0, f"llama_model_quantize {name}: {rc}"
    print(f"wrote {out}.{name}.gguf", file=sys.stderr)
PY
for f in "$source" "$work/$stem.IQ4_NL.gguf" "$work/$stem.IQ4_XS.gguf"; do
  name=$(basename "$f" .gguf)
  "$py" scripts/dev/llamacpp_logits.py "$f" "$work/$name.llama.json" --full "$work/$name.llama.f32"
  AUTODIDACT_LOGITS="$f $work/$name.llama.json $work/$name.ours.f32" \
    cargo test --release --quiet --test it model_gguf::our_logits_on_a_file -- --ignored --exact >/dev/null
  "${CARGO_TARGET_DIR:-target}/release/autodidact" info --model "$f" | grep "^tensor types"
  "$py" - "$work/$name" <<'PY'
import json, sys
import numpy as np
w = sys.argv[1]
n = len(json.load(open(f"{w}.llama.json"))["ids"])
theirs = np.fromfile(f"{w}.llama.f32", dtype=np.float32).reshape(n, -1)
ours = np.fromfile(f"{w}.ours.f32", dtype=np.float32).reshape(n, -1)
same = int((theirs.argmax(1) == ours.argmax(1)).sum())
print(f"{w.split('/')[-1]:<40} llama.cpp vs ours: top-1 equal at {same}/{n} positions, max |diff| {np.abs(theirs - ours).max():.3f}")
PY
done
