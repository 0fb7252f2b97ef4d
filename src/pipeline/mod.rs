//! `autodidact loop`: round 0 evaluates the base model; each later round rolls out on train tasks with the
//! current model, filters, trains LoRA, evaluates on the dev and test splits, and passes (or fails) the promotion
//! gate, which looks at dev only.
//!
//! ```text
//! runs/<name>/config.toml                 the resolved config, written once
//! runs/<name>/round-000/eval-dev/         trajectories.jsonl, eval.json on the dev split (the gate's)
//! runs/<name>/round-000/eval/             the same on the test split (+ eval-nofewshot/): reported only
//! runs/<name>/round-NNN/rollout/          trajectories.jsonl
//! runs/<name>/round-NNN/filter/           dataset.jsonl, filter_report.json, mask_audit.json
//! runs/<name>/round-NNN/train/            checkpoint/, metrics.jsonl, adapter/
//! runs/<name>/round-NNN/round.json        the round's record, written last
//! runs/<name>/report.md, curves.svg, metrics.jsonl   rebuilt from the records after every round
//! runs/<name>/tensorboard/rounds/          TensorBoard scalars of every round's figures (step = round)
//! runs/<name>/tensorboard/round-NNN/train/ ... of every training step of the round (as train/metrics.jsonl)
//! ```
//! Every stage skips itself when its output exists, so rerunning the same command after a kill continues
//! where it stopped and rewrites nothing that was finished.
pub mod compare;
pub mod config;
pub mod jobs;
pub mod plot;
pub mod records;
pub mod report;
pub mod stages;
pub mod tasks;
pub mod train_plots;

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context};

use crate::agent::metrics::EvalReport;
use crate::agent::prompts::Prompts;
use crate::atomic::write_file;
use crate::data::jsonl::write_json_atomic;
use crate::data::Split;
use config::LoopConfig;
use records::{overall, read_json, FilterRecord, GateRecord, RolloutRecord, RoundRecord, TrainRecord};
use stages::{filter_record, round_dir, Stages};
use tasks::TaskSets;

pub const ROUND_FILE: &str = "round.json";

/// Runs (or resumes) the loop described by `cfg`; returns every round's record, round 0 first.
pub fn run_loop(cfg: &LoopConfig, quiet: bool) -> anyhow::Result<Vec<RoundRecord>> {
    let dir = cfg.run_dir();
    // Every task file is read and checked before the run folder or the model is touched.
    let mut sets = TaskSets::resolve(&cfg.tasks)?;
    // MCP tasks get their servers' tools (each server is started once to list them); environments are checked.
    let external = crate::tasks::external::External::for_tasks(&cfg.mcp, &cfg.envs, sets.train.iter_mut().chain(&mut sets.dev).chain(&mut sets.test))?;
    let prompts = Prompts::embedded_with(cfg.prompt_files.iter().map(|(s, p)| (s.as_str(), p.as_path())))?;
    let _lock = crate::lock::OutputLock::acquire(&dir)?;
    pin_config(cfg, &dir)?;
    let model = crate::model::load_model(&cfg.model)?;
    let backend = match &cfg.backend {
        Some(b) => Some(stages::Backend { base: crate::rollout::Remote::connect(b)?, load_adapters: b.load_adapters }),
        None => None,
    };
    let remote = backend.as_ref().map(|b| b.base.clone());
    let mut st = Stages { cfg, dir: dir.clone(), model, prompts, quiet, adapter: None, sets, backend, remote, external };
    let mut records: Vec<RoundRecord> = Vec::new();
    for round in 0..=cfg.rounds {
        let rdir = round_dir(&dir, round);
        let path = rdir.join(ROUND_FILE);
        let rec = if path.is_file() {
            read_json(&path)?
        } else {
            if !quiet {
                eprintln!("round {round}/{}", cfg.rounds);
            }
            let rec = run_round(&mut st, round, &rdir, &records)?;
            crate::fault::point("round:record");
            write_json_atomic(&path, &rec)?;
            rec
        };
        records.push(rec);
        report::write_all(cfg, &dir, &records, &st.sets.dev_origin)?;
    }
    Ok(records)
}

/// The model in use before `round`: the last promoted round (0 = the base model).
fn reference(records: &[RoundRecord]) -> &RoundRecord {
    records.iter().rev().find(|r| r.round == 0 || r.promoted()).unwrap_or(&records[0])
}

fn run_round(st: &mut Stages<'_>, round: usize, rdir: &Path, earlier: &[RoundRecord]) -> anyhow::Result<RoundRecord> {
    let t0 = Instant::now();
    let cfg = st.cfg;
    std::fs::create_dir_all(rdir).with_context(|| format!("creating {}", rdir.display()))?;
    if round == 0 {
        st.use_adapter(None)?;
        let e = evaluate_all(st, rdir)?;
        return Ok(RoundRecord {
            round,
            start_adapter: None,
            rollout: None,
            filter: None,
            train: None,
            sft: None,
            test: e.test,
            test_no_fewshot: e.test_no_fewshot,
            dev: e.dev,
            sources: e.sources,
            gate: None,
            adapter: None,
            seconds: t0.elapsed().as_secs_f64(),
        });
    }
    let prev = reference(earlier);
    let start = prev.adapter.clone();
    st.use_adapter(start.as_deref())?;
    // A round that starts from the same model as an earlier (rolled-back) round draws new samples rather than
    // the very same episodes again.
    let retry = earlier.iter().filter(|r| r.round > 0 && r.start_adapter == start).count() as u64;
    let seed = cfg.rollout.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ retry;
    let (trajs, rollout) = st.rollout(round, rdir, seed)?;
    if cfg.train.objective.is_rl() {
        let train = st.train_rl(round, rdir, &trajs, start.as_deref())?;
        let mut filter = None;
        if cfg.rl.then_sft {
            let (freport, own) = st.filter(rdir, &trajs)?;
            filter = Some(filter_record(&freport, &own, own.len()));
            if !own.is_empty() {
                // The RL adapter when the update had a signal, else the round's starting one.
                let rl_adapter = (train.steps > 0).then(|| relative(st, rdir).join("train").join("adapter"));
                let sft = st.train(round, rdir, "train-sft", &own, rl_adapter.as_deref().or(start.as_deref()))?;
                let trained = Trained { filter, train, sft: Some(sft), sub: "train-sft" };
                return candidate_round(st, round, rdir, prev, start, rollout, trained, t0);
            }
        }
        if train.steps == 0 {
            if !st.quiet {
                eprintln!("  every task's samples got the same reward: no gradient, the model stays as it was");
            }
            return Ok(unchanged(prev, round, start, Some(rollout), filter, Some(train), "no signal: every group's rewards are equal".into(), t0));
        }
        return candidate_round(st, round, rdir, prev, start, rollout, Trained { filter, train, sft: None, sub: "train" }, t0);
    }
    let (freport, own) = st.filter(rdir, &trajs)?;
    let own_len = own.len();
    let rows = st.train_rows(round, own.clone())?;
    let filter = filter_record(&freport, &own, rows.len());
    if rows.is_empty() {
        // Nothing to learn from: the model stays as it was, and so does its evaluation.
        if !st.quiet {
            eprintln!("  no episode kept; nothing to train, the model stays as it was");
        }
        return Ok(unchanged(prev, round, start, Some(rollout), Some(filter), None, format!("no data: {own_len} episodes kept"), t0));
    }
    let train = st.train(round, rdir, "train", &rows, start.as_deref())?;
    candidate_round(st, round, rdir, prev, start, rollout, Trained { filter: Some(filter), train, sft: None, sub: "train" }, t0)
}

/// `dir` relative to the run folder, as adapters are recorded.
fn relative(st: &Stages<'_>, dir: &Path) -> PathBuf {
    dir.strip_prefix(&st.dir).unwrap_or(dir).to_path_buf()
}

/// What a round trained: `sub` is the folder whose adapter is the round's candidate.
struct Trained {
    filter: Option<FilterRecord>,
    train: TrainRecord,
    sft: Option<TrainRecord>,
    sub: &'static str,
}

/// A round that trained nothing: the model and its evaluations stay those of `prev`.
#[allow(clippy::too_many_arguments)]
fn unchanged(
    prev: &RoundRecord,
    round: usize,
    start: Option<PathBuf>,
    rollout: Option<RolloutRecord>,
    filter: Option<FilterRecord>,
    train: Option<TrainRecord>,
    reason: String,
    t0: Instant,
) -> RoundRecord {
    RoundRecord {
        round,
        start_adapter: start.clone(),
        rollout,
        filter,
        train,
        sft: None,
        test: prev.test.clone(),
        test_no_fewshot: prev.test_no_fewshot.clone(),
        dev: prev.dev.clone(),
        sources: prev.sources.clone(),
        gate: Some(GateRecord {
            reference_round: prev.round,
            reference_success: prev.dev_success().map(|d| d.0),
            success: prev.dev_success().map(|d| d.0),
            tolerance: 0.0,
            promoted: false,
            reason,
        }),
        adapter: start,
        seconds: t0.elapsed().as_secs_f64(),
    }
}

/// Evaluates the adapter the round trained and passes it through the gate.
#[allow(clippy::too_many_arguments)]
fn candidate_round(
    st: &mut Stages<'_>,
    round: usize,
    rdir: &Path,
    prev: &RoundRecord,
    start: Option<PathBuf>,
    rollout: RolloutRecord,
    trained: Trained,
    t0: Instant,
) -> anyhow::Result<RoundRecord> {
    let cfg = st.cfg;
    let candidate = relative(st, rdir).join(trained.sub).join("adapter");
    st.use_adapter(Some(&candidate))?;
    let e = evaluate_all(st, rdir)?;
    let gate = gate(cfg, prev, e.dev.as_ref())?;
    if !st.quiet {
        eprintln!("  gate: {}", gate.reason);
    }
    let adapter = if gate.promoted { Some(candidate) } else { start.clone() };
    Ok(RoundRecord {
        round,
        start_adapter: start,
        rollout: Some(rollout),
        filter: trained.filter,
        train: Some(trained.train),
        sft: trained.sft,
        test: e.test,
        test_no_fewshot: e.test_no_fewshot,
        dev: e.dev,
        sources: e.sources,
        gate: Some(gate),
        adapter,
        seconds: t0.elapsed().as_secs_f64(),
    })
}

struct Evaluations {
    dev: Option<EvalReport>,
    test: EvalReport,
    test_no_fewshot: Option<EvalReport>,
    sources: Vec<records::SourceResult>,
}

/// Dev (for the gate, unless `eval.dev` is off), test and optionally test without few-shot examples (for the
/// report).
fn evaluate_all(st: &Stages<'_>, rdir: &Path) -> anyhow::Result<Evaluations> {
    let (dev, mut sources) = match st.cfg.eval.dev {
        true => st.evaluate(rdir, "eval-dev", Split::Dev, true).map(|(d, s)| (Some(d), s))?,
        false => (None, Vec::new()),
    };
    let (test, test_sources) = st.evaluate(rdir, "eval", Split::Test, true)?;
    sources.extend(test_sources);
    let test_no_fewshot = if st.cfg.eval.without_fewshot { Some(st.evaluate(rdir, "eval-nofewshot", Split::Test, false)?.0) } else { None };
    Ok(Evaluations { dev, test, test_no_fewshot, sources })
}

/// Keeps the candidate unless its dev success falls below the reference's by more than z standard errors of
/// the difference (binomial, both rates measured on the same dev tasks). The test split decides nothing.
fn gate(cfg: &LoopConfig, prev: &RoundRecord, dev: Option<&EvalReport>) -> anyhow::Result<GateRecord> {
    let (Some((p0, n0)), Some((p1, n1))) = (prev.dev_success(), dev.map(overall)) else {
        // Nothing to decide on: the config refuses a gate without dev.
        anyhow::ensure!(!cfg.gate.enabled, "the gate needs the dev split of round {} and of this round", prev.round);
        let reason = "kept (gate disabled; dev not evaluated)".to_string();
        return Ok(GateRecord { reference_round: prev.round, reference_success: None, success: None, tolerance: 0.0, promoted: true, reason });
    };
    let se = (p0 * (1.0 - p0) / n0.max(1) as f64 + p1 * (1.0 - p1) / n1.max(1) as f64).sqrt();
    let tolerance = cfg.gate.z * se;
    let promoted = !cfg.gate.enabled || p1 >= p0 - tolerance;
    let verb = if promoted { "kept" } else { "rolled back" };
    let reason = if cfg.gate.enabled {
        format!("{verb}: dev success {:.1}% vs {:.1}% (round {}), tolerance {:.1} points", 100.0 * p1, 100.0 * p0, prev.round, 100.0 * tolerance)
    } else {
        format!("kept (gate disabled): dev success {:.1}% vs {:.1}% (round {})", 100.0 * p1, 100.0 * p0, prev.round)
    };
    Ok(GateRecord { reference_round: prev.round, reference_success: Some(p0), success: Some(p1), tolerance, promoted, reason })
}

/// Writes the resolved config into a new run folder, or checks that an existing run was started with the same
/// one (resuming with other settings would mix two experiments in one folder).
fn pin_config(cfg: &LoopConfig, dir: &Path) -> anyhow::Result<()> {
    let path = dir.join("config.toml");
    let text = toml::to_string_pretty(cfg).context("serialising the config")?;
    if path.is_file() {
        let old_text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        let old: LoopConfig = toml::from_str(&old_text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        let same = |c: &LoopConfig| LoopConfig { backend: None, ..c.clone() };
        if same(&old) != same(cfg) {
            let differs = config_differences(&old, cfg);
            bail!(
                "{} was started with another config (differs in: {}); use a new `name` or delete the folder to start over",
                dir.display(),
                differs.join(", ")
            );
        }
        return Ok(());
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    write_file(&path, text.as_bytes()).with_context(|| format!("writing {}", path.display()))
}

fn config_differences(a: &LoopConfig, b: &LoopConfig) -> Vec<String> {
    let (Ok(a), Ok(b)) = (serde_json::to_value(a), serde_json::to_value(b)) else { return vec!["?".into()] };
    let mut out = Vec::new();
    if let (Some(a), Some(b)) = (a.as_object(), b.as_object()) {
        for (k, va) in a {
            match (va.as_object(), b.get(k).and_then(|v| v.as_object())) {
                (Some(sa), Some(sb)) => out.extend(sa.iter().filter(|(f, v)| sb.get(*f) != Some(*v)).map(|(f, _)| format!("{k}.{f}"))),
                _ if b.get(k) != Some(va) => out.push(k.clone()),
                _ => {}
            }
        }
    }
    out
}
