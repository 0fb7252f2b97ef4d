#!/usr/bin/env bash
# Installs the Python packages an environment needs, pinned, into .cache/env-NAME-venv (ignored by git), and prints
# that environment's bin folder. Idempotent: a complete install is reused.
#   gym:       gymnasium==1.4.0 (the bridge's tests)
#   textworld: textworld==1.7.0 with gymnasium==1.4.0 (the TextWorld demonstration; tw-make included)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
name="${1:-}"
case "$name" in
  gym) pins=("gymnasium==1.4.0") ;;
  textworld) pins=("textworld==1.7.0" "gymnasium==1.4.0") ;;
  *) echo "usage: scripts/env-venv.sh gym|textworld" >&2; exit 2 ;;
esac
exec bash "$root/scripts/pinned-venv.sh" "$root/.cache/env-$name-venv" "${pins[@]}"
