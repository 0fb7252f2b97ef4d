//! 5-bit blocks of 32 values (GGUF Q5_0 and Q5_1): the low four bits in nibbles, the fifth bit of value `i` in bit
//! `i` of `qh`. Q4_K_M files use them for matrices whose rows are not a multiple of 256 long.
use half::f16;

use super::{Block, GgufBlock, QK};

/// value = d * (q - 16).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BlockQ5_0 {
    pub d: f16,
    pub qh: [u8; 4],
    pub qs: [u8; 16],
}

/// value = d * q + m.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BlockQ5_1 {
    pub d: f16,
    pub m: f16,
    pub qh: [u8; 4],
    pub qs: [u8; 16],
}

/// The 5-bit integers of a block, value order: low nibbles are values 0..16, high nibbles 16..32.
fn q5(qh: [u8; 4], qs: &[u8; 16]) -> [u8; 32] {
    let h = u32::from_le_bytes(qh);
    std::array::from_fn(|i| {
        let low = if i < 16 { qs[i] & 0x0F } else { qs[i - 16] >> 4 };
        low | ((((h >> i) & 1) as u8) << 4)
    })
}

impl Block for BlockQ5_0 {
    const LEN: usize = QK;
    const NAME: &'static str = "Q5_0";
    fn dequantize(&self, out: &mut [f32]) {
        let d = self.d.to_f32();
        for (o, q) in out.iter_mut().zip(q5(self.qh, &self.qs)) {
            *o = (q as i32 - 16) as f32 * d;
        }
    }
}

impl GgufBlock for BlockQ5_0 {
    const BYTES: usize = 22;
}

impl Block for BlockQ5_1 {
    const LEN: usize = QK;
    const NAME: &'static str = "Q5_1";
    fn dequantize(&self, out: &mut [f32]) {
        let (d, m) = (self.d.to_f32(), self.m.to_f32());
        for (o, q) in out.iter_mut().zip(q5(self.qh, &self.qs)) {
            *o = q as f32 * d + m;
        }
    }
}

impl GgufBlock for BlockQ5_1 {
    const BYTES: usize = 24;
}
