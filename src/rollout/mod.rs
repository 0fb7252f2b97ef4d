//! Rollouts: K sampled episodes per task, many tasks at once, through the batched sampler; resumable. `chat_form`:
//! how a conversation with tools is given to a model's chat template (`serve`'s, and chat rows' for training).
pub mod chat_form;
pub mod policy;
pub(crate) mod prefix;
pub mod remote;

use std::path::Path;
use std::time::Instant;

use anyhow::Context;

use crate::agent::episode::{run_episodes, Job, Limits, RunConfig};
use crate::agent::prompts::{PromptOptions, Prompts};
use crate::data::jsonl::completed_samples;
use crate::data::{JsonlAppender, RunIdentity, SamplingInfo, Task};
use crate::model::LoadedModel;
use crate::sample::SamplingParams;

pub use policy::EnginePolicy;

#[derive(Debug, Clone)]
pub struct RolloutParams {
    pub samples_per_task: u32,
    pub sampling: SamplingParams,
    pub limits: Limits,
    pub prompt_options: PromptOptions,
    /// Recorded in every trajectory.
    pub adapter: Option<String>,
    /// Sample on these servers instead of in this process.
    pub remote: Option<Remote>,
    /// The MCP servers of `mcp` tasks and the environments of `env` tasks.
    pub external: crate::tasks::external::External,
}

/// OpenAI-compatible servers to sample on; episodes are spread over them.
#[derive(Debug, Clone)]
pub struct Remote {
    pub clients: Vec<crate::backend::Client>,
    /// Requests in flight per server.
    pub concurrency: usize,
}

impl Remote {
    /// The servers of `cfg`, connected and checked (see `BackendConfig::connect`).
    pub fn connect(cfg: &crate::backend::BackendConfig) -> anyhow::Result<Remote> {
        Ok(Remote { clients: cfg.connect()?, concurrency: cfg.concurrency })
    }

    /// Loads the adapter folder `dir` into every server under `name`; the returned servers sample with it.
    pub fn with_adapter(&self, name: &str, dir: &Path) -> anyhow::Result<Remote> {
        let dir = dir.canonicalize().with_context(|| format!("adapter {}", dir.display()))?;
        let clients = self.clients.iter().map(|c| c.load_adapter(name, &dir).map(|()| c.with_model(name))).collect::<anyhow::Result<_>>()?;
        Ok(Remote { clients, concurrency: self.concurrency })
    }
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct RolloutSummary {
    pub episodes_total: usize,
    pub episodes_run: usize,
    pub episodes_skipped: usize,
    pub successes_run: usize,
    pub generated_tokens: usize,
    pub seconds: f64,
    pub episodes_per_minute: f64,
    pub generated_tokens_per_second: f64,
    pub max_batch: usize,
}

/// RNG stream of one (task, sample): a stable hash, so a sample is the same whatever else runs beside it.
pub fn stream_of(task_id: &str, sample: u32) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in task_id.bytes().chain(sample.to_le_bytes()) {
        h ^= b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    h
}

/// Runs every (task, sample) not yet in `out` and appends its trajectory as it finishes, so an interrupted run
/// continues where it stopped when rerun.
pub fn rollout(
    model: &LoadedModel,
    prompts: &Prompts,
    tasks: &[Task],
    p: &RolloutParams,
    out: &Path,
    on_episode: &mut dyn FnMut(&crate::data::Trajectory),
    on_tokens: Box<dyn FnMut(usize) + '_>,
) -> anyhow::Result<RolloutSummary> {
    let done = completed_samples(out).with_context(|| format!("reading {}", out.display()))?;
    let mut jobs = Vec::new();
    for t in tasks {
        for s in 0..p.samples_per_task {
            if !done.contains(&(t.id.clone(), s)) {
                jobs.push(Job { task: t, sample_index: s });
            }
        }
    }
    let total = tasks.len() * p.samples_per_task as usize;
    let mut summary = RolloutSummary { episodes_total: total, episodes_skipped: total - jobs.len(), ..Default::default() };
    let (mut appender, dropped) = JsonlAppender::open(out).with_context(|| format!("opening {}", out.display()))?;
    if dropped > 0 {
        eprintln!("{}: dropped a truncated last line ({dropped} bytes) left by an interrupted run", out.display());
    }
    let streams: Vec<u64> = jobs.iter().map(|j| stream_of(&j.task.id, j.sample_index)).collect();
    let mut policy: Box<dyn crate::agent::policy::Policy + '_> = match &p.remote {
        Some(r) => Box::new(remote::RemotePolicy::new(model, r.clients.clone(), r.concurrency, p.sampling.clone(), streams, on_tokens)),
        None => Box::new(EnginePolicy::new(model, p.sampling.clone(), streams, on_tokens)),
    };
    let cfg = RunConfig {
        limits: p.limits.clone(),
        prompts,
        prompt_options: p.prompt_options,
        identity: RunIdentity {
            model: model.base_name.clone(),
            adapter: p.adapter.clone(),
            sampling: SamplingInfo {
                temperature: p.sampling.temperature as f64,
                top_p: (p.sampling.top_p < 1.0).then_some(p.sampling.top_p as f64),
                top_k: (p.sampling.top_k > 0).then_some(p.sampling.top_k as u32),
                seed: p.sampling.seed,
            },
            backend: p.remote.as_ref().map(|r| crate::backend::info(&r.clients)),
        },
        external: &p.external,
    };
    let t0 = Instant::now();
    let mut write_err = None;
    let stats = run_episodes(policy.as_mut(), &jobs, &cfg, |traj| {
        summary.episodes_run += 1;
        summary.successes_run += traj.verdict.success as usize;
        summary.generated_tokens += traj.counts.generated_tokens as usize;
        on_episode(&traj);
        if write_err.is_none() {
            write_err = appender.append(&traj).err();
        }
    })?;
    if let Some(e) = write_err {
        return Err(e).with_context(|| format!("writing {}", out.display()));
    }
    summary.seconds = t0.elapsed().as_secs_f64();
    summary.max_batch = stats.max_batch;
    summary.episodes_per_minute = summary.episodes_run as f64 * 60.0 / summary.seconds.max(1e-9);
    summary.generated_tokens_per_second = summary.generated_tokens as f64 / summary.seconds.max(1e-9);
    Ok(summary)
}

/// Runs rollouts with a progress bar; shared by `rollout`, `eval` and the loop.
pub fn run_rollout(model: &LoadedModel, prompts: &Prompts, tasks: &[Task], params: &RolloutParams, out: &Path, quiet: bool) -> anyhow::Result<RolloutSummary> {
    let total = tasks.len() as u64 * params.samples_per_task as u64;
    let pb = crate::progress::bar(total, "episodes", quiet);
    let mut ok = 0u64;
    let tokens = std::cell::Cell::new(0usize);
    let s = rollout(
        model,
        prompts,
        tasks,
        params,
        out,
        &mut |t| {
            ok += t.verdict.success as u64;
            pb.inc(1);
            pb.set_message(format!("episodes ({ok} solved, {} tokens)", tokens.get()));
        },
        Box::new(|n| tokens.set(tokens.get() + n)),
    )?;
    pb.finish_and_clear();
    Ok(s)
}
