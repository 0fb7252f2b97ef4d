//! Element-wise kernels, dot products and attention, written once over [`Lanes`] and run on the chosen path.
//!
//! Every kernel computes an output from its own row only, in an order fixed by the row's length, so a row gives
//! the same bits whatever else is in the batch.
use super::exp::exp;
use super::lanes::{Lanes, Portable};
use super::Simd;

/// A kernel generic over the lane type; [`dispatch`] runs it compiled for the path's instruction set.
pub trait Kernel {
    type Out;
    /// Implementations must be `#[inline(always)]`, so that their body is compiled inside the target-feature
    /// wrapper of [`dispatch`].
    fn run<L: Lanes>(self) -> Self::Out;
}

/// Runs `k` with the lanes of `simd`, in a function compiled with that path's target features.
#[inline]
pub fn dispatch<K: Kernel>(simd: Simd, k: K) -> K::Out {
    #[cfg(target_arch = "x86_64")]
    if simd.is_avx512() {
        #[target_feature(enable = "avx512f,avx512vl,avx2,fma,f16c")]
        unsafe fn avx512<K: Kernel>(k: K) -> K::Out {
            k.run::<super::lanes::Avx512>()
        }
        // SAFETY: an AVX-512 `Simd` exists only on CPUs with all five features.
        return unsafe { avx512(k) };
    }
    #[cfg(target_arch = "x86_64")]
    if simd.uses_avx2() {
        #[target_feature(enable = "avx2,fma,f16c")]
        unsafe fn avx2<K: Kernel>(k: K) -> K::Out {
            k.run::<super::lanes::Avx2>()
        }
        // SAFETY: a `Simd` that uses AVX2 exists only on CPUs with AVX2, FMA and F16C.
        return unsafe { avx2(k) };
    }
    #[cfg(target_arch = "aarch64")]
    if simd.uses_neon() {
        return k.run::<super::lanes::Neon>();
    }
    let _ = simd;
    k.run::<Portable>()
}

/// Calls `f(start, len)` for the `N`-lane chunks of `0..n`, the last one possibly partial.
#[inline(always)]
pub(crate) fn for_chunks<L: Lanes>(n: usize, mut f: impl FnMut(usize, usize)) {
    let mut c = 0;
    while c < n {
        let len = L::N.min(n - c);
        f(c, len);
        c += len;
    }
}

/// Loads `len <= N` values from `s[at..]`, zero-padded.
#[inline(always)]
pub(crate) fn load_part<L: Lanes>(s: &[f32], at: usize, len: usize) -> L {
    if len == L::N {
        return L::from_slice(&s[at..at + len]);
    }
    let mut buf = [0f32; 16];
    buf[..len].copy_from_slice(&s[at..at + len]);
    L::from_slice(&buf)
}

/// Stores the first `len <= N` lanes of `v` to `s[at..]`.
#[inline(always)]
pub(crate) fn store_part<L: Lanes>(v: L, s: &mut [f32], at: usize, len: usize) {
    if len == L::N {
        return v.to_slice(&mut s[at..at + len]);
    }
    let mut buf = [0f32; 16];
    v.to_slice(&mut buf);
    s[at..at + len].copy_from_slice(&buf[..len]);
}

/// Dot product with four accumulators over `N`-lane chunks, then the tail in order.
#[inline(always)]
pub(crate) fn dot_l<L: Lanes>(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let mut acc = [L::zero(); 4];
    let mut c = 0;
    while c + 4 * L::N <= n {
        for (u, v) in acc.iter_mut().enumerate() {
            let o = c + u * L::N;
            *v = L::from_slice(&a[o..]).mul_add(L::from_slice(&b[o..]), *v);
        }
        c += 4 * L::N;
    }
    while c + L::N <= n {
        acc[0] = L::from_slice(&a[c..]).mul_add(L::from_slice(&b[c..]), acc[0]);
        c += L::N;
    }
    let mut s = acc[0].add(acc[1]).add(acc[2].add(acc[3])).sum();
    for i in c..n {
        s += a[i] * b[i];
    }
    s
}

/// Four dot products with the same `b`, each bit for bit as [`dot_l`] gives it: the same chains, reduced four at
/// a time, and the scalar tails interleaved (short products, such as a LoRA's rank-8 up-projection, are all tail
/// on 16 lanes).
#[allow(clippy::needless_range_loop)]
#[inline(always)]
pub(crate) fn dot4_l<L: Lanes>(a: [&[f32]; 4], b: &[f32]) -> [f32; 4] {
    let n = a.iter().fold(b.len(), |n, a| n.min(a.len()));
    let mut acc = [[L::zero(); 4]; 4];
    let mut c = 0;
    while c + 4 * L::N <= n {
        for u in 0..4 {
            let o = c + u * L::N;
            let bv = L::from_slice(&b[o..]);
            for i in 0..4 {
                acc[i][u] = L::from_slice(&a[i][o..]).mul_add(bv, acc[i][u]);
            }
        }
        c += 4 * L::N;
    }
    while c + L::N <= n {
        let bv = L::from_slice(&b[c..]);
        for i in 0..4 {
            acc[i][0] = L::from_slice(&a[i][c..]).mul_add(bv, acc[i][0]);
        }
        c += L::N;
    }
    let mut v = [L::zero(); 4];
    for i in 0..4 {
        v[i] = acc[i][0].add(acc[i][1]).add(acc[i][2].add(acc[i][3]));
    }
    let mut s = L::sum4(v);
    for t in c..n {
        for i in 0..4 {
            s[i] += a[i][t] * b[t];
        }
    }
    s
}

struct Dot<'a>(&'a [f32], &'a [f32]);
impl Kernel for Dot<'_> {
    type Out = f32;
    #[inline(always)]
    fn run<L: Lanes>(self) -> f32 {
        dot_l::<L>(self.0, self.1)
    }
}

/// `sum a[i] * b[i]`.
pub fn dot(simd: Simd, a: &[f32], b: &[f32]) -> f32 {
    dispatch(simd, Dot(a, b))
}

struct RmsNorm<'a> {
    x: &'a [f32],
    w: &'a [f32],
    eps: f32,
    out: &'a mut [f32],
}
impl Kernel for RmsNorm<'_> {
    type Out = ();
    #[inline(always)]
    fn run<L: Lanes>(self) {
        let h = self.w.len();
        for (xr, or) in self.x.chunks_exact(h).zip(self.out.chunks_exact_mut(h)) {
            let ms = dot_l::<L>(xr, xr) / h as f32;
            let inv = L::splat(1.0 / (ms + self.eps).sqrt());
            for_chunks::<L>(h, |c, len| {
                let v = load_part::<L>(xr, c, len).mul(inv).mul(load_part::<L>(self.w, c, len));
                store_part(v, or, c, len);
            });
        }
    }
}

/// Row-wise RMSNorm: `out = x / sqrt(mean(x^2) + eps) * w` for every `w.len()`-wide row of `x`.
pub fn rms_norm(simd: Simd, x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    dispatch(simd, RmsNorm { x, w, eps, out })
}

struct SiluMul<'a> {
    gate_up: &'a [f32],
    inter: usize,
    out: &'a mut [f32],
}
impl Kernel for SiluMul<'_> {
    type Out = ();
    #[inline(always)]
    fn run<L: Lanes>(self) {
        let inter = self.inter;
        let one = L::splat(1.0);
        for (a, g) in self.out.chunks_exact_mut(inter).zip(self.gate_up.chunks_exact(2 * inter)) {
            let (gate, up) = g.split_at(inter);
            for_chunks::<L>(inter, |c, len| {
                let x = load_part::<L>(gate, c, len);
                let v = x.div(one.add(exp(L::zero().sub(x)))).mul(load_part::<L>(up, c, len));
                store_part(v, a, c, len);
            });
        }
    }
}

/// SwiGLU: `out = silu(gate) * up` per row, where each row of `gate_up` is `[gate | up]` and `out` has as many
/// rows with half the width.
pub fn silu_mul(simd: Simd, gate_up: &[f32], rows: usize, out: &mut [f32]) {
    assert_eq!(gate_up.len(), 2 * out.len(), "silu_mul widths");
    if rows == 0 {
        return;
    }
    let inter = out.len() / rows;
    dispatch(simd, SiluMul { gate_up, inter, out })
}

struct MaxOf<'a>(&'a [f32]);
impl Kernel for MaxOf<'_> {
    type Out = f32;
    #[inline(always)]
    fn run<L: Lanes>(self) -> f32 {
        let mut m = L::splat(f32::NEG_INFINITY);
        let mut chunks = self.0.chunks_exact(L::N);
        for c in chunks.by_ref() {
            m = m.max(L::from_slice(c));
        }
        chunks.remainder().iter().fold(m.hmax(), |a, &v| if v > a { v } else { a })
    }
}

/// The largest value (-inf for none).
pub fn max_of(simd: Simd, xs: &[f32]) -> f32 {
    dispatch(simd, MaxOf(xs))
}

struct ExpShiftSum<'a>(&'a mut [f32], f32);
impl Kernel for ExpShiftSum<'_> {
    type Out = f32;
    #[inline(always)]
    fn run<L: Lanes>(self) -> f32 {
        let (xs, shift) = (self.0, L::splat(self.1));
        let mut sum = L::zero();
        for_chunks::<L>(xs.len(), |c, len| {
            let e = exp(load_part::<L>(xs, c, len).sub(shift));
            store_part(e, xs, c, len);
            // Padding lanes are exp(0 - shift): keep them out of the sum.
            sum = sum.add(if len == L::N { e } else { load_part::<L>(xs, c, len) });
        });
        sum.sum()
    }
}

/// `x = exp(x - shift)` in place; returns the sum of the new values.
pub fn exp_shift_sum(simd: Simd, xs: &mut [f32], shift: f32) -> f32 {
    dispatch(simd, ExpShiftSum(xs, shift))
}

/// Softmax in place.
pub fn softmax(simd: Simd, xs: &mut [f32]) {
    let max = max_of(simd, xs);
    let inv = 1.0 / exp_shift_sum(simd, xs, max);
    scale(simd, xs, inv);
}

struct Scale<'a>(&'a mut [f32], f32);
impl Kernel for Scale<'_> {
    type Out = ();
    #[inline(always)]
    fn run<L: Lanes>(self) {
        let k = L::splat(self.1);
        for_chunks::<L>(self.0.len(), |c, len| {
            let v = load_part::<L>(self.0, c, len).mul(k);
            store_part(v, self.0, c, len);
        });
    }
}

/// `x *= k` in place.
pub fn scale(simd: Simd, xs: &mut [f32], k: f32) {
    dispatch(simd, Scale(xs, k))
}

struct SwiGluBwd<'a> {
    gate_up: &'a [f32],
    dy: &'a [f32],
    out: &'a mut [f32],
}
impl Kernel for SwiGluBwd<'_> {
    type Out = ();
    #[inline(always)]
    fn run<L: Lanes>(self) {
        let i = self.dy.len();
        let (g, u) = self.gate_up.split_at(i);
        let (og, ou) = self.out.split_at_mut(i);
        let one = L::splat(1.0);
        for_chunks::<L>(i, |c, len| {
            let (gv, uv, d) = (load_part::<L>(g, c, len), load_part::<L>(u, c, len), load_part::<L>(self.dy, c, len));
            let sig = one.div(one.add(exp(L::zero().sub(gv))));
            store_part(d.mul(uv).mul(sig).mul(one.add(gv.mul(one.sub(sig)))), og, c, len);
            store_part(d.mul(gv).mul(sig), ou, c, len);
        });
    }
}

/// Gradient of SwiGLU for one row: `gate_up` is `[gate | up]` (2I), `dy` the output's gradient (I), `out` the
/// input's gradient (2I): `d gate = dy * up * sig(g) * (1 + g (1 - sig(g)))`, `d up = dy * silu(g)`.
pub fn swiglu_bwd(simd: Simd, gate_up: &[f32], dy: &[f32], out: &mut [f32]) {
    assert!(gate_up.len() == 2 * dy.len() && out.len() == gate_up.len(), "swiglu_bwd widths");
    dispatch(simd, SwiGluBwd { gate_up, dy, out })
}

struct Rope<'a> {
    x: &'a mut [f32],
    cos: &'a [f32],
    sin: &'a [f32],
}
impl Kernel for Rope<'_> {
    type Out = ();
    #[inline(always)]
    fn run<L: Lanes>(self) {
        let h = self.cos.len();
        for head in self.x.chunks_exact_mut(2 * h) {
            let (a, b) = head.split_at_mut(h);
            for_chunks::<L>(h, |c, len| {
                let (x0, x1) = (load_part::<L>(a, c, len), load_part::<L>(b, c, len));
                let (cs, sn) = (load_part::<L>(self.cos, c, len), load_part::<L>(self.sin, c, len));
                store_part(x0.mul(cs).sub(x1.mul(sn)), a, c, len);
                store_part(x0.mul(sn).add(x1.mul(cs)), b, c, len);
            });
        }
    }
}

/// Rotary embedding in the half-split layout: every `2 * cos.len()`-wide head of `x` is rotated in place.
pub fn rope(simd: Simd, x: &mut [f32], cos: &[f32], sin: &[f32]) {
    dispatch(simd, Rope { x, cos, sin })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn rand_vec(rng: &mut impl Rng, n: usize) -> Vec<f32> {
        (0..n).map(|_| rng.random_range(-2.0..2.0)).collect()
    }

    struct Dots<'a>(&'a [f32], usize);
    impl Kernel for Dots<'_> {
        type Out = Vec<([f32; 4], [f32; 4])>;
        #[inline(always)]
        fn run<L: Lanes>(self) -> Self::Out {
            let (v, n) = (self.0, self.1);
            let mut out = Vec::new();
            for w in v.windows(5 * n).step_by(5 * n) {
                let a = [&w[..n], &w[n..2 * n], &w[2 * n..3 * n], &w[3 * n..4 * n]];
                let b = &w[4 * n..];
                out.push((dot4_l::<L>(a, b), [dot_l::<L>(a[0], b), dot_l::<L>(a[1], b), dot_l::<L>(a[2], b), dot_l::<L>(a[3], b)]));
            }
            out
        }
    }

    /// Four dot products at once give each one's bits as alone, on every path, for lengths that are all tail,
    /// partly tail and whole chunks.
    #[test]
    fn dot4_is_dot_bit_for_bit_on_every_path() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        for n in [1, 5, 8, 12, 16, 31, 64, 70, 576] {
            let v: Vec<f32> = (0..20 * n).map(|_| rng.random_range(-2.0f32..2.0) * 2f32.powi(rng.random_range(-12..12))).collect();
            for simd in Simd::available() {
                for (k, (four, one)) in dispatch(simd, Dots(&v, n)).into_iter().enumerate() {
                    assert_eq!(four.map(f32::to_bits), one.map(f32::to_bits), "{simd}, n = {n}, group {k}");
                }
            }
        }
    }

    /// Every path agrees with an f64 reference, for lengths with and without a partial chunk.
    #[test]
    fn kernels_match_references_on_every_path() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        for simd in Simd::available() {
            for len in [1, 7, 8, 13, 64, 70, 576] {
                let (a, b) = (rand_vec(&mut rng, len), rand_vec(&mut rng, len));
                let e: f64 = a.iter().zip(&b).map(|(x, y)| *x as f64 * *y as f64).sum();
                assert!((dot(simd, &a, &b) as f64 - e).abs() < 1e-4 * (len as f64).sqrt(), "{simd} dot {len}");

                let rows = 3;
                let x = rand_vec(&mut rng, rows * len);
                let mut out = vec![0f32; rows * len];
                rms_norm(simd, &x, &b, 1e-5, &mut out);
                for r in 0..rows {
                    let xr = &x[r * len..(r + 1) * len];
                    let inv = 1.0 / ((xr.iter().map(|v| (*v as f64).powi(2)).sum::<f64>() / len as f64) + 1e-5).sqrt();
                    for i in 0..len {
                        let e = xr[i] as f64 * inv * b[i] as f64;
                        assert!((out[r * len + i] as f64 - e).abs() < 1e-5 * (1.0 + e.abs()), "{simd} rms_norm {len}");
                    }
                }

                let gu = rand_vec(&mut rng, rows * 2 * len).iter().map(|v| v * 10.0).collect::<Vec<_>>();
                silu_mul(simd, &gu, rows, &mut out);
                for r in 0..rows {
                    for i in 0..len {
                        let (g, u) = (gu[r * 2 * len + i] as f64, gu[r * 2 * len + len + i] as f64);
                        let e = g / (1.0 + (-g).exp()) * u;
                        assert!((out[r * len + i] as f64 - e).abs() < 1e-5 * (1.0 + e.abs()), "{simd} silu {len}");
                    }
                }

                let (cos, sin) = (rand_vec(&mut rng, len), rand_vec(&mut rng, len));
                let mut y = rand_vec(&mut rng, 2 * 2 * len);
                let y0 = y.clone();
                rope(simd, &mut y, &cos, &sin);
                for h in 0..2 {
                    for i in 0..len {
                        let (x0, x1) = (y0[h * 2 * len + i], y0[h * 2 * len + len + i]);
                        assert_eq!(y[h * 2 * len + i], x0 * cos[i] - x1 * sin[i]);
                        assert_eq!(y[h * 2 * len + len + i], x0 * sin[i] + x1 * cos[i]);
                    }
                }
            }
        }
    }

    #[test]
    fn exp_softmax_and_max_on_every_path_and_nan_stays_nan() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        for simd in Simd::available() {
            for len in [1, 5, 8, 17, 100] {
                let x: Vec<f32> = (0..len).map(|_| rng.random_range(-90.0..88.0)).collect();
                let mx = x.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
                assert_eq!(max_of(simd, &x), mx, "{simd}");
                let mut e = x.clone();
                let sum = exp_shift_sum(simd, &mut e, 1.0);
                let mut esum = 0f64;
                for (v, o) in x.iter().zip(&e) {
                    let r = ((*v - 1.0) as f64).exp();
                    esum += r;
                    if (*v - 1.0) > -87.0 && (*v - 1.0) < 88.0 {
                        assert!((*o as f64 - r).abs() <= 3e-7 * r, "{simd} exp({}) = {o} vs {r}", v - 1.0);
                    }
                }
                assert!((sum as f64 - esum).abs() <= 1e-6 * esum, "{simd} sum");
                let mut p = x.clone();
                softmax(simd, &mut p);
                assert!((p.iter().map(|v| *v as f64).sum::<f64>() - 1.0).abs() < 1e-5, "{simd} softmax");
                let mut n = x.clone();
                n[len / 2] = f32::NAN;
                assert!(exp_shift_sum(simd, &mut n, 0.0).is_nan() && n[len / 2].is_nan(), "{simd}: NaN lost");
            }
        }
    }
}
