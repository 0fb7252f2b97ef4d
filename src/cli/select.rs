//! The task flags every task-running command shares: generated tasks (suites x difficulties x count, from a seed
//! and split) and/or task files.
use std::path::PathBuf;

use anyhow::{bail, Context};

use autodidact::data::ReadMode;
use autodidact::data::{Split, Task};
use autodidact::tasks::select::generated;
use autodidact::tasks::taskfile::load_tasks_with;

#[derive(Debug, Clone, clap::Args)]
pub struct TaskSelection {
    /// Suites to generate tasks from (comma-separated); default: every generative suite, or none when task files
    /// are given.
    #[arg(long, value_delimiter = ',')]
    pub suites: Vec<String>,
    /// Difficulty levels to generate (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "1,2,3")]
    pub difficulties: Vec<u8>,
    /// Generated tasks per suite and difficulty.
    #[arg(long, default_value_t = 10)]
    pub tasks_per: u64,
    /// Which split to generate from; train, dev and test never share a task.
    #[arg(long, value_enum, default_value = "test")]
    pub split: SplitArg,
    /// Seed of task generation.
    #[arg(long, default_value_t = 0)]
    pub task_seed: u64,
    /// Task files (JSONL) to run as well (repeatable).
    #[arg(long = "task-file")]
    pub task_files: Vec<PathBuf>,
    /// Skip (and count) invalid lines of task files instead of stopping at the first one.
    #[arg(long)]
    pub skip_invalid: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SplitArg {
    Train,
    Dev,
    Test,
}

impl From<SplitArg> for Split {
    fn from(s: SplitArg) -> Split {
        match s {
            SplitArg::Train => Split::Train,
            SplitArg::Dev => Split::Dev,
            SplitArg::Test => Split::Test,
        }
    }
}

impl TaskSelection {
    /// Resolves the selection; unknown suites and bad task files fail here, before any model runs.
    pub fn tasks(&self) -> anyhow::Result<Vec<Task>> {
        let mut out = Vec::new();
        if self.tasks_per > 0 && (self.task_files.is_empty() || !self.suites.is_empty()) {
            out = generated(&self.suites, &self.difficulties, self.split.into(), self.task_seed, self.tasks_per)
                .context("--suites / --difficulties (a suite that runs tasks from files takes --task-file)")?;
        }
        let mode = if self.skip_invalid { ReadMode::SkipInvalid } else { ReadMode::Strict };
        for f in &self.task_files {
            let (tasks, skipped) = load_tasks_with(f, mode).with_context(|| format!("loading tasks from {}", f.display()))?;
            if !skipped.is_empty() {
                eprintln!("{}: skipped {} invalid lines:", f.display(), skipped.len());
                for s in &skipped {
                    eprintln!("  line {}: {}", s.line, s.message);
                }
            }
            out.extend(tasks);
        }
        if out.is_empty() {
            bail!("no tasks selected");
        }
        Ok(out)
    }
}
