//! Rollouts and evaluation on the real default model: the same seed gives the same episodes and report
//! whatever the batch size, and SmolLM2's template receives tool results as its own `tool` turns.
use super::common;

use std::collections::BTreeMap;
use std::process::Command;

use autodidact::model::LoadedModel;
use autodidact::rollout::policy::renders_tool_role;
use serde_json::Value;

fn eval(out: &std::path::Path, max_active: &str) -> (Value, BTreeMap<(String, u64), Value>) {
    let o = Command::new(env!("CARGO_BIN_EXE_autodidact"))
        .args(["eval", "--model", common::default_model().to_str().unwrap(), "--suites", "arithmetic,units", "--difficulties", "1"])
        .args(["--tasks-per", "1", "-k", "2", "--pass-k", "1,2", "--seed", "5", "--max-active", max_active, "--json", "--out", out.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let report: Value = serde_json::from_slice(&o.stdout).unwrap();
    let trajs = std::fs::read_to_string(out.join("trajectories.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let mut t: Value = serde_json::from_str(l).unwrap();
            t.as_object_mut().unwrap().remove("wall_ms");
            ((t["task_id"].as_str().unwrap().to_string(), t["sample_index"].as_u64().unwrap()), t)
        })
        .collect();
    (report, trajs)
}

#[test]
fn eval_gives_the_same_episodes_and_report_whatever_the_batch_size() {
    let dir = tempfile::tempdir().unwrap();
    let (r1, t1) = eval(&dir.path().join("one"), "1");
    let (r4, t4) = eval(&dir.path().join("four"), "4");
    assert_eq!(t1.len(), 4);
    assert_eq!(t1, t4, "episodes differ between --max-active 1 and 4");
    assert_eq!(r1, r4);
}

#[test]
fn smollm2_gets_tool_results_as_tool_turns() {
    let m = LoadedModel::load(common::default_model().to_str().unwrap()).unwrap();
    assert!(renders_tool_role(&m));
}
