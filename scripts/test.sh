#!/usr/bin/env bash
# The test suite: unit tests on tiny generated models plus end-to-end tests on the real default model.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/fetch-model.sh
cargo test --release "$@"
