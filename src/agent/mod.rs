//! Tasks, suites, sandboxes, tool calls and episodes.
pub mod policy;
pub mod rational;
pub mod schema;
pub mod toolcall;
pub mod suites;
pub mod verify;
pub mod prompts;
pub mod episode;
pub mod metrics;
pub mod taskfile;
pub mod scripted;
