//! `autodidact bench`: prompt and decode speed of the runtime, medians over repeats.
use autodidact::stats::{median, peak_rss_mb};
use std::time::Instant;

use clap::Args;
use serde_json::json;

use super::{simd_json, simd_line, ModelArgs};
use autodidact::model::{KvCache, Logits, SeqInput, Transformer};
use autodidact::sample::params::argmax;
use autodidact::simd::peak::fma_peak_gflops;

#[derive(Args, Debug)]
pub struct BenchArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Prompt length for the prompt-processing measurement.
    #[arg(long, default_value_t = 256)]
    pub prompt_tokens: usize,
    /// Decode steps per measurement.
    #[arg(long, default_value_t = 64)]
    pub decode_tokens: usize,
    /// Batch sizes for batched decode (aggregate tokens/s).
    #[arg(long, value_delimiter = ',', default_value = "1,8,32")]
    pub batch: Vec<usize>,
    /// Repeats per measurement; medians are reported (the machine may be shared).
    #[arg(long, default_value_t = 3)]
    pub repeats: usize,
    #[arg(long)]
    pub json: bool,
}

/// Decode runs start from prompts of this many tokens (staggered text, as in rollouts), whatever --prompt-tokens
/// says.
const DECODE_PROMPT: usize = 64;

fn prefill(m: &Transformer, toks: &[u32]) -> anyhow::Result<(KvCache, Vec<f32>)> {
    let mut c = m.new_cache();
    let l = m.forward(&mut [SeqInput { cache: &mut c, tokens: toks, logits: Logits::Last }])?.remove(0);
    Ok((c, l))
}

/// Greedy decode of `steps` tokens for every sequence at once; returns aggregate tokens/s.
fn decode(m: &Transformer, seqs: &mut [(KvCache, Vec<f32>)], steps: usize) -> anyhow::Result<f64> {
    let t = Instant::now();
    for _ in 0..steps {
        let next: Vec<[u32; 1]> = seqs.iter().map(|(_, l)| [argmax(l) as u32]).collect();
        let mut batch: Vec<SeqInput> = seqs.iter_mut().zip(&next).map(|((c, _), t)| SeqInput { cache: c, tokens: t, logits: Logits::Last }).collect();
        let out = m.forward(&mut batch)?;
        for ((_, l), o) in seqs.iter_mut().zip(out) {
            *l = o;
        }
    }
    Ok((steps * seqs.len()) as f64 / t.elapsed().as_secs_f64())
}

pub fn run(a: BenchArgs) -> anyhow::Result<()> {
    let model = a.model.load()?;
    let m = &model.transformer;
    let text = "The quick brown fox jumps over the lazy dog while 12 engineers measure tokens per second. ";
    let need = a.prompt_tokens.max(DECODE_PROMPT + 16);
    let base = model.tokenizer.encode(&text.repeat(1 + need / 8))?;
    if base.len() < need || a.prompt_tokens == 0 {
        anyhow::bail!("could not build a {}-token prompt", a.prompt_tokens);
    }
    let prompt = &base[..a.prompt_tokens];
    let repeats = a.repeats.max(1);
    let mut prompt_tps = Vec::new();
    for _ in 0..repeats {
        let t = Instant::now();
        prefill(m, prompt)?;
        prompt_tps.push(prompt.len() as f64 / t.elapsed().as_secs_f64());
    }
    let mut batched = Vec::new();
    for &b in &a.batch {
        let mut runs = Vec::new();
        for _ in 0..repeats {
            // Different prompt lengths per sequence, as in rollouts.
            let mut seqs = (0..b).map(|i| prefill(m, &base[i % 16..DECODE_PROMPT + i % 16])).collect::<anyhow::Result<Vec<_>>>()?;
            runs.push(decode(m, &mut seqs, a.decode_tokens)?);
        }
        batched.push((b, median(&runs)));
    }
    let peak = peak_rss_mb();
    let threads = rayon::current_num_threads();
    // Throughput as arithmetic: the multiply-adds each measurement performs, against the path's measured peak.
    let cfg = &m.cfg;
    let p = a.prompt_tokens;
    let prompt_flops =
        ((1..=p).map(|ctx| cfg.flops_per_token(ctx, false)).sum::<f64>() + cfg.flops_per_token(0, true) - cfg.flops_per_token(0, false)) / p as f64;
    let decode_flops = (0..a.decode_tokens).map(|s| cfg.flops_per_token(DECODE_PROMPT + s + 1, true)).sum::<f64>() / a.decode_tokens.max(1) as f64;
    let fma_peak = fma_peak_gflops(m.simd, repeats);
    let gflops = |tps: f64, per_token: f64| tps * per_token / 1e9;
    let prompt_gflops = gflops(median(&prompt_tps), prompt_flops);
    if a.json {
        println!(
            "{}",
            serde_json::to_string(&json!({
                "model": a.model.model, "threads": threads, "repeats": repeats,
                "prompt_tokens": a.prompt_tokens, "prompt_tokens_per_second": median(&prompt_tps), "prompt_gflops": prompt_gflops,
                "decode": batched.iter().map(|(b, t)| json!({"batch": b, "tokens_per_second": t, "gflops": gflops(*t, decode_flops)})).collect::<Vec<_>>(),
                "fma_peak_gflops": fma_peak,
                "peak_rss_mb": peak, "simd": simd_json(),
            }))?
        );
    } else {
        println!("model            {} ({threads} threads, median of {repeats})", a.model.model);
        println!("kernels          {}", simd_line());
        let share = |g: f64| match fma_peak {
            Some(p) => format!("{g:.1} GFLOP/s, {:.0}% of peak", 100.0 * g / p),
            None => format!("{g:.1} GFLOP/s"),
        };
        println!("prompt           {:.1} tokens/s ({} tokens; {})", median(&prompt_tps), a.prompt_tokens, share(prompt_gflops));
        for (b, t) in &batched {
            println!("decode batch {b:<3} {t:.1} tokens/s aggregate ({:.1} per sequence; {})", t / *b as f64, share(gflops(*t, decode_flops)));
        }
        match fma_peak {
            Some(p) => println!("peak             {p:.1} GFLOP/s: this path's fused multiply-adds in registers, on {threads} threads at once"),
            None => println!("peak             not measured: the portable path has no fused multiply-add"),
        }
        if let Some(p) = peak {
            println!("peak memory      {p:.0} MB RSS");
        }
    }
    Ok(())
}
