//! Tokenizers: byte-level BPE rebuilt from GGUF metadata, or loaded from Hugging Face `tokenizer.json`.
//!
//! The GGUF path is built by hand because candle's `Tokenizer::from_gguf` adds a prefix space, which gives
//! SmolLM2 wrong ids after every special token and breaks the decode round trip. Here the pre-tokenizer is
//! chosen from `tokenizer.ggml.pre` the way llama.cpp does, so ids match llama.cpp and Hugging Face.
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
const STOP_TOKENS: [&str; 7] = [
    "<|im_end|>",
    "<|endoftext|>",
    "<|eot_id|>",
    "<|end_of_text|>",
    "<|eom_id|>",
    "<end_of_turn>",
    "<|end|>",
];

/// End-of-sequence candidates, in order of preference, for `tokenizer.json` files whose config names none.
/// Chat-turn ends come first because we generate chat turns.
const EOS_FALLBACK: [&str; 7] = [
    "<|im_end|>",
    "<|eot_id|>",
    "<|end_of_text|>",
    "<|endoftext|>",
    "</s>",
    "<eos>",
    "<|end|>",
];

/// Beginning-of-sequence candidates for `tokenizer.json` files whose config names none.
const BOS_FALLBACK: [&str; 3] = ["<|begin_of_text|>", "<s>", "<bos>"];

/// GGUF `token_type` values (llama.cpp `llama_token_type`).
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
    WrongType {
        field: String,
        expected: &'static str,
    },
    #[error("unsupported tokenizer model {0} in GGUF (only \"gpt2\" byte-level BPE is supported)")]
    UnsupportedModel(String),
    #[error("GGUF `tokenizer.ggml.merges` entry {index} ({merge:?}) is not two tokens separated by a space")]
    BadMerge { index: usize, merge: String },
    #[error("GGUF `{field}` has {len} entries but `tokenizer.ggml.tokens` has {vocab_size}")]
    LengthMismatch {
        field: &'static str,
        len: usize,
        vocab_size: usize,
    },
    #[error("GGUF `{field}` = {id} is outside the vocabulary of {vocab_size} tokens")]
    IdOutOfRange {
        field: String,
        id: u64,
        vocab_size: usize,
    },
    #[error(
        "cannot build the byte-level BPE tokenizer from GGUF `tokenizer.ggml.tokens`/`merges`"
    )]
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
    TokenNotInVocab {
        path: PathBuf,
        field: &'static str,
        token: String,
    },
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
    /// Rebuilds the tokenizer from GGUF metadata (`Content::metadata`).
    ///
    /// Pre-tokenizer by `tokenizer.ggml.pre`, as in llama.cpp:
    /// - `smollm` (also `starcoder`, `refact`, `command-r`, `codeshell`, `exaone`): digits split one by
    ///   one, then byte-level with the GPT-2 regex, no prefix space;
    /// - `llama-bpe` (also `dbrx`, `smaug-bpe`): Llama 3 regex split, then byte-level without regex;
    /// - `qwen2` (also `stablelm2`): NFC, Qwen2 regex split, then byte-level without regex;
    /// - anything else, or no `pre` at all: GPT-2 byte-level (its own regex, no prefix space). This is
    ///   llama.cpp's "default" too; it is exact for GPT-2-style vocabularies and close for the rest, and we
    ///   accept it silently rather than refuse a model that is probably fine.
    ///
    /// Control tokens (type 3) become special added tokens, user-defined ones (type 4) plain added
    /// tokens, so both are matched in text before BPE runs.
    pub fn from_gguf(metadata: &HashMap<String, GgufValue>) -> Result<Self, TokenizerError> {
        let model = gguf_str(metadata, "tokenizer.ggml.model")?;
        if model != "gpt2" {
            return Err(TokenizerError::UnsupportedModel(model.to_string()));
        }
        let tokens = gguf_str_array(metadata, "tokenizer.ggml.tokens")?;
        let vocab_size = tokens.len();
        let merges = gguf_str_array(metadata, "tokenizer.ggml.merges")?
            .into_iter()
            .enumerate()
            .map(|(index, merge)| match merge.split_once(' ') {
                Some((a, b)) if !a.is_empty() && !b.is_empty() && !b.contains(' ') => {
                    Ok((a.to_string(), b.to_string()))
                }
                _ => Err(TokenizerError::BadMerge {
                    index,
                    merge: merge.to_string(),
                }),
            })
            .collect::<Result<Vec<_>, _>>()?;
        let token_types = match metadata.get("tokenizer.ggml.token_type") {
            Some(_) => gguf_int_array(metadata, "tokenizer.ggml.token_type")?,
            None => vec![1; vocab_size],
        };
        if token_types.len() != vocab_size {
            return Err(TokenizerError::LengthMismatch {
                field: "tokenizer.ggml.token_type",
                len: token_types.len(),
                vocab_size,
            });
        }
        let pre = match metadata.get("tokenizer.ggml.pre") {
            Some(_) => gguf_str(metadata, "tokenizer.ggml.pre")?,
            None => "default",
        };

        // A duplicated token string keeps its first id; later copies are unreachable by encoding.
        let mut vocab = Vocab::default();
        for (id, token) in tokens.iter().enumerate() {
            vocab.entry(token.to_string()).or_insert(id as u32);
        }
        let bpe = BPE::builder()
            .vocab_and_merges(vocab, merges)
            // Llama 3 looks a whole pre-token up in the vocabulary before merging (llama.cpp does the same).
            .ignore_merges(matches!(pre, "llama-bpe" | "llama3" | "dbrx" | "smaug-bpe"))
            .build()
            .map_err(TokenizerError::Build)?;
        let mut inner = tokenizers::Tokenizer::new(bpe);
        let (normalizer, pre_tokenizer) = pre_tokenizer_for(pre).map_err(TokenizerError::Build)?;
        inner
            .with_normalizer(normalizer)
            .map_err(TokenizerError::Build)?
            .with_pre_tokenizer(Some(pre_tokenizer))
            .with_decoder(Some(DecoderWrapper::ByteLevel(ByteLevel::default())));

        let mut special = Vec::new();
        let mut user_defined = Vec::new();
        for (id, (token, kind)) in tokens.iter().zip(&token_types).enumerate() {
            match *kind {
                TOKEN_TYPE_CONTROL => special.push((id as u32, token.to_string())),
                TOKEN_TYPE_USER_DEFINED => user_defined.push(token.to_string()),
                _ => {}
            }
        }
        inner
            .add_special_tokens(
                special
                    .iter()
                    .map(|(_, t)| AddedToken::from(t.clone(), true)),
            )
            .map_err(TokenizerError::Build)?;
        inner
            .add_tokens(
                user_defined
                    .into_iter()
                    .map(|t| AddedToken::from(t, false).normalized(false)),
            )
            .map_err(TokenizerError::Build)?;

        let id_field = |field: &str| -> Result<Option<u32>, TokenizerError> {
            match gguf_opt_int(metadata, field)? {
                None => Ok(None),
                Some(id) if (id as usize) < vocab_size => Ok(Some(id as u32)),
                Some(id) => Err(TokenizerError::IdOutOfRange {
                    field: field.to_string(),
                    id,
                    vocab_size,
                }),
            }
        };
        let bos_id = id_field("tokenizer.ggml.bos_token_id")?;
        let eos_id = id_field("tokenizer.ggml.eos_token_id")?.ok_or_else(|| {
            TokenizerError::MissingField {
                field: "tokenizer.ggml.eos_token_id".into(),
            }
        })?;
        let pad_id = id_field("tokenizer.ggml.padding_token_id")?;
        let extra_stops = [
            id_field("tokenizer.ggml.eot_token_id")?,
            id_field("tokenizer.ggml.eom_token_id")?,
        ];
        let add_bos = match metadata.get("tokenizer.ggml.add_bos_token") {
            Some(GgufValue::Bool(b)) => *b,
            Some(_) => return Err(wrong_type("tokenizer.ggml.add_bos_token", "a bool")),
            None => false,
        };
        let model_max_length = match metadata.get("general.architecture") {
            Some(GgufValue::String(arch)) => {
                gguf_opt_int(metadata, &format!("{arch}.context_length"))?.map(|n| n as usize)
            }
            _ => None,
        };

        let special_tokens: Vec<String> = special.into_iter().map(|(_, t)| t).collect();
        let mut stop_ids: BTreeSet<u32> = extra_stops.into_iter().flatten().collect();
        stop_ids.insert(eos_id);
        stop_ids.extend(
            STOP_TOKENS
                .iter()
                .filter(|t| special_tokens.iter().any(|s| s == *t))
                .filter_map(|t| inner.token_to_id(t)),
        );
        let mut tokenizer = Self {
            inner,
            bos_id,
            eos_id,
            pad_id,
            stop_ids: stop_ids.into_iter().collect(),
            special_tokens,
            vocab_size,
            add_bos,
            model_max_length,
        };
        tokenizer
            .set_bos_post_processor()
            .map_err(TokenizerError::Build)?;
        Ok(tokenizer)
    }

    /// Loads a Hugging Face `tokenizer.json`, taking token roles from `tokenizer_config.json` when given.
    ///
    /// `bos_token`/`eos_token`/`pad_token` may be strings or `{"content": ...}` objects. Without a config
    /// (or without `eos_token` in it) the roles are guessed from well-known special tokens; a tokenizer with
    /// no recognisable end-of-sequence token is an error, because generation could never stop.
    pub fn from_files(
        tokenizer_json: &Path,
        tokenizer_config_json: Option<&Path>,
    ) -> Result<Self, TokenizerError> {
        let inner = tokenizers::Tokenizer::from_file(tokenizer_json).map_err(|source| {
            TokenizerError::Load {
                path: tokenizer_json.to_path_buf(),
                source,
            }
        })?;
        let config = match tokenizer_config_json {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| TokenizerError::Io {
                    path: path.to_path_buf(),
                    source,
                })?;
                let value: JsonValue =
                    serde_json::from_str(&text).map_err(|source| TokenizerError::Json {
                        path: path.to_path_buf(),
                        source,
                    })?;
                Some((path, value))
            }
            None => None,
        };
        let config_path = tokenizer_config_json
            .unwrap_or(tokenizer_json)
            .to_path_buf();

        let role = |field: &'static str| -> Result<Option<u32>, TokenizerError> {
            let Some((path, value)) = &config else {
                return Ok(None);
            };
            let token = match value.get(field) {
                None | Some(JsonValue::Null) => return Ok(None),
                Some(JsonValue::String(s)) => s.as_str(),
                Some(obj) => obj
                    .get("content")
                    .and_then(JsonValue::as_str)
                    .ok_or_else(|| TokenizerError::BadConfigToken {
                        path: path.to_path_buf(),
                        field,
                    })?,
            };
            inner
                .token_to_id(token)
                .map(Some)
                .ok_or_else(|| TokenizerError::TokenNotInVocab {
                    path: path.to_path_buf(),
                    field,
                    token: token.to_string(),
                })
        };
        let first_known = |names: &[&str]| names.iter().find_map(|t| inner.token_to_id(t));
        let bos_id = match role("bos_token")? {
            Some(id) => Some(id),
            None => first_known(&BOS_FALLBACK),
        };
        let eos_id = match role("eos_token")? {
            Some(id) => id,
            None => {
                first_known(&EOS_FALLBACK).ok_or(TokenizerError::NoEos { path: config_path })?
            }
        };
        let pad_id = role("pad_token")?;
        let settings = config.as_ref().map(|(_, v)| v);
        let add_bos = settings
            .and_then(|v| v.get("add_bos_token"))
            .and_then(JsonValue::as_bool)
            .unwrap_or(false);
        let model_max_length = settings
            .and_then(|v| v.get("model_max_length"))
            .and_then(JsonValue::as_f64)
            .filter(|n| *n >= 1.0 && *n <= MAX_SENSIBLE_CONTEXT)
            .map(|n| n as usize);

        let mut added: Vec<(u32, AddedToken)> = inner
            .get_added_tokens_decoder()
            .into_iter()
            .filter(|(_, t)| t.special)
            .collect();
        added.sort_by_key(|(id, _)| *id);
        let special_tokens: Vec<String> = added.into_iter().map(|(_, t)| t.content).collect();
        let mut stop_ids: BTreeSet<u32> = STOP_TOKENS
            .iter()
            .filter(|t| special_tokens.iter().any(|s| s == *t))
            .filter_map(|t| inner.token_to_id(t))
            .collect();
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
        })
    }

    /// Special tokens written in the text (as rendered chat templates do) become their single ids.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, TokenizerError> {
        let encoding = self
            .inner
            .encode(text, false)
            .map_err(TokenizerError::Encode)?;
        Ok(encoding.get_ids().to_vec())
    }

    /// Unknown ids are an error rather than silently dropped, so a model/tokenizer mismatch shows up.
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String, TokenizerError> {
        if let Some(&id) = ids.iter().find(|&&id| id as usize >= self.vocab_size) {
            return Err(TokenizerError::UnknownId {
                id,
                vocab_size: self.vocab_size,
            });
        }
        self.inner
            .decode(ids, skip_special)
            .map_err(TokenizerError::Decode)
    }

    /// The raw vocabulary string (byte-level form, e.g. `Ġthe`), not decoded text.
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
        self.inner
            .to_string(true)
            .map_err(TokenizerError::Serialize)
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
    /// exported tokenizer for an `add_bos` model must carry it; our own `encode` never runs it.
    fn set_bos_post_processor(&mut self) -> tokenizers::Result<()> {
        let bos = match (
            self.add_bos,
            self.bos_id
                .and_then(|id| self.id_to_token(id).map(|t| (t, id))),
        ) {
            (true, Some(bos)) => bos,
            _ => {
                self.inner
                    .with_post_processor(Some(PostProcessorWrapper::ByteLevel(ByteLevel::new(
                        false, false, true,
                    ))));
                return Ok(());
            }
        };
        let template = TemplateProcessing::builder()
            .try_single(vec![bos.0.as_str(), "$A:0"])?
            .try_pair(vec![
                bos.0.as_str(),
                "$A:0",
                &format!("{}:1", bos.0),
                "$B:1",
            ])?
            .special_tokens(vec![(bos.0.clone(), bos.1)])
            .build()?;
        self.inner
            .with_post_processor(Some(PostProcessorWrapper::Template(template)));
        Ok(())
    }
}

type PreTokenizerParts = (Option<NormalizerWrapper>, PreTokenizerWrapper);

fn pre_tokenizer_for(pre: &str) -> tokenizers::Result<PreTokenizerParts> {
    let split = |regex: &str| -> tokenizers::Result<PreTokenizerWrapper> {
        Ok(Split::new(
            SplitPattern::Regex(regex.to_string()),
            SplitDelimiterBehavior::Isolated,
            false,
        )?
        .into())
    };
    Ok(match pre {
        "smollm" | "starcoder" | "refact" | "command-r" | "codeshell" | "exaone" => (
            None,
            Sequence::new(vec![
                Digits::new(true).into(),
                ByteLevel::new(false, true, true).into(),
            ])
            .into(),
        ),
        "llama-bpe" | "llama3" | "dbrx" | "smaug-bpe" => (
            None,
            Sequence::new(vec![
                split(LLAMA3_REGEX)?,
                ByteLevel::new(false, true, false).into(),
            ])
            .into(),
        ),
        "qwen2" | "stablelm2" => (
            Some(NFC.into()),
            Sequence::new(vec![
                split(QWEN2_REGEX)?,
                ByteLevel::new(false, false, false).into(),
            ])
            .into(),
        ),
        _ => (None, ByteLevel::new(false, true, true).into()),
    })
}

fn wrong_type(field: &str, expected: &'static str) -> TokenizerError {
    TokenizerError::WrongType {
        field: field.to_string(),
        expected,
    }
}

fn gguf_get<'a>(
    md: &'a HashMap<String, GgufValue>,
    field: &str,
) -> Result<&'a GgufValue, TokenizerError> {
    md.get(field).ok_or_else(|| TokenizerError::MissingField {
        field: field.to_string(),
    })
}

fn gguf_str<'a>(
    md: &'a HashMap<String, GgufValue>,
    field: &str,
) -> Result<&'a str, TokenizerError> {
    match gguf_get(md, field)? {
        GgufValue::String(s) => Ok(s),
        _ => Err(wrong_type(field, "a string")),
    }
}

fn gguf_str_array<'a>(
    md: &'a HashMap<String, GgufValue>,
    field: &str,
) -> Result<Vec<&'a str>, TokenizerError> {
    match gguf_get(md, field)? {
        GgufValue::Array(items) => items
            .iter()
            .map(|v| match v {
                GgufValue::String(s) => Ok(s.as_str()),
                _ => Err(wrong_type(field, "an array of strings")),
            })
            .collect(),
        _ => Err(wrong_type(field, "an array of strings")),
    }
}

fn int_value(v: &GgufValue) -> Option<i64> {
    Some(match *v {
        GgufValue::U8(x) => x.into(),
        GgufValue::I8(x) => x.into(),
        GgufValue::U16(x) => x.into(),
        GgufValue::I16(x) => x.into(),
        GgufValue::U32(x) => x.into(),
        GgufValue::I32(x) => x.into(),
        GgufValue::U64(x) => i64::try_from(x).ok()?,
        GgufValue::I64(x) => x,
        _ => return None,
    })
}

fn gguf_int_array(
    md: &HashMap<String, GgufValue>,
    field: &str,
) -> Result<Vec<i64>, TokenizerError> {
    match gguf_get(md, field)? {
        GgufValue::Array(items) => items
            .iter()
            .map(|v| int_value(v).ok_or_else(|| wrong_type(field, "an array of integers")))
            .collect(),
        _ => Err(wrong_type(field, "an array of integers")),
    }
}

/// Writers disagree on the integer width of ids (u32 is usual, some write i32 or u64), so accept any.
fn gguf_opt_int(
    md: &HashMap<String, GgufValue>,
    field: &str,
) -> Result<Option<u64>, TokenizerError> {
    match md.get(field) {
        None => Ok(None),
        Some(v) => int_value(v)
            .and_then(|x| u64::try_from(x).ok())
            .map(Some)
            .ok_or_else(|| wrong_type(field, "a non-negative integer")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A hand-made byte-level vocabulary: 3 control tokens, all 256 byte symbols, a few merges, one
    /// user-defined token. Small enough to reason about ids by hand, complete enough to encode any text.
    fn tiny_metadata(pre: &str) -> HashMap<String, GgufValue> {
        let mut tokens: Vec<String> = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
            .map(String::from)
            .to_vec();
        let mut alphabet: Vec<char> = ByteLevel::alphabet().into_iter().collect();
        alphabet.sort();
        tokens.extend(alphabet.iter().map(|c| c.to_string()));
        let merges = [
            "h e", "l l", "he ll", "hell o", "Ġ w", "o r", "Ġw or", "l d", "Ġwor ld", "3 4", "1 2",
            "12 3",
        ];
        for m in merges {
            tokens.push(m.replace(' ', ""));
        }
        tokens.push("<tool_call>".into());
        let mut types = vec![1i32; tokens.len()];
        types[..3].fill(3);
        *types.last_mut().unwrap() = 4;
        let strings =
            |v: Vec<String>| GgufValue::Array(v.into_iter().map(GgufValue::String).collect());
        HashMap::from([
            (
                "tokenizer.ggml.model".into(),
                GgufValue::String("gpt2".into()),
            ),
            ("tokenizer.ggml.pre".into(), GgufValue::String(pre.into())),
            ("tokenizer.ggml.tokens".into(), strings(tokens)),
            (
                "tokenizer.ggml.merges".into(),
                strings(merges.map(String::from).to_vec()),
            ),
            (
                "tokenizer.ggml.token_type".into(),
                GgufValue::Array(types.into_iter().map(GgufValue::I32).collect()),
            ),
            ("tokenizer.ggml.bos_token_id".into(), GgufValue::U32(1)),
            ("tokenizer.ggml.eos_token_id".into(), GgufValue::U32(2)),
            ("tokenizer.ggml.padding_token_id".into(), GgufValue::U32(2)),
            (
                "tokenizer.ggml.add_bos_token".into(),
                GgufValue::Bool(false),
            ),
        ])
    }

    fn tiny(pre: &str) -> Tokenizer {
        Tokenizer::from_gguf(&tiny_metadata(pre)).unwrap()
    }

    fn ids_of(t: &Tokenizer, tokens: &[&str]) -> Vec<u32> {
        tokens
            .iter()
            .map(|s| {
                t.token_to_id(s)
                    .unwrap_or_else(|| panic!("{s} not in vocab"))
            })
            .collect()
    }

    #[test]
    fn merges_apply_without_prefix_space() {
        let t = tiny("smollm");
        assert_eq!(
            t.encode("hello world").unwrap(),
            ids_of(&t, &["hello", "Ġworld"])
        );
        assert_eq!(
            t.decode(&t.encode("hello world").unwrap(), false).unwrap(),
            "hello world"
        );
    }

    #[test]
    fn special_tokens_in_text_become_single_ids() {
        let t = tiny("smollm");
        let ids = t.encode("<|im_start|>hello<|im_end|>\n").unwrap();
        assert_eq!(
            ids,
            [vec![1], ids_of(&t, &["hello"]), vec![2], ids_of(&t, &["Ċ"])].concat()
        );
        assert_eq!(t.decode(&ids, true).unwrap(), "hello\n");
        assert_eq!(
            t.decode(&ids, false).unwrap(),
            "<|im_start|>hello<|im_end|>\n"
        );
    }

    #[test]
    fn user_defined_tokens_match_but_are_not_special() {
        let t = tiny("smollm");
        let call = t.token_to_id("<tool_call>").unwrap();
        let ids = t.encode("he<tool_call>he").unwrap();
        assert_eq!(
            ids,
            vec![ids_of(&t, &["he"])[0], call, ids_of(&t, &["he"])[0]]
        );
        assert_eq!(t.decode(&ids, true).unwrap(), "he<tool_call>he");
        assert!(!t.special_tokens().contains(&"<tool_call>".to_string()));
    }

    #[test]
    fn pre_tokenizer_follows_gguf_pre() {
        // Merge ranks: "3 4" < "1 2" < "12 3". Each pre-tokenizer cuts "1234" differently.
        let cases = [
            ("smollm", vec!["1", "2", "3", "4"]),
            ("qwen2", vec!["1", "2", "3", "4"]),
            ("llama-bpe", vec!["123", "4"]),
            ("gpt2", vec!["12", "34"]),
            ("some-future-pre", vec!["12", "34"]),
        ];
        for (pre, expected) in cases {
            let t = tiny(pre);
            assert_eq!(
                t.encode("1234").unwrap(),
                ids_of(&t, &expected),
                "pre = {pre}"
            );
            assert_eq!(
                t.encode(" hello").unwrap(),
                ids_of(&t, &["Ġ", "hello"]),
                "pre = {pre}"
            );
        }
    }

    #[test]
    fn qwen2_normalizes_to_nfc() {
        let t = tiny("qwen2");
        assert_eq!(t.encode("e\u{301}").unwrap(), t.encode("\u{e9}").unwrap());
    }

    #[test]
    fn roles_and_stops_come_from_metadata() {
        let t = tiny("smollm");
        assert_eq!((t.bos_id(), t.eos_id(), t.pad_id()), (Some(1), 2, Some(2)));
        assert_eq!(t.stop_ids(), &[0, 2]);
        assert!(t.is_stop(0) && t.is_stop(2) && !t.is_stop(1));
        assert_eq!(
            t.special_tokens(),
            &["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
        );
        assert_eq!(t.vocab_size(), 3 + 256 + 12 + 1);
        assert_eq!(t.eos_token().as_deref(), Some("<|im_end|>"));
    }

    #[test]
    fn decode_rejects_ids_outside_vocab() {
        let t = tiny("smollm");
        let err = t.decode(&[5, 100_000], false).unwrap_err();
        assert!(err.to_string().contains("100000"), "{err}");
    }

    #[test]
    fn sentencepiece_models_are_refused_by_name() {
        let mut md = tiny_metadata("smollm");
        md.insert(
            "tokenizer.ggml.model".into(),
            GgufValue::String("llama".into()),
        );
        let err = Tokenizer::from_gguf(&md).unwrap_err();
        assert_eq!(
            err.to_string(),
            "unsupported tokenizer model llama in GGUF (only \"gpt2\" byte-level BPE is supported)"
        );
    }

    #[test]
    fn metadata_errors_name_the_field() {
        let mut md = tiny_metadata("smollm");
        md.remove("tokenizer.ggml.merges");
        assert!(Tokenizer::from_gguf(&md)
            .unwrap_err()
            .to_string()
            .contains("`tokenizer.ggml.merges`"));

        let mut md = tiny_metadata("smollm");
        md.insert(
            "tokenizer.ggml.merges".into(),
            GgufValue::Array(vec![GgufValue::String("hel".into())]),
        );
        assert!(Tokenizer::from_gguf(&md)
            .unwrap_err()
            .to_string()
            .contains("entry 0 (\"hel\")"));

        let mut md = tiny_metadata("smollm");
        md.insert("tokenizer.ggml.eos_token_id".into(), GgufValue::U32(9999));
        let msg = Tokenizer::from_gguf(&md).unwrap_err().to_string();
        assert!(
            msg.contains("tokenizer.ggml.eos_token_id") && msg.contains("9999"),
            "{msg}"
        );

        let mut md = tiny_metadata("smollm");
        md.insert(
            "tokenizer.ggml.token_type".into(),
            GgufValue::Array(vec![GgufValue::I32(1)]),
        );
        assert!(Tokenizer::from_gguf(&md)
            .unwrap_err()
            .to_string()
            .contains("`tokenizer.ggml.token_type` has 1 entries"));
    }

    #[test]
    fn hf_export_round_trips() {
        let t = tiny("llama-bpe");
        let dir = tempfile::tempdir().unwrap();
        let json_path = dir.path().join("tokenizer.json");
        let config_path = dir.path().join("tokenizer_config.json");
        std::fs::write(&json_path, t.to_tokenizer_json().unwrap()).unwrap();
        let config = t.tokenizer_config_json(Some("{{ bos_token }}"));
        assert_eq!(config["chat_template"], "{{ bos_token }}");
        assert_eq!(config["eos_token"], "<|im_end|>");
        std::fs::write(&config_path, config.to_string()).unwrap();
        let back = Tokenizer::from_files(&json_path, Some(&config_path)).unwrap();
        for text in [
            "<|im_start|>hello world<|im_end|>",
            "1234 he<tool_call>",
            " \n\tçé",
        ] {
            assert_eq!(
                back.encode(text).unwrap(),
                t.encode(text).unwrap(),
                "{text:?}"
            );
        }
        assert_eq!(
            (back.bos_id(), back.eos_id(), back.pad_id()),
            (t.bos_id(), t.eos_id(), t.pad_id())
        );
        assert_eq!(back.stop_ids(), t.stop_ids());
        assert_eq!(back.special_tokens(), t.special_tokens());
    }

    #[test]
    fn add_bos_models_export_a_bos_post_processor() {
        let mut md = tiny_metadata("llama-bpe");
        md.insert("tokenizer.ggml.add_bos_token".into(), GgufValue::Bool(true));
        let t = Tokenizer::from_gguf(&md).unwrap();
        assert_eq!(
            t.encode("hello").unwrap(),
            ids_of(&t, &["hello"]),
            "encode must not add BOS"
        );
        let with_special = t.inner().encode("hello", true).unwrap();
        assert_eq!(
            with_special.get_ids(),
            &[1, t.token_to_id("hello").unwrap()]
        );
    }

    #[test]
    fn from_files_guesses_roles_without_config() {
        let t = tiny("smollm");
        let dir = tempfile::tempdir().unwrap();
        let json_path = dir.path().join("tokenizer.json");
        std::fs::write(&json_path, t.to_tokenizer_json().unwrap()).unwrap();
        let back = Tokenizer::from_files(&json_path, None).unwrap();
        assert_eq!((back.bos_id(), back.eos_id()), (None, 2));

        let config_path = dir.path().join("tokenizer_config.json");
        std::fs::write(
            &config_path,
            r#"{"eos_token": {"content": "<|endoftext|>"}, "bos_token": "<|im_start|>"}"#,
        )
        .unwrap();
        let back = Tokenizer::from_files(&json_path, Some(&config_path)).unwrap();
        assert_eq!((back.bos_id(), back.eos_id()), (Some(1), 0));

        std::fs::write(&config_path, r#"{"eos_token": "<nope>"}"#).unwrap();
        let msg = Tokenizer::from_files(&json_path, Some(&config_path))
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("`eos_token`")
                && msg.contains("<nope>")
                && msg.contains("tokenizer_config.json"),
            "{msg}"
        );
    }
}
