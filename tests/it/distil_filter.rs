//! Filtering scripted rollouts: which episodes survive, why the others are dropped, the dataset rows' masks,
//! and the mask audit refusing rows that train nothing.
use std::process::Command;

use autodidact::agent::episode::{run_episodes, Job, Limits, RunConfig};
use autodidact::agent::prompts::{PromptOptions, Prompts};
use autodidact::agent::scripted::{ScriptedPolicy, TurnScript};
use autodidact::data::dataset::{read_dataset, DatasetRow};
use autodidact::data::jsonl::write_jsonl_atomic;
use autodidact::data::{Message, Split, Task, Termination, Trajectory};
use autodidact::distil::{build_row, select, DropReason, FilterParams};
use autodidact::tasks::suites::{self, generate, TaskKey};
use autodidact::tools::toolcall::render_call;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_autodidact"))
}

fn task(difficulty: u8, index: u64, split: Split) -> Task {
    generate(suites::get("arithmetic").unwrap(), TaskKey { seed: 9, split, difficulty, index }).unwrap()
}

#[derive(Clone, Copy, Debug)]
enum Plan {
    Reference,
    /// Every reference call twice, then the answer: longer, distinct, successful.
    Doubled,
    WrongAnswer,
    /// A malformed call first, then the reference.
    InvalidFirst,
    /// Calls forever (hits the turn cap).
    Loop,
}

fn script_for(task: &Task, plan: Plan, turn: usize) -> TurnScript {
    let r = task.reference.as_ref().unwrap();
    let answer = format!("Answer: {}", r.answer);
    let n = r.calls.len();
    match plan {
        Plan::Reference => r.calls.get(turn).map_or(answer, render_call).into(),
        Plan::Doubled => r.calls.get(turn / 2).filter(|_| turn < 2 * n).map_or(answer, render_call).into(),
        Plan::WrongAnswer => r.calls.get(turn).map_or("Answer: -123456789".to_string(), render_call).into(),
        Plan::InvalidFirst if turn == 0 => "<tool_call>\n{\"name\": \"calculator\", \"arguments\": {\n</tool_call>".into(),
        Plan::InvalidFirst => r.calls.get(turn - 1).map_or(answer, render_call).into(),
        Plan::Loop => render_call(&r.calls[0]).into(),
    }
}

/// Runs `(task, sample_index, plan)` jobs with a scripted policy.
fn rollout(jobs: &[(&Task, u32, Plan)]) -> Vec<Trajectory> {
    let prompts = Prompts::embedded().unwrap();
    let cfg = RunConfig {
        limits: Limits { max_turns: Some(5), max_episode_tokens: 1 << 20, ..Limits::default() },
        prompts: &prompts,
        prompt_options: PromptOptions::default(),
        identity: Default::default(),
        external: &Default::default(),
    };
    let js: Vec<Job> = jobs.iter().map(|(t, s, _)| Job { task: t, sample_index: *s }).collect();
    let mut policy = ScriptedPolicy::new(|ep: usize, turn: usize, _m: &[Message]| script_for(jobs[ep].0, jobs[ep].2, turn));
    let mut out = Vec::new();
    run_episodes(&mut policy, &js, &cfg, |t| out.push(t)).unwrap();
    // Input order of the file does not matter to the filter, but keep it stable for the assertions.
    out.sort_by_key(|t| (t.task_id.clone(), t.sample_index));
    out
}

fn fates(trajs: &[Trajectory], p: &FilterParams) -> Vec<(String, Option<DropReason>)> {
    let sel = select(trajs, p);
    trajs.iter().zip(sel.fates).map(|(t, f)| (format!("{}#{}", t.task_id, t.sample_index), f)).collect()
}

#[test]
fn filter_keeps_the_shortest_distinct_successes_and_names_every_drop() {
    let (a, b, test) = (task(1, 0, Split::Train), task(2, 0, Split::Train), task(1, 0, Split::Test));
    let trajs = rollout(&[
        (&a, 0, Plan::Doubled),
        (&a, 1, Plan::Reference),
        (&a, 2, Plan::Reference),
        (&a, 3, Plan::WrongAnswer),
        (&a, 4, Plan::InvalidFirst),
        (&a, 5, Plan::Loop),
        (&b, 0, Plan::Reference),
        (&test, 0, Plan::Reference),
    ]);
    assert_eq!(trajs.len(), 8);
    let by_id = |id: &str| trajs.iter().find(|t| format!("{}#{}", t.task_id, t.sample_index) == id).unwrap();
    assert_eq!(by_id(&format!("{}#5", a.id)).termination, Termination::TurnLimit);
    assert!(by_id(&format!("{}#4", a.id)).verdict.success, "the invalid-first episode still succeeds");

    let f = fates(&trajs, &FilterParams { keep_per_task: 1, balance: false });
    let fate = |id: String| f.iter().find(|(i, _)| *i == id).unwrap().1;
    assert_eq!(fate(format!("{}#1", a.id)), None, "the shortest success of task a, lowest sample index");
    assert_eq!(fate(format!("{}#2", a.id)), Some(DropReason::Duplicate));
    assert_eq!(fate(format!("{}#0", a.id)), Some(DropReason::OverK), "longer than the kept one");
    assert_eq!(fate(format!("{}#3", a.id)), Some(DropReason::Failed));
    assert_eq!(fate(format!("{}#4", a.id)), Some(DropReason::InvalidSteps));
    assert_eq!(fate(format!("{}#5", a.id)), Some(DropReason::OverCap));
    assert_eq!(fate(format!("{}#0", b.id)), None);
    assert_eq!(fate(format!("{}#0", test.id)), Some(DropReason::HeldOut));

    // k = 2 keeps the longer distinct episode too, never the duplicate.
    let f2 = fates(&trajs, &FilterParams { keep_per_task: 2, balance: false });
    let kept2: Vec<&String> = f2.iter().filter(|(_, r)| r.is_none()).map(|(i, _)| i).collect();
    assert_eq!(kept2, vec![&format!("{}#0", a.id), &format!("{}#1", a.id), &format!("{}#0", b.id)]);

    // Balancing caps difficulty 1 (2 kept) at difficulty 2's count (1), keeping the best-ranked episode.
    let f3 = fates(&trajs, &FilterParams { keep_per_task: 2, balance: true });
    assert_eq!(f3.iter().filter(|(_, r)| *r == Some(DropReason::Balance)).count(), 1);
    assert_eq!(f3.iter().find(|(i, _)| *i == format!("{}#1", a.id)).unwrap().1, None);

    // The CLI writes the dataset, the report with per-reason counts, and the audit.
    let dir = tempfile::tempdir().unwrap();
    let tp = dir.path().join("trajectories.jsonl");
    write_jsonl_atomic(&tp, &trajs).unwrap();
    let out = dir.path().join("round");
    let o = bin().args(["filter", "--trajectories", tp.to_str().unwrap(), "--out", out.to_str().unwrap(), "--json"]).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let file_report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("filter_report.json")).unwrap()).unwrap();
    assert_eq!(report, file_report);
    assert_eq!(report["total"]["episodes"], 8);
    assert_eq!(report["total"]["kept"], 2);
    for (reason, n) in [("held_out", 1), ("over_cap", 1), ("failed", 1), ("invalid_steps", 1), ("duplicate", 1), ("over_k", 1), ("balance", 0)] {
        assert_eq!(report["total"]["dropped"][reason], n, "{reason}");
    }
    assert_eq!(report["by_suite_difficulty"]["arithmetic/d1"]["episodes"], 7);
    assert_eq!(report["by_suite_difficulty"]["arithmetic/d1"]["tasks"], 2);
    assert_eq!(report["by_suite_difficulty"]["arithmetic/d1"]["tasks_kept"], 1);
    assert_eq!(report["by_suite_difficulty"]["arithmetic/d2"]["kept"], 1);
    let audit: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("mask_audit.json")).unwrap()).unwrap();
    assert_eq!(audit["trained"]["other"], 0);
    assert!(audit["problems"].as_array().unwrap().is_empty());
    assert!(String::from_utf8_lossy(&o.stderr).contains("mask audit: 2 rows"));

    // Rows: exact ids, loss mask == produced mask, tools recovered, chat form.
    let rows = read_dataset(&out.join("dataset.jsonl")).unwrap();
    assert_eq!(rows.iter().map(|r| r.id.clone()).collect::<Vec<_>>(), vec![format!("{}#1", a.id), format!("{}#0", b.id)]);
    for row in &rows {
        let t = by_id(&row.id);
        assert_eq!(row.token_ids, t.token_ids);
        assert_eq!(row.loss_mask, t.produced_mask);
        assert_eq!(row.trained_tokens() as u32, t.counts.generated_tokens);
        assert_eq!(row.messages.len(), t.messages.len());
        assert_eq!(row.messages[0]["role"], "system");
        assert_eq!(row.tools, a.tools, "tools parsed back from the system prompt");
        assert_eq!(audit["stop_turns"], audit["stop_turns_trained"]);
    }
    // --show-row marks the trained spans.
    let o = bin().args(["filter", "--out", out.to_str().unwrap(), "--show-row", "0", "--color", "never"]).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let shown = String::from_utf8_lossy(&o.stdout);
    assert_eq!(shown.matches("[[").count(), rows[0].trained_spans().len(), "{shown}");
}

#[test]
fn audit_refuses_a_row_that_trains_nothing() {
    let a = task(1, 1, Split::Train);
    let mut trajs = rollout(&[(&a, 0, Plan::Reference)]);
    let t = &mut trajs[0];
    // An engine bug: the turns' sampled ids were recorded as prompt tokens.
    t.produced_mask.iter_mut().for_each(|m| *m = 0);
    t.turns.iter_mut().for_each(|r| r.generated_tokens = 0);
    let built = build_row(t, None).unwrap();
    assert_eq!(built.row.trained_tokens(), 0);

    let dir = tempfile::tempdir().unwrap();
    let tp = dir.path().join("t.jsonl");
    write_jsonl_atomic(&tp, &trajs).unwrap();
    let out = dir.path().join("out");
    let o = bin().args(["filter", "--trajectories", tp.to_str().unwrap(), "--out", out.to_str().unwrap()]).output().unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("no trained token") && err.contains("mask audit failed"), "{err}");
    assert!(!out.join("dataset.jsonl").exists(), "no dataset after a failed audit");
    assert!(out.join("mask_audit.json").exists());

    // A mask that disagrees with the turn records is refused before any row is written.
    let mut bad = rollout(&[(&a, 0, Plan::Reference)]);
    bad[0].produced_mask[0] = 1;
    let e = build_row(&bad[0], None).err().unwrap().to_string();
    assert!(e.contains("generated tokens") && e.contains(&a.id), "{e}");
}

#[test]
fn malformed_dataset_line_names_file_line_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("dataset.jsonl");
    let good =
        DatasetRow { id: "t#0".into(), suite: "s".into(), difficulty: 1, messages: vec![], tools: vec![], token_ids: vec![1, 2, 3], loss_mask: vec![0, 1, 1] };
    let mut bad = serde_json::to_value(&good).unwrap();
    bad["token_ids"] = serde_json::json!([1, "two", 3]);
    std::fs::write(&p, format!("{}\n{}\n", serde_json::to_string(&good).unwrap(), bad)).unwrap();
    let e = read_dataset(&p).unwrap_err().to_string();
    assert!(e.contains("dataset.jsonl:2:") && e.contains("field `token_ids`"), "{e}");

    let mut short = serde_json::to_value(&good).unwrap();
    short["loss_mask"] = serde_json::json!([0, 1]);
    std::fs::write(&p, format!("{short}\n")).unwrap();
    let e = read_dataset(&p).unwrap_err().to_string();
    assert!(e.contains("dataset.jsonl:1:") && e.contains("field `loss_mask`") && e.contains("2 values for 3"), "{e}");

    // The train command reports it the same way, before loading any model.
    let o =
        bin().args(["train", "--data", p.to_str().unwrap(), "--out", dir.path().join("run").to_str().unwrap(), "--model", "no/such/model"]).output().unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("dataset.jsonl:1:") && err.contains("loss_mask"), "{err}");
}

/// A turn ended by a stop string (`rollout.stop`) ends with that string's tokens, not an end-of-turn id: its row
/// passes the audit, and a turn ended by the end-of-turn token is still checked for it.
#[test]
fn turns_ended_by_a_stop_string_pass_the_audit() {
    use autodidact::agent::scripted::EOT;
    use autodidact::data::dataset::{MaskAudit, RowProvenance};
    use autodidact::data::FinishReason;
    let a = task(1, 2, Split::Train);
    let prompts = Prompts::embedded().unwrap();
    let cfg = RunConfig {
        limits: Limits::default(),
        prompts: &prompts,
        prompt_options: PromptOptions::default(),
        identity: Default::default(),
        external: &Default::default(),
    };
    let calls = a.reference.as_ref().unwrap().calls.clone();
    let answer = a.reference.as_ref().unwrap().answer.clone();
    let mut policy = ScriptedPolicy::new(|_, turn: usize, _m: &[Message]| match calls.get(turn) {
        Some(c) => TurnScript { text: render_call(c), finish: FinishReason::StopString },
        None => TurnScript::from(format!("Answer: {answer}")),
    });
    let mut out = Vec::new();
    run_episodes(&mut policy, &[Job { task: &a, sample_index: 0 }], &cfg, |t| out.push(t)).unwrap();
    assert!(out[0].verdict.success, "{}", out[0].verdict.reason);
    let built = build_row(&out[0], None).unwrap();
    assert_eq!(built.stop_turn_ends.len(), 1, "only the turn that ended with the end-of-turn token");
    let mut audit = MaskAudit::default();
    let r = &built.row;
    audit.add(
        &RowProvenance { id: &r.id, token_ids: &r.token_ids, loss_mask: &r.loss_mask, produced: &built.produced, stop_turn_ends: &built.stop_turn_ends },
        Some(&[EOT]),
    );
    assert!(audit.ok(), "{:?}", audit.problems);
    assert_eq!(audit.end_of_turn_ids.get(&EOT), Some(&1));
}
