//! The tokenizer rebuilt from GGUF metadata (see the parent module for why it is built by hand).
use super::*;

impl Tokenizer {
    /// Rebuilds the tokenizer from GGUF metadata (`Content::metadata`).
    ///
    /// `tokenizer.ggml.model` picks the kind: "gpt2" is byte-level BPE with `tokenizer.ggml.merges`, "llama" is
    /// SentencePiece BPE with `tokenizer.ggml.scores` (see the `spm` module).
    ///
    /// Byte-level pre-tokenizer by `tokenizer.ggml.pre`, as in llama.cpp:
    /// - `smollm` (also `starcoder`, `refact`, `command-r`, `codeshell`, `exaone`): digits split one by
    ///   one, then byte-level with the GPT-2 regex, no prefix space;
    /// - `llama-bpe` (also `dbrx`, `smaug-bpe`): Llama 3 regex split, then byte-level without regex;
    /// - `qwen2` (also `stablelm2`): NFC, Qwen2 regex split, then byte-level without regex;
    /// - anything else, or no `pre` at all: GPT-2 byte-level (its own regex, no prefix space). This is
    ///   llama.cpp's "default" too; it is exact for GPT-2-style vocabularies and close for the rest, and we
    ///   accept it silently rather than refuse a model that is probably fine.
    ///
    /// Control and unknown tokens (types 3 and 2) become special added tokens, user-defined ones (type 4)
    /// plain added tokens, so all are matched in text before BPE runs; as in llama.cpp, `encode_plain` still
    /// matches the user-defined ones.
    pub fn from_gguf(metadata: &HashMap<String, GgufValue>) -> Result<Self, TokenizerError> {
        let model = gguf_str(metadata, "tokenizer.ggml.model")?;
        let sentencepiece = match model {
            "gpt2" => false,
            "llama" => true,
            _ => return Err(TokenizerError::UnsupportedModel(model.to_string())),
        };
        let tokens = gguf_str_array(metadata, "tokenizer.ggml.tokens")?;
        let vocab_size = tokens.len();
        let token_types = match metadata.get("tokenizer.ggml.token_type") {
            Some(_) => gguf_int_array(metadata, "tokenizer.ggml.token_type")?,
            None => vec![1; vocab_size],
        };
        if token_types.len() != vocab_size {
            return Err(TokenizerError::LengthMismatch { field: "tokenizer.ggml.token_type", len: token_types.len(), vocab_size });
        }

        // A duplicated token string keeps its first id; later copies are unreachable by encoding.
        let mut vocab = Vocab::default();
        for (id, token) in tokens.iter().enumerate() {
            vocab.entry(token.to_string()).or_insert(id as u32);
        }
        let mut inner = if sentencepiece { spm::sentencepiece_bpe(metadata, &tokens, vocab)? } else { byte_level_bpe(metadata, vocab)? };

        let mut special = Vec::new();
        let mut user_defined = Vec::new();
        for (id, (token, kind)) in tokens.iter().zip(&token_types).enumerate() {
            match *kind {
                TOKEN_TYPE_CONTROL | TOKEN_TYPE_UNKNOWN => special.push((id as u32, token.to_string())),
                TOKEN_TYPE_USER_DEFINED => user_defined.push(token.to_string()),
                _ => {}
            }
        }
        inner.add_special_tokens(special.iter().map(|(_, t)| AddedToken::from(t.clone(), true))).map_err(TokenizerError::Build)?;
        inner.add_tokens(user_defined.into_iter().map(|t| AddedToken::from(t, false).normalized(false))).map_err(TokenizerError::Build)?;

        let bos_id = gguf_opt_id(metadata, "tokenizer.ggml.bos_token_id", vocab_size)?;
        let eos_id = gguf_opt_id(metadata, "tokenizer.ggml.eos_token_id", vocab_size)?
            .ok_or_else(|| TokenizerError::MissingField { field: "tokenizer.ggml.eos_token_id".into() })?;
        let pad_id = gguf_opt_id(metadata, "tokenizer.ggml.padding_token_id", vocab_size)?;
        let extra_stops =
            [gguf_opt_id(metadata, "tokenizer.ggml.eot_token_id", vocab_size)?, gguf_opt_id(metadata, "tokenizer.ggml.eom_token_id", vocab_size)?];
        // llama.cpp's defaults when the key is absent: SentencePiece models start with BOS, byte-level ones do not.
        let add_bos = gguf_opt_bool(metadata, "tokenizer.ggml.add_bos_token")?.unwrap_or(sentencepiece);
        let model_max_length = match metadata.get("general.architecture") {
            Some(GgufValue::String(arch)) => gguf_opt_int(metadata, &format!("{arch}.context_length"))?.map(|n| n as usize),
            _ => None,
        };

        let special_tokens: Vec<String> = special.into_iter().map(|(_, t)| t).collect();
        let mut stop_ids: BTreeSet<u32> = extra_stops.into_iter().flatten().collect();
        stop_ids.insert(eos_id);
        stop_ids.extend(STOP_TOKENS.iter().filter(|t| special_tokens.iter().any(|s| s == *t)).filter_map(|t| inner.token_to_id(t)));
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
            plain: Default::default(),
        };
        tokenizer.set_bos_post_processor(!sentencepiece).map_err(TokenizerError::Build)?;
        Ok(tokenizer)
    }
}

/// The byte-level BPE of a "gpt2" GGUF: merges from `tokenizer.ggml.merges`, pre-tokenizer by `tokenizer.ggml.pre`.
fn byte_level_bpe(metadata: &HashMap<String, GgufValue>, vocab: Vocab) -> Result<tokenizers::Tokenizer, TokenizerError> {
    let merges = gguf_str_array(metadata, "tokenizer.ggml.merges")?
        .into_iter()
        .enumerate()
        .map(|(index, merge)| match merge.split_once(' ') {
            Some((a, b)) if !a.is_empty() && !b.is_empty() && !b.contains(' ') => Ok((a.to_string(), b.to_string())),
            _ => Err(TokenizerError::BadMerge { index, merge: merge.to_string() }),
        })
        .collect::<Result<Vec<_>, _>>()?;
    let pre = match metadata.get("tokenizer.ggml.pre") {
        Some(_) => gguf_str(metadata, "tokenizer.ggml.pre")?,
        None => "default",
    };
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
    Ok(inner)
}

type PreTokenizerParts = (Option<NormalizerWrapper>, PreTokenizerWrapper);

fn pre_tokenizer_for(pre: &str) -> tokenizers::Result<PreTokenizerParts> {
    let split = |regex: &str| -> tokenizers::Result<PreTokenizerWrapper> {
        Ok(Split::new(SplitPattern::Regex(regex.to_string()), SplitDelimiterBehavior::Isolated, false)?.into())
    };
    Ok(match pre {
        "smollm" | "starcoder" | "refact" | "command-r" | "codeshell" | "exaone" => {
            (None, Sequence::new(vec![Digits::new(true).into(), ByteLevel::new(false, true, true).into()]).into())
        }
        "llama-bpe" | "llama3" | "dbrx" | "smaug-bpe" => (None, Sequence::new(vec![split(LLAMA3_REGEX)?, ByteLevel::new(false, true, false).into()]).into()),
        "qwen2" | "stablelm2" => (Some(NFC.into()), Sequence::new(vec![split(QWEN2_REGEX)?, ByteLevel::new(false, false, false).into()]).into()),
        _ => (None, ByteLevel::new(false, true, true).into()),
    })
}

/// A token id field, checked against the vocabulary.
pub(super) fn gguf_opt_id(md: &HashMap<String, GgufValue>, field: &str, vocab_size: usize) -> Result<Option<u32>, TokenizerError> {
    match gguf_opt_int(md, field)? {
        None => Ok(None),
        Some(id) if (id as usize) < vocab_size => Ok(Some(id as u32)),
        Some(id) => Err(TokenizerError::IdOutOfRange { field: field.to_string(), id, vocab_size }),
    }
}

pub(super) fn gguf_opt_bool(md: &HashMap<String, GgufValue>, field: &str) -> Result<Option<bool>, TokenizerError> {
    match md.get(field) {
        None => Ok(None),
        Some(GgufValue::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(wrong_type(field, "a bool")),
    }
}

/// Scores are f32 in every writer we know; f64 is accepted too since it loses nothing that matters for ranking.
pub(super) fn gguf_float_array(md: &HashMap<String, GgufValue>, field: &str) -> Result<Vec<f64>, TokenizerError> {
    match gguf_get(md, field)? {
        GgufValue::Array(items) => items
            .iter()
            .map(|v| match *v {
                GgufValue::F32(x) => Ok(f64::from(x)),
                GgufValue::F64(x) => Ok(x),
                _ => Err(wrong_type(field, "an array of floats")),
            })
            .collect(),
        _ => Err(wrong_type(field, "an array of floats")),
    }
}

fn wrong_type(field: &str, expected: &'static str) -> TokenizerError {
    TokenizerError::WrongType { field: field.to_string(), expected }
}

fn gguf_get<'a>(md: &'a HashMap<String, GgufValue>, field: &str) -> Result<&'a GgufValue, TokenizerError> {
    md.get(field).ok_or_else(|| TokenizerError::MissingField { field: field.to_string() })
}

fn gguf_str<'a>(md: &'a HashMap<String, GgufValue>, field: &str) -> Result<&'a str, TokenizerError> {
    match gguf_get(md, field)? {
        GgufValue::String(s) => Ok(s),
        _ => Err(wrong_type(field, "a string")),
    }
}

fn gguf_str_array<'a>(md: &'a HashMap<String, GgufValue>, field: &str) -> Result<Vec<&'a str>, TokenizerError> {
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

fn gguf_int_array(md: &HashMap<String, GgufValue>, field: &str) -> Result<Vec<i64>, TokenizerError> {
    match gguf_get(md, field)? {
        GgufValue::Array(items) => items.iter().map(|v| int_value(v).ok_or_else(|| wrong_type(field, "an array of integers"))).collect(),
        _ => Err(wrong_type(field, "an array of integers")),
    }
}

/// Writers disagree on the integer width of ids (u32 is usual, some write i32 or u64), so accept any.
fn gguf_opt_int(md: &HashMap<String, GgufValue>, field: &str) -> Result<Option<u64>, TokenizerError> {
    match md.get(field) {
        None => Ok(None),
        Some(v) => int_value(v).and_then(|x| u64::try_from(x).ok()).map(Some).ok_or_else(|| wrong_type(field, "a non-negative integer")),
    }
}
