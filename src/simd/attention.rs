//! Attention over the KV cache: query heads that share a key/value head together, and rows whose caches share
//! a prompt prefix together, each output the same chain of operations as when it is computed alone.
use super::exp::exp;
use super::kernels::{dispatch, dot_l, load_part, store_part, Kernel};
use super::lanes::Lanes;
use super::Simd;

/// Query heads that share one key/value head (grouped-query attention) attending over a sequence's cached keys
/// and values, which are stored in up to two parts (a shared prefix and the sequence's own positions), `stride`
/// floats per position with this head's slice at `off..off + head_dim`. Each key and value is loaded once for all
/// the heads; every head's output is the same chain of operations as when it attends alone.
pub struct Attend<'a> {
    /// `heads` queries of `head_dim` values, one after another.
    pub q: &'a [f32],
    pub heads: usize,
    pub parts: [(&'a [f32], &'a [f32]); 2],
    /// Positions to attend to (`start..n`): a sliding-window layer skips the positions before its window.
    pub start: usize,
    pub n: usize,
    pub stride: usize,
    pub off: usize,
    pub scale: f32,
    /// Scratch for the scores (grown as needed).
    pub scores: &'a mut Vec<f32>,
    /// `heads x head_dim`.
    pub out: &'a mut [f32],
}

impl Kernel for Attend<'_> {
    type Out = ();
    #[inline(always)]
    fn run<L: Lanes>(self) {
        let Attend { q, heads, parts, start, n, stride, off, scale, scores, out } = self;
        let hd = q.len() / heads.max(1);
        if !fits::<L>(hd) {
            for h in 0..heads {
                let (q, out) = (&q[h * hd..(h + 1) * hd], &mut out[h * hd..(h + 1) * hd]);
                attend_any::<L>(Attend { q, heads: 1, parts, start, n, stride, off, scale, scores: &mut *scores, out });
            }
            return;
        }
        let mut rows = [RowQuery { q, own: parts[1], start, n, out }];
        rows_of_heads::<L>(AttendRows { rows: &mut rows, heads, shared: parts[0], stride, off, scale, scores });
    }
}

/// One row's queries for [`AttendRows`].
pub struct RowQuery<'a> {
    /// `heads x head_dim`.
    pub q: &'a [f32],
    /// The keys and values of the row's own positions, after the shared ones.
    pub own: (&'a [f32], &'a [f32]),
    /// Positions to attend to (`start..n`), the shared ones included.
    pub start: usize,
    pub n: usize,
    /// `heads x head_dim`.
    pub out: &'a mut [f32],
}

/// Rows whose caches begin with the same keys and values (episodes forked from one prompt prefix) attending
/// together, as [`Attend`] for each: the shared positions are visited in blocks that stay in L1 while every row
/// uses them, instead of once per row from further away. Each row's every output is the same chain of operations
/// as when it attends alone.
pub struct AttendRows<'a, 'r> {
    pub rows: &'r mut [RowQuery<'a>],
    pub heads: usize,
    pub shared: (&'a [f32], &'a [f32]),
    pub stride: usize,
    pub off: usize,
    pub scale: f32,
    pub scores: &'r mut Vec<f32>,
}

impl Kernel for AttendRows<'_, '_> {
    type Out = ();
    #[inline(always)]
    fn run<L: Lanes>(self) {
        let hd = self.rows.first().map_or(0, |r| r.q.len() / self.heads.max(1));
        if fits::<L>(hd) {
            return rows_of_heads::<L>(self);
        }
        let AttendRows { rows, heads, shared, stride, off, scale, scores } = self;
        for r in rows.iter_mut() {
            let a = Attend { q: r.q, heads, parts: [shared, r.own], start: r.start, n: r.n, stride, off, scale, scores: &mut *scores, out: &mut *r.out };
            a.run::<L>();
        }
    }
}

/// Whether heads of `hd` values get the register kernels: whole registers, in whole blocks of [`value_block`].
#[inline(always)]
fn fits<L: Lanes>(hd: usize) -> bool {
    hd.is_multiple_of(L::N) && value_block::<L>(4, hd / L::N) > 0
}

/// Registers of a value accumulated at once per head when `g` heads go together (0: none fits): so that their
/// accumulators fit beside the loads, and one head alone still has enough independent multiply-add chains.
#[inline(always)]
fn value_block<L: Lanes>(g: usize, regs: usize) -> usize {
    let sizes: &[usize] = match (L::REGISTERS >= 32, g) {
        (true, _) => &[4],
        (false, 1) => &[8, 4, 2],
        (false, _) => &[2],
    };
    sizes.iter().copied().find(|&b| regs.is_multiple_of(b)).unwrap_or(0)
}

/// The rows' heads, up to four at a time (see [`AttendRows`]).
#[inline(always)]
fn rows_of_heads<L: Lanes>(a: AttendRows) {
    let AttendRows { rows, heads, shared, stride, off, scale, scores } = a;
    let hd = rows.first().map_or(0, |r| r.q.len() / heads.max(1));
    // With 16 registers, heads together get value blocks of two registers: for a single row, with no other
    // row to share the loads, one head at a time with its query and output held in registers is faster (1.1-1.4x
    // in a batch-32 decode's attention).
    if L::REGISTERS < 32 && rows.len() == 1 && matches!(hd / L::N, 2 | 4 | 8 | 16) && hd.is_multiple_of(L::N) {
        let r = &mut rows[0];
        for h in 0..heads {
            let (q, out) = (&r.q[h * hd..(h + 1) * hd], &mut r.out[h * hd..(h + 1) * hd]);
            let a = Attend { q, heads: 1, parts: [shared, r.own], start: r.start, n: r.n, stride, off, scale, scores: &mut *scores, out };
            match hd / L::N {
                2 => attend_fixed::<L, 2>(a),
                4 => attend_fixed::<L, 4>(a),
                8 => attend_fixed::<L, 8>(a),
                _ => attend_fixed::<L, 16>(a),
            }
        }
        return;
    }
    let mut h = 0;
    while h < heads {
        let g = (heads - h).min(4);
        let part = HeadsPart { rows: &mut *rows, h0: h, hd, shared, stride, off, scale, scores: &mut *scores };
        match (g, value_block::<L>(g, hd / L::N)) {
            (1, 8) => attend_heads::<L, 1, 8>(part),
            (1, 4) => attend_heads::<L, 1, 4>(part),
            (1, _) => attend_heads::<L, 1, 2>(part),
            (2, 4) => attend_heads::<L, 2, 4>(part),
            (3, 4) => attend_heads::<L, 3, 4>(part),
            (_, 4) => attend_heads::<L, 4, 4>(part),
            (2, _) => attend_heads::<L, 2, 2>(part),
            (3, _) => attend_heads::<L, 3, 2>(part),
            (_, _) => attend_heads::<L, 4, 2>(part),
        }
        h += g;
    }
}

/// Heads `h0..h0 + G` of every row.
struct HeadsPart<'a, 'r> {
    rows: &'r mut [RowQuery<'a>],
    h0: usize,
    hd: usize,
    shared: (&'a [f32], &'a [f32]),
    stride: usize,
    off: usize,
    scale: f32,
    scores: &'r mut Vec<f32>,
}

/// Scores `s[..n]` (padded to whole registers with -inf) to `exp(s - max)`; returns `1 / sum`.
#[inline(always)]
fn softmax_scores<L: Lanes>(s: &mut [f32]) -> f32 {
    let mut mx = L::splat(f32::NEG_INFINITY);
    for c in s.chunks_exact(L::N) {
        mx = mx.max(L::from_slice(c));
    }
    let mx = L::splat(mx.hmax());
    let mut sum = L::zero();
    for c in s.chunks_exact_mut(L::N) {
        let e = exp(L::from_slice(c).sub(mx));
        e.to_slice(c);
        sum = sum.add(e);
    }
    // Padding lanes hold exp(-inf) ~ 1e-38: invisible next to the largest term, which is 1.
    1.0 / sum.sum()
}

/// Shared positions per block: a block's keys (or values) of one head, 16 KB for 64-value heads, stay in L1
/// while every row of the task uses them.
const SHARED_BLOCK: usize = 64;

/// One head's scores `s[t - origin]` for positions `ts` (keys at `keys[(t - first) * stride + off..]`), four at a
/// time: each `scale` times the chain `q0 k0 + q1 k1 + ...` over the head's registers, reduced as [`Lanes::sum`]
/// does.
#[allow(clippy::needless_range_loop, clippy::too_many_arguments)]
#[inline(always)]
fn head_scores<L: Lanes>(
    q: &[f32],
    keys: &[f32],
    first: usize,
    ts: std::ops::Range<usize>,
    (stride, off): (usize, usize),
    scale: f32,
    origin: usize,
    s: &mut [f32],
) {
    let hd = q.len();
    let mut t = ts.start;
    while t < ts.end {
        // Past the end the last key is repeated (its scores dropped), so every step has four chains.
        let mut k = [&keys[..0]; 4];
        for j in 0..4 {
            let at = ((t + j).min(ts.end - 1) - first) * stride + off;
            k[j] = &keys[at..at + hd];
        }
        let q0 = L::from_slice(q);
        let mut acc = [L::zero(); 4];
        for j in 0..4 {
            acc[j] = q0.mul(L::from_slice(k[j]));
        }
        for i in 1..hd / L::N {
            let qi = L::from_slice(&q[i * L::N..]);
            for j in 0..4 {
                acc[j] = qi.mul_add(L::from_slice(&k[j][i * L::N..]), acc[j]);
            }
        }
        let sums = L::sum4(acc);
        for j in 0..(ts.end - t).min(4) {
            s[t + j - origin] = sums[j] * scale;
        }
        t += 4;
    }
}

/// `acc[h][i] += p_t v_t` over positions `t` of `ts` (values `vs`, position `t` at row `t - first`), in order,
/// with `p` the row's normalized scores (`np` apart per head, position `t` at `t - origin`).
#[allow(clippy::too_many_arguments, clippy::needless_range_loop)]
#[inline(always)]
fn accumulate<L: Lanes, const G: usize, const VB: usize>(
    acc: &mut [[L; VB]; G],
    p: &[f32],
    (np, origin): (usize, usize),
    vs: &[f32],
    first: usize,
    ts: std::ops::Range<usize>,
    stride: usize,
    col: usize,
) {
    for t in ts {
        let v = &vs[(t - first) * stride + col..];
        let mut ph = [L::zero(); G];
        for h in 0..G {
            ph[h] = L::splat(p[h * np + t - origin]);
        }
        for i in 0..VB {
            let vi = L::from_slice(&v[i * L::N..]);
            for h in 0..G {
                acc[h][i] = ph[h].mul_add(vi, acc[h][i]);
            }
        }
    }
}

/// `G` heads of every row, heads whose size is a whole number of registers, a multiple of `VB`. Each row's
/// head gets the operations it gets attending alone: its scores (see [`head_scores`]), scaled, a softmax, then
/// each output register's chain of `p_t v_t` over the positions in order, the shared ones first.
#[allow(clippy::needless_range_loop)]
#[inline(always)]
fn attend_heads<L: Lanes, const G: usize, const VB: usize>(a: HeadsPart) {
    let HeadsPart { rows, h0, hd, shared, stride, off, scale, scores } = a;
    let n_shared = shared.0.len() / stride;
    // Per row: its scores' start in `s` and the padded length per head.
    let mut at = Vec::with_capacity(rows.len());
    let mut total = 0;
    for r in rows.iter() {
        let np = (r.n - r.start).next_multiple_of(L::N);
        at.push((total, np));
        total += G * np;
    }
    let mut s = std::mem::take(scores);
    s.clear();
    s.resize(total, f32::NEG_INFINITY);
    let mut tb = 0;
    while tb < n_shared {
        let te = (tb + SHARED_BLOCK).min(n_shared);
        for (r, &(base, np)) in rows.iter().zip(&at) {
            for h in 0..G {
                let q = &r.q[(h0 + h) * hd..(h0 + h + 1) * hd];
                head_scores::<L>(q, shared.0, 0, tb.max(r.start)..te.min(r.n), (stride, off), scale, r.start, &mut s[base + h * np..]);
            }
        }
        tb = te;
    }
    for (r, &(base, np)) in rows.iter().zip(&at) {
        for h in 0..G {
            let q = &r.q[(h0 + h) * hd..(h0 + h + 1) * hd];
            head_scores::<L>(q, r.own.0, n_shared, n_shared.max(r.start)..r.n, (stride, off), scale, r.start, &mut s[base + h * np..]);
        }
    }
    for (r, &(base, np)) in rows.iter().zip(&at) {
        for h in 0..G {
            let sh = &mut s[base + h * np..base + (h + 1) * np];
            let inv = softmax_scores::<L>(sh);
            for p in &mut sh[..r.n - r.start] {
                *p *= inv;
            }
        }
    }
    // Each row's accumulators wait in its output between blocks of shared positions.
    let mut b = 0;
    while b < hd / L::N {
        let col = off + b * L::N;
        for r in rows.iter_mut() {
            for h in 0..G {
                for i in 0..VB {
                    L::zero().to_slice(&mut r.out[(h0 + h) * hd + (b + i) * L::N..]);
                }
            }
        }
        let mut tb = 0;
        loop {
            let last = tb >= n_shared;
            let te = if last { usize::MAX } else { (tb + SHARED_BLOCK).min(n_shared) };
            for (r, &(base, np)) in rows.iter_mut().zip(&at) {
                let mut acc = [[L::zero(); VB]; G];
                for h in 0..G {
                    for i in 0..VB {
                        acc[h][i] = L::from_slice(&r.out[(h0 + h) * hd + (b + i) * L::N..]);
                    }
                }
                let p = &s[base..base + G * np];
                if last {
                    accumulate::<L, G, VB>(&mut acc, p, (np, r.start), r.own.1, n_shared, n_shared.max(r.start)..r.n.max(n_shared), stride, col);
                } else {
                    accumulate::<L, G, VB>(&mut acc, p, (np, r.start), shared.1, 0, tb.max(r.start)..te.min(r.n), stride, col);
                }
                for h in 0..G {
                    for i in 0..VB {
                        acc[h][i].to_slice(&mut r.out[(h0 + h) * hd + (b + i) * L::N..]);
                    }
                }
            }
            if last {
                break;
            }
            tb = te;
        }
        b += VB;
    }
    *scores = s;
}

/// One head, its query and output held in `V` registers.
#[allow(clippy::needless_range_loop)]
#[inline(always)]
fn attend_fixed<L: Lanes, const V: usize>(a: Attend) {
    let mut q = [L::zero(); V];
    for (i, r) in q.iter_mut().enumerate() {
        *r = L::from_slice(&a.q[i * L::N..]);
    }
    let mut s = std::mem::take(a.scores);
    s.clear();
    s.resize((a.n - a.start).next_multiple_of(L::N), f32::NEG_INFINITY);
    // Loops, not closures: a closure is compiled apart, without the path's target features (17x slower here).
    let (start, n, hd, off, stride) = (a.start, a.n, V * L::N, a.off, a.stride);
    let mut first = 0;
    for (ks, _) in a.parts {
        let len = ks.len() / stride;
        for t in start.max(first)..n.min(first + len) {
            let k = &ks[(t - first) * stride + off..][..hd];
            let mut acc = q[0].mul(L::from_slice(k));
            for i in 1..V {
                acc = q[i].mul_add(L::from_slice(&k[i * L::N..]), acc);
            }
            s[t - start] = acc.sum() * a.scale;
        }
        first += len;
    }
    let inv = softmax_scores::<L>(&mut s);
    let mut acc = [L::zero(); V];
    let mut first = 0;
    for (_, vs) in a.parts {
        let len = vs.len() / stride;
        for t in start.max(first)..n.min(first + len) {
            let v = &vs[(t - first) * stride + off..][..hd];
            let p = L::splat(s[t - start] * inv);
            for i in 0..V {
                acc[i] = p.mul_add(L::from_slice(&v[i * L::N..]), acc[i]);
            }
        }
        first += len;
    }
    for (i, o) in acc.iter().enumerate() {
        o.to_slice(&mut a.out[i * L::N..]);
    }
    *a.scores = s;
}

/// One head of any size: scores as [`dot_l`] gives them, then each output register (the last one partial) the
/// chain of `p_t v_t` over the positions in order.
#[inline(always)]
fn attend_any<L: Lanes>(a: Attend) {
    let (start, n, hd, off, stride) = (a.start, a.n, a.q.len(), a.off, a.stride);
    let mut s = std::mem::take(a.scores);
    s.clear();
    s.resize((n - start).next_multiple_of(L::N), f32::NEG_INFINITY);
    let mut first = 0;
    for (ks, _) in a.parts {
        let len = ks.len() / stride;
        for t in start.max(first)..n.min(first + len) {
            s[t - start] = dot_l::<L>(a.q, &ks[(t - first) * stride + off..][..hd]) * a.scale;
        }
        first += len;
    }
    let inv = softmax_scores::<L>(&mut s);
    a.out.fill(0.0);
    let mut first = 0;
    for (_, vs) in a.parts {
        let len = vs.len() / stride;
        for t in start.max(first)..n.min(first + len) {
            let (v, p) = (&vs[(t - first) * stride + off..][..hd], L::splat(s[t - start] * inv));
            let mut c = 0;
            while c < hd {
                let len = L::N.min(hd - c);
                let o = p.mul_add(load_part::<L>(v, c, len), load_part::<L>(a.out, c, len));
                store_part(o, a.out, c, len);
                c += len;
            }
        }
        first += len;
    }
    *a.scores = s;
}

/// Softmax-weighted sums of values for query heads that share a key/value head (see [`Attend`]).
pub fn attend(simd: Simd, a: Attend) {
    dispatch(simd, a)
}

/// [`attend`] for rows whose caches share their first positions (see [`AttendRows`]).
pub fn attend_rows(simd: Simd, a: AttendRows) {
    dispatch(simd, a)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn bits(v: &[f32]) -> Vec<u32> {
        v.iter().map(|x| x.to_bits()).collect()
    }

    fn rand_vec(rng: &mut impl Rng, n: usize) -> Vec<f32> {
        (0..n).map(|_| rng.random_range(-2.0..2.0)).collect()
    }

    /// Heads attending together (sharing a key/value head) give each head's bits as it gets alone, on every path,
    /// for head sizes with and without the grouped kernels and group sizes beyond four.
    #[test]
    fn grouped_heads_attend_bit_for_bit_as_alone() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(4);
        for simd in Simd::available() {
            for (hd, n) in [(64, 37), (32, 3), (128, 70), (24, 9)] {
                let (stride, off) = (2 * hd, hd);
                let (keys, vals) = (rand_vec(&mut rng, n * stride), rand_vec(&mut rng, n * stride));
                let split = n / 3;
                let parts = [(&keys[..split * stride], &vals[..split * stride]), (&keys[split * stride..], &vals[split * stride..])];
                let scale = 1.0 / (hd as f32).sqrt();
                for (heads, start) in [(1, 0), (2, 0), (3, 0), (4, 0), (7, 0), (3, n / 2), (4, n - 1)] {
                    let q = rand_vec(&mut rng, heads * hd);
                    let mut scores = Vec::new();
                    let mut together = vec![f32::NAN; heads * hd];
                    attend(simd, Attend { q: &q, heads, parts, start, n, stride, off, scale, scores: &mut scores, out: &mut together });
                    for h in 0..heads {
                        let mut alone = vec![f32::NAN; hd];
                        let q = &q[h * hd..(h + 1) * hd];
                        attend(simd, Attend { q, heads: 1, parts, start, n, stride, off, scale, scores: &mut scores, out: &mut alone });
                        assert_eq!(bits(&together[h * hd..(h + 1) * hd]), bits(&alone), "{simd} hd {hd} n {n} start {start}: head {h} of {heads}");
                    }
                }
            }
        }
    }

    /// Rows that share their first positions attend together with each row's bits as it gets alone, on every
    /// path: rows of different lengths (one ending inside the shared part), shared parts longer than a block,
    /// head sizes with and without the register kernels, windows starting in the shared part, in the row's own
    /// part or at the first position.
    #[test]
    fn rows_sharing_a_prefix_attend_bit_for_bit_as_alone() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        for simd in Simd::available() {
            for (hd, n_shared) in [(64, 150), (32, 5), (24, 70), (64, 0)] {
                let heads = 3;
                let (stride, off) = (2 * hd, hd);
                let (sk, sv) = (rand_vec(&mut rng, n_shared * stride), rand_vec(&mut rng, n_shared * stride));
                let lens = [n_shared + 9, n_shared + 1, n_shared / 2 + 1, n_shared + 40];
                let starts = [0, n_shared / 2, n_shared / 2, n_shared + 5];
                let owns: Vec<(Vec<f32>, Vec<f32>)> = lens
                    .iter()
                    .map(|&n| {
                        let own = n.saturating_sub(n_shared);
                        (rand_vec(&mut rng, own * stride), rand_vec(&mut rng, own * stride))
                    })
                    .collect();
                let qs: Vec<Vec<f32>> = lens.iter().map(|_| rand_vec(&mut rng, heads * hd)).collect();
                let scale = 1.0 / (hd as f32).sqrt();
                let mut outs = vec![vec![f32::NAN; heads * hd]; lens.len()];
                let mut scores = Vec::new();
                let mut rows: Vec<RowQuery> = outs
                    .iter_mut()
                    .enumerate()
                    .map(|(i, out)| RowQuery { q: &qs[i], own: (&owns[i].0[..], &owns[i].1[..]), start: starts[i], n: lens[i], out })
                    .collect();
                attend_rows(simd, AttendRows { rows: &mut rows, heads, shared: (&sk, &sv), stride, off, scale, scores: &mut scores });
                for (i, together) in outs.iter().enumerate() {
                    for h in 0..heads {
                        let mut alone = vec![f32::NAN; hd];
                        let parts = [(&sk[..], &sv[..]), (&owns[i].0[..], &owns[i].1[..])];
                        let q = &qs[i][h * hd..(h + 1) * hd];
                        attend(simd, Attend { q, heads: 1, parts, start: starts[i], n: lens[i], stride, off, scale, scores: &mut scores, out: &mut alone });
                        assert_eq!(bits(&together[h * hd..(h + 1) * hd]), bits(&alone), "{simd} hd {hd}: row {i} head {h}");
                    }
                }
            }
        }
    }

    /// Every path agrees with an f64 softmax over positions `start..n`, whatever the split into parts.
    #[test]
    fn attention_matches_reference_and_does_not_depend_on_the_split() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(2);
        for simd in Simd::available() {
            for (hd, n, start) in [(64, 37, 0), (6, 5, 0), (24, 1, 0), (80, 19, 0), (64, 37, 30), (24, 20, 7), (32, 9, 8)] {
                let stride = 3 * hd;
                let off = hd;
                let (keys, vals) = (rand_vec(&mut rng, n * stride), rand_vec(&mut rng, n * stride));
                let q = rand_vec(&mut rng, hd);
                let scale = 1.0 / (hd as f32).sqrt();
                let sc: Vec<f64> = (0..n)
                    .map(|t| {
                        if t < start {
                            f64::NEG_INFINITY
                        } else {
                            (0..hd).map(|i| q[i] as f64 * keys[t * stride + off + i] as f64).sum::<f64>() * scale as f64
                        }
                    })
                    .collect();
                let mx = sc.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let z: f64 = sc.iter().map(|s| (s - mx).exp()).sum();
                let mut results = Vec::new();
                for split in [0, n / 2, n] {
                    let parts = [(&keys[..split * stride], &vals[..split * stride]), (&keys[split * stride..], &vals[split * stride..])];
                    let (mut scores, mut out) = (Vec::new(), vec![f32::NAN; hd]);
                    attend(simd, Attend { q: &q, heads: 1, parts, start, n, stride, off, scale, scores: &mut scores, out: &mut out });
                    for i in 0..hd {
                        let e: f64 = (0..n).map(|t| (sc[t] - mx).exp() / z * vals[t * stride + off + i] as f64).sum();
                        assert!((out[i] as f64 - e).abs() < 1e-5, "{simd} hd {hd} n {n}: {} vs {e}", out[i]);
                    }
                    results.push(out);
                }
                assert!(results.windows(2).all(|w| w[0] == w[1]), "{simd}: split changed the bits");
            }
        }
    }
}
