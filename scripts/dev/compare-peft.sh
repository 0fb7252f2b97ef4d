#!/usr/bin/env bash
# LoRA training speed: `autodidact train --bench` on every SIMD path this CPU has, beside PyTorch + PEFT
# (scripts/dev/peft_bench.py: the same LoRA r=8 on all seven projections, f32, same thread count and shapes), in one
# run. Needs a Python with torch, transformers and peft (PYTHON=..., default python3); nothing is installed.
# Nothing else on the machine should run meanwhile.
#
#   PYTHON=/opt/torch/bin/python3 THREADS=2 SHAPES=1x256,4x256 scripts/dev/compare-peft.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
py="${PYTHON:-python3}"
if ! "$py" -c "import torch, transformers, peft" 2>/dev/null; then
  echo "error: $py cannot import torch, transformers and peft; point PYTHON at a Python that can" >&2
  exit 1
fi
bash scripts/fetch-model.sh
model="models/SmolLM2-135M-Instruct.Q4_1.gguf"
threads="${THREADS:-2}"
shapes="${SHAPES:-1x256,4x256}"
cargo build --release --quiet
bin="${CARGO_TARGET_DIR:-target}/release/autodidact"
hf=.cache/smollm2-135m-f32
[ -f "$hf/model.safetensors" ] || "$bin" convert --model "$model" --out "$hf" --dtype f32 >/dev/null

echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(grep -qw avx512f /proc/cpuinfo && echo avx512f || { grep -qw avx2 /proc/cpuinfo && echo avx2; } || echo baseline), $threads threads, shapes $shapes"
for path in avx512 avx2 neon scalar; do
  # A path this CPU cannot execute is refused at start-up (no output): skip it.
  json=$(AUTODIDACT_SIMD=$path RAYON_NUM_THREADS=$threads "$bin" train --bench --model "$model" --bench-shapes "$shapes" \
    --bench-repeats 3 --json 2>/dev/null) || continue
  echo "$json" | "$py" -c "
import json, sys
for r in json.load(sys.stdin)['results']:
    print(f\"autodidact $path: {r['batch']}x{r['seq_len']} {r['tokens_per_second']:.1f} trained tokens/s, {r['peak_rss_mb']:.0f} MB\")"
done
"$py" scripts/dev/peft_bench.py "$hf" --threads "$threads" --shapes "$shapes" --repeats 3 | "$py" -c "
import json, sys
b = json.load(sys.stdin)
for r in b['results']:
    print(f\"PyTorch {b['torch']} + PEFT: {r['batch']}x{r['seq_len']} {r['tokens_per_second']:.1f} trained tokens/s\")
print(f\"PyTorch peak RSS over the whole run: {b['peak_rss_mb_whole_run']:.0f} MB\")"
