//! Quantized weight blocks and the int8 dot-product kernels behind every linear layer.
//!
//! Why our own kernels: candle 0.11's CPU Q4_1 dot product is the scalar reference (decode ~45 tok/s on the
//! default model), and mixing gemm for big batches with mat-vec for small ones would make logits depend on the
//! batch size. Here every output element is one dot product computed the same way whatever the batch, so
//! batched, incremental and full-sequence forwards agree bit for bit.
//!
//! Activations are quantized per 32-value block to int8 (llama.cpp's Q8_1 scheme: scale `d`, and `s = d * sum(q)`
//! so the Q4_1 minimum term needs no second pass).
use half::f16;

pub const QK: usize = 32;

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
    pub fn dequantize(&self, out: &mut [f32]) {
        let (d, m) = (self.d.to_f32(), self.m.to_f32());
        for i in 0..16 {
            out[i] = d * (self.qs[i] & 0x0F) as f32 + m;
            out[i + 16] = d * (self.qs[i] >> 4) as f32 + m;
        }
    }
}

impl BlockQ8 {
    pub fn from_bytes(b: &[u8]) -> Self {
        let mut qs = [0i8; 32];
        for (q, &x) in qs.iter_mut().zip(&b[2..34]) {
            *q = x as i8;
        }
        BlockQ8 { d: f16::from_le_bytes([b[0], b[1]]), qs }
    }
    pub fn dequantize(&self, out: &mut [f32]) {
        let d = self.d.to_f32();
        for (o, &q) in out.iter_mut().zip(&self.qs) {
            *o = d * q as f32;
        }
    }
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

/// Rows of activations quantized to int8 blocks.
pub struct QActs {
    pub rows: usize,
    pub blocks_per_row: usize,
    pub qs: Vec<i8>,
    pub d: Vec<f32>,
    pub s: Vec<f32>,
    /// `d` and `s` transposed to `[block][row]`, so the 8-row kernel loads the scales of 8 rows at once.
    pub dt: Vec<f32>,
    pub st: Vec<f32>,
}

impl QActs {
    pub fn quantize(x: &[f32], rows: usize, cols: usize) -> Self {
        debug_assert_eq!(x.len(), rows * cols);
        debug_assert_eq!(cols % QK, 0);
        let nb = cols / QK;
        let mut qs = vec![0i8; rows * cols];
        let mut d = vec![0f32; rows * nb];
        let mut s = vec![0f32; rows * nb];
        for (b, ((xb, qb), (db, sb))) in
            x.chunks_exact(QK).zip(qs.chunks_exact_mut(QK)).zip(d.iter_mut().zip(s.iter_mut())).enumerate()
        {
            let _ = b;
            let amax = xb.iter().fold(0f32, |a, v| a.max(v.abs()));
            let scale = amax / 127.0;
            let inv = if scale > 0.0 { 1.0 / scale } else { 0.0 };
            let mut sum = 0i32;
            for (q, v) in qb.iter_mut().zip(xb) {
                let r = (v * inv).round() as i32;
                *q = r as i8;
                sum += r;
            }
            *db = scale;
            *sb = scale * sum as f32;
        }
        let mut dt = vec![0f32; rows * nb];
        let mut st = vec![0f32; rows * nb];
        for r in 0..rows {
            for b in 0..nb {
                dt[b * rows + r] = d[r * nb + b];
                st[b * rows + r] = s[r * nb + b];
            }
        }
        QActs { rows, blocks_per_row: nb, qs, d, s, dt, st }
    }
    #[inline]
    pub fn row(&self, i: usize) -> (&[i8], &[f32], &[f32]) {
        let nb = self.blocks_per_row;
        (&self.qs[i * nb * QK..(i + 1) * nb * QK], &self.d[i * nb..(i + 1) * nb], &self.s[i * nb..(i + 1) * nb])
    }
}

#[inline]
pub fn dot_q4(w: &[BlockQ4], xq: &[i8], xd: &[f32], xs: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    {
        if has_avx2() {
            // SAFETY: the CPU supports avx2/fma/f16c (checked above); slices have matching lengths.
            return unsafe { x86::dot_q4_avx2(w, xq, xd, xs) };
        }
    }
    dot_q4_scalar(w, xq, xd, xs)
}

#[inline]
pub fn dot_q8(w: &[BlockQ8], xq: &[i8], xd: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    {
        if has_avx2() {
            // SAFETY: as above.
            return unsafe { x86::dot_q8_avx2(w, xq, xd) };
        }
    }
    dot_q8_scalar(w, xq, xd)
}

pub fn dot_q4_scalar(w: &[BlockQ4], xq: &[i8], xd: &[f32], xs: &[f32]) -> f32 {
    let mut total = 0f32;
    for (b, blk) in w.iter().enumerate() {
        let x = &xq[b * QK..(b + 1) * QK];
        let mut acc = 0i32;
        for i in 0..16 {
            acc += (blk.qs[i] & 0x0F) as i32 * x[i] as i32 + (blk.qs[i] >> 4) as i32 * x[i + 16] as i32;
        }
        total += blk.d.to_f32() * xd[b] * acc as f32 + blk.m.to_f32() * xs[b];
    }
    total
}

pub fn dot_q8_scalar(w: &[BlockQ8], xq: &[i8], xd: &[f32]) -> f32 {
    let mut total = 0f32;
    for (b, blk) in w.iter().enumerate() {
        let x = &xq[b * QK..(b + 1) * QK];
        let acc: i32 = blk.qs.iter().zip(x).map(|(&a, &b)| a as i32 * b as i32).sum();
        total += blk.d.to_f32() * xd[b] * acc as f32;
    }
    total
}

/// f32 dot product with 16 independent accumulators so LLVM emits wide FMAs.
#[inline]
pub fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 16];
    let (ca, cb) = (a.chunks_exact(16), b.chunks_exact(16));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for i in 0..16 {
            acc[i] = x[i].mul_add(y[i], acc[i]);
        }
    }
    let mut tail = 0f32;
    for (x, y) in ra.iter().zip(rb) {
        tail += x * y;
    }
    acc.iter().sum::<f32>() + tail
}

#[inline]
fn has_avx2() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        use std::sync::OnceLock;
        static HAS: OnceLock<bool> = OnceLock::new();
        *HAS.get_or_init(|| {
            is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") && is_x86_feature_detected!("f16c")
        })
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{BlockQ4, BlockQ8, QK};
    use std::arch::x86_64::*;

    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn hsum(v: __m256) -> f32 {
        let lo = _mm256_castps256_ps128(v);
        let hi = _mm256_extractf128_ps(v, 1);
        let s = _mm_add_ps(lo, hi);
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_movehdup_ps(s));
        _mm_cvtss_f32(s)
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn dot_q4_avx2(w: &[BlockQ4], xq: &[i8], xd: &[f32], xs: &[f32]) -> f32 {
        let m4 = _mm256_set1_epi8(0x0F);
        let ones = _mm256_set1_epi16(1);
        let mut acc = _mm256_setzero_ps();
        let mut mins = 0f32;
        let n = w.len().min(xd.len()).min(xs.len()).min(xq.len() / QK);
        for b in 0..n {
            let blk = w.get_unchecked(b);
            let q128 = _mm_loadu_si128(blk.qs.as_ptr() as *const __m128i);
            let qw = _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(q128, 4), q128), m4);
            let xv = _mm256_loadu_si256(xq.as_ptr().add(b * QK) as *const __m256i);
            let p32 = _mm256_madd_epi16(_mm256_maddubs_epi16(qw, xv), ones);
            let scale = blk.d.to_f32() * *xd.get_unchecked(b);
            acc = _mm256_fmadd_ps(_mm256_set1_ps(scale), _mm256_cvtepi32_ps(p32), acc);
            mins += blk.m.to_f32() * *xs.get_unchecked(b);
        }
        hsum(acc) + mins
    }

    /// Sums of each of 8 vectors of 8 i32 lanes, as one vector `[sum(v0), .., sum(v7)]`.
    #[inline(always)]
    unsafe fn reduce8(v: [__m256i; 8]) -> __m256i {
        let a0 = _mm256_hadd_epi32(v[0], v[1]);
        let a1 = _mm256_hadd_epi32(v[2], v[3]);
        let a2 = _mm256_hadd_epi32(v[4], v[5]);
        let a3 = _mm256_hadd_epi32(v[6], v[7]);
        let b0 = _mm256_hadd_epi32(a0, a1);
        let b1 = _mm256_hadd_epi32(a2, a3);
        _mm256_add_epi32(_mm256_permute2x128_si256(b0, b1, 0x20), _mm256_permute2x128_si256(b0, b1, 0x31))
    }

    /// One weight row against activation rows, 8 rows per pass: the weight block is unpacked once, the 8 int8
    /// dot products are reduced together and scaled as one vector. Rows past the last full tile use the
    /// single-row kernel.
    #[target_feature(enable = "avx2,fma,f16c,avx512vnni,avx512vl")]
    pub unsafe fn dot_q4_rows_vnni(w: &[BlockQ4], acts: &super::QActs, out: &mut [f32]) {
        let m4 = _mm256_set1_epi8(0x0F);
        let nb = w.len().min(acts.blocks_per_row);
        let rows = acts.rows;
        let m = out.len().min(rows);
        let full = m / 8 * 8;
        let (q, dt, st) = (acts.qs.as_ptr(), acts.dt.as_ptr(), acts.st.as_ptr());
        let stride = acts.blocks_per_row * QK;
        let mut i0 = 0;
        while i0 < full {
            let mut acc = _mm256_setzero_ps();
            let mut mins = _mm256_setzero_ps();
            for b in 0..nb {
                let blk = w.get_unchecked(b);
                let q128 = _mm_loadu_si128(blk.qs.as_ptr() as *const __m128i);
                let qw = _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(q128, 4), q128), m4);
                let xb = q.add(i0 * stride + b * QK);
                let mut p = [_mm256_setzero_si256(); 8];
                for (r, pr) in p.iter_mut().enumerate() {
                    let xv = _mm256_loadu_si256(xb.add(r * stride) as *const __m256i);
                    *pr = _mm256_dpbusd_epi32(_mm256_setzero_si256(), qw, xv);
                }
                let sums = _mm256_cvtepi32_ps(reduce8(p));
                let dx = _mm256_loadu_ps(dt.add(b * rows + i0));
                let sx = _mm256_loadu_ps(st.add(b * rows + i0));
                acc = _mm256_fmadd_ps(_mm256_mul_ps(_mm256_set1_ps(blk.d.to_f32()), dx), sums, acc);
                mins = _mm256_fmadd_ps(_mm256_set1_ps(blk.m.to_f32()), sx, mins);
            }
            _mm256_storeu_ps(out.as_mut_ptr().add(i0), _mm256_add_ps(acc, mins));
            i0 += 8;
        }
        for i in full..m {
            let (xq, xd, xs) = acts.row(i);
            *out.get_unchecked_mut(i) = dot_q4_avx2(w, xq, xd, xs);
        }
    }

    #[target_feature(enable = "avx2,fma,f16c,avx512vnni,avx512vl")]
    pub unsafe fn dot_q8_rows_vnni(w: &[BlockQ8], acts: &super::QActs, out: &mut [f32]) {
        let nb = w.len().min(acts.blocks_per_row);
        let rows = acts.rows;
        let m = out.len().min(rows);
        let full = m / 8 * 8;
        let (q, dt) = (acts.qs.as_ptr(), acts.dt.as_ptr());
        let stride = acts.blocks_per_row * QK;
        let mut i0 = 0;
        while i0 < full {
            let mut acc = _mm256_setzero_ps();
            for b in 0..nb {
                let blk = w.get_unchecked(b);
                let wv = _mm256_loadu_si256(blk.qs.as_ptr() as *const __m256i);
                let aw = _mm256_sign_epi8(wv, wv);
                let xb = q.add(i0 * stride + b * QK);
                let mut p = [_mm256_setzero_si256(); 8];
                for (r, pr) in p.iter_mut().enumerate() {
                    let xv = _mm256_loadu_si256(xb.add(r * stride) as *const __m256i);
                    *pr = _mm256_dpbusd_epi32(_mm256_setzero_si256(), aw, _mm256_sign_epi8(xv, wv));
                }
                let sums = _mm256_cvtepi32_ps(reduce8(p));
                let dx = _mm256_loadu_ps(dt.add(b * rows + i0));
                acc = _mm256_fmadd_ps(_mm256_mul_ps(_mm256_set1_ps(blk.d.to_f32()), dx), sums, acc);
            }
            _mm256_storeu_ps(out.as_mut_ptr().add(i0), acc);
            i0 += 8;
        }
        for i in full..m {
            let (xq, xd, _) = acts.row(i);
            *out.get_unchecked_mut(i) = dot_q8_avx2(w, xq, xd);
        }
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn dot_q8_avx2(w: &[BlockQ8], xq: &[i8], xd: &[f32]) -> f32 {
        let ones = _mm256_set1_epi16(1);
        let mut acc = _mm256_setzero_ps();
        let n = w.len().min(xd.len()).min(xq.len() / QK);
        for b in 0..n {
            let blk = w.get_unchecked(b);
            let wv = _mm256_loadu_si256(blk.qs.as_ptr() as *const __m256i);
            let xv = _mm256_loadu_si256(xq.as_ptr().add(b * QK) as *const __m256i);
            // maddubs needs one unsigned operand: move w's sign onto x.
            let p16 = _mm256_maddubs_epi16(_mm256_sign_epi8(wv, wv), _mm256_sign_epi8(xv, wv));
            let p32 = _mm256_madd_epi16(p16, ones);
            let scale = blk.d.to_f32() * *xd.get_unchecked(b);
            acc = _mm256_fmadd_ps(_mm256_set1_ps(scale), _mm256_cvtepi32_ps(p32), acc);
        }
        hsum(acc)
    }
}

/// Dot products of one weight row with `m` activation rows: `out[i] = w . x_i`. Unpacks each weight block once
/// for a tile of activation rows; every output equals `dot_q4(w, x_i)` up to float summation order, and does
/// not depend on `m`.
pub fn dot_q4_rows(w: &[BlockQ4], acts: &QActs, out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        if has_vnni() {
            // SAFETY: avx512vnni/vl present; shapes checked by the callers.
            return unsafe { x86::dot_q4_rows_vnni(w, acts, out) };
        }
    }
    for (i, o) in out.iter_mut().enumerate() {
        let (xq, xd, xs) = acts.row(i);
        *o = dot_q4(w, xq, xd, xs);
    }
}

pub fn dot_q8_rows(w: &[BlockQ8], acts: &QActs, out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        if has_vnni() {
            // SAFETY: as above.
            return unsafe { x86::dot_q8_rows_vnni(w, acts, out) };
        }
    }
    for (i, o) in out.iter_mut().enumerate() {
        let (xq, xd, _) = acts.row(i);
        *o = dot_q8(w, xq, xd);
    }
}

#[inline]
fn has_vnni() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        use std::sync::OnceLock;
        static HAS: OnceLock<bool> = OnceLock::new();
        *HAS.get_or_init(|| {
            has_avx2() && is_x86_feature_detected!("avx512vnni") && is_x86_feature_detected!("avx512vl")
        })
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn rand_q4(rng: &mut rand_chacha::ChaCha8Rng, nb: usize) -> Vec<BlockQ4> {
        (0..nb)
            .map(|_| {
                let mut qs = [0u8; 16];
                rng.fill(&mut qs);
                BlockQ4 { d: f16::from_f32(rng.random_range(0.001..0.1)), m: f16::from_f32(rng.random_range(-0.5..0.5)), qs }
            })
            .collect()
    }

    #[test]
    fn simd_kernels_match_scalar_and_f32_reference() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let nb = 18;
        let x: Vec<f32> = (0..nb * QK).map(|_| rng.random_range(-2.0..2.0)).collect();
        let acts = QActs::quantize(&x, 1, nb * QK);
        let (xq, xd, xs) = acts.row(0);
        let w4 = rand_q4(&mut rng, nb);
        let mut wf = vec![0f32; nb * QK];
        for (b, blk) in w4.iter().enumerate() {
            blk.dequantize(&mut wf[b * QK..(b + 1) * QK]);
        }
        let exact = dot_f32(&wf, &x);
        // int8 activations carry ~0.4% relative error per element; bound the total by the vectors' norms.
        let tol = 0.01 * (dot_f32(&wf, &wf) * dot_f32(&x, &x)).sqrt();
        let (fast, slow) = (dot_q4(&w4, xq, xd, xs), dot_q4_scalar(&w4, xq, xd, xs));
        assert!((fast - slow).abs() <= 1e-4 * slow.abs().max(1.0), "{fast} vs {slow}");
        assert!((fast - exact).abs() <= tol, "{fast} vs exact {exact} (tol {tol})");

        let w8: Vec<BlockQ8> = wf.chunks(QK).map(BlockQ8::quantize).collect();
        let (fast, slow) = (dot_q8(&w8, xq, xd), dot_q8_scalar(&w8, xq, xd));
        assert!((fast - slow).abs() <= 1e-4 * slow.abs().max(1.0), "{fast} vs {slow}");
        assert!((fast - exact).abs() <= tol, "{fast} vs exact {exact} (tol {tol})");
    }

    #[test]
    fn row_tiled_kernels_equal_single_row_kernels() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(9);
        let (nb, m) = (6, 19);
        let x: Vec<f32> = (0..m * nb * QK).map(|_| rng.random_range(-3.0..3.0)).collect();
        let acts = QActs::quantize(&x, m, nb * QK);
        let w4 = rand_q4(&mut rng, nb);
        let w8: Vec<BlockQ8> = x[..nb * QK].chunks(QK).map(|c| BlockQ8::quantize(c)).collect();
        let (mut o4, mut o8) = (vec![0f32; m], vec![0f32; m]);
        dot_q4_rows(&w4, &acts, &mut o4);
        dot_q8_rows(&w8, &acts, &mut o8);
        for i in 0..m {
            let (xq, xd, xs) = acts.row(i);
            let (r4, r8) = (dot_q4_scalar(&w4, xq, xd, xs), dot_q8_scalar(&w8, xq, xd));
            assert!((o4[i] - r4).abs() <= 1e-4 * r4.abs().max(1.0), "row {i}: {} vs {r4}", o4[i]);
            assert!((o8[i] - r8).abs() <= 1e-4 * r8.abs().max(1.0), "row {i}: {} vs {r8}", o8[i]);
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
