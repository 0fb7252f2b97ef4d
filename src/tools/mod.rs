//! The tool-call language and exact checking, shared by the task sources and the agent loop, without tensors.
//!
//! - `toolcall`: Hermes-style call rendering and the turn parser (calls or `Answer: ...`).
//! - `schema`: tool-argument checks against JSON schemas.
//! - `verify`: matchers, expected-call matching and goal states.
//! - `rational`: the calculator's exact arithmetic.
pub mod rational;
pub mod schema;
pub mod toolcall;
pub mod verify;
