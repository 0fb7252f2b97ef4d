//! Is llama.cpp's arithmetic (activations quantized to 8 bits, integer dot products with the 4-bit weights) faster
//! than ours (weights dequantized to f32, fused multiply-adds) for a batch of rows on AVX2 + FMA without VNNI?
//! One thread, Q4_1 weights, the same register budget for both; built and run by scripts/dev/int8-vs-f32.sh.
//! Ours: 4 weight rows dequantized into an f32 panel, 3 input rows x 4 weight rows of 8-lane accumulators.
//! Int8: 4 input rows x 2 weight rows; per 32-value block, `vpmaddubsw` + `vpmaddwd` into 8 i32 lanes, converted and
//! scaled by the two blocks' scales into f32 accumulators; the weights' minimum times the block's sum on the side.
#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;
use std::time::Instant;

const QK: usize = 32;

#[derive(Clone, Copy)]
struct Q4 {
    d: f32,
    m: f32,
    qs: [u8; 16],
}

#[derive(Clone, Copy)]
#[repr(C, align(32))]
struct Q8 {
    qs: [i8; 32],
    d: f32,
    s: f32,
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::*;

    #[target_feature(enable = "avx2,fma")]
    unsafe fn hsum(v: __m256) -> f32 {
        let h = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        let h = _mm_add_ps(h, _mm_movehl_ps(h, h));
        _mm_cvtss_f32(_mm_add_ss(h, _mm_movehdup_ps(h)))
    }

    /// The 32 4-bit values of a block as bytes, in element order (low nibbles first).
    #[target_feature(enable = "avx2,fma")]
    unsafe fn nibbles(qs: &[u8; 16]) -> __m256i {
        let v = _mm_loadu_si128(qs.as_ptr() as *const __m128i);
        let mask = _mm_set1_epi8(0x0F);
        _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(v, 4), mask), _mm_and_si128(v, mask))
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn f32_way(w: &[Q4], n: usize, x: &[f32], m: usize, k: usize, out: &mut [f32], panel: &mut [f32]) {
        let nb = k / QK;
        for jt in (0..n).step_by(4) {
            for r in 0..4 {
                for b in 0..nb {
                    let blk = &w[(jt + r) * nb + b];
                    let q = nibbles(&blk.qs);
                    let (d, mm) = (_mm256_set1_ps(blk.d), _mm256_set1_ps(blk.m));
                    let o = panel.as_mut_ptr().add(r * k + b * QK);
                    let halves = [_mm256_castsi256_si128(q), _mm256_extracti128_si256(q, 1)];
                    for (h, q) in halves.into_iter().enumerate() {
                        for (e, q) in [q, _mm_srli_si128(q, 8)].into_iter().enumerate() {
                            let f = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(q));
                            _mm256_storeu_ps(o.add(16 * h + 8 * e), _mm256_fmadd_ps(d, f, mm));
                        }
                    }
                }
            }
            let mut i = 0;
            while i + 3 <= m {
                f32_tile::<3>(panel, x, i, k, out, jt, n);
                i += 3;
            }
            while i < m {
                f32_tile::<1>(panel, x, i, k, out, jt, n);
                i += 1;
            }
        }
    }

    #[target_feature(enable = "avx2,fma")]
    unsafe fn f32_tile<const I: usize>(panel: &[f32], x: &[f32], i0: usize, k: usize, out: &mut [f32], jt: usize, n: usize) {
        let mut acc = [[_mm256_setzero_ps(); 4]; I];
        let (wp, xp) = (panel.as_ptr(), x.as_ptr().add(i0 * k));
        for c in (0..k).step_by(8) {
            let mut xv = [_mm256_setzero_ps(); I];
            for (i, v) in xv.iter_mut().enumerate() {
                *v = _mm256_loadu_ps(xp.add(i * k + c));
            }
            for j in 0..4 {
                let wv = _mm256_loadu_ps(wp.add(j * k + c));
                for i in 0..I {
                    acc[i][j] = _mm256_fmadd_ps(wv, xv[i], acc[i][j]);
                }
            }
        }
        for i in 0..I {
            for j in 0..4 {
                out[(i0 + i) * n + jt + j] = hsum(acc[i][j]);
            }
        }
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn int8_way(w: &[Q4], n: usize, xq: &[Q8], m: usize, k: usize, out: &mut [f32]) {
        let nb = k / QK;
        for jt in (0..n).step_by(2) {
            let mut i = 0;
            while i + 4 <= m {
                int8_tile::<4>(w, xq, i, nb, out, jt, n);
                i += 4;
            }
            while i < m {
                int8_tile::<1>(w, xq, i, nb, out, jt, n);
                i += 1;
            }
        }
    }

    #[target_feature(enable = "avx2,fma")]
    unsafe fn int8_tile<const I: usize>(w: &[Q4], xq: &[Q8], i0: usize, nb: usize, out: &mut [f32], jt: usize, n: usize) {
        let mut acc = [[_mm256_setzero_ps(); 2]; I];
        let mut mins = [[0f32; 2]; I];
        let ones = _mm256_set1_epi16(1);
        for b in 0..nb {
            let wb = [&w[jt * nb + b], &w[(jt + 1) * nb + b]];
            let wq = [nibbles(&wb[0].qs), nibbles(&wb[1].qs)];
            for i in 0..I {
                let xb = &xq[(i0 + i) * nb + b];
                let xv = _mm256_load_si256(xb.qs.as_ptr() as *const __m256i);
                for j in 0..2 {
                    let p = _mm256_madd_epi16(_mm256_maddubs_epi16(wq[j], xv), ones);
                    acc[i][j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), _mm256_set1_ps(xb.d * wb[j].d), acc[i][j]);
                    mins[i][j] += wb[j].m * xb.s;
                }
            }
        }
        for i in 0..I {
            for j in 0..2 {
                out[(i0 + i) * n + jt + j] = hsum(acc[i][j]) + mins[i][j];
            }
        }
    }
}

/// Rows of `x` as 8-bit blocks: `q = round(x / d)` with `d = max |x| / 127`, and `s = d * sum q`.
fn quantize(x: &[f32], xq: &mut [Q8]) {
    for (s, q) in x.chunks_exact(QK).zip(xq.iter_mut()) {
        let d = s.iter().fold(0f32, |a, v| a.max(v.abs())) / 127.0;
        let id = if d > 0.0 { 1.0 / d } else { 0.0 };
        let mut sum = 0i32;
        for (o, v) in q.qs.iter_mut().zip(s) {
            let r = (v * id).round_ties_even() as i32;
            *o = r as i8;
            sum += r;
        }
        q.d = d;
        q.s = d * sum as f32;
    }
}

fn main() {
    #[cfg(target_arch = "x86_64")]
    {
        if !(is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")) {
            eprintln!("this CPU has no AVX2 + FMA");
            std::process::exit(2);
        }
        let mut seed = 88172645463325252u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let reps = 300;
        println!("shape (rows x k x n) | ours GFLOP/s | int8 GFLOP/s | int8 incl. quantizing the rows | int8 / ours");
        for (m, k, n) in [(32, 576, 576), (32, 576, 1536), (32, 1536, 576), (256, 576, 1536)] {
            let nb = k / QK;
            let w: Vec<Q4> = (0..n * nb)
                .map(|_| Q4 { d: 0.01 + (next() % 100) as f32 * 2e-4, m: -((next() % 100) as f32) * 1e-3, qs: next().to_le_bytes().repeat(2).try_into().unwrap() })
                .collect();
            let x: Vec<f32> = (0..m * k).map(|_| (next() % 20000) as f32 / 10000.0 - 1.0).collect();
            let mut xq = vec![Q8 { qs: [0; 32], d: 0.0, s: 0.0 }; m * nb];
            let mut panel = vec![0f32; 4 * k];
            let (mut ours, mut int8) = (vec![0f32; m * n], vec![0f32; m * n]);
            let mut best = [f64::MAX; 3];
            for _ in 0..reps {
                let t = Instant::now();
                unsafe { avx2::f32_way(&w, n, &x, m, k, &mut ours, &mut panel) };
                best[0] = best[0].min(t.elapsed().as_secs_f64());
                let t = Instant::now();
                quantize(&x, &mut xq);
                let t1 = Instant::now();
                unsafe { avx2::int8_way(&w, n, &xq, m, k, &mut int8) };
                best[1] = best[1].min(t1.elapsed().as_secs_f64());
                best[2] = best[2].min(t.elapsed().as_secs_f64());
            }
            let worst = ours.iter().zip(&int8).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
            let scale = ours.iter().fold(0f32, |a, v| a.max(v.abs()));
            assert!(worst < 0.02 * scale, "the int8 result is off: {worst} of {scale}");
            let g = |t: f64| 2.0 * (m * k * n) as f64 / t / 1e9;
            println!("{m} x {k} x {n} | {:.1} | {:.1} | {:.1} | {:.2}", g(best[0]), g(best[1]), g(best[2]), best[0] / best[1]);
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    eprintln!("x86-64 only");
}
