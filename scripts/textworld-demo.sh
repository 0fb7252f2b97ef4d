#!/usr/bin/env bash
# The TextWorld demonstration: installs TextWorld (pinned, scripts/env-venv.sh), generates the games and tasks into
# .cache/textworld/ (scripts/textworld_tasks.py, tw-make), runs the filtered loop of configs/textworld.toml into
# runs/textworld/ and, with `sdar` as argument, also the SDAR round of configs/textworld-sdar.toml.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/fetch-model.sh
bin="$(bash scripts/env-venv.sh textworld)"
if [ ! -f .cache/textworld/textworld.test.jsonl ]; then
  python3 scripts/textworld_tasks.py .cache/textworld "$bin/tw-make" "$bin/python"
fi
cargo build --release
cargo run --release --quiet -- loop --config configs/textworld.toml
cat runs/textworld/report.md
if [ "${1:-}" = "sdar" ]; then
  cargo run --release --quiet -- loop --config configs/textworld-sdar.toml
  cat runs/textworld-sdar/report.md
fi
