//! The trajectory: the contract between rollouts and training. One JSON object per line.
use serde::{Deserialize, Serialize};

use super::message::Message;
use super::task::Split;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// An end-of-turn / stop token was sampled (it is the last token of the turn).
    Stop,
    /// A stop string appeared in the text.
    StopString,
    /// The turn hit its token cap or the context.
    Length,
}

/// Why an episode ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Termination {
    /// The model gave a final answer (or, for function-call tasks, made its calls).
    FinalAnswer,
    TurnLimit,
    /// One turn hit the per-turn token cap.
    TurnTokenLimit,
    /// The whole episode (prompt + generated tokens) hit its token cap.
    EpisodeTokenLimit,
    /// The sandbox refused more work (tool-call cap).
    SandboxLimit,
    /// The environment ended the episode (Gymnasium's `terminated`).
    Terminated,
    /// The environment cut the episode short (Gymnasium's `truncated`).
    Truncated,
    /// The environment failed (crashed, hung, or answered out of protocol).
    EnvironmentFailed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepErrorKind {
    /// The text inside `<tool_call>` (or a bare JSON message) is not valid JSON.
    MalformedJson,
    /// A call has no string `name`.
    MissingName,
    /// `arguments` is neither an object nor a string holding an object.
    BadArguments,
    UnknownTool,
    /// Arguments fail the tool's JSON schema.
    SchemaViolation,
    /// More calls in one turn than the limit allows.
    TooManyCalls,
    /// Neither a call nor an answer.
    EmptyMessage,
    /// The call was well formed but the tool reported an error (e.g. a missing file). The step stays valid:
    /// tool failures are observations, not format errors.
    ToolFailed,
    /// The environment could not take the step; the episode ends.
    EnvironmentFailed,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct StepError {
    pub kind: StepErrorKind,
    /// Index of the offending call within the turn, when the error concerns one call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub call_index: Option<usize>,
    pub message: String,
}

impl StepError {
    pub fn new(kind: StepErrorKind, message: impl Into<String>) -> Self {
        Self { kind, call_index: None, message: message.into() }
    }
    pub fn at(mut self, call_index: usize) -> Self {
        self.call_index = Some(call_index);
        self
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TurnRecord {
    /// False when the turn's text could not be turned into calls or an answer.
    pub valid: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<StepError>,
    pub tool_calls: u32,
    pub generated_tokens: u32,
    pub finish: FinishReason,
    /// The environment's reward for this turn's action.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reward: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    pub success: bool,
    /// In [0, 1]: 1/0 for exact matchers, the F1 for F1 matchers.
    pub score: f64,
    pub reason: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    pub turns: u32,
    pub tool_calls: u32,
    pub invalid_steps: u32,
    pub generated_tokens: u32,
}

/// Which weights produced the trajectory.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RunIdentity {
    pub model: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adapter: Option<String>,
    #[serde(default)]
    pub sampling: SamplingInfo,
    /// The server that sampled the episode, when it was not sampled in-process.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend: Option<BackendInfo>,
}

/// How a trajectory's turns were sampled on a server; recorded in every trajectory it produced.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BackendInfo {
    pub url: String,
    pub model: String,
    /// False when the server returned text only and the ids were re-tokenized from it (they may then differ
    /// from what the server sampled).
    pub token_ids: bool,
    /// False when the server returned no log-probs (the trainer recomputes them; the sampler gap is not measured).
    pub logprobs: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SamplingInfo {
    pub temperature: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_k: Option<u32>,
    pub seed: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Trajectory {
    pub task_id: String,
    pub suite: String,
    pub split: Split,
    pub difficulty: u8,
    #[serde(flatten)]
    pub identity: RunIdentity,
    pub sample_index: u32,
    pub messages: Vec<Message>,
    /// The tool specs offered to the model (in its system message or through the chat template); `None` in
    /// files written before they were recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<Vec<serde_json::Value>>,
    /// Messages after the system message that are few-shot examples (0 when none), so that context
    /// distillation can drop them.
    #[serde(default)]
    pub fewshot_messages: usize,
    /// Privileged context (a hint) appended to the system message of a hinted rollout; training rows take it
    /// out, so the trained model never sees it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub privileged: Option<String>,
    pub token_ids: Vec<u32>,
    /// 1 where the model produced the token (trainable), 0 for prompt, template and tool tokens.
    pub produced_mask: Vec<u8>,
    /// Log-prob of each produced token; 0 where not produced.
    pub logprobs: Vec<f32>,
    pub turns: Vec<TurnRecord>,
    pub verdict: Verdict,
    pub counts: Counts,
    pub wall_ms: u64,
    pub termination: Termination,
}
