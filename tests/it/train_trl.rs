//! The TRL backend's side of the contract, with a stand-in for `accelerate launch` (the real engine is checked by
//! scripts/dev/trl_compare.py, docs/testing.md): the job carries the rows' ids with labels from their loss masks
//! and the same step plan and learning rates as the in-process trainer; the launcher gets only its configured
//! environment; the adapter it writes comes back as the run's, and its losses as metrics.jsonl and TensorBoard.
use std::collections::BTreeMap;

use super::common;

use autodidact::data::dataset::DatasetRow;
use autodidact::model::lora::{LoraAdapter, LoraConfig, Proj};
use autodidact::pipeline::config::TrlConfig;
use autodidact::pipeline::jobs::{run_trl, TrlJob};
use autodidact::train::optim::lr_at;
use autodidact::train::{OptimParams, SftParams};

/// Stands in for accelerate + scripts/trl/sft.py: reports, as each step's "loss", the labelled tokens of the step's
/// micro-batches (counted from rows.jsonl and the plan), and its environment; returns the starting adapter.
const LAUNCHER: &str = r#"#!/usr/bin/env python3
import json, os, shutil, sys
assert sys.argv[1] == "launch" and sys.argv[2:4] == ["--num_processes", "1"], sys.argv
job = json.load(open(sys.argv[-1]))
rows = [json.loads(l) for l in open(job["rows"])]
batches, accum = job["micro_batches"], job["grad_accum"]
os.makedirs(job["out"])
with open(os.path.join(job["out"], "steps.jsonl"), "w") as f:
    for s in range(job["steps"]):
        micro = batches[s * accum:(s + 1) * accum]
        tokens = sum(sum(1 for l in rows[i]["labels"][1:] if l != -100) for b in micro for i in b)
        ids_ok = all(len(rows[i]["labels"]) == len(rows[i]["input_ids"]) for b in micro for i in b)
        f.write(json.dumps({"step": s + 1, "loss": tokens if ids_ok else -1, "grad_norm": job["lr"][s], "seconds": 0.5}) + "\n")
shutil.copytree(job["start_adapter"], os.path.join(job["out"], "adapter"))
# Python itself sets LC_CTYPE when started under the C locale (PEP 538).
json.dump(sorted(k for k in os.environ if k != "LC_CTYPE"), open(os.path.join(job["out"], "env.json"), "w"))
"#;

#[test]
fn a_round_goes_to_the_launcher_and_its_adapter_and_losses_come_back() {
    let dir = tempfile::tempdir().unwrap();
    let model_dir = dir.path().join("model");
    common::tiny::write_hf(&model_dir, "llama", 3);
    let model = autodidact::model::load_model(model_dir.to_str().unwrap()).unwrap();
    let launcher = dir.path().join("accelerate");
    std::fs::write(&launcher, LAUNCHER).unwrap();
    let mut perms = std::fs::metadata(&launcher).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
    std::fs::set_permissions(&launcher, perms).unwrap();
    let script = dir.path().join("sft.py");
    std::fs::write(&script, "").unwrap();

    let rows: Vec<DatasetRow> = (0..7u32)
        .map(|i| {
            let n = 6 + i as usize;
            let token_ids: Vec<u32> = (0..n as u32).map(|t| 40 + (t * 7 + i) % 50).collect();
            let loss_mask: Vec<u8> = (0..n).map(|t| u8::from(t >= 3 && t != n - 2)).collect();
            DatasetRow { id: format!("r{i}"), suite: "s".into(), difficulty: 1, messages: vec![], tools: vec![], token_ids, loss_mask }
        })
        .collect();
    let optim = OptimParams { epochs: 2, batch_size: 2, grad_accum: 2, warmup: 2, seed: 5, ..OptimParams::SFT };
    let out = dir.path().join("train");
    let params = SftParams::new(optim, 64, out.clone());
    let plan = params.plan(&rows.iter().map(|r| r.token_ids.len()).collect::<Vec<_>>());
    let shape = LoraConfig { r: 4, alpha: 8.0, dropout: 0.0, targets: vec![Proj::Q, Proj::V], base_model: model.base_name.clone() };
    let adapter = LoraAdapter::new(shape, model.config(), 9).unwrap();
    let env: BTreeMap<String, String> = [("ONLY_THIS".to_string(), "1".to_string())].into();
    let trl = TrlConfig { accelerate: launcher.display().to_string(), script, env, ..TrlConfig::default() };
    let steps = run_trl(TrlJob { model: &model, adapter: adapter.clone(), rows: &rows, params, trl: &trl, base: &model_dir, quiet: true }).unwrap();

    // Each step's "loss" is the launcher's count of labelled tokens: the masks and the plan arrived intact.
    assert_eq!(steps.len(), plan.len());
    assert_eq!(plan.len(), (2 * 7usize.div_ceil(2)).div_ceil(2));
    for (s, p) in steps.iter().zip(&plan) {
        let want: usize = p.micro.iter().flatten().map(|&i| rows[i].trained_tokens()).sum();
        assert_eq!((s.loss, s.step_tokens), (want as f64, want), "step {}", s.step);
        assert_eq!(s.grad_norm, lr_at(s.step - 1, plan.len(), 2, optim.lr, optim.min_lr_ratio), "the job's learning rate of step {}", s.step);
        assert_eq!(s.epoch, p.epoch);
    }
    let env: Vec<String> = serde_json::from_str(&std::fs::read_to_string(out.join("trl/result/env.json")).unwrap()).unwrap();
    assert_eq!(env, vec!["ONLY_THIS".to_string()], "the launcher saw more than its configured environment");
    let back = LoraAdapter::load(&out.join("adapter"), model.config(), Some(&model.base_name)).unwrap();
    assert_eq!(back, adapter);
    let lines = common::jsonl(&out.join("metrics.jsonl"));
    assert_eq!(lines.len(), steps.len());
    assert_eq!(common::assert_events_match(&lines, &out.join("tensorboard"), "step", "train", &["step"]), steps.len());
    assert!(out.join("loss.svg").is_file());

    // A launcher that fails names its log and quotes it.
    std::fs::write(&launcher, "#!/bin/sh\necho 'CUDA out of memory' >&2\nexit 3\n").unwrap();
    let params = SftParams::new(optim, 64, dir.path().join("failed"));
    let e = run_trl(TrlJob { model: &model, adapter, rows: &rows, params, trl: &trl, base: &model_dir, quiet: true }).unwrap_err();
    let msg = format!("{e:#}");
    assert!(msg.contains("log.txt") && msg.contains("CUDA out of memory"), "{msg}");
}
