use std::fmt::Write as _;

use clap::Args;
use serde_json::json;

use autodidact::model::config::Arch;
use autodidact::model::gguf::supported_names;

use super::{simd_json, simd_line, ModelArgs};

#[derive(Args, Debug)]
pub struct InfoArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: InfoArgs) -> anyhow::Result<()> {
    let m = a.model.load()?;
    let cfg = m.config();
    let tok = &m.tokenizer;
    let specials: Vec<_> = tok.special_tokens().iter().map(|s| json!({"token": s, "id": tok.token_to_id(s)})).collect();
    let info = json!({
        "model": a.model.model,
        "source": format!("{:?}", m.source),
        "config": cfg,
        "parameters": cfg.num_parameters(),
        "weight_bytes_in_memory": m.transformer.weights.storage_bytes(),
        "tensor_types": m.tensor_types.iter().map(|(t, n)| json!({"type": t, "count": n})).collect::<Vec<_>>(),
        "tokenizer": {"vocab_size": tok.vocab_size(), "bos": tok.bos_token(), "eos": tok.eos_token(), "stop_ids": tok.stop_ids(), "special_tokens": specials},
        "chat_template": {
            "fallback_chatml": m.template_is_fallback && !cfg.arch.is_gemma(),
            "builtin": m.template_is_fallback.then(|| autodidact::model::builtin_template::builtin_name(cfg.arch)),
            "source": m.template.source(),
        },
        "simd": simd_json(),
        "supported": {"architectures": Arch::ALL.map(Arch::name), "gguf_tensor_types": supported_names()},
    });
    if a.json {
        return print_all(&format!("{}\n", serde_json::to_string_pretty(&info)?));
    }
    let mut out = String::new();
    writeln!(out, "model          {}", a.model.model)?;
    writeln!(
        out,
        "architecture   {} ({} layers, hidden {}, ffn {}, {} heads / {} kv heads, head dim {})",
        cfg.arch.name(),
        cfg.num_layers,
        cfg.hidden_size,
        cfg.intermediate_size,
        cfg.num_heads,
        cfg.num_kv_heads,
        cfg.head_dim
    )?;
    writeln!(out, "parameters     {:.1}M ({} embeddings)", cfg.num_parameters() as f64 / 1e6, if cfg.tie_word_embeddings { "tied" } else { "untied" })?;
    writeln!(
        out,
        "context        {} tokens, rope theta {}{}",
        cfg.max_position_embeddings,
        cfg.rope_theta,
        match cfg.rope_scaling {
            Some(autodidact::model::config::RopeScaling::Llama3(_)) => ", llama3 rope scaling".to_string(),
            Some(autodidact::model::config::RopeScaling::Linear { factor }) => format!(", linear rope scaling x{factor}"),
            None => String::new(),
        }
    )?;
    if let Some(w) = cfg.sliding_window {
        let sliding = cfg.sliding_layers.iter().filter(|&&s| s).count();
        writeln!(
            out,
            "attention      {sliding} of {} layers over a sliding window of {w} tokens (rope theta {}), the others global",
            cfg.num_layers,
            cfg.rope_local_theta.unwrap_or(cfg.rope_theta)
        )?;
    }
    writeln!(out, "tensor types   {}", m.tensor_types.iter().map(|(t, n)| format!("{t} x{n}")).collect::<Vec<_>>().join(", "))?;
    writeln!(out, "in memory      {:.1} MB of weights", m.transformer.weights.storage_bytes() as f64 / 1e6)?;
    writeln!(out, "vocab          {} tokens, bos {:?}, eos {:?}, stop ids {:?}", tok.vocab_size(), tok.bos_token(), tok.eos_token(), tok.stop_ids())?;
    let specials = tok.special_tokens();
    // Gemma's vocabulary reserves thousands of `<unusedN>` special tokens: the first few say enough.
    let shown = specials.iter().take(24).map(String::as_str).collect::<Vec<_>>().join(" ");
    let more = if specials.len() > 24 { format!(" ... ({} in all)", specials.len()) } else { String::new() };
    writeln!(out, "special tokens {shown}{more}")?;
    writeln!(out, "kernels        {}", simd_line())?;
    writeln!(out, "supported      architectures {}; GGUF tensor types {}", Arch::supported(), supported_names().join(", "))?;
    writeln!(
        out,
        "chat template  {}",
        if m.template_is_fallback {
            format!("none in the checkpoint: the built-in {} template", autodidact::model::builtin_template::builtin_name(cfg.arch))
        } else {
            format!("{} chars, from the checkpoint", m.template.source().len())
        }
    )?;
    writeln!(out, "{}", m.template.source())?;
    print_all(&out)
}

/// Writes `text` to stdout at once. A reader that stops early (`autodidact info | head`) is not an error.
fn print_all(text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}
