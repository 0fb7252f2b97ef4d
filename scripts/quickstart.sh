#!/usr/bin/env bash
# The main job on the default model, from a fresh clone: fetch the model if missing, build, run.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/fetch-model.sh
cargo build --release
bin=target/release/autodidact
$bin info | head -8
$bin generate --temperature 0 --max-new-tokens 64 \
  --prompt "A shop sells pencils at 3 for 2 dollars. How much do 12 pencils cost? Answer in one sentence."
$bin generate --num-samples 4 --temperature 0.8 --seed 1 --max-new-tokens 48 \
  --prompt "Name one thing a tool-using AI agent needs."
$bin bench --repeats 3
