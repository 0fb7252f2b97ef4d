//! Hugging Face model folders: config.json, model.safetensors, tokenizer.json, tokenizer_config.json.
use std::collections::HashMap;
use std::path::Path;

use anyhow::{bail, Context};
use safetensors::tensor::TensorView;
use safetensors::Dtype;

use crate::model::weights::Weights;
use crate::model::LoadedModel;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SaveDType {
    F32,
    Bf16,
    F16,
}

impl SaveDType {
    fn torch_name(self) -> &'static str {
        match self {
            SaveDType::F32 => "float32",
            SaveDType::Bf16 => "bfloat16",
            SaveDType::F16 => "float16",
        }
    }
    fn encode(self, v: &[f32]) -> (Dtype, Vec<u8>) {
        match self {
            SaveDType::F32 => (Dtype::F32, v.iter().flat_map(|x| x.to_le_bytes()).collect()),
            SaveDType::Bf16 => (Dtype::BF16, v.iter().flat_map(|x| half::bf16::from_f32(*x).to_le_bytes()).collect()),
            SaveDType::F16 => (Dtype::F16, v.iter().flat_map(|x| half::f16::from_f32(*x).to_le_bytes()).collect()),
        }
    }
}

/// Every tensor of `w` under its HF name, dequantized to f32, `(name, shape, values)`, as a Hugging Face
/// checkpoint stores it. Stacked projections are split back into q/k/v and gate/up.
pub fn hf_tensors(w: &Weights, cfg: &crate::model::ModelConfig) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    // The runtime keeps every norm as the factor it multiplies by; Gemma's checkpoints store that factor minus 1.
    named_tensors(w, cfg, cfg.arch.is_gemma())
}

/// [`hf_tensors`] with the norms as the runtime keeps them (the factor itself) unless `gemma_minus_one`.
pub fn named_tensors(w: &Weights, cfg: &crate::model::ModelConfig, gemma_minus_one: bool) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    let (h, q, kv, i, hd) = (cfg.hidden_size, cfg.q_dim(), cfg.kv_dim(), cfg.intermediate_size, cfg.head_dim);
    let gemma = gemma_minus_one;
    let norm = |w: &[f32]| -> Vec<f32> { w.iter().map(|x| if gemma { x - 1.0 } else { *x }).collect() };
    let mut out = vec![("model.embed_tokens.weight".to_string(), vec![cfg.vocab_size, h], w.embed.to_f32())];
    for (l, lw) in w.layers.iter().enumerate() {
        let p = |n: &str| format!("model.layers.{l}.{n}");
        let qkv = lw.qkv.to_f32();
        out.push((p("self_attn.q_proj.weight"), vec![q, h], qkv[..q * h].to_vec()));
        out.push((p("self_attn.k_proj.weight"), vec![kv, h], qkv[q * h..(q + kv) * h].to_vec()));
        out.push((p("self_attn.v_proj.weight"), vec![kv, h], qkv[(q + kv) * h..].to_vec()));
        if let Some(b) = &lw.qkv_bias {
            out.push((p("self_attn.q_proj.bias"), vec![q], b[..q].to_vec()));
            out.push((p("self_attn.k_proj.bias"), vec![kv], b[q..q + kv].to_vec()));
            out.push((p("self_attn.v_proj.bias"), vec![kv], b[q + kv..].to_vec()));
        }
        out.push((p("self_attn.o_proj.weight"), vec![h, q], lw.o.to_f32()));
        let gu = lw.gate_up.to_f32();
        out.push((p("mlp.gate_proj.weight"), vec![i, h], gu[..i * h].to_vec()));
        out.push((p("mlp.up_proj.weight"), vec![i, h], gu[i * h..].to_vec()));
        out.push((p("mlp.down_proj.weight"), vec![h, i], lw.down.to_f32()));
        out.push((p("input_layernorm.weight"), vec![h], norm(&lw.attn_norm)));
        if let Some((qn, kn)) = &lw.qk_norm {
            out.push((p("self_attn.q_norm.weight"), vec![hd], norm(qn)));
            out.push((p("self_attn.k_norm.weight"), vec![hd], norm(kn)));
        }
        match &lw.post_norms {
            Some((attn, mlp)) => {
                out.push((p("post_attention_layernorm.weight"), vec![h], norm(attn)));
                out.push((p("pre_feedforward_layernorm.weight"), vec![h], norm(&lw.mlp_norm)));
                out.push((p("post_feedforward_layernorm.weight"), vec![h], norm(mlp)));
            }
            None => out.push((p("post_attention_layernorm.weight"), vec![h], norm(&lw.mlp_norm))),
        }
    }
    out.push(("model.norm.weight".to_string(), vec![h], norm(&w.norm)));
    if let Some(head) = &w.lm_head {
        out.push(("lm_head.weight".to_string(), vec![cfg.vocab_size, h], head.to_f32()));
    }
    out
}

/// Writes `tensors` as one safetensors file.
pub fn save_safetensors(path: &Path, tensors: &[(String, Vec<usize>, Vec<f32>)], dtype: SaveDType) -> anyhow::Result<()> {
    let encoded: Vec<(String, Vec<usize>, Dtype, Vec<u8>)> = tensors
        .iter()
        .map(|(n, s, v)| {
            let (dt, b) = dtype.encode(v);
            (n.clone(), s.clone(), dt, b)
        })
        .collect();
    let views: Vec<(String, TensorView)> =
        encoded.iter().map(|(n, s, dt, b)| Ok((n.clone(), TensorView::new(*dt, s.clone(), b)?))).collect::<Result<_, safetensors::SafeTensorError>>()?;
    let meta: HashMap<String, String> = [("format".to_string(), "pt".to_string())].into();
    safetensors::serialize_to_file(views, Some(meta), path).with_context(|| format!("writing {}", path.display()))
}

/// Writes `model` (its weights replaced by `weights` when given, e.g. merged with an adapter) as a HF folder.
pub fn write_hf_folder(model: &LoadedModel, weights: Option<&Weights>, out: &Path, dtype: SaveDType) -> anyhow::Result<()> {
    let cfg = model.config();
    let w = weights.unwrap_or(&model.transformer.weights);
    if out.exists() && !out.is_dir() {
        bail!("{} exists and is not a folder", out.display());
    }
    crate::atomic::write_dir(out, |dir| -> anyhow::Result<()> {
        let mut config = cfg.to_hf_json(dtype.torch_name());
        config["_name_or_path"] = serde_json::json!(model.base_name);
        std::fs::write(dir.join("config.json"), serde_json::to_string_pretty(&config)?)?;
        save_safetensors(&dir.join("model.safetensors"), &hf_tensors(w, cfg), dtype)?;
        std::fs::write(dir.join("tokenizer.json"), model.tokenizer.to_tokenizer_json()?)?;
        let template = (!model.template_is_fallback).then(|| model.template.source());
        let tok_cfg = model.tokenizer.tokenizer_config_json(template);
        std::fs::write(dir.join("tokenizer_config.json"), serde_json::to_string_pretty(&tok_cfg)?)?;
        let gen = serde_json::json!({
            "bos_token_id": model.tokenizer.bos_id(),
            "eos_token_id": model.tokenizer.stop_ids(),
        });
        std::fs::write(dir.join("generation_config.json"), serde_json::to_string_pretty(&gen)?)?;
        Ok(())
    })
}
