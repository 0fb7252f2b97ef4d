//! Quantized-weight x f32-activation dot products.
//!
//! Weight blocks are dequantized in registers (exactly: `d * q + m` with an f16 scale and a 4-bit q is exact
//! in f32 before the one rounding of `+ m`) and multiplied with f32 activations, so results equal the f32 model
//! up to summation order. An int8-activation scheme (llama.cpp's) was measured here first: its rounding moved
//! logits by up to 1.3 on the default model and flipped greedy answers at near-ties; and the trainer, which runs in
//! f32, would disagree with the sampler's log-probs.
//!
//! Every output is computed by the same sequence of operations whatever the number of rows, so batched,
//! incremental and single-sequence forwards are bit-identical.
use super::quant::{BlockQ4, BlockQ8, QK};

/// `out[i] = w . x_i` for the `out.len()` rows of `x` (row-major, `k` values each).
pub fn q4_rows(w: &[BlockQ4], x: &[f32], k: usize, out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        if has_avx512() {
            // SAFETY: AVX-512F is present; lengths are checked inside against `k` and `out`.
            return unsafe { x86::q4_rows(w, x, k, out) };
        }
    }
    let mut wf = [0f32; QK];
    out.fill(0.0);
    for (b, blk) in w.iter().enumerate() {
        blk.dequantize(&mut wf);
        for (i, o) in out.iter_mut().enumerate() {
            *o += wf.iter().zip(&x[i * k + b * QK..i * k + (b + 1) * QK]).map(|(a, b)| a * b).sum::<f32>();
        }
    }
}

pub fn q8_rows(w: &[BlockQ8], x: &[f32], k: usize, out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        if has_avx512() {
            // SAFETY: as above.
            return unsafe { x86::q8_rows(w, x, k, out) };
        }
    }
    let mut wf = [0f32; QK];
    out.fill(0.0);
    for (b, blk) in w.iter().enumerate() {
        blk.dequantize(&mut wf);
        for (i, o) in out.iter_mut().enumerate() {
            *o += wf.iter().zip(&x[i * k + b * QK..i * k + (b + 1) * QK]).map(|(a, b)| a * b).sum::<f32>();
        }
    }
}

fn has_avx512() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        use std::sync::OnceLock;
        static HAS: OnceLock<bool> = OnceLock::new();
        *HAS.get_or_init(|| is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("f16c"))
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

    /// Up to 8 rows share each dequantized block; `T` is a constant so the accumulators stay in registers.
    #[inline(always)]
    unsafe fn q4_tile<const T: usize>(w: &[BlockQ4], x: *const f32, k: usize, out: *mut f32) {
        let mask = _mm_set1_epi8(0x0F);
        let mut acc = [_mm512_setzero_ps(); T];
        for (b, blk) in w.iter().enumerate() {
            let q = _mm_loadu_si128(blk.qs.as_ptr() as *const __m128i);
            let lo = _mm_and_si128(q, mask);
            let hi = _mm_and_si128(_mm_srli_epi16(q, 4), mask);
            let d = _mm512_set1_ps(blk.d.to_f32());
            let m = _mm512_set1_ps(blk.m.to_f32());
            let wlo = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(lo)), d, m);
            let whi = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(hi)), d, m);
            for (r, a) in acc.iter_mut().enumerate() {
                let xp = x.add(r * k + b * QK);
                *a = _mm512_fmadd_ps(wlo, _mm512_loadu_ps(xp), *a);
                *a = _mm512_fmadd_ps(whi, _mm512_loadu_ps(xp.add(16)), *a);
            }
        }
        for (r, a) in acc.iter().enumerate() {
            *out.add(r) = _mm512_reduce_add_ps(*a);
        }
    }

    #[inline(always)]
    unsafe fn q8_tile<const T: usize>(w: &[BlockQ8], x: *const f32, k: usize, out: *mut f32) {
        let mut acc = [_mm512_setzero_ps(); T];
        for (b, blk) in w.iter().enumerate() {
            let q = blk.qs.as_ptr() as *const __m128i;
            let d = _mm512_set1_ps(blk.d.to_f32());
            let wlo = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(q))), d);
            let whi = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(q.add(1)))), d);
            for (r, a) in acc.iter_mut().enumerate() {
                let xp = x.add(r * k + b * QK);
                *a = _mm512_fmadd_ps(wlo, _mm512_loadu_ps(xp), *a);
                *a = _mm512_fmadd_ps(whi, _mm512_loadu_ps(xp.add(16)), *a);
            }
        }
        for (r, a) in acc.iter().enumerate() {
            *out.add(r) = _mm512_reduce_add_ps(*a);
        }
    }

    macro_rules! rows_fn {
        ($name:ident, $tile:ident, $blk:ty) => {
            #[target_feature(enable = "avx512f,f16c,fma")]
            pub unsafe fn $name(w: &[$blk], x: &[f32], k: usize, out: &mut [f32]) {
                let nb = k / QK;
                let w = &w[..nb.min(w.len())];
                let m = out.len().min(x.len() / k.max(1));
                let (xp, op) = (x.as_ptr(), out.as_mut_ptr());
                let mut i = 0;
                while i + 8 <= m {
                    $tile::<8>(w, xp.add(i * k), k, op.add(i));
                    i += 8;
                }
                let (xr, or) = (xp.add(i * k), op.add(i));
                match m - i {
                    0 => {}
                    1 => $tile::<1>(w, xr, k, or),
                    2 => $tile::<2>(w, xr, k, or),
                    3 => $tile::<3>(w, xr, k, or),
                    4 => $tile::<4>(w, xr, k, or),
                    5 => $tile::<5>(w, xr, k, or),
                    6 => $tile::<6>(w, xr, k, or),
                    _ => $tile::<7>(w, xr, k, or),
                }
            }
        };
    }
    rows_fn!(q4_rows, q4_tile, BlockQ4);
    rows_fn!(q8_rows, q8_tile, BlockQ8);
}

#[cfg(test)]
mod tests {
    use super::*;
    use half::f16;
    use rand::{Rng, SeedableRng};

    #[test]
    fn equals_f32_dot_and_is_independent_of_row_count() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let (nb, m) = (7, 19);
        let k = nb * QK;
        let w4: Vec<BlockQ4> = (0..nb)
            .map(|_| {
                let mut qs = [0u8; 16];
                rng.fill(&mut qs);
                BlockQ4 { d: f16::from_f32(rng.random_range(0.001..0.1)), m: f16::from_f32(rng.random_range(-0.5..0.5)), qs }
            })
            .collect();
        let x: Vec<f32> = (0..m * k).map(|_| rng.random_range(-3.0..3.0)).collect();
        let w8: Vec<BlockQ8> = x[..k].chunks(QK).map(BlockQ8::quantize).collect();
        let deq = |f: &dyn Fn(usize, &mut [f32])| {
            let mut v = vec![0f32; k];
            (0..nb).for_each(|b| f(b, &mut v[b * QK..(b + 1) * QK]));
            v
        };
        let (f4, f8) = (deq(&|b, o| w4[b].dequantize(o)), deq(&|b, o| w8[b].dequantize(o)));
        let (mut o4, mut o8) = (vec![0f32; m], vec![0f32; m]);
        q4_rows(&w4, &x, k, &mut o4);
        q8_rows(&w8, &x, k, &mut o8);
        for i in 0..m {
            let xi = &x[i * k..(i + 1) * k];
            let e4: f64 = f4.iter().zip(xi).map(|(a, b)| *a as f64 * *b as f64).sum();
            let e8: f64 = f8.iter().zip(xi).map(|(a, b)| *a as f64 * *b as f64).sum();
            assert!((o4[i] as f64 - e4).abs() < 1e-4, "row {i}: {} vs {e4}", o4[i]);
            assert!((o8[i] as f64 - e8).abs() < 1e-4, "row {i}: {} vs {e8}", o8[i]);
            // Alone, the row gives the same bits as inside a tile of 8 or in the remainder.
            let (mut a4, mut a8) = ([0f32], [0f32]);
            q4_rows(&w4, xi, k, &mut a4);
            q8_rows(&w8, xi, k, &mut a8);
            assert_eq!((a4[0], a8[0]), (o4[i], o8[i]), "row {i}");
        }
    }
}
