//! The per-token RL objective and its gradient with respect to the token's log-prob `S` and the entropy `H` of
//! its distribution. The trainer's graph only has to carry `S` and `H` (from the output-layer op); the loss is
//! `sum_t (dS_t * S_t + dH_t * H_t)` with these coefficients held constant, whose gradient is the objective's.
//! Keeping the algebra here, in plain numbers, makes every term testable against its formula and against finite
//! differences.
use serde::{Deserialize, Serialize};

/// The objective's coefficients (method.md §2 gives the defaults).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RlCoefs {
    /// PPO clip range of the ratio pi / pi_old.
    pub clip_eps: f64,
    /// Weight of the KL to the base model (adapter off), k3 estimator.
    pub kl_coef: f64,
    /// Weight of the entropy bonus.
    pub entropy_coef: f64,
    /// Weight of the SDAR term (0: GRPO alone).
    pub sdar_lambda: f64,
    /// Gate sharpness: g = sigmoid(beta (T - S)); 0 gives a flat gate of 0.5.
    pub sdar_beta: f64,
}

impl Default for RlCoefs {
    fn default() -> Self {
        RlCoefs { clip_eps: 0.2, kl_coef: 0.01, entropy_coef: 0.001, sdar_lambda: 0.01, sdar_beta: 5.0 }
    }
}

/// What the loss of one generated token depends on. `s` and `h` are the current model's (trainable); the rest
/// are constants computed before the update.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TokenInputs {
    /// Student log-prob of the sampled token.
    pub s: f64,
    /// Entropy of the student's distribution at that position.
    pub h: f64,
    /// Log-prob under the policy that sampled the episode (recomputed by the trainer before the update).
    pub old: f64,
    /// Log-prob under the base model.
    pub reference: f64,
    /// Teacher log-prob (same weights, privileged context); None without the SDAR term.
    pub teacher: Option<f64>,
    /// The episode's group-normalised advantage.
    pub advantage: f64,
}

/// One token's loss, its gradient coefficients and what the logs report.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct TokenTerms {
    pub loss: f64,
    pub pg: f64,
    pub kl: f64,
    pub sdar: f64,
    /// dLoss / dS.
    pub d_s: f64,
    /// dLoss / dH.
    pub d_h: f64,
    pub clipped: bool,
    pub gate: Option<f64>,
    /// T - S.
    pub gap: Option<f64>,
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// `L = -min(r A, clip(r, 1-eps, 1+eps) A) + kl_coef k3(ref, S) - entropy_coef H + lambda g (T - S)`, with
/// `r = exp(S - old)`, `k3 = exp(ref - S) - (ref - S) - 1` and the gate `g = sigmoid(beta (T - S))` detached.
pub fn token_terms(c: &RlCoefs, x: &TokenInputs) -> TokenTerms {
    let mut t = TokenTerms::default();
    if x.advantage != 0.0 {
        let r = (x.s - x.old).exp();
        let clipped_r = r.clamp(1.0 - c.clip_eps, 1.0 + c.clip_eps);
        let (unclipped, clipped) = (r * x.advantage, clipped_r * x.advantage);
        t.pg = -unclipped.min(clipped);
        t.clipped = clipped < unclipped;
        t.d_s = if t.clipped { 0.0 } else { -x.advantage * r };
    }
    let d = x.reference - x.s;
    t.kl = d.exp() - d - 1.0;
    t.d_s += c.kl_coef * (1.0 - d.exp());
    t.d_h = -c.entropy_coef;
    if let Some(teacher) = x.teacher {
        let gap = teacher - x.s;
        let g = sigmoid(c.sdar_beta * gap);
        t.sdar = g * gap;
        t.d_s -= c.sdar_lambda * g;
        t.gate = Some(g);
        t.gap = Some(gap);
    }
    t.loss = t.pg + c.kl_coef * t.kl - c.entropy_coef * x.h + c.sdar_lambda * t.sdar;
    t
}

/// Group-normalised advantages: `(R - mean) / (max(std, std_floor) + 1e-6)` within each group (population std).
/// Returns them and, per group, whether all its rewards are equal (such a group gives GRPO no signal). The floor
/// keeps a group whose rewards differ only by small penalties (no success, a few invalid steps) from getting
/// advantages as large as a group where one sample solved the task; 0 is plain GRPO. (Relative weight only: Adam
/// gives a step made only of such groups the same size either way.)
pub fn advantages(rewards: &[f64], groups: &[usize], std_floor: f64) -> (Vec<f64>, Vec<bool>) {
    let n_groups = groups.iter().map(|&g| g + 1).max().unwrap_or(0);
    let (mut sum, mut count) = (vec![0f64; n_groups], vec![0usize; n_groups]);
    for (&r, &g) in rewards.iter().zip(groups) {
        sum[g] += r;
        count[g] += 1;
    }
    let mean: Vec<f64> = sum.iter().zip(&count).map(|(s, &c)| s / c.max(1) as f64).collect();
    let mut var = vec![0f64; n_groups];
    for (&r, &g) in rewards.iter().zip(groups) {
        var[g] += (r - mean[g]).powi(2);
    }
    let std: Vec<f64> = var.iter().zip(&count).map(|(v, &c)| (v / c.max(1) as f64).sqrt()).collect();
    let flat: Vec<bool> = (0..n_groups).map(|g| rewards.iter().zip(groups).filter(|(_, &gg)| gg == g).all(|(&r, _)| r == mean[g])).collect();
    let adv = rewards.iter().zip(groups).map(|(&r, &g)| if flat[g] { 0.0 } else { (r - mean[g]) / (std[g].max(std_floor) + 1e-6) }).collect();
    (adv, flat)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs(s: f64) -> TokenInputs {
        TokenInputs { s, h: 1.3, old: -1.0, reference: -1.2, teacher: Some(-0.7), advantage: 0.8 }
    }

    #[test]
    fn coefficients_are_the_derivative_of_the_loss() {
        let c = RlCoefs { clip_eps: 0.2, kl_coef: 0.3, entropy_coef: 0.05, sdar_lambda: 0.5, sdar_beta: 5.0 };
        for (s, adv) in [(-1.0, 0.8), (-0.95, -1.1), (-1.5, 0.8), (-0.5, 0.8), (-1.5, -0.6)] {
            let x = TokenInputs { advantage: adv, ..inputs(s) };
            let t = token_terms(&c, &x);
            // The gate is detached: differentiate with g held at its value.
            let g = t.gate.unwrap();
            let f = |s: f64, h: f64| {
                let y = TokenInputs { s, h, ..x };
                let u = token_terms(&RlCoefs { sdar_lambda: 0.0, ..c }, &y);
                u.loss + c.sdar_lambda * g * (y.teacher.unwrap() - s)
            };
            let e = 1e-6;
            let ds = (f(s + e, x.h) - f(s - e, x.h)) / (2.0 * e);
            let dh = (f(s, x.h + e) - f(s, x.h - e)) / (2.0 * e);
            assert!((ds - t.d_s).abs() < 1e-6, "s={s} adv={adv}: {ds} vs {}", t.d_s);
            assert!((dh - t.d_h).abs() < 1e-6);
        }
    }

    #[test]
    fn clipping_stops_the_policy_gradient_outside_the_trust_region() {
        let c = RlCoefs { kl_coef: 0.0, entropy_coef: 0.0, sdar_lambda: 0.0, ..RlCoefs::default() };
        let up = token_terms(&c, &TokenInputs { s: -0.5, advantage: 1.0, ..inputs(0.0) }); // ratio e^0.5 > 1.2
        assert!(up.clipped && up.d_s == 0.0);
        let down = token_terms(&c, &TokenInputs { s: -0.5, advantage: -1.0, ..inputs(0.0) }); // A < 0: no clip above
        assert!(!down.clipped && down.d_s > 0.0, "a bad token that became likelier is pushed down");
        let fresh = token_terms(&c, &TokenInputs { s: -1.0, advantage: 2.0, ..inputs(0.0) });
        assert!((fresh.d_s + 2.0).abs() < 1e-12 && (fresh.pg + 2.0).abs() < 1e-12, "ratio 1: -A");
    }

    #[test]
    fn the_sdar_term_always_raises_the_sampled_token_most_where_the_teacher_agrees() {
        let c = RlCoefs { kl_coef: 0.0, entropy_coef: 0.0, ..RlCoefs::default() };
        let agree = token_terms(&c, &TokenInputs { s: -2.0, teacher: Some(-0.5), advantage: 0.0, ..inputs(0.0) });
        let disagree = token_terms(&c, &TokenInputs { s: -2.0, teacher: Some(-4.0), advantage: 0.0, ..inputs(0.0) });
        // Gradient descent moves S by -d_s: both up, the endorsed one much more.
        assert!(agree.d_s < 0.0 && disagree.d_s < 0.0);
        assert!(agree.d_s < 100.0 * disagree.d_s, "{} vs {}", agree.d_s, disagree.d_s);
        let flat = token_terms(&RlCoefs { sdar_beta: 0.0, ..c }, &TokenInputs { s: -2.0, teacher: Some(-4.0), advantage: 0.0, ..inputs(0.0) });
        assert_eq!(flat.gate, Some(0.5));
    }

    #[test]
    fn the_kl_term_is_zero_at_the_reference() {
        let c = RlCoefs::default();
        let t = token_terms(&c, &TokenInputs { s: -1.2, reference: -1.2, teacher: None, advantage: 0.0, ..inputs(0.0) });
        assert_eq!((t.kl, t.pg, t.sdar), (0.0, 0.0, 0.0));
        assert!(token_terms(&c, &TokenInputs { s: -0.2, reference: -1.2, ..inputs(0.0) }).kl > 0.0);
    }

    #[test]
    fn advantages_are_normalised_per_group_and_flat_groups_flagged() {
        let (a, flat) = advantages(&[10.0, 0.0, 0.0, 0.0, 5.0, 5.0], &[0, 0, 0, 0, 1, 1], 0.0);
        assert_eq!(flat, vec![false, true]);
        assert!((a[0] - 3f64.sqrt()).abs() < 1e-5 && (a[1] + 1.0 / 3f64.sqrt()).abs() < 1e-5);
        assert!(a[..4].iter().sum::<f64>().abs() < 1e-9);
        assert_eq!(&a[4..], &[0.0, 0.0]);
    }

    #[test]
    fn the_std_floor_shrinks_penalty_only_groups_and_leaves_success_groups() {
        // Group 0: one success in four (std 4.33 > floor); group 1: no success, one sample lost 0.2 to penalties.
        let (rewards, groups) = ([10.0, 0.0, 0.0, 0.0, 0.0, -0.2, 0.0, 0.0], [0, 0, 0, 0, 1, 1, 1, 1]);
        let (plain, _) = advantages(&rewards, &groups, 0.0);
        let (floored, _) = advantages(&rewards, &groups, 1.0);
        assert_eq!(&plain[..4], &floored[..4]);
        assert!((plain[5] + 3f64.sqrt()).abs() < 1e-4, "without a floor the penalty gets a full-size advantage: {}", plain[5]);
        assert!((floored[5] + 0.15).abs() < 1e-5 && (floored[4] - 0.05).abs() < 1e-5, "{:?}", &floored[4..]);
    }
}
