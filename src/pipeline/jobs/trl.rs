//! The SFT job on Hugging Face TRL + PEFT (`train.backend = "trl"`): the loop's rows, step plan, starting adapter
//! and optimiser settings go to scripts/trl/sft.py under `accelerate launch`; its PEFT adapter comes back into
//! `out/adapter`, its per-step losses into `out/metrics.jsonl` (and TensorBoard, and `loss.svg`), as the in-process
//! job leaves them.
//!
//! ```text
//! out/trl/start-adapter/   the adapter the run starts from (PEFT files)
//! out/trl/rows.jsonl       {"input_ids": [...], "labels": [...]}: the rows' ids; labels -100 where loss_mask is 0
//! out/trl/job.json         the plan (micro-batches of every step), learning rate of every step, AdamW, clipping
//! out/trl/log.txt          the launcher's stdout and stderr
//! out/trl/result/          what the script writes: adapter/, steps.jsonl
//! ```
//! A run killed before the adapter came back starts the job over (TRL's own checkpoints are not used).
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context};
use serde::Deserialize;

use crate::data::dataset::DatasetRow;
use crate::data::jsonl::{read_jsonl, write_jsonl_atomic};
use crate::data::ReadMode;
use crate::model::lora::LoraAdapter;
use crate::model::LoadedModel;
use crate::pipeline::config::TrlConfig;
use crate::pipeline::train_plots::write_sft_plot;
use crate::tools::process;
use crate::train::data::validate_rows;
use crate::train::metrics_log::MetricsLog;
use crate::train::optim::lr_at;
use crate::train::{SftParams, StepMetrics, TrainRow};

pub struct TrlJob<'a> {
    pub model: &'a LoadedModel,
    pub adapter: LoraAdapter,
    pub rows: &'a [DatasetRow],
    pub params: SftParams,
    pub trl: &'a TrlConfig,
    /// A Hugging Face folder holding the base model's weights.
    pub base: &'a Path,
    pub quiet: bool,
}

/// One line of the script's steps.jsonl.
#[derive(Debug, Deserialize)]
struct TrlStep {
    step: usize,
    loss: f64,
    grad_norm: Option<f64>,
    seconds: f64,
}

/// Writes the job, runs the script, and takes back its adapter and per-step losses. Returns every step's metrics.
pub fn run_trl(job: TrlJob) -> anyhow::Result<Vec<StepMetrics>> {
    let p = &job.params;
    let o = &p.optim;
    let rows: Vec<TrainRow> =
        job.rows.iter().map(|r| TrainRow { id: Some(r.id.clone()), token_ids: r.token_ids.clone(), loss_mask: r.loss_mask.clone() }).collect();
    validate_rows(&rows, p.max_seq_len)?;
    let lengths: Vec<usize> = rows.iter().map(|r| r.token_ids.len()).collect();
    let plan = p.plan(&lengths);
    let total = plan.len();
    anyhow::ensure!(total > 0, "the run has no steps (epochs = 0)");
    let lrs: Vec<f64> = (0..total).map(|s| lr_at(s, total, o.warmup, o.lr, o.min_lr_ratio)).collect();

    let work = p.out_dir.join("trl");
    let result = work.join("result");
    if result.exists() {
        std::fs::remove_dir_all(&result).with_context(|| format!("removing the earlier attempt's {}", result.display()))?;
    }
    std::fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    let start = work.join("start-adapter");
    job.adapter.save(&start)?;
    let labelled: Vec<serde_json::Value> = rows
        .iter()
        .map(|r| {
            let labels: Vec<i64> = r.token_ids.iter().zip(&r.loss_mask).map(|(&t, &m)| if m == 1 { t as i64 } else { -100 }).collect();
            serde_json::json!({ "input_ids": r.token_ids, "labels": labels })
        })
        .collect();
    let rows_path = work.join("rows.jsonl");
    write_jsonl_atomic(&rows_path, &labelled)?;
    let adam = o.adam();
    let spec = serde_json::json!({
        "base": absolute(job.base)?, "start_adapter": absolute(&start)?, "rows": absolute(&rows_path)?, "out": absolute(&result)?,
        "micro_batches": plan.iter().flat_map(|s| s.micro.clone()).collect::<Vec<_>>(),
        "batch_size": o.batch_size, "grad_accum": o.grad_accum, "steps": total, "lr": lrs,
        "adam": { "beta1": adam.beta1, "beta2": adam.beta2, "eps": adam.eps, "weight_decay": adam.weight_decay },
        "max_grad_norm": o.max_grad_norm, "seed": o.seed, "dtype": job.trl.dtype,
    });
    let spec_path = work.join("job.json");
    crate::data::jsonl::write_json_atomic(&spec_path, &spec)?;

    if !job.quiet {
        eprintln!("  train (TRL): {} rows, {total} steps; {} launch {}", rows.len(), job.trl.accelerate, work.join("log.txt").display());
    }
    let t0 = Instant::now();
    launch(job.trl, &spec_path, &work.join("log.txt"))?;
    let wall = t0.elapsed().as_secs_f64();

    let steps: Vec<TrlStep> = read_jsonl(&result.join("steps.jsonl"), ReadMode::Strict)?.into_items();
    let got: Vec<usize> = steps.iter().map(|s| s.step).collect();
    if got != (1..=total).collect::<Vec<_>>() {
        bail!("{}: steps {got:?}, expected 1 to {total} (one line per optimizer step)", result.join("steps.jsonl").display());
    }
    let mut log = MetricsLog::new(p.out_dir.join("metrics.jsonl"), p.tensorboard.clone());
    log.start()?;
    let (mut trained, mut out) = (0u64, Vec::with_capacity(total));
    for ((s, planned), lr) in steps.iter().zip(&plan).zip(&lrs) {
        let step_tokens: usize = planned.micro.iter().flatten().map(|&i| rows[i].trained_tokens()).sum();
        trained += step_tokens as u64;
        let m = StepMetrics {
            step: s.step,
            epoch: planned.epoch,
            loss: s.loss,
            lr: *lr,
            grad_norm: s.grad_norm.unwrap_or(f64::NAN),
            tokens_per_s: step_tokens as f64 / s.seconds.max(1e-9),
            step_tokens,
            trained_tokens: trained,
        };
        log.append(&m)?;
        out.push(m);
    }
    write_sft_plot(&p.out_dir)?;
    // The adapter PEFT saved, checked against the model's shapes, saved last in our own files: the stage is done.
    let mut adapter = LoraAdapter::load(&result.join("adapter"), job.model.config(), None)
        .with_context(|| format!("the adapter TRL wrote in {} does not fit the model", result.join("adapter").display()))?;
    adapter.config.base_model = job.model.base_name.clone();
    adapter.save(&p.out_dir.join("adapter"))?;
    if !job.quiet {
        eprintln!("  train (TRL): {total} steps in {wall:.0} s, loss {:.4} -> {:.4}", out[0].loss, out[total - 1].loss);
    }
    Ok(out)
}

fn absolute(p: &Path) -> anyhow::Result<PathBuf> {
    std::path::absolute(p).with_context(|| format!("resolving {}", p.display()))
}

/// `<accelerate> launch <launch_args> <script> <spec>`, without a shell and with only the configured environment,
/// its output into `log`; an error quotes the log's last lines.
fn launch(trl: &TrlConfig, spec: &Path, log: &Path) -> anyhow::Result<()> {
    let program =
        process::resolve_program(&trl.accelerate).with_context(|| format!("trl.accelerate: `{}` (install it with scripts/trl-venv.sh)", trl.accelerate))?;
    if !program.is_file() {
        bail!("trl.accelerate: {} does not exist (install it with scripts/trl-venv.sh)", program.display());
    }
    if !trl.script.is_file() {
        bail!("trl.script: {} does not exist", trl.script.display());
    }
    let mut args = vec!["launch".to_string()];
    args.extend(trl.launch_args.iter().cloned());
    args.push(absolute(&trl.script)?.display().to_string());
    args.push(spec.display().to_string());
    let out = std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
    let mut cmd = process::isolated(&program, &args, &trl.env);
    cmd.stdin(std::process::Stdio::null()).stdout(out.try_clone()?).stderr(out);
    let child = process::spawn(cmd).with_context(|| format!("starting {}", program.display()))?;
    let mut child = process::OwnedChild(child);
    let status = child.0.wait().context("waiting for the TRL trainer")?;
    if !status.success() {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(15).collect();
        bail!("the TRL trainer failed ({status}); the end of {}:\n{}", log.display(), tail.into_iter().rev().collect::<Vec<_>>().join("\n"));
    }
    Ok(())
}
