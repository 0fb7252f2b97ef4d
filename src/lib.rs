//! autodidact: open-weight LLM agents that teach themselves.
//!
//! Dependencies point down only: `cli -> pipeline -> {eval, train, agent, export} -> sample -> model`;
//! `data` holds plain serde records and is testable without tensors.
pub mod agent;
pub mod backend;
pub mod data;
pub mod distil;
pub mod model;

pub mod sample;
pub mod simd;
pub mod export;
pub mod train;
pub mod cli;
pub mod pipeline;
pub mod progress;
pub mod rollout;
pub mod serve;
pub mod stats;
pub mod fault;
pub mod lock;
