//! Batched generation and sampling.
pub mod generate;
pub mod params;

pub use generate::{generate, FinishReason, GenOutput, GenRequest};
pub use params::{sample, stream_rng, SamplingParams};
