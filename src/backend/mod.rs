//! Rollouts through OpenAI-compatible inference servers (`autodidact serve`, vLLM, llama.cpp's server).
//!
//! We render the chat template and tokenize ourselves and send the completions endpoint the prompt as token ids,
//! so a trajectory holds exactly the ids the server saw; the server's sampled ids come back where it returns them
//! (`return_token_ids`: vLLM and `autodidact serve`), otherwise its text is re-tokenized and the trajectory says so.
//! Servers that take only text prompts (llama-cpp-python's) get the rendered text.
mod client;

pub use crate::data::BackendInfo;
pub use client::{Client, Completion, CompletionRequest, PromptForm};

use serde::{Deserialize, Serialize};

/// Where rollouts are sampled: `[backend]` in loop configs, `--backend-url` etc. on `rollout` and `eval`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendConfig {
    /// Base URLs (`http://127.0.0.1:8000`, with or without `/v1`); several split the episodes between them.
    pub urls: Vec<String>,
    /// The served model name (`--served-model-name` in vLLM); a round's adapter is loaded under its own name.
    #[serde(default)]
    pub model: Option<String>,
    /// Name of the environment variable holding the API key (the key itself never goes in a config file).
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// Seconds one request may take.
    #[serde(default = "default_timeout")]
    pub timeout_s: u64,
    /// Attempts per request on connection errors and 5xx replies, with exponential backoff (1 s, 2 s, 4 s ...).
    #[serde(default = "default_retries")]
    pub retries: u32,
    /// Requests in flight per server.
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// Whether rounds load their adapter into the server (POST /v1/load_lora_adapter: `autodidact serve`, vLLM
    /// with VLLM_ALLOW_RUNTIME_LORA_UPDATING=True). Off: every round samples from the server's own model.
    #[serde(default = "yes")]
    pub load_adapters: bool,
}

fn default_timeout() -> u64 {
    300
}
fn default_retries() -> u32 {
    4
}
fn default_concurrency() -> usize {
    64
}
fn yes() -> bool {
    true
}

impl BackendConfig {
    pub fn new(urls: Vec<String>) -> Self {
        BackendConfig {
            urls,
            model: None,
            api_key_env: None,
            timeout_s: default_timeout(),
            retries: default_retries(),
            concurrency: default_concurrency(),
            load_adapters: true,
        }
    }

    /// One client per URL, each checked: reachable, key accepted, and serving `model` (or its only model).
    pub fn connect(&self) -> anyhow::Result<Vec<Client>> {
        anyhow::ensure!(!self.urls.is_empty(), "backend: no server URL given");
        let key = match &self.api_key_env {
            Some(var) => Some(std::env::var(var).map_err(|_| anyhow::anyhow!("backend: environment variable {var} (api_key_env) is not set"))?),
            None => None,
        };
        self.urls.iter().map(|u| Client::connect(u, self.model.as_deref(), key.clone(), self)).collect()
    }
}

/// How the servers of a rollout sample: what its trajectories record.
pub fn info(clients: &[Client]) -> BackendInfo {
    BackendInfo {
        url: clients.iter().map(|c| c.base.as_str()).collect::<Vec<_>>().join(" "),
        model: clients.first().map(|c| c.model.clone()).unwrap_or_default(),
        token_ids: clients.iter().all(|c| c.returns_ids),
        // Log-probs of re-tokenized ids would not belong to them.
        logprobs: clients.iter().all(|c| c.returns_logprobs && c.returns_ids),
    }
}
