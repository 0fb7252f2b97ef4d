//! Command-line interface: clap types and the glue from flags to library calls.
mod bench;
mod chat;
mod compare;
mod export;
mod filter;
mod generate;
mod info;

pub mod rollout;
mod run_loop;
mod select;
mod serve;
mod tasks;
mod train;
mod train_rl;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use autodidact::sample::SamplingParams;

pub use autodidact::model::{load_model, DEFAULT_MODEL};

/// Open-weight LLM agents that teach themselves.
#[derive(Parser, Debug)]
#[command(name = "autodidact", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Generate completions for a prompt or a chat (several samples are decoded as one batch).
    Generate(generate::GenerateArgs),
    /// Chat with a model interactively (type /reset to start over, /exit to quit).
    Chat(chat::ChatArgs),
    /// Show a model's architecture, size, tensor types, chat template and special tokens.
    Info(info::InfoArgs),
    /// Measure prompt and decode speed (single stream and batched) and peak memory.
    Bench(bench::BenchArgs),
    /// Convert a model (e.g. a GGUF file) to a Hugging Face folder with safetensors weights (merging --adapter).
    Convert(ConvertArgs),
    /// Run K sampled agent episodes per task in the tool sandboxes; writes trajectories.jsonl (resumable).
    Rollout(rollout::RolloutArgs),
    /// Success rate, pass@k, turns, tool calls, tokens and invalid calls per suite and difficulty.
    Eval(rollout::EvalArgs),
    /// List suites, write task files, show a task as the model sees it.
    Tasks(tasks::TasksArgs),
    /// Keep short successful episodes and write them as a chat dataset with loss masks (plus report and audit).
    Filter(filter::FilterArgs),
    /// Train a LoRA adapter on a dataset (or measure training speed with --bench).
    Train(train::TrainArgs),
    /// Export an adapter as a PEFT folder or merged into a Hugging Face model folder.
    Export(export::ExportArgs),
    /// The self-distillation loop: evaluate, then per round rollout, filter, train, evaluate, gate (resumable).
    Loop(run_loop::LoopArgs),
    /// Serve the model (and adapters) behind an OpenAI-compatible HTTP endpoint on 127.0.0.1.
    Serve(serve::ServeArgs),
    /// Loop runs side by side: arms (runs named ARM-sSEED) with 95% intervals over seeds, per suite and difficulty.
    Compare(compare::CompareArgs),
}

#[derive(Args, Debug, Clone)]
pub struct ModelArgs {
    /// A GGUF file, a Hugging Face model folder, or a hub id (e.g. Qwen/Qwen2.5-0.5B-Instruct).
    #[arg(long, default_value = DEFAULT_MODEL)]
    pub model: String,
    /// A LoRA adapter folder (ours or PEFT's) to apply on top of the model.
    #[arg(long)]
    pub adapter: Option<PathBuf>,
}

impl ModelArgs {
    pub fn load(&self) -> anyhow::Result<autodidact::model::LoadedModel> {
        let mut m = load_model(&self.model)?;
        if let Some(dir) = &self.adapter {
            m.attach_adapter(dir)?;
            eprintln!("adapter {}", dir.display());
        }
        Ok(m)
    }
}

#[derive(Args, Debug, Clone)]
pub struct SamplingArgs {
    /// Sampling temperature; 0 decodes greedily.
    #[arg(long, default_value_t = 0.7)]
    pub temperature: f32,
    /// Sample only among the k most likely tokens (0 = no limit).
    #[arg(long, default_value_t = 0)]
    pub top_k: usize,
    /// Nucleus sampling: keep the most likely tokens up to this total probability.
    #[arg(long, default_value_t = 0.95)]
    pub top_p: f32,
    /// Random seed; the same seed gives the same output.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Maximum number of new tokens per sample.
    #[arg(long, default_value_t = 256)]
    pub max_new_tokens: usize,
    /// Stop when this text appears (repeatable); the output is cut before it.
    #[arg(long = "stop")]
    pub stop: Vec<String>,
}

impl SamplingArgs {
    pub fn params(&self) -> SamplingParams {
        SamplingParams {
            temperature: self.temperature,
            top_k: self.top_k,
            top_p: self.top_p,
            seed: self.seed,
            max_new_tokens: self.max_new_tokens,
            stop_tokens: vec![],
            stop_strings: self.stop.clone(),
        }
    }
}

#[derive(Args, Debug)]
pub struct ConvertArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Output folder (written atomically).
    #[arg(long)]
    pub out: PathBuf,
    /// Tensor type of the written weights.
    #[arg(long, value_enum, default_value = "f32")]
    pub dtype: autodidact::export::hf::SaveDType,
}

pub fn run(cli: Cli) -> anyhow::Result<()> {
    // A path the user forced but this CPU lacks is refused before any work starts.
    autodidact::simd::Simd::from_env()?;
    match cli.command {
        Command::Generate(a) => generate::run(a),
        Command::Chat(a) => chat::run(a),
        Command::Info(a) => info::run(a),
        Command::Bench(a) => bench::run(a),
        Command::Rollout(a) => rollout::run(a),
        Command::Eval(a) => rollout::eval(a),
        Command::Tasks(a) => tasks::run(a),
        Command::Filter(a) => filter::run(a),
        Command::Train(a) => train::run(a),
        Command::Export(a) => export::run(a),
        Command::Loop(a) => run_loop::run(a),
        Command::Compare(a) => compare::run(a),
        Command::Serve(a) => serve::run(a),
        Command::Convert(a) => {
            let m = a.model.load()?;
            let merged = m.transformer.adapter.as_ref().map(|ad| ad.merge(&m.transformer.weights, m.config())).transpose()?;
            autodidact::export::hf::write_hf_folder(&m, merged.as_ref(), &a.out, a.dtype)?;
            eprintln!("wrote {}{}", a.out.display(), if merged.is_some() { " (adapter merged)" } else { "" });
            Ok(())
        }
    }
}

/// The kernels' instruction-set path, for `info` and `bench` (e.g. "avx2 (best on this CPU: avx512; cpu: ...)").
pub fn simd_line() -> String {
    let (s, best) = (autodidact::simd::Simd::active(), autodidact::simd::Simd::best());
    let forced = if s == best { String::new() } else { format!(", forced by {}; best on this CPU: {best}", autodidact::simd::ENV) };
    format!("{s}{forced} (cpu: {})", autodidact::simd::cpu_features())
}

pub fn simd_json() -> serde_json::Value {
    let avail: Vec<&str> = autodidact::simd::Simd::available().iter().map(|s| s.name()).collect();
    serde_json::json!({"path": autodidact::simd::Simd::active().name(), "best": autodidact::simd::Simd::best().name(), "available": avail, "cpu": autodidact::simd::cpu_features()})
}
