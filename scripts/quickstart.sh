#!/usr/bin/env bash
# The main job on the default model, from a fresh clone: fetch the model if missing, build, run the quickstart
# self-distillation loop (about 25 minutes on 2 cores; rerun to resume after an interruption), show the report.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/fetch-model.sh
cargo build --release
# Through cargo, so that a CARGO_TARGET_DIR set by the user is honoured.
bin() { cargo run --release --quiet -- "$@"; }
bin info | head -9
bin loop --config configs/quickstart.toml
cat runs/quickstart/report.md
