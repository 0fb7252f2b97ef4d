//! `autodidact train`: LoRA SFT on a filtered dataset (wraps `train::train_sft`), GRPO / SDAR on a rollout file
//! (`--objective`, in `train_rl`), and `--bench` for training throughput (wraps `train::bench::bench_train`).
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context};
use clap::Args;
use serde_json::json;

use crate::pipeline::train_plots::write_sft_plot;
use crate::progress;
use super::{ModelArgs};
use crate::data::dataset::read_dataset;
use crate::model::lora::{LoraAdapter, LoraConfig, Proj};
use crate::train::bench::{bench_train, BenchParams};
use crate::train::data::epoch_batches;
use crate::train::optim::AdamWParams;
use crate::agent::hint::{HintPlacement, HintSource};
use crate::train::rl::Objective;
use crate::train::{train_sft, SftParams, StepMetrics, TrainModel, TrainRow};

#[derive(Args, Debug)]
pub struct TrainArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// sft: --data is a dataset written by `filter` (DIR/dataset.jsonl). grpo / sdar: --data is a rollout's
    /// trajectories.jsonl, and every episode is trained on (at least 2 samples per task).
    #[arg(long, default_value = "sft")]
    pub objective: Objective,
    /// Dataset (sft) or trajectories (grpo, sdar).
    #[arg(long, required_unless_present = "bench")]
    pub data: Option<PathBuf>,
    /// Run folder: checkpoint/, metrics.jsonl, its curves (loss.svg; rl.svg for grpo and sdar), and the final adapter
    /// in OUT/adapter (PEFT format).
    #[arg(long, required_unless_present = "bench")]
    pub out: Option<PathBuf>,
    /// LoRA rank.
    #[arg(long, default_value_t = 8)]
    pub rank: usize,
    /// LoRA alpha (the update is scaled by alpha / rank).
    #[arg(long, default_value_t = 16.0)]
    pub alpha: f32,
    /// Dropout on the adapter's input during training.
    #[arg(long, default_value_t = 0.05)]
    pub dropout: f32,
    /// Projections to adapt, comma separated (q,k,v,o,gate,up,down or their HF names).
    #[arg(long, value_delimiter = ',', value_parser = parse_proj, default_value = "q,k,v,o,gate,up,down")]
    pub targets: Vec<Proj>,
    /// Peak learning rate (linear warmup, then cosine decay to --min-lr-ratio of it).
    #[arg(long, default_value_t = 2e-4)]
    pub lr: f64,
    #[arg(long, default_value_t = 0.0)]
    pub min_lr_ratio: f64,
    /// Passes over the data (ignored when --max-steps is given).
    #[arg(long, default_value_t = 1)]
    pub epochs: usize,
    /// Optimizer steps in total (overrides --epochs).
    #[arg(long)]
    pub max_steps: Option<usize>,
    /// Rows per micro-batch.
    #[arg(long, default_value_t = 4)]
    pub batch_size: usize,
    /// Micro-batches per optimizer step (the loss is normalised by the trained tokens of the whole step).
    #[arg(long, default_value_t = 1)]
    pub grad_accum: usize,
    /// Warmup steps.
    #[arg(long, default_value_t = 10)]
    pub warmup: usize,
    /// Clip the global gradient norm to this (0 disables clipping).
    #[arg(long, default_value_t = 1.0)]
    pub max_grad_norm: f64,
    #[arg(long, default_value_t = 0.0)]
    pub weight_decay: f64,
    /// Seeds the adapter's initialisation, the batch order and dropout.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Rows longer than this are an error (default: the model's context length).
    #[arg(long)]
    pub max_seq_len: Option<usize>,
    /// Write a checkpoint every N steps (always at the end).
    #[arg(long, default_value_t = 0)]
    pub save_every: usize,
    /// Continue from OUT/checkpoint (exact: the same steps, batches and dropout as an uninterrupted run).
    #[arg(long)]
    pub resume: bool,
    /// Stop after this many steps with a checkpoint, keeping the full run's schedule (resume later).
    #[arg(long)]
    pub stop_after: Option<usize>,
    /// RL: task groups (all samples of a task) per optimizer step.
    #[arg(long, default_value_t = 4)]
    pub groups_per_step: usize,
    /// RL reward: this times the verdict's score, minus --invalid-penalty per invalid step.
    #[arg(long, default_value_t = 10.0)]
    pub success_reward: f64,
    #[arg(long, default_value_t = 0.1)]
    pub invalid_penalty: f64,
    /// RL: floor under a task group's reward std when normalising advantages (0: plain GRPO). A floor near the
    /// success reward's scale makes groups whose rewards differ only by --invalid-penalty weigh less than groups
    /// with a success in the same step.
    #[arg(long, default_value_t = 0.0)]
    pub std_floor: f64,
    /// RL: PPO clip range, KL-to-base and entropy weights.
    #[arg(long, default_value_t = 0.2)]
    pub clip_eps: f64,
    #[arg(long, default_value_t = 0.01)]
    pub kl_coef: f64,
    #[arg(long, default_value_t = 0.001)]
    pub entropy_coef: f64,
    /// SDAR: weight and gate sharpness (0: a flat gate) of the self-distillation term.
    #[arg(long, default_value_t = 0.01)]
    pub sdar_lambda: f64,
    #[arg(long, default_value_t = 5.0)]
    pub sdar_beta: f64,
    /// SDAR's privileged context: skill (prompts/skills/<suite>.md) or plan (the task's reference calls; needs
    /// --tasks, else the skill text).
    #[arg(long, default_value = "skill")]
    pub hint_source: HintSource,
    /// Where the teacher sees the privileged context: system (end of the system message) or user (end of the
    /// task's message).
    #[arg(long, default_value = "system")]
    pub hint_placement: HintPlacement,
    /// RL: forward and backward each sample separately instead of computing a task's shared prompt once (for
    /// comparing the two; the numbers agree up to summation order).
    #[arg(long)]
    pub no_shared_prefix: bool,
    /// Task files (JSONL) of the trajectories' tasks, for plan hints.
    #[arg(long)]
    pub tasks: Vec<PathBuf>,
    /// Measure training throughput (trained tokens/s, peak RSS) instead of training.
    #[arg(long)]
    pub bench: bool,
    /// Shapes for --bench, as BATCHxLEN, comma separated.
    #[arg(long, value_delimiter = ',', value_parser = parse_shape, default_value = "1x256,1x512,4x256,4x512")]
    pub bench_shapes: Vec<(usize, usize)>,
    /// Timed steps per shape for --bench (the median is reported).
    #[arg(long, default_value_t = 3)]
    pub bench_repeats: usize,
    /// Print the summary as one JSON object on stdout (and hide the progress bar).
    #[arg(long)]
    pub json: bool,
}

/// `--adapter` to continue, or a fresh adapter of the flags' shape seeded by `--seed`.
pub(super) fn start_adapter(a: &TrainArgs, m: &crate::model::LoadedModel) -> anyhow::Result<LoraAdapter> {
    let cfg = m.config();
    Ok(match &a.model.adapter {
        Some(dir) => {
            let ad = LoraAdapter::load(dir, cfg, Some(&m.base_name)).with_context(|| format!("loading the starting adapter {}", dir.display()))?;
            eprintln!("starting from adapter {} (rank {}, its own targets and alpha)", dir.display(), ad.config.r);
            ad
        }
        None => LoraAdapter::new(LoraConfig { r: a.rank, alpha: a.alpha, dropout: a.dropout, targets: a.targets.clone(), base_model: m.base_name.clone() }, cfg, a.seed)?,
    })
}

fn parse_proj(s: &str) -> Result<Proj, String> {
    Proj::from_hf_name(s.trim()).ok_or_else(|| format!("unknown target `{s}` (use q,k,v,o,gate,up,down)"))
}

fn parse_shape(s: &str) -> Result<(usize, usize), String> {
    let (b, t) = s.split_once('x').ok_or_else(|| format!("shape `{s}` is not BATCHxLEN"))?;
    let n = |v: &str| v.trim().parse::<usize>().map_err(|e| format!("shape `{s}`: {e}"));
    Ok((n(b)?, n(t)?))
}

pub fn run(a: TrainArgs) -> anyhow::Result<()> {
    if a.bench {
        return bench(&a);
    }
    if a.objective.is_rl() {
        // RL steps are set by the episodes (task groups per step x epochs); a flag it would ignore is refused.
        for (set, flag) in [(a.max_steps.is_some(), "--max-steps"), (a.grad_accum != 1, "--grad-accum")] {
            if set {
                bail!("{flag} applies to --objective sft; RL takes --groups-per-step and --epochs (--stop-after N stops after N steps)");
            }
        }
        return super::train_rl::run(&a);
    }
    let (Some(data), Some(out)) = (&a.data, &a.out) else { bail!("give --data FILE and --out DIR") };
    let _lock = crate::lock::OutputLock::acquire(out)?;
    // Read the data before loading the model: a malformed line should fail in milliseconds.
    let rows: Vec<TrainRow> = read_dataset(data)?
        .into_iter()
        .map(|r| TrainRow { id: Some(r.id), token_ids: r.token_ids, loss_mask: r.loss_mask })
        .collect();
    let m = super::load_model(&a.model.model)?;
    let cfg = m.config().clone();
    let adapter = start_adapter(&a, &m)?;
    let params = SftParams {
        lr: a.lr,
        warmup_steps: a.warmup,
        min_lr_ratio: a.min_lr_ratio,
        epochs: a.epochs,
        max_steps: a.max_steps,
        batch_size: a.batch_size,
        grad_accum: a.grad_accum,
        max_grad_norm: a.max_grad_norm,
        adam: AdamWParams { weight_decay: a.weight_decay, ..AdamWParams::default() },
        seed: a.seed,
        max_seq_len: a.max_seq_len.unwrap_or(cfg.max_position_embeddings),
        save_every: a.save_every,
        out_dir: out.clone(),
        resume: a.resume,
        stop_after: a.stop_after,
    };
    let tm = TrainModel::new(&cfg, &m.transformer.weights)?;
    // The inference weights are no longer needed; training holds its own f32 copy.
    drop(m);
    let lengths: Vec<usize> = rows.iter().map(|r| r.token_ids.len()).collect();
    let per_epoch = epoch_batches(&lengths, a.batch_size.max(1), a.seed, 0).len();
    let total = a.max_steps.unwrap_or_else(|| (a.epochs * per_epoch).div_ceil(a.grad_accum.max(1)));
    let trained_per_epoch: usize = rows.iter().map(TrainRow::trained_tokens).sum();
    eprintln!("training on {} rows ({trained_per_epoch} trained tokens per epoch), {total} steps, {} adapter parameters", rows.len(), adapter.num_parameters());

    let pb = progress::bar(total as u64, "training", a.json);
    let t0 = Instant::now();
    let mut first: Option<StepMetrics> = None;
    let mut last: Option<StepMetrics> = None;
    let mut tokens = 0u64;
    let outcome = train_sft(&tm, adapter, &rows, &params, &mut |s: &StepMetrics| {
        pb.set_position(s.step as u64);
        pb.set_message(format!("training loss {:.4}", s.loss));
        tokens += s.step_tokens as u64;
        if first.is_none() {
            first = Some(s.clone());
        }
        last = Some(s.clone());
    });
    pb.finish_and_clear();
    let outcome = outcome?;
    let wall = t0.elapsed().as_secs_f64();
    let plot = write_sft_plot(out)?;
    let tps = tokens as f64 / wall.max(1e-9);
    let first_loss = first.as_ref().map(|s| s.loss);
    let last_loss = last.as_ref().map(|s| s.loss).or(outcome.last_loss);
    if a.json {
        println!(
            "{}",
            serde_json::to_string(&json!({
                "steps": outcome.steps, "finished": outcome.finished, "first_loss": first_loss, "last_loss": last_loss,
                "trained_tokens": tokens, "tokens_per_second": tps, "wall_seconds": wall,
                "adapter": outcome.finished.then(|| outcome.adapter_dir.display().to_string()),
                "checkpoint": outcome.checkpoint_dir.display().to_string(), "plot": plot.display().to_string(),
            }))?
        );
    } else {
        let f = |v: Option<f64>| v.map_or("n/a".to_string(), |v| format!("{v:.4}"));
        println!("steps        {}{}", outcome.steps, if outcome.finished { "" } else { " (stopped early; --resume continues)" });
        println!("loss         {} -> {}", f(first_loss), f(last_loss));
        println!("throughput   {tps:.1} trained tokens/s ({tokens} tokens this run)");
        println!("wall time    {wall:.1} s");
        if outcome.finished {
            println!("adapter      {}", outcome.adapter_dir.display());
        }
        println!("checkpoint   {}", outcome.checkpoint_dir.display());
        println!("curves       {}", plot.display());
    }
    Ok(())
}

fn bench(a: &TrainArgs) -> anyhow::Result<()> {
    let m = super::load_model(&a.model.model)?;
    let cfg = m.config().clone();
    if let Some(&(_, t)) = a.bench_shapes.iter().find(|&&(b, t)| b == 0 || t < 2 || t > cfg.max_position_embeddings) {
        bail!("bench shape length {t} must be in 2..={} (the model's context) and batch must be positive", cfg.max_position_embeddings);
    }
    let tm = TrainModel::new(&cfg, &m.transformer.weights)?;
    drop(m);
    let p = BenchParams { shapes: a.bench_shapes.clone(), r: a.rank, targets: a.targets.clone(), repeats: a.bench_repeats.max(1) };
    let threads = std::env::var("CANDLE_NUM_THREADS").unwrap_or_default();
    eprintln!("LoRA rank {} on {:?}, {} rayon threads, CANDLE_NUM_THREADS={threads}", p.r, p.targets.iter().map(|t| t.short_name()).collect::<Vec<_>>(), rayon::current_num_threads());
    let results = bench_train(&tm, &p, |r| {
        if !a.json {
            println!("{r}");
        }
    })?;
    if a.json {
        let list: Vec<_> = results
            .iter()
            .map(|r| json!({"batch": r.batch, "seq_len": r.seq_len, "trained_tokens": r.trained_tokens, "tokens_per_second": r.tokens_per_s,
                "median_step_s": r.median_step_s, "forward_s": r.forward_s, "backward_s": r.backward_s, "optimizer_s": r.optimizer_s, "peak_rss_mb": r.peak_rss_mb}))
            .collect();
        println!("{}", serde_json::to_string(&json!({"model": a.model.model, "rank": p.r, "results": list}))?);
    }
    Ok(())
}
