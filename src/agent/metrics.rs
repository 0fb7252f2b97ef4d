//! Evaluation metrics from trajectories: success rate, unbiased pass@k, mean turns / tool calls / generated
//! tokens, invalid-step rate; overall, per suite and per (suite, difficulty). A text table and a JSON form.
use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::data::Trajectory;

/// Unbiased pass@k (Chen et al. 2021): `1 - C(n-c, k) / C(n, k)`, computed as a product so that large `n`
/// neither overflows nor loses precision.
pub fn pass_at_k(n: usize, c: usize, k: usize) -> f64 {
    if k == 0 || n < k {
        return f64::NAN;
    }
    if n - c < k {
        return 1.0;
    }
    1.0 - ((n - c + 1)..=n).map(|i| 1.0 - k as f64 / i as f64).product::<f64>()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PassAtK {
    pub k: usize,
    /// Mean over tasks with at least `k` samples; `None` when no task has that many.
    pub value: Option<f64>,
    pub tasks: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Row {
    /// `all` for the overall row.
    pub suite: String,
    /// `None` for rows over all difficulties.
    pub difficulty: Option<u8>,
    pub episodes: usize,
    pub tasks: usize,
    pub success_rate: f64,
    pub mean_score: f64,
    pub pass_at_k: Vec<PassAtK>,
    pub mean_turns: f64,
    pub mean_tool_calls: f64,
    pub mean_generated_tokens: f64,
    /// Invalid steps per assistant turn.
    pub invalid_step_rate: f64,
    pub terminations: BTreeMap<String, usize>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalReport {
    pub ks: Vec<usize>,
    /// Overall first, then per suite, each followed by its difficulties.
    pub rows: Vec<Row>,
}

fn row(suite: &str, difficulty: Option<u8>, trajs: &[&Trajectory], ks: &[usize]) -> Row {
    let n = trajs.len().max(1) as f64;
    let mut per_task: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    let mut terminations = BTreeMap::new();
    for t in trajs {
        let e = per_task.entry(&t.task_id).or_default();
        e.0 += 1;
        e.1 += usize::from(t.verdict.success);
        let name = serde_json::to_value(t.termination).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default();
        *terminations.entry(name).or_default() += 1;
    }
    let pass = ks
        .iter()
        .map(|&k| {
            let vals: Vec<f64> = per_task.values().filter(|(s, _)| *s >= k).map(|&(s, c)| pass_at_k(s, c, k)).collect();
            PassAtK { k, value: (!vals.is_empty()).then(|| vals.iter().sum::<f64>() / vals.len() as f64), tasks: vals.len() }
        })
        .collect();
    let sum = |f: &dyn Fn(&Trajectory) -> f64| trajs.iter().map(|t| f(t)).sum::<f64>();
    let turns = sum(&|t| f64::from(t.counts.turns));
    Row {
        suite: suite.to_string(),
        difficulty,
        episodes: trajs.len(),
        tasks: per_task.len(),
        success_rate: sum(&|t| f64::from(u8::from(t.verdict.success))) / n,
        mean_score: sum(&|t| t.verdict.score) / n,
        pass_at_k: pass,
        mean_turns: turns / n,
        mean_tool_calls: sum(&|t| f64::from(t.counts.tool_calls)) / n,
        mean_generated_tokens: sum(&|t| f64::from(t.counts.generated_tokens)) / n,
        invalid_step_rate: if turns > 0.0 { sum(&|t| f64::from(t.counts.invalid_steps)) / turns } else { 0.0 },
        terminations,
    }
}

impl EvalReport {
    pub fn from_trajectories(trajs: &[Trajectory], ks: &[usize]) -> Self {
        let all: Vec<&Trajectory> = trajs.iter().collect();
        let mut rows = vec![row("all", None, &all, ks)];
        let mut by_suite: BTreeMap<&str, BTreeMap<u8, Vec<&Trajectory>>> = BTreeMap::new();
        for t in trajs {
            by_suite.entry(&t.suite).or_default().entry(t.difficulty).or_default().push(t);
        }
        for (suite, by_diff) in &by_suite {
            let flat: Vec<&Trajectory> = by_diff.values().flatten().copied().collect();
            rows.push(row(suite, None, &flat, ks));
            for (d, ts) in by_diff {
                rows.push(row(suite, Some(*d), ts, ks));
            }
        }
        Self { ks: ks.to_vec(), rows }
    }

    pub fn row(&self, suite: &str, difficulty: Option<u8>) -> Option<&Row> {
        self.rows.iter().find(|r| r.suite == suite && r.difficulty == difficulty)
    }

    /// A fixed-width table, one row per group.
    pub fn to_table(&self) -> String {
        let mut out = format!("{:<14} {:>4} {:>8} {:>6} {:>8}", "suite", "diff", "episodes", "tasks", "success");
        for k in &self.ks {
            let _ = write!(out, " {:>8}", format!("pass@{k}"));
        }
        let _ = writeln!(out, " {:>6} {:>6} {:>7} {:>8}", "turns", "calls", "tokens", "invalid");
        for r in &self.rows {
            let diff = r.difficulty.map_or("-".to_string(), |d| d.to_string());
            let _ = write!(out, "{:<14} {:>4} {:>8} {:>6} {:>7.1}%", r.suite, diff, r.episodes, r.tasks, 100.0 * r.success_rate);
            for p in &r.pass_at_k {
                let _ = match p.value {
                    Some(v) => write!(out, " {:>7.1}%", 100.0 * v),
                    None => write!(out, " {:>8}", "-"),
                };
            }
            let _ = writeln!(out, " {:>6.2} {:>6.2} {:>7.1} {:>7.1}%", r.mean_turns, r.mean_tool_calls, r.mean_generated_tokens, 100.0 * r.invalid_step_rate);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binom(n: u64, k: u64) -> f64 {
        (0..k).fold(1.0, |acc, i| acc * (n - i) as f64 / (i + 1) as f64)
    }

    #[test]
    fn pass_at_k_matches_the_closed_form() {
        for (n, c, k) in [(10, 3, 1), (10, 3, 5), (20, 0, 4), (20, 20, 4), (7, 2, 6), (200, 13, 10)] {
            let exact = if n - c < k { 1.0 } else { 1.0 - binom(n - c, k) / binom(n, k) };
            let got = pass_at_k(n as usize, c as usize, k as usize);
            assert!((got - exact).abs() < 1e-12, "n={n} c={c} k={k}: {got} vs {exact}");
        }
        assert!((pass_at_k(10, 3, 1) - 0.3).abs() < 1e-12);
        assert!(pass_at_k(2, 1, 3).is_nan());
        // Stable where C(n, k) overflows f64.
        let v = pass_at_k(5000, 1, 2000);
        assert!((v - 0.4).abs() < 1e-9, "{v}");
    }
}
