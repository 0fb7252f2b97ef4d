//! The tokenizer as GGUF `tokenizer.ggml.*` metadata, for models that came from a Hugging Face folder (a GGUF
//! source's own metadata is carried over as it is). What is written reads back through `from_gguf` as the same
//! tokenizer, and llama.cpp reads it as `convert_hf_to_gguf.py` would have written it:
//! - byte-level BPE becomes `tokenizer.ggml.model = "gpt2"` with its merges, and `tokenizer.ggml.pre` names the
//!   pre-tokenizer by what it does (the forms `from_gguf` rebuilds; any other is refused);
//! - SentencePiece-style BPE (byte fallback, `▁` for spaces) becomes `"llama"`. GGUF ranks pieces by score, not
//!   merges by rank, so each piece scores minus the rank of the first merge that makes it: the same order for
//!   tokenizers converted from SentencePiece, where all cuts of a piece share the piece's score.
use super::*;

/// llama.cpp `llama_token_type` values not named in the parent module.
const TOKEN_TYPE_NORMAL: i32 = 1;
const TOKEN_TYPE_BYTE: i32 = 6;

fn no_form(field: &'static str, why: impl Into<String>) -> TokenizerError {
    TokenizerError::NoGgufForm { field, why: why.into() }
}

fn strings(v: Vec<String>) -> GgufValue {
    GgufValue::Array(v.into_iter().map(GgufValue::String).collect())
}

/// A merge as `tokenizers` serializes it: `"a b"` (older files) or `["a", "b"]`.
fn merge_text(m: &JsonValue) -> Option<String> {
    match m {
        JsonValue::String(s) => Some(s.clone()),
        JsonValue::Array(p) => match (p.first().and_then(JsonValue::as_str), p.get(1).and_then(JsonValue::as_str)) {
            (Some(a), Some(b)) if p.len() == 2 => Some(format!("{a} {b}")),
            _ => None,
        },
        _ => None,
    }
}

/// `tokenizer.ggml.pre` for a byte-level pre-tokenizer, by what it does (the forms `from_gguf` rebuilds).
fn byte_level_pre(pre: &JsonValue, normalizer: &JsonValue) -> Result<&'static str, TokenizerError> {
    let kind = |v: &JsonValue| v.get("type").and_then(JsonValue::as_str).unwrap_or_default().to_string();
    let uses_regex = |v: &JsonValue| v.get("use_regex").and_then(JsonValue::as_bool).unwrap_or(true);
    let nfc = kind(normalizer) == "NFC";
    let parts: Vec<JsonValue> = match kind(pre).as_str() {
        "Sequence" => pre.get("pretokenizers").and_then(JsonValue::as_array).cloned().unwrap_or_default(),
        _ => vec![pre.clone()],
    };
    let kinds: Vec<String> = parts.iter().map(kind).collect();
    let found = match kinds.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        ["ByteLevel"] if uses_regex(&parts[0]) && !nfc => Some("gpt2"),
        ["Digits", "ByteLevel"] if parts[0].get("individual_digits") == Some(&JsonValue::Bool(true)) && uses_regex(&parts[1]) && !nfc => Some("smollm"),
        ["Split", "ByteLevel"] if !uses_regex(&parts[1]) => {
            let regex = parts[0].get("pattern").and_then(|p| p.get("Regex")).and_then(JsonValue::as_str).unwrap_or_default();
            match (regex, nfc) {
                (LLAMA3_REGEX, false) => Some("llama-bpe"),
                (QWEN2_REGEX, true) => Some("qwen2"),
                _ => None,
            }
        }
        _ => None,
    };
    found.ok_or_else(|| {
        no_form("pre_tokenizer", format!("{} is not one of the byte-level pre-tokenizers GGUF names (GPT-2, SmolLM, Llama 3, Qwen2)", kinds.join(" + ")))
    })
}

impl Tokenizer {
    /// The `tokenizer.ggml.*` keys for this tokenizer, its token list padded to `vocab_size` (the embedding's rows)
    /// with `[PADn]` tokens as llama.cpp's converter pads it.
    pub fn gguf_metadata(&self, vocab_size: usize) -> Result<Vec<(String, GgufValue)>, TokenizerError> {
        let json: JsonValue = serde_json::from_str(&self.to_tokenizer_json()?).map_err(|e| no_form("model", e.to_string()))?;
        let model = &json["model"];
        if model["type"].as_str() != Some("BPE") {
            return Err(no_form("model.type", format!("{} (only BPE tokenizers have a GGUF form here)", model["type"])));
        }
        let byte_fallback = model["byte_fallback"].as_bool().unwrap_or(false);
        let text = json.to_string();
        let byte_level = text.contains("\"ByteLevel\"");
        let sentencepiece = byte_fallback && text.contains(spm::SPACE) && !byte_level;
        if !byte_level && !sentencepiece {
            return Err(no_form("model", "neither byte-level BPE nor SentencePiece-style BPE (byte fallback with `▁` spaces)"));
        }
        let vocab = model["vocab"].as_object().ok_or_else(|| no_form("model.vocab", "is not an object"))?;
        let n = vocab_size.max(self.vocab_size);
        let mut tokens: Vec<Option<String>> = vec![None; n];
        let mut types = vec![TOKEN_TYPE_NORMAL; n];
        let mut put = |id: u64, token: &str, ty: i32| -> Result<(), TokenizerError> {
            let slot = tokens.get_mut(id as usize).ok_or_else(|| no_form("model.vocab", format!("id {id} of {token:?} is past the {n} embedding rows")))?;
            *slot = Some(token.to_string());
            types[id as usize] = ty;
            Ok(())
        };
        for (token, id) in vocab {
            let id = id.as_u64().ok_or_else(|| no_form("model.vocab", format!("{token:?} has no integer id")))?;
            let is_byte = sentencepiece && token.len() == 6 && token.starts_with("<0x") && token.ends_with('>');
            put(id, token, if is_byte { TOKEN_TYPE_BYTE } else { TOKEN_TYPE_NORMAL })?;
        }
        for added in json["added_tokens"].as_array().into_iter().flatten() {
            let (Some(id), Some(content)) = (added["id"].as_u64(), added["content"].as_str()) else {
                return Err(no_form("added_tokens", "an entry has no id or content"));
            };
            let ty = if added["special"].as_bool() == Some(true) { TOKEN_TYPE_CONTROL } else { TOKEN_TYPE_USER_DEFINED };
            put(id, content, ty as i32)?;
        }
        let unk = model["unk_token"].as_str().and_then(|t| self.token_to_id(t));
        if let Some(u) = unk {
            types[u as usize] = TOKEN_TYPE_UNKNOWN as i32;
        }
        let tokens: Vec<String> = tokens
            .into_iter()
            .enumerate()
            .map(|(i, t)| {
                t.unwrap_or_else(|| {
                    types[i] = TOKEN_TYPE_USER_DEFINED as i32;
                    format!("[PAD{i}]")
                })
            })
            .collect();
        let merges = model["merges"]
            .as_array()
            .into_iter()
            .flatten()
            .enumerate()
            .map(|(index, m)| merge_text(m).ok_or_else(|| TokenizerError::BadMerge { index, merge: m.to_string() }))
            .collect::<Result<Vec<_>, _>>()?;

        let mut md: Vec<(String, GgufValue)> = Vec::new();
        let mut add = |k: &str, v: GgufValue| md.push((k.to_string(), v));
        if sentencepiece {
            let ids: HashMap<&str, usize> = tokens.iter().enumerate().map(|(i, t)| (t.as_str(), i)).collect();
            let mut scores = vec![0f32; n];
            let mut scored = vec![false; n];
            for (rank, m) in merges.iter().enumerate() {
                if let Some(&id) = ids.get(m.replacen(' ', "", 1).as_str()) {
                    if !scored[id] {
                        (scores[id], scored[id]) = (-(rank as f32) - 1.0, true);
                    }
                }
            }
            let add_space_prefix = text.contains("\"Prepend\"") || json["pre_tokenizer"]["prepend_scheme"].as_str().is_some_and(|s| s != "never");
            add("tokenizer.ggml.model", GgufValue::String("llama".into()));
            add("tokenizer.ggml.pre", GgufValue::String("default".into()));
            add("tokenizer.ggml.tokens", strings(tokens));
            add("tokenizer.ggml.scores", GgufValue::Array(scores.into_iter().map(GgufValue::F32).collect()));
            add("tokenizer.ggml.add_space_prefix", GgufValue::Bool(add_space_prefix));
        } else {
            let pre = byte_level_pre(&json["pre_tokenizer"], &json["normalizer"])?;
            add("tokenizer.ggml.model", GgufValue::String("gpt2".into()));
            add("tokenizer.ggml.pre", GgufValue::String(pre.into()));
            add("tokenizer.ggml.tokens", strings(tokens));
            add("tokenizer.ggml.merges", strings(merges));
        }
        add("tokenizer.ggml.token_type", GgufValue::Array(types.into_iter().map(GgufValue::I32).collect()));
        if let Some(b) = self.bos_id {
            add("tokenizer.ggml.bos_token_id", GgufValue::U32(b));
        }
        add("tokenizer.ggml.eos_token_id", GgufValue::U32(self.eos_id));
        if let Some(u) = unk {
            add("tokenizer.ggml.unknown_token_id", GgufValue::U32(u));
        }
        if let Some(p) = self.pad_id {
            add("tokenizer.ggml.padding_token_id", GgufValue::U32(p));
        }
        add("tokenizer.ggml.add_bos_token", GgufValue::Bool(self.add_bos));
        add("tokenizer.ggml.add_eos_token", GgufValue::Bool(false));
        Ok(md)
    }
}
