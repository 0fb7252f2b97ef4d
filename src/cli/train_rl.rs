//! `autodidact train --objective grpo|sdar`: RL on every episode of a rollout file (wraps `train::rl::train_rl`).
use std::collections::HashMap;
use std::time::Instant;

use anyhow::{bail, Context};
use serde_json::json;

use super::train::TrainArgs;
use crate::agent::hint;
use crate::agent::taskfile::load_tasks;
use crate::data::jsonl::read_jsonl;
use crate::data::{ReadMode, Task, Trajectory};
use crate::distil::rl::{rl_rows, sampling_temperature, Rewards, Teacher};
use crate::pipeline::train_plots::write_rl_plot;
use crate::progress;
use crate::train::optim::AdamWParams;
use crate::train::rl::{plan, train_rl, Objective, RlCoefs, RlParams, RlStepMetrics};
use crate::train::TrainModel;

pub fn run(a: &TrainArgs) -> anyhow::Result<()> {
    let (Some(data), Some(out)) = (&a.data, &a.out) else { bail!("give --data TRAJECTORIES.jsonl and --out DIR") };
    let _lock = crate::lock::OutputLock::acquire(out)?;
    // Data and task files first: a malformed line fails before the model loads.
    let trajs: Vec<Trajectory> = read_jsonl(data, ReadMode::Strict)?.into_items();
    let mut tasks: HashMap<String, Task> = HashMap::new();
    for f in &a.tasks {
        for t in load_tasks(f).with_context(|| format!("reading task file {}", f.display()))? {
            tasks.insert(t.id.clone(), t);
        }
    }
    let m = super::load_model(&a.model.model)?;
    let cfg = m.config().clone();
    // Without a task file, a trajectory's suite still gives its skill text.
    let hint_of = |t: &Trajectory| match tasks.get(&t.task_id) {
        Some(task) => hint::privileged(task, a.hint_source),
        None => hint::skill(&t.suite).map(str::to_string),
    };
    let teacher = Teacher { hint_of: &hint_of, placement: a.hint_placement, encoder: &m };
    let rewards = Rewards { success: a.success_reward, invalid_penalty: a.invalid_penalty };
    let (rows, without_hint) = rl_rows(&trajs, &rewards, (a.objective == Objective::Sdar).then_some(&teacher))?;
    let adapter = super::train::start_adapter(a, &m)?;
    let params = RlParams {
        objective: a.objective,
        coefs: RlCoefs { clip_eps: a.clip_eps, kl_coef: a.kl_coef, entropy_coef: a.entropy_coef, sdar_lambda: a.sdar_lambda, sdar_beta: a.sdar_beta },
        lr: a.lr,
        warmup_steps: a.warmup,
        min_lr_ratio: a.min_lr_ratio,
        epochs: a.epochs,
        groups_per_step: a.groups_per_step,
        batch_size: a.batch_size,
        max_grad_norm: a.max_grad_norm,
        adam: AdamWParams { weight_decay: a.weight_decay, ..AdamWParams::default() },
        seed: a.seed,
        max_seq_len: a.max_seq_len.unwrap_or(cfg.max_position_embeddings),
        save_every: a.save_every,
        out_dir: out.clone(),
        resume: a.resume,
        stop_after: a.stop_after,
        shared_prefix: !a.no_shared_prefix,
        std_floor: a.std_floor,
    };
    let pl = plan(&rows, &params)?;
    let flat = pl.flat.iter().filter(|&&f| f).count();
    let total = pl.used.len().div_ceil(a.groups_per_step.max(1)) * a.epochs;
    eprintln!("{:?} on {} episodes of {} tasks ({flat} with equal rewards), {total} steps{}", a.objective, rows.len(), pl.groups.len(),
        if a.objective == Objective::Sdar { format!(", {without_hint} episodes without a hint") } else { String::new() });
    let mut tm = TrainModel::new(&cfg, &m.transformer.weights)?;
    let temperature = sampling_temperature(&trajs)?;
    tm.set_temperature(temperature)?;
    drop(m);
    let pb = progress::bar(total as u64, "training", a.json);
    let t0 = Instant::now();
    let mut steps: Vec<RlStepMetrics> = Vec::new();
    let outcome = train_rl(&tm, adapter, &rows, &params, &mut |s: &RlStepMetrics| {
        pb.set_position(s.step as u64);
        pb.set_message(format!("reward {:.2}, kl {:.4} (max {:.2})", s.reward_mean, s.kl, s.kl_max));
        steps.push(s.clone());
    });
    pb.finish_and_clear();
    let outcome = outcome?;
    let wall = t0.elapsed().as_secs_f64();
    let plot = write_rl_plot(out)?;
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
    println!("groups         {} ({} with equal rewards: no GRPO signal), {} episodes used", outcome.groups, outcome.zero_variance_groups, outcome.episodes_used);
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
