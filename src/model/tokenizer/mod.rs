//! Tokenizers rebuilt from GGUF metadata, or loaded from Hugging Face `tokenizer.json`.
//!
//! GGUF files name their tokenizer in `tokenizer.ggml.model`; two kinds are supported, both rebuilt as a
//! `tokenizers` BPE so that encoding, decoding and the Hugging Face export are one implementation:
//! - "gpt2": byte-level BPE (SmolLM2, Llama 3, Qwen2). Built by hand because candle's `Tokenizer::from_gguf`
//!   adds a prefix space, which gives SmolLM2 wrong ids after every special token and breaks the decode round
//!   trip. Here the pre-tokenizer is chosen from `tokenizer.ggml.pre` the way llama.cpp does, so ids match
//!   llama.cpp and Hugging Face.
//! - "llama": SentencePiece BPE (Gemma, Llama 2, Mistral, Phi-3), merged by piece score with byte fallback as
//!   llama.cpp does (the `spm` module says how, and where the two could differ).
//!
//! Other kinds (WordPiece "bert", Unigram "t5", RWKV) are refused by name.
//!
//! `encode` never adds BOS: chat templates write it themselves, and adding it twice silently hurts quality.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file::Value as GgufValue;
use serde_json::{json, Value as JsonValue};
use tokenizers::decoders::DecoderWrapper;
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::normalizers::{unicode::NFC, NormalizerWrapper};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::processors::template::TemplateProcessing;
use tokenizers::processors::PostProcessorWrapper;
use tokenizers::{AddedToken, SplitDelimiterBehavior};

/// Token strings that end a turn or a document in the model families we run. They count as stop tokens only
/// when the vocabulary has them as special tokens, so a plain-text lookalike never stops generation.
const STOP_TOKENS: [&str; 7] = ["<|im_end|>", "<|endoftext|>", "<|eot_id|>", "<|end_of_text|>", "<|eom_id|>", "<end_of_turn>", "<|end|>"];

/// End-of-sequence candidates, in order of preference, for `tokenizer.json` files whose config names none.
/// Chat-turn ends come first because we generate chat turns.
const EOS_FALLBACK: [&str; 7] = ["<|im_end|>", "<|eot_id|>", "<|end_of_text|>", "<|endoftext|>", "</s>", "<eos>", "<|end|>"];

/// Beginning-of-sequence candidates for `tokenizer.json` files whose config names none.
const BOS_FALLBACK: [&str; 3] = ["<|begin_of_text|>", "<s>", "<bos>"];

/// GGUF `token_type` values (llama.cpp `llama_token_type`).
const TOKEN_TYPE_UNKNOWN: i64 = 2;
const TOKEN_TYPE_CONTROL: i64 = 3;
const TOKEN_TYPE_USER_DEFINED: i64 = 4;

/// Llama 3 split regex, from its `tokenizer.json`; llama.cpp calls this pre-tokenizer "llama-bpe".
const LLAMA3_REGEX: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// Qwen2 split regex, from its `tokenizer.json`: as Llama 3 but digits one by one.
const QWEN2_REGEX: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// HF's sentinel for "no limit" in `model_max_length` is 1e30; anything this large carries no information.
const MAX_SENSIBLE_CONTEXT: f64 = 1e9;

/// Why a tokenizer could not be built or used.
#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    #[error("GGUF metadata has no `{field}`")]
    MissingField { field: String },
    #[error("GGUF metadata field `{field}` is not {expected}")]
    WrongType { field: String, expected: &'static str },
    #[error("unsupported tokenizer model {0} in GGUF (supported: \"gpt2\" byte-level BPE, \"llama\" SentencePiece BPE)")]
    UnsupportedModel(String),
    #[error("GGUF `tokenizer.ggml.merges` entry {index} ({merge:?}) is not two tokens separated by a space")]
    BadMerge { index: usize, merge: String },
    #[error("GGUF `{field}` has {len} entries but `tokenizer.ggml.tokens` has {vocab_size}")]
    LengthMismatch { field: &'static str, len: usize, vocab_size: usize },
    #[error("GGUF `{field}` = {id} is outside the vocabulary of {vocab_size} tokens")]
    IdOutOfRange { field: String, id: u64, vocab_size: usize },
    #[error("GGUF `{field}` entry {index} {problem}")]
    BadVocab { field: &'static str, index: usize, problem: String },
    #[error("cannot build the BPE tokenizer from GGUF `tokenizer.ggml.*` metadata")]
    Build(#[source] tokenizers::Error),
    #[error("cannot read {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot load the tokenizer in {path}")]
    Load {
        path: PathBuf,
        #[source]
        source: tokenizers::Error,
    },
    #[error("{path} is not valid JSON")]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("{path}: `{field}` must be a string or an object with a string \"content\"")]
    BadConfigToken { path: PathBuf, field: &'static str },
    #[error("{path}: `{field}` token {token:?} is not in the vocabulary")]
    TokenNotInVocab { path: PathBuf, field: &'static str, token: String },
    #[error("{path}: no end-of-sequence token: no `eos_token` in tokenizer_config.json and none of {EOS_FALLBACK:?} in the vocabulary")]
    NoEos { path: PathBuf },
    #[error("cannot encode text")]
    Encode(#[source] tokenizers::Error),
    #[error("cannot decode token ids")]
    Decode(#[source] tokenizers::Error),
    #[error("token id {id} is outside the vocabulary of {vocab_size} tokens")]
    UnknownId { id: u32, vocab_size: usize },
    #[error("cannot serialize the tokenizer to tokenizer.json")]
    Serialize(#[source] tokenizers::Error),
    #[error("tokenizer.json `{field}`: {why}; GGUF (llama.cpp) cannot express this tokenizer")]
    NoGgufForm { field: &'static str, why: String },
}

/// A text tokenizer plus the token roles that generation and chat templates need.
#[derive(Clone)]
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    bos_id: Option<u32>,
    eos_id: u32,
    pad_id: Option<u32>,
    /// Sorted, without duplicates.
    stop_ids: Vec<u32>,
    /// Special (control) token strings, in id order.
    special_tokens: Vec<String>,
    vocab_size: usize,
    add_bos: bool,
    model_max_length: Option<usize>,
    /// The same tokenizer with special-token parsing off: text that merely spells a special token stays text.
    plain: std::sync::OnceLock<tokenizers::Tokenizer>,
}

impl std::fmt::Debug for Tokenizer {
    // The inner tokenizer would print the whole vocabulary.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("vocab_size", &self.vocab_size)
            .field("bos_id", &self.bos_id)
            .field("eos_id", &self.eos_id)
            .field("pad_id", &self.pad_id)
            .field("stop_ids", &self.stop_ids)
            .field("add_bos", &self.add_bos)
            .finish_non_exhaustive()
    }
}

impl Tokenizer {
    /// Loads a Hugging Face `tokenizer.json`, taking token roles from `tokenizer_config.json` when given.
    ///
    /// `bos_token`/`eos_token`/`pad_token` may be strings or `{"content": ...}` objects. Without a config
    /// (or without `eos_token` in it) the roles are guessed from well-known special tokens; a tokenizer with
    /// no recognisable end-of-sequence token is an error, because generation could never stop.
    pub fn from_files(tokenizer_json: &Path, tokenizer_config_json: Option<&Path>) -> Result<Self, TokenizerError> {
        let inner = tokenizers::Tokenizer::from_file(tokenizer_json).map_err(|source| TokenizerError::Load { path: tokenizer_json.to_path_buf(), source })?;
        let config = match tokenizer_config_json {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| TokenizerError::Io { path: path.to_path_buf(), source })?;
                let value: JsonValue = serde_json::from_str(&text).map_err(|source| TokenizerError::Json { path: path.to_path_buf(), source })?;
                Some((path, value))
            }
            None => None,
        };
        let config_path = tokenizer_config_json.unwrap_or(tokenizer_json).to_path_buf();

        let role = |field: &'static str| -> Result<Option<u32>, TokenizerError> {
            let Some((path, value)) = &config else {
                return Ok(None);
            };
            let token = match value.get(field) {
                None | Some(JsonValue::Null) => return Ok(None),
                Some(JsonValue::String(s)) => s.as_str(),
                Some(obj) => {
                    obj.get("content").and_then(JsonValue::as_str).ok_or_else(|| TokenizerError::BadConfigToken { path: path.to_path_buf(), field })?
                }
            };
            inner.token_to_id(token).map(Some).ok_or_else(|| TokenizerError::TokenNotInVocab { path: path.to_path_buf(), field, token: token.to_string() })
        };
        let first_known = |names: &[&str]| names.iter().find_map(|t| inner.token_to_id(t));
        let bos_id = match role("bos_token")? {
            Some(id) => Some(id),
            None => first_known(&BOS_FALLBACK),
        };
        let eos_id = match role("eos_token")? {
            Some(id) => id,
            None => first_known(&EOS_FALLBACK).ok_or(TokenizerError::NoEos { path: config_path })?,
        };
        let pad_id = role("pad_token")?;
        let settings = config.as_ref().map(|(_, v)| v);
        let add_bos = settings.and_then(|v| v.get("add_bos_token")).and_then(JsonValue::as_bool).unwrap_or(false);
        let model_max_length = settings
            .and_then(|v| v.get("model_max_length"))
            .and_then(JsonValue::as_f64)
            .filter(|n| *n >= 1.0 && *n <= MAX_SENSIBLE_CONTEXT)
            .map(|n| n as usize);

        let mut added: Vec<(u32, AddedToken)> = inner.get_added_tokens_decoder().into_iter().filter(|(_, t)| t.special).collect();
        added.sort_by_key(|(id, _)| *id);
        let special_tokens: Vec<String> = added.into_iter().map(|(_, t)| t.content).collect();
        let mut stop_ids: BTreeSet<u32> = STOP_TOKENS.iter().filter(|t| special_tokens.iter().any(|s| s == *t)).filter_map(|t| inner.token_to_id(t)).collect();
        stop_ids.insert(eos_id);
        let vocab_size = inner.get_vocab_size(true);
        Ok(Self {
            inner,
            bos_id,
            eos_id,
            pad_id,
            stop_ids: stop_ids.into_iter().collect(),
            special_tokens,
            vocab_size,
            add_bos,
            model_max_length,
            plain: Default::default(),
        })
    }

    /// Special tokens written in the text (as rendered chat templates do) become their single ids.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, TokenizerError> {
        let encoding = self.inner.encode(text, false).map_err(TokenizerError::Encode)?;
        Ok(encoding.get_ids().to_vec())
    }

    /// Encodes `text` with no special-token parsing: `<|im_end|>` written in it becomes ordinary tokens.
    pub fn encode_plain(&self, text: &str) -> Result<Vec<u32>, TokenizerError> {
        let plain = self.plain.get_or_init(|| {
            let mut t = self.inner.clone();
            t.set_encode_special_tokens(true);
            t
        });
        Ok(plain.encode(text, false).map_err(TokenizerError::Encode)?.get_ids().to_vec())
    }

    /// Whether `text` spells one of the special tokens.
    pub fn mentions_special(&self, text: &str) -> bool {
        self.special_tokens.iter().any(|s| text.contains(s.as_str()))
    }

    /// Encodes text made of trusted parts (a chat template's own text: its special tokens become special ids)
    /// and untrusted parts (message content: tokenized as plain text, whatever it spells). Without special-token
    /// text in the untrusted parts this is exactly `encode` of the concatenation; with it, the text between two
    /// trusted special tokens is encoded as one plain piece, as `encode` would split it.
    pub fn encode_segments(&self, segments: &[(&str, bool)]) -> Result<Vec<u32>, TokenizerError> {
        if !segments.iter().any(|(s, trusted)| !trusted && self.mentions_special(s)) {
            return self.encode(&segments.iter().map(|(s, _)| *s).collect::<String>());
        }
        self.encode_pieces(segments)
    }

    /// [`Tokenizer::encode_segments`] without its shortcut: always split at the trusted special tokens.
    pub fn encode_pieces(&self, segments: &[(&str, bool)]) -> Result<Vec<u32>, TokenizerError> {
        let mut ids = Vec::new();
        let mut piece = String::new();
        for &(text, trusted) in segments {
            if !trusted {
                piece.push_str(text);
                continue;
            }
            let mut rest = text;
            while let Some((at, special)) = self.first_special(rest) {
                piece.push_str(&rest[..at]);
                ids.extend(self.encode_plain(&piece)?);
                piece.clear();
                ids.push(self.token_to_id(special).ok_or_else(|| TokenizerError::Encode(format!("special token {special} has no id").into()))?);
                rest = &rest[at + special.len()..];
            }
            piece.push_str(rest);
        }
        ids.extend(self.encode_plain(&piece)?);
        Ok(ids)
    }

    /// The leftmost special token in `text` (the longest one at that position).
    fn first_special(&self, text: &str) -> Option<(usize, &str)> {
        self.special_tokens.iter().filter_map(|s| text.find(s.as_str()).map(|at| (at, s.as_str()))).min_by(|a, b| a.0.cmp(&b.0).then(b.1.len().cmp(&a.1.len())))
    }

    /// Unknown ids are an error rather than silently dropped, so a model/tokenizer mismatch shows up.
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String, TokenizerError> {
        if let Some(&id) = ids.iter().find(|&&id| id as usize >= self.vocab_size) {
            return Err(TokenizerError::UnknownId { id, vocab_size: self.vocab_size });
        }
        self.inner.decode(ids, skip_special).map_err(TokenizerError::Decode)
    }

    /// The raw vocabulary string (byte-level form, e.g. `Ġthe`, or SentencePiece form, e.g. `▁the`), not
    /// decoded text.
    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// Whether generation should end at `id`: end-of-sequence or any end-of-turn token.
    pub fn is_stop(&self, id: u32) -> bool {
        self.stop_ids.binary_search(&id).is_ok()
    }

    pub fn bos_id(&self) -> Option<u32> {
        self.bos_id
    }

    pub fn eos_id(&self) -> u32 {
        self.eos_id
    }

    pub fn pad_id(&self) -> Option<u32> {
        self.pad_id
    }

    /// For chat templates, which take `bos_token` as text.
    pub fn bos_token(&self) -> Option<String> {
        self.bos_id.and_then(|id| self.id_to_token(id))
    }

    /// For chat templates, which take `eos_token` as text.
    pub fn eos_token(&self) -> Option<String> {
        self.id_to_token(self.eos_id)
    }

    /// Sorted ids that end generation.
    pub fn stop_ids(&self) -> &[u32] {
        &self.stop_ids
    }

    /// Special (control) token strings in id order.
    pub fn special_tokens(&self) -> &[String] {
        &self.special_tokens
    }

    /// Number of ids the tokenizer can produce or decode (GGUF: length of `tokenizer.ggml.tokens`).
    pub fn vocab_size(&self) -> usize {
        self.vocab_size
    }

    /// Whether the model expects BOS first; `encode` never adds it, templates do.
    pub fn add_bos(&self) -> bool {
        self.add_bos
    }

    /// Context length recorded with the tokenizer, if any.
    pub fn model_max_length(&self) -> Option<usize> {
        self.model_max_length
    }

    /// Escape hatch for streaming decode and offsets.
    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }

    /// `tokenizer.json` for a GGUF -> Hugging Face export; `tokenizers` and `transformers` load it as is.
    pub fn to_tokenizer_json(&self) -> Result<String, TokenizerError> {
        self.inner.to_string(true).map_err(TokenizerError::Serialize)
    }

    /// `tokenizer_config.json` to go with [`Self::to_tokenizer_json`].
    ///
    /// `clean_up_tokenization_spaces` is false because the transformers default (true in older versions)
    /// deletes spaces before punctuation and breaks the byte-level round trip.
    pub fn tokenizer_config_json(&self, chat_template: Option<&str>) -> JsonValue {
        let token = |id: Option<u32>| id.and_then(|id| self.id_to_token(id));
        let mut config = json!({
            "add_bos_token": self.add_bos,
            "add_eos_token": false,
            "bos_token": token(self.bos_id),
            "eos_token": token(Some(self.eos_id)),
            "pad_token": token(self.pad_id),
            "clean_up_tokenization_spaces": false,
            "tokenizer_class": "PreTrainedTokenizerFast",
        });
        if let Some(obj) = config.as_object_mut() {
            if let Some(template) = chat_template {
                obj.insert("chat_template".into(), json!(template));
            }
            if let Some(n) = self.model_max_length {
                obj.insert("model_max_length".into(), json!(n));
            }
        }
        config
    }

    /// Hugging Face adds BOS in the post-processor when `encode(..., add_special_tokens=True)`, so an
    /// exported tokenizer for an `add_bos` model must carry it; our own `encode` never runs it. Without BOS a
    /// byte-level tokenizer keeps the ByteLevel post-processor (it trims offsets), a SentencePiece one none.
    fn set_bos_post_processor(&mut self, byte_level: bool) -> tokenizers::Result<()> {
        let bos = match (self.add_bos, self.bos_id.and_then(|id| self.id_to_token(id).map(|t| (t, id)))) {
            (true, Some(bos)) => bos,
            _ => {
                let processor = byte_level.then(|| PostProcessorWrapper::ByteLevel(ByteLevel::new(false, false, true)));
                self.inner.with_post_processor(processor);
                return Ok(());
            }
        };
        let template = TemplateProcessing::builder()
            .try_single(vec![bos.0.as_str(), "$A:0"])?
            .try_pair(vec![bos.0.as_str(), "$A:0", &format!("{}:1", bos.0), "$B:1"])?
            .special_tokens(vec![(bos.0.clone(), bos.1)])
            .build()?;
        self.inner.with_post_processor(Some(PostProcessorWrapper::Template(template)));
        Ok(())
    }
}

mod from_gguf;
mod spm;
#[cfg(test)]
mod tests;
mod to_gguf;
