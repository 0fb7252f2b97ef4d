//! User task files: the shipped examples load and run; bad lines fail with file, line and field. Plus the
//! evaluation report over real trajectories.
use std::io::Write;
use std::path::Path;

use autodidact::agent::episode::{run_episodes, Job, Limits, RunConfig};
use autodidact::agent::metrics::EvalReport;
use autodidact::agent::prompts::{PromptOptions, Prompts};
use autodidact::agent::scripted::{reference_script, ScriptedPolicy, TurnScript};
use autodidact::data::jsonl::{read_jsonl, write_jsonl_atomic, ReadMode};
use autodidact::data::{Message, Split, Task, Trajectory};
use autodidact::tasks::suites::{self, generate_many};
use autodidact::tasks::taskfile::{load_tasks, TaskFileError};

fn run(tasks: &[&Task], samples: u32, script: impl FnMut(usize, usize, &[Message]) -> TurnScript) -> Vec<Trajectory> {
    let prompts = Prompts::embedded().unwrap();
    let cfg = RunConfig {
        limits: Limits { max_episode_tokens: 1 << 20, ..Limits::default() },
        prompts: &prompts,
        prompt_options: PromptOptions::default(),
        identity: Default::default(),
        external: &Default::default(),
    };
    let jobs: Vec<Job> = tasks.iter().flat_map(|t| (0..samples).map(move |s| Job { task: t, sample_index: s })).collect();
    let mut out = Vec::new();
    run_episodes(&mut ScriptedPolicy::new(script), &jobs, &cfg, |t| out.push(t)).unwrap();
    out
}

#[test]
fn shipped_examples_load_and_answer_tasks_run() {
    let answers = load_tasks(Path::new("tasks/examples_answer.jsonl")).unwrap();
    assert!(answers.len() >= 4);
    // Tools given by name were expanded to full specs.
    assert!(answers.iter().all(|t| t.tools.iter().all(|s| s.pointer("/function/parameters").is_some())));
    let calls = load_tasks(Path::new("tasks/examples_function_call.jsonl")).unwrap();
    assert!(calls.iter().any(|t| matches!(&t.expected, autodidact::data::Expected::Calls { calls } if calls.is_empty())));

    let speed = answers.iter().find(|t| t.id == "ans-speed").unwrap();
    let founder = answers.iter().find(|t| t.id == "ans-founder").unwrap();
    let scripts = [
        ["<tool_call>\n{\"name\": \"calculator\", \"arguments\": {\"expression\": \"84 / 1.5\"}}\n</tool_call>", "Answer: 56 km/h"],
        ["<tool_call>\n{\"name\": \"search\", \"arguments\": {\"query\": \"Brightwater Labs founded\"}}\n</tool_call>", "Answer: Ada Quill"],
    ];
    let trajs = run(&[speed, founder], 1, |ep, turn, _| scripts[ep][turn.min(1)].into());
    for tr in &trajs {
        assert!(tr.verdict.success, "{}: {}", tr.task_id, tr.verdict.reason);
    }
    let search_out = &trajs.iter().find(|t| t.task_id == "ans-founder").unwrap().messages;
    assert!(search_out.iter().any(|m| m.content.starts_with("d1 | Brightwater Labs | Brightwater Labs is a research company")));
}

fn write_lines(lines: &[String]) -> tempfile::NamedTempFile {
    let mut f = tempfile::Builder::new().suffix(".jsonl").tempfile().unwrap();
    for l in lines {
        writeln!(f, "{l}").unwrap();
    }
    f
}

fn error_for(bad: &str) -> String {
    let good = std::fs::read_to_string("tasks/examples_answer.jsonl").unwrap().lines().next().unwrap().to_string();
    let f = write_lines(&[good, bad.to_string()]);
    let e = load_tasks(f.path()).unwrap_err();
    let text = e.to_string();
    assert!(text.contains(&format!("{}:2:", f.path().display())), "{text}");
    text
}

#[test]
fn bad_lines_name_file_line_and_field() {
    let base = r#""split": "test", "difficulty": 1, "instruction": "q", "max_turns": 3"#;
    let ans = r#""expected": {"kind": "answer", "answer": "1", "matcher": {"type": "number"}}"#;
    assert!(error_for(&format!(r#"{{"id": "x", "suite": "qa", {base}, "tools": ["calculator"]}}"#)).contains("missing field `expected`"));
    assert!(error_for(&format!(r#"{{"id": "x", "suite": "qa", {base}, "tools": ["calculator"], {ans}, "difficulty": "hard"}}"#)).contains("difficulty"));
    let e = error_for(&format!(r#"{{"id": "x", "suite": "poker", {base}, "tools": [], {ans}}}"#));
    assert!(e.contains("field `suite`") && e.contains("unknown suite `poker`"), "{e}");
    let e = error_for(&format!(r#"{{"id": "x", "suite": "qa", {base}, "tools": ["calculator", "shell"], {ans}}}"#));
    assert!(e.contains("field `tools[1]`") && e.contains("shell"), "{e}");
    let spec = r#"{"type": "function", "function": {"name": "rm_rf", "parameters": {"type": "object"}}}"#;
    let e = error_for(&format!(r#"{{"id": "x", "suite": "qa", {base}, "tools": [{spec}], {ans}}}"#));
    assert!(e.contains("unknown tool `rm_rf` for suite `qa`"), "{e}");
    let e = error_for(&format!(
        r#"{{"id": "x", "suite": "function_call", {base}, "tools": [{spec}], "expected": {{"kind": "calls", "calls": [{{"name": "format_disk"}}]}}}}"#
    ));
    assert!(e.contains("field `expected.calls[0].name`"), "{e}");
    let unusable = r#"{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {"a": {"type": "decimal"}}}}}"#;
    let e = error_for(&format!(r#"{{"id": "x", "suite": "function_call", {base}, "tools": [{unusable}], "expected": {{"kind": "calls", "calls": []}}}}"#));
    assert!(e.contains("field `tools[0].function.parameters`") && e.contains("not a usable JSON schema"), "{e}");
    let e = error_for(&format!(
        r#"{{"id": "x", "suite": "qa", {base}, "tools": ["calculator"], "expected": {{"kind": "answer", "answer": "many", "matcher": {{"type": "number"}}}}}}"#
    ));
    assert!(e.contains("field `expected.answer`"), "{e}");
    let e = error_for(&format!(r#"{{"id": "ans-speed", "suite": "qa", {base}, "tools": ["calculator"], {ans}}}"#));
    assert!(e.contains("duplicate id"), "{e}");
    let e = error_for(&format!(
        r#"{{"id": "x", "suite": "grid", {base}, "tools": ["move"], "expected": {{"kind": "state", "state": {{"kind": "grid", "position": [0, 0]}}}}}}"#
    ));
    assert!(e.contains("field `data`"), "{e}");
    assert!(matches!(load_tasks(Path::new("tasks/none.jsonl")), Err(TaskFileError::Jsonl(_))));
}

#[test]
fn eval_report_from_trajectories() {
    let tasks = generate_many(suites::get("arithmetic").unwrap(), 1, Split::Test, 1, 4).unwrap();
    let refs: Vec<&Task> = tasks.iter().collect();
    let mut solve = reference_script(&refs);
    // Samples 0 and 1 of every task solve it; sample 2 answers wrongly; task 3 never succeeds.
    let samples = 3;
    let trajs = run(&refs, samples, |ep, turn, msgs| {
        let (task, sample) = (ep / samples as usize, ep % samples as usize);
        if turn == 1 && (sample == 2 || task == 3) {
            "Answer: -1".into()
        } else {
            solve(task, turn, msgs)
        }
    });
    let report = EvalReport::from_trajectories(&trajs, &[1, 2, 3, 5]);
    let all = report.row("all", None).unwrap();
    assert_eq!((all.episodes, all.tasks), (12, 4));
    assert!((all.success_rate - 6.0 / 12.0).abs() < 1e-12);
    let p = |k: usize| all.pass_at_k.iter().find(|p| p.k == k).unwrap().value;
    assert!((p(1).unwrap() - 0.5).abs() < 1e-12);
    // Tasks 0-2: c=2 of n=3 -> pass@2 = 1; task 3: 0.
    assert!((p(2).unwrap() - 0.75).abs() < 1e-12);
    assert_eq!(p(5), None);
    assert!((all.mean_turns - 2.0).abs() < 1e-12 && (all.mean_tool_calls - 1.0).abs() < 1e-12);
    assert_eq!(all.invalid_step_rate, 0.0);
    assert!(report.row("arithmetic", Some(1)).is_some());
    let table = report.to_table();
    assert!(table.contains("pass@2") && table.contains("arithmetic") && table.contains("50.0%"), "{table}");
    let json = serde_json::to_string(&report).unwrap();
    // serde_json without `float_roundtrip` may move a float by one ulp, so compare the parsed form loosely.
    let back: EvalReport = serde_json::from_str(&json).unwrap();
    assert_eq!(back.rows.len(), report.rows.len());
    assert!(back.rows.iter().zip(&report.rows).all(|(a, b)| a.pass_at_k == b.pass_at_k && (a.mean_generated_tokens - b.mean_generated_tokens).abs() < 1e-9));

    // Trajectories round-trip through JSONL.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("trajectories.jsonl");
    write_jsonl_atomic(&path, &trajs).unwrap();
    let back: Vec<Trajectory> = read_jsonl(&path, ReadMode::Strict).unwrap().into_items();
    assert_eq!(back, trajs);
}

#[test]
fn skip_invalid_skips_and_counts_bad_lines_only_when_asked() {
    let good = std::fs::read_to_string("tasks/examples_answer.jsonl").unwrap();
    let first = good.lines().next().unwrap().to_string();
    let f = write_lines(&[first.clone(), "{not json".into(), first.replace("\"split\"", "\"splat\""), first.clone()]);
    let tasks = |extra: &[&str]| {
        let out = tempfile::NamedTempFile::new().unwrap();
        let mut args = vec!["tasks", "write", "--tasks-per", "0", "--task-file", f.path().to_str().unwrap(), "--out", out.path().to_str().unwrap()];
        args.extend(extra);
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_autodidact")).args(&args).output().unwrap();
        let n = std::fs::read_to_string(out.path()).unwrap_or_default().lines().count();
        (o.status.success(), String::from_utf8_lossy(&o.stderr).to_string(), n)
    };
    let (ok, err, _) = tasks(&[]);
    assert!(!ok && err.contains(":2:"), "strict mode stops at line 2: {err}");
    let (ok, err, n) = tasks(&["--skip-invalid"]);
    assert!(ok, "{err}");
    assert_eq!(n, 1, "only the first line is valid (line 4 repeats its id)");
    assert!(
        err.contains("skipped 3 invalid lines") && err.contains("line 2") && err.contains("line 3") && err.contains("line 4: field `id`: duplicate id"),
        "{err}"
    );
}
