//! The multiply-add peak of a path on this CPU, measured: the ceiling `bench` quotes its throughput against.
//!
//! Independent accumulator chains that never leave the registers (enough of them to cover the multiply-add's
//! latency on every core we know), run on every thread of the pool at once. Nothing a real kernel does (loads,
//! reductions, dequantization, synchronisation) is in the loop, so no kernel can exceed this figure.
use std::time::Instant;

use super::kernels::{dispatch, Kernel};
use super::lanes::Lanes;
use super::Simd;

struct Chains {
    iters: usize,
}

impl Kernel for Chains {
    type Out = f32;
    #[inline(always)]
    fn run<L: Lanes>(self) -> f32 {
        if L::REGISTERS >= 32 {
            chains::<L, 24>(self.iters)
        } else {
            chains::<L, 12>(self.iters)
        }
    }
}

/// Multiply-adds per iteration of [`chains`] on the lanes of a path.
fn ops_per_iter(simd: Simd) -> usize {
    struct Width;
    impl Kernel for Width {
        type Out = usize;
        #[inline(always)]
        fn run<L: Lanes>(self) -> usize {
            L::N * if L::REGISTERS >= 32 { 24 } else { 12 }
        }
    }
    dispatch(simd, Width)
}

#[inline(always)]
fn chains<L: Lanes, const C: usize>(iters: usize) -> f32 {
    // Opaque operands, so the compiler cannot fold the chains; |a| < 1 keeps them finite.
    let (a, b) = (L::splat(std::hint::black_box(0.999_999)), L::splat(std::hint::black_box(1e-7)));
    let mut acc = [L::splat(1.0); C];
    for _ in 0..iters {
        for v in acc.iter_mut() {
            *v = v.mul_add(a, b);
        }
    }
    let mut s = 0.0;
    for v in acc {
        s += v.sum();
    }
    s
}

/// The path's multiply-add throughput in GFLOP/s (2 flops per multiply-add) over all threads of the current rayon
/// pool running at once; the median of `repeats`.
pub fn fma_peak_gflops(simd: Simd, repeats: usize) -> f64 {
    let iters = 4_000_000;
    let flops = (2 * ops_per_iter(simd) * iters) as f64;
    let mut runs: Vec<f64> = (0..repeats.max(1))
        .map(|_| {
            let t = Instant::now();
            let done: Vec<f32> = rayon::broadcast(|_| std::hint::black_box(dispatch(simd, Chains { iters })));
            flops * done.len() as f64 / t.elapsed().as_secs_f64() / 1e9
        })
        .collect();
    runs.sort_by(f64::total_cmp);
    runs[runs.len() / 2]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every path runs its chains to a finite value (the loop is neither folded away nor overflowing) and
    /// reports a positive rate.
    #[test]
    fn every_path_has_a_positive_finite_peak() {
        for simd in Simd::available() {
            let v = dispatch(simd, Chains { iters: 1000 });
            assert!(v.is_finite() && v > 0.0, "{simd}: chains gave {v}");
            let p = fma_peak_gflops(simd, 1);
            assert!(p.is_finite() && p > 0.0, "{simd}: peak {p}");
        }
    }
}
