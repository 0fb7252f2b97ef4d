//! A blocking client for the parts of the OpenAI API that rollouts use: `/v1/models`, `/v1/completions` and
//! vLLM's `/v1/load_lora_adapter`.
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use serde_json::{json, Value};

use super::BackendConfig;

#[derive(Debug, Clone, PartialEq)]
pub enum PromptForm {
    Ids(Vec<u32>),
    Text(String),
}

#[derive(Debug, Clone)]
pub struct CompletionRequest {
    /// The whole prompt as token ids; `text` is the same prompt rendered, for servers that take text only.
    pub ids: Vec<u32>,
    pub text: String,
    pub max_tokens: usize,
    pub temperature: f32,
    pub top_p: f32,
    pub top_k: usize,
    pub seed: u64,
    pub stop: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Completion {
    pub text: String,
    /// The sampled ids (stop token included), when the server returns them.
    pub ids: Option<Vec<u32>>,
    pub logprobs: Option<Vec<f32>>,
    /// True when generation ended on a stop token or string, false at the token limit.
    pub stopped: bool,
}

const FORM_UNKNOWN: u8 = 0;
const FORM_IDS: u8 = 1;
const FORM_TEXT: u8 = 2;

/// One server. Cloning shares the connection pool and what was learnt about the server.
#[derive(Clone)]
pub struct Client {
    /// Base URL ending in `/v1`.
    pub base: String,
    pub model: String,
    key: Option<String>,
    agent: ureq::Agent,
    retries: u32,
    /// Whether the server takes token-id prompts (learnt from its first reply).
    form: Arc<AtomicU8>,
    /// Whether replies carry the sampled token ids and their log-probs (probed at connection).
    pub returns_ids: bool,
    pub returns_logprobs: bool,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Client({} {})", self.base, self.model)
    }
}

enum Failure {
    /// Worth retrying: the connection failed, the server is overloaded or failed internally.
    Transient(anyhow::Error),
    Fatal(anyhow::Error),
}

impl Client {
    pub fn connect(url: &str, model: Option<&str>, key: Option<String>, cfg: &BackendConfig) -> anyhow::Result<Client> {
        let trimmed = url.trim_end_matches('/');
        anyhow::ensure!(trimmed.starts_with("http://") || trimmed.starts_with("https://"), "backend URL `{url}`: expected http://host:port");
        let base = if trimmed.ends_with("/v1") { trimmed.to_string() } else { format!("{trimmed}/v1") };
        let agent = ureq::AgentBuilder::new().timeout_connect(Duration::from_secs(10)).timeout(Duration::from_secs(cfg.timeout_s.max(1))).build();
        let mut c = Client {
            base,
            model: String::new(),
            key,
            agent,
            retries: cfg.retries.max(1),
            form: Arc::new(AtomicU8::new(FORM_UNKNOWN)),
            returns_ids: false,
            returns_logprobs: false,
        };
        let models = c.models()?;
        c.model = match model {
            Some(m) if models.iter().any(|x| x == m) => m.to_string(),
            Some(m) => bail!("{}: model `{m}` is not served here; it serves: {}", c.base, models.join(", ")),
            None if models.len() == 1 => models[0].clone(),
            None => bail!("{}: serves {} models ({}); say which with the backend's `model`", c.base, models.len(), models.join(", ")),
        };
        let probe = CompletionRequest { ids: vec![0], text: "Hello".into(), max_tokens: 1, temperature: 0.0, top_p: 1.0, top_k: 0, seed: 0, stop: vec![] };
        let reply = c.complete(&probe).context("probing the server with a one-token completion")?;
        c.returns_ids = reply.ids.is_some();
        c.returns_logprobs = reply.logprobs.is_some_and(|l| !l.is_empty());
        Ok(c)
    }

    /// The same server under another model name (a loaded adapter).
    pub fn with_model(&self, model: &str) -> Client {
        Client { model: model.to_string(), ..self.clone() }
    }

    pub fn models(&self) -> anyhow::Result<Vec<String>> {
        let v = self.call("GET", "models", None)?;
        let list = v.get("data").and_then(Value::as_array).ok_or_else(|| self.not_openai("models", &v))?;
        list.iter().map(|m| m.get("id").and_then(Value::as_str).map(str::to_string).ok_or_else(|| self.not_openai("models", &v))).collect()
    }

    /// Loads a LoRA adapter folder under `name` (vLLM's runtime LoRA API, also served by `autodidact serve`).
    pub fn load_adapter(&self, name: &str, path: &std::path::Path) -> anyhow::Result<()> {
        let body = json!({"lora_name": name, "lora_path": path.display().to_string()});
        match self.call("POST", "load_lora_adapter", Some(&body)) {
            // vLLM refuses a name it already holds: a resumed run reloads its round's adapter.
            Err(e) if http_status(&e).is_some_and(|c| c < 500) && format!("{e:#}").contains("already") => return Ok(()),
            r => r,
        }
        .with_context(|| {
            format!(
                "{}: could not load adapter {} as `{name}` (servers that cannot load adapters at run time: set backend.load_adapters = false)",
                self.base,
                path.display()
            )
        })?;
        Ok(())
    }

    pub fn complete(&self, r: &CompletionRequest) -> anyhow::Result<Completion> {
        let mut body = json!({
            "model": self.model,
            "max_tokens": r.max_tokens,
            "temperature": r.temperature,
            "top_p": r.top_p,
            "seed": r.seed,
            "logprobs": 1,
            "return_token_ids": true,
            "skip_special_tokens": false,
            // Plain sampling as requested: llama.cpp's servers otherwise apply top_k 40, min_p 0.05 and a repeat
            // penalty of 1.1 by default (0 = no top-k limit everywhere).
            "top_k": r.top_k,
            "min_p": 0.0,
            "repeat_penalty": 1.0,
        });
        if !r.stop.is_empty() {
            body["stop"] = json!(r.stop);
        }
        let form = self.form.load(Ordering::Relaxed);
        let v = if form == FORM_TEXT {
            body["prompt"] = json!(r.text);
            self.call("POST", "completions", Some(&body))?
        } else {
            body["prompt"] = json!(r.ids);
            // Until a server has taken a token-id prompt, a refusal of one is tried once more as text (llama-cpp-
            // python validates `prompt` as text and answers 500).
            let retries = if form == FORM_UNKNOWN { 1 } else { self.retries };
            match self.call_with(retries, "POST", "completions", Some(&body)) {
                Ok(v) => {
                    self.form.store(FORM_IDS, Ordering::Relaxed);
                    v
                }
                Err(e) if form == FORM_UNKNOWN && http_status(&e).is_some() => {
                    body["prompt"] = json!(r.text);
                    let v = self.call("POST", "completions", Some(&body)).with_context(|| format!("after the token-id prompt was refused: {e:#}"))?;
                    self.form.store(FORM_TEXT, Ordering::Relaxed);
                    eprintln!("{}: the server takes text prompts only; sending the rendered chat as text", self.base);
                    v
                }
                Err(e) => return Err(e),
            }
        };
        self.parse_completion(&v)
    }

    /// Whether prompts go to this server as text (its tokenizer then parses special-token text in content).
    pub fn takes_text_only(&self) -> bool {
        self.form.load(Ordering::Relaxed) == FORM_TEXT
    }

    fn parse_completion(&self, v: &Value) -> anyhow::Result<Completion> {
        let c = v.get("choices").and_then(|c| c.get(0)).ok_or_else(|| self.not_openai("completions", v))?;
        let text = c.get("text").and_then(Value::as_str).ok_or_else(|| self.not_openai("completions", v))?.to_string();
        let stopped = match c.get("finish_reason").and_then(Value::as_str) {
            Some("length") => false,
            Some(_) | None => true,
        };
        let ids = c.get("token_ids").and_then(Value::as_array).map(|a| a.iter().map(|x| x.as_u64().map(|x| x as u32)).collect::<Option<Vec<u32>>>());
        let ids = match ids {
            Some(None) => return Err(self.not_openai("completions", v)),
            Some(Some(ids)) => Some(ids),
            None => None,
        };
        let logprobs = c
            .get("logprobs")
            .and_then(|l| l.get("token_logprobs"))
            .and_then(Value::as_array)
            .and_then(|a| a.iter().map(|x| x.as_f64().map(|x| x as f32)).collect::<Option<Vec<f32>>>());
        Ok(Completion { text, ids, logprobs, stopped })
    }

    fn not_openai(&self, endpoint: &str, v: &Value) -> anyhow::Error {
        let s = v.to_string();
        anyhow!("{}/{endpoint}: the reply is not an OpenAI-format answer: {}", self.base, &s[..s.len().min(300)])
    }

    /// One request with retries and exponential backoff on transient failures.
    fn call(&self, method: &str, endpoint: &str, body: Option<&Value>) -> anyhow::Result<Value> {
        self.call_with(self.retries, method, endpoint, body)
    }

    fn call_with(&self, retries: u32, method: &str, endpoint: &str, body: Option<&Value>) -> anyhow::Result<Value> {
        let url = format!("{}/{endpoint}", self.base);
        let mut wait = Duration::from_secs(1);
        let retries = retries.max(1);
        for attempt in 1..=retries {
            match self.once(method, &url, body) {
                Ok(v) => return Ok(v),
                Err(Failure::Fatal(e)) => return Err(e),
                Err(Failure::Transient(e)) if attempt == retries => {
                    return Err(e.context(format!("{method} {url}: failed {attempt} times")));
                }
                Err(Failure::Transient(_)) => {
                    std::thread::sleep(wait);
                    wait = (wait * 2).min(Duration::from_secs(30));
                }
            }
        }
        unreachable!("retries >= 1")
    }

    fn once(&self, method: &str, url: &str, body: Option<&Value>) -> Result<Value, Failure> {
        let mut req = self.agent.request(method, url).set("Content-Type", "application/json");
        if let Some(k) = &self.key {
            req = req.set("Authorization", &format!("Bearer {k}"));
        }
        let res = match body {
            Some(b) => req.send_string(&b.to_string()),
            None => req.call(),
        };
        let text = match res {
            Ok(r) => r.into_string().map_err(|e| Failure::Transient(anyhow!("{url}: reading the reply: {e}")))?,
            Err(ureq::Error::Status(code, r)) => {
                let detail = r.into_string().unwrap_or_default();
                let detail = &detail[..detail.len().min(300)];
                let e = match code {
                    401 | 403 => anyhow!("{url}: the server refused the API key (HTTP {code}): {detail}"),
                    _ => anyhow!(HttpStatus(code)).context(format!("{url}: HTTP {code}: {detail}")),
                };
                return Err(if code >= 500 || code == 429 { Failure::Transient(e) } else { Failure::Fatal(e) });
            }
            Err(ureq::Error::Transport(t)) => return Err(Failure::Transient(anyhow!("{url}: cannot reach the server: {t}"))),
        };
        if text.trim().is_empty() && endpoint_of(url) == "load_lora_adapter" {
            return Ok(Value::Null);
        }
        match serde_json::from_str(&text) {
            Ok(v) => Ok(v),
            // vLLM answers load_lora_adapter with plain text.
            Err(_) if endpoint_of(url) == "load_lora_adapter" => Ok(Value::String(text)),
            Err(e) => Err(Failure::Fatal(anyhow!("{url}: the reply is not JSON ({e}): {}", &text[..text.len().min(300)]))),
        }
    }
}

fn endpoint_of(url: &str) -> &str {
    url.rsplit('/').next().unwrap_or("")
}

/// The HTTP status of a reply that was not a success (authentication failures aside).
#[derive(Debug)]
struct HttpStatus(u16);

impl std::fmt::Display for HttpStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HTTP {}", self.0)
    }
}

impl std::error::Error for HttpStatus {}

fn http_status(e: &anyhow::Error) -> Option<u16> {
    e.downcast_ref::<HttpStatus>().map(|c| c.0)
}
