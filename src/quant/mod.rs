//! Quantized weight blocks as stored in GGUF files, below both the model and the SIMD kernels that read them.
//!
//! Every block type here dequantizes exactly as ggml defines it (ggml-quants.c, `dequantize_row_*`): each value
//! is one product of a scale and a small integer, exact in f32, plus at most one addition of a minimum, so any
//! kernel that forms the same product and sum gives ggml's bits, fused multiply-add or not.
use half::f16;

mod iq4;
mod kquant;
mod q5;

pub use iq4::{BlockIQ4NL, BlockIQ4XS, IQ4_VALUES};
pub use kquant::{two_bit_layout, BlockQ2K, BlockQ3K, BlockQ4K, BlockQ5K, BlockQ6K, QK_K};
pub use q5::{BlockQ5_0, BlockQ5_1};

/// Values per sub-block: the unit in which the kernels dequantize every type.
pub const QK: usize = 32;

/// A quantized block type as the runtime keeps it in memory.
pub trait Block: Copy + Send + Sync + std::fmt::Debug + 'static {
    /// Values per block (32, or 256 for the K types).
    const LEN: usize;
    /// Name as ggml and llama.cpp print it.
    const NAME: &'static str;
    /// The block's values, as ggml dequantizes them, into `out[..LEN]`.
    fn dequantize(&self, out: &mut [f32]);
}

/// Blocks stored in memory byte for byte as in GGUF files (`#[repr(C)]`, fields of bytes and little-endian f16s,
/// every bit pattern valid).
pub trait GgufBlock: Block {
    /// Bytes per block in the file.
    const BYTES: usize;
    fn from_bytes(b: &[u8]) -> Self {
        assert!(b.len() >= Self::BYTES && std::mem::size_of::<Self>() == Self::BYTES);
        // SAFETY: `Self` is `repr(C)` with exactly BYTES bytes of plain integer fields (size checked), every bit
        // pattern is a valid value, and `b` holds BYTES bytes; the read is unaligned. Both file and memory are
        // little-endian on every supported target.
        unsafe { std::ptr::read_unaligned(b.as_ptr() as *const Self) }
    }
}

#[cfg(not(target_endian = "little"))]
compile_error!("GGUF blocks are read in place: little-endian targets only");

/// 4-bit block with scale and minimum, value = d * q + m (GGUF Q4_1 layout; Q4_0 converts losslessly with
/// m = -8 d). Low nibbles hold elements 0..16, high nibbles 16..32.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BlockQ4 {
    pub d: f16,
    pub m: f16,
    pub qs: [u8; 16],
}

/// 8-bit block, value = d * q (GGUF Q8_0 layout).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BlockQ8 {
    pub d: f16,
    pub qs: [i8; 32],
}

impl BlockQ4 {
    pub fn from_q4_1_bytes(b: &[u8]) -> Self {
        let mut qs = [0u8; 16];
        qs.copy_from_slice(&b[4..20]);
        BlockQ4 { d: f16::from_le_bytes([b[0], b[1]]), m: f16::from_le_bytes([b[2], b[3]]), qs }
    }
    pub fn from_q4_0_bytes(b: &[u8]) -> Self {
        let d = f16::from_le_bytes([b[0], b[1]]);
        let mut qs = [0u8; 16];
        qs.copy_from_slice(&b[2..18]);
        // -8 * d is exact in f16 (a power-of-two multiple), so the conversion loses nothing.
        BlockQ4 { d, m: -(d * f16::from_f32(8.0)), qs }
    }
}

impl Block for BlockQ4 {
    const LEN: usize = QK;
    const NAME: &'static str = "Q4_1";
    fn dequantize(&self, out: &mut [f32]) {
        let (d, m) = (self.d.to_f32(), self.m.to_f32());
        for i in 0..16 {
            out[i] = d * (self.qs[i] & 0x0F) as f32 + m;
            out[i + 16] = d * (self.qs[i] >> 4) as f32 + m;
        }
    }
}

impl Block for BlockQ8 {
    const LEN: usize = QK;
    const NAME: &'static str = "Q8_0";
    fn dequantize(&self, out: &mut [f32]) {
        let d = self.d.to_f32();
        for (o, &q) in out.iter_mut().zip(&self.qs) {
            *o = d * q as f32;
        }
    }
}

impl GgufBlock for BlockQ8 {
    const BYTES: usize = 34;
}

impl BlockQ8 {
    /// Round-to-nearest Q8_0 quantization (used for tests and for quantizing f32 checkpoints on request).
    pub fn quantize(x: &[f32]) -> Self {
        let amax = x.iter().fold(0f32, |a, v| a.max(v.abs()));
        let d = amax / 127.0;
        let id = if d > 0.0 { 1.0 / d } else { 0.0 };
        let mut qs = [0i8; 32];
        for (q, v) in qs.iter_mut().zip(x) {
            *q = (v * id).round() as i8;
        }
        BlockQ8 { d: f16::from_f32(d), qs }
    }
}

/// f16 -> f32 in plain integer and float operations, so that it inlines into vectorized kernels (the `half`
/// crate checks for F16C at run time on every call when the build does not assume it).
#[inline(always)]
pub fn f16_to_f32(h: f16) -> f32 {
    let h = h.to_bits() as u32;
    let (sign, mag) = ((h & 0x8000) << 16, h & 0x7FFF);
    let v = if mag >= 0x7C00 {
        f32::from_bits(0x7F80_0000 | ((mag & 0x3FF) << 13))
    } else {
        // Exponent and mantissa moved into f32 position, then rebiased by 2^112: exact, subnormals included.
        f32::from_bits(mag << 13) * f32::from_bits(0x7780_0000)
    };
    f32::from_bits(v.to_bits() | sign)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f16_conversion_is_exact_for_every_value() {
        for bits in 0..=u16::MAX {
            let h = f16::from_bits(bits);
            let (a, b) = (f16_to_f32(h), h.to_f32());
            assert!(a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan()), "{bits:#06x}: {a} vs {b}");
        }
    }

    #[test]
    fn q4_0_converts_losslessly() {
        let mut bytes = vec![0u8; 18];
        bytes[..2].copy_from_slice(&f16::from_f32(0.037).to_le_bytes());
        for (i, b) in bytes[2..].iter_mut().enumerate() {
            *b = (i * 37 % 256) as u8;
        }
        let blk = BlockQ4::from_q4_0_bytes(&bytes);
        let mut out = [0f32; 32];
        blk.dequantize(&mut out);
        let d = f16::from_f32(0.037).to_f32();
        for i in 0..16 {
            assert_eq!(out[i], d * ((bytes[2 + i] & 0x0F) as f32 - 8.0));
            assert_eq!(out[i + 16], d * ((bytes[2 + i] >> 4) as f32 - 8.0));
        }
    }
}
