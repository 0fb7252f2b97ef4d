//! Model-free policies: a scripted policy (canned texts, byte-level fake tokens) and a reference solver that
//! replays each generated task's known plan. Used by tests, and to check suites and pipelines without weights.
use std::collections::HashMap;

use super::policy::{FinishReason, Policy, TurnOutput, TurnRequest};
use crate::data::{Message, Task};
use crate::tools::toolcall::render_call;

/// The fake end-of-turn token.
pub const EOT: u32 = 0;
/// Log-prob reported for every scripted token.
pub const SCRIPTED_LOGPROB: f32 = -0.25;

pub struct TurnScript {
    pub text: String,
    pub finish: FinishReason,
}

impl From<String> for TurnScript {
    fn from(text: String) -> Self {
        Self { text, finish: FinishReason::Stop }
    }
}
impl From<&str> for TurnScript {
    fn from(text: &str) -> Self {
        Self::from(text.to_string())
    }
}

/// Answers each request with `script(episode, turn_index, messages)`. Tokens are bytes (+1, so that 0 stays
/// the end-of-turn token): the prompt delta is the messages not yet seen by this episode, the sampled ids are
/// the text plus `EOT` when the turn stopped.
pub struct ScriptedPolicy<F> {
    script: F,
    seen_messages: HashMap<usize, usize>,
    turns: HashMap<usize, usize>,
    /// Size of every batch received, in order.
    pub batches: Vec<usize>,
    /// Episodes reported finished, in order.
    pub finished: Vec<usize>,
}

impl<F> ScriptedPolicy<F>
where
    F: FnMut(usize, usize, &[Message]) -> TurnScript,
{
    pub fn new(script: F) -> Self {
        Self { script, seen_messages: HashMap::new(), turns: HashMap::new(), batches: Vec::new(), finished: Vec::new() }
    }
}

pub fn byte_tokens(s: &str) -> Vec<u32> {
    s.bytes().map(|b| u32::from(b) + 1).collect()
}

fn render_delta(messages: &[Message]) -> String {
    let mut s: String = messages.iter().map(|m| format!("<{:?}>\n{}\n", m.role, m.content)).collect();
    s.push_str("<Assistant>\n");
    s
}

impl<F> Policy for ScriptedPolicy<F>
where
    F: FnMut(usize, usize, &[Message]) -> TurnScript,
{
    fn turns(&mut self, requests: &[TurnRequest<'_>]) -> anyhow::Result<Vec<TurnOutput>> {
        self.batches.push(requests.len());
        let mut out = Vec::with_capacity(requests.len());
        for r in requests {
            let seen = self.seen_messages.get(&r.episode).copied().unwrap_or(0).min(r.messages.len());
            let delta = render_delta(&r.messages[seen..]);
            // The assistant message this turn produces is already in the sampled ids.
            self.seen_messages.insert(r.episode, r.messages.len() + 1);
            let turn = self.turns.entry(r.episode).or_insert(0);
            let TurnScript { text, finish } = (self.script)(r.episode, *turn, r.messages);
            *turn += 1;
            let mut sampled = byte_tokens(&text);
            if finish == FinishReason::Stop {
                sampled.push(EOT);
            }
            sampled.truncate(r.max_new_tokens.max(1));
            out.push(TurnOutput { text, prompt_delta_ids: byte_tokens(&delta), logprobs: vec![SCRIPTED_LOGPROB; sampled.len()], sampled_ids: sampled, finish });
        }
        Ok(out)
    }

    fn episode_done(&mut self, episode: usize) {
        self.finished.push(episode);
        self.seen_messages.remove(&episode);
        self.turns.remove(&episode);
    }
}

/// A script that solves generated tasks with their reference plan: one call per turn, then `Answer: ...`.
/// `tasks[i]` is the task of episode `i`. Tasks without a reference get `Answer: ?`.
pub fn reference_script<'a>(tasks: &'a [&'a Task]) -> impl FnMut(usize, usize, &[Message]) -> TurnScript + 'a {
    move |episode, turn, _messages| {
        let Some(reference) = tasks.get(episode).and_then(|t| t.reference.as_ref()) else {
            return "Answer: ?".into();
        };
        match reference.calls.get(turn) {
            Some(call) => render_call(call).into(),
            None => format!("Answer: {}", reference.answer).into(),
        }
    }
}
