//! GRPO or SDAR on every episode of a rollout, with a progress bar and `rl.svg`.
use std::path::PathBuf;
use std::time::Instant;

use crate::agent::hint::HintPlacement;
use crate::data::jsonl::read_jsonl;
use crate::data::{ReadMode, Trajectory};
use crate::distil::rl::{rl_rows, sampling_temperature, Rewards, Teacher};
use crate::model::lora::LoraAdapter;
use crate::model::LoadedModel;
use crate::pipeline::train_plots::write_rl_plot;
use crate::train::rl::{plan, train_rl, Objective, RlOutcome, RlParams, RlStepMetrics};
use crate::train::TrainModel;

pub struct RlJob<'a> {
    pub model: &'a LoadedModel,
    pub adapter: LoraAdapter,
    pub trajectories: &'a [Trajectory],
    pub rewards: Rewards,
    /// SDAR's privileged context for an episode (None: its teacher is the student).
    pub hint_of: &'a dyn Fn(&Trajectory) -> Option<String>,
    pub placement: HintPlacement,
    pub params: RlParams,
    /// Hides the progress bar and the opening line.
    pub quiet: bool,
}

pub struct RlJobOutcome {
    pub outcome: RlOutcome,
    /// Every step of the run, resumed ones included (from `metrics.jsonl`).
    pub steps: Vec<RlStepMetrics>,
    pub episodes_without_hint: usize,
    /// The mean reward of the episodes.
    pub reward_mean: f64,
    /// The temperature the episodes were sampled at (the trainer scores them under it).
    pub temperature: f64,
    pub wall_seconds: f64,
    /// `rl.svg`.
    pub plot: PathBuf,
}

/// Builds the rows (with the teacher's views for SDAR), then trains (or resumes) and draws the curves.
pub fn run_rl(job: RlJob) -> anyhow::Result<RlJobOutcome> {
    let p = &job.params;
    let teacher = Teacher { hint_of: job.hint_of, placement: job.placement, encoder: job.model };
    let (rows, without_hint) = rl_rows(job.trajectories, &job.rewards, (p.objective == Objective::Sdar).then_some(&teacher))?;
    let pl = plan(&rows, p)?;
    let total = pl.used.len().div_ceil(p.groups_per_step.max(1)) * p.optim.epochs;
    if !job.quiet {
        let flat = pl.flat.iter().filter(|&&f| f).count();
        let hints = if p.objective == Objective::Sdar { format!(", {without_hint} episodes without a hint") } else { String::new() };
        eprintln!(
            "{:?} on {} episodes of {} tasks ({flat} with equal rewards), {total} steps after a reference pass{hints}",
            p.objective,
            rows.len(),
            pl.groups.len()
        );
    }
    let mut tm = TrainModel::new(job.model.config(), &job.model.transformer.weights)?;
    let temperature = sampling_temperature(job.trajectories)?;
    tm.set_temperature(temperature)?;
    let pb = crate::progress::bar(total as u64, "training", job.quiet);
    let t0 = Instant::now();
    let outcome = train_rl(&tm, job.adapter, &rows, p, &mut |s: &RlStepMetrics| {
        pb.set_position(s.step as u64);
        pb.set_message(format!(
            "reward {:.2}, kl {:.4} (max {:.2}){}",
            s.reward_mean,
            s.kl,
            s.kl_max,
            s.gap_mean.map(|g| format!(", gap {g:.3}")).unwrap_or_default()
        ));
    });
    pb.finish_and_clear();
    let outcome = outcome?;
    let wall_seconds = t0.elapsed().as_secs_f64();
    let steps: Vec<RlStepMetrics> = read_jsonl(&p.out_dir.join("metrics.jsonl"), ReadMode::Strict)?.into_items();
    let plot = write_rl_plot(&p.out_dir)?;
    let reward_mean = rows.iter().map(|r| r.reward).sum::<f64>() / rows.len().max(1) as f64;
    Ok(RlJobOutcome { outcome, steps, episodes_without_hint: without_hint, reward_mean, temperature, wall_seconds, plot })
}
