//! The model as an agent policy: renders each episode's conversation with the model's own chat template and
//! samples all waiting episodes' turns as one batch.
//!
//! Token ids are never re-tokenised: an episode keeps its sequence (KV cache included) across turns, and each
//! turn feeds only the newly rendered text (end of the previous turn, tool responses, generation prompt). The
//! trajectory's ids are therefore exactly what the model saw and sampled.
use std::collections::HashMap;

use anyhow::{bail, Context};
use serde_json::{json, Value};

use super::prefix::PrefixCache;
use crate::agent::policy::{Policy, TurnOutput, TurnRequest};
use crate::data::{FinishReason, Message, Role};
use crate::model::loaded::segments_between;
use crate::model::{KvCache, LoadedModel};
use crate::sample::{generate_into, SamplingParams, Sequence};

struct EpisodeState {
    seq: Sequence,
    /// The exact text of every token the episode has fed or sampled so far.
    text: String,
}

pub struct EnginePolicy<'m> {
    model: &'m LoadedModel,
    params: SamplingParams,
    /// RNG stream of each job (episode index), derived from (task id, sample index) so samples do not depend on
    /// scheduling, batch size or which jobs a resumed run skips.
    streams: Vec<u64>,
    episodes: HashMap<usize, EpisodeState>,
    view: ChatView<'m>,
    prefixes: PrefixCache,
    on_tokens: Box<dyn FnMut(usize) + 'm>,
}

impl<'m> EnginePolicy<'m> {
    pub fn new(model: &'m LoadedModel, params: SamplingParams, streams: Vec<u64>, on_tokens: Box<dyn FnMut(usize) + 'm>) -> Self {
        EnginePolicy { model, params, streams, episodes: HashMap::new(), view: ChatView::new(model), prefixes: PrefixCache::default(), on_tokens }
    }

    pub fn template_messages(&self, messages: &[Message]) -> Vec<Value> {
        self.view.template_messages(messages)
    }
}

/// An episode's conversation as the model sees it: rendered with the model's chat template, and the text and ids
/// each new turn adds to what the model already saw (earlier ids are never re-tokenised).
pub struct ChatView<'m> {
    model: &'m LoadedModel,
    /// Whether the template renders a `tool` message itself (see `renders_tool_role`).
    template_knows_tools: bool,
    /// See `opens_with_empty_think`.
    empty_think: bool,
    turn_end: u32,
}

impl<'m> ChatView<'m> {
    pub fn new(model: &'m LoadedModel) -> Self {
        ChatView { model, template_knows_tools: renders_tool_role(model), empty_think: opens_with_empty_think(model), turn_end: turn_end_id(model) }
    }

    /// The stop token the template writes after an assistant message (`<|im_end|>` in ChatML).
    pub fn turn_end(&self) -> u32 {
        self.turn_end
    }

    /// Messages in the form the chat template takes. Tool results become Hermes-style `<tool_response>` user turns
    /// for templates that cannot render a tool role.
    pub fn template_messages(&self, messages: &[Message]) -> Vec<Value> {
        messages
            .iter()
            .map(|m| match m.role {
                Role::Tool if !self.template_knows_tools => tool_result_as_user(&m.content),
                Role::Tool => json!({"role": "tool", "content": m.content, "name": m.name}),
                Role::System => json!({"role": "system", "content": m.content}),
                Role::User => json!({"role": "user", "content": m.content}),
                Role::Assistant if self.empty_think => json!({"role": "assistant", "content": m.content, "reasoning_content": EMPTY_REASONING}),
                Role::Assistant => json!({"role": "assistant", "content": m.content}),
            })
            .collect()
    }

    /// The text and token ids the conversation adds after `seen` (the exact text of everything the episode has
    /// fed or sampled so far), ending with the generation prompt.
    pub fn delta(&self, episode: usize, messages: &[Message], seen: &str) -> anyhow::Result<(String, Vec<u32>)> {
        let segments = self.model.render_chat_segments(&self.template_messages(messages), None, true)?;
        let full: String = segments.iter().map(|(s, _)| s.as_str()).collect();
        let Some(rest) = full.strip_prefix(seen) else {
            bail!(
                "episode {episode}: the chat template renders earlier turns differently from what the model saw; \
                 cannot continue without re-tokenising"
            );
        };
        let ids = self.model.tokenizer.encode_segments(&segments_between(&segments, seen.len(), full.len())).context("tokenizing a turn")?;
        Ok((rest.to_string(), ids))
    }

    /// The text of a turn's sampled tokens as they enter the conversation: the decoded text plus the stop token.
    pub fn sampled_text(&self, text: &str, stop: Option<u32>) -> String {
        let mut s = text.to_string();
        if let Some(t) = stop {
            s.push_str(&self.model.tokenizer.decode(&[t], false).unwrap_or_default());
        }
        s
    }
}

/// The stop token that follows an assistant message in the rendered chat; the tokenizer's end of sequence if
/// the template writes none.
fn turn_end_id(model: &LoadedModel) -> u32 {
    const PROBE: &str = "turn-end-probe-5e1f";
    let tok = &model.tokenizer;
    let messages = [json!({"role": "user", "content": "u"}), json!({"role": "assistant", "content": PROBE})];
    let after = model.render_chat(&messages, None, false).ok().and_then(|s| s.find(PROBE).map(|i| s[i + PROBE.len()..].to_string()));
    after.and_then(|rest| tok.stop_ids().iter().copied().find(|&id| tok.id_to_token(id).is_some_and(|t| rest.starts_with(&t)))).unwrap_or(tok.eos_id())
}

/// A tool result as a Hermes-style user turn, for templates that cannot render a `tool` message.
pub fn tool_result_as_user(content: &str) -> Value {
    json!({"role": "user", "content": format!("<tool_response>\n{content}\n</tool_response>")})
}

/// What an assistant message's `reasoning_content` is given for a template that `opens_with_empty_think`: not
/// empty (an empty one counts as none), and nothing once the template strips its newlines.
pub const EMPTY_REASONING: &str = "\n";

/// Whether the template opens the model's turn with an empty think block (Qwen3's with `enable_thinking` off).
/// Qwen3's renders that block again in earlier assistant turns only for messages that carry reasoning, so such
/// messages are given `EMPTY_REASONING`: the conversation then re-renders as the model saw it.
pub fn opens_with_empty_think(model: &LoadedModel) -> bool {
    model.render_chat(&[json!({"role": "user", "content": "u"})], None, true).is_ok_and(|s| s.ends_with("<think>\n\n</think>\n\n"))
}

/// Whether the chat template renders a `tool` message with its content. Qwen2.5's template wraps it in
/// `<tool_response>`; SmolLM2's plain ChatML writes any role as `<|im_start|>tool`. Measured on SmolLM2-135M
/// (arithmetic test tasks, 30 episodes): with the few-shot tool results as `<tool_response>` user turns the model
/// imitated them and opened 26 of 30 answers with `<tool_response>` (0 solved); as `tool` turns it wrote
/// `<tool_call>`s. Templates that reject the role (raise, or drop the message) get the user-turn form.
pub fn renders_tool_role(model: &LoadedModel) -> bool {
    const PROBE: &str = "tool-role-probe-5e1f";
    let messages = [
        json!({"role": "system", "content": "s"}),
        json!({"role": "user", "content": "u"}),
        json!({"role": "assistant", "content": "a"}),
        json!({"role": "tool", "content": PROBE, "name": "t"}),
    ];
    model.render_chat(&messages, None, true).is_ok_and(|s| s.contains(PROBE))
}

impl Policy for EnginePolicy<'_> {
    fn turns(&mut self, requests: &[TurnRequest<'_>]) -> anyhow::Result<Vec<TurnOutput>> {
        let tok = &self.model.tokenizer;
        let mut deltas: Vec<(String, Vec<u32>)> = Vec::with_capacity(requests.len());
        for r in requests {
            let seen = self.episodes.get(&r.episode).map_or("", |e| e.text.as_str());
            deltas.push(self.view.delta(r.episode, r.messages, seen)?);
        }
        // New episodes start from the cached prompt prefix they share with others (system prompt, few-shot
        // examples): computed once per distinct prefix, forked into each episode's cache.
        let new: Vec<usize> = (0..requests.len()).filter(|&i| !self.episodes.contains_key(&requests[i].episode)).collect();
        let prompts: Vec<&[u32]> = new.iter().map(|&i| deltas[i].1.as_slice()).collect();
        let prefixes = self.prefixes.prefixes(&self.model.transformer, &prompts)?;
        let mut skip = vec![0; requests.len()];
        for (&i, prefix) in new.iter().zip(prefixes) {
            let ep = requests[i].episode;
            let stream = self.streams.get(ep).copied().unwrap_or(ep as u64);
            let (cache, n) = match prefix {
                Some((c, n)) => (KvCache::fork(&c), n),
                None => (self.model.transformer.new_cache(), 0),
            };
            let seq = Sequence::new(cache, Vec::new(), self.params.seed, stream);
            self.episodes.insert(ep, EpisodeState { seq, text: String::new() });
            skip[i] = n;
        }
        let mut eps: Vec<(usize, EpisodeState)> = Vec::with_capacity(requests.len());
        for r in requests {
            let st = self.episodes.remove(&r.episode).context("episode state")?;
            eps.push((r.episode, st));
        }
        for (((_, st), (_, ids)), &k) in eps.iter_mut().zip(&deltas).zip(&skip) {
            st.seq.pending.extend_from_slice(&ids[k..]);
        }
        let limits: Vec<usize> = requests.iter().map(|r| r.max_new_tokens.max(1)).collect();
        let outs = {
            let mut seqs: Vec<&mut Sequence> = eps.iter_mut().map(|(_, st)| &mut st.seq).collect();
            generate_into(&self.model.transformer, tok, &mut seqs, &limits, &self.params, &mut *self.on_tokens)?
        };
        let mut results = Vec::with_capacity(outs.len());
        for (((ep, mut st), (delta_text, ids)), out) in eps.into_iter().zip(deltas).zip(outs) {
            st.text.push_str(&delta_text);
            let stop = if out.finish == FinishReason::Stop { out.tokens.last().copied() } else { None };
            st.text.push_str(&self.view.sampled_text(&out.text, stop));
            self.episodes.insert(ep, st);
            results.push(TurnOutput { text: out.text, prompt_delta_ids: ids, sampled_ids: out.tokens, logprobs: out.logprobs, finish: out.finish });
        }
        Ok(results)
    }

    fn episode_done(&mut self, episode: usize) {
        self.episodes.remove(&episode);
    }
}
