//! The loop's human and machine summaries, rebuilt from the round records after every round: report.md,
//! curves.svg and metrics.jsonl (all written atomically, so a reader never sees half a file), and each new round's
//! TensorBoard scalars (appended).
use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::Path;

use super::config::LoopConfig;
use super::plot::{svg, Chart, Series};
use super::records::{overall, RoundRecord};
use super::stages::{round_dir, TENSORBOARD};
use super::train_plots::rl_svg;
use crate::agent::metrics::EvalReport;
use crate::atomic::write_file;
use crate::data::jsonl::{read_jsonl, write_jsonl_atomic};
use crate::data::ReadMode;
use crate::data::Split;
use crate::tfevents::{self, Event, EventWriter};
use crate::train::rl::RlStepMetrics;

pub fn write_all(cfg: &LoopConfig, dir: &Path, records: &[RoundRecord], dev_origin: &str) -> anyhow::Result<()> {
    write_file(&dir.join("report.md"), markdown(cfg, records, dev_origin).as_bytes())?;
    crate::fault::point("report:md");
    write_file(&dir.join("curves.svg"), curves(records).as_bytes())?;
    crate::fault::point("report:curves");
    write_jsonl_atomic(&dir.join("metrics.jsonl"), &metrics(dir, records)?)?;
    write_round_events(dir, records)?;
    if let Some(rl) = rl_curves(dir, records)? {
        write_file(&dir.join("rl.svg"), rl.as_bytes())?;
    }
    Ok(())
}

/// Every RL training step of every round, in order.
fn rl_steps(dir: &Path, records: &[RoundRecord]) -> anyhow::Result<Vec<RlStepMetrics>> {
    let mut out = Vec::new();
    for r in records.iter().filter(|r| r.train.as_ref().is_some_and(|t| t.rl.is_some())) {
        let path = round_dir(dir, r.round).join("train").join("metrics.jsonl");
        if path.is_file() {
            out.extend(read_jsonl::<RlStepMetrics>(&path, ReadMode::Strict)?.into_items());
        }
    }
    Ok(out)
}

/// rl.svg: the per-step logs of the RL objectives across rounds (reward, KL, entropy, clipping, and SDAR's
/// teacher gap and gate).
fn rl_curves(dir: &Path, records: &[RoundRecord]) -> anyhow::Result<Option<String>> {
    let steps = rl_steps(dir, records)?;
    if steps.is_empty() {
        return Ok(None);
    }
    Ok(Some(rl_svg(&steps, "training step (all rounds)")))
}

fn pct(v: f64) -> String {
    format!("{:.1}%", 100.0 * v)
}

fn suites(records: &[RoundRecord]) -> Vec<String> {
    let set: BTreeSet<String> = records.iter().flat_map(|r| r.test.rows.iter().filter(|x| x.suite != "all").map(|x| x.suite.clone())).collect();
    set.into_iter().collect()
}

fn suite_success(r: &EvalReport, suite: &str, difficulty: Option<u8>) -> Option<f64> {
    r.row(suite, difficulty).map(|x| x.success_rate)
}

/// The best round by dev success among those whose model was kept (round 0 included): chosen without looking at
/// the test split, so its test success is an unbiased estimate. Without dev (`eval.dev = false`), the last kept
/// round.
pub fn best(records: &[RoundRecord]) -> Option<&RoundRecord> {
    let mut kept = records.iter().filter(|r| r.round == 0 || r.promoted());
    if !dev_everywhere(records) {
        return kept.next_back();
    }
    let dev = |r: &RoundRecord| r.dev_success().map_or(0.0, |d| d.0);
    kept.max_by(|a, b| dev(a).total_cmp(&dev(b)).then(b.round.cmp(&a.round)))
}

/// How [`best`] chose its round.
pub fn best_by(records: &[RoundRecord]) -> &'static str {
    if dev_everywhere(records) {
        "chosen on dev"
    } else {
        "the last kept: dev not evaluated"
    }
}

fn dev_everywhere(records: &[RoundRecord]) -> bool {
    records.iter().all(|r| r.dev.is_some())
}

pub fn markdown(cfg: &LoopConfig, records: &[RoundRecord], dev_origin: &str) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# autodidact loop `{}`\n", cfg.name);
    let (dev_n, test_n) = records.first().map_or((None, 0), |r| (r.dev_success().map(|d| d.1), overall(&r.test).1));
    let dev_n = dev_n.map_or("not evaluated".into(), |n| format!("{n} episodes"));
    let _ = writeln!(
        s,
        "Model `{}`; {} of {} rounds done; config in `config.toml`. Evaluation: {} samples per task at temperature {}; dev {dev_n}, test {} episodes.\n",
        cfg.model,
        records.len().saturating_sub(1),
        cfg.rounds,
        cfg.eval.samples,
        cfg.eval.temperature,
        test_n
    );
    if cfg.eval.dev {
        let _ = writeln!(
            s,
            "Dev split: {dev_origin}. The gate and the choice of the best round use dev only; the test split is evaluated every round and decides nothing.\n"
        );
    } else {
        let _ = writeln!(s, "Dev split not evaluated (`eval.dev = false`, gate off): every round is kept and the last one is the run's model; the test split decides nothing.\n");
    }
    let ks = records.first().map(|r| r.test.ks.clone()).unwrap_or_default();
    let pass_cols: String = ks.iter().map(|k| format!(" pass@{k} |")).collect();
    let _ = writeln!(s, "## Rounds\n");
    let _ = writeln!(
        s,
        "| round | model | train success | kept | trained tokens | loss | dev success | test success |{pass_cols} mean turns | no few-shot | gate | minutes |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|---|---|---|{}---|---|---|---|", "---|".repeat(ks.len()));
    for r in records {
        let all = r.test.row("all", None);
        let pass: String = ks
            .iter()
            .map(|k| format!(" {} |", all.and_then(|a| a.pass_at_k.iter().find(|p| p.k == *k)).and_then(|p| p.value).map_or("-".into(), pct)))
            .collect();
        let model = match (&r.adapter, r.round) {
            (_, 0) => "base".to_string(),
            (Some(a), _) => format!("`{}`", a.display()),
            (None, _) => "base".to_string(),
        };
        let loss = r.train.as_ref().map_or("-".into(), |t| match (t.first_loss, t.last_loss) {
            (Some(a), Some(b)) => format!("{a:.3} → {b:.3}"),
            _ => "-".into(),
        });
        let _ = writeln!(
            s,
            "| {} | {model} | {} | {} | {} | {loss} | {} | {} |{pass} {} | {} | {} | {:.1} |",
            r.round,
            r.rollout.as_ref().map_or("-".into(), |x| format!("{} ({}/{})", pct(x.success_rate), x.successes, x.episodes)),
            r.filter.as_ref().map_or("-".into(), |f| f.kept.to_string()),
            r.filter.as_ref().map_or("-".into(), |f| f.trained_tokens.to_string()),
            r.dev.as_ref().map_or("-".into(), |d| pct(overall(d).0)),
            pct(r.success()),
            all.map_or("-".into(), |a| format!("{:.2}", a.mean_turns)),
            r.test_no_fewshot.as_ref().map_or("-".into(), |t| pct(overall(t).0)),
            r.gate.as_ref().map_or("-".into(), |g| if g.promoted {
                "kept".into()
            } else {
                format!("rolled back ({})", g.reason.split(':').next().unwrap_or(""))
            }),
            r.seconds / 60.0,
        );
    }
    let names = suites(records);
    let _ = writeln!(s, "\n## Test success per suite\n");
    let _ = writeln!(s, "| round | {} | all |", names.join(" | "));
    let _ = writeln!(s, "|---|{}---|", "---|".repeat(names.len()));
    for r in records {
        let cells: Vec<String> = names.iter().map(|n| suite_success(&r.test, n, None).map_or("-".into(), pct)).collect();
        let _ = writeln!(s, "| {} | {} | {} |", r.round, cells.join(" | "), pct(r.success()));
    }
    let sources: Vec<String> = records.iter().flat_map(|r| r.sources.iter().map(|x| x.source.clone())).collect::<BTreeSet<_>>().into_iter().collect();
    if sources.len() > 1 || sources.iter().any(|x| x != super::tasks::GENERATED) {
        let _ = writeln!(s, "\n## Success per task source (dev / test)\n");
        let _ = writeln!(s, "| round | {} |", sources.join(" | "));
        let _ = writeln!(s, "|---|{}", "---|".repeat(sources.len()));
        for r in records {
            let cell = |src: &str, split: Split| r.sources.iter().find(|x| x.source == src && x.split == split).map_or("-".into(), |x| pct(x.success_rate));
            let cells: Vec<String> = sources.iter().map(|src| format!("{} / {}", cell(src, Split::Dev), cell(src, Split::Test))).collect();
            let _ = writeln!(s, "| {} | {} |", r.round, cells.join(" | "));
        }
    }
    if let (Some(base), Some(best)) = (records.first(), best(records)) {
        let _ = writeln!(s, "\n## Base vs best kept round ({}, {}), on test\n", best.round, best_by(records));
        let _ = writeln!(s, "| suite | difficulty | base | best | change | base, no few-shot | best, no few-shot |");
        let _ = writeln!(s, "|---|---|---|---|---|---|---|");
        for row in base.test.rows.iter() {
            let b = row.success_rate;
            let Some(x) = suite_success(&best.test, &row.suite, row.difficulty) else { continue };
            let nf = |r: &RoundRecord| r.test_no_fewshot.as_ref().and_then(|t| suite_success(t, &row.suite, row.difficulty)).map_or("-".into(), pct);
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {:+.1} | {} | {} |",
                row.suite,
                row.difficulty.map_or("all".into(), |d| d.to_string()),
                pct(b),
                pct(x),
                100.0 * (x - b),
                nf(base),
                nf(best)
            );
        }
    }
    rl_section(&mut s, records);
    let _ = writeln!(s, "\n![curves](curves.svg)\n");
    let _ = writeln!(
        s,
        "Gate: a round's adapter is kept when its dev success is at least the current model's minus {} standard error(s) of the difference{}.",
        cfg.gate.z,
        if cfg.gate.enabled { "" } else { " (disabled in this config: every round is kept)" }
    );
    s
}

/// The RL rounds' training summaries and the hinted rollouts' yield, when the run has them.
fn rl_section(s: &mut String, records: &[RoundRecord]) {
    let f = |v: Option<f64>, d: usize| v.map_or("-".into(), |v| format!("{v:.d$}"));
    let rl: Vec<(usize, &super::records::RlRecord)> =
        records.iter().filter_map(|r| r.train.as_ref().and_then(|t| t.rl.as_ref()).map(|x| (r.round, x))).collect();
    if !rl.is_empty() {
        let _ = writeln!(s, "\n## RL training (per-step curves: rl.svg)\n");
        let _ = writeln!(s, "| round | objective | groups | equal-reward groups | episodes trained | mean reward | sampler vs trainer log-prob, mean abs | KL last (peak step) | clip fraction | gap T - S first → last | gate mean |");
        let _ = writeln!(s, "|---|---|---|---|---|---|---|---|---|---|---|");
        for (round, x) in rl {
            let _ = writeln!(
                s,
                "| {round} | {:?} | {} | {} | {} | {:.2} | {} | {} ({}) | {} | {} → {} | {} |",
                x.objective,
                x.groups,
                x.zero_variance_groups,
                x.episodes_used,
                x.reward_mean,
                if x.sampler_gap.tokens > 0 { format!("{:.5}", x.sampler_gap.mean_abs) } else { "- (T ≠ 1)".into() },
                f(x.kl_last, 5),
                f(x.kl_peak, 3),
                f(x.clip_fraction_mean, 3),
                f(x.gap_first, 3),
                f(x.gap_last, 3),
                f(x.gate_mean, 3)
            );
        }
    }
    let sft: Vec<(usize, &super::records::TrainRecord, usize)> =
        records.iter().filter_map(|r| Some((r.round, r.sft.as_ref()?, r.filter.as_ref()?.kept))).collect();
    if !sft.is_empty() {
        let _ = writeln!(s, "\n## Training on the filtered successes after the RL update (`rl.then_sft`, train-sft/)\n");
        let _ = writeln!(s, "| round | episodes kept | steps | loss |");
        let _ = writeln!(s, "|---|---|---|---|");
        for (round, t, kept) in sft {
            let _ = writeln!(s, "| {round} | {kept} | {} | {} → {} |", t.steps, f(t.first_loss, 3), f(t.last_loss, 3));
        }
    }
    let hinted: Vec<(usize, &super::records::HintedRecord)> =
        records.iter().filter_map(|r| r.rollout.as_ref().and_then(|x| x.hinted.as_ref()).map(|h| (r.round, h))).collect();
    if !hinted.is_empty() {
        let _ = writeln!(s, "\n## Hinted rollouts (unsolved train tasks, sampled again with the hint; trained on without it)\n");
        let _ = writeln!(s, "| round | tasks | episodes | successes | tasks solved | of difficulty 2+ |");
        let _ = writeln!(s, "|---|---|---|---|---|---|");
        for (round, h) in hinted {
            let _ = writeln!(s, "| {round} | {} | {} | {} | {} | {} |", h.tasks, h.episodes, h.successes, h.tasks_solved, h.hard_tasks_solved);
        }
    }
}

pub fn curves(records: &[RoundRecord]) -> String {
    let x = |r: &RoundRecord| r.round as f64;
    let mut success =
        vec![Series { name: "all (test)".into(), points: records.iter().map(|r| (x(r), 100.0 * r.success())).collect(), dashed: false, bold: true }];
    if dev_everywhere(records) {
        success.push(Series {
            name: "all (dev)".into(),
            points: records.iter().filter_map(|r| Some((x(r), 100.0 * r.dev_success()?.0))).collect(),
            dashed: true,
            bold: false,
        });
    }
    if records.iter().all(|r| r.test_no_fewshot.is_some()) {
        success.push(Series {
            name: "all (test), no few-shot".into(),
            points: records.iter().filter_map(|r| r.test_no_fewshot.as_ref().map(|t| (x(r), 100.0 * overall(t).0))).collect(),
            dashed: true,
            bold: true,
        });
    }
    for n in suites(records) {
        success.push(Series {
            name: n.clone(),
            points: records.iter().filter_map(|r| suite_success(&r.test, &n, None).map(|v| (x(r), 100.0 * v))).collect(),
            dashed: false,
            bold: false,
        });
    }
    // Task files get a line each (test split), beside the suites.
    let files: BTreeSet<String> =
        records.iter().flat_map(|r| r.sources.iter().filter(|s| s.source != super::tasks::GENERATED).map(|s| s.source.clone())).collect();
    for f in files {
        let points =
            records.iter().filter_map(|r| r.sources.iter().find(|s| s.source == f && s.split == Split::Test).map(|s| (x(r), 100.0 * s.success_rate))).collect();
        let name = Path::new(&f).file_name().map_or(f.clone(), |n| n.to_string_lossy().to_string());
        success.push(Series { name, points, dashed: true, bold: false });
    }
    let turns = vec![Series {
        name: "mean turns".into(),
        points: records.iter().filter_map(|r| r.test.row("all", None).map(|a| (x(r), a.mean_turns))).collect(),
        dashed: false,
        bold: true,
    }];
    svg(&[
        Chart { title: "Success per round (suites: test)".into(), x_label: "round".into(), y_label: "success (%)".into(), y_max: Some(100.0), series: success },
        Chart { title: "Mean turns per test episode".into(), x_label: "round".into(), y_label: "turns".into(), y_max: None, series: turns },
    ])
}

/// A round's figures, as the report shows them: one line of metrics.jsonl and the round's TensorBoard scalars.
fn round_line(r: &RoundRecord) -> serde_json::Value {
    let all = r.test.row("all", None);
    let pass_at_k: serde_json::Map<String, serde_json::Value> =
        all.map(|a| a.pass_at_k.iter().filter_map(|p| Some((p.k.to_string(), p.value?.into()))).collect()).unwrap_or_default();
    let by_suite: serde_json::Map<String, serde_json::Value> =
        r.test.rows.iter().filter(|x| x.suite != "all" && x.difficulty.is_none()).map(|x| (x.suite.clone(), x.success_rate.into())).collect();
    let by_source = |split: Split| -> serde_json::Map<String, serde_json::Value> {
        r.sources.iter().filter(|x| x.split == split).map(|x| (x.source.clone(), x.success_rate.into())).collect()
    };
    serde_json::json!({
        "event": "round", "round": r.round, "test_success": r.success(), "dev_success": r.dev.as_ref().map(|d| overall(d).0),
        "test_success_no_fewshot": r.test_no_fewshot.as_ref().map(|t| overall(t).0),
        "test_pass_at_k": pass_at_k, "test_success_by_suite": by_suite,
        "dev_success_by_source": by_source(Split::Dev), "test_success_by_source": by_source(Split::Test),
        "mean_turns": all.map(|a| a.mean_turns), "train_success": r.rollout.as_ref().map(|x| x.success_rate),
        "kept": r.filter.as_ref().map(|f| f.kept), "trained_tokens": r.filter.as_ref().map(|f| f.trained_tokens),
        "first_loss": r.train.as_ref().and_then(|t| t.first_loss), "loss": r.train.as_ref().and_then(|t| t.last_loss),
        "promoted": r.gate.as_ref().map(|g| g.promoted), "episodes_per_minute": r.rollout.as_ref().map(|x| x.episodes_per_minute),
        "generated_tokens_per_second": r.rollout.as_ref().map(|x| x.generated_tokens_per_second),
        "train_tokens_per_second": r.train.as_ref().map(|t| t.tokens_per_second), "seconds": r.seconds,
    })
}

/// `<run>/tensorboard/rounds/`: every number of a round's line as the scalar `round/<field>` at step = round. Round
/// records never change once written, so each round is appended once, after the rounds already there.
fn write_round_events(dir: &Path, records: &[RoundRecord]) -> anyhow::Result<()> {
    let tb = dir.join(TENSORBOARD).join("rounds");
    let have: BTreeSet<i64> = tfevents::read_dir(&tb)?.iter().filter(|e| !e.scalars.is_empty()).map(|e| e.step).collect();
    let missing: Vec<&RoundRecord> = records.iter().filter(|r| !have.contains(&(r.round as i64))).collect();
    if missing.is_empty() {
        return Ok(());
    }
    let mut w = EventWriter::append_to_newest(&tb)?;
    for r in missing {
        w.write(&Event::scalars(r.round as i64, tfevents::scalars_of(&round_line(r), "round", &["event", "round"])))?;
    }
    Ok(())
}

/// One event per line: each round's summary, then its training steps.
fn metrics(dir: &Path, records: &[RoundRecord]) -> anyhow::Result<Vec<serde_json::Value>> {
    let mut out = Vec::new();
    for r in records {
        out.push(round_line(r));
        for (sub, event, ran) in [("train", "train_step", r.train.is_some()), ("train-sft", "sft_step", r.sft.is_some())] {
            let steps = round_dir(dir, r.round).join(sub).join("metrics.jsonl");
            if ran && steps.is_file() {
                for mut v in read_jsonl::<serde_json::Value>(&steps, ReadMode::Strict)?.into_items() {
                    if let Some(o) = v.as_object_mut() {
                        o.insert("event".into(), event.into());
                        o.insert("round".into(), r.round.into());
                    }
                    out.push(v);
                }
            }
        }
    }
    Ok(out)
}
