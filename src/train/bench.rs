//! Training throughput: trained tokens per second for one full step (forward, backward, AdamW update) and the
//! process's peak resident memory.
use crate::stats::{median, peak_rss_mb};
use std::time::Instant;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::model::{next_token_targets, Batch, LoraVars, TrainModel};
use super::optim::{clip_grad_norm, AdamW, AdamWParams};
use super::{Result, TrainError};
use crate::model::lora::{LoraAdapter, LoraConfig, Proj};

#[derive(Debug, Clone, PartialEq)]
pub struct BenchParams {
    /// `(batch, seq_len)` shapes to measure.
    pub shapes: Vec<(usize, usize)>,
    pub r: usize,
    pub targets: Vec<Proj>,
    /// Timed steps per shape (after one untimed warm-up step); the median is reported.
    pub repeats: usize,
}

impl Default for BenchParams {
    fn default() -> Self {
        BenchParams { shapes: vec![(1, 256), (4, 256), (1, 512), (4, 512)], r: 8, targets: Proj::ALL.to_vec(), repeats: 5 }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct BenchResult {
    pub batch: usize,
    pub seq_len: usize,
    pub trained_tokens: usize,
    pub median_step_s: f64,
    /// Medians of the step's parts: forward (to the loss), backward, gradient clipping + AdamW.
    pub forward_s: f64,
    pub backward_s: f64,
    pub optimizer_s: f64,
    pub tokens_per_s: f64,
    /// Peak resident set size during this shape's steps (VmHWM after resetting it), in MB; None when unreadable.
    pub peak_rss_mb: Option<f64>,
}

impl std::fmt::Display for BenchResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} x {}: {:.1} trained tok/s (median step {:.3} s = forward {:.3} + backward {:.3} + optimizer {:.3}; {} tokens), peak RSS {}",
            self.batch,
            self.seq_len,
            self.tokens_per_s,
            self.median_step_s,
            self.forward_s,
            self.backward_s,
            self.optimizer_s,
            self.trained_tokens,
            self.peak_rss_mb.map_or("n/a".into(), |m| format!("{m:.0} MB"))
        )
    }
}

/// Resets the peak-RSS counter (Linux `clear_refs` 5) so each shape reports its own peak.
fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// Measures full LoRA training steps on random tokens (every token after the first is trained).
pub fn bench_train(model: &TrainModel, p: &BenchParams, mut on_result: impl FnMut(&BenchResult)) -> Result<Vec<BenchResult>> {
    let cfg = &model.cfg;
    let lcfg = LoraConfig { r: p.r, alpha: 2.0 * p.r as f32, dropout: 0.0, targets: p.targets.clone(), base_model: "bench".into() };
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let mut out = Vec::new();
    for &(b, t) in &p.shapes {
        let adapter = LoraAdapter::new(lcfg.clone(), cfg, 1)?;
        let vars = LoraVars::from_adapter(&adapter, model.device())?;
        let named = vars.named_vars();
        let mut opt = AdamW::new(AdamWParams::default(), &named)?;
        let seqs: Vec<Vec<u32>> = (0..b).map(|_| (0..t).map(|_| rng.random_range(0..cfg.vocab_size as u32)).collect()).collect();
        let mask = vec![1u8; t];
        let pairs: Vec<(&[u32], &[u8])> = seqs.iter().map(|s| (s.as_slice(), mask.as_slice())).collect();
        let batch = Batch::new(&seqs.iter().map(|s| s.as_slice()).collect::<Vec<_>>());
        let targets = next_token_targets(&pairs);
        let n = targets.len();
        let rss_reset = reset_peak_rss();
        let mut times = Vec::with_capacity(p.repeats);
        let (mut fwd, mut bwd, mut opt_t) = (Vec::new(), Vec::new(), Vec::new());
        for i in 0..=p.repeats {
            let t0 = Instant::now();
            let lp = model.target_logprobs(&batch, Some(&vars), None, &targets)?;
            let loss = (lp.sum_all()?.neg()? / n as f64)?;
            let t1 = Instant::now();
            let gs = loss.backward()?;
            let t2 = Instant::now();
            let mut grads = named
                .iter()
                .map(|(name, v)| gs.get(v.as_tensor()).cloned().ok_or_else(|| TrainError::NoGradient { name: name.clone() }))
                .collect::<Result<Vec<_>>>()?;
            clip_grad_norm(&mut grads, 1.0)?;
            opt.step(&named, &grads, 1e-4)?;
            if i > 0 {
                times.push(t0.elapsed().as_secs_f64());
                fwd.push((t1 - t0).as_secs_f64());
                bwd.push((t2 - t1).as_secs_f64());
                opt_t.push(t2.elapsed().as_secs_f64());
            }
        }
        let med = median(&times);
        let r = BenchResult {
            batch: b,
            seq_len: t,
            trained_tokens: n,
            median_step_s: med,
            forward_s: median(&fwd),
            backward_s: median(&bwd),
            optimizer_s: median(&opt_t),
            tokens_per_s: n as f64 / med,
            peak_rss_mb: if rss_reset { peak_rss_mb() } else { None },
        };
        on_result(&r);
        out.push(r);
    }
    Ok(out)
}
