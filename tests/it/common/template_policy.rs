//! A policy for tests that renders the whole conversation with the model's chat template every turn and hands
//! the episode the new tokens since its last sampled id (as the engine-backed policy does); the "sampled" text
//! comes from a script and is tokenized, plus the end-of-turn token.
use std::collections::HashMap;

use autodidact::agent::episode::{run_episodes, Job, Limits, RunConfig};
use autodidact::agent::hint::HintSpec;
use autodidact::agent::policy::{FinishReason, Policy, TurnOutput, TurnRequest};
use autodidact::agent::prompts::{PromptOptions, Prompts};
use autodidact::agent::scripted::{reference_script, TurnScript};
use autodidact::data::dataset::chat_messages;
use autodidact::data::{Message, Task, Trajectory};
use autodidact::model::LoadedModel;

pub struct TemplatePolicy<'a, F> {
    model: &'a LoadedModel,
    script: F,
    seen: HashMap<usize, Vec<u32>>,
    turns: HashMap<usize, usize>,
}

impl<F: FnMut(usize, usize, &[Message]) -> TurnScript> Policy for TemplatePolicy<'_, F> {
    fn turns(&mut self, requests: &[TurnRequest<'_>]) -> anyhow::Result<Vec<TurnOutput>> {
        let eot = self.model.tokenizer.token_to_id("<|im_end|>").unwrap();
        let mut out = Vec::new();
        for r in requests {
            let full = self.model.encode_chat(&chat_messages(r.messages), None, true)?;
            let seen = self.seen.entry(r.episode).or_default();
            assert!(full.starts_with(seen), "the template re-rendered earlier tokens differently");
            let delta = full[seen.len()..].to_vec();
            let turn = self.turns.entry(r.episode).or_insert(0);
            let text = (self.script)(r.episode, *turn, r.messages).text;
            *turn += 1;
            let mut sampled = self.model.tokenizer.encode(&text)?;
            sampled.push(eot);
            seen.extend(&delta);
            seen.extend(&sampled);
            out.push(TurnOutput { text, prompt_delta_ids: delta, logprobs: vec![-0.5; sampled.len()], sampled_ids: sampled, finish: FinishReason::Stop });
        }
        Ok(out)
    }
}

impl<'a, F> TemplatePolicy<'a, F> {
    pub fn new(model: &'a LoadedModel, script: F) -> Self {
        TemplatePolicy { model, script, seen: HashMap::new(), turns: HashMap::new() }
    }
}

/// One episode per task, tools in the system prompt, few-shot examples and a hint as asked, each answered by the
/// task's reference script through `TemplatePolicy`.
pub fn rollouts(model: &LoadedModel, tasks: &[Task], fewshot: bool, hint: Option<HintSpec>) -> Vec<Trajectory> {
    let prompts = Prompts::embedded().unwrap();
    let cfg = RunConfig {
        limits: Limits { max_episode_tokens: 1 << 20, ..Limits::default() },
        prompts: &prompts,
        prompt_options: PromptOptions { fewshot, tools_in_system: true, hint },
        identity: Default::default(),
        external: &Default::default(),
    };
    let refs: Vec<&Task> = tasks.iter().collect();
    let jobs: Vec<Job> = refs.iter().map(|t| Job { task: t, sample_index: 0 }).collect();
    let mut policy = TemplatePolicy::new(model, reference_script(&refs));
    let mut out = Vec::new();
    run_episodes(&mut policy, &jobs, &cfg, |t| out.push(t)).unwrap();
    out
}
