use super::*;

/// A hand-made byte-level vocabulary: 3 control tokens, all 256 byte symbols, a few merges, one
/// user-defined token. Small enough to reason about ids by hand, complete enough to encode any text.
fn tiny_metadata(pre: &str) -> HashMap<String, GgufValue> {
    let mut tokens: Vec<String> = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"].map(String::from).to_vec();
    let mut alphabet: Vec<char> = ByteLevel::alphabet().into_iter().collect();
    alphabet.sort();
    tokens.extend(alphabet.iter().map(|c| c.to_string()));
    let merges = ["h e", "l l", "he ll", "hell o", "Ġ w", "o r", "Ġw or", "l d", "Ġwor ld", "3 4", "1 2", "12 3"];
    for m in merges {
        tokens.push(m.replace(' ', ""));
    }
    tokens.push("<tool_call>".into());
    let mut types = vec![1i32; tokens.len()];
    types[..3].fill(3);
    *types.last_mut().unwrap() = 4;
    let strings = |v: Vec<String>| GgufValue::Array(v.into_iter().map(GgufValue::String).collect());
    HashMap::from([
        ("tokenizer.ggml.model".into(), GgufValue::String("gpt2".into())),
        ("tokenizer.ggml.pre".into(), GgufValue::String(pre.into())),
        ("tokenizer.ggml.tokens".into(), strings(tokens)),
        ("tokenizer.ggml.merges".into(), strings(merges.map(String::from).to_vec())),
        ("tokenizer.ggml.token_type".into(), GgufValue::Array(types.into_iter().map(GgufValue::I32).collect())),
        ("tokenizer.ggml.bos_token_id".into(), GgufValue::U32(1)),
        ("tokenizer.ggml.eos_token_id".into(), GgufValue::U32(2)),
        ("tokenizer.ggml.padding_token_id".into(), GgufValue::U32(2)),
        ("tokenizer.ggml.add_bos_token".into(), GgufValue::Bool(false)),
    ])
}

fn tiny(pre: &str) -> Tokenizer {
    Tokenizer::from_gguf(&tiny_metadata(pre)).unwrap()
}

fn ids_of(t: &Tokenizer, tokens: &[&str]) -> Vec<u32> {
    tokens.iter().map(|s| t.token_to_id(s).unwrap_or_else(|| panic!("{s} not in vocab"))).collect()
}

#[test]
fn merges_apply_without_prefix_space() {
    let t = tiny("smollm");
    assert_eq!(t.encode("hello world").unwrap(), ids_of(&t, &["hello", "Ġworld"]));
    assert_eq!(t.decode(&t.encode("hello world").unwrap(), false).unwrap(), "hello world");
}

#[test]
fn special_tokens_in_text_become_single_ids() {
    let t = tiny("smollm");
    let ids = t.encode("<|im_start|>hello<|im_end|>\n").unwrap();
    assert_eq!(ids, [vec![1], ids_of(&t, &["hello"]), vec![2], ids_of(&t, &["Ċ"])].concat());
    assert_eq!(t.decode(&ids, true).unwrap(), "hello\n");
    assert_eq!(t.decode(&ids, false).unwrap(), "<|im_start|>hello<|im_end|>\n");
}

#[test]
fn user_defined_tokens_match_but_are_not_special() {
    let t = tiny("smollm");
    let call = t.token_to_id("<tool_call>").unwrap();
    let ids = t.encode("he<tool_call>he").unwrap();
    assert_eq!(ids, vec![ids_of(&t, &["he"])[0], call, ids_of(&t, &["he"])[0]]);
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
        assert_eq!(t.encode("1234").unwrap(), ids_of(&t, &expected), "pre = {pre}");
        assert_eq!(t.encode(" hello").unwrap(), ids_of(&t, &["Ġ", "hello"]), "pre = {pre}");
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
    assert_eq!(t.special_tokens(), &["<|endoftext|>", "<|im_start|>", "<|im_end|>"]);
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
fn other_tokenizer_models_are_refused_by_name() {
    let mut md = tiny_metadata("smollm");
    md.insert("tokenizer.ggml.model".into(), GgufValue::String("bert".into()));
    let err = Tokenizer::from_gguf(&md).unwrap_err();
    assert_eq!(err.to_string(), "unsupported tokenizer model bert in GGUF (supported: \"gpt2\" byte-level BPE, \"llama\" SentencePiece BPE)");
}

#[test]
fn metadata_errors_name_the_field() {
    let mut md = tiny_metadata("smollm");
    md.remove("tokenizer.ggml.merges");
    assert!(Tokenizer::from_gguf(&md).unwrap_err().to_string().contains("`tokenizer.ggml.merges`"));

    let mut md = tiny_metadata("smollm");
    md.insert("tokenizer.ggml.merges".into(), GgufValue::Array(vec![GgufValue::String("hel".into())]));
    assert!(Tokenizer::from_gguf(&md).unwrap_err().to_string().contains("entry 0 (\"hel\")"));

    let mut md = tiny_metadata("smollm");
    md.insert("tokenizer.ggml.eos_token_id".into(), GgufValue::U32(9999));
    let msg = Tokenizer::from_gguf(&md).unwrap_err().to_string();
    assert!(msg.contains("tokenizer.ggml.eos_token_id") && msg.contains("9999"), "{msg}");

    let mut md = tiny_metadata("smollm");
    md.insert("tokenizer.ggml.token_type".into(), GgufValue::Array(vec![GgufValue::I32(1)]));
    assert!(Tokenizer::from_gguf(&md).unwrap_err().to_string().contains("`tokenizer.ggml.token_type` has 1 entries"));
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
    for text in ["<|im_start|>hello world<|im_end|>", "1234 he<tool_call>", " \n\tçé"] {
        assert_eq!(back.encode(text).unwrap(), t.encode(text).unwrap(), "{text:?}");
    }
    assert_eq!((back.bos_id(), back.eos_id(), back.pad_id()), (t.bos_id(), t.eos_id(), t.pad_id()));
    assert_eq!(back.stop_ids(), t.stop_ids());
    assert_eq!(back.special_tokens(), t.special_tokens());
}

#[test]
fn add_bos_models_export_a_bos_post_processor() {
    let mut md = tiny_metadata("llama-bpe");
    md.insert("tokenizer.ggml.add_bos_token".into(), GgufValue::Bool(true));
    let t = Tokenizer::from_gguf(&md).unwrap();
    assert_eq!(t.encode("hello").unwrap(), ids_of(&t, &["hello"]), "encode must not add BOS");
    let with_special = t.inner().encode("hello", true).unwrap();
    assert_eq!(with_special.get_ids(), &[1, t.token_to_id("hello").unwrap()]);
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
    std::fs::write(&config_path, r#"{"eos_token": {"content": "<|endoftext|>"}, "bos_token": "<|im_start|>"}"#).unwrap();
    let back = Tokenizer::from_files(&json_path, Some(&config_path)).unwrap();
    assert_eq!((back.bos_id(), back.eos_id()), (Some(1), 0));

    std::fs::write(&config_path, r#"{"eos_token": "<nope>"}"#).unwrap();
    let msg = Tokenizer::from_files(&json_path, Some(&config_path)).unwrap_err().to_string();
    assert!(msg.contains("`eos_token`") && msg.contains("<nope>") && msg.contains("tokenizer_config.json"), "{msg}");
}

/// Pieces of the tiny SentencePiece vocabulary with their scores. "ab" has the lower id but the lower score, so
/// merging by id and merging by score cut "abc" differently.
const SPM_PIECES: [(&str, f32); 17] = [
    ("ab", -5.0),
    ("bc", -1.0),
    ("he", -2.0),
    ("ll", -3.0),
    ("hell", -4.0),
    ("hello", -4.5),
    ("▁hello", -4.8),
    ("▁w", -6.0),
    ("or", -7.0),
    ("▁wor", -8.0),
    ("ld", -9.0),
    ("▁world", -10.0),
    ("▁", -100.0),
    ("a", -101.0),
    ("b", -102.0),
    ("c", -103.0),
    ("h", -104.0),
];

/// Single characters of the tiny vocabulary beyond those in `SPM_PIECES`; anything else falls back to bytes.
const SPM_CHARS: [&str; 6] = ["e", "l", "o", "w", "r", "d"];

/// A Llama-2/Gemma-style GGUF vocabulary: unknown, control and user-defined tokens, the 256 byte tokens, then
/// scored pieces. `add_space_prefix: None` leaves the key out.
fn spm_metadata(add_space_prefix: Option<bool>) -> HashMap<String, GgufValue> {
    let mut tokens: Vec<(String, f32, i32)> = vec![
        ("<unk>".into(), 0.0, 2),
        ("<s>".into(), 0.0, 3),
        ("</s>".into(), 0.0, 3),
        ("<start_of_turn>".into(), 0.0, 3),
        ("<end_of_turn>".into(), 0.0, 3),
        ("<tool>".into(), 0.0, 4),
    ];
    tokens.extend((0..=255u8).map(|b| (format!("<0x{b:02X}>"), 0.0, 6)));
    tokens.extend(SPM_PIECES.iter().map(|&(p, s)| (p.to_string(), s, 1)));
    tokens.extend(SPM_CHARS.iter().enumerate().map(|(i, &c)| (c.to_string(), -200.0 - i as f32, 1)));
    let mut md = HashMap::from([
        ("tokenizer.ggml.model".into(), GgufValue::String("llama".into())),
        ("tokenizer.ggml.tokens".into(), GgufValue::Array(tokens.iter().map(|t| GgufValue::String(t.0.clone())).collect())),
        ("tokenizer.ggml.scores".into(), GgufValue::Array(tokens.iter().map(|t| GgufValue::F32(t.1)).collect())),
        ("tokenizer.ggml.token_type".into(), GgufValue::Array(tokens.iter().map(|t| GgufValue::I32(t.2)).collect())),
        ("tokenizer.ggml.unknown_token_id".into(), GgufValue::U32(0)),
        ("tokenizer.ggml.bos_token_id".into(), GgufValue::U32(1)),
        ("tokenizer.ggml.eos_token_id".into(), GgufValue::U32(2)),
    ]);
    if let Some(flag) = add_space_prefix {
        md.insert("tokenizer.ggml.add_space_prefix".into(), GgufValue::Bool(flag));
    }
    md
}

fn spm(add_space_prefix: Option<bool>) -> Tokenizer {
    Tokenizer::from_gguf(&spm_metadata(add_space_prefix)).unwrap()
}

#[test]
fn sentencepiece_merges_by_score_not_by_id() {
    let t = spm(Some(false));
    assert_eq!(t.encode("abc").unwrap(), ids_of(&t, &["a", "bc"]));
    assert_eq!(t.encode("hello").unwrap(), ids_of(&t, &["hello"]));
    assert_eq!(t.encode("hello world").unwrap(), ids_of(&t, &["hello", "▁world"]));
    assert_eq!(t.decode(&t.encode("hello world").unwrap(), false).unwrap(), "hello world");
}

#[test]
fn sentencepiece_falls_back_to_bytes() {
    let t = spm(Some(false));
    // "é" and "😀" are not pieces: their UTF-8 bytes are.
    let ids = t.encode("hé😀").unwrap();
    assert_eq!(ids, ids_of(&t, &["h", "<0xC3>", "<0xA9>", "<0xF0>", "<0x9F>", "<0x98>", "<0x80>"]));
    assert_eq!(t.decode(&ids, false).unwrap(), "hé😀");
    // A byte sequence that is not UTF-8 decodes to replacement characters, not an error.
    let bad = ids_of(&t, &["<0xFF>", "h"]);
    assert_eq!(t.decode(&bad, false).unwrap(), "\u{fffd}h");
}

#[test]
fn sentencepiece_space_prefix_follows_the_flag() {
    // Absent means true, as in llama.cpp (Llama 2); Gemma writes false.
    for flag in [None, Some(true)] {
        let t = spm(flag);
        assert_eq!(t.encode("hello world").unwrap(), ids_of(&t, &["▁hello", "▁world"]), "{flag:?}");
        assert_eq!(t.decode(&t.encode("hello world").unwrap(), false).unwrap(), "hello world", "{flag:?}");
        // llama.cpp prefixes every stretch of text, the one after a special token too.
        let ids = t.encode("<start_of_turn>hello<end_of_turn>").unwrap();
        assert_eq!(ids, [vec![3], ids_of(&t, &["▁hello"]), vec![4]].concat(), "{flag:?}");
    }
    let t = spm(Some(false));
    assert_eq!(t.encode("<start_of_turn>hello world<end_of_turn>").unwrap(), [vec![3], ids_of(&t, &["hello", "▁world"]), vec![4]].concat());
    assert_eq!(t.encode(" hello").unwrap(), ids_of(&t, &["▁hello"]));
}

#[test]
fn sentencepiece_special_and_user_defined_tokens() {
    let t = spm(Some(false));
    let text = "<start_of_turn>he<tool>he<end_of_turn>";
    let ids = t.encode(text).unwrap();
    assert_eq!(ids, [vec![3], ids_of(&t, &["he", "<tool>", "he"]), vec![4]].concat());
    assert_eq!(t.decode(&ids, false).unwrap(), text);
    assert_eq!(t.decode(&ids, true).unwrap(), "he<tool>he");
    // Without special-token parsing the control tokens are text (here: bytes), user-defined ones still match.
    let plain = t.encode_plain(text).unwrap();
    assert!(!plain.contains(&3) && !plain.contains(&4), "{plain:?}");
    assert!(plain.contains(&t.token_to_id("<tool>").unwrap()), "{plain:?}");
    assert_eq!(t.decode(&plain, false).unwrap(), text);
    assert_eq!(t.special_tokens(), &["<unk>", "<s>", "</s>", "<start_of_turn>", "<end_of_turn>"]);
}

#[test]
fn sentencepiece_roles_come_from_metadata() {
    let t = spm(None);
    assert_eq!((t.bos_id(), t.eos_id(), t.pad_id()), (Some(1), 2, None));
    assert_eq!(t.stop_ids(), &[2, 4]);
    assert!(t.add_bos(), "llama.cpp adds BOS to SentencePiece models unless told otherwise");
    assert_eq!(t.bos_token().as_deref(), Some("<s>"));
    assert_eq!(t.id_to_token(t.encode("abc").unwrap()[0]).as_deref(), Some("▁"));
    let mut md = spm_metadata(None);
    md.insert("tokenizer.ggml.add_bos_token".into(), GgufValue::Bool(false));
    assert!(!Tokenizer::from_gguf(&md).unwrap().add_bos());
}

#[test]
fn sentencepiece_vocabulary_errors_name_the_field() {
    let mut md = spm_metadata(None);
    md.insert("tokenizer.ggml.scores".into(), GgufValue::Array(vec![GgufValue::F32(0.0); 3]));
    let msg = Tokenizer::from_gguf(&md).unwrap_err().to_string();
    assert!(msg.contains("`tokenizer.ggml.scores` has 3 entries"), "{msg}");

    let mut md = spm_metadata(None);
    if let Some(GgufValue::Array(scores)) = md.get_mut("tokenizer.ggml.scores") {
        scores[7] = GgufValue::F32(f32::NAN);
    }
    assert_eq!(Tokenizer::from_gguf(&md).unwrap_err().to_string(), "GGUF `tokenizer.ggml.scores` entry 7 is NaN");

    let mut md = spm_metadata(None);
    md.remove("tokenizer.ggml.scores");
    assert_eq!(Tokenizer::from_gguf(&md).unwrap_err().to_string(), "GGUF metadata has no `tokenizer.ggml.scores`");

    let mut md = spm_metadata(None);
    md.insert("tokenizer.ggml.scores".into(), GgufValue::Array(vec![GgufValue::String("x".into())]));
    assert!(Tokenizer::from_gguf(&md).unwrap_err().to_string().contains("is not an array of floats"));

    let mut md = spm_metadata(None);
    md.insert("tokenizer.ggml.add_space_prefix".into(), GgufValue::U32(1));
    assert!(Tokenizer::from_gguf(&md).unwrap_err().to_string().contains("`tokenizer.ggml.add_space_prefix` is not a bool"));
}

/// A `tokenizer.json` shaped like Gemma 3's (what `transformers`' GemmaConverter writes): BPE with byte
/// fallback, merges in score order, spaces replaced by `▁`, a no-op split, and a Replace/ByteFallback/Fuse decoder.
fn gemma_style_tokenizer_json() -> String {
    let md = spm_metadata(Some(false));
    let Some(GgufValue::Array(tokens)) = md.get("tokenizer.ggml.tokens") else { unreachable!() };
    let Some(GgufValue::Array(types)) = md.get("tokenizer.ggml.token_type") else { unreachable!() };
    let mut vocab = serde_json::Map::new();
    let mut added = Vec::new();
    for (id, (token, kind)) in tokens.iter().zip(types).enumerate() {
        let (GgufValue::String(token), GgufValue::I32(kind)) = (token, kind) else { unreachable!() };
        vocab.insert(token.clone(), json!(id));
        if matches!(*kind, 2..=4) {
            added.push(json!({"id": id, "content": token, "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": *kind != 4}));
        }
    }
    // Written out by hand in score order, every cut of every piece into two pieces.
    let merges = [
        ["b", "c"],
        ["h", "e"],
        ["l", "l"],
        ["he", "ll"],
        ["hell", "o"],
        ["▁", "hello"],
        ["a", "b"],
        ["▁", "w"],
        ["o", "r"],
        ["▁w", "or"],
        ["l", "d"],
        ["▁wor", "ld"],
    ];
    json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": {"type": "Replace", "pattern": {"String": " "}, "content": "▁"},
        "pre_tokenizer": {"type": "Split", "pattern": {"String": " "}, "behavior": "MergedWithPrevious", "invert": false},
        "post_processor": null,
        "decoder": {"type": "Sequence", "decoders": [{"type": "Replace", "pattern": {"String": "▁"}, "content": " "}, {"type": "ByteFallback"}, {"type": "Fuse"}]},
        "model": {"type": "BPE", "dropout": null, "unk_token": "<unk>", "continuing_subword_prefix": null, "end_of_word_suffix": null,
                  "fuse_unk": true, "byte_fallback": true, "ignore_merges": false, "vocab": vocab, "merges": merges},
    })
    .to_string()
}

#[test]
fn gemma_style_tokenizer_json_matches_the_gguf_tokenizer() {
    let t = spm(Some(false));
    let dir = tempfile::tempdir().unwrap();
    let json_path = dir.path().join("tokenizer.json");
    std::fs::write(&json_path, gemma_style_tokenizer_json()).unwrap();
    let config_path = dir.path().join("tokenizer_config.json");
    std::fs::write(&config_path, r#"{"bos_token": "<s>", "eos_token": "<end_of_turn>", "add_bos_token": true}"#).unwrap();
    let hf = Tokenizer::from_files(&json_path, Some(&config_path)).unwrap();
    let exported = dir.path().join("exported.json");
    std::fs::write(&exported, t.to_tokenizer_json().unwrap()).unwrap();
    let back = Tokenizer::from_files(&exported, Some(&config_path)).unwrap();
    for text in ["abc hello world", "<start_of_turn>he<tool>he<end_of_turn>", " hé😀  wor\tld\n", ""] {
        let ids = t.encode(text).unwrap();
        assert_eq!(hf.encode(text).unwrap(), ids, "{text:?}");
        assert_eq!(back.encode(text).unwrap(), ids, "{text:?}");
        assert_eq!(hf.encode_plain(text).unwrap(), t.encode_plain(text).unwrap(), "{text:?}");
        assert_eq!(hf.decode(&ids, false).unwrap(), text);
    }
    assert_eq!((hf.bos_id(), hf.eos_id(), hf.stop_ids()), (Some(1), 4, &[4][..]));
    assert_eq!(hf.special_tokens(), t.special_tokens());
}
