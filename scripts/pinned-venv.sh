#!/usr/bin/env bash
# Usage: scripts/pinned-venv.sh VENV_DIR PACKAGE==VERSION...
# Installs the pinned packages from PyPI into VENV_DIR and prints its bin folder. Idempotent: a complete install of
# the same pins is reused; anything else is replaced. The one way scripts/mcp-servers.sh and scripts/env-venv.sh
# install their Python environments.
# BASE_SITE=DIR (optional): the new environment also sees the packages of that site-packages folder (a .pth file),
# so that pins it already satisfies are not downloaded again.
set -euo pipefail
venv="$1"
shift
pins=("$@")
stamp="$venv/.installed"
want="${pins[*]}${BASE_SITE:+ over $BASE_SITE}"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  echo "$venv/bin"
  exit 0
fi
rm -rf "$venv"
python3 -m venv "$venv" >&2
if [ -n "${BASE_SITE:-}" ]; then
  echo "$BASE_SITE" > "$("$venv/bin/python" -c 'import site; print(site.getsitepackages()[0])')/base-site.pth"
fi
if ! "$venv/bin/pip" install --quiet --disable-pip-version-check "${pins[@]}" >&2; then
  echo "error: could not install ${pins[*]} from PyPI into $venv (network or index unavailable?)" >&2
  exit 1
fi
echo "$want" > "$stamp"
echo "$venv/bin"
