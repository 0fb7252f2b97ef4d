//! `autodidact serve`: the model behind an OpenAI-compatible endpoint.
use std::path::PathBuf;

use clap::Args;

use autodidact::serve::{ServeOptions, Server};

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// A GGUF file, a Hugging Face model folder, or a hub id.
    #[arg(long, default_value = autodidact::model::DEFAULT_MODEL)]
    pub model: String,
    /// A LoRA adapter to serve at start-up, as NAME=FOLDER (repeatable); requests choose it by `model: NAME`.
    /// More can be loaded while serving (POST /v1/load_lora_adapter).
    #[arg(long = "lora", value_parser = parse_lora)]
    pub loras: Vec<(String, PathBuf)>,
    /// Address to listen on. Anything but loopback exposes the model to the network: set --api-key-env then.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    #[arg(long, default_value_t = 8000)]
    pub port: u16,
    /// The base model's name in requests (default: its Hugging Face name, e.g. HuggingFaceTB/SmolLM2-135M-Instruct).
    #[arg(long)]
    pub served_model_name: Option<String>,
    /// Environment variable holding the API key that requests must send (Authorization: Bearer ...).
    #[arg(long)]
    pub api_key_env: Option<String>,
    /// MiB of finished turns' KV caches kept so that a conversation's next turn does not recompute its prompt.
    #[arg(long, default_value_t = 2048)]
    pub cache_mb: usize,
}

fn parse_lora(s: &str) -> Result<(String, PathBuf), String> {
    let (name, path) = s.split_once('=').ok_or_else(|| format!("`{s}`: expected NAME=FOLDER"))?;
    Ok((name.to_string(), PathBuf::from(path)))
}

pub fn run(a: ServeArgs) -> anyhow::Result<()> {
    let api_key = match &a.api_key_env {
        Some(v) => Some(std::env::var(v).map_err(|_| anyhow::anyhow!("--api-key-env {v}: the variable is not set"))?),
        None => None,
    };
    if a.host != "127.0.0.1" && a.host != "localhost" && a.host != "::1" && api_key.is_none() {
        eprintln!("warning: listening on {} without an API key: anyone who can reach it can use the model", a.host);
    }
    let model = autodidact::model::load_model(&a.model)?;
    let opts =
        ServeOptions { addr: format!("{}:{}", a.host, a.port), served_name: a.served_model_name, adapters: a.loras, api_key, cache_bytes: a.cache_mb << 20 };
    Server::run(model, opts, |s| eprintln!("serving {} at {}/v1 (Ctrl-C stops)", s.model_name, s.url()))
}
