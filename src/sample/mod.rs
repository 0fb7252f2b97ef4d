//! Batched generation and sampling.
