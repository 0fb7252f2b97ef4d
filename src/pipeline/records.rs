//! What each round leaves in `round-NNN/round.json`: the record the report, the metrics and a resumed run
//! are rebuilt from.
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::agent::metrics::EvalReport;
use crate::data::Split;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoundRecord {
    pub round: usize,
    /// The adapter the round's rollouts ran with, relative to the run folder; `None` is the base model.
    pub start_adapter: Option<PathBuf>,
    pub rollout: Option<RolloutRecord>,
    pub filter: Option<FilterRecord>,
    pub train: Option<TrainRecord>,
    /// With `rl.then_sft`: the training on the filtered successes that followed the RL update (`train-sft/`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sft: Option<TrainRecord>,
    pub test: EvalReport,
    pub test_no_fewshot: Option<EvalReport>,
    /// The dev split's evaluation, which the gate decides on (absent in runs made before there was one).
    #[serde(default)]
    pub dev: Option<EvalReport>,
    /// Success per task source (generated, or a task file) on dev and test.
    #[serde(default)]
    pub sources: Vec<SourceResult>,
    pub gate: Option<GateRecord>,
    /// The model after this round (the adapter kept, relative to the run folder); `None` is the base model.
    pub adapter: Option<PathBuf>,
    /// Wall time spent on this round by the process that finished it.
    pub seconds: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceResult {
    pub split: Split,
    /// `generated`, or a task file's path as the config gives it.
    pub source: String,
    pub episodes: usize,
    pub successes: usize,
    pub success_rate: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RolloutRecord {
    pub difficulties: Vec<u8>,
    pub tasks: usize,
    pub episodes: usize,
    pub successes: usize,
    pub success_rate: f64,
    pub generated_tokens: usize,
    /// Throughput of the episodes this process ran (a resumed stage counts only its own part).
    pub episodes_per_minute: f64,
    pub generated_tokens_per_second: f64,
    /// Hinted rollouts on the train tasks this round left unsolved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hinted: Option<HintedRecord>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HintedRecord {
    /// Unsolved train tasks sampled again with the hint.
    pub tasks: usize,
    pub episodes: usize,
    pub successes: usize,
    /// Of those tasks, how many the hint let the model solve at least once (successes the plain rollout lacked).
    pub tasks_solved: usize,
    /// ... and of them, tasks of difficulty 2 or more.
    pub hard_tasks_solved: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FilterRecord {
    pub kept: usize,
    pub tasks_kept: usize,
    pub trained_tokens: usize,
    /// Rows the adapter was trained on: this round's, or with `restart` every round's so far.
    pub train_rows: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainRecord {
    pub steps: usize,
    pub first_loss: Option<f64>,
    pub last_loss: Option<f64>,
    pub trained_tokens: u64,
    pub tokens_per_second: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rl: Option<RlRecord>,
}

/// What an RL round's training saw, from its reference pass and first and last steps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RlRecord {
    pub objective: crate::train::rl::Objective,
    pub groups: usize,
    pub zero_variance_groups: usize,
    pub episodes_used: usize,
    /// Episodes whose task had no privileged context (their teacher is the student: gap 0).
    pub without_hint: usize,
    pub reward_mean: f64,
    pub sampler_gap: crate::train::rl::SamplerGap,
    pub kl_last: Option<f64>,
    /// The largest step's KL (a step reads the KL of its batch before its update).
    #[serde(default)]
    pub kl_peak: Option<f64>,
    pub clip_fraction_mean: Option<f64>,
    pub gap_first: Option<f64>,
    pub gap_last: Option<f64>,
    pub gate_mean: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GateRecord {
    /// The round whose model this round was compared with (the one in use before it).
    pub reference_round: usize,
    /// Dev success of the reference and of this round's candidate (test success in runs made before there was a
    /// dev split; none in runs that skip it, `eval.dev = false`).
    pub reference_success: Option<f64>,
    pub success: Option<f64>,
    /// The fall tolerated: z standard errors of the difference of the two success rates.
    pub tolerance: f64,
    pub promoted: bool,
    pub reason: String,
}

impl RoundRecord {
    /// Test success: reported, never used for a decision.
    pub fn success(&self) -> f64 {
        overall(&self.test).0
    }
    /// What decisions use: dev success and its episodes; none when the dev split was not evaluated.
    pub fn dev_success(&self) -> Option<(f64, usize)> {
        self.dev.as_ref().map(overall)
    }
    pub fn promoted(&self) -> bool {
        self.gate.as_ref().is_some_and(|g| g.promoted)
    }
}

/// Overall success rate and episode count of a report.
pub fn overall(r: &EvalReport) -> (f64, usize) {
    r.row("all", None).map_or((0.0, 0), |row| (row.success_rate, row.episodes))
}

pub fn read_json<T: DeserializeOwned>(path: &Path) -> anyhow::Result<T> {
    let text = std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| anyhow::anyhow!("{}: line {}, column {}: {e}", path.display(), e.line(), e.column()))
}
