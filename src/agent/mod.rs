//! The agent loop: everything between a task (from `crate::tasks`) and a trajectory, without tensors. The model
//! is reached only through `policy::Policy`; tool calls are parsed and checked with `crate::tools`.
//!
//! - `hint`: privileged context (skill texts, reference plans) for teachers and hinted rollouts.
//! - `prompts`: prompt files (system text + few-shot) and the initial messages of an episode.
//! - `episode`: the per-episode state machine and `run_episodes`, which batches model turns.
//! - `metrics`: success, pass@k and the eval table.
//! - `scripted`: model-free policies (scripted texts, reference solver) for tests and dry runs.
pub mod episode;
pub mod hint;
pub mod metrics;
pub mod policy;
pub mod prompts;
pub mod scripted;
