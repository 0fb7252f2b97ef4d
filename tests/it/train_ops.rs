//! Every op the training forward differentiates through, checked against central finite differences.
use std::sync::Arc;

use autodidact::model::config::Activation;
use autodidact::model::linear::{Matrix, WeightData};
use autodidact::quant::{BlockQ4K, BlockQ8, GgufBlock};
use autodidact::train::attention::{attention, Attention};
use autodidact::train::frozen::Frozen;
use autodidact::train::head::target_logprobs;
use autodidact::train::lora_linear::{LoraLinear, LoraPart};
use autodidact::train::ops::{frozen_linear, gated_act, rms_norm, rope_qk, swiglu, InputMap, RopeQk, RopeTables};
use candle_core::{Device, Tensor, Var};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn rand_vec(n: usize, seed: u64, scale: f32) -> Vec<f32> {
    let mut r = ChaCha8Rng::seed_from_u64(seed);
    (0..n).map(|_| r.random_range(-scale..scale)).collect()
}

/// Checks d/dx sum(f(x) * R) from backprop against central differences, for every element of x.
fn check_grad(shape: &[usize], scale: f32, f: impl Fn(&Tensor) -> Tensor) {
    let n: usize = shape.iter().product();
    let x0 = rand_vec(n, 1, scale);
    let x = Var::from_vec(x0.clone(), shape, &Device::Cpu).unwrap();
    let y = f(x.as_tensor());
    let r = Tensor::from_vec(rand_vec(y.elem_count(), 2, 1.0), y.shape(), &Device::Cpu).unwrap();
    let loss = (y * &r).unwrap().sum_all().unwrap();
    let g = loss.backward().unwrap();
    let analytic = g.get(x.as_tensor()).expect("input got a gradient").flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let eval = |v: &[f32]| -> f64 {
        let t = Tensor::from_vec(v.to_vec(), shape, &Device::Cpu).unwrap();
        let y = f(&t).flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let r = r.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        y.iter().zip(&r).map(|(a, b)| *a as f64 * *b as f64).sum()
    };
    let h = 1e-2f32;
    let mut worst = 0f64;
    for i in 0..n {
        let (mut p, mut m) = (x0.clone(), x0.clone());
        p[i] += h;
        m[i] -= h;
        let num = (eval(&p) - eval(&m)) / (2.0 * h as f64);
        let err = (num - analytic[i] as f64).abs() / (num.abs().max(0.1));
        worst = worst.max(err);
        assert!(err < 2e-2, "element {i}: numeric {num}, analytic {}", analytic[i]);
    }
    assert!(analytic.iter().any(|v| v.abs() > 1e-4), "gradient is all zeros");
    eprintln!("worst relative error {worst:.2e}");
}

#[test]
fn frozen_linear_gradient_and_value() {
    let wt = Tensor::from_vec(rand_vec(5 * 7, 3, 1.0), (5, 7), &Device::Cpu).unwrap();
    let w = Frozen::F32(wt.clone());
    check_grad(&[4, 7], 1.0, |x| frozen_linear(x, &w, InputMap::Identity, None).unwrap());
    // Same values as a plain matmul.
    let x = Tensor::from_vec(rand_vec(28, 4, 1.0), (4, 7), &Device::Cpu).unwrap();
    let a = frozen_linear(&x, &w, InputMap::Identity, None).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let b = x.matmul(&wt.t().unwrap()).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
    for (a, b) in a.iter().zip(&b) {
        assert!((a - b).abs() < 1e-5, "{a} vs {b}");
    }
}

/// The input maps and the residual: `r + map(x) W^T` equals the composed ops, and its gradients (of `x` through
/// the map, and of `r`) match finite differences.
#[test]
fn frozen_linear_maps_its_input_and_adds_the_residual() {
    let wt = Tensor::from_vec(rand_vec(5 * 7, 3, 1.0), (5, 7), &Device::Cpu).unwrap();
    let w = Frozen::F32(wt.clone());
    let norm = Arc::new(rand_vec(7, 5, 1.0));
    let maps = [(InputMap::RmsNorm(norm.clone(), 1e-5), 7), (InputMap::GatedAct(Activation::Silu), 14), (InputMap::GatedAct(Activation::GeluTanh), 14)];
    let r = Tensor::from_vec(rand_vec(4 * 5, 6, 1.0), (4, 5), &Device::Cpu).unwrap();
    for (map, width) in maps {
        check_grad(&[4, width], 1.0, |x| frozen_linear(x, &w, map.clone(), Some(&r)).unwrap());
        let x = Tensor::from_vec(rand_vec(4 * width, 7, 1.0), (4, width), &Device::Cpu).unwrap();
        check_grad(&[4, 5], 1.0, |r| frozen_linear(&x, &w, map.clone(), Some(r)).unwrap());
        let mapped = match &map {
            InputMap::RmsNorm(n, eps) => rms_norm(&x, n.clone(), *eps).unwrap(),
            InputMap::GatedAct(act) => gated_act(&x, *act).unwrap(),
            InputMap::Identity => unreachable!(),
        };
        let want = (mapped.matmul(&wt.t().unwrap()).unwrap() + &r).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let got = frozen_linear(&x, &w, map.clone(), Some(&r)).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        for (g, w) in got.iter().zip(&want) {
            assert!((g - w).abs() < 1e-5, "{g} vs {w}");
        }
    }
}

/// A random `rows x cols` matrix quantized by candle to `dtype` (ggml's quantizers), in our blocks.
fn quantized(rows: usize, cols: usize, seed: u64, dtype: candle_core::quantized::GgmlDType) -> Matrix {
    let t = Tensor::from_vec(rand_vec(rows * cols, seed, 1.0), (rows, cols), &Device::Cpu).unwrap();
    let bytes = candle_core::quantized::QTensor::quantize(&t, dtype).unwrap().data().unwrap().into_owned();
    let data = match dtype {
        candle_core::quantized::GgmlDType::Q8_0 => WeightData::Q8(bytes.chunks_exact(BlockQ8::BYTES).map(BlockQ8::from_bytes).collect()),
        candle_core::quantized::GgmlDType::Q4K => WeightData::Q4K(bytes.chunks_exact(BlockQ4K::BYTES).map(BlockQ4K::from_bytes).collect()),
        other => panic!("no test conversion for {other:?}"),
    };
    Matrix { rows, cols, data }
}

/// Quantized frozen weights (QLoRA): the gradient through them matches finite differences, and forward and
/// backward equal those of their dequantized f32 copy up to summation order, across several backward tiles.
#[test]
fn quantized_frozen_weights_act_as_their_dequantized_values() {
    use candle_core::quantized::GgmlDType;
    let q8 = Frozen::Quantized(std::sync::Arc::new(quantized(5, 32, 3, GgmlDType::Q8_0)));
    check_grad(&[4, 32], 1.0, |x| frozen_linear(x, &q8, InputMap::Identity, None).unwrap());
    let (rows, cols, n) = (600, 256, 9);
    let m = quantized(rows, cols, 4, GgmlDType::Q4K);
    let (q, f) = (Frozen::Quantized(std::sync::Arc::new(m.clone())), Frozen::F32(Tensor::from_vec(m.to_f32(), (rows, cols), &Device::Cpu).unwrap()));
    assert!(q.storage_bytes() * 7 < f.storage_bytes(), "Q4_K holds 4.5 bits a weight");
    let x = rand_vec(n * cols, 5, 1.0);
    let g = rand_vec(n * rows, 6, 1.0);
    let (mut yq, mut yf, mut dq, mut df) = (vec![0f32; n * rows], vec![0f32; n * rows], vec![0f32; n * cols], vec![0f32; n * cols]);
    q.forward(&x, n, &mut yq).unwrap();
    f.forward(&x, n, &mut yf).unwrap();
    q.backward(&g, n, &mut dq).unwrap();
    f.backward(&g, n, &mut df).unwrap();
    for (name, a, b) in [("forward", &yq, &yf), ("backward", &dq, &df)] {
        let d = a.iter().zip(b.iter()).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(d < 1e-3, "{name}: max |diff| {d}");
    }
}

#[test]
fn rms_norm_gradient_and_value() {
    let w = Arc::new(rand_vec(8, 5, 1.0).into_iter().map(|v| 1.0 + v).collect::<Vec<_>>());
    check_grad(&[3, 8], 2.0, |x| rms_norm(x, w.clone(), 1e-5).unwrap());
    let x = rand_vec(8, 6, 2.0);
    let t = Tensor::from_vec(x.clone(), (1, 8), &Device::Cpu).unwrap();
    let y = rms_norm(&t, w.clone(), 1e-5).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let mut expect = vec![0f32; 8];
    autodidact::simd::kernels::rms_norm(autodidact::simd::Simd::active(), &x, &w, 1e-5, &mut expect);
    for (a, b) in y.iter().zip(&expect) {
        assert!((a - b).abs() < 1e-6);
    }
}

fn tables(half: usize, len: usize) -> Arc<RopeTables> {
    let inv: Vec<f32> = (0..half).map(|i| 1.0 / 100f32.powf(i as f32 / half as f32)).collect();
    Arc::new(RopeTables::new(&inv, len))
}

#[test]
fn rope_gradient_and_v_passthrough() {
    // 2 sequences x 3 positions; rows hold 2 rotated heads of 4 and one unrotated head of 4.
    let tb = tables(2, 16);
    check_grad(&[6, 12], 1.0, |x| rope_qk(x, tb.clone(), 2, 3).unwrap());
    let x = Tensor::from_vec(rand_vec(72, 7, 1.0), (6, 12), &Device::Cpu).unwrap();
    let y = rope_qk(&x, tb.clone(), 2, 3).unwrap();
    let (xv, yv) = (x.to_vec2::<f32>().unwrap(), y.to_vec2::<f32>().unwrap());
    for r in 0..6 {
        assert_eq!(xv[r][8..], yv[r][8..], "v columns unchanged");
    }
    assert_eq!(xv[0], yv[0], "position 0 is not rotated");
    assert_eq!(xv[3], yv[3], "second sequence restarts at position 0");
    assert_ne!(xv[1][..8], yv[1][..8]);
}

/// Attention composed from plain candle ops: per head, softmax(scale * q k^T + causal mask) v, the mask also
/// hiding keys `window` or more positions back.
fn reference_attention(qkv: &Tensor, op: &Attention) -> Vec<Vec<f32>> {
    let (t, hd, g) = (op.t, op.head_dim, op.heads / op.kv_heads);
    let x = qkv.to_vec2::<f32>().unwrap();
    let mut out = vec![vec![0f32; op.heads * hd]; op.b * t];
    for s in 0..op.b {
        for h in 0..op.heads {
            let col = |c: usize| -> Tensor {
                let rows: Vec<f32> = (0..t).flat_map(|i| x[s * t + i][c * hd..(c + 1) * hd].to_vec()).collect();
                Tensor::from_vec(rows, (t, hd), &Device::Cpu).unwrap()
            };
            let (q, k, v) = (col(h), col(op.heads + h / g), col(op.heads + op.kv_heads + h / g));
            let hidden = |i: usize, j: usize| j > i || op.window.is_some_and(|w| i >= j + w);
            let mask: Vec<f32> = (0..t * t).map(|ij| if hidden(ij / t, ij % t) { f32::NEG_INFINITY } else { 0.0 }).collect();
            let scores = ((q.matmul(&k.t().unwrap()).unwrap() * op.scale as f64).unwrap() + Tensor::from_vec(mask, (t, t), &Device::Cpu).unwrap()).unwrap();
            let y = candle_nn::ops::softmax_last_dim(&scores).unwrap().matmul(&v).unwrap().to_vec2::<f32>().unwrap();
            for i in 0..t {
                out[s * t + i][h * hd..(h + 1) * hd].copy_from_slice(&y[i]);
            }
        }
    }
    out
}

#[test]
fn attention_matches_composed_ops_across_row_chunks() {
    // 70 positions: two row chunks, the second partial; 4 query heads on 2 kv heads.
    let op = Attention { b: 2, t: 70, heads: 4, kv_heads: 2, head_dim: 3, scale: 0.6, holes: None, window: None, positions: None, rope: None };
    let qkv = Tensor::from_vec(rand_vec(2 * 70 * 8 * 3, 21, 2.0), (140, 24), &Device::Cpu).unwrap();
    let got = attention(&qkv, op.clone()).unwrap().to_vec2::<f32>().unwrap();
    for (g, w) in got.iter().flatten().zip(reference_attention(&qkv, &op).iter().flatten()) {
        assert!((g - w).abs() < 1e-5, "{g} vs {w}");
    }
    assert!(attention(&qkv.narrow(0, 0, 139).unwrap(), op.clone()).is_err(), "rows that do not fit b x t");
    // A sliding window shorter than a row chunk, and one that ends inside the second chunk.
    for window in [5, 66] {
        let op = Attention { window: Some(window), ..op.clone() };
        let got = attention(&qkv, op.clone()).unwrap().to_vec2::<f32>().unwrap();
        for (g, w) in got.iter().flatten().zip(reference_attention(&qkv, &op).iter().flatten()) {
            assert!((g - w).abs() < 1e-5, "window {window}: {g} vs {w}");
        }
    }
}

#[test]
fn attention_gradient() {
    check_grad(&[2 * 3, 6 * 2], 2.0, |x| {
        attention(x, Attention { b: 2, t: 3, heads: 4, kv_heads: 1, head_dim: 2, scale: 0.7, holes: None, window: None, positions: None, rope: None }).unwrap()
    });
    // Past the first row chunk.
    check_grad(&[66, 4 * 2], 1.0, |x| {
        attention(x, Attention { b: 1, t: 66, heads: 2, kv_heads: 1, head_dim: 2, scale: 0.7, holes: None, window: None, positions: None, rope: None }).unwrap()
    });
    // A sliding window of 2: keys further back get no gradient from a row.
    check_grad(&[2 * 5, 6 * 2], 2.0, |x| {
        attention(x, Attention { b: 2, t: 5, heads: 4, kv_heads: 1, head_dim: 2, scale: 0.7, holes: None, window: Some(2), positions: None, rope: None })
            .unwrap()
    });
}

/// Rotating q and k inside the attention op equals rotating them first, in value and gradient.
#[test]
fn attention_with_its_own_rope_equals_rope_then_attention() {
    let tb = tables(1, 16);
    let op = |rope: Option<RopeQk>| Attention { b: 2, t: 3, heads: 4, kv_heads: 1, head_dim: 2, scale: 0.7, holes: None, window: None, positions: None, rope };
    let own = |x: &Tensor| attention(x, op(Some(RopeQk::new(tb.clone(), 5, 3, None, 6).unwrap()))).unwrap();
    check_grad(&[2 * 3, 6 * 2], 2.0, own);
    let x = Tensor::from_vec(rand_vec(72, 9, 2.0), (6, 12), &Device::Cpu).unwrap();
    let want = attention(&rope_qk(&x, tb.clone(), 5, 3).unwrap(), op(None)).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let got = own(&x).flatten_all().unwrap().to_vec1::<f32>().unwrap();
    assert_eq!(got, want);
}

#[test]
fn swiglu_gradient() {
    check_grad(&[3, 10], 3.0, |x| swiglu(x).unwrap());
}

#[test]
fn geglu_gradient() {
    check_grad(&[3, 10], 3.0, |x| gated_act(x, Activation::GeluTanh).unwrap());
}

#[test]
fn log_prob_head_gradient_and_value() {
    // The output matrix seen column-major, as a transposed tensor.
    let (n, h, v) = (70, 5, 9);
    let wt = Tensor::from_vec(rand_vec(h * v, 31, 1.0), (h, v), &Device::Cpu).unwrap().t().unwrap();
    let w = Frozen::F32(wt.clone());
    let targets = Arc::new((0..n as u32).map(|i| i * 7 % v as u32).collect::<Vec<_>>());
    check_grad(&[n, h], 2.0, |x| target_logprobs(x, &w, targets.clone()).unwrap());
    let x = Tensor::from_vec(rand_vec(n * h, 32, 2.0), (n, h), &Device::Cpu).unwrap();
    let lp = target_logprobs(&x, &w, targets.clone()).unwrap().to_vec1::<f32>().unwrap();
    let ls = candle_nn::ops::log_softmax(&x.matmul(&wt.t().unwrap()).unwrap(), 1).unwrap().to_vec2::<f32>().unwrap();
    for i in 0..n {
        assert!((lp[i] - ls[i][targets[i] as usize]).abs() < 1e-5);
    }
    assert!(target_logprobs(&x, &w, Arc::new(vec![9; n])).is_err(), "target outside the vocabulary");
    assert!(target_logprobs(&x, &w, Arc::new(vec![0; n - 1])).is_err(), "one target per row");
}

/// Output 7 wide: part 0 adapts columns 0..3 (rank 2), part 1 columns 5..7 (rank 2); columns 3..5 are frozen only.
/// Part 1 has a dropout mask on its input.
fn lora_op(w: &Tensor, masked: bool, map: InputMap) -> LoraLinear {
    let mask: Vec<f32> = (0..4 * 6).map(|i| if i % 3 == 0 { 0.0 } else { 1.5 }).collect();
    LoraLinear {
        w: Frozen::F32(w.clone()),
        parts: vec![LoraPart { out_offset: 0, width: 3, rank: 2 }, LoraPart { out_offset: 5, width: 2, rank: 2 }],
        scale: 0.7,
        masks: vec![None, masked.then_some(mask)],
        map,
    }
}

#[test]
fn lora_linear_gradients_and_value() {
    let t = |n: usize, seed: u64, shape: &[usize]| Tensor::from_vec(rand_vec(n, seed, 1.0), shape, &Device::Cpu).unwrap();
    // The frozen weight seen column-major, as the training model stores some of its projections.
    let w = t(7 * 6, 11, &[6, 7]).t().unwrap();
    let (a, b) = (t(4 * 6, 13, &[4, 6]), t(3 * 2 + 2 * 2, 14, &[10]));
    let ab = Tensor::cat(&[&a.flatten_all().unwrap(), &b], 0).unwrap();
    let r = t(4 * 7, 15, &[4, 7]);
    // Plain, and with a gated activation in front (x twice as wide) and a residual added.
    for (masked, gated) in [(false, false), (true, false), (false, true), (true, true)] {
        let map = if gated { InputMap::GatedAct(Activation::Silu) } else { InputMap::Identity };
        let x = t(4 * map_width(gated), 12, &[4, map_width(gated)]);
        let apply = |x: &Tensor, ab: &Tensor, r: &Tensor| {
            if gated {
                x.apply_op3(ab, r, lora_op(&w, masked, map.clone())).unwrap()
            } else {
                x.apply_op2(ab, lora_op(&w, masked, map.clone())).unwrap()
            }
        };
        check_grad(&[4, map_width(gated)], 1.0, |x| apply(x, &ab, &r));
        check_grad(&[34], 1.0, |ab| apply(&x, ab, &r));
        if gated {
            check_grad(&[4, 7], 1.0, |r| apply(&x, &ab, r));
        }
        // The value: [r +] x W^T plus each part's s (x * m) A_i^T B_i^T in its columns.
        let y = apply(&x, &ab, &r);
        let x = if gated { gated_act(&x, Activation::Silu).unwrap() } else { x };
        let mut want = x.matmul(&w.t().unwrap()).unwrap();
        if gated {
            want = (want + &r).unwrap();
        }
        let mut want = want.to_vec2::<f32>().unwrap();
        let op = lora_op(&w, masked, map.clone());
        for (i, (off, width)) in [(0usize, 3usize), (5, 2)].into_iter().enumerate() {
            let xin = match &op.masks[i] {
                Some(m) => (&x * Tensor::from_vec(m.clone(), (4, 6), &Device::Cpu).unwrap()).unwrap(),
                None => x.clone(),
            };
            let ai = a.narrow(0, 2 * i, 2).unwrap();
            let bi = b.narrow(0, 6 * i, width * 2).unwrap().reshape((width, 2)).unwrap();
            let d = (xin.matmul(&ai.t().unwrap()).unwrap().matmul(&bi.t().unwrap()).unwrap() * 0.7).unwrap().to_vec2::<f32>().unwrap();
            for r in 0..4 {
                for c in 0..width {
                    want[r][off + c] += d[r][c];
                }
            }
        }
        for (got, want) in y.to_vec2::<f32>().unwrap().iter().zip(&want) {
            for (g, w) in got.iter().zip(want) {
                assert!((g - w).abs() < 1e-5, "{g} vs {w}");
            }
        }
    }
}

/// Input width of the LoRA test op: its 6 mapped features, twice that before a gated activation.
fn map_width(gated: bool) -> usize {
    if gated {
        12
    } else {
        6
    }
}
