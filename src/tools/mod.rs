//! The tool-call language and exact checking, shared by the task sources and the agent loop, without tensors.
//!
//! - `toolcall`: Hermes-style call rendering and the turn parser (calls or `Answer: ...`).
//! - `schema`: tool-argument checks against JSON schemas.
//! - `verify`: matchers, expected-call matching and goal states.
//! - `rational`: the calculator's exact arithmetic.
//! - `scorer`: the user's own reward program for `Expected::Scorer` tasks.
//! - `process`: how the user's programs (MCP servers, scorers) are started: no shell, only their configured
//!   environment, their own process group.
//! - `rpc`: JSON-RPC 2.0 over such a child's stdio (MCP servers, environments).
pub mod process;
pub mod rational;
pub mod rpc;
pub mod schema;
pub mod scorer;
pub mod toolcall;
pub mod verify;
