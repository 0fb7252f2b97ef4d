//! Tiny models generated at test time (2 layers, hidden 64, seeded weights, a byte-level tokenizer), written as
//! Hugging Face folders so the real loading code runs on them. `arch` is a `model_type`: llama, qwen2, qwen3 or
//! gemma3_text.
use std::path::Path;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use safetensors::tensor::TensorView;
use safetensors::Dtype;

pub const VOCAB: usize = 259; // 256 bytes + <|endoftext|> <|im_start|> <|im_end|>
pub const HIDDEN: usize = 64;
pub const INTER: usize = 128;
pub const LAYERS: usize = 2;
pub const HEADS: usize = 4;
pub const KV_HEADS: usize = 2;
pub const HEAD_DIM: usize = 16;
pub const CONTEXT: usize = 96;
/// Gemma's first layer attends over this many positions (its second is global).
pub const WINDOW: usize = 4;

/// Heads of other sizes than `HIDDEN / HEADS` for the architectures whose configs give `head_dim`: the runtime
/// must take it from the config.
pub fn head_dim(arch: &str) -> usize {
    match arch {
        "qwen3" => 24,
        "gemma3_text" => 32,
        _ => HEAD_DIM,
    }
}

pub const CHATML: &str = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

pub fn config_json(arch: &str) -> serde_json::Value {
    let qwen = arch == "qwen2";
    let mut v = serde_json::json!({
        "architectures": [if qwen { "Qwen2ForCausalLM" } else { "LlamaForCausalLM" }],
        "model_type": arch,
        "vocab_size": VOCAB, "hidden_size": HIDDEN, "intermediate_size": INTER,
        "num_hidden_layers": LAYERS, "num_attention_heads": HEADS, "num_key_value_heads": KV_HEADS,
        "max_position_embeddings": CONTEXT, "rope_theta": 10000.0, "rms_norm_eps": 1e-6,
        "tie_word_embeddings": !qwen, "hidden_act": "silu",
        "sliding_window": CONTEXT, "max_window_layers": LAYERS, "use_sliding_window": false,
        "bos_token_id": 257, "eos_token_id": 258,
    });
    match arch {
        "qwen3" => {
            v["architectures"] = serde_json::json!(["Qwen3ForCausalLM"]);
            v["head_dim"] = serde_json::json!(head_dim(arch));
            v["attention_bias"] = serde_json::json!(false);
        }
        "gemma3_text" => {
            v["architectures"] = serde_json::json!(["Gemma3ForCausalLM"]);
            v["head_dim"] = serde_json::json!(head_dim(arch));
            v["attention_bias"] = serde_json::json!(false);
            v["hidden_act"] = serde_json::json!("gelu_pytorch_tanh");
            v["hidden_activation"] = serde_json::json!("gelu_pytorch_tanh");
            v["rope_theta"] = serde_json::json!(1_000_000.0);
            v["rope_local_base_freq"] = serde_json::json!(10000.0);
            v["sliding_window"] = serde_json::json!(WINDOW);
            v["sliding_window_pattern"] = serde_json::json!(2);
            // candle's Gemma 3 always scales scores by head_dim^-0.5: the same here, so that logits compare.
            v["query_pre_attn_scalar"] = serde_json::json!(head_dim(arch));
            v["final_logit_softcapping"] = serde_json::Value::Null;
            v["attn_logit_softcapping"] = serde_json::Value::Null;
        }
        _ => {}
    }
    v
}

/// HF tensors of a tiny model: (name, shape, values).
pub fn tensors(arch: &str, seed: u64) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    let qwen = arch == "qwen2";
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut t = |name: String, shape: Vec<usize>, scale: f32, offset: f32| {
        let n: usize = shape.iter().product();
        let v: Vec<f32> = (0..n).map(|_| offset + scale * rng.random_range(-1.0f32..1.0)).collect();
        (name, shape, v)
    };
    let hd = head_dim(arch);
    let (q, kv) = (HEADS * hd, KV_HEADS * hd);
    // Gemma's checkpoints store norm weights as `factor - 1`.
    let gemma = arch == "gemma3_text";
    let norm = if gemma { 0.0 } else { 1.0 };
    let mut out = vec![t("model.embed_tokens.weight".into(), vec![VOCAB, HIDDEN], 1.0, 0.0)];
    for l in 0..LAYERS {
        let p = |n: &str| format!("model.layers.{l}.{n}");
        out.push(t(p("input_layernorm.weight"), vec![HIDDEN], 0.2, norm));
        out.push(t(p("self_attn.q_proj.weight"), vec![q, HIDDEN], 0.25, 0.0));
        out.push(t(p("self_attn.k_proj.weight"), vec![kv, HIDDEN], 0.25, 0.0));
        out.push(t(p("self_attn.v_proj.weight"), vec![kv, HIDDEN], 0.25, 0.0));
        if qwen {
            out.push(t(p("self_attn.q_proj.bias"), vec![q], 0.5, 0.0));
            out.push(t(p("self_attn.k_proj.bias"), vec![kv], 0.5, 0.0));
            out.push(t(p("self_attn.v_proj.bias"), vec![kv], 0.5, 0.0));
        }
        if arch == "qwen3" || gemma {
            out.push(t(p("self_attn.q_norm.weight"), vec![hd], 0.3, norm));
            out.push(t(p("self_attn.k_norm.weight"), vec![hd], 0.3, norm));
        }
        out.push(t(p("self_attn.o_proj.weight"), vec![HIDDEN, q], 0.15, 0.0));
        out.push(t(p("post_attention_layernorm.weight"), vec![HIDDEN], 0.2, norm));
        if gemma {
            out.push(t(p("pre_feedforward_layernorm.weight"), vec![HIDDEN], 0.2, norm));
            out.push(t(p("post_feedforward_layernorm.weight"), vec![HIDDEN], 0.2, norm));
        }
        out.push(t(p("mlp.gate_proj.weight"), vec![INTER, HIDDEN], 0.2, 0.0));
        out.push(t(p("mlp.up_proj.weight"), vec![INTER, HIDDEN], 0.2, 0.0));
        out.push(t(p("mlp.down_proj.weight"), vec![HIDDEN, INTER], 0.15, 0.0));
    }
    out.push(t("model.norm.weight".into(), vec![HIDDEN], 0.2, norm));
    if qwen {
        out.push(t("lm_head.weight".into(), vec![VOCAB, HIDDEN], 0.3, 0.0));
    }
    out
}

pub fn byte_level_tokenizer() -> tokenizers::Tokenizer {
    use tokenizers::models::bpe::BPE;
    use tokenizers::pre_tokenizers::byte_level::ByteLevel;
    let mut alphabet: Vec<char> = ByteLevel::alphabet().into_iter().collect();
    alphabet.sort();
    let vocab: tokenizers::models::bpe::Vocab = alphabet.iter().enumerate().map(|(i, c)| (c.to_string(), i as u32)).collect();
    let bpe = BPE::builder().vocab_and_merges(vocab, vec![]).build().expect("bpe");
    let mut tok = tokenizers::Tokenizer::new(bpe);
    tok.with_pre_tokenizer(Some(ByteLevel::new(false, true, true)));
    tok.with_decoder(Some(ByteLevel::new(false, true, true)));
    let specials: Vec<tokenizers::AddedToken> =
        ["<|endoftext|>", "<|im_start|>", "<|im_end|>"].iter().map(|s| tokenizers::AddedToken::from(*s, true)).collect();
    let _added = tok.add_special_tokens(specials);
    tok
}

pub fn write_hf(dir: &Path, arch: &str, seed: u64) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("config.json"), serde_json::to_string_pretty(&config_json(arch)).unwrap()).unwrap();
    let ts = tensors(arch, seed);
    let bytes: Vec<(String, Vec<usize>, Vec<u8>)> =
        ts.iter().map(|(n, s, v)| (n.clone(), s.clone(), v.iter().flat_map(|x| x.to_le_bytes()).collect())).collect();
    let views: Vec<(String, TensorView)> = bytes.iter().map(|(n, s, b)| (n.clone(), TensorView::new(Dtype::F32, s.clone(), b).unwrap())).collect();
    safetensors::serialize_to_file(views, None, &dir.join("model.safetensors")).unwrap();
    byte_level_tokenizer().save(dir.join("tokenizer.json"), false).unwrap();
    let cfg = serde_json::json!({"eos_token": "<|im_end|>", "bos_token": null, "chat_template": CHATML});
    std::fs::write(dir.join("tokenizer_config.json"), cfg.to_string()).unwrap();
}
