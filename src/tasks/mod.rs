//! Where tasks come from: the generated suites (each with its sandbox and verifier), task files, and the
//! selection of tasks a command or a loop runs. The agent loop runs tasks from any of them.
//!
//! - `suites`: the `Suite` trait, registry, deterministic generation and one file per suite with its sandbox.
//! - `taskfile`: loading and validating user task files; `taskmake`: building task files from plain records.
//! - `mcp`: MCP tool servers (stdio) as the sandboxes of `mcp` tasks.
//! - `env`: environments with state and a reward (reset/step over stdio) as the worlds of `env` tasks.
//! - `external`: the servers and environments one run needs, shared by its episodes.
//! - `select`: generated tasks for a split (suites x difficulties x count) and task files, for every command.
pub mod env;
pub mod external;
pub mod mcp;
pub mod select;
pub mod suites;
pub mod taskfile;
pub mod taskmake;
