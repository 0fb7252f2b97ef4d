//! Qwen3 and Gemma 3 on tiny generated models: logits against candle-transformers' implementations, Gemma's
//! sliding window exact through the KV cache, ragged batches and shared prefixes on every instruction-set path,
//! and the real Gemma 3 file's config and tensor names.
use super::common;

use std::path::Path;
use std::sync::Arc;

use autodidact::model::gguf::GgufFile;
use autodidact::model::weights::{SafetensorsDir, TensorSource, Weights};
use autodidact::model::{Arch, KvCache, Logits, ModelConfig, SeqInput, Transformer};
use autodidact::simd::Simd;
use candle_core::{DType, Device, Tensor};
use common::tiny;
use common::{all_logits, load_dir, max_abs_diff};

/// 16 tokens: four windows of Gemma's sliding layer.
const TOKENS: [u32; 16] = [257, 72, 101, 108, 108, 111, 258, 10, 257, 97, 115, 115, 105, 115, 116, 33];

fn tiny_model(arch: &str, seed: u64) -> (tempfile::TempDir, Transformer) {
    let dir = tempfile::tempdir().unwrap();
    tiny::write_hf(dir.path(), arch, seed);
    let m = load_dir(dir.path());
    (dir, m)
}

fn varbuilder(dir: &Path) -> candle_nn::VarBuilder<'static> {
    // SAFETY: the file is written once above and not changed while mapped.
    unsafe { candle_nn::VarBuilder::from_mmaped_safetensors(&[dir.join("model.safetensors")], DType::F32, &Device::Cpu).unwrap() }
}

/// A reference model's logits fed one token at a time (`step(token, position)` returns the last logits row).
fn stepwise(mut step: impl FnMut(&Tensor, usize) -> Tensor) -> Vec<f32> {
    let mut out = Vec::new();
    for (pos, &t) in TOKENS.iter().enumerate() {
        let x = Tensor::new(&[[t]], &Device::Cpu).unwrap();
        out.extend(step(&x, pos).flatten_all().unwrap().to_vec1::<f32>().unwrap());
    }
    out
}

#[test]
fn tiny_qwen3_matches_candle_qwen3() {
    use candle_transformers::models::qwen3::{Config, ModelForCausalLM};
    let (dir, m) = tiny_model("qwen3", 4);
    assert_eq!((m.cfg.arch, m.cfg.head_dim, m.cfg.q_dim()), (Arch::Qwen3, 24, 96), "head_dim comes from the config");
    let ours = all_logits(&m, &TOKENS);

    let cfg: Config = serde_json::from_value(tiny::config_json("qwen3")).unwrap();
    let mut reference = ModelForCausalLM::new(&cfg, varbuilder(dir.path())).unwrap();
    let theirs = stepwise(|x, pos| reference.forward(x, pos).unwrap());
    let d = max_abs_diff(&ours, &theirs);
    eprintln!("qwen3 vs candle: max |logit diff| {d}");
    assert!(d < 1e-4, "max |diff| {d}");
}

/// candle's Gemma 3 fed one token at a time keeps the last `sliding_window` keys in its rotating cache, the
/// window of Hugging Face and llama.cpp (its multi-token mask keeps one key more, so it is not used here).
#[test]
fn tiny_gemma3_with_a_sliding_window_matches_candle_gemma3() {
    use candle_transformers::models::gemma3::{Config, Model};
    let (dir, m) = tiny_model("gemma3_text", 5);
    assert_eq!((m.cfg.arch, m.cfg.sliding_window, m.cfg.sliding_layers.clone()), (Arch::Gemma3, Some(tiny::WINDOW), vec![true, false]));
    let ours = all_logits(&m, &TOKENS);

    let cfg: Config = serde_json::from_value(tiny::config_json("gemma3_text")).unwrap();
    let mut reference = Model::new(false, &cfg, varbuilder(dir.path())).unwrap();
    let theirs = stepwise(|x, pos| reference.forward(x, pos).unwrap());
    let scale = theirs.iter().fold(0f32, |a, x| a.max(x.abs()));
    let d = max_abs_diff(&ours, &theirs);
    eprintln!("gemma3 vs candle: max |logit diff| {d} (logits up to {scale})");
    assert!(d < 1e-4 * scale.max(1.0), "max |diff| {d}");

    // The window is what makes it agree: with a window longer than the sequence, the positions that see the
    // whole sequence anyway are unchanged to the bit and every later one differs.
    let mut cfg = m.cfg.clone();
    cfg.sliding_window = Some(1000);
    let st = SafetensorsDir::open(dir.path()).unwrap();
    let wide = all_logits(&Transformer::new(cfg.clone(), Weights::load(&st, &cfg).unwrap()), &TOKENS);
    let v = m.cfg.vocab_size;
    for pos in 0..TOKENS.len() {
        let same = ours[pos * v..(pos + 1) * v] == wide[pos * v..(pos + 1) * v];
        assert_eq!(same, pos < tiny::WINDOW, "position {pos}");
    }
}

/// Logits of every row are the same bits whether the sequence is fed at once or in chunks that cross the window's
/// edge, alone or in a ragged batch, from its own cache or continuing a shared prefix, on every path.
#[test]
fn sliding_window_and_qk_norm_are_exact_through_cache_batches_and_shared_prefixes() {
    for (arch, seed) in [("gemma3_text", 6), ("qwen3", 7)] {
        let (_dir, mut m) = tiny_model(arch, seed);
        for simd in Simd::available() {
            m.simd = simd;
            exact_everywhere(&m, &format!("{arch} {simd}"));
        }
    }
}

fn exact_everywhere(m: &Transformer, what: &str) {
    let v = m.cfg.vocab_size;
    let full = all_logits(m, &TOKENS);

    let mut cache = m.new_cache();
    let mut inc = Vec::new();
    for chunk in [&TOKENS[..3], &TOKENS[3..4], &TOKENS[4..5], &TOKENS[5..11], &TOKENS[11..]] {
        inc.extend(m.forward(&mut [SeqInput { cache: &mut cache, tokens: chunk, logits: Logits::All }]).unwrap().remove(0));
    }
    assert!(inc == full, "{what}: incremental logits differ from the full forward");

    let (a, b, c) = (&TOKENS[..], &TOKENS[..7], &TOKENS[..2]);
    let (mut ca, mut cb, mut cc) = (m.new_cache(), m.new_cache(), m.new_cache());
    let out = m
        .forward(&mut [
            SeqInput { cache: &mut ca, tokens: a, logits: Logits::All },
            SeqInput { cache: &mut cb, tokens: b, logits: Logits::Last },
            SeqInput { cache: &mut cc, tokens: c, logits: Logits::All },
        ])
        .unwrap();
    assert!(out[0] == full, "{what}: batched");
    assert!(out[1] == all_logits(m, b)[(b.len() - 1) * v..], "{what}: batched, last row");
    assert!(out[2] == all_logits(m, c), "{what}: batched, short");

    // A prefix longer than the window, continued from a fork in two steps.
    let mut prefix = m.new_cache();
    m.forward(&mut [SeqInput { cache: &mut prefix, tokens: &TOKENS[..6], logits: Logits::None }]).unwrap();
    let prefix = Arc::new(prefix);
    let mut forked = KvCache::fork(&prefix);
    let mut tail = m.forward(&mut [SeqInput { cache: &mut forked, tokens: &TOKENS[6..9], logits: Logits::All }]).unwrap().remove(0);
    tail.extend(m.forward(&mut [SeqInput { cache: &mut forked, tokens: &TOKENS[9..], logits: Logits::All }]).unwrap().remove(0));
    assert!(tail == full[6 * v..], "{what}: continued from a shared prefix");

    // Many sequences forked from one prefix (longer than attention's block of shared positions and than the
    // window) step together, exactly as each alone and as the unshared sequence.
    let long: Vec<u32> = TOKENS.iter().cycle().take(70).copied().collect();
    let mut prefix = m.new_cache();
    m.forward(&mut [SeqInput { cache: &mut prefix, tokens: &long, logits: Logits::None }]).unwrap();
    let prefix = Arc::new(prefix);
    let tails: Vec<Vec<u32>> = (0..20).map(|i| (0..1 + i % 3).map(|j| TOKENS[(5 * i + j) % TOKENS.len()]).collect()).collect();
    let mut caches: Vec<KvCache> = tails.iter().map(|_| KvCache::fork(&prefix)).collect();
    let mut batch: Vec<SeqInput> = caches.iter_mut().zip(&tails).map(|(c, t)| SeqInput { cache: c, tokens: t, logits: Logits::Last }).collect();
    let together = m.forward(&mut batch).unwrap();
    for (i, t) in tails.iter().enumerate() {
        let mut c = KvCache::fork(&prefix);
        let alone = m.forward(&mut [SeqInput { cache: &mut c, tokens: t, logits: Logits::Last }]).unwrap().remove(0);
        assert!(together[i] == alone, "{what}: sequence {i} of a batch forked from one prefix");
        if i < 2 {
            let whole: Vec<u32> = long.iter().chain(t).copied().collect();
            assert!(alone == all_logits(m, &whole)[(whole.len() - 1) * v..], "{what}: sequence {i} forked vs unshared");
        }
    }
}

/// Gemma 3 270M's GGUF: the config llama.cpp reads from it, and every tensor the runtime loads found under its
/// llama.cpp name (the file's quantized types load once the runtime supports them; here only names and shapes).
#[test]
fn real_gemma3_file_gives_its_config_and_every_tensor_name() {
    let path = common::gemma3_model();
    let g = GgufFile::open(&path).unwrap();
    let has_output = g.has_tensor("output.weight");
    let cfg = ModelConfig::from_gguf(g.metadata(), has_output, 262144, &path).unwrap();
    let shape = (cfg.arch, cfg.num_layers, cfg.hidden_size, cfg.intermediate_size, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim, cfg.vocab_size);
    assert_eq!(shape, (Arch::Gemma3, 18, 640, 2048, 4, 1, 256, 262144));
    assert_eq!((cfg.rope_theta, cfg.rope_local_theta, cfg.rope_scaling, cfg.sliding_window), (1e6, Some(10000.0), None, Some(512)));
    assert!((cfg.rms_norm_eps - 1e-6).abs() < 1e-9 && cfg.tie_word_embeddings && cfg.query_pre_attn_scalar == Some(256.0));
    let global: Vec<usize> = (0..18).filter(|&l| cfg.window(l).is_none()).collect();
    assert_eq!(global, [5, 11, 17]);

    let mut names = vec!["model.embed_tokens.weight".to_string(), "model.norm.weight".to_string()];
    for l in 0..cfg.num_layers {
        for n in [
            "input_layernorm",
            "self_attn.q_proj",
            "self_attn.k_proj",
            "self_attn.v_proj",
            "self_attn.q_norm",
            "self_attn.k_norm",
            "self_attn.o_proj",
            "post_attention_layernorm",
            "pre_feedforward_layernorm",
            "mlp.gate_proj",
            "mlp.up_proj",
            "mlp.down_proj",
            "post_feedforward_layernorm",
        ] {
            names.push(format!("model.layers.{l}.{n}.weight"));
        }
    }
    let mut file_names: Vec<String> = names.iter().map(|n| g.tensor_name(n).unwrap()).collect();
    assert!(names.iter().all(|n| g.has(n)), "a tensor the runtime loads is missing");
    file_names.sort();
    let mut all: Vec<String> = g.tensor_names().map(String::from).collect();
    all.sort();
    assert_eq!(file_names, all, "every tensor of the file is loaded, once");
    // Norms are F32: they load now, and hold the factor itself (llama.cpp adds Gemma's 1 when converting).
    let q_norm = g.vector("model.layers.0.self_attn.q_norm.weight", 256).unwrap();
    assert_eq!(q_norm.len(), 256);
    assert_eq!(g.tensor_name("model.layers.3.post_attention_layernorm.weight").as_deref(), Some("blk.3.post_attention_norm.weight"));
    assert_eq!(g.tensor_name("model.layers.3.pre_feedforward_layernorm.weight").as_deref(), Some("blk.3.ffn_norm.weight"));
}

/// An export writes Hugging Face's form back: the same tensors (Gemma's norms as `w`, not the runtime's `1 + w`)
/// and a config.json that loads as the same config.
#[test]
fn hf_export_gives_back_the_checkpoint_for_qwen3_and_gemma3() {
    use autodidact::export::hf::hf_tensors;
    for (arch, seed) in [("qwen3", 8), ("gemma3_text", 9)] {
        let (dir, m) = tiny_model(arch, seed);
        let mut exported = hf_tensors(&m.weights, &m.cfg);
        let mut original = tiny::tensors(arch, seed);
        exported.sort_by(|a, b| a.0.cmp(&b.0));
        original.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(exported.iter().map(|t| (&t.0, &t.1)).collect::<Vec<_>>(), original.iter().map(|t| (&t.0, &t.1)).collect::<Vec<_>>(), "{arch}");
        for (e, o) in exported.iter().zip(&original) {
            assert!(max_abs_diff(&e.2, &o.2) < 1e-6, "{arch}: {}", e.0);
        }
        let config = dir.path().join("exported.json");
        std::fs::write(&config, m.cfg.to_hf_json("float32").to_string()).unwrap();
        assert_eq!(ModelConfig::from_hf_json(&config).unwrap(), m.cfg, "{arch}");
    }
}
