//! `x W^T` for quantized or f32 weight rows, on every path.
//!
//! Four weight rows at a time are dequantized into an f32 panel (exactly: `d * q` is exact in f32, so
//! `d * q + m` rounds once, as a fused multiply-add would) and multiplied with a register tile of input rows: `I`
//! input rows x 4 weight rows of accumulators, each weight chunk loaded once per `I` rows and each input chunk once
//! per 4 weight rows. Every output is the same chain of `N`-lane multiply-adds over `k` followed by the same
//! reduction whatever the tile, the panel or the number of rows, so batching never changes a result.
use super::dequant::QBlock;
use super::kernels::{dispatch, Kernel};
use super::lanes::Lanes;
use super::Simd;
use crate::quant::{BlockIQ4NL, BlockIQ4XS, BlockQ2K, BlockQ3K, BlockQ4, BlockQ4K, BlockQ5K, BlockQ5_0, BlockQ5_1, BlockQ6K, BlockQ8, QK};

/// Weight rows per panel.
pub const PANEL: usize = 4;

/// Weight rows `j0..j0 + rows` of a matrix, in its storage type.
#[derive(Clone, Copy)]
pub enum Rows<'a> {
    Q4(&'a [BlockQ4]),
    Q8(&'a [BlockQ8]),
    Q5_0(&'a [BlockQ5_0]),
    Q5_1(&'a [BlockQ5_1]),
    Q2K(&'a [BlockQ2K]),
    Q3K(&'a [BlockQ3K]),
    Q4K(&'a [BlockQ4K]),
    Q5K(&'a [BlockQ5K]),
    Q6K(&'a [BlockQ6K]),
    IQ4NL(&'a [BlockIQ4NL]),
    IQ4XS(&'a [BlockIQ4XS]),
    F32(&'a [f32]),
}

/// Block types that have a `Rows` variant.
pub trait RowsOf: QBlock {
    fn rows(b: &[Self]) -> Rows<'_>;
}

macro_rules! rows_of {
    ($($block:ident => $variant:ident),*) => {
        $(impl RowsOf for $block {
            fn rows(b: &[Self]) -> Rows<'_> {
                Rows::$variant(b)
            }
        })*
    };
}
rows_of!(BlockQ4 => Q4, BlockQ8 => Q8, BlockQ5_0 => Q5_0, BlockQ5_1 => Q5_1, BlockQ2K => Q2K, BlockQ3K => Q3K, BlockQ4K => Q4K, BlockQ5K => Q5K, BlockQ6K => Q6K, BlockIQ4NL => IQ4NL, BlockIQ4XS => IQ4XS);

/// Runs `$body` with `$b` bound to the blocks of a quantized `Rows` (generic over the block type), or `$f32` for
/// f32 rows.
macro_rules! with_rows {
    ($rows:expr, $b:ident => $body:expr, $v:ident => $f32:expr) => {
        match $rows {
            Rows::Q4($b) => $body,
            Rows::Q8($b) => $body,
            Rows::Q5_0($b) => $body,
            Rows::Q5_1($b) => $body,
            Rows::Q2K($b) => $body,
            Rows::Q3K($b) => $body,
            Rows::Q4K($b) => $body,
            Rows::Q5K($b) => $body,
            Rows::Q6K($b) => $body,
            Rows::IQ4NL($b) => $body,
            Rows::IQ4XS($b) => $body,
            Rows::F32($v) => $f32,
        }
    };
}

/// Raw output pointer: tasks of one matmul write disjoint columns of a shared buffer.
#[derive(Clone, Copy)]
pub struct OutPtr(pub *mut f32);
// SAFETY: every task writes a disjoint set of (row, column) elements.
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}

struct Chunk<'a> {
    w: Rows<'a>,
    rows: usize,
    x: &'a [f32],
    m: usize,
    k: usize,
    out: OutPtr,
    ldo: usize,
}

/// `out[i * ldo + j] = w_j . x_i` for the `rows` weight rows in `w` and the `m` rows of `x` (`k` wide).
///
/// # Safety
/// `out` must be valid for writes at `i * ldo + j` for every `i < m`, `j < rows`, and no other thread may access
/// those elements meanwhile.
#[allow(clippy::too_many_arguments)]
pub unsafe fn rows_times_x(simd: Simd, w: Rows, rows: usize, x: &[f32], m: usize, k: usize, out: OutPtr, ldo: usize) {
    fn len_of<B: QBlock>(b: &[B]) -> (usize, usize) {
        (b.len() * B::LEN, B::LEN)
    }
    let (need, block) = with_rows!(w, b => len_of(b), v => (v.len(), 1));
    assert!(need >= rows * k && x.len() >= m * k, "matmul operand sizes");
    assert!(k.is_multiple_of(block), "quantized rows must be whole blocks");
    dispatch(simd, Chunk { w, rows, x, m, k, out, ldo })
}

impl Kernel for Chunk<'_> {
    type Out = ();
    #[inline(always)]
    fn run<L: Lanes>(self) {
        with_rows! { self.w, b => quantized::<L, _>(&self, b), v => {
                let k = self.k;
                let mut buf = Vec::new();
                for jt in (0..self.rows).step_by(PANEL) {
                    let jn = PANEL.min(self.rows - jt);
                    // A last partial panel is copied and padded with zero rows: tiles read whole panels.
                    let panel = if jn == PANEL {
                        &v[jt * k..(jt + PANEL) * k]
                    } else {
                        buf.clear();
                        buf.extend_from_slice(&v[jt * k..(jt + jn) * k]);
                        buf.resize(PANEL * k, 0.0);
                        &buf[..]
                    };
                    tiles::<L>(panel, jn, self.x, self.m, k, self.out, jt, self.ldo);
                }
            }
        }
    }
}

/// Input rows below which quantized blocks are dequantized in registers for every input row, instead of once
/// into a panel: with few rows the panel's stores and reloads cost more than the repeated dequantization.
const IN_REGISTERS_BELOW: usize = 4;

#[inline(always)]
fn quantized<L: Lanes, B: QBlock>(c: &Chunk, w: &[B]) {
    let (k, nb) = (c.k, c.k / B::LEN);
    match c.m {
        0 => {}
        1 => return in_registers::<L, B, 1>(c, w),
        2 => return in_registers::<L, B, 2>(c, w),
        m if m < IN_REGISTERS_BELOW => return in_registers::<L, B, 3>(c, w),
        _ => {}
    }
    let mut buf = vec![0f32; PANEL * k];
    for jt in (0..c.rows).step_by(PANEL) {
        let jn = PANEL.min(c.rows - jt);
        for (blk, o) in w[jt * nb..(jt + jn) * nb].iter().zip(buf.chunks_exact_mut(B::LEN)) {
            for s in 0..B::SUBS {
                L::store_block(blk.regs::<L>(s), &mut o[s * QK..]);
            }
        }
        tiles::<L>(&buf, jn, c.x, c.m, k, c.out, jt, c.ldo);
    }
}

/// The `I` input rows of `c` times its weight rows `w`, 4 weight rows at a time (independent accumulator chains),
/// each block dequantized into registers. Every output is the same chain of multiply-adds as in [`tile`], whichever
/// rows it is computed beside.
#[inline(always)]
fn in_registers<L: Lanes, B: QBlock, const I: usize>(c: &Chunk, w: &[B]) {
    // Where the path waits on memory (`Lanes::SPREAD_ROWS`), four weight rows a quarter of the chunk apart: each
    // quarter is read front to back, four long sequential streams that the hardware prefetcher follows, where four
    // adjacent rows are four streams of one row each.
    let q = c.rows / PANEL;
    let (step, stride) = if L::SPREAD_ROWS { (1, q) } else { (PANEL, 1) };
    for r in 0..q {
        rows_in_registers::<L, B, I, PANEL>(c, w, r * step, stride);
    }
    for r in PANEL * q..c.rows {
        rows_in_registers::<L, B, I, 1>(c, w, r, 1);
    }
}

#[inline(always)]
fn rows_in_registers<L: Lanes, B: QBlock, const I: usize, const J: usize>(c: &Chunk, w: &[B], first: usize, stride: usize) {
    let (k, nb) = (c.k, c.k / B::LEN);
    assert!(c.x.len() >= I * k && k % L::N == 0 && w.len() >= (first + (J - 1) * stride + 1) * nb);
    let xp = c.x.as_ptr();
    let bytes_per_sub = std::mem::size_of::<B>() / B::SUBS;
    // The row each stream reaches two steps later.
    let ahead = if L::SPREAD_ROWS { 2 } else { 2 * J };
    let mut acc = [[L::zero(); J]; I];
    for g in 0..k / QK {
        let (b, s) = (g / B::SUBS, g % B::SUBS);
        for j in 0..J {
            // The hardware prefetcher alone still leaves the core waiting on the weights, which stream from memory
            // once per token (measured: decode 1.3-1.5x faster on AVX2, 1.18x on the portable path, with a hint).
            L::prefetch((w.as_ptr() as *const u8).wrapping_add((first + j * stride + ahead) * nb * std::mem::size_of::<B>() + g * bytes_per_sub));
            let wr = w[(first + j * stride) * nb + b].regs::<L>(s);
            for (o, wv) in wr.as_ref().iter().enumerate() {
                for (i, a) in acc.iter_mut().enumerate() {
                    // SAFETY: row i < I of x holds k values, and g * QK + (o + 1) * N <= k.
                    a[j] = wv.mul_add(unsafe { L::load(xp.add(i * k + g * QK + o * L::N)) }, a[j]);
                }
            }
        }
    }
    for (i, a) in acc.iter().enumerate() {
        let mut sums = [0f32; J];
        match <[L; PANEL]>::try_from(a.as_slice()) {
            Ok(four) => sums.copy_from_slice(&L::sum4(four)),
            Err(_) => {
                for (s, v) in sums.iter_mut().zip(a) {
                    *s = v.sum();
                }
            }
        }
        for (j, v) in sums.iter().enumerate() {
            // SAFETY: (i, first + j stride) is inside the caller's block of `out`.
            unsafe { *c.out.0.add(i * c.ldo + first + j * stride) = *v };
        }
    }
}

/// `I`-row tiles over the `m` input rows, for the panel's `jn` weight rows (output columns `j0..j0 + jn`).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn tiles<L: Lanes>(panel: &[f32], jn: usize, x: &[f32], m: usize, k: usize, out: OutPtr, j0: usize, ldo: usize) {
    // SAFETY: columns j0..j0 + jn of the caller's block.
    let out = OutPtr(unsafe { out.0.add(j0) });
    if L::REGISTERS >= 32 {
        tiles_of::<L, 6>(panel, jn, x, m, k, out, ldo);
    } else {
        tiles_of::<L, 3>(panel, jn, x, m, k, out, ldo);
    }
}

#[inline(always)]
fn tiles_of<L: Lanes, const I: usize>(panel: &[f32], jn: usize, x: &[f32], m: usize, k: usize, out: OutPtr, ldo: usize) {
    let mut i = 0;
    while i + I <= m {
        tile::<L, I>(panel, jn, &x[i * k..], k, out, i, ldo);
        i += I;
    }
    let xr = &x[i * k..];
    match m - i {
        0 => {}
        1 => tile::<L, 1>(panel, jn, xr, k, out, i, ldo),
        2 => tile::<L, 2>(panel, jn, xr, k, out, i, ldo),
        3 => tile::<L, 3>(panel, jn, xr, k, out, i, ldo),
        4 => tile::<L, 4>(panel, jn, xr, k, out, i, ldo),
        _ => tile::<L, 5>(panel, jn, xr, k, out, i, ldo),
    }
}

/// `I` input rows (from `x`) x the panel's `jn` weight rows (of `PANEL`; rows past `jn` are computed, not stored),
/// written at output row `i0`.
#[allow(clippy::needless_range_loop)]
#[inline(always)]
fn tile<L: Lanes, const I: usize>(panel: &[f32], jn: usize, x: &[f32], k: usize, out: OutPtr, i0: usize, ldo: usize) {
    assert!(panel.len() >= PANEL * k && x.len() >= I * k);
    let body = k - k % L::N;
    let mut acc = [[L::zero(); PANEL]; I];
    let (wp, xp) = (panel.as_ptr(), x.as_ptr());
    let mut c = 0;
    while c < body {
        // Both orders give every accumulator the same chain of multiply-adds. With 32 registers the panel's 4 weight
        // chunks, one input chunk and 6 x 4 accumulators all fit; with 16, the 3 input chunks, one weight chunk and
        // 3 x 4 accumulators do.
        if L::REGISTERS >= 32 {
            // SAFETY: c + N <= body <= k; the panel holds PANEL rows and x holds I rows of k values.
            let wv: [L; PANEL] = std::array::from_fn(|j| unsafe { L::load(wp.add(j * k + c)) });
            for i in 0..I {
                // SAFETY: as above.
                let xv = unsafe { L::load(xp.add(i * k + c)) };
                for j in 0..PANEL {
                    acc[i][j] = wv[j].mul_add(xv, acc[i][j]);
                }
            }
        } else {
            // SAFETY: as above.
            let xv: [L; I] = std::array::from_fn(|i| unsafe { L::load(xp.add(i * k + c)) });
            for j in 0..PANEL {
                // SAFETY: as above.
                let wv = unsafe { L::load(wp.add(j * k + c)) };
                for i in 0..I {
                    acc[i][j] = wv.mul_add(xv[i], acc[i][j]);
                }
            }
        }
        c += L::N;
    }
    // Every accumulator reduced at constant indices first, so that they stay in registers: indexing them by the
    // run-time `jn` puts them on the stack, zeroed by a call to memset per tile (8% of a prompt on AVX-512).
    // (Loops, not `map`: a closure is compiled without the path's target features.)
    let mut sums = [[0f32; PANEL]; I];
    for i in 0..I {
        sums[i] = L::sum4(acc[i]);
    }
    for (i, a) in sums.iter().enumerate() {
        for (j, &v) in a.iter().enumerate().take(jn) {
            let mut s = v;
            for t in body..k {
                s += panel[j * k + t] * x[i * k + t];
            }
            // SAFETY: (i0 + i, j) is inside the caller's block of `out`.
            unsafe { *out.0.add((i0 + i) * ldo + j) = s };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::Block;
    use crate::simd::dequant::tests::random_blocks;
    use half::f16;
    use rand::{Rng, SeedableRng};

    fn dequantized<B: Block>(b: &[B]) -> Vec<f32> {
        let mut v = vec![0f32; b.len() * B::LEN];
        b.iter().zip(v.chunks_exact_mut(B::LEN)).for_each(|(b, o)| b.dequantize(o));
        v
    }

    /// On every path, for every weight type: each output equals the f64 dot product of the dequantized weights,
    /// and a row gives the same bits alone (dequantized in registers) as inside a batch of any size (through the
    /// panel).
    #[test]
    fn every_path_is_exact_up_to_summation_order_and_independent_of_the_batch() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let rows = 11;
        let q4: Vec<BlockQ4> = (0..rows * 5)
            .map(|_| {
                let mut qs = [0u8; 16];
                rng.fill(&mut qs);
                BlockQ4 { d: f16::from_f32(rng.random_range(0.001..0.1)), m: f16::from_f32(rng.random_range(-0.5..0.5)), qs }
            })
            .collect();
        let f: Vec<f32> = (0..rows * 5 * QK).map(|_| rng.random_range(-1.0..1.0)).collect();
        let q8: Vec<BlockQ8> = f.chunks(QK).map(BlockQ8::quantize).collect();
        let (q5_0, q5_1): (Vec<BlockQ5_0>, Vec<BlockQ5_1>) = (random_blocks(rows * 5, 1, &[0]), random_blocks(rows * 5, 2, &[0, 2]));
        // Two super-blocks per row: 512 values.
        let k_rows = rows * 2;
        let (q4k, q5k, q6k): (Vec<BlockQ4K>, Vec<BlockQ5K>, Vec<BlockQ6K>) =
            (random_blocks(k_rows, 3, &[0, 2]), random_blocks(k_rows, 4, &[0, 2]), random_blocks(k_rows, 5, &[208]));
        let (q2k, q3k): (Vec<BlockQ2K>, Vec<BlockQ3K>) = (random_blocks(k_rows, 6, &[80, 82]), random_blocks(k_rows, 7, &[108]));
        let (iq4nl, iq4xs): (Vec<BlockIQ4NL>, Vec<BlockIQ4XS>) = (random_blocks(rows * 5, 8, &[0]), random_blocks(k_rows, 9, &[0]));
        let cases = [
            ("q4", Rows::Q4(&q4), dequantized(&q4)),
            ("q8", Rows::Q8(&q8), dequantized(&q8)),
            ("q5_0", Rows::Q5_0(&q5_0), dequantized(&q5_0)),
            ("q5_1", Rows::Q5_1(&q5_1), dequantized(&q5_1)),
            ("q2_k", Rows::Q2K(&q2k), dequantized(&q2k)),
            ("q3_k", Rows::Q3K(&q3k), dequantized(&q3k)),
            ("q4_k", Rows::Q4K(&q4k), dequantized(&q4k)),
            ("q5_k", Rows::Q5K(&q5k), dequantized(&q5k)),
            ("q6_k", Rows::Q6K(&q6k), dequantized(&q6k)),
            ("iq4_nl", Rows::IQ4NL(&iq4nl), dequantized(&iq4nl)),
            ("iq4_xs", Rows::IQ4XS(&iq4xs), dequantized(&iq4xs)),
            ("f32", Rows::F32(&f), f.clone()),
        ];
        for simd in Simd::available() {
            for (name, w, wf) in &cases {
                let k = wf.len() / rows;
                for m in [1, 2, 3, 4, 5, 9, 13] {
                    let x: Vec<f32> = (0..m * k).map(|_| rng.random_range(-3.0..3.0)).collect();
                    let mut out = vec![f32::NAN; m * rows];
                    // SAFETY: out is m x rows.
                    unsafe { rows_times_x(simd, *w, rows, &x, m, k, OutPtr(out.as_mut_ptr()), rows) };
                    for i in 0..m {
                        let mut alone = vec![f32::NAN; rows];
                        // SAFETY: alone is 1 x rows.
                        unsafe { rows_times_x(simd, *w, rows, &x[i * k..(i + 1) * k], 1, k, OutPtr(alone.as_mut_ptr()), rows) };
                        for j in 0..rows {
                            let e: f64 = (0..k).map(|t| wf[j * k + t] as f64 * x[i * k + t] as f64).sum();
                            let scale: f64 = (0..k).map(|t| (wf[j * k + t] as f64 * x[i * k + t] as f64).abs()).sum();
                            let got = out[i * rows + j];
                            assert!((got as f64 - e).abs() <= 1e-6 * scale.max(1.0), "{simd} {name} m={m} ({i}, {j}): {got} vs {e}");
                            assert_eq!(got.to_bits(), alone[j].to_bits(), "{simd} {name} m={m} ({i}, {j}): batch vs alone");
                        }
                    }
                }
            }
        }
    }
}
