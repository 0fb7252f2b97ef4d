//! The SentencePiece tokenizer of the real Gemma 3 270M GGUF against llama.cpp's ids for the same file, which
//! tests/fixtures/gemma3_tokens.json records (written by `bash scripts/dev/gemma3-reference-ids.sh`).
//!
//! The tokenizer is built from the GGUF header alone, so these tests hold whatever the state of Gemma 3's
//! weights and architecture support.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use autodidact::model::tokenizer::Tokenizer;
use candle_core::quantized::gguf_file;
use serde_json::Value;

/// Gemma 3 270M (Q4_K_M), fetched by the project's own script when missing (CI has no other copy).
fn gemma3_path() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let path = root.join("models/gemma-3-270m-q4_k_m.gguf");
    if !path.exists() {
        let status = std::process::Command::new("bash").arg(root.join("scripts/fetch-gemma3.sh")).status().expect("run scripts/fetch-gemma3.sh");
        assert!(status.success(), "scripts/fetch-gemma3.sh failed; tests need {}", path.display());
    }
    path
}

/// Loaded once: every test thread shares it (262144 tokens, half a million merges).
fn gemma3() -> &'static Tokenizer {
    static TOKENIZER: OnceLock<Tokenizer> = OnceLock::new();
    TOKENIZER.get_or_init(|| {
        let mut file = std::fs::File::open(gemma3_path()).expect("open the Gemma 3 GGUF");
        let content = gguf_file::Content::read(&mut file).expect("read GGUF metadata");
        Tokenizer::from_gguf(&content.metadata).expect("tokenizer from GGUF")
    })
}

struct Case {
    text: String,
    /// Whether special-token text was parsed: our `encode` when true, `encode_plain` when false.
    special: bool,
    ids: Vec<u32>,
}

fn cases() -> Vec<Case> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/gemma3_tokens.json");
    let fixture: Value = serde_json::from_str(&std::fs::read_to_string(&path).expect("read the fixture")).expect("fixture is JSON");
    let cases = fixture["cases"].as_array().expect("`cases` array");
    cases
        .iter()
        .map(|c| Case {
            text: c["text"].as_str().expect("text").to_string(),
            special: c["special"].as_bool().expect("special"),
            ids: c["ids"].as_array().expect("ids").iter().map(|id| id.as_u64().expect("id") as u32).collect(),
        })
        .collect()
}

fn encode(t: &Tokenizer, case: &Case) -> Vec<u32> {
    if case.special { t.encode(&case.text) } else { t.encode_plain(&case.text) }.expect("encode")
}

#[test]
fn gemma3_ids_match_llama_cpp() {
    let t = gemma3();
    let cases = cases();
    for case in &cases {
        assert_eq!(encode(t, case), case.ids, "{:?} (special: {})", case.text, case.special);
    }
    // The fixture is not trivially small: the chat text alone is over 200 tokens each way.
    assert!(cases.iter().map(|c| c.ids.len()).sum::<usize>() > 400);
}

#[test]
fn gemma3_decode_round_trips() {
    let t = gemma3();
    for case in cases() {
        assert_eq!(t.decode(&case.ids, false).unwrap(), case.text, "special: {}", case.special);
    }
}

#[test]
fn gemma3_token_roles_come_from_gguf() {
    let t = gemma3();
    assert_eq!(t.vocab_size(), 262144);
    assert_eq!((t.bos_id(), t.eos_id(), t.pad_id()), (Some(2), 1, Some(0)));
    assert_eq!((t.bos_token().as_deref(), t.eos_token().as_deref()), (Some("<bos>"), Some("<eos>")));
    assert!(t.add_bos());
    let end_of_turn = t.token_to_id("<end_of_turn>").unwrap();
    assert_eq!(end_of_turn, 106);
    assert!(t.is_stop(end_of_turn) && t.is_stop(1) && !t.is_stop(t.token_to_id("<start_of_turn>").unwrap()));
    assert_eq!(t.encode("<start_of_turn>user\n").unwrap(), [105, 2364, 107]);
    assert_eq!(t.decode(&[2, 105, 2364, 107], true).unwrap(), "user\n");
    assert_eq!(t.model_max_length(), Some(32768));
}

#[test]
fn gemma3_hf_export_gives_the_same_ids() {
    let t = gemma3();
    let dir = tempfile::tempdir().unwrap();
    let json_path = dir.path().join("tokenizer.json");
    let config_path = dir.path().join("tokenizer_config.json");
    std::fs::write(&json_path, t.to_tokenizer_json().unwrap()).unwrap();
    std::fs::write(&config_path, t.tokenizer_config_json(None).to_string()).unwrap();
    let back = Tokenizer::from_files(&json_path, Some(&config_path)).unwrap();
    for case in cases() {
        assert_eq!(encode(&back, &case), case.ids, "{:?} (special: {})", case.text, case.special);
    }
    assert_eq!((back.bos_id(), back.eos_id(), back.pad_id()), (t.bos_id(), t.eos_id(), t.pad_id()));
    assert_eq!(back.stop_ids(), t.stop_ids());
}

/// A Hugging Face folder's SentencePiece-style tokenizer written as GGUF metadata (as `export --gguf` writes it,
/// scores from merge ranks) reads back with llama.cpp's ids.
#[test]
fn gemma3_hf_tokenizer_as_gguf_metadata_gives_the_same_ids() {
    let t = gemma3();
    let dir = tempfile::tempdir().unwrap();
    let (json_path, config_path) = (dir.path().join("tokenizer.json"), dir.path().join("tokenizer_config.json"));
    std::fs::write(&json_path, t.to_tokenizer_json().unwrap()).unwrap();
    std::fs::write(&config_path, t.tokenizer_config_json(None).to_string()).unwrap();
    let hf = Tokenizer::from_files(&json_path, Some(&config_path)).unwrap();
    let md: std::collections::HashMap<String, gguf_file::Value> = hf.gguf_metadata(t.vocab_size()).unwrap().into_iter().collect();
    assert_eq!(md["tokenizer.ggml.model"].to_string().unwrap(), "llama");
    let back = Tokenizer::from_gguf(&md).unwrap();
    for case in cases() {
        assert_eq!(encode(&back, &case), case.ids, "{:?} (special: {})", case.text, case.special);
    }
    assert_eq!((back.bos_id(), back.eos_id(), back.pad_id(), back.add_bos()), (t.bos_id(), t.eos_id(), t.pad_id(), t.add_bos()));
}
