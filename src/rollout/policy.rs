//! The model as an agent policy: renders each episode's conversation with the model's own chat template and
//! samples all waiting episodes' turns as one batch.
//!
//! Token ids are never re-tokenised: an episode keeps its sequence (KV cache included) across turns, and each
//! turn feeds only the newly rendered text (end of the previous turn, tool responses, generation prompt). The
//! trajectory's ids are therefore exactly what the model saw and sampled.
use std::collections::HashMap;

use anyhow::{bail, Context};
use serde_json::{json, Value};

use crate::agent::policy::{Policy, TurnOutput, TurnRequest};
use crate::data::{FinishReason as TurnFinish, Message, Role};
use crate::model::{KvCache, LoadedModel};
use super::prefix::PrefixCache;
use crate::sample::{generate_into, FinishReason, SamplingParams, Sequence};

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
    /// Whether the template renders a `tool` message itself (see `renders_tool_role`).
    template_knows_tools: bool,
    prefixes: PrefixCache,
    on_tokens: Box<dyn FnMut(usize) + 'm>,
}

impl<'m> EnginePolicy<'m> {
    pub fn new(model: &'m LoadedModel, params: SamplingParams, streams: Vec<u64>, on_tokens: Box<dyn FnMut(usize) + 'm>) -> Self {
        let template_knows_tools = renders_tool_role(model);
        EnginePolicy { model, params, streams, episodes: HashMap::new(), template_knows_tools, prefixes: PrefixCache::default(), on_tokens }
    }

    /// Messages in the form the chat template takes. Tool results become Hermes-style `<tool_response>` user turns
    /// for templates that cannot render a tool role.
    pub fn template_messages(&self, messages: &[Message]) -> Vec<Value> {
        messages
            .iter()
            .map(|m| match m.role {
                Role::Tool if !self.template_knows_tools => {
                    json!({"role": "user", "content": format!("<tool_response>\n{}\n</tool_response>", m.content)})
                }
                Role::Tool => json!({"role": "tool", "content": m.content, "name": m.name}),
                Role::System => json!({"role": "system", "content": m.content}),
                Role::User => json!({"role": "user", "content": m.content}),
                Role::Assistant => json!({"role": "assistant", "content": m.content}),
            })
            .collect()
    }
}

/// The segments' text from byte `skip` on (the part of the chat the model has not seen yet).
fn segments_after(segments: &[(String, bool)], mut skip: usize) -> Vec<(&str, bool)> {
    let mut out = Vec::new();
    for (s, trusted) in segments {
        if skip >= s.len() {
            skip -= s.len();
            continue;
        }
        out.push((&s[skip..], *trusted));
        skip = 0;
    }
    out
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
            let segments = self.model.render_chat_segments(&self.template_messages(r.messages), None, true)?;
            let full: String = segments.iter().map(|(s, _)| s.as_str()).collect();
            let seen = self.episodes.get(&r.episode).map_or("", |e| e.text.as_str());
            let Some(rest) = full.strip_prefix(seen) else {
                bail!(
                    "episode {}: the chat template renders earlier turns differently from what the model saw; \
                     cannot continue without re-tokenising",
                    r.episode
                );
            };
            let ids = tok.encode_segments(&segments_after(&segments, seen.len())).context("tokenizing a turn")?;
            deltas.push((rest.to_string(), ids));
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
            st.text.push_str(&out.text);
            if out.finish == FinishReason::Stop {
                if let Some(&stop) = out.tokens.last() {
                    st.text.push_str(&tok.decode(&[stop], false).unwrap_or_default());
                }
            }
            let finish = if out.finish == FinishReason::Length { TurnFinish::Length } else { TurnFinish::Stop };
            self.episodes.insert(ep, st);
            results.push(TurnOutput {
                text: out.text,
                prompt_delta_ids: ids,
                sampled_ids: out.tokens,
                logprobs: out.logprobs,
                finish,
            });
        }
        Ok(results)
    }

    fn episode_done(&mut self, episode: usize) {
        self.episodes.remove(&episode);
    }
}
