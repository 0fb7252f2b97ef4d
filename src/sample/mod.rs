//! Batched generation and sampling.
pub mod generate;
pub mod params;

pub use generate::{generate, generate_into, shared_prefix, FinishReason, GenOutput, GenRequest, Sequence};
pub use params::{sample, stream_rng, SamplingParams};
