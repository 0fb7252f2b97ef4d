//! `autodidact export`: an adapter as a PEFT adapter folder, or merged into a full Hugging Face model folder.
use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::Args;

use autodidact::export::hf::{write_hf_folder, SaveDType};
use autodidact::model::lora::LoraAdapter;

#[derive(Args, Debug)]
pub struct ExportArgs {
    /// The base model the adapter was trained on.
    #[arg(long, default_value = super::DEFAULT_MODEL)]
    pub model: String,
    /// The adapter folder (e.g. RUN/adapter); it is checked against the model's shapes and base name.
    #[arg(long)]
    pub adapter: PathBuf,
    /// Write a PEFT adapter folder here (adapter_model.safetensors + adapter_config.json whose
    /// base_model_name_or_path is the model's base name).
    #[arg(long, required_unless_present = "merged")]
    pub peft: Option<PathBuf>,
    /// Write a merged Hugging Face model folder here (config.json, model.safetensors, tokenizer files).
    #[arg(long)]
    pub merged: Option<PathBuf>,
    /// Tensor type of the merged weights.
    #[arg(long, value_enum, default_value = "f32")]
    pub dtype: SaveDType,
}

pub fn run(a: ExportArgs) -> anyhow::Result<()> {
    for out in [&a.peft, &a.merged].into_iter().flatten() {
        if out.canonicalize().ok() == a.adapter.canonicalize().ok() {
            bail!("{} is the input adapter; choose another output folder", out.display());
        }
    }
    let mut m = super::load_model(&a.model)?;
    let adapter = LoraAdapter::load(&a.adapter, m.config(), Some(&m.base_name))
        .with_context(|| format!("adapter {} does not fit model {}", a.adapter.display(), a.model))?;
    if let Some(out) = &a.peft {
        // Written from the checked adapter, so the folder is exactly what PEFT loads onto the base.
        let mut peft = adapter.clone();
        peft.config.base_model = m.base_name.clone();
        peft.save(out).with_context(|| format!("writing {}", out.display()))?;
        println!("peft adapter {} (base {}, rank {}, {} parameters)", out.display(), m.base_name, peft.config.r, peft.num_parameters());
    }
    if let Some(out) = &a.merged {
        let merged = adapter.merge(&m.transformer.weights, m.config())?;
        m.transformer.adapter = None;
        write_hf_folder(&m, Some(&merged), out, a.dtype)?;
        println!("merged model {} ({:?})", out.display(), a.dtype);
    }
    Ok(())
}
