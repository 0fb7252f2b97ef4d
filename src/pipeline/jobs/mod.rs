//! The training jobs that `autodidact train` and the loop's rounds both run: one SFT job (in this process, or on
//! TRL + PEFT: `run_trl`) and one RL job, each
//! from a loaded model, a starting adapter and rows to a trained adapter in `out/adapter`, its `metrics.jsonl`
//! and its curves. The caller decides only the settings ([`crate::train::OptimParams`] and the job's own).
mod rl;
mod sft;
mod trl;

use std::path::Path;

use anyhow::Context;

pub use rl::{run_rl, RlJob, RlJobOutcome};
pub use sft::{read_sft_data, run_sft, sft_rows, SftData, SftJob, SftJobOutcome};
pub use trl::{run_trl, TrlJob};

use crate::model::lora::{LoraAdapter, LoraConfig};
use crate::model::LoadedModel;

/// The adapter a job starts from: the one in `from` (its own shape), or a fresh one of `shape` seeded by `seed`.
pub fn start_adapter(model: &LoadedModel, from: Option<&Path>, shape: &LoraConfig, seed: u64) -> anyhow::Result<LoraAdapter> {
    Ok(match from {
        Some(dir) => {
            LoraAdapter::load(dir, model.config(), Some(&model.base_name)).with_context(|| format!("loading the starting adapter {}", dir.display()))?
        }
        None => LoraAdapter::new(LoraConfig { base_model: model.base_name.clone(), ..shape.clone() }, model.config(), seed)?,
    })
}
