//! Batched generation: many sequences of different lengths decode together; a prompt prefix shared by all
//! requests is computed once.
use std::sync::Arc;

use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::params::{sample, stream_rng, SamplingParams};
use crate::model::tokenizer::Tokenizer;
use crate::model::{KvCache, Logits, ModelError, SeqInput, Transformer};

#[derive(Debug, Clone)]
pub struct GenRequest {
    pub prompt: Vec<u32>,
    /// RNG stream of this sequence (e.g. the sample index): results do not depend on batching.
    pub stream: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// An end-of-turn / stop token was sampled (it is the last of `tokens`).
    Stop,
    /// A stop string appeared in the text.
    StopString,
    /// The token limit or the context was reached.
    Length,
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

struct Seq {
    cache: KvCache,
    rng: ChaCha8Rng,
    out: GenOutput,
    done: bool,
    last_logits: Vec<f32>,
}

pub fn generate(
    model: &Transformer,
    tok: &Tokenizer,
    reqs: &[GenRequest],
    params: &SamplingParams,
    on_tokens: &mut dyn FnMut(usize),
) -> Result<Vec<GenOutput>, ModelError> {
    let ctx = model.cfg.max_position_embeddings;
    if let Some(r) = reqs.iter().find(|r| r.prompt.is_empty() || r.prompt.len() >= ctx) {
        return Err(ModelError::ContextOverflow { tokens: r.prompt.len(), context: ctx });
    }
    let prefix_len = shared_prefix_len(reqs);
    let prefix = if prefix_len > 0 {
        let mut c = model.new_cache();
        model.forward(&mut [SeqInput { cache: &mut c, tokens: &reqs[0].prompt[..prefix_len], logits: Logits::None }])?;
        Some(Arc::new(c))
    } else {
        None
    };
    let mut seqs: Vec<Seq> = reqs
        .iter()
        .map(|r| Seq {
            cache: prefix.as_ref().map_or_else(|| model.new_cache(), KvCache::fork),
            rng: stream_rng(params.seed, r.stream),
            out: GenOutput { tokens: vec![], logprobs: vec![], text: String::new(), finish: FinishReason::Length },
            done: false,
            last_logits: vec![],
        })
        .collect();

    // Prefill the rest of every prompt, packing sequences into forward passes of bounded size.
    let mut i = 0;
    while i < seqs.len() {
        let mut j = i;
        let mut rows = 0;
        while j < seqs.len() && (j == i || rows + reqs[j].prompt.len() - prefix_len <= PREFILL_ROWS) {
            rows += reqs[j].prompt.len() - prefix_len;
            j += 1;
        }
        let mut batch: Vec<SeqInput> = seqs[i..j]
            .iter_mut()
            .zip(&reqs[i..j])
            .map(|(s, r)| SeqInput { cache: &mut s.cache, tokens: &r.prompt[prefix_len..], logits: Logits::Last })
            .collect();
        let logits = model.forward(&mut batch)?;
        for (s, l) in seqs[i..j].iter_mut().zip(logits) {
            s.last_logits = l;
        }
        i = j;
    }

    loop {
        let mut stepped = 0;
        for s in seqs.iter_mut().filter(|s| !s.done) {
            let (t, lp) = sample(&s.last_logits, params, &mut s.rng);
            s.out.tokens.push(t);
            s.out.logprobs.push(lp);
            stepped += 1;
            if tok.is_stop(t) || params.stop_tokens.contains(&t) {
                s.out.finish = FinishReason::Stop;
                s.done = true;
            } else if !params.stop_strings.is_empty() {
                let text = tok.decode(&s.out.tokens, true).unwrap_or_default();
                if let Some(cut) = params.stop_strings.iter().filter_map(|p| text.find(p.as_str())).min() {
                    s.out.text = text[..cut].to_string();
                    s.out.finish = FinishReason::StopString;
                    s.done = true;
                }
            }
            if !s.done && (s.out.tokens.len() >= params.max_new_tokens || s.cache.len() + 1 >= ctx) {
                s.out.finish = FinishReason::Length;
                s.done = true;
            }
        }
        on_tokens(stepped);
        let mut active: Vec<&mut Seq> = seqs.iter_mut().filter(|s| !s.done).collect();
        if active.is_empty() {
            break;
        }
        let last: Vec<[u32; 1]> = active.iter().map(|s| [*s.out.tokens.last().unwrap_or(&0)]).collect();
        let mut batch: Vec<SeqInput> = active
            .iter_mut()
            .zip(&last)
            .map(|(s, t)| SeqInput { cache: &mut s.cache, tokens: t, logits: Logits::Last })
            .collect();
        let logits = model.forward(&mut batch)?;
        for (s, l) in active.into_iter().zip(logits) {
            s.last_logits = l;
        }
    }

    Ok(seqs
        .into_iter()
        .map(|mut s| {
            if s.out.finish != FinishReason::StopString {
                let body = if s.out.finish == FinishReason::Stop { &s.out.tokens[..s.out.tokens.len() - 1] } else { &s.out.tokens[..] };
                s.out.text = tok.decode(body, true).unwrap_or_default();
            }
            s.out
        })
        .collect())
}

/// Longest common prefix of all prompts, leaving at least one token per prompt to produce its logits.
fn shared_prefix_len(reqs: &[GenRequest]) -> usize {
    if reqs.len() < 2 {
        return 0;
    }
    let first = &reqs[0].prompt;
    let mut n = reqs.iter().map(|r| r.prompt.len()).min().unwrap_or(0).saturating_sub(1);
    for r in &reqs[1..] {
        n = n.min(first.iter().zip(&r.prompt).take_while(|(a, b)| a == b).count());
    }
    n
}
