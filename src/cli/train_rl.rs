//! `autodidact train --objective grpo|sdar`: RL on every episode of a rollout file (wraps `train::rl::train_rl`).
use std::collections::HashMap;

use anyhow::{bail, Context};
use serde_json::json;

use super::train::TrainArgs;
use autodidact::agent::hint;
use autodidact::data::jsonl::read_jsonl;
use autodidact::data::{ReadMode, Task, Trajectory};
use autodidact::distil::rl::Rewards;
use autodidact::pipeline::jobs::{run_rl, RlJob};
use autodidact::tasks::taskfile::load_tasks;
use autodidact::train::rl::{RlCoefs, RlParams};

pub fn run(a: &TrainArgs) -> anyhow::Result<()> {
    let (Some(data), Some(out)) = (&a.data, &a.out) else { bail!("give --data TRAJECTORIES.jsonl and --out DIR") };
    let _lock = autodidact::lock::OutputLock::acquire(out)?;
    // Data and task files first: a malformed line fails before the model loads.
    let trajs: Vec<Trajectory> = read_jsonl(data, ReadMode::Strict)?.into_items();
    let mut tasks: HashMap<String, Task> = HashMap::new();
    for f in &a.tasks {
        for t in load_tasks(f).with_context(|| format!("reading task file {}", f.display()))? {
            tasks.insert(t.id.clone(), t);
        }
    }
    let m = super::load_model(&a.model.model)?;
    // Without a task file, a trajectory's suite still gives its skill text.
    let hint_of = |t: &Trajectory| match tasks.get(&t.task_id) {
        Some(task) => hint::privileged(task, a.hint_source),
        None => hint::skill(&t.suite).map(str::to_string),
    };
    let optim = a.optim.resolve(a.objective);
    let adapter = a.start_adapter(&m, &optim)?;
    let params = RlParams {
        coefs: RlCoefs { clip_eps: a.clip_eps, kl_coef: a.kl_coef, entropy_coef: a.entropy_coef, sdar_lambda: a.sdar_lambda, sdar_beta: a.sdar_beta },
        groups_per_step: a.groups_per_step,
        resume: a.resume,
        stop_after: a.stop_after,
        shared_prefix: !a.no_shared_prefix,
        std_floor: a.std_floor,
        ..RlParams::new(a.objective, optim, a.max_seq_len.unwrap_or(m.config().max_position_embeddings), out.clone())
    };
    let rewards = Rewards { success: a.success_reward, invalid_penalty: a.invalid_penalty };
    let job = run_rl(RlJob { model: &m, adapter, trajectories: &trajs, rewards, hint_of: &hint_of, placement: a.hint_placement, params, quiet: a.json })?;
    let (outcome, steps, wall, plot, temperature) = (&job.outcome, &job.steps, job.wall_seconds, &job.plot, job.temperature);
    let without_hint = job.episodes_without_hint;
    let tokens: usize = steps.iter().map(|s| s.step_tokens).sum();
    let summary = json!({
        "objective": a.objective, "steps": outcome.steps, "finished": outcome.finished, "groups": outcome.groups,
        "zero_variance_groups": outcome.zero_variance_groups, "episodes_used": outcome.episodes_used, "episodes_without_hint": without_hint,
        "sampler_gap": outcome.sampler_gap, "trained_tokens": tokens, "tokens_per_second": tokens as f64 / wall.max(1e-9), "wall_seconds": wall,
        "first_step": steps.first(), "last_step": steps.last(),
        "adapter": outcome.finished.then(|| outcome.adapter_dir.display().to_string()), "plot": plot.display().to_string(),
    });
    if a.json {
        println!("{}", serde_json::to_string(&summary)?);
        return Ok(());
    }
    let g = outcome.sampler_gap;
    println!("steps          {}{}", outcome.steps, if outcome.finished { "" } else { " (stopped early; --resume continues)" });
    println!(
        "groups         {} ({} with equal rewards: no GRPO signal), {} episodes used",
        outcome.groups, outcome.zero_variance_groups, outcome.episodes_used
    );
    if g.tokens > 0 {
        println!("sampler gap    mean |sampler - trainer| log-prob {:.5}, max {:.5} over {} tokens", g.mean_abs, g.max_abs, g.tokens);
    } else {
        println!("sampler gap    not measured (sampled at temperature {temperature}; the sampler records untempered log-probs)");
    }
    if let (Some(f), Some(l)) = (steps.first(), steps.last()) {
        println!("reward         {:.3} -> {:.3} (step means)", f.reward_mean, l.reward_mean);
        println!("kl / entropy   {:.5} -> {:.5} / {:.3} -> {:.3}", f.kl, l.kl, f.entropy, l.entropy);
        let peak = steps.iter().fold((0.0f64, 0.0f64), |(m, t), s| (m.max(s.kl), t.max(s.kl_max)));
        println!("kl peak        step mean {:.4}, one token {:.3}", peak.0, peak.1);
        if let (Some(gf), Some(gl)) = (f.gap_mean, l.gap_mean) {
            println!("teacher gap    {gf:.4} -> {gl:.4}, gate mean {:.3} -> {:.3}", f.gate_mean.unwrap_or(0.0), l.gate_mean.unwrap_or(0.0));
        }
    }
    println!("throughput     {:.1} trained tokens/s, wall time {wall:.1} s", tokens as f64 / wall.max(1e-9));
    println!("curves         {}", plot.display());
    if outcome.finished {
        println!("adapter        {}", outcome.adapter_dir.display());
    }
    Ok(())
}
