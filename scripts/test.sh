#!/usr/bin/env bash
# The test suite: unit tests on tiny generated models plus end-to-end tests on the real default model.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/fetch-model.sh
bash scripts/fetch-gemma3.sh
# A fresh checkout builds everything once: incremental caches would only add work (set CARGO_INCREMENTAL=1 to
# keep them when rerunning the suite after small changes).
export CARGO_INCREMENTAL=${CARGO_INCREMENTAL:-0}
cargo test --release "$@"
