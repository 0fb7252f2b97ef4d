//! The multiply-add peak of a path on this CPU, measured: the ceiling `bench` quotes its throughput against.
//!
//! Independent accumulator chains that never leave the registers, run on every thread of the pool at once.
//! Nothing a real kernel does (loads, reductions, dequantization, synchronisation) is in the loop, so no kernel
//! can exceed this figure.
use std::time::Instant;

use super::kernels::{dispatch, Kernel};
use super::lanes::Lanes;
use super::Simd;

/// Chain counts tried: the peak is the best of them, because how many chains fill the pipelines (latency x
/// multiply-add units) without spilling (registers) depends on the core and the path.
const CHAIN_COUNTS: [usize; 3] = [6, 12, 24];

struct Chains {
    iters: usize,
    count: usize,
}

impl Kernel for Chains {
    /// The chains' final sum (to keep them live) and the multiply-adds they did.
    type Out = (f32, usize);
    #[inline(always)]
    fn run<L: Lanes>(self) -> (f32, usize) {
        let (sum, count) = match self.count {
            6 => (chains::<L, 6>(self.iters), 6),
            12 => (chains::<L, 12>(self.iters), 12),
            _ => (chains::<L, 24>(self.iters), 24),
        };
        (sum, L::N * count * self.iters)
    }
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

/// The path's fused multiply-add throughput in GFLOP/s (2 flops per multiply-add) over all threads of the current
/// rayon pool running at once: for each chain count the median of `repeats`, and the best of those. `None` on the
/// portable path: its multiply-add is a separate multiply and add, whose chains would measure the two latencies
/// in a row, not the throughput its kernels reach with independent products.
pub fn fma_peak_gflops(simd: Simd, repeats: usize) -> Option<f64> {
    if simd == Simd::SCALAR {
        return None;
    }
    let iters = 2_000_000;
    let best = CHAIN_COUNTS
        .iter()
        .map(|&count| {
            let mut runs: Vec<f64> = (0..repeats.max(1))
                .map(|_| {
                    let t = Instant::now();
                    let done: Vec<(f32, usize)> = rayon::broadcast(|_| std::hint::black_box(dispatch(simd, Chains { iters, count })));
                    2.0 * done.iter().map(|d| d.1).sum::<usize>() as f64 / t.elapsed().as_secs_f64() / 1e9
                })
                .collect();
            runs.sort_by(f64::total_cmp);
            runs[runs.len() / 2]
        })
        .fold(0.0, f64::max);
    Some(best)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every path runs its chains to a finite value (the loop is neither folded away nor overflowing), and every
    /// path with a fused multiply-add reports a positive rate.
    #[test]
    fn every_fused_path_has_a_positive_finite_peak() {
        for simd in Simd::available() {
            for count in CHAIN_COUNTS {
                let (v, ops) = dispatch(simd, Chains { iters: 1000, count });
                assert!(v.is_finite() && v > 0.0, "{simd}: {count} chains gave {v}");
                assert_eq!(ops % (count * 1000), 0, "{simd}: {ops} multiply-adds from {count} chains");
            }
            match fma_peak_gflops(simd, 1) {
                Some(p) => assert!(p.is_finite() && p > 0.0, "{simd}: peak {p}"),
                None => assert_eq!(simd, Simd::SCALAR, "only the portable path has no peak"),
            }
        }
    }
}
