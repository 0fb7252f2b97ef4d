#!/usr/bin/env bash
# Tasks that no generator of ours wrote: arithmetic questions from DeepMind's mathematics_dataset (Apache-2.0,
# PyPI `mathematics_dataset==1.0.1`), converted with `autodidact tasks make` into train / dev / test task files
# under tasks/public/ (calculator tool, numeric matcher). configs/public-math.toml runs the loop on them.
#
#   scripts/public-tasks.sh && cargo run --release -- loop --config configs/public-math.toml
set -euo pipefail
cd "$(dirname "$0")/.."
venv=.cache/mathds-venv
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
# The generator needs the sympy of its time (1.5: later versions moved a function it imports).
"$venv/bin/pip" install -q mathematics_dataset==1.0.1 'sympy==1.5.1' 'numpy<2' absl-py six
mkdir -p tasks/public
"$venv/bin/python" scripts/public_tasks.py tasks/public/mathds.csv 70 0
bin=target/release/autodidact
[ -x "$bin" ] || cargo build --release
"$bin" tasks make --input tasks/public/mathds.csv --out tasks/public/mathds --split auto --dev-fraction 0.15 \
  --test-fraction 0.25 --seed 0 --tools calculator --matcher number:0.001 --max-turns 4
