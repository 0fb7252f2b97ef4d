use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context};
use clap::Args;
use serde_json::{json, Value};

use super::{ModelArgs, SamplingArgs};
use autodidact::progress;
use autodidact::sample::{generate, GenRequest};

#[derive(Args, Debug)]
pub struct GenerateArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// The user message (rendered with the model's chat template).
    #[arg(long, conflicts_with = "messages")]
    pub prompt: Option<String>,
    /// A system message to put before the prompt.
    #[arg(long, requires = "prompt")]
    pub system: Option<String>,
    /// A JSON file with the chat so far: a list of {"role", "content"} messages.
    #[arg(long)]
    pub messages: Option<PathBuf>,
    /// Use the prompt as raw text, without the chat template.
    #[arg(long)]
    pub raw: bool,
    /// Number of samples, decoded together as one batch.
    #[arg(long, short = 'n', default_value_t = 1)]
    pub num_samples: usize,
    #[command(flatten)]
    pub sampling: SamplingArgs,
    /// Print one JSON object with texts, token ids, log-probs and timings.
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: GenerateArgs) -> anyhow::Result<()> {
    let messages: Vec<Value> = match (&a.prompt, &a.messages) {
        (Some(p), None) => {
            let mut m = Vec::new();
            if let Some(s) = &a.system {
                m.push(json!({"role": "system", "content": s}));
            }
            m.push(json!({"role": "user", "content": p}));
            m
        }
        (None, Some(path)) => {
            let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
            let v: Value = serde_json::from_str(&text).map_err(|e| anyhow::anyhow!("{}: line {}: {e}", path.display(), e.line()))?;
            let list = v.as_array().cloned().ok_or_else(|| anyhow::anyhow!("{}: expected a JSON list of messages", path.display()))?;
            for (i, m) in list.iter().enumerate() {
                if m.get("role").and_then(Value::as_str).is_none() {
                    bail!("{}: message {i}: missing string field `role`", path.display());
                }
            }
            list
        }
        _ => bail!("give --prompt TEXT or --messages FILE"),
    };
    if a.num_samples == 0 {
        bail!("--num-samples must be at least 1");
    }
    let model = a.model.load()?;
    let prompt = if a.raw {
        let text = a.prompt.clone().unwrap_or_default();
        model.tokenizer.encode(&text)?
    } else {
        model.encode_chat(&messages, None, true)?
    };
    let params = a.sampling.params();
    let reqs: Vec<GenRequest> = (0..a.num_samples).map(|i| GenRequest { prompt: prompt.clone(), stream: i as u64 }).collect();
    let pb = progress::bar((params.max_new_tokens * a.num_samples) as u64, "generating", a.json);
    let t = Instant::now();
    let outs = generate(&model.transformer, &model.tokenizer, &reqs, &params, &mut |n| pb.inc(n as u64))?;
    pb.finish_and_clear();
    let secs = t.elapsed().as_secs_f64();
    let generated: usize = outs.iter().map(|o| o.tokens.len()).sum();
    let tps = generated as f64 / secs.max(1e-9);
    if a.json {
        println!("{}", serde_json::to_string(&json!({"prompt_tokens": prompt.len(), "outputs": outs, "seconds": secs, "tokens_per_second": tps}))?);
    } else {
        for (i, o) in outs.iter().enumerate() {
            if outs.len() > 1 {
                println!("--- sample {i} ({:?}) ---", o.finish);
            }
            println!("{}", o.text);
        }
    }
    eprintln!("{} prompt tokens, {generated} generated in {secs:.2}s ({tps:.1} tokens/s)", prompt.len());
    Ok(())
}
