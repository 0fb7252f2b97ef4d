//! The stages of one round. Each one skips itself when its output exists (written atomically, last), so a
//! rerun after a kill redoes at most the stage that was interrupted, and resumes that one too: rollouts skip the
//! episodes already in their file, training continues from its checkpoint.
use std::collections::{BTreeSet, HashSet};
use std::path::{Path, PathBuf};

use anyhow::Context;

use super::config::{LoopConfig, TrainBackend, TrainMode};
use super::jobs::{self, RlJob, SftJob, TrlJob};
use super::records::{read_json, FilterRecord, HintedRecord, RlRecord, RolloutRecord, SourceResult, TrainRecord};
use super::tasks::TaskSets;
use crate::agent::episode::Limits;
use crate::agent::hint::{self, HintSpec};
use crate::agent::metrics::EvalReport;
use crate::agent::prompts::{PromptOptions, Prompts};
use crate::data::dataset::{read_dataset, DatasetRow};
use crate::data::jsonl::{read_jsonl, write_json_atomic};
use crate::data::{ReadMode, Split, Task, Trajectory};
use crate::distil::rl::Rewards;
use crate::distil::{filter_to_dir, strip_hint, ChatEncoder, FilterParams, FilterReport, DATASET_FILE, REPORT_FILE};
use crate::model::lora::{LoraAdapter, LoraConfig};
use crate::model::LoadedModel;
use crate::rollout::{run_rollout, Remote, RolloutParams};
use crate::sample::SamplingParams;
use crate::train::metrics_log::sync_events;
use crate::train::rl::{Objective, RlParams, RlStepMetrics};
use crate::train::{OptimParams, SftParams};

pub const TRAJECTORIES: &str = "trajectories.jsonl";
pub const EVAL_FILE: &str = "eval.json";
/// The run's TensorBoard folder.
pub const TENSORBOARD: &str = "tensorboard";

pub struct Stages<'a> {
    pub cfg: &'a LoopConfig,
    pub dir: PathBuf,
    pub model: LoadedModel,
    pub prompts: Prompts,
    pub quiet: bool,
    /// The adapter in use (relative to the run folder), recorded in every trajectory.
    pub adapter: Option<PathBuf>,
    pub sets: TaskSets,
    pub backend: Option<Backend>,
    /// The servers rollouts go to, serving the adapter in use.
    pub remote: Option<Remote>,
    /// The MCP servers of `mcp` tasks and the environments of `env` tasks.
    pub external: crate::tasks::external::External,
}

/// The loop's servers as connected (serving the base model).
pub struct Backend {
    pub base: Remote,
    pub load_adapters: bool,
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
        if let Some(b) = &self.backend {
            self.remote = Some(match adapter {
                Some(rel) if b.load_adapters => {
                    let name = format!("{}/{}", self.cfg.name, rel.display());
                    b.base.with_adapter(&name, &self.dir.join(rel))?
                }
                _ => b.base.clone(),
            });
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn params(&self, samples: u32, temperature: f32, top_p: f32, top_k: usize, fewshot: bool, hint: Option<HintSpec>, seed: u64) -> RolloutParams {
        let r = &self.cfg.rollout;
        RolloutParams {
            samples_per_task: samples,
            sampling: SamplingParams { temperature, top_p, top_k, seed, max_new_tokens: r.turn_tokens, stop_tokens: vec![], stop_strings: r.stop.clone() },
            limits: Limits::agent(r.turn_tokens, r.episode_tokens, None, r.max_active),
            prompt_options: PromptOptions { fewshot, tools_in_system: true, hint },
            adapter: self.adapter.as_ref().map(|a| a.display().to_string()),
            remote: self.remote.clone(),
            external: self.external.clone(),
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
            say(
                self.quiet,
                format_args!("  {name}: {} {split} tasks x {} samples{}", tasks.len(), e.samples, if fewshot { "" } else { ", no few-shot examples" }),
            );
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            run_rollout(&self.model, &self.prompts, tasks, &self.params(e.samples, e.temperature, e.top_p, 0, fewshot, None, 0), &path, self.quiet)?;
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
        say(
            self.quiet,
            format_args!(
                "  rollout: {} train tasks (difficulties {difficulties:?}) x {} samples, {} unsolved tasks x {}",
                rest.len(),
                r.samples,
                hard.len(),
                r.samples + r.extra_samples_unsolved
            ),
        );
        let (mut run, mut secs, mut tokens) = (0usize, 0f64, 0usize);
        for (group, samples) in [(&rest, r.samples), (&hard, r.samples + r.extra_samples_unsolved)] {
            if group.is_empty() {
                continue;
            }
            let params = self.params(samples, r.temperature, r.top_p, r.top_k, r.fewshot, None, seed);
            let s = run_rollout(&self.model, &self.prompts, group, &params, &path, self.quiet)?;
            run += s.episodes_run;
            secs += s.seconds;
            tokens += s.generated_tokens;
        }
        let mut trajs: Vec<Trajectory> = read_jsonl(&path, ReadMode::Strict)?.into_items();
        let successes = trajs.iter().filter(|t| t.verdict.success).count();
        let hinted = if r.hinted {
            let (h, rec) = self.hinted_rollout(round_dir, &tasks, &trajs, seed)?;
            trajs.extend(h);
            Some(rec)
        } else {
            None
        };
        let plain = &trajs[..trajs.len() - hinted.as_ref().map_or(0, |h| h.episodes)];
        let rec = RolloutRecord {
            difficulties,
            tasks: tasks.len(),
            episodes: plain.len(),
            successes,
            success_rate: successes as f64 / plain.len().max(1) as f64,
            generated_tokens: plain.iter().map(|t| t.counts.generated_tokens as usize).sum(),
            episodes_per_minute: if secs > 0.0 { run as f64 * 60.0 / secs } else { 0.0 },
            generated_tokens_per_second: if secs > 0.0 { tokens as f64 / secs } else { 0.0 },
            hinted,
        };
        Ok((trajs, rec))
    }

    /// STaR's rationalization: the train tasks that `plain` never solved, sampled again with privileged context
    /// in the prompt (into `rollout-hinted/`). The filter trains on their successes without the hint.
    fn hinted_rollout(&self, round_dir: &Path, tasks: &[Task], plain: &[Trajectory], seed: u64) -> anyhow::Result<(Vec<Trajectory>, HintedRecord)> {
        let r = &self.cfg.rollout;
        let solved: HashSet<&str> = plain.iter().filter(|t| t.verdict.success).map(|t| t.task_id.as_str()).collect();
        let spec = self.cfg.hint.spec();
        let source = spec.source;
        let unsolved: Vec<Task> = tasks.iter().filter(|t| !solved.contains(t.id.as_str()) && hint::privileged(t, source).is_some()).cloned().collect();
        let dir = round_dir.join("rollout-hinted");
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let path = dir.join(TRAJECTORIES);
        say(self.quiet, format_args!("  hinted rollout: {} unsolved train tasks x {} samples, hint from {source:?}", unsolved.len(), r.samples));
        if !unsolved.is_empty() {
            let params = self.params(r.samples, r.temperature, r.top_p, r.top_k, r.fewshot, Some(spec), seed);
            run_rollout(&self.model, &self.prompts, &unsolved, &params, &path, self.quiet)?;
        }
        let trajs: Vec<Trajectory> = if path.is_file() { read_jsonl(&path, ReadMode::Strict)?.into_items() } else { vec![] };
        let won: BTreeSet<(&str, u8)> = trajs.iter().filter(|t| t.verdict.success).map(|t| (t.task_id.as_str(), t.difficulty)).collect();
        let rec = HintedRecord {
            tasks: unsolved.len(),
            episodes: trajs.len(),
            successes: trajs.iter().filter(|t| t.verdict.success).count(),
            tasks_solved: won.len(),
            hard_tasks_solved: won.iter().filter(|(_, d)| *d >= 2).count(),
        };
        say(
            self.quiet,
            format_args!("  hinted rollout: {} successes, {} tasks solved ({} of difficulty 2+)", rec.successes, rec.tasks_solved, rec.hard_tasks_solved),
        );
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
        // Hinted episodes are trained on as if sampled without the hint.
        let trajs = trajs.iter().map(|t| strip_hint(t, &self.model)).collect::<Result<Vec<_>, _>>()?;
        let out = filter_to_dir(&trajs, &params, encoder, Some(self.model.tokenizer.stop_ids()), &dir)?;
        say(
            self.quiet,
            format_args!(
                "  filter: kept {} of {} episodes ({} tasks), {} trained tokens",
                out.report.total.kept,
                out.report.total.episodes,
                out.report.total.tasks_kept,
                out.trained_tokens()
            ),
        );
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

    /// The adapter a round's training starts from: `start` (relative to the run folder), or a fresh one seeded
    /// by the round.
    fn start_adapter(&self, round: usize, start: Option<&Path>) -> anyhow::Result<LoraAdapter> {
        let c = &self.cfg.train;
        let shape = LoraConfig { r: c.rank, alpha: c.alpha, dropout: c.dropout, targets: c.projections()?, base_model: String::new() };
        jobs::start_adapter(&self.model, start.map(|rel| self.dir.join(rel)).as_deref(), &shape, c.optim.seed + round as u64)
    }

    /// The Hugging Face folder TRL loads the base model from: `trl.base`, or the model converted to f32 once into
    /// `<run>/trl-base/` (dequantized GGUF blocks are exact: the weights this process trains on).
    fn trl_base(&self) -> anyhow::Result<PathBuf> {
        if let Some(b) = &self.cfg.trl.base {
            return Ok(b.clone());
        }
        let dir = self.dir.join("trl-base");
        if !dir.join("model.safetensors").is_file() {
            say(self.quiet, format_args!("  writing the base model for TRL into {}", dir.display()));
            crate::export::hf::write_hf_folder(&self.model, None, &dir, crate::export::hf::SaveDType::F32)?;
        }
        Ok(dir)
    }

    /// Where the TensorBoard events of a round's training go: `<run>/tensorboard/round-NNN/<sub>`, beside the
    /// rounds' own (`<run>/tensorboard/rounds`), so that one `tensorboard --logdir <run>/tensorboard` shows them all.
    fn tensorboard_dir(&self, round: usize, sub: &str) -> PathBuf {
        self.dir.join(TENSORBOARD).join(format!("round-{round:03}")).join(sub)
    }

    /// LoRA SFT into `<round>/<sub>/` (`train`, or `train-sft` after an RL update; the adapter in
    /// `<sub>/adapter`); `start` is the adapter to continue.
    pub fn train(&self, round: usize, round_dir: &Path, sub: &str, rows: &[DatasetRow], start: Option<&Path>) -> anyhow::Result<TrainRecord> {
        let dir = round_dir.join(sub);
        let tensorboard = self.tensorboard_dir(round, sub);
        let done = dir.join("adapter").join("adapter_config.json").is_file();
        let c = &self.cfg.train;
        if !done {
            let adapter = self.start_adapter(round, start.filter(|_| c.mode == TrainMode::Continue))?;
            say(self.quiet, format_args!("  train: {} rows ({:?} mode)", rows.len(), c.mode));
            let optim = OptimParams { seed: c.optim.seed + round as u64, ..c.optim };
            let params =
                SftParams { resume: true, tensorboard: tensorboard.clone(), ..SftParams::new(optim, self.model.config().max_position_embeddings, dir.clone()) };
            if c.backend == TrainBackend::Trl {
                let base = self.trl_base()?;
                jobs::run_trl(TrlJob { model: &self.model, adapter, rows, params, trl: &self.cfg.trl, base: &base, quiet: self.quiet })?;
            } else {
                let job = jobs::run_sft(SftJob { model: &self.model, adapter, rows, params, quiet: self.quiet })?;
                anyhow::ensure!(job.outcome.finished, "training stopped before the end of its schedule ({} steps)", job.outcome.steps);
            }
        } else {
            // Rewritten every time (atomically, from the metrics alone), so a run killed right after training has it too.
            super::train_plots::write_sft_plot(&dir)?;
            sync_events(&dir.join("metrics.jsonl"), &tensorboard)?;
        }
        train_record(&dir.join("metrics.jsonl"))
    }
}

impl Stages<'_> {
    /// GRPO or SDAR on every episode of the round's rollout, into `<round>/train/` (the adapter in
    /// `train/adapter`, the record in `train/summary.json`, written last); `start` is the adapter to continue.
    pub fn train_rl(&self, round: usize, round_dir: &Path, trajs: &[Trajectory], start: Option<&Path>) -> anyhow::Result<TrainRecord> {
        let dir = round_dir.join("train");
        let tensorboard = self.tensorboard_dir(round, "train");
        let summary = dir.join("summary.json");
        if summary.is_file() {
            sync_events(&dir.join("metrics.jsonl"), &tensorboard)?;
            return read_json(&summary);
        }
        let (c, r) = (&self.cfg.train, &self.cfg.rl);
        let tasks: std::collections::HashMap<&str, &Task> = self.sets.train.iter().map(|t| (t.id.as_str(), t)).collect();
        let hint_of = |t: &Trajectory| tasks.get(t.task_id.as_str()).and_then(|task| hint::privileged(task, self.cfg.hint.source));
        let adapter = self.start_adapter(round, start)?;
        let params = RlParams {
            coefs: r.coefs(),
            groups_per_step: r.groups_per_step,
            resume: true,
            shared_prefix: r.shared_prefix,
            std_floor: r.std_floor,
            tensorboard,
            ..RlParams::new(c.objective, self.cfg.rl_optim(round), self.model.config().max_position_embeddings, dir.clone())
        };
        say(
            self.quiet,
            format_args!(
                "  train ({:?}): {} episodes; log-probs under the starting adapter, the base model{} first",
                c.objective,
                trajs.len(),
                if c.objective == Objective::Sdar { " and the teacher" } else { "" }
            ),
        );
        let rewards = Rewards { success: r.success_reward, invalid_penalty: r.invalid_penalty };
        let job = jobs::run_rl(RlJob {
            model: &self.model,
            adapter,
            trajectories: trajs,
            rewards,
            hint_of: &hint_of,
            placement: self.cfg.hint.placement,
            params,
            quiet: self.quiet,
        })?;
        let outcome = &job.outcome;
        anyhow::ensure!(outcome.finished, "training stopped before the end of its schedule ({} steps)", outcome.steps);
        let steps_log = &job.steps;
        let mean = |f: &dyn Fn(&RlStepMetrics) -> Option<f64>| {
            let v: Vec<f64> = steps_log.iter().filter_map(f).collect();
            (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
        };
        let speeds: Vec<f64> = steps_log.iter().map(|s| s.tokens_per_s).collect();
        let rec = TrainRecord {
            steps: steps_log.len(),
            first_loss: steps_log.first().map(|s| s.loss),
            last_loss: steps_log.last().map(|s| s.loss),
            trained_tokens: steps_log.last().map_or(0, |s| s.trained_tokens),
            tokens_per_second: if speeds.is_empty() { 0.0 } else { crate::stats::median(&speeds) },
            rl: Some(RlRecord {
                objective: c.objective,
                groups: outcome.groups,
                zero_variance_groups: outcome.zero_variance_groups,
                episodes_used: outcome.episodes_used,
                without_hint: job.episodes_without_hint,
                reward_mean: job.reward_mean,
                sampler_gap: outcome.sampler_gap,
                kl_last: steps_log.last().map(|s| s.kl),
                kl_peak: steps_log.iter().map(|s| s.kl).reduce(f64::max),
                clip_fraction_mean: mean(&|s| Some(s.clip_fraction)),
                gap_first: steps_log.first().and_then(|s| s.gap_mean),
                gap_last: steps_log.last().and_then(|s| s.gap_mean),
                gate_mean: mean(&|s| s.gate_mean),
            }),
        };
        write_json_atomic(&summary, &rec)?;
        Ok(rec)
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
        rl: None,
    })
}

pub fn filter_record(report: &FilterReport, own: &[DatasetRow], train_rows: usize) -> FilterRecord {
    FilterRecord { kept: report.total.kept, tasks_kept: report.total.tasks_kept, trained_tokens: own.iter().map(DatasetRow::trained_tokens).sum(), train_rows }
}
