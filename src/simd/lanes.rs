//! One SIMD register of f32 lanes, for kernels written once and compiled per instruction set.
//!
//! Every method is `#[inline(always)]`: the kernels are instantiated inside functions compiled with the path's
//! target features, and the intrinsics only become single instructions once inlined there.

use crate::quant::{f16_to_f32, BlockQ4, BlockQ5_0, BlockQ6K, BlockQ8, IQ4_VALUES, QK};

/// A register of `N` f32 lanes.
///
/// # Safety
/// Implementations for an instruction set may only be used inside code compiled with (and running on a CPU with)
/// that instruction set; [`super::Simd`] values guarantee the latter, the kernel wrappers the former.
pub unsafe trait Lanes: Copy {
    const N: usize;
    /// Architectural vector registers; kernels size their register tiles by it.
    const REGISTERS: usize;
    fn zero() -> Self;
    fn splat(v: f32) -> Self;
    /// # Safety
    /// `p` must be valid for reading `N` values.
    unsafe fn load(p: *const f32) -> Self;
    /// # Safety
    /// `p` must be valid for writing `N` values.
    unsafe fn store(self, p: *mut f32);
    fn add(self, o: Self) -> Self;
    fn sub(self, o: Self) -> Self;
    fn mul(self, o: Self) -> Self;
    fn div(self, o: Self) -> Self;
    /// Lane-wise maximum; where a lane is NaN the result may be either operand's lane (x86 returns `o`'s).
    fn max(self, o: Self) -> Self;
    /// Lane-wise minimum, NaN as for [`Lanes::max`].
    fn min(self, o: Self) -> Self;
    /// `self * b + c`, fused where the path has FMA.
    fn mul_add(self, b: Self, c: Self) -> Self;
    /// Sum of the lanes, in a fixed order.
    fn sum(self) -> f32;
    fn hmax(self) -> f32;
    /// The sums of four registers, each bit for bit as [`Lanes::sum`] gives it (a register tile reduces its
    /// accumulators four at a time; a row computed alone reduces them one at a time).
    #[inline(always)]
    fn sum4(v: [Self; 4]) -> [f32; 4] {
        [v[0].sum(), v[1].sum(), v[2].sum(), v[3].sum()]
    }
    /// `2^n` for lanes holding integral values in `-126..=127`.
    fn pow2i(self) -> Self;
    /// One quantized block (32 values) as registers.
    type Block: Copy + AsRef<[Self]> + AsMut<[Self]>;
    /// Q4 block: value `i` is `d * q_i + m`, q_i the low nibbles of `qs` for i < 16, the high ones after. `d * q` is
    /// exact in f32, so fused and separate multiply-adds give the same bits.
    fn q4(b: &BlockQ4) -> Self::Block;
    /// Q8 block: value `i` is `d * q_i` (exact).
    fn q8(b: &BlockQ8) -> Self::Block;
    /// Q5_0 block, as [`super::dequant`] forms it.
    #[inline(always)]
    fn q5_0(b: &BlockQ5_0) -> Self::Block {
        super::dequant::q5_0::<Self>(b)
    }
    /// Sub-block `s` of a Q6_K block, as [`super::dequant`] forms it.
    #[inline(always)]
    fn q6k(b: &BlockQ6K, s: usize) -> Self::Block {
        super::dequant::q6k::<Self>(b, s)
    }
    /// 32 IQ4 values from 16 bytes of indices (low nibbles are values 0..16, high ones 16..32): value `i` is
    /// `d * IQ4_VALUES[q_i]`, an exact product.
    #[inline(always)]
    fn iq4(qs: &[u8; 16], d: f32) -> Self::Block {
        let mut v = [0f32; QK];
        for j in 0..16 {
            v[j] = d * IQ4_VALUES[(qs[j] & 0x0F) as usize] as f32;
            v[j + 16] = d * IQ4_VALUES[(qs[j] >> 4) as usize] as f32;
        }
        let mut out = Self::zero_block();
        for (i, o) in out.as_mut().iter_mut().enumerate() {
            *o = Self::from_slice(&v[i * Self::N..]);
        }
        out
    }
    /// A block of zero registers, to be filled in a loop (kernels build blocks in loops, not closures: a closure
    /// is compiled without the path's target features, and its intrinsics become calls).
    fn zero_block() -> Self::Block;
    /// `N` bytes from `p`, each `(b >> shift) & mask`, as f32 lanes.
    ///
    /// # Safety
    /// `p` must be valid for reading `N` bytes.
    unsafe fn bytes(p: *const u8, shift: u32, mask: u32) -> Self;
    /// Lane `i` is bit `first + i` of `word` (0 or 1); `first + N <= 32`.
    fn bits(word: u32, first: u32) -> Self;
    /// Whether one decode stream reads its four weight rows a quarter of the chunk apart (four long sequential
    /// streams the hardware prefetcher follows) rather than side by side: the vector paths wait on memory, the
    /// portable one on arithmetic, where the spread-out reads cost it 12% (measured on x86-64).
    const SPREAD_ROWS: bool = true;
    /// A hint to bring the cache line holding `p` closer; never faults, whatever `p` is.
    #[inline(always)]
    fn prefetch(_p: *const u8) {}

    #[inline(always)]
    fn store_block(v: Self::Block, out: &mut [f32]) {
        for (i, r) in v.as_ref().iter().enumerate() {
            r.to_slice(&mut out[i * Self::N..]);
        }
    }
    #[inline(always)]
    fn from_slice(s: &[f32]) -> Self {
        assert!(s.len() >= Self::N);
        // SAFETY: length checked.
        unsafe { Self::load(s.as_ptr()) }
    }
    #[inline(always)]
    fn to_slice(self, s: &mut [f32]) {
        assert!(s.len() >= Self::N);
        // SAFETY: length checked.
        unsafe { self.store(s.as_mut_ptr()) }
    }
}

/// The portable path: 8 lanes as a plain array. LLVM turns the loops into the target's vectors (SSE2 on
/// baseline x86-64, NEON on aarch64); the multiply-add is not fused, because without FMA hardware a fused one is a
/// library call per element.
#[derive(Clone, Copy)]
pub struct Portable([f32; 8]);

macro_rules! portable_map {
    ($a:expr, $b:expr, |$x:ident, $y:ident| $e:expr) => {{
        let mut out = [0f32; 8];
        for i in 0..8 {
            let ($x, $y) = ($a.0[i], $b.0[i]);
            out[i] = $e;
        }
        Portable(out)
    }};
}

// SAFETY: plain Rust, valid on every CPU.
unsafe impl Lanes for Portable {
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    fn prefetch(p: *const u8) {
        // SAFETY: SSE is part of x86-64's baseline, and a prefetch never faults, whatever the address.
        unsafe { std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p as *const i8) }
    }
    const N: usize = 8;
    const REGISTERS: usize = 16;
    const SPREAD_ROWS: bool = false;
    type Block = [Portable; 4];
    #[inline(always)]
    fn q4(b: &BlockQ4) -> Self::Block {
        let (d, m) = (f16_to_f32(b.d), f16_to_f32(b.m));
        let mut v = [0f32; 32];
        for i in 0..16 {
            v[i] = d * (b.qs[i] & 0x0F) as f32 + m;
            v[i + 16] = d * (b.qs[i] >> 4) as f32 + m;
        }
        std::array::from_fn(|c| Portable::from_slice(&v[8 * c..]))
    }
    #[inline(always)]
    fn q8(b: &BlockQ8) -> Self::Block {
        let d = f16_to_f32(b.d);
        std::array::from_fn(|c| Portable(std::array::from_fn(|i| d * b.qs[8 * c + i] as f32)))
    }
    #[inline(always)]
    fn zero_block() -> Self::Block {
        [Self::zero(); QK / Self::N]
    }
    #[inline(always)]
    unsafe fn bytes(p: *const u8, shift: u32, mask: u32) -> Self {
        let b = std::ptr::read_unaligned(p as *const [u8; 8]);
        Portable(b.map(|x| ((x as u32 >> shift) & mask) as f32))
    }
    #[inline(always)]
    fn bits(word: u32, first: u32) -> Self {
        Portable(std::array::from_fn(|i| ((word >> (first + i as u32)) & 1) as f32))
    }
    #[inline(always)]
    fn zero() -> Self {
        Portable([0.0; 8])
    }
    #[inline(always)]
    fn splat(v: f32) -> Self {
        Portable([v; 8])
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> Self {
        Portable(std::ptr::read_unaligned(p as *const [f32; 8]))
    }
    #[inline(always)]
    unsafe fn store(self, p: *mut f32) {
        std::ptr::write_unaligned(p as *mut [f32; 8], self.0)
    }
    #[inline(always)]
    fn add(self, o: Self) -> Self {
        portable_map!(self, o, |a, b| a + b)
    }
    #[inline(always)]
    fn sub(self, o: Self) -> Self {
        portable_map!(self, o, |a, b| a - b)
    }
    #[inline(always)]
    fn mul(self, o: Self) -> Self {
        portable_map!(self, o, |a, b| a * b)
    }
    #[inline(always)]
    fn div(self, o: Self) -> Self {
        portable_map!(self, o, |a, b| a / b)
    }
    #[inline(always)]
    fn max(self, o: Self) -> Self {
        portable_map!(self, o, |a, b| if a > b { a } else { b })
    }
    #[inline(always)]
    fn min(self, o: Self) -> Self {
        portable_map!(self, o, |a, b| if a < b { a } else { b })
    }
    #[inline(always)]
    fn mul_add(self, b: Self, c: Self) -> Self {
        Portable(std::array::from_fn(|i| self.0[i] * b.0[i] + c.0[i]))
    }
    #[inline(always)]
    fn sum(self) -> f32 {
        let a = self.0;
        let q = [a[0] + a[4], a[1] + a[5], a[2] + a[6], a[3] + a[7]];
        (q[0] + q[2]) + (q[1] + q[3])
    }
    #[inline(always)]
    fn hmax(self) -> f32 {
        self.0.iter().fold(f32::NEG_INFINITY, |m, &v| if v > m { v } else { m })
    }
    #[inline(always)]
    fn pow2i(self) -> Self {
        Portable(self.0.map(|n| f32::from_bits(((n as i32 + 127) as u32) << 23)))
    }
}

#[cfg(target_arch = "x86_64")]
pub use x86::{Avx2, Avx512};

#[cfg(target_arch = "x86_64")]
mod x86;

#[cfg(target_arch = "aarch64")]
pub use arm::Neon;

#[cfg(target_arch = "aarch64")]
mod arm;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::simd::kernels::{dispatch, Kernel};
    use crate::simd::Simd;

    struct Sums<'a>(&'a [f32]);
    impl Kernel for Sums<'_> {
        type Out = Vec<([f32; 4], [f32; 4])>;
        #[inline(always)]
        fn run<L: Lanes>(self) -> Self::Out {
            // A loop, not a closure: a closure is compiled without the path's target features.
            let n = L::N;
            let mut out = Vec::new();
            for c in self.0.chunks_exact(4 * n) {
                let v = [L::from_slice(c), L::from_slice(&c[n..]), L::from_slice(&c[2 * n..]), L::from_slice(&c[3 * n..])];
                out.push((L::sum4(v), [v[0].sum(), v[1].sum(), v[2].sum(), v[3].sum()]));
            }
            out
        }
    }

    /// A tile's four-at-a-time reduction gives every register's sum bit for bit as the one-at-a-time reduction
    /// does, on every path, for values whose sums depend on the order (mixed magnitudes and signs, infinities).
    #[test]
    fn sum4_is_sum_bit_for_bit_on_every_path() {
        let mut x = 0x2545_f491_4f6c_dd1d_u64;
        let mut vals: Vec<f32> = (0..64 * 64)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let mant = (x >> 40) as f32 / (1u64 << 24) as f32 - 0.5;
                mant * 2f32.powi((x % 40) as i32 - 20)
            })
            .collect();
        vals[5] = f32::INFINITY;
        vals[77] = f32::NEG_INFINITY;
        vals[300] = f32::MAX;
        vals[301] = f32::MAX;
        for simd in Simd::available() {
            for (k, (four, one)) in dispatch(simd, Sums(&vals)).into_iter().enumerate() {
                let (a, b) = (four.map(f32::to_bits), one.map(f32::to_bits));
                assert_eq!(a, b, "{simd}, group {k}: {four:?} vs {one:?}");
            }
        }
    }
}
