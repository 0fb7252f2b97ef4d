//! Tasks, suites, sandboxes, tool calls and episodes: everything between a task record and a trajectory,
//! without tensors. The model is reached only through `policy::Policy`.
//!
//! - `toolcall`: Hermes-style call rendering and the turn parser (calls or `Answer: ...`); `schema` checks
//!   arguments against tool JSON schemas.
//! - `suites`: the `Suite` trait, registry, deterministic generation and one file per suite with its sandbox;
//!   `rational` is the calculator's exact arithmetic.
//! - `verify`: matchers, expected-call matching and goal states.
//! - `hint`: privileged context (skill texts, reference plans) for teachers and hinted rollouts.
//! - `prompts`: prompt files (system text + few-shot) and the initial messages of an episode.
//! - `episode`: the per-episode state machine and `run_episodes`, which batches model turns.
//! - `taskfile`: loading and validating user task files; `metrics`: success, pass@k and the eval table.
//! - `scripted`: model-free policies (scripted texts, reference solver) for tests and dry runs.
pub mod episode;
pub mod hint;
pub mod metrics;
pub mod policy;
pub mod prompts;
pub mod rational;
pub mod schema;
pub mod scripted;
pub mod suites;
pub mod taskfile;
pub mod taskmake;
pub mod toolcall;
pub mod verify;
