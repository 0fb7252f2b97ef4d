//! The binary as users run it: results on stdout, JSON that parses, clear errors and exit codes.
use super::common;

use std::process::Command;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_autodidact"))
}

#[test]
fn generate_json_has_texts_ids_and_logprobs() {
    let model = common::default_model();
    let out = bin()
        .args(["generate", "--model", model.to_str().unwrap(), "--prompt", "What is 2+2?", "--temperature", "0", "--max-new-tokens", "16", "-n", "2", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let outs = v["outputs"].as_array().unwrap();
    assert_eq!(outs.len(), 2);
    assert_eq!(outs[0]["tokens"], outs[1]["tokens"], "greedy samples agree");
    assert_eq!(outs[0]["tokens"].as_array().unwrap().len(), outs[0]["logprobs"].as_array().unwrap().len());
    assert!(v["prompt_tokens"].as_u64().unwrap() > 5);
    assert!(String::from_utf8_lossy(&out.stderr).contains("tokens/s"));
}

#[test]
fn info_reports_the_architecture() {
    let model = common::default_model();
    let out = bin().args(["info", "--json", "--model", model.to_str().unwrap()]).output().unwrap();
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["config"]["arch"], "llama");
    assert_eq!(v["config"]["num_layers"], 30);
    assert_eq!(v["tokenizer"]["vocab_size"], 49152);
    assert!(v["chat_template"]["source"].as_str().unwrap().contains("<|im_start|>"));
    assert!(v["tensor_types"].as_array().unwrap().iter().any(|t| t["type"] == "Q4_1"));
}

#[test]
fn info_into_a_closed_pipe_exits_quietly() {
    // `autodidact info | head -8` in scripts: a reader that has gone is not a crash.
    let model = common::default_model();
    let mut child =
        bin().args(["info", "--model", model.to_str().unwrap()]).stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).spawn().unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && !err.contains("panicked"), "{:?}: {err}", out.status);
}

#[test]
fn bad_model_path_fails_with_a_message() {
    let out = bin().args(["generate", "--model", "no/such/model.gguf", "--prompt", "hi"]).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no/such/model.gguf") && err.starts_with("error:"), "{err}");
}

#[test]
fn chat_answers_on_stdin_and_exits() {
    use std::io::Write;
    let model = common::default_model();
    let mut child = bin()
        .args(["chat", "--model", model.to_str().unwrap(), "--temperature", "0", "--max-new-tokens", "24"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.as_mut().unwrap().write_all(b"What is the capital of France?\n/exit\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("Paris"));
}

#[test]
fn tasks_make_turns_question_answer_rows_into_task_files_that_load() {
    let dir = tempfile::tempdir().unwrap();
    let csv = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tasks/examples_qa.csv");
    let stem = dir.path().join("qa");
    let out = bin()
        .args(["tasks", "make", "--input", csv.to_str().unwrap(), "--out", stem.to_str().unwrap(), "--split", "auto", "--matcher", "number:0.01"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut total = 0;
    for (split, n) in [("train", 7), ("dev", 1), ("test", 2)] {
        let tasks = autodidact::tasks::taskfile::load_tasks(&dir.path().join(format!("qa.{split}.jsonl"))).unwrap();
        assert_eq!(tasks.len(), n, "{split}");
        assert!(tasks.iter().all(|t| t.split.as_str() == split && t.tool_names() == ["calculator"]));
        total += tasks.len();
    }
    assert_eq!(total, std::fs::read_to_string(&csv).unwrap().lines().count() - 1, "one task per row");

    // A user with a test set of their own draws train and dev alone.
    let own = dir.path().join("own");
    let args =
        ["tasks", "make", "--input", csv.to_str().unwrap(), "--out", own.to_str().unwrap(), "--split", "auto", "--test-fraction", "0", "--dev-fraction", "0.3"];
    let out = bin().args(args).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let n = |split: &str| autodidact::tasks::taskfile::load_tasks(&dir.path().join(format!("own.{split}.jsonl"))).unwrap().len();
    assert_eq!((n("train"), n("dev")), (7, 3));
    assert!(!dir.path().join("own.test.jsonl").exists(), "no test split with --test-fraction 0");

    let bad = dir.path().join("bad.jsonl");
    std::fs::write(&bad, "{\"question\": \"What is 2+2?\", \"answer\": \"4\"}\n{\"question\": \"And 3+3?\"}\n").unwrap();
    let target = dir.path().join("never.jsonl");
    let out = bin().args(["tasks", "make", "--input", bad.to_str().unwrap(), "--out", target.to_str().unwrap(), "--split", "train"]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("bad.jsonl:2") && err.contains("`answer`"), "{err}");
    assert!(!target.exists(), "nothing written on a bad row");
}

/// One writer per output: a second process on the same output is refused at once, naming the holder's pid; the
/// lock of a killed process does not block the rerun that resumes its work.
#[test]
fn a_second_writer_is_refused_and_a_killed_one_leaves_no_lock() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("eval");
    let model = common::default_model();
    let args = |out: &std::path::Path| -> Vec<String> {
        [
            "eval",
            "--model",
            model.to_str().unwrap(),
            "--suites",
            "arithmetic",
            "--difficulties",
            "1",
            "--tasks-per",
            "1",
            "-k",
            "2",
            "--out",
            out.to_str().unwrap(),
            "--json",
        ]
        .map(String::from)
        .to_vec()
    };
    let mut first = bin().args(args(&out)).stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null()).spawn().unwrap();
    let lock = out.join(".autodidact.lock");
    let t0 = std::time::Instant::now();
    while std::fs::read_to_string(&lock).map_or(true, |s| s.trim() != first.id().to_string()) {
        assert!(t0.elapsed().as_secs() < 60, "the first process never took the lock");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let t1 = std::time::Instant::now();
    let second = bin().args(args(&out)).output().unwrap();
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(!second.status.success() && err.contains(&format!("pid {}", first.id())), "{err}");
    assert!(t1.elapsed().as_secs() < 5, "refused before loading anything");
    first.kill().unwrap();
    first.wait().unwrap();
    let rerun = bin().args(args(&out)).output().unwrap();
    assert!(rerun.status.success(), "{}", String::from_utf8_lossy(&rerun.stderr));
    assert!(out.join("eval.json").is_file());
    // Another output in the same parent folder is independent.
    let file = dir.path().join("a.jsonl");
    let _held = autodidact::lock::OutputLock::for_file(&dir.path().join("b.jsonl")).unwrap();
    assert!(autodidact::lock::OutputLock::for_file(&file).is_ok());
    assert!(autodidact::lock::OutputLock::for_file(&dir.path().join("b.jsonl")).is_err());
}

/// A write that fails (here a file-size limit, which also stands for a full disk) stops with an error naming the
/// file; the good file from before is untouched, no temporary file is left, and the rerun succeeds.
#[test]
fn a_failed_write_names_the_file_and_keeps_the_previous_one() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("tasks.jsonl");
    let write = |per: &str, limit: bool| {
        let cmd = format!(
            "{} {} tasks write --suites arithmetic --difficulties 1 --split train --tasks-per {per} --out {}",
            if limit { "trap '' XFSZ; ulimit -f 4;" } else { "" },
            env!("CARGO_BIN_EXE_autodidact"),
            out.display()
        );
        Command::new("bash").args(["-c", &cmd]).output().unwrap()
    };
    assert!(write("2", false).status.success());
    let good = std::fs::read(&out).unwrap();
    let o = write("200", true);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("tasks.jsonl"), "{err}");
    assert_eq!(std::fs::read(&out).unwrap(), good, "the previous file was replaced by a partial one");
    let names: Vec<String> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().to_string()).collect();
    assert_eq!(names, vec!["tasks.jsonl".to_string()], "a temporary file was left behind");
    assert!(write("200", false).status.success());
    assert!(std::fs::read(&out).unwrap().len() > 4096);
}

/// RL steps come from the episodes: an SFT-only step flag is refused, not silently ignored.
#[test]
fn rl_training_refuses_sft_step_flags() {
    for flag in [["--max-steps", "1"], ["--grad-accum", "2"]] {
        let o = bin().args(["train", "--objective", "grpo", "--data", "none.jsonl", "--out", "none"]).args(flag).output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success() && err.contains(flag[0]) && err.contains("--groups-per-step"), "{err}");
    }
}

/// `train --help` shows the optimiser defaults the loop uses (configs/README.md's table is checked against the same
/// values in a unit test).
#[test]
fn train_help_shows_the_shared_optimiser_defaults() {
    let o = bin().args(["train", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&o.stdout);
    let (s, r) = (autodidact::train::OptimParams::SFT, autodidact::train::OptimParams::RL);
    assert!(help.contains(&format!("[default: {} for sft, {} for grpo and sdar]", s.lr, r.lr)), "{help}");
    assert!(help.contains(&format!("[default: {}]", s.save_every)), "{help}");
}

/// `bench` on a tiny model: every batch size measured, and each throughput converted to arithmetic with the
/// model's multiply-adds per token (prompt: projections and causal attention over 1..=p positions, the output
/// layer once; decode: the output layer every step) and set against a positive multiply-add peak where the path has one.
#[test]
fn bench_reports_throughput_as_a_share_of_the_measured_peak() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("tiny");
    common::tiny::write_hf(&model, "llama", 1);
    let (p, steps) = (16, 4);
    let o = bin()
        .args(["bench", "--model", model.to_str().unwrap(), "--prompt-tokens", "16", "--decode-tokens", "4", "--batch", "1,3", "--repeats", "1", "--json"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let cfg = autodidact::model::config::ModelConfig::from_hf_json(&model.join("config.json")).unwrap();
    let f = |ctx, logits| cfg.flops_per_token(ctx, logits);
    let prompt = ((1..=p).map(|c| f(c, false)).sum::<f64>() + f(0, true) - f(0, false)) / p as f64;
    let decode = (0..steps).map(|s| f(64 + s + 1, true)).sum::<f64>() / steps as f64;
    let close = |a: f64, b: f64| (a - b).abs() <= 1e-9 * b;
    let tps = v["prompt_tokens_per_second"].as_f64().unwrap();
    assert!(tps > 0.0 && close(v["prompt_gflops"].as_f64().unwrap() * 1e9 / tps, prompt), "{v}");
    let d = v["decode"].as_array().unwrap();
    assert_eq!(d.iter().map(|x| x["batch"].as_u64().unwrap()).collect::<Vec<_>>(), [1, 3]);
    for x in d {
        let t = x["tokens_per_second"].as_f64().unwrap();
        assert!(t > 0.0 && close(x["gflops"].as_f64().unwrap() * 1e9 / t, decode), "{x}");
    }
    // Every path but the portable one (no fused multiply-add) has a measured peak.
    match v["fma_peak_gflops"].as_f64() {
        Some(p) => assert!(p > 0.0, "{v}"),
        None => assert_eq!(v["simd"]["path"], "scalar", "{v}"),
    }
}
