//! `autodidact train`: LoRA SFT on a filtered dataset (wraps `train::train_sft`), GRPO / SDAR on a rollout file
//! (`--objective`, in `train_rl`), and `--bench` for training throughput (wraps `train::bench::bench_train`).
use std::path::PathBuf;

use anyhow::bail;
use clap::Args;
use serde_json::json;

use super::ModelArgs;
use autodidact::agent::hint::{HintPlacement, HintSource};
use autodidact::model::lora::{LoraAdapter, LoraConfig, Proj};
use autodidact::pipeline::jobs::{read_sft_data, run_sft, sft_rows, start_adapter, SftJob};
use autodidact::train::bench::{bench_train, BenchParams};
use autodidact::train::frozen::BaseWeights;
use autodidact::train::rl::Objective;
use autodidact::train::{OptimParams, SftParams, TrainModel};

#[derive(Args, Debug)]
pub struct TrainArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// sft: --data is a dataset written by `filter` (DIR/dataset.jsonl). grpo / sdar: --data is a rollout's
    /// trajectories.jsonl, and every episode is trained on (at least 2 samples per task).
    #[arg(long, default_value = "sft")]
    pub objective: Objective,
    /// sft: a dataset written by `filter`, or a chat dataset: JSONL rows {"messages": [...], "tools": [...]} in the
    /// OpenAI / TRL form (structured tool_calls, tool messages), or a Hugging Face datasets Parquet file with those
    /// columns, each row rendered with the model's chat template, the loss on assistant turns only ("weight": 0
    /// keeps one out), audited into OUT/mask_audit.json (docs/chat-data.md). grpo, sdar: trajectories.
    #[arg(long, required_unless_present = "bench")]
    pub data: Option<PathBuf>,
    /// Run folder: checkpoint/, metrics.jsonl, its curves (loss.svg; rl.svg for grpo and sdar), the same numbers as
    /// TensorBoard scalars in tensorboard/, and the final adapter in OUT/adapter (PEFT format).
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
    #[command(flatten)]
    pub optim: OptimArgs,
    /// Optimizer steps in total (sft; overrides --epochs).
    #[arg(long)]
    pub max_steps: Option<usize>,
    /// Rows longer than this are an error (default: the model's context length).
    #[arg(long)]
    pub max_seq_len: Option<usize>,
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
    /// How --bench holds the frozen base weights: as the checkpoint stores them (quantized blocks stay quantized,
    /// as in training) or expanded to f32 (for comparison).
    #[arg(long, value_enum, default_value = "as-stored")]
    pub base_weights: BaseWeights,
    /// Print the summary as one JSON object on stdout (and hide the progress bar).
    #[arg(long)]
    pub json: bool,
}

/// The optimiser flags: unset ones take the objective's defaults ([`OptimParams::SFT`] or [`OptimParams::RL`]),
/// the same values the loop's config uses.
#[derive(Args, Debug)]
pub struct OptimArgs {
    #[arg(long, help = default_help("Peak learning rate (linear warmup, then cosine decay to --min-lr-ratio of it)", |o| o.lr))]
    pub lr: Option<f64>,
    #[arg(long, help = default_help("Warmup steps", |o| o.warmup))]
    pub warmup: Option<usize>,
    #[arg(long, help = default_help("The learning rate at the last step, as a share of the peak (1: constant after the warmup)", |o| o.min_lr_ratio))]
    pub min_lr_ratio: Option<f64>,
    #[arg(long, help = default_help("Passes over the data (sft: ignored when --max-steps is given)", |o| o.epochs))]
    pub epochs: Option<usize>,
    #[arg(long, help = default_help("Rows (sft) or episodes (grpo, sdar) per micro-batch", |o| o.batch_size))]
    pub batch_size: Option<usize>,
    #[arg(long, help = default_help("Micro-batches per optimizer step (sft; the loss is normalised by the trained tokens of the whole step)", |o| o.grad_accum))]
    pub grad_accum: Option<usize>,
    #[arg(long, help = default_help("Clip the global gradient norm to this (0 disables clipping)", |o| o.max_grad_norm))]
    pub max_grad_norm: Option<f64>,
    #[arg(long, help = default_help("AdamW's decoupled weight decay", |o| o.weight_decay))]
    pub weight_decay: Option<f64>,
    #[arg(long, help = default_help("Seeds the adapter's initialisation, the batch order and dropout", |o| o.seed))]
    pub seed: Option<u64>,
    #[arg(long, help = default_help("Write a checkpoint every N steps (0: only at the end, where one is always written)", |o| o.save_every))]
    pub save_every: Option<usize>,
}

fn default_help<T: PartialEq + std::fmt::Display>(what: &str, field: impl Fn(&OptimParams) -> T) -> String {
    let (sft, rl) = (field(&OptimParams::SFT), field(&OptimParams::RL));
    if sft == rl {
        format!("{what} [default: {sft}]")
    } else {
        format!("{what} [default: {sft} for sft, {rl} for grpo and sdar]")
    }
}

impl OptimArgs {
    /// The objective's defaults with the flags given on top.
    pub fn resolve(&self, objective: Objective) -> OptimParams {
        let d = if objective.is_rl() { OptimParams::RL } else { OptimParams::SFT };
        OptimParams {
            lr: self.lr.unwrap_or(d.lr),
            warmup: self.warmup.unwrap_or(d.warmup),
            min_lr_ratio: self.min_lr_ratio.unwrap_or(d.min_lr_ratio),
            epochs: self.epochs.unwrap_or(d.epochs),
            batch_size: self.batch_size.unwrap_or(d.batch_size),
            grad_accum: self.grad_accum.unwrap_or(d.grad_accum),
            max_grad_norm: self.max_grad_norm.unwrap_or(d.max_grad_norm),
            weight_decay: self.weight_decay.unwrap_or(d.weight_decay),
            seed: self.seed.unwrap_or(d.seed),
            save_every: self.save_every.unwrap_or(d.save_every),
        }
    }
}

impl TrainArgs {
    /// `--adapter` to continue, or a fresh adapter of the flags' shape seeded by `--seed`.
    pub(super) fn start_adapter(&self, m: &autodidact::model::LoadedModel, optim: &OptimParams) -> anyhow::Result<LoraAdapter> {
        let shape = LoraConfig { r: self.rank, alpha: self.alpha, dropout: self.dropout, targets: self.targets.clone(), base_model: String::new() };
        let a = start_adapter(m, self.model.adapter.as_deref(), &shape, optim.seed)?;
        if let Some(dir) = &self.model.adapter {
            eprintln!("starting from adapter {} (rank {}, its own targets and alpha)", dir.display(), a.config.r);
        }
        Ok(a)
    }
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
        for (set, flag) in [(a.max_steps.is_some(), "--max-steps"), (a.optim.grad_accum.is_some_and(|g| g != 1), "--grad-accum")] {
            if set {
                bail!("{flag} applies to --objective sft; RL takes --groups-per-step and --epochs (--stop-after N stops after N steps)");
            }
        }
        return super::train_rl::run(&a);
    }
    let (Some(data), Some(out)) = (&a.data, &a.out) else { bail!("give --data FILE and --out DIR") };
    let _lock = autodidact::lock::OutputLock::acquire(out)?;
    // Read the data before loading the model: a malformed line should fail in milliseconds.
    let data = read_sft_data(data)?;
    let m = super::load_model(&a.model.model)?;
    let rows = sft_rows(data, &m, out, a.json)?;
    let optim = a.optim.resolve(a.objective);
    let adapter = a.start_adapter(&m, &optim)?;
    let params = SftParams {
        max_steps: a.max_steps,
        resume: a.resume,
        stop_after: a.stop_after,
        ..SftParams::new(optim, a.max_seq_len.unwrap_or(m.config().max_position_embeddings), out.clone())
    };
    let job = run_sft(SftJob { model: &m, adapter, rows: &rows, params, quiet: a.json })?;
    let outcome = &job.outcome;
    let wall = job.wall_seconds;
    let tokens = job.trained_tokens;
    let tps = tokens as f64 / wall.max(1e-9);
    let first_loss = job.first.as_ref().map(|s| s.loss);
    let last_loss = job.last.as_ref().map(|s| s.loss).or(outcome.last_loss);
    let plot = &job.plot;
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
    let tm = TrainModel::with_base(&cfg, &m.transformer.weights, a.base_weights)?;
    drop(m);
    let p = BenchParams { shapes: a.bench_shapes.clone(), r: a.rank, targets: a.targets.clone(), repeats: a.bench_repeats.max(1) };
    let threads = std::env::var("CANDLE_NUM_THREADS").unwrap_or_default();
    eprintln!(
        "LoRA rank {} on {:?}, base weights {:?} ({:.0} MB), {} rayon threads, CANDLE_NUM_THREADS={threads}",
        p.r,
        p.targets.iter().map(|t| t.short_name()).collect::<Vec<_>>(),
        a.base_weights,
        tm.weight_bytes() as f64 / 1e6,
        rayon::current_num_threads()
    );
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
        let base = json!({"kind": format!("{:?}", a.base_weights), "bytes": tm.weight_bytes()});
        println!("{}", serde_json::to_string(&json!({"model": a.model.model, "rank": p.r, "base_weights": base, "results": list}))?);
    }
    Ok(())
}
