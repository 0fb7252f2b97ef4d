//! `exp` on SIMD lanes (softmax, SiLU): libm's scalar `expf` keeps a loop from vectorizing.
use super::lanes::Lanes;

/// Inputs are clamped to this range: below it the result is ~1e-38 instead of a denormal or 0 (harmless next to
/// the terms of a softmax or the 1 in SiLU's denominator), above it `exp` would overflow f32.
const LO: f32 = -87.336_54;
const HI: f32 = 88.0;

/// `e^x` per lane, within 2 ulp of the correctly rounded result on `LO..=HI` (Cephes' expf polynomial after
/// a Cody-Waite reduction by ln 2).
#[inline(always)]
pub fn exp<L: Lanes>(x: L) -> L {
    // Bound first, input second: x86's max/min return the second operand when one is NaN, so NaN stays NaN.
    let x = L::splat(HI).min(L::splat(LO).max(x));
    // Round x / ln 2 to the nearest integer: adding 1.5 * 2^23 pushes the fraction out of the mantissa.
    let magic = L::splat(12_582_912.0);
    let n = x.mul_add(L::splat(std::f32::consts::LOG2_E), magic).sub(magic);
    let r = x.sub(n.mul(L::splat(0.693_359_4))).sub(n.mul(L::splat(-2.121_944_4e-4)));
    let mut p = L::splat(1.987_569_1e-4);
    for c in [1.398_2e-3, 8.333_452e-3, 4.166_579_6e-2, 0.166_666_65, 0.5] {
        p = p.mul_add(r, L::splat(c));
    }
    let y = p.mul_add(r.mul(r), r).add(L::splat(1.0));
    y.mul(n.pow2i())
}

#[cfg(test)]
mod tests {
    use super::super::lanes::Portable;
    use super::*;

    fn ulps(a: f32, b: f32) -> i64 {
        (a.to_bits() as i64 - b.to_bits() as i64).abs()
    }

    #[test]
    fn portable_exp_is_within_two_ulp() {
        let mut worst = 0;
        let mut x = LO;
        while x <= HI {
            let xs = [x, -x.abs() * 0.5, x * 0.01, 0.0, 1.0, -1.0, 1e-6, -1e-6];
            let mut out = [0f32; 8];
            exp(Portable::from_slice(&xs)).to_slice(&mut out);
            for (v, o) in xs.iter().zip(out) {
                worst = worst.max(ulps(o, (*v as f64).exp() as f32));
            }
            x += 0.0137;
        }
        assert!(worst <= 2, "worst error {worst} ulp");
        let mut out = [0f32; 8];
        exp(Portable::from_slice(&[-1e4, 1e4, f32::NEG_INFINITY, -100.0, 100.0, 0.0, 0.0, 0.0])).to_slice(&mut out);
        assert!(out[0] < 1e-37 && out[2] < 1e-37 && out[3] < 1e-37 && out[0] >= 0.0);
        assert!(out[1].is_finite() && out[1] > 1e38 && out[4] > 1e38);
        exp(Portable::splat(f32::NAN)).to_slice(&mut out);
        assert!(out.iter().all(|v| v.is_nan()), "NaN must stay NaN");
    }
}
