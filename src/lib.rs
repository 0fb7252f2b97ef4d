//! autodidact: open-weight LLM agents that teach themselves.
//!
//! Layers, bottom to top; a module imports only from layers below it (docs/architecture.md is the map):
//! 1. `fault` (kill points for the soak), then `atomic` (the one way files and folders are written), then `data`
//!    (plain serde records: tasks, messages, trajectories, dataset rows; JSONL), `quant` (GGUF block types),
//!    `stats`, `progress`, `lock`, `tfevents` (TensorBoard event files): no tensors.
//! 2. `simd`: the run-time-dispatched CPU kernels.
//! 3. `model`: GGUF and safetensors loading, the transformer, tokenizer, chat template, LoRA adapters.
//! 4. `sample` (generation), `train` (LoRA SFT and GRPO/SDAR on the model), `export` (merged Hugging Face models);
//!    `tools` (the tool-call language and verifiers) and `backend` (OpenAI-compatible servers), which need no
//!    model.
//! 5. `tasks`: where tasks come from (generated suites with their sandboxes, task files, selection).
//! 6. `agent`: the episode loop from a task to a trajectory, reaching the model through a policy.
//! 7. `rollout` (episodes in batches on a model or a server), then `distil` (trajectories to training rows) and
//!    `serve` (the OpenAI-compatible server).
//! 8. `pipeline`: the training jobs and the self-distillation loop, its config, records and report.
//!
//! The command line (`src/cli`) belongs to the binary and calls `pipeline` and the layers below it.
pub mod atomic;
pub mod data;
pub mod fault;
pub mod lock;
pub mod progress;
pub mod quant;
pub mod stats;
pub mod tfevents;

pub mod simd;

pub mod model;

pub mod backend;
pub mod export;
pub mod sample;
pub mod tools;
pub mod train;

pub mod tasks;

pub mod agent;

pub mod distil;
pub mod rollout;
pub mod serve;

pub mod pipeline;
