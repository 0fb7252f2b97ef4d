//! The agent policy on OpenAI-compatible servers: each turn is one completions request whose prompt is the
//! episode's token ids so far (rendered and tokenized here, exactly as the in-process policy does), sent to the
//! servers concurrently so that they batch them.
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use anyhow::Context;

use super::policy::ChatView;
use crate::agent::policy::{Policy, TurnOutput, TurnRequest};
use crate::backend::{Client, Completion, CompletionRequest};
use crate::data::FinishReason;
use crate::model::LoadedModel;
use crate::sample::SamplingParams;

struct Episode {
    ids: Vec<u32>,
    text: String,
    turn: u64,
}

pub struct RemotePolicy<'m> {
    model: &'m LoadedModel,
    view: ChatView<'m>,
    clients: Vec<Client>,
    /// Requests in flight per server.
    concurrency: usize,
    params: SamplingParams,
    streams: Vec<u64>,
    episodes: HashMap<usize, Episode>,
    on_tokens: Box<dyn FnMut(usize) + 'm>,
}

/// The seed of one request: a function of the run's seed, the episode's stream and the turn only, so a turn
/// samples the same on any server, in any batch, in any shard. (In-process episodes draw every turn from one
/// stream, so at temperature > 0 they differ from served ones; greedy episodes are identical.)
pub fn turn_seed(seed: u64, stream: u64, turn: u64) -> u64 {
    let mut h = seed ^ 0x9e37_79b9_7f4a_7c15;
    for x in [stream, turn] {
        h ^= x.wrapping_add(0x9e37_79b9_7f4a_7c15).wrapping_add(h << 6).wrapping_add(h >> 2);
        h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    }
    h >> 1 // JSON readers that parse numbers as doubles or i64 keep it exact below 2^63.
}

impl<'m> RemotePolicy<'m> {
    pub fn new(
        model: &'m LoadedModel,
        clients: Vec<Client>,
        concurrency: usize,
        params: SamplingParams,
        streams: Vec<u64>,
        on_tokens: Box<dyn FnMut(usize) + 'm>,
    ) -> Self {
        RemotePolicy { model, view: ChatView::new(model), clients, concurrency: concurrency.max(1), params, streams, episodes: HashMap::new(), on_tokens }
    }

    /// The turn's sampled ids and log-probs from a server's reply: its own ids where returned, else the text
    /// re-tokenized (plus the end-of-turn token when it stopped).
    fn turn_output(&self, c: Completion, prompt_delta_ids: Vec<u32>) -> anyhow::Result<TurnOutput> {
        let tok = &self.model.tokenizer;
        let from_server = c.ids.is_some();
        let sampled_ids = match c.ids {
            Some(ids) => ids,
            None => {
                let mut ids = tok.encode_plain(&c.text).context("re-tokenizing a server's reply")?;
                if c.stopped {
                    ids.push(self.view.turn_end());
                }
                ids
            }
        };
        let logprobs = match c.logprobs {
            Some(lp) if from_server && lp.len() == sampled_ids.len() => lp,
            _ => vec![0.0; sampled_ids.len()],
        };
        let ends_on_stop = sampled_ids.last().is_some_and(|&t| tok.is_stop(t));
        // The decoded text of the ids (what the in-process policy records): servers differ in whether they
        // include special tokens or cut at stop strings.
        let n = sampled_ids.len() - usize::from(ends_on_stop);
        let text = if c.stopped && !ends_on_stop { c.text } else { tok.decode(&sampled_ids[..n], true).unwrap_or(c.text) };
        let finish = if c.stopped { FinishReason::Stop } else { FinishReason::Length };
        Ok(TurnOutput { text, prompt_delta_ids, sampled_ids, logprobs, finish })
    }
}

impl Policy for RemotePolicy<'_> {
    fn turns(&mut self, requests: &[TurnRequest<'_>]) -> anyhow::Result<Vec<TurnOutput>> {
        let mut deltas = Vec::with_capacity(requests.len());
        let mut bodies = Vec::with_capacity(requests.len());
        for r in requests {
            let ep = self.episodes.entry(r.episode).or_insert_with(|| Episode { ids: Vec::new(), text: String::new(), turn: 0 });
            let (delta_text, delta_ids) = self.view.delta(r.episode, r.messages, &ep.text)?;
            ep.ids.extend_from_slice(&delta_ids);
            ep.text.push_str(&delta_text);
            let stream = self.streams.get(r.episode).copied().unwrap_or(r.episode as u64);
            bodies.push(CompletionRequest {
                ids: ep.ids.clone(),
                text: ep.text.clone(),
                max_tokens: r.max_new_tokens.max(1),
                temperature: self.params.temperature,
                top_p: self.params.top_p,
                top_k: self.params.top_k,
                seed: turn_seed(self.params.seed, stream, ep.turn),
                stop: self.params.stop_strings.clone(),
            });
            ep.turn += 1;
            deltas.push(delta_ids);
        }
        let replies = self.send_all(requests, &bodies)?;
        let mut outs = Vec::with_capacity(requests.len());
        for ((r, reply), delta_ids) in requests.iter().zip(replies).zip(deltas) {
            let out = self.turn_output(reply, delta_ids)?;
            (self.on_tokens)(out.sampled_ids.len());
            let ep = self.episodes.get_mut(&r.episode).context("episode state")?;
            ep.ids.extend_from_slice(&out.sampled_ids);
            let stop = (out.finish == FinishReason::Stop).then(|| out.sampled_ids.last().copied()).flatten().filter(|&t| self.model.tokenizer.is_stop(t));
            ep.text.push_str(&self.view.sampled_text(&out.text, stop));
            outs.push(out);
        }
        Ok(outs)
    }

    fn episode_done(&mut self, episode: usize) {
        self.episodes.remove(&episode);
    }
}

impl RemotePolicy<'_> {
    /// Sends every request, at most `concurrency` in flight per server; fails with the first error.
    fn send_all(&self, requests: &[TurnRequest<'_>], bodies: &[CompletionRequest]) -> anyhow::Result<Vec<Completion>> {
        let next = AtomicUsize::new(0);
        let results: Mutex<Vec<Option<anyhow::Result<Completion>>>> = Mutex::new((0..bodies.len()).map(|_| None).collect());
        let workers = (self.concurrency * self.clients.len()).min(bodies.len());
        let clients = &self.clients;
        std::thread::scope(|s| {
            for _ in 0..workers {
                s.spawn(|| loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= bodies.len() {
                        break;
                    }
                    let client = &clients[requests[i].episode % clients.len()];
                    let r = client.complete(&bodies[i]).with_context(|| format!("episode {}: turn on {}", requests[i].episode, client.base));
                    if let Ok(mut g) = results.lock() {
                        g[i] = Some(r);
                    }
                });
            }
        });
        let results = results.into_inner().map_err(|_| anyhow::anyhow!("a request thread panicked"))?;
        results.into_iter().map(|r| r.unwrap_or_else(|| Err(anyhow::anyhow!("a request was never sent")))).collect()
    }
}
