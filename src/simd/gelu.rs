//! Gemma's gated MLP activation, `gelu_tanh(gate) * up`, and its gradient.
//!
//! `gelu_tanh(x) = 0.5 x (1 + tanh(u))` with `u = sqrt(2 / pi) (x + 0.044715 x^3)`, computed as the equal
//! `x * sigmoid(2u)`: one `exp` per value, and no `tanh`, whose libm call would keep the loop scalar.
use super::exp::exp;
use super::kernels::{dispatch, for_chunks, load_part, store_part, Kernel};
use super::lanes::Lanes;
use super::Simd;

/// `2 sqrt(2 / pi)`: the sigmoid's argument is twice tanh's.
const TWO_C: f32 = 1.595_769;
const A: f32 = 0.044_715;

/// `sigmoid(2u)` and `2u` per lane.
#[inline(always)]
fn sig2u<L: Lanes>(x: L) -> L {
    let one = L::splat(1.0);
    let two_u = x.mul(x).mul_add(L::splat(A), one).mul(x).mul(L::splat(TWO_C));
    one.div(one.add(exp(L::zero().sub(two_u))))
}

struct GeluMul<'a> {
    gate_up: &'a [f32],
    inter: usize,
    out: &'a mut [f32],
}
impl Kernel for GeluMul<'_> {
    type Out = ();
    #[inline(always)]
    fn run<L: Lanes>(self) {
        let inter = self.inter;
        for (a, g) in self.out.chunks_exact_mut(inter).zip(self.gate_up.chunks_exact(2 * inter)) {
            let (gate, up) = g.split_at(inter);
            for_chunks::<L>(inter, |c, len| {
                let x = load_part::<L>(gate, c, len);
                store_part(x.mul(sig2u(x)).mul(load_part::<L>(up, c, len)), a, c, len);
            });
        }
    }
}

/// GeGLU: `out = gelu_tanh(gate) * up` per row, where each row of `gate_up` is `[gate | up]` and `out` has as
/// many rows with half the width.
pub fn gelu_mul(simd: Simd, gate_up: &[f32], rows: usize, out: &mut [f32]) {
    assert_eq!(gate_up.len(), 2 * out.len(), "gelu_mul widths");
    if rows == 0 {
        return;
    }
    let inter = out.len() / rows;
    dispatch(simd, GeluMul { gate_up, inter, out })
}

struct GeGluBwd<'a> {
    gate_up: &'a [f32],
    dy: &'a [f32],
    out: &'a mut [f32],
}
impl Kernel for GeGluBwd<'_> {
    type Out = ();
    #[inline(always)]
    fn run<L: Lanes>(self) {
        let i = self.dy.len();
        let (g, u) = self.gate_up.split_at(i);
        let (og, ou) = self.out.split_at_mut(i);
        let one = L::splat(1.0);
        for_chunks::<L>(i, |c, len| {
            let (x, uv, d) = (load_part::<L>(g, c, len), load_part::<L>(u, c, len), load_part::<L>(self.dy, c, len));
            let sig = sig2u(x);
            // d/dx [x sig(2u)] = sig + x sig (1 - sig) 2u', 2u' = 2 sqrt(2/pi) (1 + 3 A x^2)
            let du = x.mul(x).mul_add(L::splat(3.0 * A), one).mul(L::splat(TWO_C));
            let dgelu = x.mul(sig).mul(one.sub(sig)).mul_add(du, sig);
            store_part(d.mul(uv).mul(dgelu), og, c, len);
            store_part(d.mul(x).mul(sig), ou, c, len);
        });
    }
}

/// Gradient of GeGLU for one row: `gate_up` is `[gate | up]` (2I), `dy` the output's gradient (I), `out` the
/// input's gradient (2I): `d gate = dy * up * gelu_tanh'(g)`, `d up = dy * gelu_tanh(g)`.
pub fn geglu_bwd(simd: Simd, gate_up: &[f32], dy: &[f32], out: &mut [f32]) {
    assert!(gate_up.len() == 2 * dy.len() && out.len() == gate_up.len(), "geglu_bwd widths");
    dispatch(simd, GeGluBwd { gate_up, dy, out })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gelu_ref(x: f64) -> f64 {
        0.5 * x * (1.0 + ((2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x * x * x)).tanh())
    }

    /// Every path agrees with the tanh formula in f64, and the gradient with its central difference, over a
    /// range that reaches both tails.
    #[test]
    fn gelu_and_its_gradient_match_the_tanh_formula_on_every_path() {
        let inter = 37;
        let gate: Vec<f32> = (0..inter).map(|i| -12.0 + 24.0 * i as f32 / (inter - 1) as f32).collect();
        let up: Vec<f32> = (0..inter).map(|i| 0.5 + 0.1 * i as f32).collect();
        let gate_up = [gate.clone(), up.clone()].concat();
        let dy: Vec<f32> = (0..inter).map(|i| 1.0 - 0.05 * i as f32).collect();
        for simd in Simd::available() {
            let mut out = vec![0f32; inter];
            gelu_mul(simd, &gate_up, 1, &mut out);
            let mut grad = vec![0f32; 2 * inter];
            geglu_bwd(simd, &gate_up, &dy, &mut grad);
            for i in 0..inter {
                let (x, u) = (gate[i] as f64, up[i] as f64);
                let e = gelu_ref(x) * u;
                assert!((out[i] as f64 - e).abs() < 1e-5 * (1.0 + e.abs()), "{simd} gelu({x}): {} vs {e}", out[i]);
                let h = 1e-4;
                let d = (gelu_ref(x + h) - gelu_ref(x - h)) / (2.0 * h);
                let (eg, eu) = (dy[i] as f64 * u * d, dy[i] as f64 * gelu_ref(x));
                assert!((grad[i] as f64 - eg).abs() < 1e-4 * (1.0 + eg.abs()), "{simd} d gate at {x}: {} vs {eg}", grad[i]);
                assert!((grad[inter + i] as f64 - eu).abs() < 1e-5 * (1.0 + eu.abs()), "{simd} d up at {x}: {} vs {eu}", grad[inter + i]);
            }
        }
    }
}
