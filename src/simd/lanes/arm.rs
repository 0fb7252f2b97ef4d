//! The aarch64 lanes: NEON (4 lanes).
use super::{f16_to_f32, BlockQ4, BlockQ8, Lanes, IQ4_VALUES, QK};
use std::arch::aarch64::*;

/// NEON (baseline on aarch64): 4 lanes, 32 registers.
#[derive(Clone, Copy)]
pub struct Neon(float32x4_t);

// SAFETY: NEON is part of the aarch64 baseline.
unsafe impl Lanes for Neon {
    const N: usize = 4;
    const REGISTERS: usize = 32;
    type Block = [Neon; 8];
    #[inline(always)]
    fn zero_block() -> Self::Block {
        [Self::zero(); QK / Self::N]
    }
    #[inline(always)]
    unsafe fn bytes(p: *const u8, shift: u32, mask: u32) -> Self {
        let b = vreinterpret_u8_u32(vdup_n_u32(std::ptr::read_unaligned(p as *const u32)));
        let v = vmovl_u16(vget_low_u16(vmovl_u8(b)));
        let v = vandq_u32(vshlq_u32(v, vdupq_n_s32(-(shift as i32))), vdupq_n_u32(mask));
        Neon(vcvtq_f32_u32(v))
    }
    #[inline(always)]
    fn bits(word: u32, first: u32) -> Self {
        unsafe {
            let lanes: [i32; 4] = [0, 1, 2, 3];
            let at = vaddq_s32(vdupq_n_s32(first as i32), vld1q_s32(lanes.as_ptr()));
            let v = vandq_u32(vshlq_u32(vdupq_n_u32(word), vnegq_s32(at)), vdupq_n_u32(1));
            Neon(vcvtq_f32_u32(v))
        }
    }
    #[inline(always)]
    fn zero() -> Self {
        unsafe { Neon(vdupq_n_f32(0.0)) }
    }
    #[inline(always)]
    fn splat(v: f32) -> Self {
        unsafe { Neon(vdupq_n_f32(v)) }
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> Self {
        Neon(vld1q_f32(p))
    }
    #[inline(always)]
    unsafe fn store(self, p: *mut f32) {
        vst1q_f32(p, self.0)
    }
    #[inline(always)]
    fn add(self, o: Self) -> Self {
        unsafe { Neon(vaddq_f32(self.0, o.0)) }
    }
    #[inline(always)]
    fn sub(self, o: Self) -> Self {
        unsafe { Neon(vsubq_f32(self.0, o.0)) }
    }
    #[inline(always)]
    fn mul(self, o: Self) -> Self {
        unsafe { Neon(vmulq_f32(self.0, o.0)) }
    }
    #[inline(always)]
    fn div(self, o: Self) -> Self {
        unsafe { Neon(vdivq_f32(self.0, o.0)) }
    }
    #[inline(always)]
    fn max(self, o: Self) -> Self {
        unsafe { Neon(vmaxq_f32(self.0, o.0)) }
    }
    #[inline(always)]
    fn min(self, o: Self) -> Self {
        unsafe { Neon(vminq_f32(self.0, o.0)) }
    }
    #[inline(always)]
    fn mul_add(self, b: Self, c: Self) -> Self {
        unsafe { Neon(vfmaq_f32(c.0, self.0, b.0)) }
    }
    #[inline(always)]
    fn sum(self) -> f32 {
        unsafe { vaddvq_f32(self.0) }
    }
    #[inline(always)]
    fn hmax(self) -> f32 {
        unsafe { vmaxvq_f32(self.0) }
    }
    #[inline(always)]
    fn pow2i(self) -> Self {
        unsafe {
            let n = vcvtnq_s32_f32(self.0);
            Neon(vreinterpretq_f32_s32(vshlq_n_s32::<23>(vaddq_s32(n, vdupq_n_s32(127)))))
        }
    }
    #[inline(always)]
    fn q4(b: &BlockQ4) -> [Neon; 8] {
        let (d, m) = (f16_to_f32(b.d), f16_to_f32(b.m));
        unsafe {
            let q = vld1q_u8(b.qs.as_ptr());
            let (lo, hi) = (vandq_u8(q, vdupq_n_u8(0x0F)), vshrq_n_u8::<4>(q));
            let (d, m) = (vdupq_n_f32(d), vdupq_n_f32(m));
            let h = [vmovl_u8(vget_low_u8(lo)), vmovl_u8(vget_high_u8(lo)), vmovl_u8(vget_low_u8(hi)), vmovl_u8(vget_high_u8(hi))];
            std::array::from_fn(|c| {
                let w = if c % 2 == 0 { vget_low_u16(h[c / 2]) } else { vget_high_u16(h[c / 2]) };
                Neon(vfmaq_f32(m, vcvtq_f32_u32(vmovl_u16(w)), d))
            })
        }
    }
    #[inline(always)]
    fn q8(blk: &BlockQ8) -> [Neon; 8] {
        // SAFETY: qs holds 32 bytes.
        unsafe { Neon::scaled(vld1q_s8(blk.qs.as_ptr()), vld1q_s8(blk.qs.as_ptr().add(16)), f16_to_f32(blk.d)) }
    }
    #[inline(always)]
    fn iq4(qs: &[u8; 16], d: f32) -> [Neon; 8] {
        unsafe {
            // One table lookup per nibble: low nibbles are values 0..16, high ones 16..32.
            let (table, q) = (vld1q_s8(IQ4_VALUES.as_ptr()), vld1q_u8(qs.as_ptr()));
            Neon::scaled(vqtbl1q_s8(table, vandq_u8(q, vdupq_n_u8(0x0F))), vqtbl1q_s8(table, vshrq_n_u8::<4>(q)), d)
        }
    }
}

impl Neon {
    /// 32 signed bytes (`a` then `b`) as f32 lanes, each times `d`.
    #[inline(always)]
    unsafe fn scaled(a: int8x16_t, b: int8x16_t, d: f32) -> [Neon; 8] {
        let d = vdupq_n_f32(d);
        let h = [vmovl_s8(vget_low_s8(a)), vmovl_s8(vget_high_s8(a)), vmovl_s8(vget_low_s8(b)), vmovl_s8(vget_high_s8(b))];
        std::array::from_fn(|c| {
            let w = if c % 2 == 0 { vget_low_s16(h[c / 2]) } else { vget_high_s16(h[c / 2]) };
            Neon(vmulq_f32(vcvtq_f32_s32(vmovl_s16(w)), d))
        })
    }
}
