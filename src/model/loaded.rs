//! A model ready to chat: weights, tokenizer and chat template loaded from one `--model` argument.
use std::path::Path;

use serde_json::Value;

use super::builtin_template::builtin_template;
use super::chat_template::ChatTemplate;
use super::config::{Arch, ModelConfig};
use super::error::{ModelError, Result};
use super::gguf::GgufFile;
use super::source::{resolve, ModelSource};
use super::tokenizer::Tokenizer;
use super::transformer::Transformer;
use super::weights::{SafetensorsDir, Weights};

pub struct LoadedModel {
    /// What the user passed to `--model`.
    pub spec: String,
    pub source: ModelSource,
    pub transformer: Transformer,
    pub tokenizer: Tokenizer,
    pub template: ChatTemplate,
    /// True when the checkpoint has no chat template and the built-in one for its architecture is used (Gemma 3's
    /// format for gemma3, the documented ChatML fallback otherwise; see `model::builtin_template`).
    pub template_is_fallback: bool,
    /// Tensor type -> count in the checkpoint file(s).
    pub tensor_types: Vec<(String, usize)>,
    /// The model's Hugging Face name where known (e.g. `HuggingFaceTB/SmolLM2-135M-Instruct`): adapters record
    /// it as `base_model_name_or_path` and are refused on another base.
    pub base_name: String,
}

impl LoadedModel {
    pub fn load(spec: &str) -> Result<Self> {
        let source = resolve(spec)?;
        match &source {
            ModelSource::Gguf(path) => Self::load_gguf(spec, path, source.clone()),
            ModelSource::HfDir(dir) => Self::load_hf(spec, dir, source.clone()),
        }
    }

    fn load_gguf(spec: &str, path: &Path, source: ModelSource) -> Result<Self> {
        let g = GgufFile::open(path)?;
        let tokenizer = Tokenizer::from_gguf(g.metadata()).map_err(|e| ModelError::Tokenizer { path: path.into(), source: e })?;
        let has_output = g.has_tensor("output.weight");
        let cfg = ModelConfig::from_gguf(g.metadata(), has_output, tokenizer.vocab_size(), path)?;
        let weights = Weights::load(&g, &cfg)?;
        let template_src = g.metadata().get("tokenizer.chat_template").and_then(|v| v.to_string().ok()).cloned();
        let (template, template_is_fallback) = make_template(template_src, &tokenizer, path, cfg.arch)?;
        let base_name = gguf_base_name(g.metadata(), path);
        Ok(LoadedModel {
            base_name,
            spec: spec.into(),
            source,
            transformer: Transformer::new(cfg, weights),
            tokenizer,
            template,
            template_is_fallback,
            tensor_types: g.dtype_counts(),
        })
    }

    fn load_hf(spec: &str, dir: &Path, source: ModelSource) -> Result<Self> {
        let cfg = ModelConfig::from_hf_json(&dir.join("config.json"))?;
        let tok_json = dir.join("tokenizer.json");
        let tok_cfg = dir.join("tokenizer_config.json");
        if !tok_json.is_file() {
            return Err(ModelError::invalid(dir, "model folder has no tokenizer.json"));
        }
        let tokenizer = Tokenizer::from_files(&tok_json, tok_cfg.is_file().then_some(tok_cfg.as_path()))
            .map_err(|e| ModelError::Tokenizer { path: tok_json.clone(), source: e })?;
        let st = SafetensorsDir::open(dir)?;
        let weights = Weights::load(&st, &cfg)?;
        let (template, template_is_fallback) = make_template(hf_chat_template(dir)?, &tokenizer, &tok_cfg, cfg.arch)?;
        Ok(LoadedModel {
            base_name: hf_base_name(spec, dir),
            spec: spec.into(),
            source,
            transformer: Transformer::new(cfg, weights),
            tokenizer,
            template,
            template_is_fallback,
            tensor_types: vec![("F32 (converted at load)".into(), st.tensor_names().len())],
        })
    }

    /// Attaches a LoRA adapter to the runtime (checked against this model's shapes and base name).
    pub fn attach_adapter(&mut self, dir: &Path) -> Result<()> {
        let a =
            super::lora::LoraAdapter::load(dir, &self.transformer.cfg, Some(&self.base_name)).map_err(|e| ModelError::invalid(dir, format!("adapter: {e}")))?;
        self.transformer.adapter = Some(a);
        Ok(())
    }

    pub fn config(&self) -> &ModelConfig {
        &self.transformer.cfg
    }

    /// Renders messages with the model's template and tokenizes the result exactly (special tokens included).
    /// The chat's token ids: the template's markers become special ids, message content never does (see
    /// [`LoadedModel::render_chat_segments`]).
    pub fn encode_chat(&self, messages: &[Value], tools: Option<&[Value]>, add_generation_prompt: bool) -> Result<Vec<u32>> {
        let segments = self.render_chat_segments(messages, tools, add_generation_prompt)?;
        let parts: Vec<(&str, bool)> = segments.iter().map(|(s, t)| (s.as_str(), *t)).collect();
        self.tokenizer.encode_segments(&parts).map_err(|e| ModelError::Tokenizer { path: self.source.path().into(), source: e })
    }

    /// The rendered chat as the template's own text (trusted: its special tokens are real) and the messages'
    /// content (untrusted: task text, documents, tool output and the model's samples are data, so a `<|im_end|>`
    /// spelled inside them must not end a turn). Content is located by rendering with placeholders; when no
    /// content spells a special token the whole text is one trusted segment (the tokens are then the same).
    pub fn render_chat_segments(&self, messages: &[Value], tools: Option<&[Value]>, add_generation_prompt: bool) -> Result<Vec<(String, bool)>> {
        let content = |m: &Value| m.get("content").and_then(Value::as_str).map(str::to_string);
        if !messages.iter().filter_map(content).any(|c| self.tokenizer.mentions_special(&c)) {
            return Ok(vec![(self.render_chat(messages, tools, add_generation_prompt)?, true)]);
        }
        self.render_chat_marked(messages, tools, add_generation_prompt)
    }

    /// [`LoadedModel::render_chat_segments`] without its shortcut: content is always located and marked.
    pub fn render_chat_marked(&self, messages: &[Value], tools: Option<&[Value]>, add_generation_prompt: bool) -> Result<Vec<(String, bool)>> {
        const OPEN: char = '\u{F0000}';
        const CLOSE: char = '\u{F0001}';
        let plain = self.render_chat(messages, tools, add_generation_prompt)?;
        let content = |m: &Value| m.get("content").and_then(Value::as_str).map(str::to_string);
        let marked: Vec<Value> = messages
            .iter()
            .enumerate()
            .map(|(i, m)| {
                let mut m = m.clone();
                if content(&m).is_some() {
                    m["content"] = Value::String(format!("{OPEN}{i}{CLOSE}"));
                }
                m
            })
            .collect();
        let text = self.render_chat(&marked, tools, add_generation_prompt)?;
        // Templates that trim content (Llama 3's) are followed by trimming it the same way.
        for trim in [false, true] {
            let mut segments = Vec::new();
            let mut rest = text.as_str();
            while let Some(a) = rest.find(OPEN) {
                let Some(b) = rest[a..].find(CLOSE).map(|b| a + b) else { break };
                let Some(c) = rest[a + OPEN.len_utf8()..b].parse::<usize>().ok().and_then(|i| messages.get(i)).and_then(content) else { break };
                segments.push((rest[..a].to_string(), true));
                segments.push((if trim { c.trim().to_string() } else { c }, false));
                rest = &rest[b + CLOSE.len_utf8()..];
            }
            segments.push((rest.to_string(), true));
            if segments.iter().map(|(s, _)| s.as_str()).collect::<String>() == plain {
                return Ok(segments);
            }
        }
        Err(ModelError::UntrustedText {
            path: self.source.path().into(),
            message: "message content spells a special token, and the template changes content in a way that cannot be followed to keep it as text".into(),
        })
    }

    pub fn render_chat(&self, messages: &[Value], tools: Option<&[Value]>, add_generation_prompt: bool) -> Result<String> {
        self.template.render(messages, tools, add_generation_prompt).map_err(|e| ModelError::Template { path: self.source.path().into(), source: e })
    }
}

/// The part of rendered segments (see [`LoadedModel::render_chat_segments`]) between byte offsets `start` and `end`
/// of their joined text, each piece keeping whether it is trusted: the text a turn adds to what came before.
pub fn segments_between(segments: &[(String, bool)], start: usize, end: usize) -> Vec<(&str, bool)> {
    let mut out = Vec::new();
    let mut at = 0;
    for (s, trusted) in segments {
        let (from, to) = (start.max(at), end.min(at + s.len()));
        if from < to {
            out.push((&s[from - at..to - at], *trusted));
        }
        at += s.len();
    }
    out
}

fn make_template(src: Option<String>, tok: &Tokenizer, path: &Path, arch: Arch) -> Result<(ChatTemplate, bool)> {
    match src {
        Some(s) => {
            ChatTemplate::new(&s, tok.bos_token(), tok.eos_token()).map(|t| (t, false)).map_err(|e| ModelError::Template { path: path.into(), source: e })
        }
        None => Ok((builtin_template(arch, tok.bos_token(), tok.eos_token()), true)),
    }
}

/// The chat template of a HF folder: `chat_template.jinja`, or `chat_template` in tokenizer_config.json (a string,
/// or a list of named templates of which "default" is used).
fn hf_chat_template(dir: &Path) -> Result<Option<String>> {
    let jinja = dir.join("chat_template.jinja");
    if jinja.is_file() {
        return std::fs::read_to_string(&jinja).map(Some).map_err(|e| ModelError::io(&jinja, e));
    }
    let cfg = dir.join("tokenizer_config.json");
    if !cfg.is_file() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(&cfg).map_err(|e| ModelError::io(&cfg, e))?;
    let v: Value = serde_json::from_str(&text).map_err(|e| ModelError::invalid(&cfg, format!("line {}: {e}", e.line())))?;
    Ok(match v.get("chat_template") {
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Array(list)) => list
            .iter()
            .find(|t| t.get("name").and_then(Value::as_str) == Some("default"))
            .and_then(|t| t.get("template").and_then(Value::as_str))
            .map(String::from),
        _ => None,
    })
}

/// `organization/file-stem-without-quant-suffix`, e.g. `HuggingFaceTB/SmolLM2-135M-Instruct` for
/// `SmolLM2-135M-Instruct.Q4_1.gguf`.
fn gguf_base_name(md: &std::collections::HashMap<String, candle_core::quantized::gguf_file::Value>, path: &Path) -> String {
    let stem = path.file_stem().map(|s| s.to_string_lossy().to_string()).unwrap_or_default();
    let stem = stem.split('.').next().unwrap_or(&stem).to_string();
    match md.get("general.organization").and_then(|v| v.to_string().ok()) {
        Some(org) if !org.is_empty() => format!("{org}/{stem}"),
        _ => stem,
    }
}

/// The hub id for hub models, `_name_or_path` from config.json for folders that have it, else the folder name.
fn hf_base_name(spec: &str, dir: &Path) -> String {
    if !Path::new(spec).exists() {
        return spec.to_string();
    }
    let from_config = std::fs::read_to_string(dir.join("config.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<Value>(&t).ok())
        .and_then(|v| v.get("_name_or_path").and_then(Value::as_str).map(String::from))
        .filter(|s| !s.is_empty());
    from_config.unwrap_or_else(|| dir.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default())
}
