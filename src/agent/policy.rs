//! The boundary between episodes and the model: episodes ask for turns, a policy answers them in one batch.
pub use crate::data::FinishReason;
use crate::data::Message;

/// One model turn requested by an episode: the full conversation so far (the policy renders it with the
/// model's chat template; it may reuse earlier token ids so it never re-tokenises what the model sampled).
pub struct TurnRequest<'a> {
    /// Index of the episode in the `run_episodes` job list; stable for the episode's whole life.
    pub episode: usize,
    pub messages: &'a [Message],
    pub tools: &'a [serde_json::Value],
    pub max_new_tokens: usize,
}

pub struct TurnOutput {
    /// Decoded assistant text of this turn (without the end-of-turn token).
    pub text: String,
    /// Tokens appended before this turn's sampled tokens (not produced by the model).
    pub prompt_delta_ids: Vec<u32>,
    /// Tokens the model produced this turn (incl. its end-of-turn token if any).
    pub sampled_ids: Vec<u32>,
    /// Log-prob of each sampled id.
    pub logprobs: Vec<f32>,
    pub finish: FinishReason,
}

pub trait Policy {
    /// Answers every request, in order, with one output each.
    fn turns(&mut self, requests: &[TurnRequest<'_>]) -> anyhow::Result<Vec<TurnOutput>>;

    /// Called once when an episode has finished, so the policy can free its cache for that episode.
    fn episode_done(&mut self, _episode: usize) {}
}
