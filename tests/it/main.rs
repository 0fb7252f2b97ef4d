//! The integration tests, as modules of one test binary: one link instead of one per file (minutes of a
//! fresh build on two cores). Run one file's tests with `cargo test --release --test it <file>::`.
mod common;

mod agent_episodes;
mod agent_suites;
mod agent_taskfiles;
mod architecture;
mod cli;
mod distil_chat;
mod distil_export;
mod distil_fewshot;
mod distil_filter;
mod distil_hint;
mod distil_train;
mod env;
mod export_gguf;
mod fuzz;
mod generate_real;
mod hostile_text;
mod loop_learning;
mod loop_real;
mod mcp;
mod model_arch;
mod model_gemma3;
mod model_gguf;
mod model_tiny;
mod rollout_real;
mod serve_real;
mod tokenizer_gemma3;
mod tokenizer_template;
mod train_bench;
mod train_lora;
mod train_model;
mod train_ops;
mod train_rl;
mod train_sft;
mod train_trl;
