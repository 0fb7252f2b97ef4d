//! K-quant super-blocks of 256 values (GGUF Q2_K, Q3_K, Q4_K, Q5_K, Q6_K), as ggml lays them out.
//!
//! Q2_K: sixteen sub-blocks of 16 values with a 4-bit scale and a 4-bit minimum: value = (d * sc) * q - (dmin * m),
//! q in 0..4. Q3_K: sixteen sub-blocks of 16 with a 6-bit scale: value = (d * (sc - 32)) * q, q in -4..4 from two
//! low bits and a high bit in `hmask`.
//!
//! Q4_K and Q5_K: eight sub-blocks of 32 values, each with a 6-bit scale and a 6-bit minimum multiplied by the
//! block's f16 `d` and `dmin`: value = (d * sc) * q - (dmin * m). Q6_K: sixteen sub-blocks of 16 values with an
//! 8-bit signed scale: value = (d * sc) * (q - 32). The products are exact in f32 (at most 11 + 7 + 6 bits).
use half::f16;

use super::{Block, GgufBlock};

/// Values per super-block.
pub const QK_K: usize = 256;

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BlockQ2K {
    pub scales: [u8; 16],
    pub qs: [u8; 64],
    pub d: f16,
    pub dmin: f16,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BlockQ3K {
    pub hmask: [u8; 32],
    pub qs: [u8; 64],
    pub scales: [u8; 12],
    pub d: f16,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BlockQ4K {
    pub d: f16,
    pub dmin: f16,
    pub scales: [u8; 12],
    pub qs: [u8; 128],
}

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BlockQ5K {
    pub d: f16,
    pub dmin: f16,
    pub scales: [u8; 12],
    pub qh: [u8; 32],
    pub qs: [u8; 128],
}

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BlockQ6K {
    pub ql: [u8; 128],
    pub qh: [u8; 64],
    pub scales: [i8; 16],
    pub d: f16,
}

/// Scale and minimum of sub-block `j` (0..8), packed 6 bits each in 12 bytes (ggml's `get_scale_min_k4`).
#[inline(always)]
pub fn scale_min_k4(j: usize, q: &[u8; 12]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        ((q[j + 4] & 0x0F) | ((q[j - 4] >> 6) << 4), (q[j + 4] >> 4) | ((q[j] >> 6) << 4))
    }
}

/// Where the 2-bit values of 32-value sub-block `s` (0..8) of a Q2_K or Q3_K block sit: (offset into qs, shift).
/// Each half of 128 values takes 32 bytes of qs, four sub-blocks at shifts 0, 2, 4, 6.
#[inline(always)]
pub fn two_bit_layout(s: usize) -> (usize, u32) {
    (32 * (s / 4), 2 * (s % 4) as u32)
}

impl BlockQ2K {
    /// Scale and negated minimum of 16-value sub-block `h` (0..16): value = scale * q + min.
    #[inline(always)]
    pub fn half_scale(&self, h: usize) -> (f32, f32) {
        let sc = self.scales[h];
        (crate::quant::f16_to_f32(self.d) * (sc & 0x0F) as f32, -(crate::quant::f16_to_f32(self.dmin) * (sc >> 4) as f32))
    }
}

impl Block for BlockQ2K {
    const LEN: usize = QK_K;
    const NAME: &'static str = "Q2_K";
    fn dequantize(&self, out: &mut [f32]) {
        for s in 0..8 {
            let (q, shift) = two_bit_layout(s);
            for l in 0..32 {
                let (d, m) = self.half_scale(2 * s + l / 16);
                out[32 * s + l] = d * ((self.qs[q + l] >> shift) & 3) as f32 + m;
            }
        }
    }
}

impl GgufBlock for BlockQ2K {
    const BYTES: usize = 84;
}

impl BlockQ3K {
    /// The sixteen 6-bit scales minus 32 (ggml unpacks them with `kmask1`/`kmask2` from 12 bytes: the low four bits
    /// of each in bytes 0..8, the high two in bytes 8..12).
    #[inline(always)]
    pub fn scales(&self) -> [i8; 16] {
        let s = &self.scales;
        std::array::from_fn(|j| {
            let low = if j < 8 { s[j] & 0x0F } else { s[j - 8] >> 4 };
            let high = (s[8 + j % 4] >> (2 * (j / 4))) & 3;
            (low | (high << 4)) as i8 - 32
        })
    }
}

impl Block for BlockQ3K {
    const LEN: usize = QK_K;
    const NAME: &'static str = "Q3_K";
    fn dequantize(&self, out: &mut [f32]) {
        let (d, sc) = (self.d.to_f32(), self.scales());
        for s in 0..8 {
            let (q, shift) = two_bit_layout(s);
            for l in 0..32 {
                let v = ((self.qs[q + l] >> shift) & 3) as i32 - if self.hmask[l] >> s & 1 == 1 { 0 } else { 4 };
                out[32 * s + l] = d * sc[2 * s + l / 16] as f32 * v as f32;
            }
        }
    }
}

impl GgufBlock for BlockQ3K {
    const BYTES: usize = 110;
}

/// Scale and negated minimum of sub-block `s` of a Q4_K or Q5_K block, in f32: value = scale * q + min.
#[inline(always)]
fn sub_scale(d: f16, dmin: f16, scales: &[u8; 12], s: usize) -> (f32, f32) {
    let (sc, m) = scale_min_k4(s, scales);
    (crate::quant::f16_to_f32(d) * sc as f32, -(crate::quant::f16_to_f32(dmin) * m as f32))
}

impl BlockQ4K {
    /// Scale and negated minimum of sub-block `s`: value = scale * q + min.
    #[inline(always)]
    pub fn sub_scale(&self, s: usize) -> (f32, f32) {
        sub_scale(self.d, self.dmin, &self.scales, s)
    }
}

impl BlockQ5K {
    /// Scale and negated minimum of sub-block `s`: value = scale * q + min.
    #[inline(always)]
    pub fn sub_scale(&self, s: usize) -> (f32, f32) {
        sub_scale(self.d, self.dmin, &self.scales, s)
    }
}

impl Block for BlockQ4K {
    const LEN: usize = QK_K;
    const NAME: &'static str = "Q4_K";
    fn dequantize(&self, out: &mut [f32]) {
        // Sub-block 2t holds the low nibbles of qs[32t..32t + 32], sub-block 2t + 1 their high nibbles.
        for s in 0..8 {
            let (d, m) = self.sub_scale(s);
            let q = &self.qs[32 * (s / 2)..32 * (s / 2) + 32];
            for (o, &b) in out[32 * s..32 * s + 32].iter_mut().zip(q) {
                *o = d * ((b >> (4 * (s % 2))) & 0x0F) as f32 + m;
            }
        }
    }
}

impl GgufBlock for BlockQ4K {
    const BYTES: usize = 144;
}

impl Block for BlockQ5K {
    const LEN: usize = QK_K;
    const NAME: &'static str = "Q5_K";
    fn dequantize(&self, out: &mut [f32]) {
        // As Q4_K, with the fifth bit of value l of sub-block s in bit s of qh[l].
        for s in 0..8 {
            let (d, m) = self.sub_scale(s);
            let q = &self.qs[32 * (s / 2)..32 * (s / 2) + 32];
            for (l, o) in out[32 * s..32 * s + 32].iter_mut().enumerate() {
                let v = ((q[l] >> (4 * (s % 2))) & 0x0F) | (((self.qh[l] >> s) & 1) << 4);
                *o = d * v as f32 + m;
            }
        }
    }
}

impl GgufBlock for BlockQ5K {
    const BYTES: usize = 176;
}

impl BlockQ6K {
    /// Where sub-block `s` (0..8, 32 values) keeps its bits: (offset into ql, nibble shift, offset into qh, shift
    /// of its 2 high bits). Each half of 128 values interleaves four sub-blocks over 64 bytes of ql and 32 of qh.
    #[inline(always)]
    pub fn sub_layout(s: usize) -> (usize, u32, usize, u32) {
        let (half, u) = (s / 4, s % 4);
        (64 * half + 32 * (u % 2), 4 * (u / 2) as u32, 32 * half, 2 * u as u32)
    }
}

impl Block for BlockQ6K {
    const LEN: usize = QK_K;
    const NAME: &'static str = "Q6_K";
    fn dequantize(&self, out: &mut [f32]) {
        let d = self.d.to_f32();
        for s in 0..8 {
            let (ql, shl, qh, shh) = Self::sub_layout(s);
            for l in 0..32 {
                let q = (((self.ql[ql + l] >> shl) & 0x0F) | (((self.qh[qh + l] >> shh) & 3) << 4)) as i32 - 32;
                out[32 * s + l] = d * self.scales[2 * s + l / 16] as f32 * q as f32;
            }
        }
    }
}

impl GgufBlock for BlockQ6K {
    const BYTES: usize = 210;
}
