//! The training forward against the exact f32 inference path: equal logits with a fresh adapter (tiny models of
//! every architecture, and the real model), equal logits with a trained adapter against the merged model, and
//! LoRA gradients against finite differences through the whole model.
use super::common;

use autodidact::model::linear::{Matrix, WeightData};
use autodidact::model::lora::{LoraAdapter, LoraConfig, Proj};
use autodidact::model::weights::{LayerWeights, Weights};
use autodidact::model::{Arch, LoadedModel, Logits, ModelConfig, SeqInput, Transformer};
use autodidact::quant::BlockQ8;
use autodidact::train::frozen::BaseWeights;
use autodidact::train::tiny::{tiny_config_of, tiny_weights};
use autodidact::train::{next_token_targets, Batch, LoraVars, Target, TrainModel};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn f32_copy(w: &Weights) -> Weights {
    let m = |m: &Matrix| Matrix { rows: m.rows, cols: m.cols, data: WeightData::F32(m.to_f32()) };
    Weights {
        embed: m(&w.embed),
        layers: w
            .layers
            .iter()
            .map(|l| LayerWeights {
                attn_norm: l.attn_norm.clone(),
                qkv: m(&l.qkv),
                qkv_bias: l.qkv_bias.clone(),
                o: m(&l.o),
                mlp_norm: l.mlp_norm.clone(),
                gate_up: m(&l.gate_up),
                down: m(&l.down),
                qk_norm: l.qk_norm.clone(),
                post_norms: l.post_norms.clone(),
            })
            .collect(),
        norm: w.norm.clone(),
        lm_head: w.lm_head.as_ref().map(m),
    }
}

/// Logits of every position of every sequence from the inference transformer (f32 weights: exact path).
fn reference_logits(t: &Transformer, seqs: &[Vec<u32>]) -> Vec<Vec<f32>> {
    let mut caches: Vec<_> = seqs.iter().map(|_| t.new_cache()).collect();
    let mut batch: Vec<SeqInput> = caches.iter_mut().zip(seqs).map(|(c, s)| SeqInput { cache: c, tokens: s, logits: Logits::All }).collect();
    t.forward(&mut batch).unwrap()
}

fn training_logits(m: &TrainModel, lora: Option<&LoraVars>, seqs: &[Vec<u32>]) -> Vec<Vec<f32>> {
    let batch = Batch::new(&seqs.iter().map(|s| s.as_slice()).collect::<Vec<_>>());
    seqs.iter()
        .enumerate()
        .map(|(i, s)| {
            let pos: Vec<(usize, usize)> = (0..s.len()).map(|p| (i, p)).collect();
            m.logits_at(&batch, lora, &pos).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap()
        })
        .collect()
}

fn max_abs_diff(a: &[Vec<f32>], b: &[Vec<f32>]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .flat_map(|(x, y)| {
            assert_eq!(x.len(), y.len());
            x.iter().zip(y).map(|(p, q)| (p - q).abs())
        })
        .fold(0.0, f32::max)
}

fn lora_cfg(targets: &[Proj]) -> LoraConfig {
    LoraConfig { r: 4, alpha: 8.0, dropout: 0.0, targets: targets.to_vec(), base_model: "tiny".into() }
}

/// An adapter whose B is random (a fresh one has B = 0 and would test nothing).
fn random_adapter(cfg: &ModelConfig, seed: u64) -> LoraAdapter {
    let mut a = LoraAdapter::new(lora_cfg(&Proj::ALL), cfg, seed).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(seed + 1);
    for l in a.layers.iter_mut() {
        for p in l.values_mut() {
            p.b.iter_mut().for_each(|v| *v = rng.random_range(-0.2..0.2));
        }
    }
    a
}

fn tiny_seqs() -> Vec<Vec<u32>> {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    [11usize, 7, 1].iter().map(|&n| (0..n).map(|_| rng.random_range(0..300)).collect()).collect()
}

/// Llama, and the architectures with more to their layers: Qwen3 (q/k norms, heads not hidden / heads wide) and
/// Gemma 3 (a sliding window of 4 shorter than the sequences, post norms, GeGLU, scaled embeddings and scores).
const ARCHS: [Arch; 3] = [Arch::Llama, Arch::Qwen3, Arch::Gemma3];

#[test]
fn fresh_adapter_matches_base_model_tiny() {
    for arch in ARCHS {
        let cfg = tiny_config_of(arch);
        let w = tiny_weights(&cfg, 1);
        let m = TrainModel::new(&cfg, &w).unwrap();
        let vars = LoraVars::from_adapter(&LoraAdapter::new(lora_cfg(&Proj::ALL), &cfg, 5).unwrap(), m.device()).unwrap();
        let seqs = tiny_seqs();
        let reference = reference_logits(&Transformer::new(cfg.clone(), f32_copy(&w)), &seqs);
        let ours = training_logits(&m, Some(&vars), &seqs);
        let d = max_abs_diff(&reference, &ours);
        eprintln!("{arch:?}: training vs inference logits, max |diff| {d}");
        assert!(d < 1e-4, "{arch:?}: max |diff| {d}");
    }
}

/// Gemma's window counts positions, not rows: sequences packed behind a shared prompt give the logits they give
/// unpacked.
#[test]
fn packed_sequences_keep_the_sliding_window_by_position() {
    let cfg = tiny_config_of(Arch::Gemma3);
    let w = tiny_weights(&cfg, 3);
    let m = TrainModel::new(&cfg, &w).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(8);
    let prompt: Vec<u32> = (0..6).map(|_| rng.random_range(0..300)).collect();
    let seqs: Vec<Vec<u32>> = (0..3).map(|k| prompt.iter().copied().chain((0..3 + 2 * k).map(|_| rng.random_range(0..300))).collect()).collect();
    let refs: Vec<&[u32]> = seqs.iter().map(|s| s.as_slice()).collect();
    let (packed, starts) = Batch::packed(&refs, prompt.len()).unwrap();
    let plain = training_logits(&m, None, &seqs);
    for (k, s) in seqs.iter().enumerate() {
        let rows: Vec<(usize, usize)> = (0..s.len()).map(|p| (0, if p < prompt.len() { p } else { starts[k] + p - prompt.len() })).collect();
        let got = m.logits_at(&packed, None, &rows).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let d = max_abs_diff(&plain[k..k + 1], &[got]);
        assert!(d < 1e-4, "sequence {k}: max |diff| {d}");
    }
}

#[test]
fn adapter_matches_merged_model_and_can_be_disabled() {
    for arch in ARCHS {
        adapter_matches_merged(arch);
    }
}

fn adapter_matches_merged(arch: Arch) {
    let cfg = tiny_config_of(arch);
    let w = tiny_weights(&cfg, 1);
    let m = TrainModel::new(&cfg, &w).unwrap();
    let adapter = random_adapter(&cfg, 9);
    let vars = LoraVars::from_adapter(&adapter, m.device()).unwrap();
    let seqs = tiny_seqs();
    let merged = Transformer::new(cfg.clone(), adapter.merge(&w, &cfg).unwrap());
    let d = max_abs_diff(&reference_logits(&merged, &seqs), &training_logits(&m, Some(&vars), &seqs));
    assert!(d < 1e-4, "{arch:?}: adapter vs merged: max |diff| {d}");
    // The adapter changes the output, and disabling it gives the base model back.
    let base = reference_logits(&Transformer::new(cfg.clone(), f32_copy(&w)), &seqs);
    assert!(max_abs_diff(&base, &training_logits(&m, Some(&vars), &seqs)) > 1e-2);
    assert!(max_abs_diff(&base, &training_logits(&m, None, &seqs)) < 1e-4);
}

/// Every matrix of `w` rounded to Q8_0 blocks (the tiny model's widths are multiples of 32).
fn q8_copy(w: &Weights) -> Weights {
    let m = |m: &Matrix| Matrix { rows: m.rows, cols: m.cols, data: WeightData::Q8(m.to_f32().chunks(32).map(BlockQ8::quantize).collect()) };
    let mut q = f32_copy(w);
    q.embed = m(&w.embed);
    for (l, src) in q.layers.iter_mut().zip(&w.layers) {
        (l.qkv, l.o, l.gate_up, l.down) = (m(&src.qkv), m(&src.o), m(&src.gate_up), m(&src.down));
    }
    q
}

#[test]
fn lora_gradients_match_finite_differences_through_the_model() {
    for arch in ARCHS {
        lora_gradients_match(arch);
    }
}

fn lora_gradients_match(arch: Arch) {
    let cfg = tiny_config_of(arch);
    let w = tiny_weights(&cfg, 2);
    lora_gradients_match_finite_differences(&cfg, &w);
}

/// The same through a quantized base kept in its blocks (QLoRA): the trainer stays exact.
#[test]
fn lora_gradients_match_finite_differences_through_a_quantized_base() {
    for arch in ARCHS {
        let cfg = tiny_config_of(arch);
        lora_gradients_match_finite_differences(&cfg, &q8_copy(&tiny_weights(&cfg, 2)));
    }
}

/// A quantized base held in its blocks computes what its f32 copy does: log-probs and LoRA gradients agree up to
/// summation order, in a fraction of the memory.
#[test]
fn quantized_base_trains_as_its_f32_copy() {
    for arch in ARCHS {
        quantized_base_trains_as_f32(arch);
    }
}

fn quantized_base_trains_as_f32(arch: Arch) {
    let cfg = tiny_config_of(arch);
    let w = q8_copy(&tiny_weights(&cfg, 3));
    let (q, f) = (TrainModel::new(&cfg, &w).unwrap(), TrainModel::with_base(&cfg, &w, BaseWeights::F32).unwrap());
    assert!(q.weight_bytes() * 3 < f.weight_bytes(), "{} vs {} bytes", q.weight_bytes(), f.weight_bytes());
    let vars = LoraVars::from_adapter(&random_adapter(&cfg, 5), q.device()).unwrap();
    let seqs = tiny_seqs();
    let masks: Vec<Vec<u8>> = seqs.iter().map(|s| vec![1; s.len()]).collect();
    let pairs: Vec<(&[u32], &[u8])> = seqs.iter().zip(&masks).map(|(s, m)| (s.as_slice(), m.as_slice())).collect();
    let targets = next_token_targets(&pairs);
    let batch = Batch::new(&seqs.iter().map(|s| s.as_slice()).collect::<Vec<_>>());
    let run = |m: &TrainModel| {
        let lp = m.target_logprobs(&batch, Some(&vars), None, &targets).unwrap();
        let g = lp.sum_all().unwrap().backward().unwrap();
        let grads: Vec<f32> =
            vars.named_vars().iter().flat_map(|(_, v)| g.get(v.as_tensor()).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap()).collect();
        (lp.to_vec1::<f32>().unwrap(), grads)
    };
    let ((lq, gq), (lf, gf)) = (run(&q), run(&f));
    let dl = lq.iter().zip(&lf).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    let scale = gf.iter().fold(0f32, |m, g| m.max(g.abs()));
    let dg = gq.iter().zip(&gf).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    assert!(dl < 1e-4 && dg < 1e-4 * scale.max(1.0), "{arch:?}: log-probs max |diff| {dl}, gradients {dg} (largest {scale})");
}

fn lora_gradients_match_finite_differences(cfg: &ModelConfig, w: &Weights) {
    let cfg = cfg.clone();
    let m = TrainModel::new(&cfg, w).unwrap();
    let adapter = random_adapter(&cfg, 4);
    let seqs = tiny_seqs();
    let masks: Vec<Vec<u8>> = seqs.iter().map(|s| vec![1; s.len()]).collect();
    let pairs: Vec<(&[u32], &[u8])> = seqs.iter().zip(&masks).map(|(s, m)| (s.as_slice(), m.as_slice())).collect();
    let targets: Vec<Target> = next_token_targets(&pairs);
    let batch = Batch::new(&seqs.iter().map(|s| s.as_slice()).collect::<Vec<_>>());
    let loss_of = |a: &LoraAdapter| -> f64 {
        let v = LoraVars::from_adapter(a, m.device()).unwrap();
        m.target_logprobs(&batch, Some(&v), None, &targets).unwrap().to_vec1::<f32>().unwrap().iter().map(|&x| -(x as f64)).sum()
    };
    let vars = LoraVars::from_adapter(&adapter, m.device()).unwrap();
    let lp = m.target_logprobs(&batch, Some(&vars), None, &targets).unwrap();
    let grads = lp.sum_all().unwrap().neg().unwrap().backward().unwrap();
    let h = 1e-2f32;
    let mut checked = 0;
    for layer in 0..cfg.num_layers {
        for (p, (va, vb)) in &vars.layers[layer] {
            for (is_a, var) in [(true, va), (false, vb)] {
                let g = grads.get(var.as_tensor()).expect("every LoRA variable gets a gradient");
                let g = g.flatten_all().unwrap().to_vec1::<f32>().unwrap();
                // The largest-gradient element: a meaningful finite difference.
                let (i, &gi) = g.iter().enumerate().max_by(|a, b| a.1.abs().total_cmp(&b.1.abs())).unwrap();
                let bump = |d: f32| {
                    let mut a = adapter.clone();
                    let pair = a.layers[layer].get_mut(p).unwrap();
                    if is_a {
                        pair.a[i] += d
                    } else {
                        pair.b[i] += d
                    }
                    loss_of(&a)
                };
                let num = (bump(h) - bump(-h)) / (2.0 * h as f64);
                let rel = (num - gi as f64).abs() / num.abs().max(1e-2);
                assert!(rel < 3e-2, "{:?} layer {layer} {p:?} {}[{i}]: numeric {num}, analytic {gi}", cfg.arch, if is_a { "A" } else { "B" });
                checked += 1;
            }
        }
    }
    assert_eq!(checked, 2 * 7 * cfg.num_layers);
}

#[test]
fn fresh_adapter_matches_base_model_real() {
    let model = LoadedModel::load(common::default_model().to_str().unwrap()).unwrap();
    let cfg = model.config().clone();
    let w = &model.transformer.weights;
    let m = TrainModel::new(&cfg, w).unwrap();
    let lcfg = LoraConfig { r: 8, alpha: 16.0, dropout: 0.0, targets: Proj::ALL.to_vec(), base_model: "smollm2".into() };
    let vars = LoraVars::from_adapter(&LoraAdapter::new(lcfg, &cfg, 0).unwrap(), m.device()).unwrap();
    let seqs = vec![vec![1, 4093, 198, 1780, 314, 216, 33, 34, 26, 39, 47, 2, 198], vec![1, 4093, 198, 1780, 314, 216, 33]];
    let reference = reference_logits(&Transformer::new(cfg.clone(), f32_copy(w)), &seqs);
    let ours = training_logits(&m, Some(&vars), &seqs);
    let d = max_abs_diff(&reference, &ours);
    eprintln!("real model: max |logit diff| {d}");
    assert!(d < 1e-3, "max |diff| {d}");
    // The log-prob op agrees with a log-softmax of the reference logits.
    let batch = Batch::new(&[seqs[0].as_slice()]);
    let targets: Vec<Target> = (0..seqs[0].len() - 1).map(|p| Target { seq: 0, pos: p, target: seqs[0][p + 1] }).collect();
    let lp = m.target_logprobs(&batch, None, None, &targets).unwrap().to_vec1::<f32>().unwrap();
    let v = cfg.vocab_size;
    for (t, got) in targets.iter().zip(&lp) {
        let row = &reference[0][t.pos * v..(t.pos + 1) * v];
        let max = row.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
        let lse = max + row.iter().map(|x| (x - max).exp()).sum::<f32>().ln();
        assert!((row[t.target as usize] - lse - got).abs() < 1e-3);
    }
}
