"""Writes tests/fixtures/iq4_nl.bin and iq4_xs.bin: random IQ4_NL and IQ4_XS blocks with the values gguf-py's numpy
dequantization (an implementation of ggml's definition independent of ours) gives them.

Pinned (the version the checked-in files were written with):

    bash scripts/pinned-venv.sh .cache/gguf-py-venv gguf==0.19.0
    .cache/gguf-py-venv/bin/python scripts/dev/make_iq4_fixture.py

Each file: the block count (u32, little-endian), the blocks as GGUF stores them, then every value as f32.
"""

import pathlib
import struct

import numpy as np
from gguf import GGMLQuantizationType, quants
from gguf.constants import GGML_QUANT_SIZES

OUT = pathlib.Path(__file__).resolve().parents[2] / "tests" / "fixtures"


def write(name: str, qtype: GGMLQuantizationType, n_blocks: int, seed: int) -> None:
    block_size, type_size = GGML_QUANT_SIZES[qtype]
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 256, size=(n_blocks, type_size), dtype=np.uint8)
    # Finite scales of either sign, zero included: the first two bytes of every block are its f16 `d`.
    d = rng.uniform(-0.05, 0.05, size=n_blocks).astype(np.float16)
    d[0] = 0.0
    blocks[:, :2] = d.view(np.uint8).reshape(n_blocks, 2)
    values = quants.dequantize(blocks, qtype).astype(np.float32).reshape(-1)
    assert values.size == n_blocks * block_size
    data = struct.pack("<I", n_blocks) + blocks.tobytes() + values.astype("<f4").tobytes()
    (OUT / name).write_bytes(data)


write("iq4_nl.bin", GGMLQuantizationType.IQ4_NL, 64, 20)
write("iq4_xs.bin", GGMLQuantizationType.IQ4_XS, 16, 23)
