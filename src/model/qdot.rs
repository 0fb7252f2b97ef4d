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

/// Weight rows in one f32 panel of [`panel_matmul`].
pub const PANEL: usize = 4;
/// Input rows from which dequantizing a panel once beats dequantizing every block in registers per 8 rows.
pub const PANEL_MIN_ROWS: usize = 4;

/// Whether [`panel_matmul`] runs on this CPU for inputs `k` wide.
pub fn panel_available(k: usize) -> bool {
    has_avx512() && k.is_multiple_of(16)
}

/// `out[i * ldo + j] = w_j . x_i` for the `jn <= PANEL` f32 weight rows in `panel` (`PANEL x k`, rows past `jn`
/// ignored) and the `m` rows of `x`. Every output is the same chain of 16-lane FMAs over `k` followed by the same
/// reduction as `q4_rows` / `q8_rows` on the dequantized weights, so the two paths give identical bits and the
/// choice between them never shows in results. Callers check [`panel_available`] first.
///
/// # Safety
/// `out` must be valid for writes at `i * ldo + j` for every `i < m`, `j < jn`, and no other thread may access those
/// elements meanwhile (tasks of one matmul write disjoint columns of a shared output).
pub unsafe fn panel_matmul(panel: &[f32], jn: usize, x: &[f32], m: usize, k: usize, out: *mut f32, ldo: usize) {
    assert!(panel.len() >= PANEL * k && x.len() >= m * k && jn <= PANEL && panel_available(k));
    #[cfg(target_arch = "x86_64")]
    // SAFETY: AVX-512F is present (panel_available); input bounds asserted above, output bounds are the caller's.
    unsafe {
        x86::panel_matmul(panel.as_ptr(), jn, x.as_ptr(), m, k, out, ldo)
    }
}

macro_rules! dequantize_fn {
    ($name:ident, $blk:ty) => {
        /// Dequantizes blocks into `out` (`32 * w.len()` values), with the same instructions (hence bits) as the
        /// kernels.
        pub fn $name(w: &[$blk], out: &mut [f32]) {
            assert!(out.len() >= w.len() * QK);
            #[cfg(target_arch = "x86_64")]
            {
                if has_avx512() {
                    // SAFETY: AVX-512F is present; `out` holds every block, asserted above.
                    return unsafe { x86::$name(w, out.as_mut_ptr()) };
                }
            }
            w.iter().zip(out.chunks_exact_mut(QK)).for_each(|(b, o)| b.dequantize(o));
        }
    };
}
dequantize_fn!(dequantize_q4, BlockQ4);
dequantize_fn!(dequantize_q8, BlockQ8);

fn has_avx512() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        use std::sync::OnceLock;
        static HAS: OnceLock<bool> = OnceLock::new();
        *HAS.get_or_init(|| is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512vl") && is_x86_feature_detected!("f16c"))
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

    /// `h` in every lane, converted by F16C in place (`half`'s `to_f32` in a portable build is a call through a
    /// function pointer, two per block). The conversion is exact either way.
    #[inline(always)]
    unsafe fn splat_f16(h: half::f16) -> __m512 {
        _mm512_broadcastss_ps(_mm_cvtph_ps(_mm_cvtsi32_si128(h.to_bits() as i32)))
    }

    #[inline(always)]
    unsafe fn q4_block(blk: &BlockQ4) -> (__m512, __m512) {
        let mask = _mm_set1_epi8(0x0F);
        let q = _mm_loadu_si128(blk.qs.as_ptr() as *const __m128i);
        let lo = _mm_and_si128(q, mask);
        let hi = _mm_and_si128(_mm_srli_epi16(q, 4), mask);
        let (d, m) = (splat_f16(blk.d), splat_f16(blk.m));
        (_mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(lo)), d, m), _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(hi)), d, m))
    }

    #[inline(always)]
    unsafe fn q8_block(blk: &BlockQ8) -> (__m512, __m512) {
        let q = blk.qs.as_ptr() as *const __m128i;
        let d = splat_f16(blk.d);
        (
            _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(q))), d),
            _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(q.add(1)))), d),
        )
    }

    macro_rules! dequantize_x86 {
        ($name:ident, $block:ident, $blk:ty) => {
            #[target_feature(enable = "avx512f,avx512vl,f16c,fma")]
            pub unsafe fn $name(w: &[$blk], out: *mut f32) {
                for (b, blk) in w.iter().enumerate() {
                    let (lo, hi) = $block(blk);
                    _mm512_storeu_ps(out.add(b * QK), lo);
                    _mm512_storeu_ps(out.add(b * QK + 16), hi);
                }
            }
        };
    }
    dequantize_x86!(dequantize_q4, q4_block, BlockQ4);
    dequantize_x86!(dequantize_q8, q8_block, BlockQ8);

    /// Up to 8 rows share each dequantized block; `T` is a constant so the accumulators stay in registers.
    #[inline(always)]
    unsafe fn q4_tile<const T: usize>(w: &[BlockQ4], x: *const f32, k: usize, out: *mut f32) {
        let mut acc = [_mm512_setzero_ps(); T];
        for (b, blk) in w.iter().enumerate() {
            let (wlo, whi) = q4_block(blk);
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
            let (wlo, whi) = q8_block(blk);
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
            #[target_feature(enable = "avx512f,avx512vl,f16c,fma")]
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

    /// `I` input rows x 4 weight rows of accumulators stay in registers; each weight chunk is loaded once per
    /// `I` rows and each input chunk once per 4 weight rows.
    #[inline(always)]
    unsafe fn panel_tile<const I: usize>(w: *const f32, jn: usize, x: *const f32, k: usize, out: *mut f32, ldo: usize) {
        let mut acc = [[_mm512_setzero_ps(); 4]; I];
        let mut c = 0;
        while c < k {
            let wv = [_mm512_loadu_ps(w.add(c)), _mm512_loadu_ps(w.add(k + c)), _mm512_loadu_ps(w.add(2 * k + c)), _mm512_loadu_ps(w.add(3 * k + c))];
            for (i, a) in acc.iter_mut().enumerate() {
                let xv = _mm512_loadu_ps(x.add(i * k + c));
                for j in 0..4 {
                    a[j] = _mm512_fmadd_ps(wv[j], xv, a[j]);
                }
            }
            c += 16;
        }
        for (i, a) in acc.iter().enumerate() {
            for (j, v) in a.iter().enumerate().take(jn) {
                *out.add(i * ldo + j) = _mm512_reduce_add_ps(*v);
            }
        }
    }

    // avx512vl too: without it the 256- and 128-bit steps of the final reductions cannot use zmm16-31, and the
    // compiler keeps the 24 accumulators on the stack (two memory operations per FMA, 25% slower prompts).
    #[target_feature(enable = "avx512f,avx512vl")]
    pub unsafe fn panel_matmul(w: *const f32, jn: usize, x: *const f32, m: usize, k: usize, out: *mut f32, ldo: usize) {
        const I: usize = 6;
        let mut i = 0;
        while i + I <= m {
            panel_tile::<I>(w, jn, x.add(i * k), k, out.add(i * ldo), ldo);
            i += I;
        }
        let (xr, or) = (x.add(i * k), out.add(i * ldo));
        match m - i {
            0 => {}
            1 => panel_tile::<1>(w, jn, xr, k, or, ldo),
            2 => panel_tile::<2>(w, jn, xr, k, or, ldo),
            3 => panel_tile::<3>(w, jn, xr, k, or, ldo),
            4 => panel_tile::<4>(w, jn, xr, k, or, ldo),
            _ => panel_tile::<5>(w, jn, xr, k, or, ldo),
        }
    }
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

    #[test]
    fn panel_path_gives_the_register_path_bits() {
        if !panel_available(64) {
            return;
        }
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        let (nb, m, rows) = (18, 13, 7);
        let k = nb * QK;
        let w4: Vec<BlockQ4> = (0..rows * nb)
            .map(|_| {
                let mut qs = [0u8; 16];
                rng.fill(&mut qs);
                BlockQ4 { d: f16::from_f32(rng.random_range(0.001..0.1)), m: f16::from_f32(rng.random_range(-0.5..0.5)), qs }
            })
            .collect();
        let x: Vec<f32> = (0..m * k).map(|_| rng.random_range(-3.0..3.0)).collect();
        let w8: Vec<BlockQ8> = x[..rows * k / 2].chunks(QK).chain(x[..rows * k / 2].chunks(QK)).map(BlockQ8::quantize).collect();
        let (mut simd, mut scalar) = (vec![0f32; rows * k], vec![0f32; rows * k]);
        dequantize_q4(&w4, &mut simd);
        w4.iter().zip(scalar.chunks_exact_mut(QK)).for_each(|(b, o)| b.dequantize(o));
        assert_eq!(simd, scalar);
        dequantize_q8(&w8, &mut simd);
        w8.iter().zip(scalar.chunks_exact_mut(QK)).for_each(|(b, o)| b.dequantize(o));
        assert_eq!(simd, scalar);
        let deq = |row: usize, f: &dyn Fn(usize, &mut [f32]), panel: &mut [f32], slot: usize| {
            (0..nb).for_each(|b| f(row * nb + b, &mut panel[slot * k + b * QK..slot * k + (b + 1) * QK]));
        };
        for (name, f, reg) in [
            ("q4", &(|i: usize, o: &mut [f32]| w4[i].dequantize(o)) as &dyn Fn(usize, &mut [f32]), &(|r: usize, o: &mut [f32]| q4_rows(&w4[r * nb..(r + 1) * nb], &x, k, o)) as &dyn Fn(usize, &mut [f32])),
            ("q8", &|i: usize, o: &mut [f32]| w8[i].dequantize(o), &|r: usize, o: &mut [f32]| q8_rows(&w8[r * nb..(r + 1) * nb], &x, k, o)),
        ] {
            let mut out = vec![f32::NAN; m * rows];
            let mut panel = vec![0f32; PANEL * k];
            for j0 in (0..rows).step_by(PANEL) {
                let jn = PANEL.min(rows - j0);
                for s in 0..jn {
                    deq(j0 + s, f, &mut panel, s);
                }
                // SAFETY: columns j0..j0+jn of an m x rows buffer.
                unsafe { panel_matmul(&panel, jn, &x, m, k, out[j0..].as_mut_ptr(), rows) };
            }
            for r in 0..rows {
                let mut col = vec![0f32; m];
                reg(r, &mut col);
                for i in 0..m {
                    assert_eq!(out[i * rows + r].to_bits(), col[i].to_bits(), "{name} row {i} col {r}");
                }
            }
        }
    }
}
