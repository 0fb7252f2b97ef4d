//! Non-linear 4-bit blocks (GGUF IQ4_NL and IQ4_XS): each 4-bit index picks one of sixteen signed bytes, spaced
//! closer near zero, which then scales like a Q4 value. Low nibbles are values 0..16 of 32, high ones 16..32.
//!
//! IQ4_NL: blocks of 32 with an f16 scale: value = d * T[q]. IQ4_XS: super-blocks of 256 with an f16 `d` and a 6-bit
//! scale per 32 values: value = (d * (ls - 32)) * T[q]. The products are exact in f32 (11 + 6 + 7 bits at most).
use half::f16;

use super::{Block, GgufBlock, QK, QK_K};

/// ggml's `kvalues_iq4nl`.
pub const IQ4_VALUES: [i8; 16] = [-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113];

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BlockIQ4NL {
    pub d: f16,
    pub qs: [u8; 16],
}

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BlockIQ4XS {
    pub d: f16,
    /// The high two bits of the eight 6-bit scales.
    pub scales_h: u16,
    /// The low four bits of the eight scales, two to a byte.
    pub scales_l: [u8; 4],
    pub qs: [u8; 128],
}

/// 16 bytes of indices as values times `d`, one exact product each, in ggml's order.
fn iq4(qs: &[u8], d: f32, out: &mut [f32]) {
    for j in 0..16 {
        out[j] = d * IQ4_VALUES[(qs[j] & 0x0F) as usize] as f32;
        out[j + 16] = d * IQ4_VALUES[(qs[j] >> 4) as usize] as f32;
    }
}

impl Block for BlockIQ4NL {
    const LEN: usize = QK;
    const NAME: &'static str = "IQ4_NL";
    fn dequantize(&self, out: &mut [f32]) {
        iq4(&self.qs, self.d.to_f32(), out);
    }
}

impl GgufBlock for BlockIQ4NL {
    const BYTES: usize = 18;
}

impl BlockIQ4XS {
    /// The scale of sub-block `s` (0..8), `d * (ls - 32)` as ggml forms it.
    #[inline(always)]
    pub fn sub_scale(&self, s: usize) -> f32 {
        let ls = ((self.scales_l[s / 2] >> (4 * (s % 2))) & 0x0F) as i32 | ((((self.scales_h >> (2 * s)) & 3) as i32) << 4);
        super::f16_to_f32(self.d) * (ls - 32) as f32
    }
    /// The 16 index bytes of sub-block `s`.
    #[inline(always)]
    pub fn sub_qs(&self, s: usize) -> &[u8; 16] {
        self.qs[16 * s..16 * s + 16].try_into().expect("16 bytes")
    }
}

impl Block for BlockIQ4XS {
    const LEN: usize = QK_K;
    const NAME: &'static str = "IQ4_XS";
    fn dequantize(&self, out: &mut [f32]) {
        for s in 0..8 {
            iq4(self.sub_qs(s), self.sub_scale(s), &mut out[32 * s..32 * s + 32]);
        }
    }
}

impl GgufBlock for BlockIQ4XS {
    const BYTES: usize = 136;
}
