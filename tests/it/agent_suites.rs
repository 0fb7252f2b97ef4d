//! Generated suites: determinism, train/dev/test disjointness by content, validity, and that the reference plan
//! of every task solves it in `optimal_steps` calls while wrong answers and unfinished plans are rejected.
use std::collections::BTreeSet;

use autodidact::agent::episode::{run_episodes, Job, Limits, RunConfig};
use autodidact::agent::prompts::{PromptOptions, Prompts};
use autodidact::agent::scripted::{reference_script, ScriptedPolicy, TurnScript};
use autodidact::data::{Expected, Message, Role, Split, Task, Termination, Trajectory};
use autodidact::tasks::suites::{self, generate, generate_many, TaskKey};
use autodidact::tasks::taskfile::validate_task;
use autodidact::tools::toolcall::{check_calls, parse_turn, render_call, Action};

fn content(t: &Task) -> String {
    format!("{}\0{}", t.instruction, serde_json::to_string(&t.data).unwrap())
}

fn run(tasks: &[&Task], script: impl FnMut(usize, usize, &[Message]) -> TurnScript) -> Vec<Trajectory> {
    let prompts = Prompts::embedded().unwrap();
    let cfg = RunConfig {
        // Byte tokens make prompts long; the token cap is not what these tests probe.
        limits: Limits { max_tool_calls: 64, max_episode_tokens: 1 << 20, ..Limits::default() },
        prompts: &prompts,
        prompt_options: PromptOptions::default(),
        identity: Default::default(),
        external: &Default::default(),
    };
    let jobs: Vec<Job> = tasks.iter().map(|t| Job { task: t, sample_index: 0 }).collect();
    let mut policy = ScriptedPolicy::new(script);
    let mut out = Vec::new();
    run_episodes(&mut policy, &jobs, &cfg, |t| out.push(t)).unwrap();
    assert_eq!(out.len(), tasks.len());
    out.sort_by_key(|t| tasks.iter().position(|x| x.id == t.task_id));
    out
}

#[test]
fn six_generative_suites_with_three_levels() {
    let names: Vec<&str> = suites::generative().map(|s| s.name()).collect();
    assert_eq!(names, ["arithmetic", "units", "tables", "files", "search", "grid"]);
    for s in suites::generative() {
        let range = s.difficulties().unwrap();
        assert!(*range.start() == 1 && *range.end() >= 3, "{}", s.name());
        assert!(generate(s, TaskKey { seed: 0, split: Split::Train, difficulty: range.end() + 1, index: 0 }).is_err());
    }
    assert!(suites::get("nope").err().unwrap().to_string().contains("known: arithmetic"));
}

#[test]
fn generation_is_deterministic_and_seed_dependent() {
    for s in suites::generative() {
        let a = generate_many(s, 7, Split::Train, 2, 20).unwrap();
        let b = generate_many(s, 7, Split::Train, 2, 20).unwrap();
        assert_eq!(a, b, "{}", s.name());
        let c = generate_many(s, 8, Split::Train, 2, 20).unwrap();
        assert_ne!(a.iter().map(content).collect::<Vec<_>>(), c.iter().map(content).collect::<Vec<_>>(), "{}", s.name());
    }
}

#[test]
fn train_dev_and_test_never_share_content() {
    for s in suites::generative() {
        for d in s.difficulties().unwrap() {
            let set = |split| -> BTreeSet<String> { generate_many(s, 1, split, d, 300).unwrap().iter().map(content).collect() };
            let (train, dev, test) = (set(Split::Train), set(Split::Dev), set(Split::Test));
            for (a, b, what) in [(&train, &test, "train/test"), (&train, &dev, "train/dev"), (&dev, &test, "dev/test")] {
                assert!(a.is_disjoint(b), "{} d{d} shares tasks between {what}", s.name());
            }
            // The suites must also be varied enough to fill a split with mostly distinct tasks.
            assert!(
                train.len() >= 200 && dev.len() >= 150 && test.len() >= 200,
                "{} d{d}: only {} / {} / {} distinct",
                s.name(),
                train.len(),
                dev.len(),
                test.len()
            );
        }
    }
}

#[test]
fn generated_tasks_are_valid_and_round_trip_as_json() {
    for s in suites::generative() {
        for d in s.difficulties().unwrap() {
            for mut t in generate_many(s, 3, Split::Test, d, 25).unwrap() {
                let json = serde_json::to_string(&t).unwrap();
                assert_eq!(serde_json::from_str::<Task>(&json).unwrap(), t);
                let before = t.clone();
                validate_task(&mut t).unwrap_or_else(|e| panic!("{}: {e:?}", t.id));
                assert_eq!(t, before, "validation must not change a generated task");
                assert_eq!(t.optimal_steps, Some(t.reference.as_ref().unwrap().calls.len() as u32));
                assert!(t.optimal_steps.unwrap() < t.max_turns, "{}: no turn left for the answer", t.id);
                if d == 1 {
                    assert_eq!(t.optimal_steps, Some(1), "{}: level 1 must take one call", t.id);
                }
            }
        }
    }
}

fn all_tasks(per_level: u64) -> Vec<Task> {
    let mut tasks = Vec::new();
    for s in suites::generative() {
        for d in s.difficulties().unwrap() {
            for split in [Split::Train, Split::Test] {
                tasks.extend(generate_many(s, 11, split, d, per_level).unwrap());
            }
        }
    }
    tasks
}

#[test]
fn reference_plans_solve_every_task_in_optimal_steps() {
    let tasks = all_tasks(40);
    let refs: Vec<&Task> = tasks.iter().collect();
    let trajs = run(&refs, reference_script(&refs));
    for (t, tr) in tasks.iter().zip(&trajs) {
        assert!(tr.verdict.success, "{}: {} ({:?})\n{}", t.id, tr.verdict.reason, tr.termination, t.instruction);
        assert_eq!(tr.termination, Termination::FinalAnswer);
        assert_eq!(Some(tr.counts.tool_calls), t.optimal_steps, "{}", t.id);
        assert_eq!(tr.counts.turns, t.optimal_steps.unwrap() + 1);
        assert_eq!(tr.counts.invalid_steps, 0);
        assert!(tr.turns.iter().all(|r| r.valid && r.errors.is_empty()), "{}: {:?}", t.id, tr.turns);
    }
}

#[test]
fn wrong_answers_and_unfinished_plans_are_rejected() {
    let tasks = all_tasks(15);
    let refs: Vec<&Task> = tasks.iter().collect();
    let mut solve = reference_script(&refs);
    let trajs = run(&refs, |ep, turn, msgs| {
        let t = refs[ep];
        let plan = &t.reference.as_ref().unwrap().calls;
        match &t.expected {
            // Goal-state tasks: stop one call short, then claim to be done.
            Expected::State { .. } if turn + 1 >= plan.len() => "Answer: done".into(),
            Expected::State { .. } => solve(ep, turn, msgs),
            _ if turn < plan.len() => solve(ep, turn, msgs),
            _ => "Answer: Zzyzx 987654.321".into(),
        }
    });
    for (t, tr) in tasks.iter().zip(&trajs) {
        assert!(!tr.verdict.success, "{}: a wrong outcome was accepted: {}", t.id, tr.verdict.reason);
        assert_eq!(tr.verdict.score, 0.0);
    }
}

#[test]
fn fewshot_examples_are_valid_for_their_suites() {
    let prompts = Prompts::embedded().unwrap();
    // `mcp` tasks offer whatever tools their server has, and `env` tasks act in whatever environment they name, so
    // their built-in prompts show no examples (a config brings its own, e.g. prompts/mcp-sqlite.md, checked in the
    // MCP tests).
    for s in suites::all().iter().filter(|s| !["mcp", "env"].contains(&s.name())) {
        let p = prompts.get(s.name()).unwrap();
        assert!(!p.examples.is_empty(), "{} has no examples", s.name());
        let tools = s.tools(1);
        for ex in &p.examples {
            let mut sandbox = None;
            let documents = ex.iter().any(|m| m.tool_calls.iter().any(|c| c.name == "search" || c.name == "open"));
            if matches!(s.name(), "arithmetic" | "units" | "qa") && !documents {
                let t = generate(suites::get("units").unwrap(), TaskKey { seed: 0, split: Split::Train, difficulty: 1, index: 0 }).unwrap();
                sandbox = Some(suites::get("units").unwrap().sandbox(&t).unwrap());
            }
            let mut pending: Vec<String> = Vec::new();
            for (i, m) in ex.iter().enumerate() {
                match m.role {
                    Role::Assistant => match parse_turn(&m.content).unwrap_or_else(|e| panic!("{}: {e}", s.name())) {
                        Action::Calls(calls) => {
                            assert_eq!(m.tool_calls, calls);
                            if s.name() != "function_call" {
                                check_calls(&calls, &tools, 4).unwrap_or_else(|e| panic!("{}: {e}", s.name()));
                                assert_eq!(m.content, render_call(&calls[0]), "{}: examples should use the rendered form", s.name());
                            }
                            if let Some(sb) = sandbox.as_mut() {
                                pending = calls.iter().map(|c| sb.call(c).unwrap()).collect();
                            }
                        }
                        Action::Answer(a) => {
                            assert!(i == ex.len() - 1, "{}: an answer before the end of an example", s.name());
                            assert!(m.content.starts_with("Answer: "), "{}: answers must use `Answer: `, got {a}", s.name());
                        }
                    },
                    Role::Tool if sandbox.is_some() => {
                        assert_eq!(m.content, pending.remove(0), "{}: example tool output differs from the tool", s.name());
                    }
                    _ => {}
                }
            }
        }
    }
}

#[test]
fn initial_messages_switch_fewshot_and_tools() {
    use autodidact::agent::prompts::initial_messages;
    let prompts = Prompts::embedded().unwrap();
    let t = generate(suites::get("tables").unwrap(), TaskKey { seed: 0, split: Split::Train, difficulty: 1, index: 0 }).unwrap();
    let (with, n) = initial_messages(&t, &prompts, PromptOptions::default()).unwrap();
    assert!(n > 0 && with.len() == n + 2);
    assert!(with[0].content.contains("<tools>\n{") && with[0].content.contains("\"name\": \"lookup\""));
    assert!(!with[0].content.contains("{tools}"));
    assert_eq!(with.last().unwrap().content, t.instruction);
    let (without, n0) = initial_messages(&t, &prompts, PromptOptions { fewshot: false, tools_in_system: false, hint: None }).unwrap();
    assert_eq!((without.len(), n0), (2, 0));
    assert!(!without[0].content.contains("<tools>") && !without[0].content.contains("{tools}"));
}
