//! Batched generation: many sequences of different lengths decode together; a prompt prefix shared by all
//! requests is computed once. Sequences can live across calls (agent episodes: one call per turn).
use std::sync::Arc;

use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::params::{sample, stream_rng, SamplingParams};
use super::stop::{is_stop_token, stop_string_at};
use crate::data::FinishReason;
use crate::model::tokenizer::Tokenizer;
use crate::model::{KvCache, Logits, ModelError, SeqInput, Transformer};

#[derive(Debug, Clone)]
pub struct GenRequest {
    pub prompt: Vec<u32>,
    /// RNG stream of this sequence (e.g. the sample index): results do not depend on batching.
    pub stream: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GenOutput {
    pub tokens: Vec<u32>,
    pub logprobs: Vec<f32>,
    /// Decoded text without the stop token and cut before a stop string.
    pub text: String,
    pub finish: FinishReason,
}

/// Rows per forward pass while prefilling, to bound activation memory.
const PREFILL_ROWS: usize = 1024;

/// A sequence that lives across several generation calls: its cache, the tokens not yet fed to it, and its
/// own RNG stream.
pub struct Sequence {
    pub cache: KvCache,
    /// Tokens to feed before sampling: a new prompt part, and the last sampled token of the previous call.
    pub pending: Vec<u32>,
    pub rng: ChaCha8Rng,
}

impl Sequence {
    pub fn new(cache: KvCache, prompt: Vec<u32>, seed: u64, stream: u64) -> Self {
        Sequence { cache, pending: prompt, rng: stream_rng(seed, stream) }
    }
}

pub fn generate(
    model: &Transformer,
    tok: &Tokenizer,
    reqs: &[GenRequest],
    params: &SamplingParams,
    on_tokens: &mut dyn FnMut(usize),
) -> Result<Vec<GenOutput>, ModelError> {
    let prompts: Vec<&[u32]> = reqs.iter().map(|r| r.prompt.as_slice()).collect();
    let (prefix, prefix_len) = shared_prefix(model, &prompts)?;
    let mut seqs: Vec<Sequence> = reqs
        .iter()
        .map(|r| {
            let cache = prefix.as_ref().map_or_else(|| model.new_cache(), KvCache::fork);
            Sequence::new(cache, r.prompt[prefix_len..].to_vec(), params.seed, r.stream)
        })
        .collect();
    let mut refs: Vec<&mut Sequence> = seqs.iter_mut().collect();
    let limits = vec![params.max_new_tokens; reqs.len()];
    generate_into(model, tok, &mut refs, &limits, params, on_tokens)
}

/// Computes the longest prefix shared by all prompts once (leaving each prompt at least one token of its own);
/// returns its cache and length.
pub fn shared_prefix(model: &Transformer, prompts: &[&[u32]]) -> Result<(Option<Arc<KvCache>>, usize), ModelError> {
    let n = shared_prefix_len(prompts);
    if n == 0 {
        return Ok((None, 0));
    }
    if n >= model.cfg.max_position_embeddings {
        return Err(ModelError::ContextOverflow { tokens: n, context: model.cfg.max_position_embeddings });
    }
    let mut c = model.new_cache();
    model.forward(&mut [SeqInput { cache: &mut c, tokens: &prompts[0][..n], logits: Logits::None }])?;
    Ok((Some(Arc::new(c)), n))
}

struct Active {
    out: GenOutput,
    done: bool,
    logits: Vec<f32>,
}

/// Feeds every sequence's pending tokens, then samples until each stops or reaches its token limit. On return,
/// each sequence's last sampled token is pending (not yet in its cache), ready for a later call.
pub fn generate_into(
    model: &Transformer,
    tok: &Tokenizer,
    seqs: &mut [&mut Sequence],
    max_new_tokens: &[usize],
    params: &SamplingParams,
    on_tokens: &mut dyn FnMut(usize),
) -> Result<Vec<GenOutput>, ModelError> {
    let ctx = model.cfg.max_position_embeddings;
    for s in seqs.iter() {
        let total = s.cache.len() + s.pending.len();
        if s.pending.is_empty() || total >= ctx {
            return Err(ModelError::ContextOverflow { tokens: total, context: ctx });
        }
    }
    let mut st: Vec<Active> = seqs
        .iter()
        .map(|_| Active { out: GenOutput { tokens: vec![], logprobs: vec![], text: String::new(), finish: FinishReason::Length }, done: false, logits: vec![] })
        .collect();

    // Prefill pending tokens, packing sequences into forward passes of bounded size.
    let mut i = 0;
    while i < seqs.len() {
        let mut j = i;
        let mut rows = 0;
        while j < seqs.len() && (j == i || rows + seqs[j].pending.len() <= PREFILL_ROWS) {
            rows += seqs[j].pending.len();
            j += 1;
        }
        let pendings: Vec<Vec<u32>> = seqs[i..j].iter_mut().map(|s| std::mem::take(&mut s.pending)).collect();
        let mut batch: Vec<SeqInput> =
            seqs[i..j].iter_mut().zip(&pendings).map(|(s, p)| SeqInput { cache: &mut s.cache, tokens: p, logits: Logits::Last }).collect();
        let logits = model.forward(&mut batch)?;
        for (a, l) in st[i..j].iter_mut().zip(logits) {
            a.logits = l;
        }
        i = j;
    }

    loop {
        // Each sequence samples from its own logits with its own stream: in parallel, the same tokens.
        let picks: Vec<Option<(u32, f32)>> =
            st.par_iter().zip(seqs.par_iter_mut()).map(|(a, s)| (!a.done).then(|| sample(&a.logits, params, &mut s.rng))).collect();
        let mut stepped = 0;
        for (((a, s), &limit), pick) in st.iter_mut().zip(seqs.iter_mut()).zip(max_new_tokens).zip(picks) {
            let Some((t, lp)) = pick else { continue };
            a.out.tokens.push(t);
            a.out.logprobs.push(lp);
            stepped += 1;
            if is_stop_token(tok, params, t) {
                a.out.finish = FinishReason::Stop;
                a.done = true;
            } else if !params.stop_strings.is_empty() {
                let text = tok.decode(&a.out.tokens, true).unwrap_or_default();
                if let Some(cut) = stop_string_at(params, &text) {
                    a.out.text = text[..cut].to_string();
                    a.out.finish = FinishReason::StopString;
                    a.done = true;
                }
            }
            if !a.done && (a.out.tokens.len() >= limit || s.cache.len() + 1 >= ctx) {
                a.out.finish = FinishReason::Length;
                a.done = true;
            }
        }
        on_tokens(stepped);
        let last: Vec<[u32; 1]> = st.iter().map(|a| [a.out.tokens.last().copied().unwrap_or(0)]).collect();
        let mut idx = Vec::new();
        let mut batch: Vec<SeqInput> = Vec::new();
        for (k, (s, a)) in seqs.iter_mut().zip(&st).enumerate() {
            if !a.done {
                idx.push(k);
                batch.push(SeqInput { cache: &mut s.cache, tokens: &last[k], logits: Logits::Last });
            }
        }
        if batch.is_empty() {
            break;
        }
        let logits = model.forward(&mut batch)?;
        for (k, l) in idx.into_iter().zip(logits) {
            st[k].logits = l;
        }
    }

    Ok(st
        .into_iter()
        .zip(seqs.iter_mut())
        .map(|(mut a, s)| {
            if let Some(&t) = a.out.tokens.last() {
                s.pending.push(t);
            }
            if a.out.finish != FinishReason::StopString {
                let n = a.out.tokens.len() - usize::from(a.out.finish == FinishReason::Stop);
                a.out.text = tok.decode(&a.out.tokens[..n], true).unwrap_or_default();
            }
            a.out
        })
        .collect())
}

/// Longest common prefix of all prompts, leaving at least one token per prompt to produce its logits.
fn shared_prefix_len(prompts: &[&[u32]]) -> usize {
    if prompts.len() < 2 {
        return 0;
    }
    let first = prompts[0];
    let mut n = prompts.iter().map(|p| p.len()).min().unwrap_or(0).saturating_sub(1);
    for p in &prompts[1..] {
        n = n.min(first.iter().zip(p.iter()).take_while(|(a, b)| a == b).count());
    }
    n
}
