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
fn sentencepiece_models_are_refused_by_name() {
    let mut md = tiny_metadata("smollm");
    md.insert("tokenizer.ggml.model".into(), GgufValue::String("llama".into()));
    let err = Tokenizer::from_gguf(&md).unwrap_err();
    assert_eq!(err.to_string(), "unsupported tokenizer model llama in GGUF (only \"gpt2\" byte-level BPE is supported)");
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
