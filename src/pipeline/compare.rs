//! `autodidact compare`: several loop runs side by side, grouped into arms (run `NAME-sSEED` belongs to arm
//! `NAME`), with the test success of every round as a mean over seeds and a 95% interval (Student's t), per
//! suite and difficulty, paired differences against a reference arm, and wall time.
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Serialize;

use super::plot::{svg, Chart, Series};
use super::records::{read_json, RoundRecord};
use super::stages::round_dir;
use super::ROUND_FILE;
use crate::agent::metrics::EvalReport;

/// One run folder's records.
#[derive(Debug, Clone)]
pub struct Run {
    pub name: String,
    pub arm: String,
    pub rounds: Vec<RoundRecord>,
}

/// `NAME-sSEED` -> `NAME`; any other name is an arm of its own.
pub fn arm_of(name: &str) -> &str {
    match name.rsplit_once("-s") {
        Some((arm, seed)) if !seed.is_empty() && seed.bytes().all(|b| b.is_ascii_digit()) => arm,
        _ => name,
    }
}

/// Reads every finished round of each run folder.
pub fn load_runs(dirs: &[PathBuf]) -> anyhow::Result<Vec<Run>> {
    let mut runs = Vec::new();
    for d in dirs {
        let name = d.file_name().map(|n| n.to_string_lossy().to_string()).with_context(|| format!("{}: not a run folder", d.display()))?;
        let mut rounds = Vec::new();
        for r in 0.. {
            let path = round_dir(d, r).join(ROUND_FILE);
            if !path.is_file() {
                break;
            }
            rounds.push(read_json::<RoundRecord>(&path)?);
        }
        anyhow::ensure!(!rounds.is_empty(), "{}: no finished round (round-000/round.json)", d.display());
        runs.push(Run { arm: arm_of(&name).to_string(), name, rounds });
    }
    Ok(runs)
}

/// A mean over seeds with its 95% interval (none from a single seed).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Estimate {
    pub mean: f64,
    pub half_width: Option<f64>,
    pub n: usize,
}

/// Two-sided 95% Student t quantiles for 1..=10 degrees of freedom, then the normal one.
fn t95(df: usize) -> f64 {
    const T: [f64; 10] = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228];
    if df == 0 {
        f64::NAN
    } else {
        T.get(df - 1).copied().unwrap_or(1.96)
    }
}

pub fn estimate(values: &[f64]) -> Estimate {
    let n = values.len();
    let mean = values.iter().sum::<f64>() / n.max(1) as f64;
    let half_width = (n > 1).then(|| {
        let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
        t95(n - 1) * (var / n as f64).sqrt()
    });
    Estimate { mean, half_width, n }
}

/// A success rate measured on `episodes` episodes, with the binomial variance of that measurement (from the
/// add-one rate, so that 0 of 36 is not taken as certain).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    pub value: f64,
    pub variance: f64,
}

impl Rate {
    pub fn new(rate: f64, episodes: usize) -> Rate {
        let n = episodes.max(1) as f64;
        let p = (rate * n + 1.0) / (n + 2.0);
        Rate { value: rate, variance: p * (1.0 - p) / n }
    }
    /// `self - other` of two independent measurements.
    pub fn minus(self, other: Rate) -> Rate {
        Rate { value: self.value - other.value, variance: self.variance + other.variance }
    }
}

/// [`estimate`] over seeds, with the interval widened to at least the episodes' own sampling noise (normal 95%
/// of the mean's binomial variance): a few seeds that happen to agree give a t-interval of width 0, which would
/// call any difference real.
pub fn estimate_rates(rates: &[Rate]) -> Estimate {
    let mut e = estimate(&rates.iter().map(|r| r.value).collect::<Vec<_>>());
    let s = rates.len().max(1) as f64;
    let noise = 1.96 * (rates.iter().map(|r| r.variance).sum::<f64>() / (s * s)).sqrt();
    e.half_width = e.half_width.map(|h| h.max(noise));
    e
}

impl Estimate {
    fn pct(&self) -> String {
        match self.half_width {
            Some(h) => format!("{:.1} ± {:.1}", 100.0 * self.mean, 100.0 * h),
            None => format!("{:.1}", 100.0 * self.mean),
        }
    }
    /// The interval excludes `x`.
    pub fn excludes(&self, x: f64) -> bool {
        self.half_width.is_some_and(|h| (self.mean - x).abs() > h)
    }
}

/// Success over the rows of one difficulty (all suites), or overall.
pub fn success_at(r: &EvalReport, difficulty: Option<u8>) -> Option<Rate> {
    match difficulty {
        None => r.row("all", None).map(|x| Rate::new(x.success_rate, x.episodes)),
        Some(d) => {
            let rows: Vec<_> = r.rows.iter().filter(|x| x.suite != "all" && x.difficulty == Some(d)).collect();
            let n: usize = rows.iter().map(|x| x.episodes).sum();
            (n > 0).then(|| Rate::new(rows.iter().map(|x| x.success_rate * x.episodes as f64).sum::<f64>() / n as f64, n))
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ArmSummary {
    pub arm: String,
    pub seeds: usize,
    /// Test success per round (round 0 first).
    pub test: Vec<Estimate>,
    /// ... on the difficulty-2 tasks only.
    pub test_d2: Vec<Estimate>,
    /// Final round: per (suite, difficulty).
    pub last_by_group: BTreeMap<String, Estimate>,
    /// Final round minus the reference arm's, paired by seed (overall, difficulty 2).
    pub vs_reference: Option<(Estimate, Estimate)>,
    pub minutes: Estimate,
    /// Hinted rollouts: difficulty-2+ tasks solved per round; RL: share of equal-reward groups.
    pub hinted_hard_solved: Option<Estimate>,
    pub zero_variance_share: Option<Estimate>,
}

fn seed_of(name: &str) -> &str {
    name.rsplit_once("-s").map_or("", |(_, s)| s)
}

/// Summaries per arm, in first-seen order; `reference` (default: the first arm) anchors the differences.
pub fn summarize(runs: &[Run], reference: Option<&str>) -> Vec<ArmSummary> {
    let mut arms: Vec<&str> = Vec::new();
    for r in runs {
        if !arms.contains(&r.arm.as_str()) {
            arms.push(&r.arm);
        }
    }
    let reference = reference.unwrap_or(arms.first().copied().unwrap_or(""));
    let last = |r: &Run| r.rounds.last().map(|x| x.test.clone());
    let of = |arm: &str| runs.iter().filter(|r| r.arm == arm).collect::<Vec<_>>();
    arms.iter()
        .map(|&arm| {
            let mine = of(arm);
            let rounds = mine.iter().map(|r| r.rounds.len()).min().unwrap_or(0);
            let per_round = |d: Option<u8>| {
                (0..rounds).map(|k| estimate_rates(&mine.iter().filter_map(|r| success_at(&r.rounds[k].test, d)).collect::<Vec<_>>())).collect()
            };
            let mut groups: BTreeMap<String, Vec<Rate>> = BTreeMap::new();
            for r in &mine {
                for row in last(r).map(|t| t.rows).unwrap_or_default() {
                    let key = format!("{}, {}", row.suite, row.difficulty.map_or("all difficulties".into(), |d| format!("difficulty {d}")));
                    groups.entry(key).or_default().push(Rate::new(row.success_rate, row.episodes));
                }
            }
            let vs_reference = (arm != reference).then(|| {
                let refs = of(reference);
                let diffs = |d: Option<u8>| {
                    let v: Vec<Rate> = mine
                        .iter()
                        .filter_map(|r| {
                            let other = refs.iter().find(|x| seed_of(&x.name) == seed_of(&r.name))?;
                            Some(success_at(&last(r)?, d)?.minus(success_at(&last(other)?, d)?))
                        })
                        .collect();
                    estimate_rates(&v)
                };
                (diffs(None), diffs(Some(2)))
            });
            let hinted: Vec<f64> =
                mine.iter().flat_map(|r| r.rounds.iter().filter_map(|x| x.rollout.as_ref()?.hinted.as_ref().map(|h| h.hard_tasks_solved as f64))).collect();
            let flat: Vec<f64> = mine
                .iter()
                .flat_map(|r| r.rounds.iter().filter_map(|x| x.train.as_ref()?.rl.as_ref().map(|l| l.zero_variance_groups as f64 / l.groups.max(1) as f64)))
                .collect();
            ArmSummary {
                arm: arm.to_string(),
                seeds: mine.len(),
                test: per_round(None),
                test_d2: per_round(Some(2)),
                last_by_group: groups.into_iter().map(|(k, v)| (k, estimate_rates(&v))).collect(),
                vs_reference,
                minutes: estimate(&mine.iter().map(|r| r.rounds.iter().map(|x| x.seconds).sum::<f64>() / 60.0).collect::<Vec<_>>()),
                hinted_hard_solved: (!hinted.is_empty()).then(|| estimate(&hinted)),
                zero_variance_share: (!flat.is_empty()).then(|| estimate(&flat)),
            }
        })
        .collect()
}

pub fn markdown(arms: &[ArmSummary], reference: &str) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# Comparison\n");
    let _ = writeln!(s, "Test success (%), mean over seeds ± the 95% interval (Student's t over seeds, widened to at least the test episodes' binomial noise; none from one seed). Runs `NAME-sSEED` form arm `NAME`.\n");
    let rounds = arms.iter().map(|a| a.test.len()).max().unwrap_or(0);
    let head: String = (0..rounds).map(|r| format!(" round {r} |")).collect();
    for (title, pick) in [("All test tasks", 0), ("Difficulty-2 test tasks", 1)] {
        let _ = writeln!(s, "## {title}\n");
        let _ = writeln!(s, "| arm | seeds |{head} minutes |");
        let _ = writeln!(s, "|---|---|{}---|", "---|".repeat(rounds));
        for a in arms {
            let v = if pick == 0 { &a.test } else { &a.test_d2 };
            let cells: String = (0..rounds).map(|r| format!(" {} |", v.get(r).map_or("-".into(), |e| e.pct()))).collect();
            let m = a.minutes;
            let _ = writeln!(s, "| {} | {} |{cells} {:.0}{} |", a.arm, a.seeds, m.mean, m.half_width.map_or(String::new(), |h| format!(" ± {h:.0}")));
        }
        let _ = writeln!(s);
    }
    let _ = writeln!(s, "## Final round minus `{reference}`, paired by seed (points)\n");
    let _ = writeln!(s, "| arm | all tasks | difficulty 2 | beyond the noise? |");
    let _ = writeln!(s, "|---|---|---|---|");
    for a in arms {
        if let Some((all, d2)) = &a.vs_reference {
            let _ = writeln!(s, "| {} | {} | {} | {} |", a.arm, signed(all), signed(d2), verdict(all, d2));
        }
    }
    let groups: Vec<&String> = arms.first().map(|a| a.last_by_group.keys().collect()).unwrap_or_default();
    let _ = writeln!(s, "\n## Final round per suite and difficulty\n");
    let _ = writeln!(s, "| group | {} |", arms.iter().map(|a| a.arm.as_str()).collect::<Vec<_>>().join(" | "));
    let _ = writeln!(s, "|---|{}", "---|".repeat(arms.len()));
    for g in groups {
        let cells: Vec<String> = arms.iter().map(|a| a.last_by_group.get(g).map_or("-".into(), |e| e.pct())).collect();
        let _ = writeln!(s, "| {g} | {} |", cells.join(" | "));
    }
    let extra: Vec<String> = arms
        .iter()
        .filter_map(|a| {
            let h = a.hinted_hard_solved.map(|e| format!("hinted rollouts solved {:.1} difficulty-2+ train tasks per round", e.mean));
            let z = a.zero_variance_share.map(|e| format!("{:.0}% of task groups had equal rewards (no GRPO signal)", 100.0 * e.mean));
            let parts: Vec<String> = [h, z].into_iter().flatten().collect();
            (!parts.is_empty()).then(|| format!("- `{}`: {}", a.arm, parts.join("; ")))
        })
        .collect();
    if !extra.is_empty() {
        let _ = writeln!(s, "\n## Training signal\n\n{}", extra.join("\n"));
    }
    let _ = writeln!(s, "\n![comparison](compare.svg)");
    s
}

/// Which of the two paired differences (all tasks, difficulty 2) lie beyond the noise, and in which direction.
fn verdict(all: &Estimate, d2: &Estimate) -> String {
    let dir = |e: &Estimate| if e.mean > 0.0 { "better" } else { "worse" };
    match (all.excludes(0.0), d2.excludes(0.0)) {
        (true, true) => format!("yes: overall ({}) and on difficulty 2 ({})", dir(all), dir(d2)),
        (false, true) => format!("difficulty 2 only ({})", dir(d2)),
        (true, false) => format!("overall only ({})", dir(all)),
        _ if all.half_width.is_none() => "one seed: no interval".into(),
        _ => "no: the intervals contain 0".into(),
    }
}

fn signed(e: &Estimate) -> String {
    match e.half_width {
        Some(h) => format!("{:+.1} ± {:.1}", 100.0 * e.mean, 100.0 * h),
        None => format!("{:+.1}", 100.0 * e.mean),
    }
}

/// Test success per round per arm (all tasks, difficulty 2), means with the interval's ends dashed.
pub fn chart(arms: &[ArmSummary]) -> String {
    let make = |title: &str, pick: fn(&ArmSummary) -> &Vec<Estimate>| {
        let mut series = Vec::new();
        for a in arms {
            let v = pick(a);
            series.push(Series {
                name: a.arm.clone(),
                points: v.iter().enumerate().map(|(r, e)| (r as f64, 100.0 * e.mean)).collect(),
                dashed: false,
                bold: true,
            });
        }
        Chart { title: title.into(), x_label: "round".into(), y_label: "test success (%)".into(), y_max: None, series }
    };
    svg(&[make("All test tasks (mean over seeds)", |a| &a.test), make("Difficulty-2 test tasks", |a| &a.test_d2)])
}

/// Writes compare.md, compare.svg and compare.json into `out`.
pub fn write(out: &Path, arms: &[ArmSummary], reference: &str) -> anyhow::Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    crate::atomic::write_file(&out.join("compare.md"), markdown(arms, reference).as_bytes())?;
    crate::atomic::write_file(&out.join("compare.svg"), chart(arms).as_bytes())?;
    crate::data::jsonl::write_json_atomic(&out.join("compare.json"), &arms)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arms_intervals_and_pairing() {
        assert_eq!(arm_of("sdar-b5-s2"), "sdar-b5");
        assert_eq!(arm_of("quickstart"), "quickstart");
        assert_eq!(arm_of("x-s"), "x-s");
        let e = estimate(&[0.3, 0.35, 0.4]);
        assert!((e.mean - 0.35).abs() < 1e-12);
        assert!((e.half_width.unwrap() - 4.303 * 0.05 / 3f64.sqrt()).abs() < 1e-9);
        assert!(e.excludes(0.0) && !e.excludes(0.3));
        assert_eq!(estimate(&[0.4]).half_width, None);
    }

    #[test]
    fn seeds_that_agree_still_carry_the_episodes_noise() {
        // Two seeds, each 3 of 36 episodes below the reference: the t-interval alone is 0 wide.
        let d = Rate::new(1.0 / 36.0, 36).minus(Rate::new(4.0 / 36.0, 36));
        let e = estimate_rates(&[d, d]);
        assert!((e.mean + 3.0 / 36.0).abs() < 1e-12);
        let h = e.half_width.unwrap();
        assert!(h > 0.08 && h < 0.12, "{h}");
        assert!(!e.excludes(0.0), "3 of 36 in two seeds is within the noise");
        // Seeds that disagree keep their (wider) t-interval; one seed still has none.
        let wide = estimate_rates(&[Rate::new(0.1, 72), Rate::new(0.5, 72)]);
        assert!((wide.half_width.unwrap() - 12.706 * 0.2).abs() < 1e-9);
        assert_eq!(estimate_rates(&[Rate::new(0.0, 36)]).half_width, None);
    }

    #[test]
    fn the_verdict_names_every_difference_beyond_the_noise() {
        let e = |mean: f64, h: f64| Estimate { mean, half_width: Some(h), n: 3 };
        assert_eq!(verdict(&e(-0.10, 0.087), &e(-0.10, 0.073)), "yes: overall (worse) and on difficulty 2 (worse)");
        assert_eq!(verdict(&e(-0.17, 0.23), &e(-0.09, 0.08)), "difficulty 2 only (worse)");
        assert_eq!(verdict(&e(0.12, 0.10), &e(0.02, 0.08)), "overall only (better)");
        assert_eq!(verdict(&e(0.04, 0.10), &e(-0.02, 0.08)), "no: the intervals contain 0");
        assert_eq!(verdict(&Estimate { mean: 0.1, half_width: None, n: 1 }, &Estimate { mean: 0.0, half_width: None, n: 1 }), "one seed: no interval");
    }
}
