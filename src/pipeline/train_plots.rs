//! Training curves from a run folder's `metrics.jsonl`: `loss.svg` for supervised runs (loss, gradient norm,
//! learning rate per step) and `rl.svg` for GRPO / SDAR (reward, KL and entropy, clipping, SDAR's gap and gate).
use std::path::{Path, PathBuf};

use super::plot::{svg, Chart, Series};
use crate::atomic::write_file;
use crate::data::jsonl::read_jsonl;
use crate::data::ReadMode;
use crate::train::rl::RlStepMetrics;
use crate::train::StepMetrics;

fn line<M>(steps: &[M], name: &str, f: &dyn Fn(&M) -> Option<f64>, dashed: bool) -> Series {
    Series { name: name.into(), points: steps.iter().enumerate().filter_map(|(i, m)| f(m).map(|v| ((i + 1) as f64, v))).collect(), dashed, bold: !dashed }
}

fn chart(title: &str, x_label: &str, y_label: &str, series: Vec<Series>) -> Chart {
    Chart {
        title: title.into(),
        x_label: x_label.into(),
        y_label: y_label.into(),
        y_max: None,
        series: series.into_iter().filter(|s| !s.points.is_empty()).collect(),
    }
}

/// A supervised run's steps, in order.
pub fn sft_svg(steps: &[StepMetrics]) -> String {
    let x = "training step";
    svg(&[
        chart("Training loss", x, "nats per trained token", vec![line(steps, "loss", &|m| Some(m.loss), false)]),
        chart("Gradient norm (before clipping)", x, "norm", vec![line(steps, "grad norm", &|m| Some(m.grad_norm), false)]),
        chart("Learning rate", x, "lr", vec![line(steps, "lr", &|m| Some(m.lr), false)]),
    ])
}

/// RL steps in order (`x_label` says whether they span several rounds).
pub fn rl_svg(steps: &[RlStepMetrics], x_label: &str) -> String {
    svg(&[
        chart(
            "Reward per step",
            x_label,
            "reward",
            vec![line(steps, "mean", &|m| Some(m.reward_mean), false), line(steps, "std", &|m| Some(m.reward_std), true)],
        ),
        chart(
            "KL to the base, entropy / 100",
            x_label,
            "nats",
            vec![line(steps, "KL (k3)", &|m| Some(m.kl), false), line(steps, "entropy / 100", &|m| Some(m.entropy / 100.0), true)],
        ),
        chart(
            "Clipping and flat groups",
            x_label,
            "share",
            vec![line(steps, "clip fraction", &|m| Some(m.clip_fraction), false), line(steps, "zero-variance groups", &|m| Some(m.zero_variance_groups), true)],
        ),
        chart(
            "SDAR: teacher - student gap, gate",
            x_label,
            "",
            vec![
                line(steps, "mean gap T - S", &|m| m.gap_mean, false),
                line(steps, "gate mean", &|m| m.gate_mean, true),
                line(steps, "share g > 0.5", &|m| m.gate_above_half, true),
            ],
        ),
    ])
}

/// Writes `dir/loss.svg` from `dir/metrics.jsonl` of a supervised run; returns its path.
pub fn write_sft_plot(dir: &Path) -> anyhow::Result<PathBuf> {
    let steps: Vec<StepMetrics> = read_jsonl(&dir.join("metrics.jsonl"), ReadMode::Strict)?.into_items();
    let path = dir.join("loss.svg");
    write_file(&path, sft_svg(&steps).as_bytes())?;
    Ok(path)
}

/// Writes `dir/rl.svg` from `dir/metrics.jsonl` of a GRPO or SDAR run; returns its path.
pub fn write_rl_plot(dir: &Path) -> anyhow::Result<PathBuf> {
    let steps: Vec<RlStepMetrics> = read_jsonl(&dir.join("metrics.jsonl"), ReadMode::Strict)?.into_items();
    let path = dir.join("rl.svg");
    write_file(&path, rl_svg(&steps, "training step").as_bytes())?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::jsonl::write_jsonl_atomic;

    fn count(svg: &str, what: &str) -> usize {
        svg.matches(what).count()
    }

    /// Every step of metrics.jsonl becomes a point of every curve; curves with no data (SDAR's, in a GRPO run)
    /// are left out rather than drawn flat.
    #[test]
    fn plots_carry_every_step_of_the_run() {
        let dir = tempfile::tempdir().unwrap();
        let rl: Vec<RlStepMetrics> =
            (1..=5).map(|step| RlStepMetrics { step, reward_mean: step as f64, kl: 0.01 * step as f64, ..Default::default() }).collect();
        write_jsonl_atomic(&dir.path().join("metrics.jsonl"), &rl).unwrap();
        let svg = std::fs::read_to_string(write_rl_plot(dir.path()).unwrap()).unwrap();
        assert_eq!((count(&svg, "<polyline"), count(&svg, "<circle")), (6, 30));
        assert!(svg.contains("Reward per step") && svg.contains("SDAR"));

        let sft: Vec<StepMetrics> = (1..=7)
            .map(|step| StepMetrics {
                step,
                epoch: 0,
                loss: 3.0 / step as f64,
                lr: 1e-3,
                grad_norm: 1.0,
                tokens_per_s: 10.0,
                step_tokens: 8,
                trained_tokens: 8 * step as u64,
            })
            .collect();
        write_jsonl_atomic(&dir.path().join("metrics.jsonl"), &sft).unwrap();
        let svg = std::fs::read_to_string(write_sft_plot(dir.path()).unwrap()).unwrap();
        assert_eq!((count(&svg, "<polyline"), count(&svg, "<circle")), (3, 21));
        assert!(svg.contains("Training loss"));
    }
}
