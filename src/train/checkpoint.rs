//! Checkpoints for exact resume: the adapter (PEFT files), AdamW moments, and the loop state.
//!
//! Randomness is derived, not streamed: the batch order of an epoch comes from `(seed, epoch)` and the dropout
//! masks of a micro-batch from `(seed, step, micro-batch)`, so the RNG state to save is the seed plus the data
//! position `(epoch, next_batch)` and the step. A resumed run therefore draws exactly what the straight run drew.
use std::path::Path;

use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};

use super::optim::AdamW;
use super::{Result, TrainError};
use crate::atomic::write_dir;
use crate::model::lora::{read_safetensors, write_f32_safetensors, LoraAdapter, LoraError};
use crate::model::ModelConfig;

pub const STATE_FILE: &str = "trainer_state.json";
pub const OPTIMIZER_FILE: &str = "optimizer.safetensors";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainState {
    /// Optimizer steps completed.
    pub step: usize,
    /// Data position: the epoch and the index of the next micro-batch in that epoch's batch order.
    pub epoch: usize,
    pub next_batch: usize,
    pub seed: u64,
    pub trained_tokens: u64,
    pub total_steps: usize,
    /// The parameters that must not change across a resume (batching, schedule), as text.
    pub fingerprint: String,
    /// Mean loss of the last step (for the log line after resuming).
    pub last_loss: Option<f64>,
}

/// Writes the checkpoint directory atomically: a crash mid-write leaves the previous checkpoint intact.
pub fn save(dir: &Path, adapter: &LoraAdapter, opt: &AdamW, names: &[String], state: &TrainState) -> Result<()> {
    write_dir(dir, |tmp| -> std::result::Result<(), LoraError> {
        adapter.write_files(tmp)?;
        let mut tensors = Vec::with_capacity(2 * names.len());
        for (kind, moments) in [("m", &opt.m), ("v", &opt.v)] {
            for (name, t) in names.iter().zip(moments.iter()) {
                let vals = t.flatten_all().and_then(|f| f.to_vec1::<f32>()).map_err(|e| crate::model::lora::LoraError::Config(e.to_string()))?;
                tensors.push((format!("{kind}.{name}"), t.dims().to_vec(), vals.iter().flat_map(|x| x.to_le_bytes()).collect()));
            }
        }
        write_f32_safetensors(&tmp.join(OPTIMIZER_FILE), &tensors)?;
        let path = tmp.join(STATE_FILE);
        let text = serde_json::to_string_pretty(&(state, opt.t)).map_err(|e| crate::model::lora::LoraError::Config(e.to_string()))?;
        std::fs::write(&path, text).map_err(|source| crate::model::lora::LoraError::Io { path, source })
    })?;
    Ok(())
}

pub struct Loaded {
    pub adapter: LoraAdapter,
    pub m: Vec<Tensor>,
    pub v: Vec<Tensor>,
    pub adam_t: u64,
    pub state: TrainState,
}

/// Reads a checkpoint; `names` is the variable order of the optimizer state.
pub fn load(dir: &Path, cfg: &ModelConfig, base_model: Option<&str>, names: impl Fn(&LoraAdapter) -> Vec<String>) -> Result<Loaded> {
    let adapter = LoraAdapter::load(dir, cfg, base_model)?;
    let state_path = dir.join(STATE_FILE);
    let text = std::fs::read_to_string(&state_path).map_err(|e| TrainError::io(&state_path, e))?;
    let (state, adam_t): (TrainState, u64) =
        serde_json::from_str(&text).map_err(|e| TrainError::Checkpoint { path: state_path.clone(), msg: e.to_string() })?;
    let opt_path = dir.join(OPTIMIZER_FILE);
    let mut tensors = read_safetensors(&opt_path)?;
    let mut m = Vec::new();
    let mut v = Vec::new();
    for name in names(&adapter) {
        for (kind, out) in [("m", &mut m), ("v", &mut v)] {
            let key = format!("{kind}.{name}");
            let (shape, vals) =
                tensors.remove(&key).ok_or_else(|| TrainError::Checkpoint { path: opt_path.clone(), msg: format!("missing optimizer tensor `{key}`") })?;
            out.push(Tensor::from_vec(vals, shape, &Device::Cpu)?);
        }
    }
    Ok(Loaded { adapter, m, v, adam_t, state })
}
