//! `autodidact compare`: loop runs side by side, grouped into arms by name (`ARM-sSEED`), with intervals.
use std::path::PathBuf;

use clap::Args;

use autodidact::pipeline::compare::{load_runs, markdown, summarize, write};

#[derive(Args, Debug)]
pub struct CompareArgs {
    /// Run folders (e.g. runs/compare-rl/*-s*).
    #[arg(required = true)]
    pub runs: Vec<PathBuf>,
    /// The arm the others are compared with (default: the first run's arm).
    #[arg(long)]
    pub reference: Option<String>,
    /// Where compare.md, compare.svg and compare.json go (default: the first run's parent folder).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Print the summaries as JSON on stdout instead of the markdown.
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: CompareArgs) -> anyhow::Result<()> {
    let runs = load_runs(&a.runs)?;
    let reference = a.reference.clone().unwrap_or_else(|| runs[0].arm.clone());
    anyhow::ensure!(runs.iter().any(|r| r.arm == reference), "--reference {reference}: no run of that arm among the folders given");
    let arms = summarize(&runs, Some(&reference));
    let out = a.out.clone().unwrap_or_else(|| a.runs[0].parent().map(PathBuf::from).unwrap_or_default());
    write(&out, &arms, &reference)?;
    if a.json {
        println!("{}", serde_json::to_string(&arms)?);
    } else {
        print!("{}", markdown(&arms, &reference));
        eprintln!("wrote {}", out.join("compare.md").display());
    }
    Ok(())
}
