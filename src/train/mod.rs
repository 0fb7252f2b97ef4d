//! Training LoRA adapters on the CPU: the differentiable forward (`model`), its custom ops (`ops`), the SFT recipe
//! (`sft`), optimizer and schedule (`optim`), batching (`data`), exact-resume checkpoints (`checkpoint`), the step
//! log (`metrics_log`: metrics.jsonl and TensorBoard events) and a throughput benchmark (`bench`).
//!
//! Threads: candle runs element-wise ops on its own spinning thread pool next to rayon's gemm pool. On a busy
//! shared machine the spinning waits dominate (measured 25 -> 71 trained tok/s at 1 x 256 on 2 loaded cores with
//! `CANDLE_NUM_THREADS=1`); binaries that train should set `CANDLE_NUM_THREADS=1` before the first tensor op.
pub mod attention;
pub mod bench;
pub mod checkpoint;
pub mod data;
pub mod frozen;
pub mod gemm;
pub mod head;
pub mod lora_linear;
pub mod metrics_log;
pub mod model;
pub mod ops;
pub mod optim;
pub mod rl;
pub mod sft;
pub mod tiny;

use std::path::PathBuf;

pub use data::TrainRow;
pub use model::{next_token_targets, Batch, LoraVars, Target, TrainModel};
pub use optim::OptimParams;
pub use sft::{train_sft, PlannedStep, SftOutcome, SftParams, StepMetrics};

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error("tensor op failed: {0}")]
    Candle(#[from] candle_core::Error),
    #[error(transparent)]
    Lora(#[from] crate::model::lora::LoraError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("training data: {0}")]
    Data(String),
    #[error("invalid training parameter: {0}")]
    Params(String),
    #[error("step {step}: {what} is {value} (not finite); training stopped, the last good checkpoint is kept{}", checkpoint.as_ref().map(|p| format!(" at {}", p.display())).unwrap_or_default())]
    NonFinite { step: usize, what: &'static str, value: f64, checkpoint: Option<PathBuf> },
    #[error("variable `{name}` got no gradient: the graph between it and the loss is cut (an op without backward?)")]
    NoGradient { name: String },
    #[error("{path}: {msg}")]
    Checkpoint { path: PathBuf, msg: String },
    #[error(transparent)]
    Events(#[from] crate::tfevents::EventsError),
}

pub type Result<T> = std::result::Result<T, TrainError>;

impl TrainError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        TrainError::Io { path: path.into(), source }
    }
}
