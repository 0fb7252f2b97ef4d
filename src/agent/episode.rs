//! Episodes: an explicit state machine per episode, many advanced together so that each round makes one
//! batched `Policy::turns` call.
//!
//! ```text
//! AwaitModel --model turn--> parse --calls--> ToolResponses --tools ran--> AwaitModel ...
//!                                  --answer-> Done(FinalAnswer)
//!                                  --invalid-> (feedback message) AwaitModel
//! any state --caps--> Done(TurnLimit | TurnTokenLimit | EpisodeTokenLimit | SandboxLimit)
//! ```
//! Function-call tasks (`Expected::Calls`) end after their first valid turn: the calls are judged, not run.
//! Invalid steps and tool failures become messages to the model and flags in the trajectory; nothing panics.
//! An episode succeeds only if it ends with a final answer and the verifier accepts it.
use std::collections::VecDeque;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::policy::{Policy, TurnOutput, TurnRequest};
use super::prompts::{conversation, initial_messages, PromptError, PromptOptions, Prompts};
use crate::data::{
    Counts, Expected, FinishReason, Message, Role, RunIdentity, StepError, StepErrorKind, Task, Termination, ToolCall, Trajectory, TurnRecord, Verdict,
};
use crate::tasks::env::{env_of, EnvSession, Start, Step};
use crate::tasks::external::External;
use crate::tasks::mcp::server_of;
use crate::tasks::suites::{self, Sandbox, SuiteError};
use crate::tools::scorer::score;
use crate::tools::toolcall::{parse_and_check, Action};
use crate::tools::verify::{verify, Outcome};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Limits {
    /// Caps every task's own `max_turns` (assistant turns).
    pub max_turns: Option<u32>,
    /// Tokens one model turn may generate.
    pub max_new_tokens: usize,
    /// Prompt + generated tokens of a whole episode.
    pub max_episode_tokens: usize,
    /// Tool calls executed per episode; more ends the episode with `SandboxLimit`.
    pub max_tool_calls: u32,
    /// Calls in one assistant turn; more is an invalid step.
    pub max_calls_per_turn: usize,
    /// Characters of one tool output shown to the model; the rest is cut with a note.
    pub max_tool_output_chars: usize,
    /// Episodes in flight at once (the policy's batch size); 0 means all.
    pub max_active: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_turns: None,
            max_new_tokens: 256,
            max_episode_tokens: 4096,
            max_tool_calls: 32,
            max_calls_per_turn: 4,
            max_tool_output_chars: 2000,
            max_active: 0,
        }
    }
}

impl Limits {
    /// The caps `rollout`, `eval` and the loop use: a few calls per turn, a dozen per episode, tool output cut
    /// at 1500 characters (a 135M model's context fills fast).
    pub fn agent(max_new_tokens: usize, max_episode_tokens: usize, max_turns: Option<u32>, max_active: usize) -> Self {
        Self { max_turns, max_new_tokens, max_episode_tokens, max_tool_calls: 12, max_calls_per_turn: 4, max_tool_output_chars: 1500, max_active }
    }
}

pub struct RunConfig<'a> {
    pub limits: Limits,
    pub prompts: &'a Prompts,
    pub prompt_options: PromptOptions,
    /// Copied into every trajectory.
    pub identity: RunIdentity,
    /// The MCP servers of `mcp` tasks and the environments of `env` tasks.
    pub external: &'a External,
}

impl RunConfig<'_> {
    /// A fresh world for one episode of `task`: its environment, its MCP server's sandbox, or its suite's.
    fn world(&self, task: &Task) -> Result<World, SuiteError> {
        match (env_of(task), &self.external.envs, server_of(task), &self.external.mcp) {
            (Some(_), Some(envs), _, _) => Ok(World::Env(Box::new(envs.session(task)?))),
            (_, _, Some(_), Some(servers)) => Ok(World::Sandbox(servers.sandbox(task)?)),
            _ => Ok(World::Sandbox(suites::get(&task.suite)?.sandbox(task)?)),
        }
    }

    /// Checks that `task` can run, starting no process.
    fn check(&self, task: &Task) -> Result<(), SuiteError> {
        match (env_of(task), &self.external.envs, server_of(task), &self.external.mcp) {
            (Some(_), Some(envs), _, _) => envs.check(task),
            (_, _, Some(_), Some(servers)) => servers.check(task),
            _ => self.world(task).map(drop),
        }
    }
}

/// Where an episode's actions go.
enum World {
    Sandbox(Box<dyn Sandbox>),
    Env(Box<EnvSession>),
}

impl World {
    /// Whether its work runs on a thread of its own, off the decoding batch: another process answers it.
    fn external(&self) -> bool {
        match self {
            World::Sandbox(s) => s.external(),
            World::Env(_) => true,
        }
    }
}

/// Work for an episode's world.
#[derive(Debug, Clone, PartialEq)]
enum Work {
    /// The calls to run; `over_limit` names the first call past the episode's cap, which ends it.
    Tools {
        calls: Vec<ToolCall>,
        over_limit: Option<String>,
    },
    Reset,
    /// An environment step: the action, and the tool's name when the action is a call.
    Step {
        action: Value,
        tool: Option<String>,
    },
}

/// What the world gave back.
enum Reply {
    Tools(Vec<Result<String, String>>),
    Reset(Result<Start, String>),
    Step(Result<Step, String>),
}

fn perform(world: &mut World, work: &Work) -> Reply {
    match (world, work) {
        (World::Sandbox(s), Work::Tools { calls, .. }) => Reply::Tools(calls.iter().map(|c| s.call(c)).collect()),
        (World::Env(_), w @ Work::Tools { .. }) => failed(w, "an environment's tools are its actions"),
        (World::Env(e), Work::Reset) => Reply::Reset(e.start()),
        (World::Env(e), Work::Step { action, .. }) => Reply::Step(e.step(action.clone())),
        (World::Sandbox(_), w) => failed(w, "not an environment"),
    }
}

/// `work`'s reply when it could not be done at all.
fn failed(work: &Work, why: &str) -> Reply {
    match work {
        Work::Tools { calls, .. } => Reply::Tools(calls.iter().map(|_| Err(why.to_string())).collect()),
        Work::Reset => Reply::Reset(Err(why.to_string())),
        Work::Step { .. } => Reply::Step(Err(why.to_string())),
    }
}

/// One episode to run: a task and which sample of it this is.
#[derive(Debug, Clone, Copy)]
pub struct Job<'a> {
    pub task: &'a Task,
    pub sample_index: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum EpisodeError {
    #[error(transparent)]
    Suite(#[from] SuiteError),
    #[error(transparent)]
    Prompt(#[from] PromptError),
    #[error("policy failed: {0:#}")]
    Policy(anyhow::Error),
    #[error("policy broke its contract: {0}")]
    PolicyContract(String),
}

#[derive(Debug, Clone, PartialEq)]
enum State {
    AwaitModel,
    /// Work for the world, not yet started.
    Work(Work),
    /// The world is on a thread of its own, doing this work.
    Away(Work),
    Done(Termination),
}

struct Episode<'a> {
    job: usize,
    task: &'a Task,
    sample_index: u32,
    /// `None` while away.
    world: Option<World>,
    /// The tools offered: the task's, or those its environment gave at reset.
    tools: Vec<Value>,
    state: State,
    max_turns: u32,
    messages: Vec<Message>,
    fewshot: usize,
    privileged: Option<String>,
    token_ids: Vec<u32>,
    mask: Vec<u8>,
    logprobs: Vec<f32>,
    turns: Vec<TurnRecord>,
    counts: Counts,
    answer: Option<String>,
    judged_calls: Option<Vec<ToolCall>>,
    started: Instant,
}

/// Summary of a run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunStats {
    pub episodes: usize,
    /// Rounds, i.e. batched `Policy::turns` calls.
    pub rounds: usize,
    /// Largest batch sent to the policy.
    pub max_batch: usize,
}

/// How long the model waits, once one away episode is back, for others that are about to come back too, so
/// that they share a batch.
const REJOIN_GRACE: Duration = Duration::from_millis(5);

/// Runs every job to completion. Each round asks the policy for one turn of every episode waiting for the
/// model, in one call; finished trajectories go to `on_done` as soon as they finish. An episode whose tool calls
/// or environment step go to another process leaves the batch while they run, on a thread of its own, and
/// rejoins it when they are answered. Task, suite and prompt errors are reported before the policy is called.
pub fn run_episodes<P: Policy + ?Sized>(
    policy: &mut P,
    jobs: &[Job<'_>],
    cfg: &RunConfig<'_>,
    mut on_done: impl FnMut(Trajectory),
) -> Result<RunStats, EpisodeError> {
    for job in jobs {
        // A server or environment starts only when its episode first needs it.
        cfg.check(job.task)?;
        cfg.prompts.get(&job.task.suite)?;
    }
    let limits = &cfg.limits;
    let max_active = if limits.max_active == 0 { jobs.len() } else { limits.max_active };
    let mut pending: VecDeque<usize> = (0..jobs.len()).collect();
    let mut active: Vec<Episode<'_>> = Vec::new();
    let mut stats = RunStats { episodes: jobs.len(), ..Default::default() };
    let (back_tx, back) = mpsc::channel::<(usize, World, Reply)>();
    loop {
        while active.len() < max_active {
            let Some(j) = pending.pop_front() else { break };
            active.push(start(j, jobs[j], cfg)?);
        }
        if active.is_empty() {
            break;
        }
        for ep in active.iter_mut() {
            ep.check_budget(limits);
            // Work left from the last round (an environment's first reset) starts before the model decodes.
            ep.dispatch(cfg, limits, &back_tx)?;
        }
        let waiting: Vec<usize> = (0..active.len()).filter(|&i| active[i].state == State::AwaitModel).collect();
        if !waiting.is_empty() {
            let requests: Vec<TurnRequest<'_>> = waiting
                .iter()
                .map(|&i| {
                    let ep = &active[i];
                    TurnRequest {
                        episode: ep.job,
                        messages: &ep.messages,
                        tools: &ep.tools,
                        max_new_tokens: limits.max_new_tokens.min(limits.max_episode_tokens.saturating_sub(ep.token_ids.len())),
                    }
                })
                .collect();
            let outputs = policy.turns(&requests).map_err(EpisodeError::Policy)?;
            drop(requests);
            if outputs.len() != waiting.len() {
                return Err(EpisodeError::PolicyContract(format!("{} outputs for {} requests", outputs.len(), waiting.len())));
            }
            stats.rounds += 1;
            stats.max_batch = stats.max_batch.max(waiting.len());
            for (&i, out) in waiting.iter().zip(outputs) {
                active[i].apply_turn(out, limits)?;
            }
        }
        for ep in active.iter_mut() {
            ep.dispatch(cfg, limits, &back_tx)?;
        }
        // Take back what is done; wait only when the model has nothing else to do.
        let idle = active.iter().all(|ep| matches!(ep.state, State::Away(_)));
        let mut returned: Vec<(usize, World, Reply)> = back.try_iter().collect();
        if idle && returned.is_empty() {
            returned.extend(back.recv().ok());
            while let Ok(r) = back.recv_timeout(REJOIN_GRACE) {
                returned.push(r);
            }
        }
        for (job, world, result) in returned {
            if let Some(ep) = active.iter_mut().find(|ep| ep.job == job) {
                ep.world = Some(world);
                ep.complete(result, cfg, limits)?;
            }
        }
        let mut i = 0;
        while i < active.len() {
            if matches!(active[i].state, State::Done(_)) {
                let ep = active.swap_remove(i);
                policy.episode_done(ep.job);
                on_done(ep.finish(&cfg.identity));
            } else {
                i += 1;
            }
        }
    }
    Ok(stats)
}

fn start<'a>(job: usize, j: Job<'a>, cfg: &RunConfig<'_>) -> Result<Episode<'a>, EpisodeError> {
    let world = cfg.world(j.task)?;
    let privileged = cfg.prompt_options.hint.and_then(|spec| super::hint::privileged(j.task, spec.source));
    let max_turns = cfg.limits.max_turns.map_or(j.task.max_turns, |m| m.min(j.task.max_turns));
    // An environment's conversation starts from its first observation, once reset.
    let (messages, fewshot, state) = match world {
        World::Env(_) => (Vec::new(), 0, State::Work(Work::Reset)),
        World::Sandbox(_) => {
            let (m, f) = initial_messages(j.task, cfg.prompts, cfg.prompt_options)?;
            (m, f, State::AwaitModel)
        }
    };
    Ok(Episode {
        job,
        task: j.task,
        sample_index: j.sample_index,
        world: Some(world),
        tools: j.task.tools.clone(),
        state,
        max_turns,
        messages,
        fewshot,
        privileged,
        token_ids: Vec::new(),
        mask: Vec::new(),
        logprobs: Vec::new(),
        turns: Vec::new(),
        counts: Counts::default(),
        answer: None,
        judged_calls: None,
        started: Instant::now(),
    })
}

/// An environment turn as its action: a call where the environment offers tools (one a turn), else the text,
/// which comes back as `Action::Answer`.
fn env_action(text: &str, tools: &[Value]) -> Result<Action, StepError> {
    let action = text.trim();
    if action.is_empty() {
        return Err(StepError::new(StepErrorKind::EmptyMessage, "the message is empty"));
    }
    if tools.is_empty() {
        return Ok(Action::Answer(action.to_string()));
    }
    match parse_and_check(text, tools, 1) {
        Ok(Action::Calls(calls)) => Ok(Action::Calls(calls)),
        Ok(Action::Answer(_)) => Ok(Action::Answer(action.to_string())),
        Err(e) if e.kind == StepErrorKind::EmptyMessage => Ok(Action::Answer(action.to_string())),
        Err(e) => Err(e),
    }
}

/// The message that tells the model what was wrong with its step.
fn feedback(e: &StepError) -> Message {
    let hint = "Call a tool as <tool_call>\n{\"name\": ..., \"arguments\": {...}}\n</tool_call> or give the final answer as Answer: ...";
    let text = format!("Error: {}. {hint}", e.message);
    match e.kind {
        StepErrorKind::EmptyMessage => Message::user(text),
        _ => Message::tool(None, text),
    }
}

fn truncate(s: String, max_chars: usize) -> String {
    match s.char_indices().nth(max_chars) {
        None => s,
        Some((cut, _)) => {
            let rest = s[cut..].chars().count();
            format!("{}\n[output truncated: {rest} more characters]", &s[..cut])
        }
    }
}

impl Episode<'_> {
    /// Turn and token caps, checked before asking the model for another turn.
    fn check_budget(&mut self, limits: &Limits) {
        if self.state != State::AwaitModel {
            return;
        }
        if self.counts.turns >= self.max_turns {
            self.state = State::Done(Termination::TurnLimit);
        } else if self.token_ids.len() >= limits.max_episode_tokens {
            self.state = State::Done(Termination::EpisodeTokenLimit);
        }
    }

    fn in_env(&self) -> bool {
        env_of(self.task).is_some()
    }

    fn apply_turn(&mut self, out: TurnOutput, limits: &Limits) -> Result<(), EpisodeError> {
        if out.logprobs.len() != out.sampled_ids.len() {
            return Err(EpisodeError::PolicyContract(format!("{} logprobs for {} sampled tokens", out.logprobs.len(), out.sampled_ids.len())));
        }
        self.token_ids.extend(&out.prompt_delta_ids);
        self.mask.extend(std::iter::repeat_n(0u8, out.prompt_delta_ids.len()));
        self.logprobs.extend(std::iter::repeat_n(0f32, out.prompt_delta_ids.len()));
        self.token_ids.extend(&out.sampled_ids);
        self.mask.extend(std::iter::repeat_n(1u8, out.sampled_ids.len()));
        self.logprobs.extend(&out.logprobs);
        let generated = out.sampled_ids.len() as u32;
        self.counts.turns += 1;
        self.counts.generated_tokens += generated;

        let parsed = if self.in_env() { env_action(&out.text, &self.tools) } else { parse_and_check(&out.text, &self.tools, limits.max_calls_per_turn) };
        let mut msg = Message::assistant(out.text);
        if let Ok(Action::Calls(calls)) = &parsed {
            msg.tool_calls = calls.clone();
        }
        self.messages.push(msg);
        let mut record = TurnRecord { valid: parsed.is_ok(), errors: Vec::new(), tool_calls: 0, generated_tokens: generated, finish: out.finish, reward: None };
        if out.finish == FinishReason::Length {
            // A cut turn is never acted on: its calls or answer may be incomplete.
            self.turns.push(record);
            self.state = State::Done(Termination::TurnTokenLimit);
            return Ok(());
        }
        let judge_calls = matches!(self.task.expected, Expected::Calls { .. });
        self.state = match parsed {
            Err(e) => {
                self.counts.invalid_steps += 1;
                self.messages.push(if self.in_env() && self.tools.is_empty() {
                    Message::user(format!("Error: {}. Reply with one action.", e.message))
                } else {
                    feedback(&e)
                });
                record.errors.push(e);
                State::AwaitModel
            }
            // In an environment every turn is an action: a call where it offers tools, else the text.
            Ok(Action::Calls(mut calls)) if self.in_env() => {
                let call = calls.remove(0);
                State::Work(Work::Step { action: json!({"name": call.name, "arguments": call.arguments}), tool: Some(call.name) })
            }
            Ok(Action::Answer(text)) if self.in_env() => State::Work(Work::Step { action: Value::String(text), tool: None }),
            Ok(Action::Answer(a)) => {
                if judge_calls {
                    self.judged_calls = Some(Vec::new());
                }
                self.answer = Some(a);
                State::Done(Termination::FinalAnswer)
            }
            Ok(Action::Calls(calls)) if judge_calls => {
                self.judged_calls = Some(calls);
                State::Done(Termination::FinalAnswer)
            }
            Ok(Action::Calls(_)) if self.token_ids.len() >= limits.max_episode_tokens => State::Done(Termination::EpisodeTokenLimit),
            Ok(Action::Calls(mut calls)) => {
                let room = limits.max_tool_calls.saturating_sub(self.counts.tool_calls) as usize;
                let over_limit = calls.get(room).map(|c| c.name.clone());
                calls.truncate(room);
                State::Work(Work::Tools { calls, over_limit })
            }
        };
        self.turns.push(record);
        Ok(())
    }

    /// Starts the episode's work: here, or on a thread of its own when another process does it.
    fn dispatch(&mut self, cfg: &RunConfig<'_>, limits: &Limits, back: &mpsc::Sender<(usize, World, Reply)>) -> Result<(), EpisodeError> {
        let State::Work(work) = &self.state else { return Ok(()) };
        let work = work.clone();
        let Some(mut world) = self.world.take() else { return Ok(()) };
        if world.external() {
            let (job, back, w) = (self.job, back.clone(), work.clone());
            std::thread::spawn(move || {
                // A panic in the user's tool code must not leave the episode away for ever.
                let reply =
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| perform(&mut world, &w))).unwrap_or_else(|_| failed(&w, "the tool panicked"));
                let _ = back.send((job, world, reply));
            });
            self.state = State::Away(work);
            Ok(())
        } else {
            let reply = perform(&mut world, &work);
            self.world = Some(world);
            self.state = State::Away(work);
            self.complete(reply, cfg, limits)
        }
    }

    /// Takes in what the world gave back for the work the episode was away on.
    fn complete(&mut self, reply: Reply, cfg: &RunConfig<'_>, limits: &Limits) -> Result<(), EpisodeError> {
        let State::Away(work) = std::mem::replace(&mut self.state, State::AwaitModel) else { return Ok(()) };
        match (work, reply) {
            (Work::Tools { calls, over_limit }, Reply::Tools(results)) => {
                let mut errors = Vec::new();
                for (i, (call, result)) in calls.iter().zip(results).enumerate() {
                    self.counts.tool_calls += 1;
                    let content = result.unwrap_or_else(|msg| {
                        errors.push(StepError::new(StepErrorKind::ToolFailed, msg.clone()).at(i));
                        format!("Error: {msg}")
                    });
                    self.messages.push(Message::tool(Some(&call.name), truncate(content, limits.max_tool_output_chars)));
                }
                if let Some(name) = over_limit {
                    self.messages.push(Message::tool(Some(&name), format!("Error: the limit of {} tool calls is reached.", limits.max_tool_calls)));
                    self.state = State::Done(Termination::SandboxLimit);
                }
                if let Some(r) = self.turns.last_mut() {
                    r.tool_calls = calls.len() as u32;
                    r.errors.extend(errors);
                }
            }
            (Work::Reset, Reply::Reset(Ok(start))) => {
                let user =
                    if self.task.instruction.trim().is_empty() { start.observation } else { format!("{}\n\n{}", self.task.instruction, start.observation) };
                self.tools = start.tools;
                let (messages, fewshot) = conversation(self.task, &self.tools, truncate(user, limits.max_tool_output_chars), cfg.prompts, cfg.prompt_options)?;
                self.messages = messages;
                self.fewshot = fewshot;
            }
            (Work::Step { tool, .. }, Reply::Step(Ok(step))) => {
                if tool.is_some() {
                    self.counts.tool_calls += 1;
                }
                let obs = truncate(step.observation, limits.max_tool_output_chars);
                self.messages.push(match &tool {
                    Some(name) => Message::tool(Some(name), obs),
                    None => Message::user(obs),
                });
                if let Some(r) = self.turns.last_mut() {
                    r.reward = Some(step.reward);
                    r.tool_calls = tool.is_some() as u32;
                }
                if step.terminated {
                    self.state = State::Done(Termination::Terminated);
                } else if step.truncated {
                    self.state = State::Done(Termination::Truncated);
                }
            }
            (_, Reply::Reset(Err(msg)) | Reply::Step(Err(msg))) => {
                let e = StepError::new(StepErrorKind::EnvironmentFailed, msg);
                match self.turns.last_mut() {
                    Some(r) => r.errors.push(e),
                    // The reset failed: a trajectory without turns still says why.
                    None => self.turns.push(TurnRecord {
                        valid: false,
                        errors: vec![e],
                        tool_calls: 0,
                        generated_tokens: 0,
                        finish: FinishReason::Stop,
                        reward: None,
                    }),
                }
                self.state = State::Done(Termination::EnvironmentFailed);
            }
            (work, _) => return Err(EpisodeError::PolicyContract(format!("the world answered other work than {work:?}"))),
        }
        Ok(())
    }

    fn finish(self, identity: &RunIdentity) -> Trajectory {
        let termination = match self.state {
            State::Done(t) => t,
            _ => Termination::TurnLimit,
        };
        let (state, reward) = match &self.world {
            Some(World::Sandbox(s)) => (s.state(), None),
            Some(World::Env(e)) => (None, Some(e.score())),
            None => (None, None),
        };
        let verdict = if termination == Termination::EnvironmentFailed {
            Verdict { success: false, score: 0.0, reason: "the environment failed".into() }
        } else if termination == Termination::FinalAnswer || reward.is_some() {
            let outcome = Outcome { answer: self.answer.as_deref(), calls: self.judged_calls.as_deref(), state, reward };
            verify(&self.task.expected, &outcome)
        } else {
            Verdict { success: false, score: 0.0, reason: format!("no final answer: the episode ended by {termination:?}") }
        };
        debug_assert!(self.messages.iter().filter(|m| m.role == Role::Assistant).count() >= self.turns.len());
        let scorer = match &self.task.expected {
            Expected::Scorer(spec) => Some(spec),
            _ => None,
        };
        let mut t = Trajectory {
            task_id: self.task.id.clone(),
            suite: self.task.suite.clone(),
            split: self.task.split,
            difficulty: self.task.difficulty,
            identity: identity.clone(),
            sample_index: self.sample_index,
            messages: self.messages,
            tools: Some(self.tools),
            fewshot_messages: self.fewshot,
            privileged: self.privileged,
            token_ids: self.token_ids,
            produced_mask: self.mask,
            logprobs: self.logprobs,
            turns: self.turns,
            verdict,
            counts: self.counts,
            wall_ms: self.started.elapsed().as_millis() as u64,
            termination,
        };
        // The user's scorer judges every finished episode, whatever ended it.
        if let Some(spec) = scorer {
            t.verdict = score(spec, &t);
        }
        t
    }
}
