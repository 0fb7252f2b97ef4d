#!/usr/bin/env bash
# Installs the loop's TRL backend (train.backend = "trl"), pinned, into .cache/trl-venv (ignored by git) and prints
# its bin folder (the `accelerate` the [trl] section starts by default). Idempotent: a complete install is reused.
#
#   torch 2.15.0, transformers 5.25.0, peft 0.21.2, accelerate 1.16.0, trl 1.16.0 (datasets and the rest as trl
#   requires them)
#
# PyTorch's wheel from PyPI is large (with its CUDA libraries, about 5 GB installed). TORCH_VENV=DIR reuses a
# virtual environment that already has these torch, transformers, peft and accelerate versions: the new one sees
# its packages (a .pth file) and installs only what is missing.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
venv="$root/.cache/trl-venv"
pins=("torch==2.15.0" "transformers==5.25.0" "peft==0.21.2" "accelerate==1.16.0" "trl==1.16.0")
if [ -n "${TORCH_VENV:-}" ]; then
  site="$("$TORCH_VENV/bin/python" -c 'import site; print(site.getsitepackages()[0])')"
  bin="$(BASE_SITE="$site" bash "$root/scripts/pinned-venv.sh" "$venv" "${pins[@]}")"
  # The base environment's console scripts point at its own Python: this one's `accelerate` must run here.
  printf '#!%s\nimport sys\nfrom accelerate.commands.accelerate_cli import main\nsys.exit(main())\n' "$bin/python" > "$bin/accelerate"
  chmod +x "$bin/accelerate"
  echo "$bin"
  exit 0
fi
exec bash "$root/scripts/pinned-venv.sh" "$venv" "${pins[@]}"
