//! Trajectory, dataset and report records; JSONL io, and Parquet training files read as JSONL rows.
//!
//! Everything here is plain serde data with no tensor or model dependency, so the records can be read, written
//! and tested anywhere.
pub mod chat;
pub mod dataset;
pub mod jsonl;
pub mod message;
pub mod parquet;
pub mod task;
pub mod trajectory;

pub use jsonl::{JsonlAppender, JsonlError, JsonlRead, ReadMode};
pub use message::{Message, Role, ToolCall};
pub use task::{AnswerSpec, Document, Expected, ExpectedCall, GoalState, Matcher, Reference, ScorerSpec, Split, Table, Task, TaskData};
pub use trajectory::{BackendInfo, Counts, FinishReason, RunIdentity, SamplingInfo, StepError, StepErrorKind, Termination, Trajectory, TurnRecord, Verdict};
