//! GRPO and SDAR on the tiny model: the signs of every term, gradients against finite differences, flat groups,
//! the KL at the start, refusal of single-sample groups, exact resume.
use std::path::Path;

use autodidact::model::lora::{LoraAdapter, LoraConfig, Proj};
use autodidact::train::model::{next_token_targets, Batch, LoraVars, Target};
use autodidact::train::rl::{token_terms, train_rl, Objective, RlCoefs, RlParams, RlRow, RlStepMetrics, TeacherView, TokenInputs, REFERENCE_FILE};
use autodidact::train::tiny::{tiny_config, tiny_weights};
use autodidact::train::OptimParams;
use autodidact::train::TrainModel;
use candle_core::Tensor;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn model() -> TrainModel {
    let cfg = tiny_config();
    TrainModel::new(&cfg, &tiny_weights(&cfg, 1)).unwrap()
}

fn adapter(m: &TrainModel) -> LoraAdapter {
    LoraAdapter::new(LoraConfig { r: 4, alpha: 8.0, dropout: 0.0, targets: Proj::ALL.to_vec(), base_model: "tiny".into() }, &m.cfg, 11).unwrap()
}

/// An episode: a shared prompt, then `gen` generated tokens (mask 1) and a short tool reply (mask 0).
fn episode(id: &str, group: &str, prompt: &[u32], gen: &[u32], reward: f64) -> RlRow {
    let mut ids = prompt.to_vec();
    let mut mask = vec![0u8; prompt.len()];
    ids.extend_from_slice(gen);
    mask.extend(gen.iter().map(|_| 1u8));
    ids.extend_from_slice(&[7, 8]);
    mask.extend_from_slice(&[0, 0]);
    let n = ids.len();
    let teacher = {
        let mut t = vec![1, 2, 3];
        t.extend_from_slice(&ids);
        TeacherView { token_ids: t, shift: 3 }
    };
    RlRow { id: id.into(), group: group.into(), token_ids: ids, mask, reward, sampler_logprobs: vec![0.0; n], teacher: Some(teacher) }
}

fn random_groups(groups: usize, per: usize, seed: u64) -> Vec<RlRow> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut out = Vec::new();
    for g in 0..groups {
        let prompt: Vec<u32> = (0..rng.random_range(4..9)).map(|_| rng.random_range(10..300)).collect();
        for s in 0..per {
            let gen: Vec<u32> = (0..rng.random_range(3..8)).map(|_| rng.random_range(10..300)).collect();
            let reward = if rng.random_bool(0.5) { 10.0 } else { 0.0 } - 0.1 * s as f64;
            out.push(episode(&format!("g{g}#{s}"), &format!("g{g}"), &prompt, &gen, reward));
        }
    }
    out
}

fn params(out: &Path, objective: Objective) -> RlParams {
    // The optimiser RlParams::default() had before OptimParams, with the test's own rate, batch and seed.
    let optim = OptimParams { lr: 1e-2, batch_size: 3, seed: 3, warmup: 0, min_lr_ratio: 1.0, epochs: 1, save_every: 0, ..OptimParams::SFT };
    RlParams { groups_per_step: 2, ..RlParams::new(objective, optim, 64, out.to_path_buf()) }
}

/// Sum of each episode's generated-token log-probs under `adapter`.
fn episode_logprobs(m: &TrainModel, a: &LoraAdapter, rows: &[RlRow]) -> Vec<f64> {
    let vars = LoraVars::from_adapter(a, m.device()).unwrap();
    rows.iter()
        .map(|r| {
            let t = next_token_targets(&[(&r.token_ids, &r.mask)]);
            let lp = m.target_logprobs(&Batch::new(&[&r.token_ids]), Some(&vars), None, &t).unwrap();
            lp.to_vec1::<f32>().unwrap().iter().map(|&x| x as f64).sum()
        })
        .collect()
}

fn no_extras() -> RlCoefs {
    RlCoefs { kl_coef: 0.0, entropy_coef: 0.0, sdar_lambda: 0.0, ..RlCoefs::default() }
}

#[test]
fn a_positive_advantage_raises_the_sampled_tokens_and_a_negative_one_lowers_them() {
    let m = model();
    let rows = vec![episode("a#0", "a", &[5, 6, 9], &[40, 41, 42], 10.0), episode("a#1", "a", &[5, 6, 9], &[90, 91, 92], 0.0)];
    let dir = tempfile::tempdir().unwrap();
    let p = RlParams { coefs: no_extras(), ..params(dir.path(), Objective::Grpo) };
    let start = adapter(&m);
    let before = episode_logprobs(&m, &start, &rows);
    let out = train_rl(&m, start, &rows, &p, &mut |_| {}).unwrap();
    assert_eq!(out.steps, 1);
    let after = episode_logprobs(&m, &out.adapter, &rows);
    eprintln!("before {before:?} after {after:?}");
    assert!(after[0] > before[0] + 1e-3, "the rewarded episode became likelier");
    assert!(after[1] < before[1] - 1e-3, "the unrewarded episode became less likely");
}

#[test]
fn the_sdar_term_raises_sampled_tokens_more_where_the_teacher_agrees() {
    let m = model();
    // One flat group: no GRPO signal, only the SDAR term moves the model.
    let rows = vec![episode("a#0", "a", &[5, 6, 9], &[40, 41, 42], 0.0), episode("a#1", "a", &[5, 6, 9], &[90, 91, 92], 0.0)];
    let dir = tempfile::tempdir().unwrap();
    let coefs = RlCoefs { kl_coef: 0.0, entropy_coef: 0.0, sdar_lambda: 1.0, sdar_beta: 5.0, ..RlCoefs::default() };
    let p = RlParams { coefs, stop_after: Some(0), resume: true, ..params(dir.path(), Objective::Sdar) };
    let start = adapter(&m);
    train_rl(&m, start.clone(), &rows, &p, &mut |_| {}).unwrap();
    // The teacher endorses episode 0 (T = S + 2) and rejects episode 1 (T = S - 2).
    let path = dir.path().join(REFERENCE_FILE);
    let mut r: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let old = r["old"].clone();
    let shift = |v: &serde_json::Value, d: f64| serde_json::Value::from(v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() + d).collect::<Vec<_>>());
    r["teacher"] = serde_json::json!([shift(&old[0], 2.0), shift(&old[1], -2.0)]);
    std::fs::write(&path, r.to_string()).unwrap();
    let before = episode_logprobs(&m, &start, &rows);
    let mut gates = Vec::new();
    let out = train_rl(&m, start, &rows, &RlParams { stop_after: None, ..p }, &mut |s: &RlStepMetrics| gates.push((s.gate_mean, s.gap_mean))).unwrap();
    let after = episode_logprobs(&m, &out.adapter, &rows);
    let (d0, d1) = (after[0] - before[0], after[1] - before[1]);
    eprintln!("endorsed {d0:+.4}, rejected {d1:+.4}, gates {gates:?}");
    assert!(d0 > 1e-3, "the endorsed tokens rise (a sign error pushes them down)");
    assert!(d0 > 5.0 * d1.abs(), "the endorsed tokens rise far more than the rejected ones move");
    let (g, gap) = gates[0];
    assert!((g.unwrap() - 0.5).abs() < 0.01 && gap.unwrap().abs() < 1e-5, "half the tokens gated open: {gates:?}");
}

/// Loss of a batch as the trainer defines it, with the gate held at `gates` (it is detached).
fn batch_loss(m: &TrainModel, vars: &LoraVars, batch: &Batch, targets: &[Target], consts: &[TokenInputs], c: &RlCoefs, gates: &[f64]) -> (f64, Tensor) {
    let out = m.target_logprobs_entropy(batch, Some(vars), targets).unwrap();
    let vals = out.to_vec2::<f32>().unwrap();
    let (mut loss, mut coef) = (0f64, Vec::new());
    for (k, x) in consts.iter().enumerate() {
        let x = TokenInputs { s: vals[k][0] as f64, h: vals[k][1] as f64, ..*x };
        let t = token_terms(&RlCoefs { sdar_lambda: 0.0, ..*c }, &x);
        loss += t.loss;
        let mut ds = t.d_s;
        if let Some(teacher) = x.teacher {
            loss += c.sdar_lambda * gates[k] * (teacher - x.s);
            ds -= c.sdar_lambda * gates[k];
        }
        coef.extend([ds as f32, t.d_h as f32]);
    }
    let coef = Tensor::from_vec(coef, out.shape(), out.device()).unwrap();
    (loss, (out * coef).unwrap().sum_all().unwrap())
}

#[test]
fn every_term_matches_finite_differences() {
    let m = model();
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    let mut a = adapter(&m);
    for l in &mut a.layers {
        for pair in l.values_mut() {
            pair.b.iter_mut().for_each(|x| *x = rng.random_range(-0.2..0.2));
        }
    }
    let vars = LoraVars::from_adapter(&a, m.device()).unwrap();
    let seqs: Vec<Vec<u32>> = vec![(0..10).map(|_| rng.random_range(0..300)).collect(), (0..7).map(|_| rng.random_range(0..300)).collect()];
    let masks: Vec<Vec<u8>> = seqs.iter().map(|s| (0..s.len()).map(|i| u8::from(i >= 3)).collect()).collect();
    let batch = Batch::new(&seqs.iter().map(|s| s.as_slice()).collect::<Vec<_>>());
    let targets = next_token_targets(&seqs.iter().zip(&masks).map(|(s, m)| (s.as_slice(), m.as_slice())).collect::<Vec<_>>());
    let s0 = m.target_logprobs(&batch, Some(&vars), None, &targets).unwrap().to_vec1::<f32>().unwrap();
    let consts: Vec<TokenInputs> = s0
        .iter()
        .enumerate()
        .map(|(k, &s)| TokenInputs {
            s: 0.0,
            h: 0.0,
            old: s as f64 + if k % 2 == 0 { 0.05 } else { -0.05 }, // ratios near 1, inside the clip range
            reference: s as f64 - 0.3,
            teacher: Some(s as f64 + if k % 3 == 0 { 0.4 } else { -0.2 }),
            advantage: if targets[k].seq == 0 { 1.3 } else { -0.7 },
        })
        .collect();
    // The op's entropy equals the entropy of the softmax of the full logits.
    let both = m.target_logprobs_entropy(&batch, Some(&vars), &targets).unwrap().to_vec2::<f32>().unwrap();
    let logits = m.logits_at(&batch, Some(&vars), &targets.iter().map(|t| (t.seq, t.pos)).collect::<Vec<_>>()).unwrap().to_vec2::<f32>().unwrap();
    for (row, got) in logits.iter().zip(&both) {
        let max = row.iter().cloned().fold(f32::MIN, f32::max) as f64;
        let z: f64 = row.iter().map(|&x| (x as f64 - max).exp()).sum();
        let h: f64 = -row
            .iter()
            .map(|&x| {
                let lp = x as f64 - max - z.ln();
                lp.exp() * lp
            })
            .sum::<f64>();
        assert!((h - got[1] as f64).abs() < 1e-4, "entropy {} vs {h}", got[1]);
    }
    let gates: Vec<f64> = consts.iter().zip(&s0).map(|(x, &s)| 1.0 / (1.0 + (-5.0 * (x.teacher.unwrap() - s as f64)).exp())).collect();
    let terms = [
        ("policy gradient", RlCoefs { kl_coef: 0.0, entropy_coef: 0.0, sdar_lambda: 0.0, ..RlCoefs::default() }),
        ("kl", RlCoefs { kl_coef: 1.0, entropy_coef: 0.0, sdar_lambda: 0.0, clip_eps: 0.2, sdar_beta: 5.0 }),
        ("entropy", RlCoefs { kl_coef: 0.0, entropy_coef: 1.0, sdar_lambda: 0.0, clip_eps: 0.2, sdar_beta: 5.0 }),
        ("sdar", RlCoefs { kl_coef: 0.0, entropy_coef: 0.0, sdar_lambda: 1.0, clip_eps: 0.2, sdar_beta: 5.0 }),
    ];
    for (name, c) in terms {
        let consts: Vec<TokenInputs> =
            if name == "policy gradient" { consts.clone() } else { consts.iter().map(|x| TokenInputs { advantage: 0.0, ..*x }).collect() };
        let consts: Vec<TokenInputs> = if name == "sdar" { consts } else { consts.iter().map(|x| TokenInputs { teacher: None, ..*x }).collect() };
        let (_, surrogate) = batch_loss(&m, &vars, &batch, &targets, &consts, &c, &gates);
        let grads = surrogate.backward().unwrap();
        let (va, vb) = &vars.layers[1][&Proj::Up];
        let mut checked = 0;
        for var in [va, vb] {
            let g = grads.get(var.as_tensor()).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let base = var.as_tensor().flatten_all().unwrap().to_vec1::<f32>().unwrap();
            // The elements with the largest gradients, where f32 finite differences are meaningful.
            let mut idx: Vec<usize> = (0..g.len()).collect();
            idx.sort_by(|&i, &j| g[j].abs().total_cmp(&g[i].abs()));
            for &i in &idx[..3] {
                let eps = 2e-3f32;
                let eval = |d: f32| {
                    let mut v = base.clone();
                    v[i] += d;
                    var.set(&Tensor::from_vec(v, var.as_tensor().shape(), m.device()).unwrap()).unwrap();
                    batch_loss(&m, &vars, &batch, &targets, &consts, &c, &gates).0
                };
                let fd = (eval(eps) - eval(-eps)) / (2.0 * eps as f64);
                var.set(&Tensor::from_vec(base.clone(), var.as_tensor().shape(), m.device()).unwrap()).unwrap();
                let rel = (fd - g[i] as f64).abs() / fd.abs().max(1e-3);
                assert!(rel < 0.03, "{name}: autograd {} vs finite difference {fd} (rel {rel:.4})", g[i]);
                checked += 1;
            }
        }
        assert_eq!(checked, 6);
    }
}

#[test]
fn flat_groups_give_no_gradient_and_are_counted() {
    let m = model();
    let varied = vec![episode("a#0", "a", &[5, 6], &[40, 41], 10.0), episode("a#1", "a", &[5, 6], &[90, 91], 0.0)];
    let mut with_flat = varied.clone();
    with_flat.extend([episode("b#0", "b", &[15, 16], &[140, 141], 10.0), episode("b#1", "b", &[15, 16], &[190, 191, 192], 10.0)]);
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = train_rl(&m, adapter(&m), &varied, &params(d1.path(), Objective::Grpo), &mut |_| {}).unwrap();
    let b = train_rl(&m, adapter(&m), &with_flat, &params(d2.path(), Objective::Grpo), &mut |_| {}).unwrap();
    assert_eq!((b.groups, b.zero_variance_groups, b.episodes_used), (2, 1, 2));
    assert_eq!(a.adapter, b.adapter, "the flat group changed the update");
    // All groups flat: nothing to learn, the adapter is written unchanged.
    let d3 = tempfile::tempdir().unwrap();
    let start = adapter(&m);
    let c = train_rl(&m, start.clone(), &with_flat[2..], &params(d3.path(), Objective::Grpo), &mut |_| {}).unwrap();
    assert_eq!((c.steps, c.finished), (0, true));
    assert_eq!(c.adapter, start);
}

#[test]
fn the_kl_to_the_base_is_zero_before_the_first_update_and_grows_after() {
    let m = model();
    let rows = random_groups(4, 3, 2);
    let dir = tempfile::tempdir().unwrap();
    let mut steps = Vec::new();
    train_rl(&m, adapter(&m), &rows, &params(dir.path(), Objective::Sdar), &mut |s: &RlStepMetrics| steps.push(s.clone())).unwrap();
    assert_eq!(steps.len(), 2);
    assert_eq!(steps[0].kl, 0.0, "a fresh adapter is the base model");
    assert_eq!(steps[0].clip_fraction, 0.0, "ratio 1 before any update");
    assert!(steps[1].kl > 0.0 && steps[1].kl.is_finite());
    assert_eq!(steps[0].kl_max, 0.0);
    assert!(steps[1].kl_max > steps[1].kl, "the largest token's KL is above the step's mean unless all are equal");
    assert!(steps[0].entropy > 0.0 && steps[0].gate_mean.is_some());
}

#[test]
fn one_sample_per_task_is_refused() {
    let m = model();
    let rows = vec![episode("a#0", "a", &[5], &[40, 41], 10.0), episode("b#0", "b", &[5], &[90], 0.0)];
    let dir = tempfile::tempdir().unwrap();
    let e = train_rl(&m, adapter(&m), &rows, &params(dir.path(), Objective::Grpo), &mut |_| {}).unwrap_err().to_string();
    assert!(e.contains("task `a`") && e.contains("at least 2 samples"), "{e}");
}

#[test]
fn a_killed_rl_run_resumes_exactly() {
    let m = model();
    let rows = random_groups(6, 3, 4);
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let p1 = {
        let p = params(d1.path(), Objective::Sdar);
        RlParams { optim: OptimParams { epochs: 2, save_every: 1, ..p.optim }, ..p }
    };
    let mut epochs = Vec::new();
    let straight = train_rl(&m, adapter(&m), &rows, &p1, &mut |s| epochs.push(s.epoch)).unwrap();
    assert_eq!(epochs, [0, 0, 0, 1, 1, 1], "each step is logged with the epoch its batch came from");
    let p2 = RlParams { out_dir: d2.path().to_path_buf(), resume: true, ..p1.clone() };
    let part = train_rl(&m, adapter(&m), &rows, &RlParams { stop_after: Some(3), ..p2.clone() }, &mut |_| {}).unwrap();
    assert!(!part.finished && part.steps == 3);
    let resumed = train_rl(&m, adapter(&m), &rows, &p2, &mut |_| {}).unwrap();
    assert!(resumed.finished && resumed.steps == straight.steps && straight.steps == 6);
    assert_eq!(resumed.adapter, straight.adapter);
    let read = |d: &Path| std::fs::read(d.join("adapter").join("adapter_model.safetensors")).unwrap();
    assert_eq!(read(d1.path()), read(d2.path()), "adapter files byte-identical");
    let metrics = |d: &Path| std::fs::read_to_string(d.join("metrics.jsonl")).unwrap().lines().count();
    assert_eq!(metrics(d2.path()), 6);
}

#[test]
fn packing_a_groups_shared_prompt_computes_the_same_numbers() {
    let m = model();
    let mut rng = ChaCha8Rng::seed_from_u64(12);
    let mut a = adapter(&m);
    for l in &mut a.layers {
        for pair in l.values_mut() {
            pair.b.iter_mut().for_each(|x| *x = rng.random_range(-0.2..0.2));
        }
    }
    let vars = LoraVars::from_adapter(&a, m.device()).unwrap();
    let prompt: Vec<u32> = (0..40).map(|_| rng.random_range(0..300)).collect();
    let seqs: Vec<Vec<u32>> = (0..3)
        .map(|k| {
            let mut s = prompt.clone();
            s.extend((0..10 + 7 * k).map(|_| rng.random_range(0..300)));
            s
        })
        .collect();
    let refs: Vec<&[u32]> = seqs.iter().map(|s| s.as_slice()).collect();
    let masks: Vec<Vec<u8>> = seqs.iter().map(|s| (0..s.len()).map(|i| u8::from(i >= 38)).collect()).collect();
    let plain_targets = next_token_targets(&refs.iter().zip(&masks).map(|(s, m)| (*s, m.as_slice())).collect::<Vec<_>>());
    let (packed, starts) = Batch::packed(&refs, prompt.len()).unwrap();
    assert_eq!(packed.t, 40 + 10 + 17 + 24);
    let packed_targets: Vec<Target> =
        plain_targets.iter().map(|t| Target { seq: 0, pos: if t.pos < 40 { t.pos } else { starts[t.seq] + t.pos - 40 }, target: t.target }).collect();
    let run = |batch: &Batch, targets: &[Target]| {
        let out = m.target_logprobs_entropy(batch, Some(&vars), targets).unwrap();
        let vals = out.to_vec2::<f32>().unwrap();
        let grads = out.sum_all().unwrap().backward().unwrap();
        let (va, _) = &vars.layers[0][&Proj::K];
        (vals, grads.get(va.as_tensor()).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap())
    };
    let (v1, g1) = run(&Batch::new(&refs), &plain_targets);
    let (v2, g2) = run(&packed, &packed_targets);
    for (a, b) in v1.iter().flatten().zip(v2.iter().flatten()) {
        assert!((a - b).abs() < 1e-4, "{a} vs {b}");
    }
    let scale = g1.iter().fold(0f32, |m, x| m.max(x.abs()));
    for (a, b) in g1.iter().zip(&g2) {
        assert!((a - b).abs() < 1e-4 * scale.max(1.0), "gradient {a} vs {b}");
    }
    // The trainer gives the same model either way.
    let rows = random_groups(3, 4, 6);
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let p = params(d1.path(), Objective::Sdar);
    let x = train_rl(&m, adapter(&m), &rows, &p, &mut |_| {}).unwrap();
    let y = train_rl(&m, adapter(&m), &rows, &RlParams { shared_prefix: false, out_dir: d2.path().to_path_buf(), ..p }, &mut |_| {}).unwrap();
    let (lx, ly) = (episode_logprobs(&m, &x.adapter, &rows), episode_logprobs(&m, &y.adapter, &rows));
    for (a, b) in lx.iter().zip(&ly) {
        assert!((a - b).abs() < 1e-3 * a.abs().max(1.0), "{a} vs {b}");
    }
}

#[test]
fn the_trainer_scores_at_the_sampling_temperature() {
    let mut m = model();
    let ids: Vec<u32> = (0..12).map(|i| (i * 37 % 300) as u32).collect();
    let targets = next_token_targets(&[(&ids, &[1u8; 12][..])]);
    let batch = Batch::new(&[&ids]);
    let logits = m.logits_at(&batch, None, &targets.iter().map(|t| (t.seq, t.pos)).collect::<Vec<_>>()).unwrap().to_vec2::<f32>().unwrap();
    m.set_temperature(0.5).unwrap();
    let got = m.target_logprobs(&batch, None, None, &targets).unwrap().to_vec1::<f32>().unwrap();
    for ((row, t), g) in logits.iter().zip(&targets).zip(&got) {
        let z: Vec<f64> = row.iter().map(|&x| x as f64 / 0.5).collect();
        let max = z.iter().cloned().fold(f64::MIN, f64::max);
        let lse = max + z.iter().map(|v| (v - max).exp()).sum::<f64>().ln();
        assert!((z[t.target as usize] - lse - *g as f64).abs() < 1e-3, "{g} vs {}", z[t.target as usize] - lse);
    }
    assert!(m.set_temperature(0.0).is_err());
}
