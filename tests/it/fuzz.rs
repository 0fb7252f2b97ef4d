//! Fuzzed inputs never panic: any model text is a valid call or a classified invalid step; task files and loop
//! configs give an error naming the file; GGUF headers with random bytes, truncations and absurd sizes give an
//! error without a huge allocation; the calculator answers any expression quickly; hostile content never becomes
//! a special token. A few hundred cases per property here; `AUTODIDACT_FUZZ_CASES=100000 cargo test --release
//! --test it fuzz::` is the dedicated run.
use super::common;

use std::io::Write;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use autodidact::data::ToolCall;
use autodidact::model::LoadedModel;
use autodidact::pipeline::config::LoopConfig;
use autodidact::tasks::suites::arithmetic::{calculator, calculator_spec};
use autodidact::tasks::taskfile::load_tasks;
use autodidact::tools::toolcall::{check_calls, parse_turn, Action};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::json;

fn cases(default: u32) -> u32 {
    std::env::var("AUTODIDACT_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn runner(default: u32) -> TestRunner {
    TestRunner::new(Config { cases: cases(default), failure_persistence: None, ..Config::default() })
}

/// Text built from the pieces model output and hostile input are made of.
fn texty() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("<tool_call>".to_string()),
        Just("</tool_call>".to_string()),
        Just("<|im_end|>".to_string()),
        Just("<|im_start|>system\n".to_string()),
        Just("{\"name\": \"calculator\", \"arguments\": {\"expression\": \"".to_string()),
        Just("\"}}".to_string()),
        Just("Answer: ".to_string()),
        Just("```json\n".to_string()),
        "[\\PC\\s{}\\[\\]\":,]{0,12}",
    ];
    prop::collection::vec(piece, 0..12).prop_map(|v| v.concat())
}

#[test]
fn any_model_text_is_a_call_an_answer_or_a_classified_invalid_step() {
    let tools = vec![calculator_spec()];
    runner(500)
        .run(&texty(), |text| {
            match parse_turn(&text) {
                Ok(Action::Calls(calls)) => {
                    let _ = check_calls(&calls, &tools, 4);
                }
                Ok(_) => {}
                Err(e) => prop_assert!(!e.message.is_empty()),
            }
            Ok(())
        })
        .unwrap();
}

#[test]
fn task_file_lines_load_or_name_the_file_and_line() {
    let good = std::fs::read_to_string("tasks/examples_answer.jsonl").unwrap().lines().next().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fuzz.jsonl");
    let strategy = (prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..6), any::<prop::sample::Index>(), texty());
    runner(300)
        .run(&strategy, |(edits, cut, extra)| {
            let mut bytes = good.clone().into_bytes();
            for (at, b) in edits {
                let i = at.index(bytes.len());
                bytes[i] = b;
            }
            bytes.truncate(cut.index(bytes.len() + 1));
            let mut f = std::fs::File::create(&path).unwrap();
            f.write_all(&bytes).unwrap();
            writeln!(f, "\n{extra}").unwrap();
            if let Err(e) = load_tasks(&path) {
                prop_assert!(e.to_string().contains("fuzz.jsonl"), "{e}");
            }
            Ok(())
        })
        .unwrap();
}

#[test]
fn loop_configs_load_or_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fuzz.toml");
    let key = prop_oneof![
        Just("name"),
        Just("rounds"),
        Just("[tasks]"),
        Just("train_files"),
        Just("dev_per"),
        Just("[train]"),
        Just("lr"),
        Just("[prompt_files]"),
        Just("qa")
    ];
    let value = prop_oneof![
        Just("\"x\"".to_string()),
        Just("1".to_string()),
        Just("-3".to_string()),
        Just("[\"*.jsonl\"]".to_string()),
        Just("1e309".to_string()),
        "[\\PC]{0,8}"
    ];
    runner(300)
        .run(&prop::collection::vec((key, value), 0..8), |lines| {
            let text: String = lines.iter().map(|(k, v)| if k.starts_with('[') { format!("{k}\n") } else { format!("{k} = {v}\n") }).collect();
            std::fs::write(&path, &text).unwrap();
            if let Err(e) = LoopConfig::load(&path) {
                prop_assert!(format!("{e:#}").contains("fuzz.toml"), "{e:#}");
            }
            Ok(())
        })
        .unwrap();
}

/// A small valid GGUF (version 2): a few metadata values and two tensors.
fn tiny_gguf() -> Vec<u8> {
    use candle_core::quantized::{gguf_file, QTensor};
    use candle_core::{Device, Tensor};
    let t = QTensor::quantize(&Tensor::zeros((2, 32), candle_core::DType::F32, &Device::Cpu).unwrap(), candle_core::quantized::GgmlDType::Q8_0).unwrap();
    let u = QTensor::quantize(&Tensor::ones(4, candle_core::DType::F32, &Device::Cpu).unwrap(), candle_core::quantized::GgmlDType::F32).unwrap();
    let (arch, n, toks) = (
        gguf_file::Value::String("llama".into()),
        gguf_file::Value::U32(2),
        gguf_file::Value::Array(vec![gguf_file::Value::String("a".into()), gguf_file::Value::String("b".into())]),
    );
    let mut out = std::io::Cursor::new(Vec::new());
    gguf_file::write(&mut out, &[("general.architecture", &arch), ("llama.block_count", &n), ("tokenizer.ggml.tokens", &toks)], &[("w", &t), ("v", &u)])
        .unwrap();
    out.into_inner()
}

#[test]
fn gguf_headers_with_random_bytes_truncations_and_absurd_sizes_are_errors() {
    let good = tiny_gguf();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fuzz.gguf");
    // Offsets of the header's counts and of the first string length: where absurd values do the most harm.
    let hot = prop_oneof![Just(8usize), Just(16), Just(24), Just(32), 0..good.len()];
    let value = prop_oneof![Just(u64::MAX), Just(1u64 << 40), Just(1u64 << 62), Just(0u64), any::<u64>()];
    let strategy =
        (prop::collection::vec((hot, value), 0..3), prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4), any::<prop::sample::Index>());
    runner(300)
        .run(&strategy, |(words, bytes, cut)| {
            let mut b = good.clone();
            for (at, v) in words {
                let at = at.min(b.len().saturating_sub(8));
                b[at..at + 8].copy_from_slice(&v.to_le_bytes());
            }
            for (at, v) in bytes {
                let i = at.index(b.len());
                b[i] = v;
            }
            b.truncate(cut.index(b.len() + 1).max(b.len() / 2));
            std::fs::write(&path, &b).unwrap();
            // Opening and then loading every tensor: errors are fine, panics and huge allocations are not.
            if let Ok(f) = autodidact::model::gguf::GgufFile::open(&path) {
                let _ = f.dtype_counts();
            }
            let _ = LoadedModel::load(path.to_str().unwrap());
            Ok(())
        })
        .unwrap();
}

#[test]
fn the_calculator_answers_any_expression_quickly() {
    let expr = prop_oneof![
        "[0-9+\\-*/().^ %a-z]{0,40}",
        prop::collection::vec(
            prop_oneof![
                Just("9".repeat(30)),
                Just("**".to_string()),
                Just("^".to_string()),
                Just("(".to_string()),
                Just(")".to_string()),
                Just("/0".to_string()),
                Just("!".to_string())
            ],
            0..20
        )
        .prop_map(|v| v.concat()),
    ];
    runner(1000)
        .run(&expr, |e| {
            let t0 = Instant::now();
            let _ = calculator(&ToolCall::new("calculator", json!({"expression": e})));
            prop_assert!(t0.elapsed() < Duration::from_secs(1), "`{e}` took {:?}", t0.elapsed());
            Ok(())
        })
        .unwrap();
}

#[test]
fn hostile_content_never_becomes_a_special_token() {
    static MODEL: OnceLock<LoadedModel> = OnceLock::new();
    let m = MODEL.get_or_init(|| LoadedModel::load(common::default_model().to_str().unwrap()).unwrap());
    let specials: Vec<u32> = ["<|im_start|>", "<|im_end|>", "<|endoftext|>"].iter().map(|t| m.tokenizer.token_to_id(t).unwrap()).collect();
    runner(200)
        .run(&(texty(), texty(), texty()), |(user, tool, assistant)| {
            let msgs = vec![
                json!({"role": "system", "content": "s"}),
                json!({"role": "user", "content": user}),
                json!({"role": "assistant", "content": assistant}),
                json!({"role": "tool", "name": "calculator", "content": tool}),
            ];
            let ids = m.encode_chat(&msgs, None, true).unwrap();
            let n = ids.iter().filter(|i| specials.contains(i)).count();
            prop_assert_eq!(n, 4 * 2 + 1, "one <|im_start|> and <|im_end|> per message, plus the generation prompt");
            Ok(())
        })
        .unwrap();
}
