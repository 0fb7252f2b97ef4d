//! `autodidact export`: an adapter as a PEFT adapter folder or a llama.cpp LoRA GGUF, or merged into a full
//! Hugging Face model folder or a GGUF model file (a model alone converts to GGUF too).
use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::Args;

use autodidact::export::gguf::{lora_gguf, model_gguf, GgufType};
use autodidact::export::hf::{write_hf_folder, SaveDType};
use autodidact::model::lora::LoraAdapter;

#[derive(Args, Debug)]
#[command(group = clap::ArgGroup::new("outputs").required(true).multiple(true).args(["peft", "merged", "gguf", "lora_gguf"]))]
pub struct ExportArgs {
    /// The base model the adapter was trained on.
    #[arg(long, default_value = super::DEFAULT_MODEL)]
    pub model: String,
    /// The adapter folder (e.g. RUN/adapter); it is checked against the model's shapes and base name. Without
    /// it, --gguf writes the model itself.
    #[arg(long, required_unless_present = "gguf")]
    pub adapter: Option<PathBuf>,
    /// Write a PEFT adapter folder here (adapter_model.safetensors + adapter_config.json whose
    /// base_model_name_or_path is the model's base name).
    #[arg(long)]
    pub peft: Option<PathBuf>,
    /// Write a merged Hugging Face model folder here (config.json, model.safetensors, tokenizer files).
    #[arg(long)]
    pub merged: Option<PathBuf>,
    /// Tensor type of the merged weights.
    #[arg(long, value_enum, default_value = "f32")]
    pub dtype: SaveDType,
    /// Write the model, the adapter merged in, as one GGUF file here (llama.cpp, Ollama), tokenizer and chat
    /// template included.
    #[arg(long)]
    pub gguf: Option<PathBuf>,
    /// Tensor type of the GGUF model (norms stay F32).
    #[arg(long, value_enum, default_value = "f16")]
    pub gguf_type: GgufType,
    /// Write the adapter as a llama.cpp LoRA GGUF here (`llama-cli -m BASE.gguf --lora FILE`).
    #[arg(long)]
    pub lora_gguf: Option<PathBuf>,
}

pub fn run(a: ExportArgs) -> anyhow::Result<()> {
    for out in [&a.peft, &a.merged, &a.gguf, &a.lora_gguf].into_iter().flatten() {
        if a.adapter.as_ref().is_some_and(|ad| out.canonicalize().ok() == ad.canonicalize().ok()) {
            bail!("{} is the input adapter; choose another output", out.display());
        }
        if out.canonicalize().ok() == std::path::Path::new(&a.model).canonicalize().ok() {
            bail!("{} is the input model; choose another output", out.display());
        }
    }
    let mut m = super::load_model(&a.model)?;
    let adapter = match &a.adapter {
        Some(dir) => {
            Some(LoraAdapter::load(dir, m.config(), Some(&m.base_name)).with_context(|| format!("adapter {} does not fit model {}", dir.display(), a.model))?)
        }
        None if a.peft.is_some() || a.merged.is_some() || a.lora_gguf.is_some() => bail!("--peft, --merged and --lora-gguf need --adapter"),
        None => None,
    };
    // Both GGUF files are prepared (and every check passed) before anything is written.
    let merged = match (&adapter, a.merged.is_some() || a.gguf.is_some()) {
        (Some(ad), true) => Some(ad.merge(&m.transformer.weights, m.config())?),
        _ => None,
    };
    m.transformer.adapter = None;
    let gguf = match &a.gguf {
        Some(out) => Some((out, model_gguf(&m, merged.as_ref(), a.gguf_type).with_context(|| format!("GGUF {}", out.display()))?)),
        None => None,
    };
    let lora = match (&a.lora_gguf, &adapter) {
        (Some(out), Some(ad)) => Some((out, ad, lora_gguf(&m, ad).with_context(|| format!("LoRA GGUF {}", out.display()))?)),
        _ => None,
    };
    if let Some((out, file)) = gguf {
        file.write_to(out)?;
        let counts: Vec<String> = file.counts.iter().map(|(t, n)| format!("{n} {t}")).collect();
        let what = if merged.is_some() { "merged model" } else { "model" };
        println!("{what} GGUF {} ({} tensors)", out.display(), counts.join(", "));
    }
    if let Some((out, ad, file)) = lora {
        file.write_to(out)?;
        println!("llama.cpp LoRA GGUF {} ({}, rank {}, alpha {})", out.display(), m.config().arch.name(), ad.config.r, ad.config.alpha);
    }
    if let (Some(out), Some(adapter)) = (&a.peft, &adapter) {
        // Written from the checked adapter, so the folder is exactly what PEFT loads onto the base.
        let mut peft = adapter.clone();
        peft.config.base_model = m.base_name.clone();
        peft.save(out).with_context(|| format!("writing {}", out.display()))?;
        println!("peft adapter {} (base {}, rank {}, {} parameters)", out.display(), m.base_name, peft.config.r, peft.num_parameters());
    }
    if let Some(out) = &a.merged {
        write_hf_folder(&m, merged.as_ref(), out, a.dtype)?;
        println!("merged model {} ({:?})", out.display(), a.dtype);
    }
    Ok(())
}
