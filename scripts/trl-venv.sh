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
base="${TORCH_VENV:-}"
if [ -n "$base" ]; then
  site="$("$base/bin/python" -c 'import site; print(site.getsitepackages()[0])')"
  stamp="$venv/.installed"
  want="${pins[*]} over $site"
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    echo "$venv/bin"
    exit 0
  fi
  rm -rf "$venv"
  python3 -m venv "$venv" >&2
  echo "$site" > "$("$venv/bin/python" -c 'import site; print(site.getsitepackages()[0])')/torch-venv.pth"
  if ! "$venv/bin/pip" install --quiet --disable-pip-version-check "${pins[@]}" >&2; then
    echo "error: could not install ${pins[*]} from PyPI into $venv (network or index unavailable?)" >&2
    exit 1
  fi
  # The base environment's console scripts point at its own Python: this one's `accelerate` must run here.
  printf '#!%s\nimport sys\nfrom accelerate.commands.accelerate_cli import main\nsys.exit(main())\n' "$venv/bin/python" > "$venv/bin/accelerate"
  chmod +x "$venv/bin/accelerate"
  echo "$want" > "$stamp"
  echo "$venv/bin"
  exit 0
fi
exec bash "$root/scripts/pinned-venv.sh" "$venv" "${pins[@]}"
