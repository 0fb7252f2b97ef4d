//! Quantized blocks dequantized into registers, 32 values (one sub-block) at a time, on every path.
//!
//! Each value is formed exactly as ggml's `dequantize_row_*` forms it (an exact product, then at most one addition),
//! so the registers hold ggml's values bit for bit on every path, fused multiply-add or not.
use super::lanes::Lanes;
use crate::quant::{
    f16_to_f32, two_bit_layout, Block, BlockIQ4NL, BlockIQ4XS, BlockQ2K, BlockQ3K, BlockQ4, BlockQ4K, BlockQ5K, BlockQ5_0, BlockQ5_1, BlockQ6K, BlockQ8, QK,
};

/// A block type the mat-mul kernels read.
pub trait QBlock: Block {
    /// Sub-blocks of 32 values per block.
    const SUBS: usize = Self::LEN / QK;
    /// Values `32 s .. 32 s + 32` of the block.
    fn regs<L: Lanes>(&self, s: usize) -> L::Block;
}

impl QBlock for BlockQ4 {
    #[inline(always)]
    fn regs<L: Lanes>(&self, _: usize) -> L::Block {
        L::q4(self)
    }
}

impl QBlock for BlockQ8 {
    #[inline(always)]
    fn regs<L: Lanes>(&self, _: usize) -> L::Block {
        L::q8(self)
    }
}

/// Register `v` of a 5-bit block: values `v N .. (v + 1) N`, low nibbles for values below 16, high ones after.
#[inline(always)]
fn q5<L: Lanes>(qh: [u8; 4], qs: &[u8; 16], v: usize) -> L {
    let first = v * L::N;
    // SAFETY: first % 16 + N <= 16 for N in {4, 8, 16}.
    let low = unsafe { L::bytes(qs.as_ptr().add(first % 16), 4 * (first / 16) as u32, 0x0F) };
    L::bits(u32::from_le_bytes(qh), first as u32).mul_add(L::splat(16.0), low)
}

impl QBlock for BlockQ5_0 {
    #[inline(always)]
    fn regs<L: Lanes>(&self, _: usize) -> L::Block {
        L::q5_0(self)
    }
}

/// A Q5_0 block from lanes of bits (the paths without byte shuffles).
#[inline(always)]
pub(super) fn q5_0<L: Lanes>(b: &BlockQ5_0) -> L::Block {
    // (q - 16) * d as ggml forms it: d * q + (-16 d) would give +0 where ggml gives -0.
    let (d, minus16) = (L::splat(f16_to_f32(b.d)), L::splat(-16.0));
    let mut out = L::zero_block();
    for (v, o) in out.as_mut().iter_mut().enumerate() {
        *o = q5::<L>(b.qh, &b.qs, v).add(minus16).mul(d);
    }
    out
}

impl QBlock for BlockQ5_1 {
    #[inline(always)]
    fn regs<L: Lanes>(&self, _: usize) -> L::Block {
        let (d, m) = (L::splat(f16_to_f32(self.d)), L::splat(f16_to_f32(self.m)));
        let mut out = L::zero_block();
        for (v, o) in out.as_mut().iter_mut().enumerate() {
            *o = q5::<L>(self.qh, &self.qs, v).mul_add(d, m);
        }
        out
    }
}

impl QBlock for BlockQ2K {
    #[inline(always)]
    fn regs<L: Lanes>(&self, s: usize) -> L::Block {
        let (q, shift) = two_bit_layout(s);
        // Values 0..16 and 16..32 of the sub-block have a scale and a minimum of their own.
        let ((da, ma), (db, mb)) = (self.half_scale(2 * s), self.half_scale(2 * s + 1));
        let (da, ma, db, mb) = (L::splat(da), L::splat(ma), L::splat(db), L::splat(mb));
        let mut out = L::zero_block();
        for (v, o) in out.as_mut().iter_mut().enumerate() {
            // SAFETY: 32 bytes from q <= 32 are inside qs.
            let x = unsafe { L::bytes(self.qs.as_ptr().add(q + v * L::N), shift, 3) };
            *o = if v * L::N < 16 { x.mul_add(da, ma) } else { x.mul_add(db, mb) };
        }
        out
    }
}

impl QBlock for BlockQ3K {
    #[inline(always)]
    fn regs<L: Lanes>(&self, s: usize) -> L::Block {
        let (q, shift) = two_bit_layout(s);
        let (d, sc) = (f16_to_f32(self.d), self.scales());
        let (a, b) = (L::splat(d * sc[2 * s] as f32), L::splat(d * sc[2 * s + 1] as f32));
        let (four, minus4) = (L::splat(4.0), L::splat(-4.0));
        let mut out = L::zero_block();
        for (v, o) in out.as_mut().iter_mut().enumerate() {
            // SAFETY: 32 bytes from q <= 32 in qs, and all 32 of hmask.
            let (low, high) = unsafe { (L::bytes(self.qs.as_ptr().add(q + v * L::N), shift, 3), L::bytes(self.hmask.as_ptr().add(v * L::N), s as u32, 1)) };
            // q = low + 4 high - 4, exact, then one exact product with the scale.
            *o = high.mul_add(four, low).add(minus4).mul(if v * L::N < 16 { a } else { b });
        }
        out
    }
}

impl QBlock for BlockQ4K {
    #[inline(always)]
    fn regs<L: Lanes>(&self, s: usize) -> L::Block {
        let (d, m) = self.sub_scale(s);
        let (d, m) = (L::splat(d), L::splat(m));
        let (q, shift) = (self.qs[32 * (s / 2)..].as_ptr(), 4 * (s % 2) as u32);
        // SAFETY: 32 bytes from 32 (s / 2) are inside qs.
        let mut out = L::zero_block();
        for (v, o) in out.as_mut().iter_mut().enumerate() {
            *o = unsafe { L::bytes(q.add(v * L::N), shift, 0x0F) }.mul_add(d, m);
        }
        out
    }
}

impl QBlock for BlockQ5K {
    #[inline(always)]
    fn regs<L: Lanes>(&self, s: usize) -> L::Block {
        let (d, m) = self.sub_scale(s);
        let (d, m, sixteen) = (L::splat(d), L::splat(m), L::splat(16.0));
        let (q, shift) = (self.qs[32 * (s / 2)..].as_ptr(), 4 * (s % 2) as u32);
        let mut out = L::zero_block();
        for (v, o) in out.as_mut().iter_mut().enumerate() {
            // SAFETY: 32 bytes from 32 (s / 2) in qs, and all 32 of qh.
            let (low, high) = unsafe { (L::bytes(q.add(v * L::N), shift, 0x0F), L::bytes(self.qh.as_ptr().add(v * L::N), s as u32, 1)) };
            *o = high.mul_add(sixteen, low).mul_add(d, m);
        }
        out
    }
}

impl QBlock for BlockQ6K {
    #[inline(always)]
    fn regs<L: Lanes>(&self, s: usize) -> L::Block {
        L::q6k(self, s)
    }
}

impl QBlock for BlockIQ4NL {
    #[inline(always)]
    fn regs<L: Lanes>(&self, _: usize) -> L::Block {
        L::iq4(&self.qs, f16_to_f32(self.d))
    }
}

impl QBlock for BlockIQ4XS {
    #[inline(always)]
    fn regs<L: Lanes>(&self, s: usize) -> L::Block {
        L::iq4(self.sub_qs(s), self.sub_scale(s))
    }
}

/// Sub-block `s` of a Q6_K block from lanes of bits (the paths without byte shuffles).
#[inline(always)]
pub(super) fn q6k<L: Lanes>(b: &BlockQ6K, s: usize) -> L::Block {
    let (ql, shl, qh, shh) = BlockQ6K::sub_layout(s);
    let d = f16_to_f32(b.d);
    // Values 0..16 and 16..32 of the sub-block have scales of their own.
    let (a, c) = (L::splat(d * b.scales[2 * s] as f32), L::splat(d * b.scales[2 * s + 1] as f32));
    let (sixteen, minus32) = (L::splat(16.0), L::splat(-32.0));
    let mut out = L::zero_block();
    for (v, o) in out.as_mut().iter_mut().enumerate() {
        // SAFETY: 32 bytes from ql (at most 96 + 32 <= 128) and from qh (at most 32 + 32 <= 64).
        let (low, high) = unsafe { (L::bytes(b.ql.as_ptr().add(ql + v * L::N), shl, 0x0F), L::bytes(b.qh.as_ptr().add(qh + v * L::N), shh, 3)) };
        // q - 32 is exact, and so is its product with the scale.
        *o = high.mul_add(sixteen, low).add(minus32).mul(if v * L::N < 16 { a } else { c });
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::quant::GgufBlock;
    use crate::simd::kernels::{dispatch, Kernel};
    use crate::simd::Simd;
    use half::f16;
    use rand::{Rng, SeedableRng};

    /// Random blocks of type `B`: any bytes, with finite f16 scales.
    pub(crate) fn random_blocks<B: GgufBlock>(n: usize, seed: u64, f16_at: &[usize]) -> Vec<B> {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        (0..n)
            .map(|_| {
                let mut bytes = vec![0u8; B::BYTES];
                rng.fill(bytes.as_mut_slice());
                for &at in f16_at {
                    let v = f16::from_f32(rng.random_range(-0.05..0.05)).to_le_bytes();
                    bytes[at..at + 2].copy_from_slice(&v);
                }
                B::from_bytes(&bytes)
            })
            .collect()
    }

    struct Deq<'a, B>(&'a [B]);
    impl<B: QBlock> Kernel for Deq<'_, B> {
        type Out = Vec<f32>;
        #[inline(always)]
        fn run<L: Lanes>(self) -> Vec<f32> {
            let mut out = vec![0f32; self.0.len() * B::LEN];
            for (b, o) in self.0.iter().zip(out.chunks_exact_mut(B::LEN)) {
                for s in 0..B::SUBS {
                    L::store_block(b.regs::<L>(s), &mut o[s * QK..]);
                }
            }
            out
        }
    }

    /// The scalar dequantization, and the registers on every path, give `reference`'s values bit for bit.
    fn assert_matches<B: QBlock>(blocks: &[B], reference: &[f32], who: &str) {
        let mut ours = vec![0f32; blocks.len() * B::LEN];
        for (b, o) in blocks.iter().zip(ours.chunks_exact_mut(B::LEN)) {
            b.dequantize(o);
        }
        assert_eq!(reference.len(), ours.len(), "{}: {who}'s value count", B::NAME);
        let mut paths = vec![("scalar dequantize".to_string(), ours)];
        paths.extend(Simd::available().into_iter().map(|simd| (format!("registers on {simd}"), dispatch(simd, Deq(blocks)))));
        for (path, values) in paths {
            for (i, (a, b)) in values.iter().zip(reference).enumerate() {
                assert_eq!(a.to_bits(), b.to_bits(), "{} ({path}), value {i}: {a}, {who} {b}", B::NAME);
            }
        }
    }

    /// Against candle-core's dequantization (an independent implementation of ggml's definition), from the same
    /// bytes.
    fn check<B: QBlock + GgufBlock, C: candle_core::quantized::k_quants::GgmlType>(f16_at: &[usize]) {
        let blocks: Vec<B> = random_blocks(64, B::BYTES as u64, f16_at);
        assert_eq!(std::mem::size_of::<C>(), B::BYTES, "{}: candle's block size", B::NAME);
        // SAFETY: candle's blocks are ggml's repr(C) layouts of B::BYTES bytes (checked), plain integers and f16s.
        let theirs_blocks: Vec<C> = blocks.iter().map(|b| unsafe { std::ptr::read_unaligned(b as *const B as *const C) }).collect();
        let mut theirs = vec![0f32; blocks.len() * B::LEN];
        C::to_float(&theirs_blocks, &mut theirs);
        assert_matches(&blocks, &theirs, "candle");
    }

    /// The IQ4 types against gguf-py's numpy dequantization (candle has none): blocks and values written by
    /// scripts/dev/make_iq4_fixture.py.
    fn check_fixture<B: QBlock + GgufBlock>(file: &[u8]) {
        let n = u32::from_le_bytes(file[..4].try_into().unwrap()) as usize;
        let (blocks, values) = file[4..].split_at(n * B::BYTES);
        let blocks: Vec<B> = blocks.chunks_exact(B::BYTES).map(B::from_bytes).collect();
        let expected: Vec<f32> = values.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect();
        assert_matches(&blocks, &expected, "gguf-py");
    }

    #[test]
    fn iq4_types_dequantize_as_gguf_py_on_every_path() {
        check_fixture::<BlockIQ4NL>(include_bytes!("../../tests/fixtures/iq4_nl.bin"));
        check_fixture::<BlockIQ4XS>(include_bytes!("../../tests/fixtures/iq4_xs.bin"));
    }

    #[test]
    fn every_block_type_dequantizes_as_ggml_on_every_path() {
        use candle_core::quantized::k_quants as c;
        check::<BlockQ5_0, c::BlockQ5_0>(&[0]);
        check::<BlockQ5_1, c::BlockQ5_1>(&[0, 2]);
        check::<BlockQ2K, c::BlockQ2K>(&[80, 82]);
        check::<BlockQ3K, c::BlockQ3K>(&[108]);
        check::<BlockQ4K, c::BlockQ4K>(&[0, 2]);
        check::<BlockQ5K, c::BlockQ5K>(&[0, 2]);
        check::<BlockQ6K, c::BlockQ6K>(&[208]);
        check::<BlockQ8, c::BlockQ8_0>(&[0]);
    }
}
