//! The SFT recipe on the tiny model: loss falls, only masked tokens count, exact resume, clear failures.
use std::path::Path;

use super::common;

use autodidact::model::lora::{LoraAdapter, LoraConfig, Proj};
use autodidact::train::tiny::{tiny_config, tiny_weights};
use autodidact::train::{train_sft, OptimParams, SftParams, StepMetrics, TrainError, TrainModel, TrainRow};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn model() -> TrainModel {
    let cfg = tiny_config();
    TrainModel::new(&cfg, &tiny_weights(&cfg, 1)).unwrap()
}

fn fresh_adapter(m: &TrainModel, dropout: f32) -> LoraAdapter {
    LoraAdapter::new(LoraConfig { r: 4, alpha: 8.0, dropout, targets: Proj::ALL.to_vec(), base_model: "tiny".into() }, &m.cfg, 11).unwrap()
}

/// Rows of varying length; the first quarter of each row is "prompt" (mask 0).
fn rows(n: usize, seed: u64) -> Vec<TrainRow> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..n)
        .map(|i| {
            let len = rng.random_range(6..24);
            let ids: Vec<u32> = (0..len).map(|_| rng.random_range(0..300)).collect();
            let mask = (0..len).map(|j| u8::from(j >= len / 4)).collect();
            TrainRow { id: Some(format!("r{i}")), token_ids: ids, loss_mask: mask }
        })
        .collect()
}

fn params(out: &Path) -> SftParams {
    let optim = OptimParams {
        lr: 3e-3,
        warmup: 2,
        min_lr_ratio: 0.0,
        epochs: 1,
        batch_size: 3,
        grad_accum: 2,
        max_grad_norm: 1.0,
        seed: 5,
        save_every: 0,
        ..OptimParams::SFT
    };
    SftParams { max_steps: Some(8), ..SftParams::new(optim, 64, out.to_path_buf()) }
}

fn flat(a: &LoraAdapter) -> Vec<f32> {
    a.peft_tensors().into_iter().flat_map(|(_, _, v)| v.to_vec()).collect()
}

#[test]
fn loss_falls_on_a_few_rows() {
    let m = model();
    let data = rows(4, 1);
    let dir = tempfile::tempdir().unwrap();
    let p = {
        let p = params(dir.path());
        SftParams { max_steps: Some(30), optim: OptimParams { lr: 1e-2, batch_size: 4, grad_accum: 1, warmup: 3, ..p.optim }, ..p }
    };
    let mut losses = Vec::new();
    let out = train_sft(&m, fresh_adapter(&m, 0.0), &data, &p, &mut |s: &StepMetrics| losses.push(s.loss)).unwrap();
    assert_eq!(out.steps, 30);
    assert!(out.finished);
    let (first, last) = (losses[0], *losses.last().unwrap());
    eprintln!("loss {first:.3} -> {last:.3}");
    assert!(last < 0.5 * first, "loss did not fall: {first} -> {last}");
    // The final adapter is written and loads back equal.
    let back = LoraAdapter::load(&out.adapter_dir, &m.cfg, Some("tiny")).unwrap();
    assert_eq!(back, out.adapter);
    // metrics.jsonl has one parseable line per step with the documented fields.
    let text = std::fs::read_to_string(dir.path().join("metrics.jsonl")).unwrap();
    let lines: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 30);
    for k in ["step", "loss", "lr", "grad_norm", "tokens_per_s", "trained_tokens", "step_tokens"] {
        assert!(lines[0].get(k).is_some(), "missing {k}");
    }
    assert_eq!(lines[29]["step"], 30);
    let trained: usize = data.iter().map(|r| r.trained_tokens()).sum();
    assert_eq!(lines[0]["step_tokens"], trained);
}

#[test]
fn tokens_outside_the_mask_do_not_matter_as_targets() {
    let m = model();
    let data = rows(5, 2);
    // Append an untrained tail to every row, then change its tokens: they are targets outside the mask and,
    // being last, context for no trained token, so neither the loss nor the update may change.
    let mut tail_changed = data.clone();
    for r in tail_changed.iter_mut() {
        r.token_ids.extend([7, 8, 9]);
        r.loss_mask.extend([0, 0, 0]);
    }
    let mut tail_other = tail_changed.clone();
    for r in tail_other.iter_mut() {
        let n = r.token_ids.len();
        r.token_ids[n - 3..].copy_from_slice(&[100, 200, 250]);
    }
    let run = |d: &[TrainRow], name: &str| {
        let dir = tempfile::tempdir().unwrap();
        let p = SftParams { max_steps: Some(3), ..params(&dir.path().join(name)) };
        let mut losses = Vec::new();
        let o = train_sft(&m, fresh_adapter(&m, 0.0), d, &p, &mut |s: &StepMetrics| losses.push(s.loss)).unwrap();
        (losses, flat(&o.adapter))
    };
    let (la, aa) = run(&tail_changed, "a");
    let (lb, ab) = run(&tail_other, "b");
    assert_eq!(la, lb, "untrained target tokens changed the loss");
    assert_eq!(aa, ab, "untrained target tokens changed the update");
    // Control: flipping the mask on for that tail does change the loss.
    let mut masked_in = tail_other.clone();
    for r in masked_in.iter_mut() {
        let n = r.loss_mask.len();
        r.loss_mask[n - 3..].fill(1);
    }
    let (lc, _) = run(&masked_in, "c");
    assert_ne!(lb, lc);
}

#[test]
fn resume_is_bit_identical() {
    let m = model();
    let data = rows(13, 3);
    let straight = tempfile::tempdir().unwrap();
    let resumed = tempfile::tempdir().unwrap();
    // Dropout on, several epochs (batch order reshuffled per epoch), accumulation, clipping, warmup + cosine.
    let p = |dir: &Path| {
        let p = params(dir);
        SftParams { max_steps: None, optim: OptimParams { epochs: 3, save_every: 2, ..p.optim }, ..p }
    };
    let a = fresh_adapter(&m, 0.1);
    let mut straight_losses = Vec::new();
    let full = train_sft(&m, a.clone(), &data, &p(straight.path()), &mut |s: &StepMetrics| straight_losses.push(s.loss)).unwrap();
    assert!(full.finished);
    let total = full.steps;
    assert_eq!(total, (3 * 13usize.div_ceil(3)).div_ceil(2));
    let half = total / 2 + 1; // odd stop, not on a save_every boundary
    let first = train_sft(&m, a.clone(), &data, &SftParams { stop_after: Some(half), ..p(resumed.path()) }, &mut |_: &StepMetrics| {}).unwrap();
    assert_eq!(first.steps, half);
    assert!(!first.finished);
    // A step logged after the last checkpoint, as a kill before the next one leaves it: the resumed run redoes it.
    let orphan = serde_json::json!({"step": half + 1, "loss": 99.0});
    let metrics = resumed.path().join("metrics.jsonl");
    std::fs::write(&metrics, format!("{}{orphan}\n", std::fs::read_to_string(&metrics).unwrap())).unwrap();
    let mut w = autodidact::tfevents::EventWriter::append_to_newest(&resumed.path().join("tensorboard")).unwrap();
    w.write(&autodidact::tfevents::Event::scalars(half as i64 + 1, vec![("train/loss".into(), 99.0)])).unwrap();
    // Resuming with another initial adapter must not matter: the checkpoint wins.
    let mut resumed_losses = Vec::new();
    let rest =
        train_sft(&m, fresh_adapter(&m, 0.1), &data, &SftParams { resume: true, ..p(resumed.path()) }, &mut |s: &StepMetrics| resumed_losses.push(s.loss))
            .unwrap();
    assert_eq!(rest.steps, total);
    assert_eq!(resumed_losses, straight_losses[half..].to_vec());
    assert_eq!(flat(&rest.adapter), flat(&full.adapter), "resumed adapter differs");
    // The metrics file of the resumed run has each step once.
    let text = std::fs::read_to_string(resumed.path().join("metrics.jsonl")).unwrap();
    let steps: Vec<u64> = text.lines().map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["step"].as_u64().unwrap()).collect();
    assert_eq!(steps, (1..=total as u64).collect::<Vec<_>>());
    // So do its TensorBoard events (the orphan dropped): the steps before the stop in one file, the resumed ones in a
    // later one.
    let tb = resumed.path().join("tensorboard");
    assert_eq!(common::assert_events_match(&common::jsonl(&resumed.path().join("metrics.jsonl")), &tb, "step", "train", &["step"]), total);
    assert_eq!(autodidact::tfevents::event_files(&tb).unwrap().len(), 2);
}

#[test]
fn resume_with_changed_parameters_is_refused() {
    let m = model();
    let data = rows(6, 4);
    let dir = tempfile::tempdir().unwrap();
    train_sft(&m, fresh_adapter(&m, 0.0), &data, &SftParams { stop_after: Some(2), ..params(dir.path()) }, &mut |_: &StepMetrics| {}).unwrap();
    let e = train_sft(
        &m,
        fresh_adapter(&m, 0.0),
        &data,
        &{
            let p = params(dir.path());
            SftParams { resume: true, optim: OptimParams { lr: 1.0, ..p.optim }, ..p }
        },
        &mut |_: &StepMetrics| {},
    )
    .unwrap_err();
    assert!(matches!(e, TrainError::Checkpoint { .. }), "{e}");
    assert!(e.to_string().contains("different parameters"));
}

#[test]
fn non_finite_loss_stops_with_a_clear_error_and_keeps_the_checkpoint() {
    let m = model();
    let data = rows(6, 5);
    let dir = tempfile::tempdir().unwrap();
    train_sft(&m, fresh_adapter(&m, 0.0), &data, &SftParams { stop_after: Some(2), ..params(dir.path()) }, &mut |_: &StepMetrics| {}).unwrap();
    let ckpt = std::fs::read(dir.path().join("checkpoint/adapter_model.safetensors")).unwrap();
    // An adapter full of NaN (as after a diverged update) gives a NaN loss at the first step of a new run in
    // the same directory; the error names the kept checkpoint and nothing overwrites it.
    let mut bad = fresh_adapter(&m, 0.0);
    bad.layers[0].get_mut(&Proj::Q).unwrap().b.fill(f32::NAN);
    let e = train_sft(&m, bad, &data, &params(dir.path()), &mut |_: &StepMetrics| {}).unwrap_err();
    assert!(matches!(e, TrainError::NonFinite { step: 0, what: "loss", .. }), "{e}");
    let msg = e.to_string();
    assert!(msg.contains("not finite") && msg.contains("checkpoint"), "{msg}");
    assert_eq!(std::fs::read(dir.path().join("checkpoint/adapter_model.safetensors")).unwrap(), ckpt);
}

#[test]
fn bad_rows_are_rejected() {
    let m = model();
    let dir = tempfile::tempdir().unwrap();
    let mut data = rows(3, 6);
    data[1].loss_mask.pop();
    let e = train_sft(&m, fresh_adapter(&m, 0.0), &data, &params(dir.path()), &mut |_: &StepMetrics| {}).unwrap_err().to_string();
    assert!(e.contains("r1") && e.contains("mask values"), "{e}");
    let mut data = rows(3, 6);
    data[2].loss_mask.fill(0);
    let e = train_sft(&m, fresh_adapter(&m, 0.0), &data, &params(dir.path()), &mut |_: &StepMetrics| {}).unwrap_err().to_string();
    assert!(e.contains("r2") && e.contains("no trained token"), "{e}");
}
