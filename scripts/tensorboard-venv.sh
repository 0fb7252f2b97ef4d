#!/usr/bin/env bash
# Installs TensorBoard, pinned, into .cache/tensorboard-venv (ignored by git) and prints its bin folder: the reader
# that scripts/tensorboard_check.py uses to read our event files back. Idempotent: a complete install is reused.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
exec bash "$root/scripts/pinned-venv.sh" "$root/.cache/tensorboard-venv" "tensorboard==2.21.0"
