//! The stages of one round. Each one skips itself when its output exists (written atomically, last), so a
//! rerun after a kill redoes at most the stage that was interrupted, and resumes that one too: rollouts skip the
//! episodes already in their file, training continues from its checkpoint.
use std::collections::{BTreeSet, HashSet};
use std::path::{Path, PathBuf};

use anyhow::Context;

use super::config::{LoopConfig, TrainMode};
use super::records::{read_json, FilterRecord, RolloutRecord, SourceResult, TrainRecord};
use super::tasks::TaskSets;
use crate::agent::episode::Limits;
use crate::agent::metrics::EvalReport;
use crate::agent::prompts::{PromptOptions, Prompts};
use crate::data::dataset::{read_dataset, DatasetRow};
use crate::data::jsonl::{read_jsonl, write_json_atomic};
use crate::data::{ReadMode, Split, Task, Trajectory};
use crate::distil::{filter_to_dir, ChatEncoder, FilterParams, FilterReport, DATASET_FILE, REPORT_FILE};
use crate::model::lora::{LoraAdapter, LoraConfig};
use crate::model::LoadedModel;
use crate::rollout::{run_rollout, RolloutParams};
use crate::sample::SamplingParams;
use crate::train::optim::AdamWParams;
use crate::train::{train_sft, SftParams, StepMetrics, TrainModel, TrainRow};

pub const TRAJECTORIES: &str = "trajectories.jsonl";
pub const EVAL_FILE: &str = "eval.json";

pub struct Stages<'a> {
    pub cfg: &'a LoopConfig,
    pub dir: PathBuf,
    pub model: LoadedModel,
    pub prompts: Prompts,
    pub quiet: bool,
    /// The adapter in use (relative to the run folder), recorded in every trajectory.
    pub adapter: Option<PathBuf>,
    pub sets: TaskSets,
}

pub fn round_dir(run: &Path, round: usize) -> PathBuf {
    run.join(format!("round-{round:03}"))
}

fn say(quiet: bool, msg: impl std::fmt::Display) {
    if !quiet {
        eprintln!("{msg}");
    }
}

impl Stages<'_> {
    /// Sets the model the next rollouts use: the base plus `adapter` (relative to the run folder), or the base.
    pub fn use_adapter(&mut self, adapter: Option<&Path>) -> anyhow::Result<()> {
        self.model.transformer.adapter = None;
        if let Some(rel) = adapter {
            self.model.attach_adapter(&self.dir.join(rel))?;
        }
        self.adapter = adapter.map(Path::to_path_buf);
        Ok(())
    }

    fn params(&self, samples: u32, temperature: f32, top_p: f32, top_k: usize, fewshot: bool, seed: u64) -> RolloutParams {
        let r = &self.cfg.rollout;
        RolloutParams {
            samples_per_task: samples,
            sampling: SamplingParams { temperature, top_p, top_k, seed, max_new_tokens: r.turn_tokens, stop_tokens: vec![], stop_strings: vec![] },
            limits: Limits::agent(r.turn_tokens, r.episode_tokens, None, r.max_active),
            prompt_options: PromptOptions { fewshot, tools_in_system: true },
            adapter: self.adapter.as_ref().map(|a| a.display().to_string()),
        }
    }

    /// Evaluation of the current model on the dev or test split into `<round>/<name>/` (the same tasks and
    /// sampling streams every round, so rounds differ only by the model), with its success per task source.
    pub fn evaluate(&self, round_dir: &Path, name: &str, split: Split, fewshot: bool) -> anyhow::Result<(EvalReport, Vec<SourceResult>)> {
        let dir = round_dir.join(name);
        let report_path = dir.join(EVAL_FILE);
        let path = dir.join(TRAJECTORIES);
        let e = &self.cfg.eval;
        let report = if report_path.is_file() {
            read_json(&report_path)?
        } else {
            let tasks = if split == Split::Dev { &self.sets.dev } else { &self.sets.test };
            say(self.quiet, format_args!("  {name}: {} {split} tasks x {} samples{}", tasks.len(), e.samples, if fewshot { "" } else { ", no few-shot examples" }));
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            run_rollout(&self.model, &self.prompts, tasks, &self.params(e.samples, e.temperature, e.top_p, 0, fewshot, 0), &path, self.quiet)?;
            let trajs: Vec<Trajectory> = read_jsonl(&path, ReadMode::Strict)?.into_items();
            let report = EvalReport::from_trajectories(&trajs, &e.pass_k);
            write_json_atomic(&report_path, &report)?;
            report
        };
        let trajs: Vec<Trajectory> = read_jsonl(&path, ReadMode::Strict)?.into_items();
        Ok((report, self.per_source(split, &trajs)))
    }

    fn per_source(&self, split: Split, trajs: &[Trajectory]) -> Vec<SourceResult> {
        self.sets
            .sources()
            .into_iter()
            .filter_map(|source| {
                let mine: Vec<&Trajectory> = trajs.iter().filter(|t| self.sets.source.get(&t.task_id) == Some(&source)).collect();
                let successes = mine.iter().filter(|t| t.verdict.success).count();
                (!mine.is_empty()).then(|| SourceResult { split, source, episodes: mine.len(), successes, success_rate: successes as f64 / mine.len() as f64 })
            })
            .collect()
    }

    /// Rollouts on the train pool (after the ramp); tasks that earlier rounds tried and never solved get the
    /// curriculum's extra samples. `seed` is the sampling seed (see `run_round`).
    pub fn rollout(&self, round: usize, round_dir: &Path, seed: u64) -> anyhow::Result<(Vec<Trajectory>, RolloutRecord)> {
        let t = &self.cfg.tasks;
        let r = &self.cfg.rollout;
        let difficulties = t.rollout_difficulties(round);
        let tasks = self.sets.train_for(t, round);
        let unsolved = if r.extra_samples_unsolved > 0 { self.unsolved_before(round)? } else { HashSet::new() };
        let (hard, rest): (Vec<Task>, Vec<Task>) = tasks.iter().cloned().partition(|task| unsolved.contains(&task.id));
        let dir = round_dir.join("rollout");
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let path = dir.join(TRAJECTORIES);
        say(self.quiet, format_args!("  rollout: {} train tasks (difficulties {difficulties:?}) x {} samples, {} unsolved tasks x {}", rest.len(), r.samples, hard.len(), r.samples + r.extra_samples_unsolved));
        let (mut run, mut secs, mut tokens) = (0usize, 0f64, 0usize);
        for (group, samples) in [(&rest, r.samples), (&hard, r.samples + r.extra_samples_unsolved)] {
            if group.is_empty() {
                continue;
            }
            let params = self.params(samples, r.temperature, r.top_p, r.top_k, r.fewshot, seed);
            let s = run_rollout(&self.model, &self.prompts, group, &params, &path, self.quiet)?;
            run += s.episodes_run;
            secs += s.seconds;
            tokens += s.generated_tokens;
        }
        let trajs: Vec<Trajectory> = read_jsonl(&path, ReadMode::Strict)?.into_items();
        let successes = trajs.iter().filter(|t| t.verdict.success).count();
        let rec = RolloutRecord {
            difficulties,
            tasks: tasks.len(),
            episodes: trajs.len(),
            successes,
            success_rate: successes as f64 / trajs.len().max(1) as f64,
            generated_tokens: trajs.iter().map(|t| t.counts.generated_tokens as usize).sum(),
            episodes_per_minute: if secs > 0.0 { run as f64 * 60.0 / secs } else { 0.0 },
            generated_tokens_per_second: if secs > 0.0 { tokens as f64 / secs } else { 0.0 },
        };
        Ok((trajs, rec))
    }

    /// Train tasks some earlier round rolled out and never solved.
    fn unsolved_before(&self, round: usize) -> anyhow::Result<HashSet<String>> {
        let mut tried = BTreeSet::new();
        let mut solved = HashSet::new();
        for r in 1..round {
            let path = round_dir(&self.dir, r).join("rollout").join(TRAJECTORIES);
            if !path.is_file() {
                continue;
            }
            for t in read_jsonl::<Trajectory>(&path, ReadMode::Strict)?.into_items() {
                if t.verdict.success {
                    solved.insert(t.task_id.clone());
                }
                tried.insert(t.task_id);
            }
        }
        Ok(tried.into_iter().filter(|id| !solved.contains(id)).collect())
    }

    pub fn filter(&self, round_dir: &Path, trajs: &[Trajectory]) -> anyhow::Result<(FilterReport, Vec<DatasetRow>)> {
        let dir = round_dir.join("filter");
        if dir.join(REPORT_FILE).is_file() {
            return Ok((read_json(&dir.join(REPORT_FILE))?, read_dataset(&dir.join(DATASET_FILE))?));
        }
        let f = &self.cfg.filter;
        let params = FilterParams { keep_per_task: f.keep_per_task, balance: f.balance };
        let encoder: Option<&dyn ChatEncoder> = f.drop_fewshot.then_some(&self.model as &dyn ChatEncoder);
        let out = filter_to_dir(trajs, &params, encoder, Some(self.model.tokenizer.stop_ids()), &dir)?;
        say(self.quiet, format_args!("  filter: kept {} of {} episodes ({} tasks), {} trained tokens", out.report.total.kept, out.report.total.episodes, out.report.total.tasks_kept, out.trained_tokens()));
        Ok((out.report, out.rows))
    }

    /// The rows this round trains on: its own, or (restart) every round's so far.
    pub fn train_rows(&self, round: usize, own: Vec<DatasetRow>) -> anyhow::Result<Vec<DatasetRow>> {
        if self.cfg.train.mode == TrainMode::Continue {
            return Ok(own);
        }
        let mut all = Vec::new();
        for r in 1..round {
            let path = round_dir(&self.dir, r).join("filter").join(DATASET_FILE);
            if path.is_file() {
                all.extend(read_dataset(&path)?);
            }
        }
        all.extend(own);
        Ok(all)
    }

    /// LoRA SFT into `<round>/train/` (the adapter in `train/adapter`); `start` is the adapter to continue.
    pub fn train(&self, round: usize, round_dir: &Path, rows: &[DatasetRow], start: Option<&Path>) -> anyhow::Result<TrainRecord> {
        let dir = round_dir.join("train");
        let done = dir.join("adapter").join("adapter_config.json").is_file();
        let c = &self.cfg.train;
        if !done {
            let mcfg = self.model.config().clone();
            let adapter = match (c.mode, start) {
                (TrainMode::Continue, Some(rel)) => LoraAdapter::load(&self.dir.join(rel), &mcfg, Some(&self.model.base_name))?,
                _ => LoraAdapter::new(
                    LoraConfig { r: c.rank, alpha: c.alpha, dropout: c.dropout, targets: c.projections()?, base_model: self.model.base_name.clone() },
                    &mcfg,
                    c.seed + round as u64,
                )?,
            };
            let params = SftParams {
                lr: c.lr,
                warmup_steps: c.warmup,
                min_lr_ratio: 0.1,
                epochs: c.epochs,
                max_steps: None,
                batch_size: c.batch_size,
                grad_accum: c.grad_accum,
                max_grad_norm: c.max_grad_norm,
                adam: AdamWParams { weight_decay: c.weight_decay, ..AdamWParams::default() },
                seed: c.seed + round as u64,
                max_seq_len: mcfg.max_position_embeddings,
                save_every: c.save_every,
                out_dir: dir.clone(),
                resume: true,
                stop_after: None,
            };
            let train_rows: Vec<TrainRow> = rows.iter().map(|r| TrainRow { id: Some(r.id.clone()), token_ids: r.token_ids.clone(), loss_mask: r.loss_mask.clone() }).collect();
            let tm = TrainModel::new(&mcfg, &self.model.transformer.weights)?;
            let steps = (c.epochs * rows.len().div_ceil(c.batch_size)).div_ceil(c.grad_accum);
            say(self.quiet, format_args!("  train: {} rows, about {steps} steps ({:?} mode)", rows.len(), c.mode));
            let pb = crate::progress::bar(steps as u64, "training", self.quiet);
            let outcome = train_sft(&tm, adapter, &train_rows, &params, &mut |s: &StepMetrics| {
                pb.set_position(s.step as u64);
                pb.set_message(format!("training loss {:.4}", s.loss));
            });
            pb.finish_and_clear();
            let outcome = outcome?;
            anyhow::ensure!(outcome.finished, "training stopped before the end of its schedule ({} steps)", outcome.steps);
        }
        train_record(&dir.join("metrics.jsonl"))
    }
}

/// Summarises `metrics.jsonl` of a finished training run.
fn train_record(path: &Path) -> anyhow::Result<TrainRecord> {
    let steps: Vec<serde_json::Value> = read_jsonl(path, ReadMode::Strict)?.into_items();
    let f = |v: Option<&serde_json::Value>, k: &str| v.and_then(|v| v[k].as_f64());
    let trained_tokens = steps.last().and_then(|v| v["trained_tokens"].as_u64()).unwrap_or(0);
    let speeds: Vec<f64> = steps.iter().filter_map(|v| v["tokens_per_s"].as_f64()).collect();
    Ok(TrainRecord {
        steps: steps.len(),
        first_loss: f(steps.first(), "loss"),
        last_loss: f(steps.last(), "loss"),
        trained_tokens,
        tokens_per_second: if speeds.is_empty() { 0.0 } else { crate::stats::median(&speeds) },
    })
}

pub fn filter_record(report: &FilterReport, own: &[DatasetRow], train_rows: usize) -> FilterRecord {
    FilterRecord { kept: report.total.kept, tasks_kept: report.total.tasks_kept, trained_tokens: own.iter().map(DatasetRow::trained_tokens).sum(), train_rows }
}
