//! Environments with state and a reward: episodes run on an environment process's `reset` / `step` and are judged
//! by its reward; a Gymnasium environment served by scripts/env_bridge.py (gymnasium installed pinned by
//! scripts/env-venv.sh) runs the same way; environments that misbehave end only their own episode, with an error
//! naming them and the task, and leave no process behind; an episode waiting on its environment leaves the batch.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use serde_json::json;

use autodidact::agent::episode::{run_episodes, Job, Limits, RunConfig};
use autodidact::agent::prompts::{PromptOptions, Prompts};
use autodidact::agent::scripted::{ScriptedPolicy, TurnScript};
use autodidact::data::{Message, Role, StepErrorKind, Task, Termination, Trajectory};
use autodidact::tasks::env::{EnvConfig, EnvSpec, Scope};
use autodidact::tasks::external::External;
use autodidact::tasks::mcp::McpConfig;

/// The bin folder of a Python with gymnasium, installed once per test run.
fn gym_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let out = std::process::Command::new("bash").arg(root.join("scripts/env-venv.sh")).arg("gym").output().expect("run scripts/env-venv.sh");
        assert!(
            out.status.success(),
            "gymnasium for these tests could not be installed from PyPI (scripts/env-venv.sh gym): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
    })
}

/// An environment speaking the protocol directly: a counter that must be told `inc` twice; modes misbehave.
const FIXTURE: &str = r#"
import json, os, sys, time
mode = sys.argv[1]
def send(m):
    sys.stdout.write(json.dumps(m) + "\n"); sys.stdout.flush()
n = 0
for line in sys.stdin:
    m = json.loads(line)
    p = m.get("params") or {}
    if m["method"] == "reset":
        n = 0
        r = {"observation": f"Counter at 0 (game {p.get('game')}, seed {p.get('seed')}). Say inc twice.", "max_reward": 2}
        if mode == "tools":
            r["tools"] = [{"name": "press", "description": "Press a button.", "inputSchema": {"type": "object", "properties": {"button": {"type": "string"}}, "required": ["button"]}}]
        if mode == "env":
            r["observation"] = json.dumps(sorted(os.environ))
        send({"jsonrpc": "2.0", "id": m["id"], "result": r})
        continue
    a = p.get("action")
    if mode == "noobs":
        r = {"reward": 1}
    elif mode == "badreward":
        r = {"observation": "ok", "reward": "lots"}
    elif mode == "crash":
        sys.stderr.write("fixture env: crashing on purpose\n"); sys.stderr.flush()
        os._exit(3)
    elif mode == "hang":
        time.sleep(3600)
    else:
        if mode == "slow":
            time.sleep(1.5)
        good = a == "inc" or a == {"name": "press", "arguments": {"button": "red"}}
        n += good
        r = {"observation": f"Counter at {n}." if good else f"Unknown action {a!r}.", "reward": float(good), "terminated": n >= 2, "truncated": False}
    send({"jsonrpc": "2.0", "id": m["id"], "result": r})
    if mode == "once" and n >= 2:
        os._exit(0)
"#;

fn fixture(dir: &Path, mode: &str) -> EnvSpec {
    let script = dir.join("fixture_env.py");
    if !script.exists() {
        std::fs::write(&script, FIXTURE).unwrap();
    }
    EnvSpec {
        command: gym_bin().join("python").display().to_string(),
        url: None,
        args: vec![script.display().to_string(), mode.into()],
        env: BTreeMap::from([("ONLY_THIS".to_string(), "1".to_string())]),
        cwd: None,
        scope: Scope::Reuse,
        timeout_ms: 2_000,
    }
}

fn env_task(id: &str, env: &str, max_turns: u32) -> serde_json::Value {
    json!({"id": id, "suite": "env", "split": "train", "difficulty": 1, "instruction": "", "tools": [],
        "data": {"kind": "env", "env": env, "game": "g1", "seed": 7}, "expected": {"kind": "reward"}, "max_turns": max_turns,
        "reference": {"actions": ["inc", "inc"]}})
}

fn load(dir: &Path, lines: &[serde_json::Value]) -> Vec<Task> {
    let file = dir.join("tasks.jsonl");
    std::fs::write(&file, lines.iter().map(|l| format!("{l}\n")).collect::<String>()).unwrap();
    autodidact::tasks::taskfile::load_tasks(&file).unwrap()
}

fn run(tasks: &[Task], envs: EnvConfig, script: impl FnMut(usize, usize, &[Message]) -> TurnScript) -> (Vec<Trajectory>, Vec<usize>, Vec<usize>) {
    let mut tasks = tasks.to_vec();
    let external = External::for_tasks(&McpConfig::default(), &envs, tasks.iter_mut()).unwrap();
    let prompts = Prompts::embedded().unwrap();
    let cfg =
        RunConfig { limits: Limits::default(), prompts: &prompts, prompt_options: PromptOptions::default(), identity: Default::default(), external: &external };
    let jobs: Vec<Job> = tasks.iter().map(|t| Job { task: t, sample_index: 0 }).collect();
    let mut out = Vec::new();
    let mut policy = ScriptedPolicy::new(script);
    run_episodes(&mut policy, &jobs, &cfg, |t| out.push(t)).unwrap();
    out.sort_by(|a, b| a.task_id.cmp(&b.task_id));
    (out, policy.batches, policy.finished)
}

/// Processes still running whose command line mentions `needle`.
fn processes_mentioning(needle: &str) -> Vec<u32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(cmd) = std::fs::read(entry.path().join("cmdline")) else { continue };
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        let zombie = stat.rsplit_once(')').and_then(|(_, r)| r.trim_start().chars().next()) == Some('Z');
        if !zombie && String::from_utf8_lossy(&cmd).contains(needle) {
            found.push(pid);
        }
    }
    found
}

#[test]
fn env_tasks_run_to_the_environments_reward() {
    let dir = tempfile::tempdir().unwrap();
    let tasks = load(dir.path(), &[env_task("count-1", "counter", 6), env_task("count-2", "counter", 2)]);
    let envs = EnvConfig(BTreeMap::from([("counter".to_string(), fixture(dir.path(), "ok"))]));
    // Episode 0 counts twice and wins; episode 1 wastes a turn and runs out of turns halfway.
    let (out, _, _) = run(&tasks, envs, |ep, turn, _| TurnScript::from(if ep == 1 && turn == 0 { "dance" } else { "inc" }));
    let won = &out[0];
    assert_eq!(won.termination, Termination::Terminated);
    assert_eq!((won.verdict.success, won.verdict.score), (true, 1.0), "{}", won.verdict.reason);
    let roles: Vec<Role> = won.messages.iter().map(|m| m.role).collect();
    assert_eq!(roles, [Role::System, Role::User, Role::Assistant, Role::User, Role::Assistant, Role::User]);
    assert!(won.messages[1].content.contains("game g1, seed 7"), "reset gets the task's game and seed: {}", won.messages[1].content);
    assert_eq!(won.messages[5].content, "Counter at 2.");
    assert_eq!(won.turns.iter().map(|t| t.reward).collect::<Vec<_>>(), [Some(1.0), Some(1.0)]);
    assert_eq!(won.tools.as_deref(), Some(&[][..]));
    let half = &out[1];
    assert_eq!(half.termination, Termination::TurnLimit);
    assert_eq!((half.verdict.success, half.verdict.score), (false, 0.5), "{}", half.verdict.reason);
    assert!(half.messages[3].content.contains("Unknown action 'dance'"), "{}", half.messages[3].content);
    // The winning episode is a training example; the other is not.
    let sel = autodidact::distil::filter::select(&out, &Default::default());
    assert_eq!(sel.kept().collect::<Vec<_>>(), [0], "{:?}", sel.fates);
}

#[test]
fn tools_offered_at_reset_are_called_as_actions() {
    let dir = tempfile::tempdir().unwrap();
    let tasks = load(dir.path(), &[env_task("press-1", "buttons", 4)]);
    let envs = EnvConfig(BTreeMap::from([("buttons".to_string(), fixture(dir.path(), "tools"))]));
    let call = "<tool_call>\n{\"name\": \"press\", \"arguments\": {\"button\": \"red\"}}\n</tool_call>";
    let (out, _, _) = run(&tasks, envs, |_, turn, _| TurnScript::from(if turn == 1 { "<tool_call>\n{\"name\": \"press\"}\n</tool_call>" } else { call }));
    let t = &out[0];
    assert!(t.messages[0].content.contains("\"name\": \"press\""), "the system prompt lists the environment's tools: {}", t.messages[0].content);
    assert_eq!(t.tools.as_ref().map(Vec::len), Some(1));
    assert_eq!(t.termination, Termination::Terminated);
    // The call without its required argument was an invalid step, not an action.
    assert_eq!(t.counts.invalid_steps, 1);
    assert_eq!(t.turns.iter().map(|r| r.valid).collect::<Vec<_>>(), [true, false, true]);
    assert_eq!(t.messages.iter().filter(|m| m.role == Role::Tool && m.name.as_deref() == Some("press")).count(), 2);
    assert!(t.verdict.success, "{}", t.verdict.reason);
}

#[test]
fn failing_environments_end_only_their_episode_and_leave_no_process() {
    let dir = tempfile::tempdir().unwrap();
    let modes = ["noobs", "badreward", "crash", "hang"];
    let mut lines: Vec<_> = modes.iter().map(|m| env_task(&format!("{m}-1"), m, 4)).collect();
    lines.push(env_task("ok-1", "ok", 4));
    let tasks = load(dir.path(), &lines);
    let envs = EnvConfig(modes.iter().chain(&["ok"]).map(|m| (m.to_string(), fixture(dir.path(), m))).collect());
    let (out, _, _) = run(&tasks, envs, |_, _, _| TurnScript::from("inc"));
    let by_id = |id: &str| out.iter().find(|t| t.task_id == id).unwrap();
    for (mode, why) in [("noobs", "no observation"), ("badreward", "non-numeric reward"), ("crash", "crashing on purpose"), ("hang", "no answer")] {
        let t = by_id(&format!("{mode}-1"));
        assert_eq!(t.termination, Termination::EnvironmentFailed, "{mode}");
        assert!(!t.verdict.success);
        let e = &t.turns.last().unwrap().errors[0];
        assert_eq!(e.kind, StepErrorKind::EnvironmentFailed);
        assert!(
            e.message.contains(&format!("environment `{mode}`")) && e.message.contains(&format!("task `{mode}-1`")) && e.message.contains(why),
            "{}",
            e.message
        );
    }
    assert!(by_id("ok-1").verdict.success, "the healthy episode beside them went on");
    std::thread::sleep(Duration::from_millis(200));
    let left = processes_mentioning(&dir.path().display().to_string());
    assert!(left.is_empty(), "environment processes outlived the run: {left:?}");
}

#[test]
fn environment_tasks_are_checked_before_anything_starts() {
    let dir = tempfile::tempdir().unwrap();
    let mut tasks = load(dir.path(), &[env_task("lost-1", "nowhere", 4)]);
    let e = External::for_tasks(&McpConfig::default(), &EnvConfig::default(), tasks.iter_mut()).unwrap_err().to_string();
    assert!(e.contains("`nowhere`") && e.contains("lost-1") && e.contains("not configured"), "{e}");
    // A task file line that mixes an environment with another suite, or offers tools of its own, names the field.
    let file = dir.path().join("bad.jsonl");
    for (mut line, field) in
        [(env_task("x", "e", 4), "suite"), (env_task("y", "e", 4), "tools"), (env_task("z", "e", 4), "expected"), (env_task("w", "e", 4), "expected.threshold")]
    {
        match field {
            "suite" => line["suite"] = json!("qa"),
            "tools" => line["tools"] = json!(["calculator"]),
            "expected" => line["expected"] = json!({"kind": "answer", "answer": "1", "matcher": {"type": "exact"}}),
            _ => line["expected"] = json!({"kind": "reward", "threshold": 2}),
        }
        std::fs::write(&file, format!("{line}\n")).unwrap();
        let e = autodidact::tasks::taskfile::load_tasks(&file).unwrap_err().to_string();
        assert!(e.contains("bad.jsonl:1") && e.contains(&format!("`{field}`")), "{field}: {e}");
    }
    // The environment sees only its configured variables.
    let tasks = load(dir.path(), &[env_task("env-1", "env", 1)]);
    let envs = EnvConfig(BTreeMap::from([("env".to_string(), fixture(dir.path(), "env"))]));
    let (out, _, _) = run(&tasks, envs, |_, _, _| TurnScript::from("inc"));
    let seen: Vec<String> = serde_json::from_str(&out[0].messages[1].content).unwrap();
    assert!(seen.contains(&"ONLY_THIS".to_string()) && !seen.contains(&"PATH".to_string()) && !seen.contains(&"HOME".to_string()), "{seen:?}");
}

/// A Gymnasium environment, Gymnasium's five-value `step` and the older four, served by the bridge.
#[test]
fn the_bridge_serves_a_gymnasium_text_environment() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("guess.py"),
        r#"
import gymnasium
class Guess(gymnasium.Env):
    def __init__(self, old_api=False):
        self.old_api = old_api
    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        self.target = str(1 + seed % 3)
        print("noise on stdout stays off the protocol")
        return f"Guess my number from 1 to 3 ({options['game']}).", {"max_reward": 1}
    def step(self, action):
        hit = action == self.target
        obs = "Right!" if hit else "Wrong."
        if self.old_api:
            return obs, float(hit), hit, {}
        return obs, float(hit), hit, False, {}
"#,
    )
    .unwrap();
    let bridge = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/env_bridge.py");
    let spec = |old: bool| EnvSpec {
        command: gym_bin().join("python").display().to_string(),
        url: None,
        args: vec![bridge.display().to_string(), "guess:Guess".into(), "--kwargs".into(), json!({"old_api": old}).to_string()],
        env: BTreeMap::from([("PYTHONPATH".to_string(), dir.path().display().to_string())]),
        cwd: None,
        scope: Scope::Reuse,
        timeout_ms: 30_000,
    };
    let envs = EnvConfig(BTreeMap::from([("guess".to_string(), spec(false)), ("guess-old".to_string(), spec(true))]));
    // Seed 7 makes the number 2: guessing 1, 2, 3 wins on the second turn.
    let tasks = load(dir.path(), &[env_task("g-new", "guess", 4), env_task("g-old", "guess-old", 4)]);
    let (out, _, _) = run(&tasks, envs, |_, turn, _| TurnScript::from(format!("{}", turn + 1)));
    for t in &out {
        assert_eq!(t.termination, Termination::Terminated, "{}", t.task_id);
        assert!(t.verdict.success && t.counts.turns == 2, "{}: {:?}", t.task_id, t.verdict);
        assert_eq!(t.messages[1].content, "Guess my number from 1 to 3 (g1).");
    }
}

/// While one episode waits on a slow environment step, the other keeps taking turns.
#[test]
fn an_episode_waiting_on_its_environment_leaves_the_batch() {
    let dir = tempfile::tempdir().unwrap();
    let slow = env_task("a-slow", "slow", 2);
    let quick = json!({"id": "b-quick", "suite": "qa", "split": "test", "difficulty": 1, "instruction": "What is 2+3?", "tools": ["calculator"],
        "expected": {"kind": "answer", "answer": "5", "matcher": {"type": "exact"}}, "max_turns": 6});
    let tasks = load(dir.path(), &[slow, quick]);
    let envs = EnvConfig(BTreeMap::from([("slow".to_string(), fixture(dir.path(), "slow"))]));
    let calc = "<tool_call>\n{\"name\": \"calculator\", \"arguments\": {\"expression\": \"2+3\"}}\n</tool_call>";
    let t0 = std::time::Instant::now();
    let (out, batches, finished) = run(&tasks, envs, |ep, turn, _| {
        TurnScript::from(if ep == 0 {
            "inc"
        } else if turn < 4 {
            calc
        } else {
            "Answer: 5"
        })
    });
    assert!(out.iter().find(|t| t.task_id == "b-quick").unwrap().verdict.success);
    // Episode 1 took its five turns while episode 0's 1.5 s step ran, so it finished first.
    assert_eq!(finished, [1, 0], "batches: {batches:?}");
    assert!(batches.iter().filter(|&&b| b == 1).count() >= 4, "{batches:?}");
    assert!(t0.elapsed() < Duration::from_secs(20));
}

/// A reused process that died after its episode is replaced at the next episode's reset, not reported as a failure.
#[test]
fn a_reused_environment_that_died_is_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let mut tasks = load(dir.path(), &[env_task("once-1", "once", 4), env_task("once-2", "once", 4)]);
    let envs = EnvConfig(BTreeMap::from([("once".to_string(), fixture(dir.path(), "once"))]));
    let external = External::for_tasks(&McpConfig::default(), &envs, tasks.iter_mut()).unwrap();
    let prompts = Prompts::embedded().unwrap();
    // One episode at a time, so that the second takes the process the first gave back.
    let limits = Limits { max_active: 1, ..Limits::default() };
    let cfg = RunConfig { limits, prompts: &prompts, prompt_options: PromptOptions::default(), identity: Default::default(), external: &external };
    let jobs: Vec<Job> = tasks.iter().map(|t| Job { task: t, sample_index: 0 }).collect();
    let mut out = Vec::new();
    run_episodes(&mut ScriptedPolicy::new(|_, _, _: &[Message]| TurnScript::from("inc")), &jobs, &cfg, |t| out.push(t)).unwrap();
    for t in &out {
        assert_eq!(t.termination, Termination::Terminated, "{}: {:?}", t.task_id, t.turns.last().map(|r| &r.errors));
        assert!(t.verdict.success);
    }
}
