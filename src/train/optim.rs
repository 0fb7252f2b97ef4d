//! AdamW with its state in plain tensors (so checkpoints can save and restore it exactly), the warmup + cosine
//! learning-rate schedule, and global-norm gradient clipping.
use candle_core::{Tensor, Var};
use serde::{Deserialize, Serialize};

use super::Result;

/// The optimiser and schedule of every training job: SFT and RL, from `autodidact train` and from the loop's
/// `[train]` section. The defaults live here once ([`OptimParams::SFT`], [`OptimParams::RL`]); `--help`, the loop
/// config and configs/README.md all show these values.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct OptimParams {
    /// Peak learning rate.
    pub lr: f64,
    /// Linear warmup over the first steps.
    pub warmup: usize,
    /// After the warmup, cosine decay to `lr * min_lr_ratio` at the last step (1: constant).
    pub min_lr_ratio: f64,
    /// Passes over the data.
    pub epochs: usize,
    /// Rows per micro-batch (SFT) or episodes per micro-batch (RL).
    pub batch_size: usize,
    /// Micro-batches per optimizer step (SFT; RL steps are task groups).
    pub grad_accum: usize,
    /// Clip the global gradient norm to this (0 disables clipping).
    pub max_grad_norm: f64,
    pub weight_decay: f64,
    /// Seeds the adapter's initialisation, the batch order and dropout.
    pub seed: u64,
    /// Write a checkpoint every N steps (0: only at the end).
    pub save_every: usize,
}

impl OptimParams {
    /// Supervised fine-tuning on kept successes.
    pub const SFT: OptimParams = OptimParams {
        lr: 5e-4,
        warmup: 5,
        min_lr_ratio: 0.1,
        epochs: 2,
        batch_size: 4,
        grad_accum: 1,
        max_grad_norm: 1.0,
        weight_decay: 0.0,
        seed: 0,
        save_every: 20,
    };
    /// GRPO / SDAR: a smaller constant rate and one update epoch per batch of episodes, as in the method.
    pub const RL: OptimParams = OptimParams { lr: 1e-4, warmup: 0, min_lr_ratio: 1.0, epochs: 1, ..OptimParams::SFT };

    pub fn adam(&self) -> AdamWParams {
        AdamWParams { weight_decay: self.weight_decay, ..AdamWParams::default() }
    }

    /// Learning rate, epochs and batch sizes must be positive.
    pub fn check(&self) -> std::result::Result<(), String> {
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return Err(format!("learning rate {} must be positive", self.lr));
        }
        if self.batch_size == 0 || self.grad_accum == 0 {
            return Err("batch_size and grad_accum must be positive".into());
        }
        Ok(())
    }
}

impl Default for OptimParams {
    fn default() -> Self {
        OptimParams::SFT
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamWParams {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

impl Default for AdamWParams {
    fn default() -> Self {
        AdamWParams { beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.0 }
    }
}

pub struct AdamW {
    pub params: AdamWParams,
    /// Number of updates applied so far (bias correction uses it).
    pub t: u64,
    /// First and second moments, one per variable in `LoraVars::named_vars` order.
    pub m: Vec<Tensor>,
    pub v: Vec<Tensor>,
}

impl AdamW {
    pub fn new(params: AdamWParams, vars: &[(String, &Var)]) -> Result<Self> {
        let m = vars.iter().map(|(_, v)| v.as_tensor().zeros_like()).collect::<candle_core::Result<Vec<_>>>()?;
        let v = m.clone();
        Ok(AdamW { params, t: 0, m, v })
    }

    /// One decoupled-weight-decay Adam update of every variable with its gradient.
    pub fn step(&mut self, vars: &[(String, &Var)], grads: &[Tensor], lr: f64) -> Result<()> {
        let p = self.params;
        self.t += 1;
        let bc1 = 1.0 - p.beta1.powi(self.t as i32);
        let bc2 = 1.0 - p.beta2.powi(self.t as i32);
        for (i, ((_, var), g)) in vars.iter().zip(grads).enumerate() {
            let m = ((&self.m[i] * p.beta1)? + (g * (1.0 - p.beta1))?)?;
            let v = ((&self.v[i] * p.beta2)? + (g.sqr()? * (1.0 - p.beta2))?)?;
            let update = ((&m / bc1)? / ((&v / bc2)?.sqrt()? + p.eps)?)?;
            let w = var.as_tensor();
            let decayed = if p.weight_decay > 0.0 { (w * (1.0 - lr * p.weight_decay))? } else { w.clone() };
            var.set(&(decayed - (update * lr)?)?)?;
            self.m[i] = m;
            self.v[i] = v;
        }
        Ok(())
    }
}

/// Linear warmup over `warmup` steps (the first step already uses `peak / warmup`), then cosine decay to
/// `peak * min_ratio` at `total` steps. `step` counts from 0.
pub fn lr_at(step: usize, total: usize, warmup: usize, peak: f64, min_ratio: f64) -> f64 {
    if step < warmup {
        return peak * (step + 1) as f64 / warmup as f64;
    }
    let span = total.saturating_sub(warmup).max(1) as f64;
    let progress = ((step - warmup) as f64 / span).min(1.0);
    let cos = 0.5 * (1.0 + (std::f64::consts::PI * progress).cos());
    peak * (min_ratio + (1.0 - min_ratio) * cos)
}

/// The global L2 norm of all gradients; when it exceeds `max_norm` (> 0) every gradient is scaled down to it.
/// Returns the norm before clipping.
pub fn clip_grad_norm(grads: &mut [Tensor], max_norm: f64) -> Result<f64> {
    let mut sq = 0f64;
    for g in grads.iter() {
        sq += g.sqr()?.sum_all()?.to_scalar::<f32>()? as f64;
    }
    let norm = sq.sqrt();
    if max_norm > 0.0 && norm > max_norm {
        let s = max_norm / (norm + 1e-6);
        for g in grads.iter_mut() {
            *g = (&*g * s)?;
        }
    }
    Ok(norm)
}
