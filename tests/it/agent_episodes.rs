//! Episodes with scripted policies: token bookkeeping, batching, invalid steps, every limit, tool failures,
//! function-call tasks, and errors that must come before the model runs.
use autodidact::agent::episode::{run_episodes, EpisodeError, Job, Limits, RunConfig};
use autodidact::agent::policy::{FinishReason, Policy, TurnOutput, TurnRequest};
use autodidact::agent::prompts::{PromptOptions, Prompts};
use autodidact::agent::scripted::{reference_script, ScriptedPolicy, TurnScript, EOT, SCRIPTED_LOGPROB};
use autodidact::data::{Message, Role, Split, StepErrorKind, Task, Termination, Trajectory};
use autodidact::tasks::suites::{self, generate, generate_many, TaskKey};
use autodidact::tasks::taskfile::load_tasks;

fn task(suite: &str, difficulty: u8, index: u64) -> Task {
    generate(suites::get(suite).unwrap(), TaskKey { seed: 5, split: Split::Train, difficulty, index }).unwrap()
}

fn big_limits() -> Limits {
    Limits { max_episode_tokens: 1 << 20, ..Limits::default() }
}

fn run_with<P: Policy>(policy: &mut P, tasks: &[&Task], limits: Limits) -> Result<Vec<Trajectory>, EpisodeError> {
    let prompts = Prompts::embedded().unwrap();
    let cfg = RunConfig { limits, prompts: &prompts, prompt_options: PromptOptions::default(), identity: Default::default(), external: &Default::default() };
    let jobs: Vec<Job> = tasks.iter().map(|t| Job { task: t, sample_index: 3 }).collect();
    let mut out = Vec::new();
    run_episodes(policy, &jobs, &cfg, |t| out.push(t))?;
    Ok(out)
}

fn run_script(tasks: &[&Task], limits: Limits, script: impl FnMut(usize, usize, &[Message]) -> TurnScript) -> Vec<Trajectory> {
    run_with(&mut ScriptedPolicy::new(script), tasks, limits).unwrap()
}

#[test]
fn tokens_masks_and_logprobs_concatenate_turns() {
    let t = task("arithmetic", 1, 0);
    let calc = autodidact::tools::toolcall::render_call(&t.reference.as_ref().unwrap().calls[0]);
    let tr = &run_script(&[&t], big_limits(), reference_script(&[&t]))[0];
    assert!(tr.verdict.success);
    assert_eq!(tr.sample_index, 3);
    assert_eq!(tr.token_ids.len(), tr.produced_mask.len());
    assert_eq!(tr.token_ids.len(), tr.logprobs.len());
    // Produced tokens are exactly the two turns' bytes plus their end-of-turn tokens.
    let produced: Vec<u32> = tr.token_ids.iter().zip(&tr.produced_mask).filter(|(_, m)| **m == 1).map(|(t, _)| *t).collect();
    let mut expected: Vec<u32> = calc.bytes().map(|b| u32::from(b) + 1).collect();
    expected.push(EOT);
    expected.extend(format!("Answer: {}", t.reference.as_ref().unwrap().answer).bytes().map(|b| u32::from(b) + 1));
    expected.push(EOT);
    assert_eq!(produced, expected);
    assert_eq!(tr.counts.generated_tokens as usize, expected.len());
    for (m, lp) in tr.produced_mask.iter().zip(&tr.logprobs) {
        assert_eq!(*lp, if *m == 1 { SCRIPTED_LOGPROB } else { 0.0 });
    }
    // The mask starts with the prompt and ends with the model's last end-of-turn token.
    assert_eq!(tr.produced_mask[0], 0);
    assert_eq!(*tr.produced_mask.last().unwrap(), 1);
    // Two model turns: prompt, turn 1, tool delta, turn 2 = four runs of the mask.
    let runs = 1 + tr.produced_mask.windows(2).filter(|w| w[0] != w[1]).count();
    assert_eq!(runs, 4);
    let roles: Vec<Role> = tr.messages[tr.fewshot_messages + 1..].iter().map(|m| m.role).collect();
    assert_eq!(roles, [Role::User, Role::Assistant, Role::Tool, Role::Assistant]);
    assert_eq!(tr.messages[tr.fewshot_messages + 2].tool_calls, t.reference.as_ref().unwrap().calls);
}

#[test]
fn each_round_is_one_batched_call_and_trajectories_stream_out() {
    let mut tasks: Vec<Task> = generate_many(suites::get("grid").unwrap(), 2, Split::Train, 3, 6).unwrap();
    tasks.extend(generate_many(suites::get("grid").unwrap(), 2, Split::Train, 1, 6).unwrap());
    let refs: Vec<&Task> = tasks.iter().collect();
    let mut policy = ScriptedPolicy::new(reference_script(&refs));
    let trajs = run_with(&mut policy, &refs, big_limits()).unwrap();
    assert_eq!(policy.batches[0], 12, "the first round must batch every episode");
    let longest = tasks.iter().map(|t| t.optimal_steps.unwrap() as usize + 1).max().unwrap();
    assert_eq!(policy.batches.len(), longest, "one policy call per round");
    assert!(policy.batches.windows(2).all(|w| w[0] >= w[1]));
    // Level-1 episodes (2 turns) finish before the level-3 ones and are emitted first.
    assert!(trajs[..6].iter().all(|t| t.difficulty == 1), "{:?}", trajs.iter().map(|t| t.difficulty).collect::<Vec<_>>());
    assert_eq!(policy.finished.len(), 12);

    let mut limited = ScriptedPolicy::new(reference_script(&refs));
    let trajs = run_with(&mut limited, &refs, Limits { max_active: 5, ..big_limits() }).unwrap();
    assert_eq!(trajs.len(), 12);
    assert!(trajs.iter().all(|t| t.verdict.success));
    assert!(limited.batches.iter().all(|&b| b <= 5) && limited.batches[0] == 5);
}

#[test]
fn malformed_steps_are_recorded_and_answered_with_feedback() {
    let t = task("arithmetic", 1, 1);
    let good = autodidact::tools::toolcall::render_call(&t.reference.as_ref().unwrap().calls[0]);
    let answer = format!("Answer: {}", t.reference.as_ref().unwrap().answer);
    let script = [
        "<tool_call>{\"name\": \"calculator\", \"arguments\": {</tool_call>",
        "<tool_call>{\"name\": \"abacus\", \"arguments\": {}}</tool_call>",
        "<tool_call>{\"name\": \"calculator\", \"arguments\": {\"expr\": \"1\"}}</tool_call>",
        "   ",
        &good,
        &answer,
    ];
    let limits = Limits { max_turns: Some(10), ..big_limits() };
    let mut t10 = t.clone();
    t10.max_turns = 10;
    let tr = &run_script(&[&t10], limits, |_, turn, _| script[turn].into())[0];
    assert!(tr.verdict.success, "{}", tr.verdict.reason);
    assert_eq!(tr.counts.invalid_steps, 4);
    assert_eq!(tr.counts.turns, 6);
    assert_eq!(tr.counts.tool_calls, 1);
    let kinds: Vec<Option<StepErrorKind>> = tr.turns.iter().map(|r| r.errors.first().map(|e| e.kind)).collect();
    assert_eq!(
        kinds,
        [
            Some(StepErrorKind::MalformedJson),
            Some(StepErrorKind::UnknownTool),
            Some(StepErrorKind::SchemaViolation),
            Some(StepErrorKind::EmptyMessage),
            None,
            None
        ]
    );
    assert!(tr.turns[..4].iter().all(|r| !r.valid) && tr.turns[4..].iter().all(|r| r.valid));
    let feedback: Vec<&Message> = tr.messages.iter().filter(|m| m.content.starts_with("Error:")).collect();
    assert_eq!(feedback.len(), 4);
    assert!(feedback[1].content.contains("unknown tool `abacus`") && feedback[1].role == Role::Tool);
    assert_eq!(feedback[3].role, Role::User);
}

#[test]
fn limits_end_episodes() {
    let t = task("arithmetic", 2, 0);
    let call = autodidact::tools::toolcall::render_call(&t.reference.as_ref().unwrap().calls[0]);
    // Turn limit: a policy that never answers.
    let tr = &run_script(&[&t], big_limits(), |_, _, _| call.clone().into())[0];
    assert_eq!(tr.termination, Termination::TurnLimit);
    assert_eq!(tr.counts.turns, t.max_turns);
    assert!(!tr.verdict.success);
    let tr = &run_script(&[&t], Limits { max_turns: Some(2), ..big_limits() }, |_, _, _| call.clone().into())[0];
    assert_eq!(tr.counts.turns, 2);
    // Per-turn token limit: a cut turn ends the episode even if it holds an answer.
    let tr = &run_script(&[&t], big_limits(), |_, _, _| TurnScript { text: "Answer: 1".into(), finish: FinishReason::Length })[0];
    assert_eq!(tr.termination, Termination::TurnTokenLimit);
    assert!(!tr.verdict.success && tr.counts.turns == 1);
    // Episode token limit: the prompt alone exceeds it.
    let tr = &run_script(&[&t], Limits { max_episode_tokens: 100, ..Limits::default() }, |_, _, _| call.clone().into())[0];
    assert_eq!(tr.termination, Termination::EpisodeTokenLimit);
    // Sandbox limit: too many tool calls in the episode.
    let three = format!("{call}\n{call}\n{call}");
    let tr = &run_script(&[&t], Limits { max_tool_calls: 4, ..big_limits() }, |_, _, _| three.clone().into())[0];
    assert_eq!(tr.termination, Termination::SandboxLimit);
    assert_eq!(tr.counts.tool_calls, 4);
    // Too many calls in one turn is an invalid step, not a crash.
    let tr =
        &run_script(&[&t], Limits { max_calls_per_turn: 2, ..big_limits() }, |_, turn, _| if turn == 0 { three.clone().into() } else { "Answer: 0".into() })[0];
    assert_eq!(tr.turns[0].errors[0].kind, StepErrorKind::TooManyCalls);
}

#[test]
fn tool_failures_are_observations_and_outputs_are_truncated() {
    let t = task("files", 1, 0);
    let script = |_: usize, turn: usize, _: &[Message]| -> TurnScript {
        match turn {
            0 => "<tool_call>\n{\"name\": \"cat\", \"arguments\": {\"path\": \"/no/such/file\"}}\n</tool_call>".into(),
            1 => "<tool_call>\n{\"name\": \"grep\", \"arguments\": {\"path\": \"/\", \"pattern\": \"\"}}\n</tool_call>".into(),
            _ => "Answer: done".into(),
        }
    };
    let tr = &run_script(&[&t], Limits { max_tool_output_chars: 40, ..big_limits() }, script)[0];
    assert_eq!(tr.counts.invalid_steps, 0);
    assert!(tr.turns[0].valid);
    assert_eq!(tr.turns[0].errors[0].kind, StepErrorKind::ToolFailed);
    let tool_msgs: Vec<&Message> = tr.messages[tr.fewshot_messages + 1..].iter().filter(|m| m.role == Role::Tool).collect();
    assert!(tool_msgs[0].content.starts_with("Error: no such file"));
    assert!(tool_msgs[1].content.contains("[output truncated:"), "{}", tool_msgs[1].content);
    assert!(tool_msgs[1].content.chars().count() < 90);
}

#[test]
fn function_call_tasks_judge_the_first_turn() {
    let tasks = load_tasks(std::path::Path::new("tasks/examples_function_call.jsonl")).unwrap();
    let by_id = |id: &str| tasks.iter().find(|t| t.id == id).unwrap();
    let weather = by_id("fc-weather");
    let nothing = by_id("fc-nothing");
    let parallel = by_id("fc-parallel");
    let texts = [
        "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\", \"unit\": \"celsius\"}}\n</tool_call>",
        "Answer: I'm fine, thanks!",
        "<tool_call>\n{\"name\": \"send_text\", \"arguments\": {\"to\": \"Sam\", \"message\": \"I will be late\"}}\n</tool_call>\n<tool_call>\n{\"name\": \"book_table\", \"arguments\": {\"restaurant\": \"Luigi's\", \"people\": 2, \"time\": \"19:00\"}}\n</tool_call>",
    ];
    let trajs = run_script(&[weather, nothing, parallel], big_limits(), |ep, _, _| texts[ep].into());
    for tr in &trajs {
        assert!(tr.verdict.success, "{}: {}", tr.task_id, tr.verdict.reason);
        assert_eq!((tr.counts.turns, tr.counts.tool_calls), (1, 0), "nothing is executed");
    }
    let wrong = run_script(&[weather, nothing], big_limits(), |ep, _, _| texts[1 - ep].into());
    assert!(wrong.iter().all(|t| !t.verdict.success));
}

#[test]
fn bad_setup_fails_before_the_model_runs() {
    struct Panics;
    impl Policy for Panics {
        fn turns(&mut self, _: &[TurnRequest<'_>]) -> anyhow::Result<Vec<TurnOutput>> {
            panic!("the policy must not be called")
        }
    }
    let good = task("grid", 1, 0);
    let mut bad = good.clone();
    bad.suite = "chess".into();
    let e = run_with(&mut Panics, &[&good, &bad], big_limits()).unwrap_err();
    assert!(e.to_string().contains("unknown suite `chess`"), "{e}");
    let mut bad = good.clone();
    bad.data = autodidact::data::TaskData::None;
    assert!(run_with(&mut Panics, &[&good, &bad], big_limits()).is_err());

    struct Short;
    impl Policy for Short {
        fn turns(&mut self, _: &[TurnRequest<'_>]) -> anyhow::Result<Vec<TurnOutput>> {
            Ok(Vec::new())
        }
    }
    assert!(matches!(run_with(&mut Short, &[&good], big_limits()), Err(EpisodeError::PolicyContract(_))));
}
