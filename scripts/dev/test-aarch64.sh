#!/usr/bin/env bash
# Cross-builds for aarch64 and runs the SIMD kernel tests (NEON and portable paths) and the real-model
# bit-identity tests under qemu-user, on an x86-64 machine. Not part of scripts/test.sh (emulation is slow).
# Needs: rustup target add aarch64-unknown-linux-gnu; apt-get install gcc-aarch64-linux-gnu qemu-user
set -euo pipefail
cd "$(dirname "$0")/../.."
bash scripts/fetch-model.sh
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="qemu-aarch64 -L /usr/aarch64-linux-gnu"
export CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc
cargo test --release --target aarch64-unknown-linux-gnu --lib -- simd quant:: model::lora sample::params model::gguf_header
cargo test --release --target aarch64-unknown-linux-gnu --test it -- model_gguf::kv_cached model_gguf::batched model_gguf::quantized_weights
