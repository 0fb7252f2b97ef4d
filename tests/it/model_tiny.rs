//! The runtime on tiny generated models: logits against candle-transformers' Llama and Qwen2 on the same
//! weights, every supported GGUF tensor type, and clear errors for bad input.
use super::common;

use std::path::Path;

use autodidact::model::gguf::GgufFile;
use autodidact::model::weights::Weights;
use autodidact::model::{LoadedModel, ModelConfig, Transformer};
use candle_core::quantized::gguf_file::Value;
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{DType, Device, Tensor};
use common::tiny;
use common::{all_logits, load_dir, max_abs_diff};

const TOKENS: [u32; 12] = [257, 72, 101, 108, 108, 111, 258, 10, 257, 97, 115, 115];

#[test]
fn tiny_llama_matches_candle_llama() {
    use candle_transformers::models::llama::{Cache, Llama, LlamaConfig};
    let dir = tempfile::tempdir().unwrap();
    tiny::write_hf(dir.path(), "llama", 1);
    let ours = all_logits(&load_dir(dir.path()), &TOKENS);

    let cfg: LlamaConfig = serde_json::from_value(tiny::config_json("llama")).unwrap();
    let cfg = cfg.into_config(false);
    let vb = unsafe { candle_nn::VarBuilder::from_mmaped_safetensors(&[dir.path().join("model.safetensors")], DType::F32, &Device::Cpu).unwrap() };
    let reference = Llama::load(vb, &cfg).unwrap();
    let mut cache = Cache::new(true, DType::F32, &cfg, &Device::Cpu).unwrap();
    let mut theirs = Vec::new();
    for (pos, &t) in TOKENS.iter().enumerate() {
        let x = Tensor::new(&[[t]], &Device::Cpu).unwrap();
        theirs.extend(reference.forward(&x, pos, &mut cache).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap());
    }
    let d = max_abs_diff(&ours, &theirs);
    assert!(d < 1e-4, "max |diff| {d}");
}

#[test]
fn tiny_qwen2_with_biases_matches_candle_qwen2() {
    use candle_transformers::models::qwen2::{Config, ModelForCausalLM};
    let dir = tempfile::tempdir().unwrap();
    tiny::write_hf(dir.path(), "qwen2", 2);
    let ours = all_logits(&load_dir(dir.path()), &TOKENS);

    let cfg: Config = serde_json::from_value(tiny::config_json("qwen2")).unwrap();
    let vb = unsafe { candle_nn::VarBuilder::from_mmaped_safetensors(&[dir.path().join("model.safetensors")], DType::F32, &Device::Cpu).unwrap() };
    let mut reference = ModelForCausalLM::new(&cfg, vb).unwrap();
    let mut theirs = Vec::new();
    for (pos, &t) in TOKENS.iter().enumerate() {
        let x = Tensor::new(&[[t]], &Device::Cpu).unwrap();
        theirs.extend(reference.forward(&x, pos).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap());
    }
    let d = max_abs_diff(&ours, &theirs);
    assert!(d < 1e-4, "max |diff| {d}");
}

/// Writes the tiny llama as GGUF with every matrix in `dtype`, Q/K rows permuted the way llama.cpp does.
fn write_gguf(path: &Path, dtype: GgmlDType) {
    let ts = tiny::tensors("llama", 1);
    let names = |hf: &str| autodidact::model::gguf::gguf_name(hf).unwrap();
    let permute = |v: &[f32], heads: usize| -> Vec<f32> {
        let hd = tiny::HEAD_DIM;
        let mut out = vec![0f32; v.len()];
        for h in 0..heads {
            for i in 0..hd / 2 {
                for j in 0..2 {
                    let (dst, src) = (h * hd + 2 * i + j, h * hd + j * hd / 2 + i);
                    out[dst * tiny::HIDDEN..(dst + 1) * tiny::HIDDEN].copy_from_slice(&v[src * tiny::HIDDEN..(src + 1) * tiny::HIDDEN]);
                }
            }
        }
        out
    };
    let mut qts = Vec::new();
    for (n, shape, v) in &ts {
        let v = if n.ends_with("q_proj.weight") {
            permute(v, tiny::HEADS)
        } else if n.ends_with("k_proj.weight") {
            permute(v, tiny::KV_HEADS)
        } else {
            v.clone()
        };
        let t = Tensor::from_vec(v, shape.as_slice(), &Device::Cpu).unwrap();
        let dt = if shape.len() == 2 { dtype } else { GgmlDType::F32 };
        qts.push((names(n), QTensor::quantize(&t, dt).unwrap()));
    }
    let md: Vec<(&str, Value)> = vec![
        ("general.architecture", Value::String("llama".into())),
        ("llama.attention.head_count", Value::U32(tiny::HEADS as u32)),
        ("llama.attention.head_count_kv", Value::U32(tiny::KV_HEADS as u32)),
        ("llama.embedding_length", Value::U32(tiny::HIDDEN as u32)),
        ("llama.feed_forward_length", Value::U32(tiny::INTER as u32)),
        ("llama.block_count", Value::U32(tiny::LAYERS as u32)),
        ("llama.context_length", Value::U32(tiny::CONTEXT as u32)),
        ("llama.rope.freq_base", Value::F32(10000.0)),
        ("llama.attention.layer_norm_rms_epsilon", Value::F32(1e-6)),
    ];
    let md_refs: Vec<(&str, &Value)> = md.iter().map(|(k, v)| (*k, v)).collect();
    let t_refs: Vec<(&str, &QTensor)> = qts.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let mut f = std::fs::File::create(path).unwrap();
    candle_core::quantized::gguf_file::write(&mut f, &md_refs, &t_refs).unwrap();
}

fn load_gguf(path: &Path) -> autodidact::model::Result<Transformer> {
    let g = GgufFile::open(path)?;
    let cfg = ModelConfig::from_gguf(g.metadata(), false, tiny::VOCAB, path)?;
    Ok(Transformer::new(cfg.clone(), Weights::load(&g, &cfg)?))
}

/// The same model with every matrix dequantized to f32: isolates the kernels' error from the weights' rounding.
fn dequantized(m: &Transformer) -> Transformer {
    use autodidact::model::linear::{Matrix, WeightData};
    let mut w = Weights { embed: m.weights.embed.clone(), layers: Vec::new(), norm: m.weights.norm.clone(), lm_head: m.weights.lm_head.clone() };
    let deq = |x: &Matrix| Matrix { rows: x.rows, cols: x.cols, data: WeightData::F32(x.to_f32()) };
    w.embed = deq(&w.embed);
    for l in &m.weights.layers {
        w.layers.push(autodidact::model::weights::LayerWeights {
            attn_norm: l.attn_norm.clone(),
            qkv: deq(&l.qkv),
            qkv_bias: l.qkv_bias.clone(),
            o: deq(&l.o),
            mlp_norm: l.mlp_norm.clone(),
            gate_up: deq(&l.gate_up),
            down: deq(&l.down),
            qk_norm: l.qk_norm.clone(),
            post_norms: l.post_norms.clone(),
        });
    }
    Transformer::new(m.cfg.clone(), w)
}

#[test]
fn every_gguf_tensor_type_loads_and_agrees_with_f32() {
    let dir = tempfile::tempdir().unwrap();
    tiny::write_hf(&dir.path().join("hf"), "llama", 1);
    let reference = all_logits(&load_dir(&dir.path().join("hf")), &TOKENS);
    let scale = reference.iter().fold(0f32, |a, x| a.max(x.abs()));
    // (type, kernel tolerance vs its own dequantized weights, weight-rounding tolerance vs the f32 model)
    for (dtype, kernel_tol, weight_tol) in [
        (GgmlDType::F32, 0.0, 0.0),
        (GgmlDType::F16, 0.0, 0.02),
        (GgmlDType::Q8_0, 0.03, 0.05),
        (GgmlDType::Q4_0, 0.03, 0.5),
        (GgmlDType::Q4_1, 0.03, 0.5),
        (GgmlDType::Q5_0, 0.03, 0.5),
        (GgmlDType::Q5_1, 0.03, 0.5),
    ] {
        let path = dir.path().join(format!("tiny-{dtype:?}.gguf"));
        write_gguf(&path, dtype);
        let m = load_gguf(&path).unwrap();
        let logits = all_logits(&m, &TOKENS);
        let exact = all_logits(&dequantized(&m), &TOKENS);
        let (dk, dw) = (max_abs_diff(&logits, &exact), max_abs_diff(&exact, &reference));
        eprintln!("{dtype:?}: int8 kernels vs f32 on the same weights {dk}, rounded weights vs f32 model {dw} (logit scale {scale})");
        // F32 goes through the same f32 path as the safetensors folder: bit-identical once Q/K are un-permuted.
        assert!(dk <= kernel_tol * scale, "{dtype:?}: kernel max |diff| {dk}");
        assert!(dw <= weight_tol * scale, "{dtype:?}: weight rounding max |diff| {dw}");
    }
}

#[test]
fn bad_model_files_give_errors_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.gguf");
    write_gguf(&good, GgmlDType::Q8_0);
    let bytes = std::fs::read(&good).unwrap();

    let truncated = dir.path().join("truncated.gguf");
    std::fs::write(&truncated, &bytes[..bytes.len() - 1000]).unwrap();
    let e = load_gguf(&truncated).err().unwrap().to_string();
    assert!(e.contains("truncated.gguf") && e.contains("truncated"), "{e}");

    let corrupt = dir.path().join("corrupt.gguf");
    std::fs::write(&corrupt, b"this is not a model file at all").unwrap();
    let e = LoadedModel::load(corrupt.to_str().unwrap()).err().unwrap().to_string();
    assert!(e.contains("corrupt.gguf") && e.contains("not a valid GGUF"), "{e}");

    let q8_1 = dir.path().join("q8_1.gguf");
    write_gguf(&q8_1, GgmlDType::Q8_1);
    let e = load_gguf(&q8_1).err().unwrap().to_string();
    assert!(e.contains("q8_1.gguf") && e.contains("unsupported type Q8_1") && e.contains("Q4_K, Q5_K, Q6_K"), "{e}");

    // A type the runtime does not read (IQ2_XXS = 16) on one tensor: the error names the tensor and the type.
    let mut iq = bytes.clone();
    let name = b"blk.0.ffn_down.weight";
    let at = iq.windows(name.len()).position(|w| w == name).unwrap() + name.len();
    let dims = u32::from_le_bytes(iq[at..at + 4].try_into().unwrap()) as usize;
    let ty = at + 4 + 8 * dims;
    iq[ty..ty + 4].copy_from_slice(&16u32.to_le_bytes());
    let iq_path = dir.path().join("iq2.gguf");
    std::fs::write(&iq_path, &iq).unwrap();
    let e = load_gguf(&iq_path).err().unwrap().to_string();
    assert!(e.contains("iq2.gguf") && e.contains("blk.0.ffn_down.weight") && e.contains("IQ2_XXS (type id 16)") && e.contains("IQ4_XS"), "{e}");

    let hf = dir.path().join("gpt2");
    tiny::write_hf(&hf, "llama", 1);
    let mut cfg = tiny::config_json("llama");
    cfg["model_type"] = "gpt2".into();
    std::fs::write(hf.join("config.json"), cfg.to_string()).unwrap();
    let e = LoadedModel::load(hf.to_str().unwrap()).err().unwrap().to_string();
    assert!(e.contains("config.json") && e.contains("unsupported architecture `gpt2`"), "{e}");

    let e = LoadedModel::load(dir.path().join("missing.gguf").to_str().unwrap()).err().unwrap().to_string();
    assert!(e.contains("missing.gguf"), "{e}");
}

#[test]
fn hf_folder_loads_with_tokenizer_and_template() {
    let dir = tempfile::tempdir().unwrap();
    tiny::write_hf(dir.path(), "qwen2", 3);
    let m = LoadedModel::load(dir.path().to_str().unwrap()).unwrap();
    assert!(!m.template_is_fallback);
    let ids = m.encode_chat(&[serde_json::json!({"role": "user", "content": "hi"})], None, true).unwrap();
    assert_eq!(ids.len(), 21, "3 special tokens + 18 bytes: {ids:?}");
    assert_eq!((ids[0], ids[8], ids[10]), (257, 258, 257));
    assert_eq!(m.tokenizer.decode(&ids, false).unwrap(), "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n");
    assert!(m.tokenizer.is_stop(258));
}

#[test]
fn prompt_longer_than_context_is_an_error() {
    use autodidact::sample::{generate, GenRequest, SamplingParams};
    let dir = tempfile::tempdir().unwrap();
    tiny::write_hf(dir.path(), "llama", 1);
    let m = LoadedModel::load(dir.path().to_str().unwrap()).unwrap();
    let prompt: Vec<u32> = (0..tiny::CONTEXT as u32 + 5).map(|i| i % 200).collect();
    let e = generate(&m.transformer, &m.tokenizer, &[GenRequest { prompt, stream: 0 }], &SamplingParams::default(), &mut |_| {}).err().unwrap().to_string();
    assert!(e.contains("does not fit the context of 96 tokens"), "{e}");
}
