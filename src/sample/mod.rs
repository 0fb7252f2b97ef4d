//! Batched generation and sampling.
pub mod generate;
pub mod params;
pub mod stop;

pub use generate::{generate, generate_into, shared_prefix, GenOutput, GenRequest, Sequence};
pub use params::{sample, stream_rng, SamplingParams};
