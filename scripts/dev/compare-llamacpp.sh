#!/usr/bin/env bash
# Prompt and decode speed of autodidact on every SIMD path this CPU has, beside llama.cpp on the same model file,
# same thread count, in one run (medians of 3).
#
#   scripts/dev/compare-llamacpp.sh                # llama.cpp built for this CPU (native flags)
#   LLAMA_AVX2=1 scripts/dev/compare-llamacpp.sh   # llama.cpp built for AVX2 + FMA without AVX-512 (to compare the
#                                                  # AVX2 paths on an AVX-512 machine)
#   MODEL=models/gemma-3-270m-q4_k_m.gguf scripts/dev/compare-llamacpp.sh   # another model file (default SmolLM2)
#
# llama.cpp comes from PyPI (llama-cpp-python, built from source: about 15 minutes on 2 cores the first time) into
# a virtual environment under .cache/ (ignored by git). Nothing else on the machine should run meanwhile.
set -euo pipefail
cd "$(dirname "$0")/../.."
bash scripts/fetch-model.sh
model="${MODEL:-models/SmolLM2-135M-Instruct.Q4_1.gguf}"
threads="${THREADS:-2}"
flavour=native
cmake_args="-DGGML_NATIVE=ON"
if [ "${LLAMA_AVX2:-0}" = 1 ]; then
  flavour=avx2
  cmake_args="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AVX512=OFF"
fi
source scripts/dev/llamacpp-venv.sh
llamacpp_venv "$flavour" "$cmake_args"
cargo build --release --quiet
bin="${CARGO_TARGET_DIR:-target}/release/autodidact"

echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(grep -qw avx512f /proc/cpuinfo && echo avx512f || { grep -qw avx2 /proc/cpuinfo && echo avx2; } || echo baseline), $threads threads"
"$venv/bin/python" - "$model" "$threads" <<'PY'
import statistics, sys, time
from llama_cpp import Llama
path, threads = sys.argv[1], int(sys.argv[2])
llm = Llama(model_path=path, n_threads=threads, n_threads_batch=threads, n_ctx=1024, n_batch=512, verbose=False)
text = "The quick brown fox jumps over the lazy dog while 12 engineers measure tokens per second. " * 40
toks = llm.tokenize(text.encode(), add_bos=False)[:256]
prompt, decode = [], []
for _ in range(3):
    llm.reset()
    t = time.perf_counter(); llm.eval(toks); prompt.append(len(toks) / (time.perf_counter() - t))
    llm.reset(); llm.eval(toks[:64])
    t = time.perf_counter()
    for _ in range(64):
        llm.eval([llm.sample(temp=0.0)])
    decode.append(64 / (time.perf_counter() - t))
print(f"llama.cpp {llm.__class__.__module__.split('.')[0]}: prompt {statistics.median(prompt):.1f} tokens/s (256), decode {statistics.median(decode):.1f} tokens/s (batch 1)")
PY
for path in avx512 avx2 neon scalar; do
  if AUTODIDACT_SIMD=$path "$bin" bench --model "$model" --batch 1,8,32 --repeats 3 --json > /tmp/autodidact-bench-$$.json 2>/dev/null; then
    python3 - "$path" /tmp/autodidact-bench-$$.json <<'PY'
import json, sys
b = json.load(open(sys.argv[2]))
d = {x["batch"]: x["tokens_per_second"] for x in b["decode"]}
print(f"autodidact {sys.argv[1]:<7}: prompt {b['prompt_tokens_per_second']:.1f} tokens/s (256), decode {d[1]:.1f} tokens/s (batch 1), aggregate {d[8]:.1f} at batch 8, {d[32]:.1f} at batch 32 ({d[32] / d[1]:.1f}x), {b['peak_rss_mb']:.0f} MB")
g, peak = {x["batch"]: x["gflops"] for x in b["decode"]}, b["fma_peak_gflops"]
if peak:
    print(f"  of the path's multiply-add peak ({peak:.0f} GFLOP/s): prompt {100 * b['prompt_gflops'] / peak:.0f}%, batch 1 {100 * g[1] / peak:.0f}%, batch 32 {100 * g[32] / peak:.0f}%")
PY
  fi
done
rm -f /tmp/autodidact-bench-$$.json
