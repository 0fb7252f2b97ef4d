//! Generation on the real default model: coherent greedy answers, seeds, batch invariance, stop strings,
//! and GGUF -> HF conversion that keeps tokenizer ids and logits.
use super::common;

use std::sync::OnceLock;

use autodidact::data::FinishReason;
use autodidact::model::LoadedModel;
use autodidact::sample::{generate, GenOutput, GenRequest, SamplingParams};
use serde_json::json;

fn model() -> &'static LoadedModel {
    static M: OnceLock<LoadedModel> = OnceLock::new();
    M.get_or_init(|| LoadedModel::load(common::default_model().to_str().unwrap()).unwrap())
}

fn chat(m: &LoadedModel, user: &str) -> Vec<u32> {
    m.encode_chat(&[json!({"role": "user", "content": user})], None, true).unwrap()
}

fn run(m: &LoadedModel, reqs: &[GenRequest], p: &SamplingParams) -> Vec<GenOutput> {
    generate(&m.transformer, &m.tokenizer, reqs, p, &mut |_| {}).unwrap()
}

#[test]
fn greedy_chat_answer_is_coherent_and_ends_with_end_of_turn() {
    let m = model();
    let p = SamplingParams { max_new_tokens: 40, ..Default::default() };
    let out = run(m, &[GenRequest { prompt: chat(m, "What is the capital of France?"), stream: 0 }], &p);
    assert!(out[0].text.contains("Paris"), "{:?}", out[0].text);
    assert_eq!(out[0].finish, FinishReason::Stop);
    assert_eq!(out[0].tokens.last(), Some(&2), "ends with <|im_end|>");
    assert_eq!(out[0].tokens.len(), out[0].logprobs.len());
    assert!(out[0].logprobs.iter().all(|&l| l <= 0.0 && l.is_finite()));
}

#[test]
fn seeds_reproduce_and_batching_does_not_change_samples() {
    let m = model();
    let p = SamplingParams { temperature: 1.0, top_p: 0.95, seed: 11, max_new_tokens: 24, ..Default::default() };
    let a = chat(m, "Write a short poem about rain.");
    let b = chat(m, "List three prime numbers.");
    // Different prompts and lengths in one batch; sample streams 0..4.
    let reqs: Vec<GenRequest> = (0..4).map(|i| GenRequest { prompt: if i % 2 == 0 { a.clone() } else { b.clone() }, stream: i }).collect();
    let batch = run(m, &reqs, &p);
    for (i, r) in reqs.iter().enumerate() {
        let alone = run(m, std::slice::from_ref(r), &p);
        assert_eq!(alone[0].tokens, batch[i].tokens, "sample {i} differs alone vs in a batch");
        assert_eq!(alone[0].logprobs, batch[i].logprobs);
    }
    let again = run(m, &reqs, &p);
    assert!(again.iter().zip(&batch).all(|(x, y)| x.tokens == y.tokens));
    let other_seed = run(m, &reqs, &SamplingParams { seed: 12, ..p.clone() });
    assert!(other_seed.iter().zip(&batch).any(|(x, y)| x.tokens != y.tokens));
    // Same prompt, different streams: different samples.
    assert_ne!(batch[0].tokens, batch[2].tokens);
}

#[test]
fn stop_strings_and_token_limits() {
    let m = model();
    let p = SamplingParams { max_new_tokens: 5, ..Default::default() };
    let out = run(m, &[GenRequest { prompt: chat(m, "Tell me a long story about a dragon."), stream: 0 }], &p);
    assert_eq!((out[0].finish, out[0].tokens.len()), (FinishReason::Length, 5));
    let p = SamplingParams { max_new_tokens: 40, stop_strings: vec!["France".into()], ..Default::default() };
    let out = run(m, &[GenRequest { prompt: chat(m, "What is the capital of France?"), stream: 0 }], &p);
    assert_eq!(out[0].finish, FinishReason::StopString);
    assert!(!out[0].text.contains("France") && !out[0].text.is_empty(), "{:?}", out[0].text);
}

#[test]
fn convert_to_hf_folder_keeps_ids_and_logits() {
    use autodidact::model::{Logits, SeqInput};
    let m = model();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("smollm2-hf");
    autodidact::export::hf::write_hf_folder(m, None, &out, autodidact::export::hf::SaveDType::F32).unwrap();
    for f in ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"] {
        assert!(out.join(f).is_file(), "{f} missing");
    }
    let hf = LoadedModel::load(out.to_str().unwrap()).unwrap();
    assert!(!hf.template_is_fallback, "the chat template travels with the folder");
    for text in ["<|im_start|>user\nWhat is 12*7?<|im_end|>\n", "  leading spaces, émojis 🎉 and 1234567", "fn main() {\n\tprintln!(\"hi\");\n}"] {
        assert_eq!(hf.tokenizer.encode(text).unwrap(), m.tokenizer.encode(text).unwrap(), "{text:?}");
    }
    let msgs = [json!({"role": "user", "content": "Hi"})];
    assert_eq!(hf.render_chat(&msgs, None, true).unwrap(), m.render_chat(&msgs, None, true).unwrap());

    // The f32 folder is exactly the GGUF's weights: same logits as the GGUF model with matrices dequantized.
    let toks = chat(m, "What is 12*7?");
    let logits = |t: &autodidact::model::Transformer| {
        let mut c = t.new_cache();
        t.forward(&mut [SeqInput { cache: &mut c, tokens: &toks, logits: Logits::All }]).unwrap().remove(0)
    };
    let from_hf = logits(&hf.transformer);
    let gguf_f32 = {
        use autodidact::model::linear::{Matrix, WeightData};
        let src = autodidact::model::gguf::GgufFile::open(&common::default_model()).unwrap();
        let mut w = autodidact::model::weights::Weights::load(&src, m.config()).unwrap();
        let deq = |x: &mut Matrix| x.data = WeightData::F32(x.to_f32());
        deq(&mut w.embed);
        for l in &mut w.layers {
            for x in [&mut l.qkv, &mut l.o, &mut l.gate_up, &mut l.down] {
                deq(x);
            }
        }
        logits(&autodidact::model::Transformer::new(m.config().clone(), w))
    };
    assert!(from_hf == gguf_f32, "converted folder's logits differ from the GGUF weights");
}
