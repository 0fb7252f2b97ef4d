//! `autodidact loop` end to end on the real default model, CI-sized (one round, a few arithmetic tasks): every
//! artefact exists and agrees with the others, and a run killed in the middle of its rollouts and rerun ends
//! with the same data, adapter and evaluation as an uninterrupted one.
use super::common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::Value;

fn config(dir: &Path, name: &str, samples: u32) -> PathBuf {
    config_with(dir, name, samples, "")
}

/// `eval_extra`: more lines for the `[eval]` table, which may name other tables after them.
fn config_with(dir: &Path, name: &str, samples: u32, eval_extra: &str) -> PathBuf {
    let body = format!(
        r#"train_per = 8
dev_per = 3
test_per = 3
test_files = ["{test_file}"]
[rollout]
samples = {samples}
max_active = 16
[eval]
samples = 2
pass_k = [1, 2]
without_fewshot = false
{eval_extra}
[train]
epochs = 2
batch_size = 2
save_every = 1
"#,
        test_file = test_file(dir).display(),
    );
    write_config(dir, name, &body)
}

/// A one-round config on the default model's arithmetic at difficulty 1; `body` continues its `[tasks]` table.
fn write_config(dir: &Path, name: &str, body: &str) -> PathBuf {
    let text = format!(
        "name = \"{name}\"\nruns_dir = \"{runs}\"\nmodel = \"{model}\"\nrounds = 1\n[tasks]\nsuites = [\"arithmetic\"]\ndifficulties = [1]\n{body}",
        runs = dir.join("runs").display(),
        model = common::default_model().display(),
    );
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, text).unwrap();
    path
}

/// Two hand-written test tasks beside the generated ones: the loop runs task files and reports them apart.
fn test_file(dir: &Path) -> PathBuf {
    let path = dir.join("mine.test.jsonl");
    let task = |id: &str, q: &str, a: &str| {
        format!(
            r#"{{"id": "{id}", "suite": "qa", "split": "test", "difficulty": 1, "instruction": "{q}", "tools": ["calculator"], "expected": {{"kind": "answer", "answer": "{a}", "matcher": {{"type": "number"}}}}, "max_turns": 4}}"#
        )
    };
    std::fs::write(&path, [task("mine-1", "What is 17 times 23?", "391"), task("mine-2", "What is 1000 minus 387?", "613")].join("\n")).unwrap();
    path
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to.join(e.file_name()));
        } else {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

fn run(cfg: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_autodidact")).args(["loop", "--config", cfg.to_str().unwrap(), "--json"]).output().unwrap()
}

fn lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

fn json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))).unwrap()
}

/// Trajectories by (task, sample) without their timings, which differ between runs.
fn episodes(path: &Path) -> BTreeMap<(String, u64), Value> {
    lines(path)
        .into_iter()
        .map(|mut t| {
            t.as_object_mut().unwrap().remove("wall_ms");
            ((t["task_id"].as_str().unwrap().to_string(), t["sample_index"].as_u64().unwrap()), t)
        })
        .collect()
}

fn check_artefacts(run: &Path) {
    let r0 = json(&run.join("round-000/round.json"));
    let r1 = json(&run.join("round-001/round.json"));
    assert_eq!(r0["test"], json(&run.join("round-000/eval/eval.json")));
    assert_eq!(r1["test"], json(&run.join("round-001/eval/eval.json")));
    assert_eq!(lines(&run.join("round-000/eval/trajectories.jsonl")).len(), (3 + 2) * 2, "generated and file test tasks");
    assert_eq!(r1["dev"], json(&run.join("round-001/eval-dev/eval.json")));
    let dev = lines(&run.join("round-000/eval-dev/trajectories.jsonl"));
    assert_eq!(dev.len(), 3 * 2);
    assert!(dev.iter().all(|t| t["split"] == "dev"));
    // The gate compares dev success; the file's test results are reported apart.
    let dev_rate = r1["dev"]["rows"].as_array().unwrap().iter().find(|r| r["suite"] == "all").unwrap()["success_rate"].clone();
    assert_eq!(r1["gate"]["success"], dev_rate);
    let file = r1["sources"].as_array().unwrap().iter().find(|s| s["source"].as_str().unwrap().ends_with("mine.test.jsonl")).unwrap();
    assert_eq!((file["split"].as_str(), file["episodes"].as_u64()), (Some("test"), Some(4)));
    let trajs = lines(&run.join("round-001/rollout/trajectories.jsonl"));
    assert_eq!(r1["rollout"]["episodes"], trajs.len());
    assert_eq!(r1["rollout"]["successes"], trajs.iter().filter(|t| t["verdict"]["success"] == true).count());
    let report = json(&run.join("round-001/filter/filter_report.json"));
    let rows = lines(&run.join("round-001/filter/dataset.jsonl"));
    assert_eq!(report["total"]["kept"], rows.len());
    assert_eq!(r1["filter"]["kept"], rows.len());
    assert!(!rows.is_empty(), "the fixed seeds keep some episodes; without them the round trains nothing");
    let steps = lines(&run.join("round-001/train/metrics.jsonl"));
    assert_eq!(r1["train"]["steps"], steps.len());
    assert!(steps.len() >= 2, "two epochs");
    let curves = std::fs::read_to_string(run.join("round-001/train/loss.svg")).unwrap();
    assert_eq!(curves.matches("<circle").count(), 3 * steps.len(), "loss, gradient norm and lr at every step");
    assert!(run.join("round-001/train/adapter/adapter_model.safetensors").is_file());
    assert_eq!(r1["gate"]["promoted"].as_bool().unwrap(), r1["adapter"] == "round-001/train/adapter");
    let metrics = lines(&run.join("metrics.jsonl"));
    assert_eq!(metrics.iter().filter(|m| m["event"] == "round").count(), 2);
    assert_eq!(metrics.iter().filter(|m| m["event"] == "train_step").count(), steps.len());
    // TensorBoard: each round's figures (pass@k and the task file's success among them) and each training step, the
    // numbers of the JSONL files, each once.
    let rounds: Vec<Value> = metrics.iter().filter(|m| m["event"] == "round").cloned().collect();
    assert!(rounds[1]["test_pass_at_k"]["2"].is_number() && rounds[1]["test_success_by_source"].as_object().unwrap().len() == 2, "{}", rounds[1]);
    assert_eq!(common::assert_events_match(&rounds, &run.join("tensorboard/rounds"), "round", "round", &["event", "round"]), 2);
    assert_eq!(common::assert_events_match(&steps, &run.join("tensorboard/round-001/train"), "step", "train", &["step"]), steps.len());
    let md = std::fs::read_to_string(run.join("report.md")).unwrap();
    assert!(md.contains("| 0 | base |") && md.contains("| 1 | ") && md.contains("mine.test.jsonl") && md.contains("Dev split: 3 generated tasks"), "{md}");
    let svg = std::fs::read_to_string(run.join("curves.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.matches("<polyline").count() >= 2);
}

#[test]
fn loop_runs_end_to_end_and_resumes_after_a_kill() {
    // TensorBoard's reader is installed meanwhile.
    let tensorboard = std::thread::spawn(common::tensorboard_python);
    let dir = tempfile::tempdir().unwrap();
    let straight = config(dir.path(), "straight", 4);
    let o = run(&straight);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let records: Vec<Value> = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(records.len(), 2);
    let a = dir.path().join("runs/straight");
    check_artefacts(&a);

    // `autodidact train` runs the loop's SFT job: on the round's dataset with the round's seed (the config's 0 +
    // round 1) and the config's settings (the rest are the shared defaults), the same adapter to the byte.
    let out = dir.path().join("cli-train");
    let o = Command::new(env!("CARGO_BIN_EXE_autodidact"))
        .args(["train", "--model", common::default_model().to_str().unwrap(), "--data", a.join("round-001/filter/dataset.jsonl").to_str().unwrap()])
        .args(["--out", out.to_str().unwrap(), "--seed", "1", "--epochs", "2", "--batch-size", "2", "--json"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let weights = "adapter/adapter_model.safetensors";
    assert_eq!(
        std::fs::read(out.join(weights)).unwrap(),
        std::fs::read(a.join("round-001/train").join(weights)).unwrap(),
        "the CLI's adapter differs from the loop's"
    );
    assert_eq!(std::fs::read(out.join("loss.svg")).unwrap(), std::fs::read(a.join("round-001/train/loss.svg")).unwrap());
    tensorboard.join().unwrap();
    let checked = common::tensorboard_check(&[&a, &out]);
    assert_eq!(checked.lines().filter(|l| l.starts_with("ok ")).count(), 3, "{checked}");

    // The same experiment under another name, killed once its round-1 rollouts have started, then rerun. Its
    // round 0 (the base model's evaluation, the same for both) is copied, as scripts/dev/compare-rl.sh does.
    let resumed = config(dir.path(), "resumed", 4);
    let b = dir.path().join("runs/resumed");
    copy_dir(&a.join("round-000"), &b.join("round-000"));
    let mut child = Command::new(env!("CARGO_BIN_EXE_autodidact")).args(["loop", "--config", resumed.to_str().unwrap(), "--json"]).spawn().unwrap();
    let partial = b.join("round-001/rollout/trajectories.jsonl");
    let t0 = Instant::now();
    while std::fs::read_to_string(&partial).map_or(0, |s| s.lines().count()) < 3 {
        assert!(t0.elapsed() < Duration::from_secs(600), "no rollout progress");
        assert!(child.try_wait().unwrap().is_none(), "the run ended before it could be killed");
        std::thread::sleep(Duration::from_millis(100));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let before_kill = episodes(&partial);
    let round0 = std::fs::read(b.join("round-000/round.json")).unwrap();
    assert!(!b.join("round-001/round.json").exists());
    let o = run(&resumed);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    check_artefacts(&b);
    assert_eq!(std::fs::read(b.join("round-000/round.json")).unwrap(), round0, "round 0 was redone");
    let after = episodes(&partial);
    for (k, v) in &before_kill {
        assert_eq!(after.get(k), Some(v), "episode {k:?} written before the kill changed");
    }
    // Rollouts depend on (task, sample) only, so the resumed run saw the same episodes, kept the same data and
    // trained the same adapter.
    assert_eq!(after, episodes(&a.join("round-001/rollout/trajectories.jsonl")));
    for f in ["round-001/filter/dataset.jsonl", "round-001/train/adapter/adapter_model.safetensors", "round-001/train/loss.svg", "round-001/eval/eval.json"] {
        assert_eq!(std::fs::read(a.join(f)).unwrap(), std::fs::read(b.join(f)).unwrap(), "{f} differs");
    }

    // Rerunning a finished run changes nothing; rerunning it with other settings is refused, naming them.
    let rep = std::fs::read(b.join("report.md")).unwrap();
    assert!(run(&resumed).status.success());
    assert_eq!(std::fs::read(b.join("report.md")).unwrap(), rep);
    let changed = config(dir.path(), "resumed", 5);
    let o = run(&changed);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("rollout.samples") && err.contains("another config"), "{err}");

    // Without the dev split (gate off), from the same round 0 and the same trained adapter (copied, with the
    // round's rollout and data, as a resumed run would find them): no dev episodes are sampled, and the test
    // split's episodes are the same, to the byte.
    let nodev = config_with(dir.path(), "nodev", 4, "dev = false\n[gate]\nenabled = false");
    let c = dir.path().join("runs/nodev");
    copy_dir(&a.join("round-000"), &c.join("round-000"));
    for stage in ["rollout", "filter", "train"] {
        copy_dir(&a.join("round-001").join(stage), &c.join("round-001").join(stage));
    }
    let o = run(&nodev);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(!c.join("round-001/eval-dev").exists(), "dev was evaluated");
    assert_eq!(episodes(&a.join("round-001/eval/trajectories.jsonl")), episodes(&c.join("round-001/eval/trajectories.jsonl")));
    assert_eq!(std::fs::read(a.join("round-001/eval/eval.json")).unwrap(), std::fs::read(c.join("round-001/eval/eval.json")).unwrap());
    let r1 = json(&c.join("round-001/round.json"));
    assert!(r1["dev"].is_null() && r1["gate"]["success"].is_null() && r1["gate"]["promoted"] == true, "{r1}");
    assert_eq!(r1["adapter"], "round-001/train/adapter");
    let md = std::fs::read_to_string(c.join("report.md")).unwrap();
    assert!(md.contains("Dev split not evaluated") && md.contains("round (1, the last kept: dev not evaluated)"), "{md}");
}

/// `rl.then_sft`: a GRPO update, then the filtered loop's training on the same round's kept successes, starting
/// from the RL adapter; the round's model is that second adapter. A filtered loop on the very same rollout (copied)
/// keeps the same data, and trains the same adapter exactly when the RL update had no signal.
#[test]
fn an_rl_round_can_continue_with_the_filtered_loops_training() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = |name: &str, objective: &str| {
        let body = format!(
            r#"train_per = 3
dev_per = 1
test_per = 1
[rollout]
samples = 4
temperature = 0.5
top_p = 1.0
[eval]
samples = 1
pass_k = [1]
dev = false
without_fewshot = false
[train]
objective = "{objective}"
epochs = 2
batch_size = 2
[rl]
then_sft = {then}
[gate]
enabled = false
"#,
            then = objective != "sft",
        );
        write_config(dir.path(), name, &body)
    };
    let o = run(&cfg("hybrid", "grpo"));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let h = dir.path().join("runs/hybrid");
    let r1 = json(&h.join("round-001/round.json"));
    let rl_steps = lines(&h.join("round-001/train/metrics.jsonl")).len();
    assert_eq!(r1["train"]["steps"], rl_steps);
    assert_eq!(r1["train"]["rl"]["objective"], "grpo");
    let kept = lines(&h.join("round-001/filter/dataset.jsonl")).len();
    assert_eq!(r1["filter"]["kept"], kept);
    assert!(kept > 0, "the fixed seeds solve some arithmetic; without a success there is nothing to check");
    assert_eq!(r1["sft"]["steps"], lines(&h.join("round-001/train-sft/metrics.jsonl")).len());
    assert_eq!(r1["adapter"], "round-001/train-sft/adapter");
    let md = std::fs::read_to_string(h.join("report.md")).unwrap();
    assert!(md.contains("after the RL update"), "{md}");
    let metrics = lines(&h.join("metrics.jsonl"));
    assert_eq!(metrics.iter().filter(|m| m["event"] == "train_step").count(), rl_steps);
    assert_eq!(metrics.iter().filter(|m| m["event"] == "sft_step").count(), r1["sft"]["steps"].as_u64().unwrap() as usize);

    // Plain SFT on the same rollout: the same kept data; an adapter that differs by the RL update's start.
    let f = dir.path().join("runs/filtered");
    for stage in ["round-000", "round-001/rollout"] {
        copy_dir(&h.join(stage), &f.join(stage));
    }
    let o = run(&cfg("filtered", "sft"));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let file = |run: &Path, p: &str| std::fs::read(run.join(p)).unwrap();
    assert_eq!(file(&h, "round-001/filter/dataset.jsonl"), file(&f, "round-001/filter/dataset.jsonl"));
    let same = file(&h, "round-001/train-sft/adapter/adapter_model.safetensors") == file(&f, "round-001/train/adapter/adapter_model.safetensors");
    assert_eq!(same, rl_steps == 0, "{rl_steps} RL steps: the SFT started from the wrong adapter");
}
