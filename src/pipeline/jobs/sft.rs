//! LoRA SFT on dataset rows (token ids and loss masks), with a progress bar and `loss.svg`; a training file of
//! plain chat rows is rendered into such rows first (`read_sft_data`, `sft_rows`).
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::bail;

use crate::data::dataset::{read_training_data, DatasetRow};
use crate::data::jsonl::write_json_atomic;
use crate::distil::chat::{check_lines, render_lines, TrainingLine};
use crate::model::lora::LoraAdapter;
use crate::model::LoadedModel;
use crate::pipeline::train_plots::write_sft_plot;
use crate::train::{train_sft, SftOutcome, SftParams, StepMetrics, TrainModel, TrainRow};

pub struct SftJob<'a> {
    pub model: &'a LoadedModel,
    pub adapter: LoraAdapter,
    pub rows: &'a [DatasetRow],
    pub params: SftParams,
    /// Hides the progress bar and the opening line.
    pub quiet: bool,
}

pub struct SftJobOutcome {
    pub outcome: SftOutcome,
    /// The steps this call ran (a resumed run's earlier steps are in `metrics.jsonl` only).
    pub first: Option<StepMetrics>,
    pub last: Option<StepMetrics>,
    pub trained_tokens: u64,
    pub wall_seconds: f64,
    /// `loss.svg`, drawn from the whole `metrics.jsonl`.
    pub plot: PathBuf,
}

/// A training file read and checked, before any model is loaded (a malformed line fails in milliseconds).
pub struct SftData {
    path: PathBuf,
    lines: Vec<TrainingLine>,
}

/// Reads `path`: rows written by `filter`, or plain chat rows (`messages`, optional `tools`), one form per file.
pub fn read_sft_data(path: &Path) -> anyhow::Result<SftData> {
    let lines = check_lines(path, read_training_data(path)?)?;
    Ok(SftData { path: path.to_path_buf(), lines })
}

/// The rows to train on. Chat rows are rendered with the model's template and masked to their assistant turns;
/// their mask audit goes to `out/mask_audit.json`, and a failed audit trains nothing.
pub fn sft_rows(data: SftData, model: &LoadedModel, out: &Path, quiet: bool) -> anyhow::Result<Vec<DatasetRow>> {
    let r = render_lines(&data.path, data.lines, model)?;
    if let Some(audit) = &r.audit {
        let path = out.join("mask_audit.json");
        write_json_atomic(&path, audit)?;
        if !quiet {
            for n in &r.notes {
                eprintln!("{n}");
            }
            eprintln!("{}", audit.summary());
        }
        if !audit.ok() {
            bail!(
                "{}: the mask audit of the rendered chat rows failed ({} problems; see {}):\n{}",
                data.path.display(),
                audit.problems.len(),
                path.display(),
                audit.summary()
            );
        }
    }
    Ok(r.rows)
}

/// Trains (or resumes, with `params.resume`) and draws the curves.
pub fn run_sft(job: SftJob) -> anyhow::Result<SftJobOutcome> {
    let rows: Vec<TrainRow> =
        job.rows.iter().map(|r| TrainRow { id: Some(r.id.clone()), token_ids: r.token_ids.clone(), loss_mask: r.loss_mask.clone() }).collect();
    let lengths: Vec<usize> = rows.iter().map(|r| r.token_ids.len()).collect();
    let total = job.params.total_steps(&lengths);
    if !job.quiet {
        let per_epoch: usize = rows.iter().map(TrainRow::trained_tokens).sum();
        eprintln!("training on {} rows ({per_epoch} trained tokens per epoch), {total} steps, {} adapter parameters", rows.len(), job.adapter.num_parameters());
    }
    let tm = TrainModel::new(job.model.config(), &job.model.transformer.weights)?;
    let pb = crate::progress::bar(total as u64, "training", job.quiet);
    let t0 = Instant::now();
    let (mut first, mut last, mut tokens) = (None, None, 0u64);
    let outcome = train_sft(&tm, job.adapter, &rows, &job.params, &mut |s: &StepMetrics| {
        pb.set_position(s.step as u64);
        pb.set_message(format!("training loss {:.4}", s.loss));
        tokens += s.step_tokens as u64;
        first.get_or_insert_with(|| s.clone());
        last = Some(s.clone());
    });
    pb.finish_and_clear();
    let outcome = outcome?;
    let wall_seconds = t0.elapsed().as_secs_f64();
    let plot = write_sft_plot(&job.params.out_dir)?;
    Ok(SftJobOutcome { outcome, first, last, trained_tokens: tokens, wall_seconds, plot })
}
