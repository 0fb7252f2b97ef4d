//! `autodidact filter`: trajectories -> DIR/dataset.jsonl + filter_report.json + mask_audit.json, and
//! `--show-row N` to read one row back with its trained spans marked.
use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::Args;

use autodidact::data::dataset::{read_dataset, spans};
use autodidact::data::jsonl::read_jsonl;
use autodidact::data::{ReadMode, Trajectory};
use autodidact::distil::{filter_to_dir, ChatEncoder, DropReason, FilterParams, AUDIT_FILE, DATASET_FILE, REPORT_FILE};

#[derive(Args, Debug)]
pub struct FilterArgs {
    /// Trajectories written by `rollout` (JSONL).
    #[arg(long, required_unless_present = "show_row")]
    pub trajectories: Option<PathBuf>,
    /// Output folder: dataset.jsonl, filter_report.json and mask_audit.json (each written atomically).
    #[arg(long)]
    pub out: PathBuf,
    /// Keep at most this many episodes per task (the shortest: fewest turns, then fewest generated tokens).
    #[arg(long, default_value_t = 1)]
    pub keep_per_task: usize,
    /// Cap every difficulty of a suite at the count of its least represented (non-empty) difficulty.
    #[arg(long)]
    pub balance: bool,
    /// Context distillation: train without the few-shot examples in the context, on the same sampled ids
    /// (needs --model, whose chat template rendered the rollout).
    #[arg(long, requires = "model")]
    pub drop_fewshot: bool,
    /// The model that produced the trajectories: its tokenizer checks end-of-turn ids in the audit, decodes
    /// --show-row, and its chat template re-renders the prompt for --drop-fewshot.
    #[arg(long)]
    pub model: Option<String>,
    /// Print row N (0-based) of OUT/dataset.jsonl readably, trained spans marked, and exit.
    #[arg(long)]
    pub show_row: Option<usize>,
    /// With --show-row: ANSI colour for trained spans instead of [[...]] (default: when stdout is a terminal).
    #[arg(long, value_enum, default_value = "auto")]
    pub color: Color,
    /// Print the filter report as one JSON object on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Color {
    Auto,
    Always,
    Never,
}

pub fn run(a: FilterArgs) -> anyhow::Result<()> {
    if let Some(n) = a.show_row {
        return show_row(&a, n);
    }
    let Some(traj_path) = &a.trajectories else { bail!("give --trajectories FILE") };
    if a.keep_per_task == 0 {
        bail!("--keep-per-task must be at least 1");
    }
    let trajs: Vec<Trajectory> = read_jsonl(traj_path, ReadMode::Strict)?.into_items();
    if trajs.is_empty() {
        bail!("{}: no trajectories", traj_path.display());
    }
    let model = a.model.as_deref().map(super::load_model).transpose()?;
    let params = FilterParams { keep_per_task: a.keep_per_task, balance: a.balance };
    let encoder: Option<&dyn ChatEncoder> = match (&model, a.drop_fewshot) {
        (Some(m), true) => Some(m),
        _ => None,
    };
    let stop_ids = model.as_ref().map(|m| m.tokenizer.stop_ids().to_vec());
    let out = filter_to_dir(&trajs, &params, encoder, stop_ids.as_deref(), &a.out)?;
    eprintln!("{}", out.audit.summary());
    if out.rows.is_empty() {
        eprintln!("warning: no episode was kept; the dataset is empty");
    }
    let r = &out.report;
    if a.json {
        println!("{}", serde_json::to_string(&r)?);
    } else {
        println!("kept {} of {} episodes ({} of {} tasks)", r.total.kept, r.total.episodes, r.total.tasks_kept, r.total.tasks);
        for reason in DropReason::ALL {
            let n = r.total.dropped.get(reason.name()).copied().unwrap_or(0);
            if n > 0 {
                println!("  dropped {:<14} {n}", reason.name());
            }
        }
        for (key, g) in &r.by_suite_difficulty {
            println!("  {key:<20} kept {:>4} / {:<4} episodes, {:>3} / {:<3} tasks", g.kept, g.episodes, g.tasks_kept, g.tasks);
        }
    }
    eprintln!("wrote {} ({} rows, {} trained tokens), {REPORT_FILE}, {AUDIT_FILE}", a.out.join(DATASET_FILE).display(), out.rows.len(), out.trained_tokens());
    Ok(())
}

fn show_row(a: &FilterArgs, n: usize) -> anyhow::Result<()> {
    let path = a.out.join(DATASET_FILE);
    let rows = read_dataset(&path)?;
    let row = rows.get(n).with_context(|| format!("{} has {} rows; there is no row {n}", path.display(), rows.len()))?;
    let model = a.model.as_deref().map(super::load_model).transpose()?;
    let color = match a.color {
        Color::Always => true,
        Color::Never => false,
        Color::Auto => std::io::stdout().is_terminal(),
    };
    let (open, close) = if color { ("\x1b[1;32m", "\x1b[0m") } else { ("[[", "]]") };
    println!("row {n}: {} (suite {}, difficulty {}), {} tokens, {} trained", row.id, row.suite, row.difficulty, row.token_ids.len(), row.trained_tokens());
    let mut pos = 0;
    let decode = |ids: &[u32]| -> anyhow::Result<String> {
        Ok(match &model {
            Some(m) => m.tokenizer.decode(ids, false)?,
            None => ids.iter().map(u32::to_string).collect::<Vec<_>>().join(" ") + " ",
        })
    };
    let mut out = String::new();
    for (s, e) in spans(&row.loss_mask) {
        out.push_str(&decode(&row.token_ids[pos..s])?);
        out.push_str(open);
        out.push_str(&decode(&row.token_ids[s..e])?);
        out.push_str(close);
        pos = e;
    }
    out.push_str(&decode(&row.token_ids[pos..])?);
    println!("{out}");
    Ok(())
}
