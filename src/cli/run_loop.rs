//! `autodidact loop --config configs/NAME.toml`: the whole self-distillation loop, resumable.
use std::path::PathBuf;

use clap::Args;

use autodidact::pipeline::config::LoopConfig;
use autodidact::pipeline::records::overall;
use autodidact::pipeline::{report, run_loop};

#[derive(Args, Debug)]
pub struct LoopArgs {
    /// The loop's TOML config (see configs/); rerunning the same command resumes the run.
    #[arg(long)]
    pub config: PathBuf,
    /// Print every round's record as one JSON array on stdout (and hide progress).
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: LoopArgs) -> anyhow::Result<()> {
    let cfg = LoopConfig::load(&a.config)?;
    let t0 = std::time::Instant::now();
    let records = run_loop(&cfg, a.json)?;
    if a.json {
        println!("{}", serde_json::to_string(&records)?);
        return Ok(());
    }
    let dir = cfg.run_dir();
    for r in &records {
        let nf = r.test_no_fewshot.as_ref().map_or(String::new(), |t| format!(", without few-shot {:.1}%", 100.0 * overall(t).0));
        let gate = r.gate.as_ref().map_or(String::new(), |g| format!(" [{}]", if g.promoted { "kept" } else { "rolled back" }));
        let dev = r.dev.as_ref().map_or(String::new(), |d| format!("dev success {:.1}%, ", 100.0 * overall(d).0));
        println!("round {}: {dev}test success {:.1}%{nf}{gate}", r.round, 100.0 * r.success());
    }
    if let (Some(base), Some(best)) = (records.first(), report::best(&records)) {
        println!(
            "best kept round ({}): {}, test success {:.1}% ({:+.1} points over the base model)",
            report::best_by(&records),
            best.round,
            100.0 * best.success(),
            100.0 * (best.success() - base.success())
        );
    }
    println!("report: {} (this run {:.1} min)", dir.join("report.md").display(), t0.elapsed().as_secs_f64() / 60.0);
    Ok(())
}
