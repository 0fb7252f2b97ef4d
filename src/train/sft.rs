//! The SFT recipe: LoRA fine-tuning on token rows with a loss mask, one readable loop.
//!
//! setup (adapter, optimizer, or resume from `out_dir/checkpoint`) -> for each step: `grad_accum` micro-batches,
//! loss = sum of -log p over trained tokens / trained tokens of the whole step -> clip -> AdamW -> metrics ->
//! checkpoint every `save_every` steps and at the end. The final adapter is written to `out_dir/adapter`.
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::Tensor;
use serde::{Deserialize, Serialize};

use super::checkpoint::{self, TrainState};
use super::data::{epoch_batches, validate_rows, TrainRow};
use super::metrics_log::MetricsLog;
use super::model::{next_token_targets, Batch, LoraVars, TrainModel};
use super::optim::{clip_grad_norm, lr_at, AdamW, AdamWParams, OptimParams};
use super::{Result, TrainError};
use crate::model::lora::LoraAdapter;

/// An SFT run: the shared optimiser settings plus what only SFT has.
#[derive(Debug, Clone, PartialEq)]
pub struct SftParams {
    pub optim: OptimParams,
    /// Optimizer steps in total; overrides `optim.epochs`.
    pub max_steps: Option<usize>,
    /// Longer rows are rejected (the dataset writer should cap lengths).
    pub max_seq_len: usize,
    /// Receives `checkpoint/`, `adapter/` and `metrics.jsonl`.
    pub out_dir: PathBuf,
    /// TensorBoard event files of the steps (`out_dir/tensorboard` unless the caller gathers them elsewhere).
    pub tensorboard: PathBuf,
    /// Continue from `out_dir/checkpoint` when it exists.
    pub resume: bool,
    /// Stop (with a checkpoint) after this many steps in total, keeping the schedule of the full run.
    pub stop_after: Option<usize>,
}

impl SftParams {
    /// A fresh run into `out_dir` with the given optimiser settings.
    pub fn new(optim: OptimParams, max_seq_len: usize, out_dir: PathBuf) -> Self {
        let tensorboard = out_dir.join("tensorboard");
        SftParams { optim, max_steps: None, max_seq_len, out_dir, tensorboard, resume: false, stop_after: None }
    }

    /// The step count of the run on rows of these lengths.
    pub fn total_steps(&self, lengths: &[usize]) -> usize {
        self.plan(lengths).len()
    }

    /// Every step of the run on rows of these lengths, in order: `grad_accum` micro-batches each (the last step may
    /// have fewer), `epochs` passes over the rows in `epoch_batches` order, or `max_steps` steps. This trainer and
    /// an external one (the loop's TRL backend) follow the same plan.
    pub fn plan(&self, lengths: &[usize]) -> Vec<PlannedStep> {
        let o = &self.optim;
        let (bs, accum) = (o.batch_size.max(1), o.grad_accum.max(1));
        let per_epoch = epoch_batches(lengths, bs, o.seed, 0).len();
        let total_micro = self.max_steps.map_or(o.epochs * per_epoch, |s| s * accum);
        let mut micro: Vec<(usize, usize, Vec<usize>)> = Vec::with_capacity(total_micro);
        let mut epoch = 0;
        while micro.len() < total_micro && per_epoch > 0 {
            let batches = epoch_batches(lengths, bs, o.seed, epoch);
            micro.extend(batches.into_iter().enumerate().map(|(i, b)| (epoch, i + 1, b)).take(total_micro - micro.len()));
            epoch += 1;
        }
        micro
            .chunks(accum)
            .map(|c| {
                let &(epoch, next_batch, _) = c.last().expect("chunks are not empty");
                PlannedStep { epoch, next_batch, micro: c.iter().map(|m| m.2.clone()).collect() }
            })
            .collect()
    }

    /// What a resumed run must share with the run that wrote the checkpoint.
    fn fingerprint(&self, rows: usize) -> String {
        let o = &self.optim;
        format!(
            "rows={rows} lr={} warmup={} min_lr_ratio={} epochs={} max_steps={:?} batch={} accum={} clip={} adam={:?} seed={} max_len={}",
            o.lr,
            o.warmup,
            o.min_lr_ratio,
            o.epochs,
            self.max_steps,
            o.batch_size,
            o.grad_accum,
            o.max_grad_norm,
            o.adam(),
            o.seed,
            self.max_seq_len
        )
    }
}

/// One line of `metrics.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepMetrics {
    pub step: usize,
    pub epoch: usize,
    /// Mean negative log-likelihood per trained token of this step.
    pub loss: f64,
    pub lr: f64,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
    pub tokens_per_s: f64,
    /// Trained tokens in this step and since the start of training.
    pub step_tokens: usize,
    pub trained_tokens: u64,
}

#[derive(Debug, Clone)]
pub struct SftOutcome {
    pub steps: usize,
    pub last_loss: Option<f64>,
    /// The trained adapter (also written to `adapter_dir`).
    pub adapter: LoraAdapter,
    pub adapter_dir: PathBuf,
    pub checkpoint_dir: PathBuf,
    /// False when `stop_after` ended the run before the schedule did.
    pub finished: bool,
}

/// One optimizer step of a run's plan: its micro-batches (row indices), and where the data position is after it (the
/// epoch of its last micro-batch and the index after that one in its epoch's order).
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedStep {
    pub epoch: usize,
    pub next_batch: usize,
    pub micro: Vec<Vec<usize>>,
}

/// Trains `adapter` on `rows` (or resumes from `p.out_dir/checkpoint`). `on_step` sees every step's metrics.
pub fn train_sft(model: &TrainModel, adapter: LoraAdapter, rows: &[TrainRow], p: &SftParams, on_step: &mut dyn FnMut(&StepMetrics)) -> Result<SftOutcome> {
    // ---- setup
    p.optim.check().map_err(TrainError::Params)?;
    let o = &p.optim;
    validate_rows(rows, p.max_seq_len)?;
    let lengths: Vec<usize> = rows.iter().map(|r| r.token_ids.len()).collect();
    let plan = p.plan(&lengths);
    let total_steps = plan.len();
    if total_steps == 0 {
        return Err(TrainError::Params("the run has no steps (epochs = 0 or max_steps = 0)".into()));
    }
    let ckpt_dir = p.out_dir.join("checkpoint");
    let metrics_path = p.out_dir.join("metrics.jsonl");
    std::fs::create_dir_all(&p.out_dir).map_err(|e| TrainError::io(&p.out_dir, e))?;
    let mut log = MetricsLog::new(metrics_path, p.tensorboard.clone());
    let fingerprint = p.fingerprint(rows.len());
    let resumed = if p.resume { resume(model, &adapter, &ckpt_dir, &fingerprint, &mut log, o.adam())? } else { None };
    let (vars, mut opt, mut state) = if let Some(r) = resumed {
        r
    } else {
        let vars = LoraVars::from_adapter(&adapter, model.device())?;
        let opt = AdamW::new(o.adam(), &vars.named_vars())?;
        log.start()?;
        let state = TrainState { step: 0, epoch: 0, next_batch: 0, seed: o.seed, trained_tokens: 0, total_steps, fingerprint, last_loss: None };
        (vars, opt, state)
    };
    let named = vars.named_vars();
    let names: Vec<String> = named.iter().map(|(n, _)| n.clone()).collect();
    let stop_at = p.stop_after.unwrap_or(total_steps).min(total_steps);

    // ---- loop
    while state.step < stop_at {
        let t0 = Instant::now();
        let step = state.step;
        // The step's micro-batches, and its trained-token count for the loss normalisation.
        let planned = &plan[step];
        let micro = &planned.micro;
        let step_tokens: usize = micro.iter().flatten().map(|&i| rows[i].trained_tokens()).sum();

        let mut grads: Vec<Option<Tensor>> = vec![None; named.len()];
        let mut nll_sum = 0f64;
        for (mi, idx) in micro.iter().enumerate() {
            let seqs: Vec<(&[u32], &[u8])> = idx.iter().map(|&i| (rows[i].token_ids.as_slice(), rows[i].loss_mask.as_slice())).collect();
            let batch = Batch::new(&seqs.iter().map(|s| s.0).collect::<Vec<_>>());
            let targets = next_token_targets(&seqs);
            let seed = dropout_seed(o.seed, step, mi);
            let lp = model.target_logprobs(&batch, Some(&vars), Some(seed), &targets)?; // n
            let nll = lp.sum_all()?.neg()?;
            nll_sum += nll.to_scalar::<f32>()? as f64;
            let loss = (nll / step_tokens as f64)?;
            accumulate_grads(&mut grads, &loss.backward()?, &named)?;
        }
        let mean_loss = nll_sum / step_tokens as f64;
        let schedule = Schedule { lr: o.lr, warmup_steps: o.warmup, min_lr_ratio: o.min_lr_ratio, total_steps, max_grad_norm: o.max_grad_norm };
        let (grad_norm, lr) = apply_step(&mut opt, &named, grads, mean_loss, step, &schedule, &ckpt_dir)?;

        state.step += 1;
        state.epoch = planned.epoch;
        state.next_batch = planned.next_batch;
        state.trained_tokens += step_tokens as u64;
        state.last_loss = Some(mean_loss);
        let m = StepMetrics {
            step: state.step,
            epoch: planned.epoch,
            loss: mean_loss,
            lr,
            grad_norm,
            tokens_per_s: step_tokens as f64 / t0.elapsed().as_secs_f64().max(1e-9),
            step_tokens,
            trained_tokens: state.trained_tokens,
        };
        log.append(&m)?;
        on_step(&m);
        save_if_due(&ckpt_dir, &vars, &opt, &names, &state, stop_at, o.save_every)?;
    }

    // ---- finish
    let adapter = vars.to_adapter()?;
    let adapter_dir = p.out_dir.join("adapter");
    let finished = state.step >= total_steps;
    if finished {
        adapter.save(&adapter_dir)?;
    }
    Ok(SftOutcome { steps: state.step, last_loss: state.last_loss, adapter, adapter_dir, checkpoint_dir: ckpt_dir, finished })
}

/// A distinct, reproducible dropout stream per (run seed, step, micro-batch).
pub(super) fn dropout_seed(seed: u64, step: usize, micro: usize) -> u64 {
    let mut x = seed ^ 0xD1B5_4A32_D192_ED03;
    for v in [step as u64, micro as u64] {
        x = (x ^ v).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        x ^= x >> 29;
    }
    x
}

/// A checkpoint in `ckpt_dir` to continue from: the adapter's variables, the optimizer and the loop state. None
/// when there is none; an error when it was written with other parameters (`fingerprint`). Logged steps after the
/// checkpoint are dropped (they will be redone).
pub(super) fn resume(
    model: &TrainModel,
    adapter: &LoraAdapter,
    ckpt_dir: &Path,
    fingerprint: &str,
    log: &mut MetricsLog,
    adam: AdamWParams,
) -> Result<Option<(LoraVars, AdamW, TrainState)>> {
    if !ckpt_dir.join(checkpoint::STATE_FILE).is_file() {
        return Ok(None);
    }
    let names_of = |a: &LoraAdapter| LoraVars::from_adapter(a, model.device()).map(|v| v.named_vars().into_iter().map(|(n, _)| n).collect::<Vec<_>>());
    let ck = checkpoint::load(ckpt_dir, &model.cfg, Some(&adapter.config.base_model), |a| names_of(a).unwrap_or_default())?;
    if ck.state.fingerprint != fingerprint {
        return Err(TrainError::Checkpoint {
            path: ckpt_dir.to_path_buf(),
            msg: format!("written with different parameters; checkpoint: `{}`, now: `{fingerprint}`", ck.state.fingerprint),
        });
    }
    let vars = LoraVars::from_adapter(&ck.adapter, model.device())?;
    log.keep_up_to(ck.state.step)?;
    Ok(Some((vars, AdamW { params: adam, t: ck.adam_t, m: ck.m, v: ck.v }, ck.state)))
}

/// The learning-rate schedule and gradient clipping of a run.
pub(super) struct Schedule {
    pub lr: f64,
    pub warmup_steps: usize,
    pub min_lr_ratio: f64,
    pub total_steps: usize,
    pub max_grad_norm: f64,
}

/// The end of a step: the loss must be finite, the accumulated gradients are clipped (their norm must be finite)
/// and AdamW updates. Returns the norm before clipping and the learning rate used.
pub(super) fn apply_step(
    opt: &mut AdamW,
    named: &[(String, &candle_core::Var)],
    grads: Vec<Option<Tensor>>,
    mean_loss: f64,
    step: usize,
    s: &Schedule,
    ckpt_dir: &Path,
) -> Result<(f64, f64)> {
    let last_good = ckpt_dir.join(checkpoint::STATE_FILE).is_file().then(|| ckpt_dir.to_path_buf());
    if !mean_loss.is_finite() {
        return Err(TrainError::NonFinite { step, what: "loss", value: mean_loss, checkpoint: last_good });
    }
    let mut grads: Vec<Tensor> = grads.into_iter().collect::<Option<Vec<_>>>().ok_or_else(|| TrainError::Data("a step without trained tokens".into()))?;
    let grad_norm = clip_grad_norm(&mut grads, s.max_grad_norm)?;
    if !grad_norm.is_finite() {
        return Err(TrainError::NonFinite { step, what: "gradient norm", value: grad_norm, checkpoint: last_good });
    }
    let lr = lr_at(step, s.total_steps, s.warmup_steps, s.lr, s.min_lr_ratio);
    opt.step(named, &grads, lr)?;
    Ok((grad_norm, lr))
}

/// Writes a checkpoint at the last step of the run (or of `stop_after`) and every `save_every` steps.
pub(super) fn save_if_due(
    ckpt_dir: &Path,
    vars: &LoraVars,
    opt: &AdamW,
    names: &[String],
    state: &TrainState,
    stop_at: usize,
    save_every: usize,
) -> Result<()> {
    if state.step == stop_at || (save_every > 0 && state.step.is_multiple_of(save_every)) {
        checkpoint::save(ckpt_dir, &vars.to_adapter()?, opt, names, state)?;
    }
    Ok(())
}

/// Adds one micro-batch's gradients to the step's; every variable must have one (a cut graph is an error).
pub(super) fn accumulate_grads(grads: &mut [Option<Tensor>], gs: &candle_core::backprop::GradStore, named: &[(String, &candle_core::Var)]) -> Result<()> {
    for (k, (name, var)) in named.iter().enumerate() {
        let g = gs.get(var.as_tensor()).ok_or_else(|| TrainError::NoGradient { name: name.clone() })?;
        grads[k] = Some(match grads[k].take() {
            Some(acc) => (acc + g)?,
            None => g.clone(),
        });
    }
    Ok(())
}
