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
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::policy::{Policy, TurnOutput, TurnRequest};
use super::prompts::{initial_messages, PromptError, PromptOptions, Prompts};
use crate::data::{
    Counts, Expected, FinishReason, Message, Role, RunIdentity, StepError, StepErrorKind, Task, Termination, ToolCall, Trajectory, TurnRecord, Verdict,
};
use crate::tasks::mcp::{server_of, McpServers};
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
    /// The MCP servers of `mcp` tasks.
    pub mcp: Option<&'a McpServers>,
}

impl RunConfig<'_> {
    /// A fresh sandbox for one episode of `task`: its MCP server's, or its suite's.
    fn sandbox(&self, task: &Task) -> Result<Box<dyn Sandbox>, SuiteError> {
        match (server_of(task), self.mcp) {
            (Some(_), Some(servers)) => servers.sandbox(task),
            _ => suites::get(&task.suite)?.sandbox(task),
        }
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
    ToolResponses(Vec<ToolCall>),
    Done(Termination),
}

struct Episode<'a> {
    job: usize,
    task: &'a Task,
    sample_index: u32,
    sandbox: Box<dyn Sandbox>,
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

/// Runs every job to completion. Each round asks the policy for one turn of every episode waiting for the
/// model, in one call; finished trajectories go to `on_done` as soon as they finish. Task, suite and prompt
/// errors are reported before the policy is called at all.
pub fn run_episodes<P: Policy + ?Sized>(
    policy: &mut P,
    jobs: &[Job<'_>],
    cfg: &RunConfig<'_>,
    mut on_done: impl FnMut(Trajectory),
) -> Result<RunStats, EpisodeError> {
    for job in jobs {
        // Checked before any episode starts; an MCP server starts only when its episode first calls it.
        match (server_of(job.task), cfg.mcp) {
            (Some(_), Some(servers)) => servers.check(job.task)?,
            _ => drop(cfg.sandbox(job.task)?),
        }
        cfg.prompts.get(&job.task.suite)?;
    }
    let limits = &cfg.limits;
    let max_active = if limits.max_active == 0 { jobs.len() } else { limits.max_active };
    let mut pending: VecDeque<usize> = (0..jobs.len()).collect();
    let mut active: Vec<Episode<'_>> = Vec::new();
    let mut stats = RunStats { episodes: jobs.len(), ..Default::default() };
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
                        tools: &ep.task.tools,
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
            ep.run_tools(limits);
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
    let sandbox = cfg.sandbox(j.task)?;
    let (messages, fewshot) = initial_messages(j.task, cfg.prompts, cfg.prompt_options)?;
    let privileged = cfg.prompt_options.hint.and_then(|spec| super::hint::privileged(j.task, spec.source));
    let max_turns = cfg.limits.max_turns.map_or(j.task.max_turns, |m| m.min(j.task.max_turns));
    Ok(Episode {
        job,
        task: j.task,
        sample_index: j.sample_index,
        sandbox,
        state: State::AwaitModel,
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

        let parsed = parse_and_check(&out.text, &self.task.tools, limits.max_calls_per_turn);
        let mut msg = Message::assistant(out.text);
        if let Ok(Action::Calls(calls)) = &parsed {
            msg.tool_calls = calls.clone();
        }
        self.messages.push(msg);
        let mut record = TurnRecord { valid: parsed.is_ok(), errors: Vec::new(), tool_calls: 0, generated_tokens: generated, finish: out.finish };
        if out.finish == FinishReason::Length {
            // A cut turn is never acted on: its calls or answer may be incomplete.
            self.turns.push(record);
            self.state = State::Done(Termination::TurnTokenLimit);
            return Ok(());
        }
        let judge_calls = matches!(self.task.expected, Expected::Calls { .. });
        self.state = match parsed {
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
            Ok(Action::Calls(calls)) if self.token_ids.len() >= limits.max_episode_tokens => {
                drop(calls);
                State::Done(Termination::EpisodeTokenLimit)
            }
            Ok(Action::Calls(calls)) => State::ToolResponses(calls),
            Err(e) => {
                self.counts.invalid_steps += 1;
                self.messages.push(feedback(&e));
                record.errors.push(e);
                State::AwaitModel
            }
        };
        self.turns.push(record);
        Ok(())
    }

    fn run_tools(&mut self, limits: &Limits) {
        if !matches!(self.state, State::ToolResponses(_)) {
            return;
        }
        let State::ToolResponses(calls) = std::mem::replace(&mut self.state, State::AwaitModel) else {
            return;
        };
        let record = self.turns.last_mut();
        let mut errors = Vec::new();
        let mut ran = 0;
        for (i, call) in calls.iter().enumerate() {
            if self.counts.tool_calls >= limits.max_tool_calls {
                self.messages.push(Message::tool(Some(&call.name), format!("Error: the limit of {} tool calls is reached.", limits.max_tool_calls)));
                self.state = State::Done(Termination::SandboxLimit);
                break;
            }
            self.counts.tool_calls += 1;
            ran += 1;
            let content = match self.sandbox.call(call) {
                Ok(out) => out,
                Err(msg) => {
                    errors.push(StepError::new(StepErrorKind::ToolFailed, msg.clone()).at(i));
                    format!("Error: {msg}")
                }
            };
            self.messages.push(Message::tool(Some(&call.name), truncate(content, limits.max_tool_output_chars)));
        }
        if let Some(r) = record {
            r.tool_calls = ran;
            r.errors.extend(errors);
        }
    }

    fn finish(self, identity: &RunIdentity) -> Trajectory {
        let termination = match self.state {
            State::Done(t) => t,
            _ => Termination::TurnLimit,
        };
        let verdict = if termination == Termination::FinalAnswer {
            let outcome = Outcome { answer: self.answer.as_deref(), calls: self.judged_calls.as_deref(), state: self.sandbox.state() };
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
            tools: Some(self.task.tools.clone()),
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
