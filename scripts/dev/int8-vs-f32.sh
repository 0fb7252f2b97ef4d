#!/usr/bin/env bash
# One-thread microbenchmark: 8-bit activations with integer dot products (llama.cpp's arithmetic) against our
# f32 panels, for a batch of rows on AVX2 + FMA. Run it on a quiet machine; see scripts/dev/int8_vs_f32.rs.
set -euo pipefail
cd "$(dirname "$0")/../.."
out=target/int8-vs-f32
mkdir -p target
rustc --edition 2021 -C opt-level=3 -o "$out" scripts/dev/int8_vs_f32.rs
taskset -c 0 "$out" 2>/dev/null || "$out"
