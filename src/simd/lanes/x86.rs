//! The x86-64 lanes: AVX2 + FMA (8 lanes) and AVX-512 (16 lanes).
use super::{f16_to_f32, BlockQ4, BlockQ5_0, BlockQ6K, BlockQ8, Lanes, IQ4_VALUES, QK};
use std::arch::x86_64::*;

// The 5- and 6-bit types are put together as 32 signed bytes, `q - 16` or `q - 32`, with byte operations on all
// 32 values at once, then widened: a quarter of the instructions of forming each lane's bits in 32-bit lanes.
// The values are exact integers either way, so the registers hold the same bits.

/// The 32 nibbles of 16 bytes as bytes: low nibbles are values 0..16, high ones 16..32.
#[inline(always)]
unsafe fn nibbles(qs: &[u8; 16]) -> __m256i {
    let qs = _mm_loadu_si128(qs.as_ptr() as *const __m128i);
    // A 16-bit shift: the mask drops what crosses bytes.
    _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16::<4>(qs), qs), _mm256_set1_epi8(0x0F))
}

/// The 32 table values `IQ4_VALUES[q]` of 16 bytes of IQ4 indices, as signed bytes: one byte shuffle.
#[inline(always)]
unsafe fn iq4_bytes(qs: &[u8; 16]) -> __m256i {
    let table = _mm256_broadcastsi128_si256(_mm_loadu_si128(IQ4_VALUES.as_ptr() as *const __m128i));
    _mm256_shuffle_epi8(table, nibbles(qs))
}

/// The 32 values `q - 16` of a Q5_0 block, as signed bytes.
#[inline(always)]
unsafe fn q5_0_bytes(b: &BlockQ5_0) -> __m256i {
    let nibbles = nibbles(&b.qs);
    // Byte i becomes 0xFF where bit i of qh is set (ggml's `bytes_from_bits_32`): byte i/8 of qh is spread
    // over bytes i, and all its other bits are set.
    let spread =
        _mm256_shuffle_epi8(_mm256_set1_epi32(i32::from_le_bytes(b.qh)), _mm256_set_epi64x(0x0303030303030303, 0x0202020202020202, 0x0101010101010101, 0));
    let high = _mm256_cmpeq_epi8(_mm256_or_si256(spread, _mm256_set1_epi64x(0x7fbfdfeff7fbfdfe)), _mm256_set1_epi64x(-1));
    // q - 16 is the nibble where the fifth bit is set, and the nibble minus 16 (0xF0 | nibble) where it is not.
    _mm256_or_si256(nibbles, _mm256_andnot_si256(high, _mm256_set1_epi8(0xF0u8 as i8)))
}

/// The 32 values `q - 32` of sub-block `s` of a Q6_K block, as signed bytes.
#[inline(always)]
unsafe fn q6k_bytes(b: &BlockQ6K, s: usize) -> __m256i {
    let (ql, shl, qh, shh) = BlockQ6K::sub_layout(s);
    // SAFETY (caller's): 32 bytes from ql <= 96 in ql's 128, and from qh <= 32 in qh's 64.
    let low = _mm256_srl_epi16(_mm256_loadu_si256(b.ql.as_ptr().add(ql) as *const __m256i), _mm_cvtsi32_si128(shl as i32));
    let high = _mm256_srl_epi16(_mm256_loadu_si256(b.qh.as_ptr().add(qh) as *const __m256i), _mm_cvtsi32_si128(shh as i32));
    let (low, high) = (_mm256_and_si256(low, _mm256_set1_epi8(0x0F)), _mm256_and_si256(high, _mm256_set1_epi8(3)));
    _mm256_sub_epi8(_mm256_or_si256(low, _mm256_slli_epi16::<4>(high)), _mm256_set1_epi8(32))
}

/// The Q6_K sub-block's two scales, `d * scale` as ggml rounds them.
#[inline(always)]
fn q6k_scales(b: &BlockQ6K, s: usize) -> (f32, f32) {
    let d = f16_to_f32(b.d);
    (d * b.scales[2 * s] as f32, d * b.scales[2 * s + 1] as f32)
}

/// AVX2 + FMA: 8 lanes, 16 registers.
#[derive(Clone, Copy)]
pub struct Avx2(__m256);

// SAFETY: only instantiated inside `#[target_feature(enable = "avx2,fma,f16c")]` kernels reached through a `Simd`
// that detected all three features.
unsafe impl Lanes for Avx2 {
    #[inline(always)]
    fn prefetch(p: *const u8) {
        // SAFETY: a prefetch never faults, whatever the address.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(p as *const i8) }
    }
    const N: usize = 8;
    const REGISTERS: usize = 16;
    type Block = [Avx2; 4];
    #[inline(always)]
    fn zero_block() -> Self::Block {
        [Self::zero(); QK / Self::N]
    }
    #[inline(always)]
    unsafe fn bytes(p: *const u8, shift: u32, mask: u32) -> Self {
        let v = _mm256_cvtepu8_epi32(_mm_loadl_epi64(p as *const __m128i));
        let v = _mm256_and_si256(_mm256_srl_epi32(v, _mm_cvtsi32_si128(shift as i32)), _mm256_set1_epi32(mask as i32));
        Avx2(_mm256_cvtepi32_ps(v))
    }
    #[inline(always)]
    fn bits(word: u32, first: u32) -> Self {
        unsafe {
            let at = _mm256_add_epi32(_mm256_set1_epi32(first as i32), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
            let v = _mm256_and_si256(_mm256_srlv_epi32(_mm256_set1_epi32(word as i32), at), _mm256_set1_epi32(1));
            Avx2(_mm256_cvtepi32_ps(v))
        }
    }
    #[inline(always)]
    fn zero() -> Self {
        unsafe { Avx2(_mm256_setzero_ps()) }
    }
    #[inline(always)]
    fn splat(v: f32) -> Self {
        unsafe { Avx2(_mm256_set1_ps(v)) }
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> Self {
        Avx2(_mm256_loadu_ps(p))
    }
    #[inline(always)]
    unsafe fn store(self, p: *mut f32) {
        _mm256_storeu_ps(p, self.0)
    }
    #[inline(always)]
    fn add(self, o: Self) -> Self {
        unsafe { Avx2(_mm256_add_ps(self.0, o.0)) }
    }
    #[inline(always)]
    fn sub(self, o: Self) -> Self {
        unsafe { Avx2(_mm256_sub_ps(self.0, o.0)) }
    }
    #[inline(always)]
    fn mul(self, o: Self) -> Self {
        unsafe { Avx2(_mm256_mul_ps(self.0, o.0)) }
    }
    #[inline(always)]
    fn div(self, o: Self) -> Self {
        unsafe { Avx2(_mm256_div_ps(self.0, o.0)) }
    }
    #[inline(always)]
    fn max(self, o: Self) -> Self {
        unsafe { Avx2(_mm256_max_ps(self.0, o.0)) }
    }
    #[inline(always)]
    fn min(self, o: Self) -> Self {
        unsafe { Avx2(_mm256_min_ps(self.0, o.0)) }
    }
    #[inline(always)]
    fn mul_add(self, b: Self, c: Self) -> Self {
        unsafe { Avx2(_mm256_fmadd_ps(self.0, b.0, c.0)) }
    }
    #[inline(always)]
    fn sum(self) -> f32 {
        unsafe {
            let q = _mm_add_ps(_mm256_castps256_ps128(self.0), _mm256_extractf128_ps(self.0, 1));
            let d = _mm_add_ps(q, _mm_movehl_ps(q, q));
            _mm_cvtss_f32(_mm_add_ss(d, _mm_shuffle_ps(d, d, 1)))
        }
    }
    #[inline(always)]
    fn sum4(v: [Avx2; 4]) -> [f32; 4] {
        // The additions of `sum` (q = low half + high half; (q0 + q2) + (q1 + q3)) for four registers at once,
        // with 9 shuffles instead of 12.
        unsafe {
            let (a, b, c, d) = (v[0].0, v[1].0, v[2].0, v[3].0);
            // [qa | qb] and [qc | qd].
            let qab = _mm256_add_ps(_mm256_permute2f128_ps::<0x20>(a, b), _mm256_permute2f128_ps::<0x31>(a, b));
            let qcd = _mm256_add_ps(_mm256_permute2f128_ps::<0x20>(c, d), _mm256_permute2f128_ps::<0x31>(c, d));
            // [qa0 + qa2, qc0 + qc2, qa1 + qa3, qc1 + qc3 | the same for b and d].
            let s = _mm256_add_ps(_mm256_unpacklo_ps(qab, qcd), _mm256_unpackhi_ps(qab, qcd));
            // [a, c, a, c | b, d, b, d].
            let r = _mm256_add_ps(s, _mm256_permute_ps::<0b01_00_11_10>(s));
            let mut out = [0f32; 4];
            _mm_storeu_ps(out.as_mut_ptr(), _mm_unpacklo_ps(_mm256_castps256_ps128(r), _mm256_extractf128_ps::<1>(r)));
            out
        }
    }
    #[inline(always)]
    fn hmax(self) -> f32 {
        unsafe {
            let q = _mm_max_ps(_mm256_castps256_ps128(self.0), _mm256_extractf128_ps(self.0, 1));
            let d = _mm_max_ps(q, _mm_movehl_ps(q, q));
            _mm_cvtss_f32(_mm_max_ss(d, _mm_shuffle_ps(d, d, 1)))
        }
    }
    #[inline(always)]
    fn pow2i(self) -> Self {
        unsafe {
            let n = _mm256_cvtps_epi32(self.0);
            Avx2(_mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n, _mm256_set1_epi32(127)), 23)))
        }
    }
    #[inline(always)]
    fn q4(b: &BlockQ4) -> [Avx2; 4] {
        unsafe {
            // d and m are adjacent f16s: one F16C conversion for both.
            let dm = _mm_cvtph_ps(_mm_cvtsi32_si128(std::ptr::read_unaligned(b as *const BlockQ4 as *const i32)));
            let (d, m) = (_mm256_broadcastss_ps(dm), _mm256_broadcastss_ps(_mm_movehdup_ps(dm)));
            let p = b.qs.as_ptr() as *const __m128i;
            // Bytes zero-extended to 32 bits: the low nibble is `& 15`, the high one `>> 4`.
            let (a, c) = (_mm256_cvtepu8_epi32(_mm_loadl_epi64(p)), _mm256_cvtepu8_epi32(_mm_loadl_epi64((p as *const u8).add(8) as *const __m128i)));
            let mask = _mm256_set1_epi32(0x0F);
            let f = |v: __m256i| Avx2(_mm256_fmadd_ps(_mm256_cvtepi32_ps(v), d, m));
            [f(_mm256_and_si256(a, mask)), f(_mm256_and_si256(c, mask)), f(_mm256_srli_epi32(a, 4)), f(_mm256_srli_epi32(c, 4))]
        }
    }
    #[inline(always)]
    fn q8(blk: &BlockQ8) -> [Avx2; 4] {
        unsafe {
            let d = _mm256_broadcastss_ps(_mm_cvtph_ps(_mm_cvtsi32_si128(blk.d.to_bits() as i32)));
            let p = blk.qs.as_ptr();
            std::array::from_fn(|c| Avx2(_mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(p.add(8 * c) as *const __m128i))), d)))
        }
    }
    #[inline(always)]
    fn q5_0(b: &BlockQ5_0) -> [Avx2; 4] {
        unsafe {
            let d = _mm256_set1_ps(f16_to_f32(b.d));
            Avx2::scaled(q5_0_bytes(b), d, d)
        }
    }
    #[inline(always)]
    fn iq4(qs: &[u8; 16], d: f32) -> [Avx2; 4] {
        unsafe {
            let d = _mm256_set1_ps(d);
            Avx2::scaled(iq4_bytes(qs), d, d)
        }
    }
    #[inline(always)]
    fn q6k(b: &BlockQ6K, s: usize) -> [Avx2; 4] {
        let (a, c) = q6k_scales(b, s);
        // SAFETY: s < 8, so the sub-block's bytes are inside the block.
        unsafe { Avx2::scaled(q6k_bytes(b, s), _mm256_set1_ps(a), _mm256_set1_ps(c)) }
    }
}

impl Avx2 {
    /// 32 signed bytes as f32 lanes, the first 16 times `a`, the others times `b` (one rounding each).
    #[inline(always)]
    unsafe fn scaled(q: __m256i, a: __m256, b: __m256) -> [Avx2; 4] {
        let (lo, hi) = (_mm256_castsi256_si128(q), _mm256_extracti128_si256::<1>(q));
        [
            Avx2(_mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(lo)), a)),
            Avx2(_mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128::<8>(lo))), a)),
            Avx2(_mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(hi)), b)),
            Avx2(_mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128::<8>(hi))), b)),
        ]
    }
}

/// AVX-512F + VL: 16 lanes, 32 registers. The element-wise work, attention and the quantized mat-muls all run
/// through the generic kernels with these lanes.
#[derive(Clone, Copy)]
pub struct Avx512(__m512);

impl Avx512 {
    /// 32 signed bytes as f32 lanes, the first 16 times `a`, the others times `b` (one rounding each).
    #[inline(always)]
    unsafe fn scaled(q: __m256i, a: __m512, b: __m512) -> [Avx512; 2] {
        let (lo, hi) = (_mm256_castsi256_si128(q), _mm256_extracti128_si256::<1>(q));
        [Avx512(_mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(lo)), a)), Avx512(_mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(hi)), b))]
    }
    /// The two 256-bit halves: AVX-512F alone has no 256-bit extract of f32 lanes, so the upper half goes
    /// through the f64 view.
    #[inline(always)]
    fn halves(self) -> (__m256, __m256) {
        unsafe { (_mm512_castps512_ps256(self.0), _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(self.0)))) }
    }
}

// SAFETY: only instantiated inside `#[target_feature(enable = "avx512f,avx512vl,avx2,fma,f16c")]` kernels reached
// through a `Simd` that detected all five features.
unsafe impl Lanes for Avx512 {
    #[inline(always)]
    fn prefetch(p: *const u8) {
        // SAFETY: a prefetch never faults, whatever the address.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(p as *const i8) }
    }
    const N: usize = 16;
    const REGISTERS: usize = 32;
    type Block = [Avx512; 2];
    #[inline(always)]
    fn zero_block() -> Self::Block {
        [Self::zero(); QK / Self::N]
    }
    #[inline(always)]
    unsafe fn bytes(p: *const u8, shift: u32, mask: u32) -> Self {
        let v = _mm512_cvtepu8_epi32(_mm_loadu_si128(p as *const __m128i));
        let v = _mm512_and_si512(_mm512_srl_epi32(v, _mm_cvtsi32_si128(shift as i32)), _mm512_set1_epi32(mask as i32));
        Avx512(_mm512_cvtepi32_ps(v))
    }
    #[inline(always)]
    fn bits(word: u32, first: u32) -> Self {
        unsafe {
            let at = _mm512_add_epi32(_mm512_set1_epi32(first as i32), _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15));
            let v = _mm512_and_si512(_mm512_srlv_epi32(_mm512_set1_epi32(word as i32), at), _mm512_set1_epi32(1));
            Avx512(_mm512_cvtepi32_ps(v))
        }
    }
    #[inline(always)]
    fn zero() -> Self {
        unsafe { Avx512(_mm512_setzero_ps()) }
    }
    #[inline(always)]
    fn splat(v: f32) -> Self {
        unsafe { Avx512(_mm512_set1_ps(v)) }
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> Self {
        Avx512(_mm512_loadu_ps(p))
    }
    #[inline(always)]
    unsafe fn store(self, p: *mut f32) {
        _mm512_storeu_ps(p, self.0)
    }
    #[inline(always)]
    fn add(self, o: Self) -> Self {
        unsafe { Avx512(_mm512_add_ps(self.0, o.0)) }
    }
    #[inline(always)]
    fn sub(self, o: Self) -> Self {
        unsafe { Avx512(_mm512_sub_ps(self.0, o.0)) }
    }
    #[inline(always)]
    fn mul(self, o: Self) -> Self {
        unsafe { Avx512(_mm512_mul_ps(self.0, o.0)) }
    }
    #[inline(always)]
    fn div(self, o: Self) -> Self {
        unsafe { Avx512(_mm512_div_ps(self.0, o.0)) }
    }
    #[inline(always)]
    fn max(self, o: Self) -> Self {
        unsafe { Avx512(_mm512_max_ps(self.0, o.0)) }
    }
    #[inline(always)]
    fn min(self, o: Self) -> Self {
        unsafe { Avx512(_mm512_min_ps(self.0, o.0)) }
    }
    #[inline(always)]
    fn mul_add(self, b: Self, c: Self) -> Self {
        unsafe { Avx512(_mm512_fmadd_ps(self.0, b.0, c.0)) }
    }
    #[inline(always)]
    fn sum(self) -> f32 {
        let (a, b) = self.halves();
        unsafe { Avx2(_mm256_add_ps(a, b)) }.sum()
    }
    #[inline(always)]
    fn sum4(v: [Avx512; 4]) -> [f32; 4] {
        let mut h = [unsafe { Avx2(_mm256_setzero_ps()) }; 4];
        for (o, x) in h.iter_mut().zip(v) {
            let (a, b) = x.halves();
            *o = unsafe { Avx2(_mm256_add_ps(a, b)) };
        }
        Avx2::sum4(h)
    }
    #[inline(always)]
    fn hmax(self) -> f32 {
        let (a, b) = self.halves();
        unsafe { Avx2(_mm256_max_ps(a, b)) }.hmax()
    }
    #[inline(always)]
    fn pow2i(self) -> Self {
        unsafe {
            let n = _mm512_cvtps_epi32(self.0);
            Avx512(_mm512_castsi512_ps(_mm512_slli_epi32::<23>(_mm512_add_epi32(n, _mm512_set1_epi32(127)))))
        }
    }
    #[inline(always)]
    fn q4(b: &BlockQ4) -> [Avx512; 2] {
        unsafe {
            let dm = _mm_cvtph_ps(_mm_cvtsi32_si128(std::ptr::read_unaligned(b as *const BlockQ4 as *const i32)));
            let (d, m) = (_mm512_broadcastss_ps(dm), _mm512_broadcastss_ps(_mm_movehdup_ps(dm)));
            let q = _mm512_cvtepu8_epi32(_mm_loadu_si128(b.qs.as_ptr() as *const __m128i));
            let f = |v: __m512i| Avx512(_mm512_fmadd_ps(_mm512_cvtepi32_ps(v), d, m));
            [f(_mm512_and_si512(q, _mm512_set1_epi32(0x0F))), f(_mm512_srli_epi32::<4>(q))]
        }
    }
    #[inline(always)]
    fn q8(blk: &BlockQ8) -> [Avx512; 2] {
        unsafe {
            let d = _mm512_broadcastss_ps(_mm_cvtph_ps(_mm_cvtsi32_si128(blk.d.to_bits() as i32)));
            let p = blk.qs.as_ptr() as *const __m128i;
            std::array::from_fn(|c| Avx512(_mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(p.add(c)))), d)))
        }
    }
    #[inline(always)]
    fn q5_0(b: &BlockQ5_0) -> [Avx512; 2] {
        unsafe {
            let d = _mm512_set1_ps(f16_to_f32(b.d));
            Avx512::scaled(q5_0_bytes(b), d, d)
        }
    }
    #[inline(always)]
    fn iq4(qs: &[u8; 16], d: f32) -> [Avx512; 2] {
        unsafe {
            // The sixteen table values times d fill one register, so each value is one permute away (vpermps
            // reads the low four bits of each index: the low nibbles need no mask). d * T[q] is exact.
            let table = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(IQ4_VALUES.as_ptr() as *const __m128i))), _mm512_set1_ps(d));
            let q = _mm512_cvtepu8_epi32(_mm_loadu_si128(qs.as_ptr() as *const __m128i));
            [Avx512(_mm512_permutexvar_ps(q, table)), Avx512(_mm512_permutexvar_ps(_mm512_srli_epi32::<4>(q), table))]
        }
    }
    #[inline(always)]
    fn q6k(b: &BlockQ6K, s: usize) -> [Avx512; 2] {
        let (a, c) = q6k_scales(b, s);
        // SAFETY: s < 8, so the sub-block's bytes are inside the block.
        unsafe { Avx512::scaled(q6k_bytes(b, s), _mm512_set1_ps(a), _mm512_set1_ps(c)) }
    }
}
