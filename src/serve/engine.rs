//! The serving engine: one thread owns the model and decodes every request in flight as one batch, admitting
//! new requests between steps (continuous batching). A turn that continues an earlier one (an agent episode's
//! next turn) takes over that turn's KV cache; prompts that share a long head (a suite's system prompt and
//! few-shot examples) compute it once.
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, Mutex};

use rand_chacha::ChaCha8Rng;

use crate::data::Message;
use crate::model::lora::LoraAdapter;
use crate::model::{KvCache, LoadedModel, Logits, SeqInput};
use crate::rollout::chat_form::ChatForm;
use crate::rollout::prefix::PrefixCache;
use crate::sample::stop::{held_back, is_stop_token, stop_string_at};
use crate::sample::{sample, stream_rng, SamplingParams};

/// What to continue: token ids, text (whose special-token spellings are the special tokens, as in any
/// completions API), or a chat rendered with the model's template (message content stays text).
#[derive(Debug, Clone)]
pub enum Prompt {
    Ids(Vec<u32>),
    Text(String),
    Chat { messages: Vec<Message>, tools: Vec<serde_json::Value> },
}

/// One generation request, as the HTTP layer hands it over.
pub struct Job {
    /// Served model name: the base or a loaded adapter.
    pub model: String,
    pub prompt: Prompt,
    pub params: SamplingParams,
    pub events: Sender<Event>,
}

struct Admitted {
    job: Job,
    ids: Vec<u32>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// One sampled token: its id, log-prob and the text it completes (may be empty while a character is split
    /// over tokens).
    Token {
        id: u32,
        logprob: f32,
        text: String,
    },
    /// `stopped`: an end-of-turn token or stop string ended it (false: the token limit or the context).
    Done {
        stopped: bool,
        prompt_tokens: usize,
    },
    Error(String),
}

pub enum Command {
    Generate(Job),
    LoadAdapter { name: String, path: PathBuf, reply: Sender<Result<(), String>> },
    UnloadAdapter { name: String, reply: Sender<Result<(), String>> },
}

/// Names the engine serves, readable by the HTTP threads.
pub type Served = Arc<Mutex<Vec<String>>>;

struct Active {
    adapter: Option<String>,
    job: Job,
    cache: KvCache,
    rng: ChaCha8Rng,
    /// Every token in the cache or about to enter it: prompt, then sampled.
    ids: Vec<u32>,
    prompt_len: usize,
    sampled: Vec<u32>,
    /// Bytes of decoded text already sent.
    sent: usize,
    logits: Vec<f32>,
}

/// Finished turns' caches kept for continuation, newest last, within a byte budget.
struct TurnCache {
    entries: Vec<(Option<String>, Vec<u32>, KvCache)>,
    budget: usize,
}

impl TurnCache {
    /// The cache of a finished turn whose tokens start `prompt` (taken out: the conversation moves on).
    fn take(&mut self, adapter: &Option<String>, prompt: &[u32]) -> Option<(KvCache, usize)> {
        let i = self
            .entries
            .iter()
            .enumerate()
            .filter(|(_, (a, ids, _))| a == adapter && ids.len() < prompt.len() && prompt.starts_with(ids))
            .max_by_key(|(_, (_, ids, _))| ids.len())?
            .0;
        let (_, ids, cache) = self.entries.remove(i);
        Some((cache, ids.len()))
    }

    fn put(&mut self, adapter: Option<String>, ids: Vec<u32>, cache: KvCache) {
        self.entries.push((adapter, ids, cache));
        let mut total: usize = self.entries.iter().map(|(_, _, c)| c.own_bytes()).sum();
        while total > self.budget && !self.entries.is_empty() {
            total -= self.entries.remove(0).2.own_bytes();
        }
    }
}

pub struct Engine {
    model: LoadedModel,
    /// How chats with tools are given to the model's template.
    form: ChatForm,
    base_name: String,
    adapters: BTreeMap<String, LoraAdapter>,
    served: Served,
    prefixes: HashMap<Option<String>, PrefixCache>,
    turns: TurnCache,
}

impl Engine {
    pub fn new(model: LoadedModel, base_name: String, cache_bytes: usize, served: Served) -> Self {
        if let Ok(mut s) = served.lock() {
            *s = vec![base_name.clone()];
        }
        Engine {
            form: ChatForm::of(&model),
            model,
            base_name,
            adapters: BTreeMap::new(),
            served,
            prefixes: HashMap::new(),
            turns: TurnCache { entries: Vec::new(), budget: cache_bytes },
        }
    }

    /// Loads an adapter folder under `name` (replacing one of the same name).
    pub fn load_adapter(&mut self, name: &str, path: &std::path::Path) -> Result<(), String> {
        if name == self.base_name {
            return Err(format!("`{name}` is the base model's name"));
        }
        let a = LoraAdapter::load(path, &self.model.transformer.cfg, Some(&self.model.base_name)).map_err(|e| format!("{}: {e}", path.display()))?;
        self.adapters.insert(name.to_string(), a);
        // Caches computed with the replaced weights are stale.
        self.prefixes.remove(&Some(name.to_string()));
        self.turns.entries.retain(|(a, _, _)| a.as_deref() != Some(name));
        self.publish();
        Ok(())
    }

    fn publish(&self) {
        if let Ok(mut s) = self.served.lock() {
            *s = std::iter::once(self.base_name.clone()).chain(self.adapters.keys().cloned()).collect();
        }
    }

    /// Runs until every sender of `rx` is gone.
    pub fn run(mut self, rx: Receiver<Command>) {
        let mut active: Vec<Active> = Vec::new();
        loop {
            let mut new = Vec::new();
            if active.is_empty() {
                match rx.recv() {
                    Ok(c) => self.command(c, &mut new),
                    Err(_) => return,
                }
                // Requests sent together (an agent's episodes starting at once) arrive a few milliseconds apart:
                // admitted together, their shared prompt head is computed once.
                while let Ok(c) = rx.recv_timeout(std::time::Duration::from_millis(10)) {
                    self.command(c, &mut new);
                }
            }
            while let Ok(c) = rx.try_recv() {
                self.command(c, &mut new);
            }
            self.admit(new, &mut active);
            self.step(&mut active);
        }
    }

    fn command(&mut self, c: Command, new: &mut Vec<Job>) {
        match c {
            Command::Generate(j) => new.push(j),
            Command::LoadAdapter { name, path, reply } => {
                let _ = reply.send(self.load_adapter(&name, &path));
            }
            Command::UnloadAdapter { name, reply } => {
                let r = self.adapters.remove(&name).map(|_| ()).ok_or_else(|| format!("no adapter named `{name}`"));
                self.turns.entries.retain(|(a, _, _)| a.as_deref() != Some(&name));
                self.prefixes.remove(&Some(name));
                self.publish();
                let _ = reply.send(r);
            }
        }
    }

    /// Runs `f` with the transformer wearing `adapter`'s weights.
    fn with_adapter<T>(&mut self, adapter: &Option<String>, f: impl FnOnce(&mut Self) -> T) -> T {
        let a = adapter.as_ref().and_then(|n| self.adapters.remove(n));
        let had = a.is_some();
        self.model.transformer.adapter = a;
        let out = f(self);
        if let (true, Some(n), Some(a)) = (had, adapter, self.model.transformer.adapter.take()) {
            self.adapters.insert(n.clone(), a);
        }
        out
    }

    /// Checks the new jobs and prefills their prompts (from a continued turn's cache or a shared prefix where
    /// there is one); valid ones join `active` with their first logits.
    fn admit(&mut self, jobs: Vec<Job>, active: &mut Vec<Active>) {
        let ctx = self.model.transformer.cfg.max_position_embeddings;
        let vocab = self.model.transformer.cfg.vocab_size;
        let mut groups: BTreeMap<Option<String>, Vec<Admitted>> = BTreeMap::new();
        for j in jobs {
            let adapter = if j.model == self.base_name { None } else { Some(j.model.clone()) };
            let ids = match self.tokenize(&j.prompt) {
                Ok(ids) => ids,
                Err(e) => {
                    let _ = j.events.send(Event::Error(e));
                    continue;
                }
            };
            let err = if adapter.as_ref().is_some_and(|a| !self.adapters.contains_key(a)) {
                Some(format!("model `{}` is not served (load it first)", j.model))
            } else if ids.is_empty() {
                Some("the prompt is empty".to_string())
            } else if ids.len() >= ctx {
                Some(format!("the prompt has {} tokens; the model's context is {ctx}", ids.len()))
            } else if let Some(&bad) = ids.iter().find(|&&t| t as usize >= vocab) {
                Some(format!("token id {bad} is outside the vocabulary ({vocab})"))
            } else {
                None
            };
            match err {
                Some(e) => {
                    let _ = j.events.send(Event::Error(e));
                }
                None => groups.entry(adapter).or_default().push(Admitted { job: j, ids }),
            }
        }
        for (adapter, jobs) in groups {
            let admitted = self.with_adapter(&adapter, |e| e.prefill(&adapter, jobs));
            active.extend(admitted);
        }
    }

    fn tokenize(&self, p: &Prompt) -> Result<Vec<u32>, String> {
        let m = &self.model;
        match p {
            Prompt::Ids(ids) => Ok(ids.clone()),
            Prompt::Text(t) => m.tokenizer.encode(t).map_err(|e| e.to_string()),
            Prompt::Chat { messages, tools } => {
                let (messages, tools, _) = self.form.template_view(messages, tools);
                m.encode_chat(&messages, tools, true).map_err(|e| e.to_string())
            }
        }
    }

    fn prefill(&mut self, adapter: &Option<String>, jobs: Vec<Admitted>) -> Vec<Active> {
        let mut starts: Vec<Option<(KvCache, usize)>> = jobs.iter().map(|j| self.turns.take(adapter, &j.ids)).collect();
        let fresh: Vec<usize> = (0..jobs.len()).filter(|&i| starts[i].is_none()).collect();
        let prompts: Vec<&[u32]> = fresh.iter().map(|&i| jobs[i].ids.as_slice()).collect();
        let model = &self.model.transformer;
        let shared = match self.prefixes.entry(adapter.clone()).or_default().prefixes(model, &prompts) {
            Ok(s) => s,
            Err(e) => {
                for j in &jobs {
                    let _ = j.job.events.send(Event::Error(e.to_string()));
                }
                return Vec::new();
            }
        };
        for (&i, s) in fresh.iter().zip(shared) {
            starts[i] = Some(match s {
                Some((c, n)) => (KvCache::fork(&c), n),
                None => (model.new_cache(), 0),
            });
        }
        let mut out = Vec::new();
        for (Admitted { job, ids }, start) in jobs.into_iter().zip(starts) {
            let (cache, _) = start.unwrap_or_else(|| (model.new_cache(), 0));
            let rng = stream_rng(job.params.seed, 0);
            out.push(Active { adapter: adapter.clone(), prompt_len: ids.len(), ids, job, cache, rng, sampled: Vec::new(), sent: 0, logits: Vec::new() });
        }
        // Feed each prompt's uncached tail, packed into forward passes of bounded size.
        const ROWS: usize = 1024;
        let mut i = 0;
        let mut failed = Vec::new();
        while i < out.len() {
            let mut end = i;
            let mut rows = 0;
            while end < out.len() && (end == i || rows + out[end].ids.len() - out[end].cache.len() <= ROWS) {
                rows += out[end].ids.len() - out[end].cache.len();
                end += 1;
            }
            let tails: Vec<Vec<u32>> = out[i..end].iter().map(|a| a.ids[a.cache.len()..].to_vec()).collect();
            let mut batch: Vec<SeqInput> =
                out[i..end].iter_mut().zip(&tails).map(|(a, t)| SeqInput { cache: &mut a.cache, tokens: t, logits: Logits::Last }).collect();
            match model.forward(&mut batch) {
                Ok(logits) => {
                    for (a, l) in out[i..end].iter_mut().zip(logits) {
                        a.logits = l;
                    }
                }
                Err(e) => failed.extend((i..end).map(|k| (k, e.to_string()))),
            }
            i = end;
        }
        for (k, e) in failed.iter().rev() {
            let a = out.remove(*k);
            let _ = a.job.events.send(Event::Error(e.clone()));
        }
        out
    }

    /// Samples one token for every active request, reports it, retires finished requests (keeping their caches
    /// for a continuation), then feeds the sampled tokens.
    fn step(&mut self, active: &mut Vec<Active>) {
        let ctx = self.model.transformer.cfg.max_position_embeddings;
        let tok = &self.model.tokenizer;
        let mut finished = Vec::new();
        for (k, a) in active.iter_mut().enumerate() {
            let (t, lp) = sample(&a.logits, &a.job.params, &mut a.rng);
            a.sampled.push(t);
            let is_stop = is_stop_token(tok, &a.job.params, t);
            let n = a.sampled.len() - usize::from(is_stop);
            let text = tok.decode(&a.sampled[..n], true).unwrap_or_default();
            let cut = stop_string_at(&a.job.params, &text);
            let visible = cut.map_or(text.as_str(), |c| &text[..c]);
            // Hold back a character still split over tokens, and text that may be the start of a stop string.
            let hold = if cut.is_some() || is_stop { 0 } else { held_back(visible, &a.job.params.stop_strings) };
            let upto = visible.len().saturating_sub(hold).max(a.sent);
            let delta = visible.get(a.sent..upto).unwrap_or("").to_string();
            a.sent = upto.max(a.sent);
            let gone = a.job.events.send(Event::Token { id: t, logprob: lp, text: delta }).is_err();
            let stopped = is_stop || cut.is_some();
            let length = a.sampled.len() >= a.job.params.max_new_tokens || a.cache.len() + 1 >= ctx;
            if stopped || length || gone {
                let _ = a.job.events.send(Event::Done { stopped, prompt_tokens: a.prompt_len });
                finished.push(k);
            } else {
                a.ids.push(t);
            }
        }
        for &k in finished.iter().rev() {
            let a = active.remove(k);
            // The cache holds every token but the last sampled one, which the next turn's prompt feeds.
            let mut ids = a.ids;
            ids.truncate(a.cache.len());
            self.turns.put(a.adapter, ids, a.cache);
        }
        let adapters: Vec<Option<String>> = {
            let mut v: Vec<Option<String>> = active.iter().map(|a| a.adapter.clone()).collect();
            v.sort();
            v.dedup();
            v
        };
        for adapter in adapters {
            let failed = self.with_adapter(&adapter, |e| {
                let last: Vec<[u32; 1]> = active.iter().map(|a| [a.sampled.last().copied().unwrap_or(0)]).collect();
                let idx: Vec<usize> = (0..active.len()).filter(|&k| active[k].adapter == adapter).collect();
                let mut batch: Vec<SeqInput> = Vec::new();
                for (k, a) in active.iter_mut().enumerate().filter(|(_, a)| a.adapter == adapter) {
                    batch.push(SeqInput { cache: &mut a.cache, tokens: &last[k], logits: Logits::Last });
                }
                match e.model.transformer.forward(&mut batch) {
                    Ok(logits) => {
                        for (k, l) in idx.into_iter().zip(logits) {
                            active[k].logits = l;
                        }
                        None
                    }
                    Err(err) => Some(err.to_string()),
                }
            });
            if let Some(e) = failed {
                active.retain(|a| {
                    if a.adapter == adapter {
                        let _ = a.job.events.send(Event::Error(e.clone()));
                        false
                    } else {
                        true
                    }
                });
            }
        }
    }
}
