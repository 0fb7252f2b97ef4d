//! Trajectories -> RL episodes: every sampled episode (no filter), its reward, and for SDAR the teacher's view
//! with the privileged context spliced into the prompt.
use super::rows::{row_id, teacher_view, ChatEncoder, RowError};
use crate::agent::hint::HintPlacement;
use crate::data::Trajectory;
use crate::train::rl::{RlRow, TeacherView};

/// Reward = `success` x the verdict's score (1 for a success, the F1 for F1 matchers) - `invalid_penalty` x
/// invalid steps (method.md §2: 10 and 0.1).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rewards {
    pub success: f64,
    pub invalid_penalty: f64,
}

impl Default for Rewards {
    fn default() -> Self {
        Rewards { success: 10.0, invalid_penalty: 0.1 }
    }
}

impl Rewards {
    pub fn of(&self, t: &Trajectory) -> f64 {
        self.success * t.verdict.score - self.invalid_penalty * t.counts.invalid_steps as f64
    }
}

/// The temperature every episode was sampled at, which the trainer must score under. Truncated sampling (top-p,
/// top-k) draws from a distribution the trainer does not model, so it is refused, as are mixed temperatures.
pub fn sampling_temperature(trajs: &[Trajectory]) -> Result<f64, RowError> {
    let mut temp: Option<f64> = None;
    for t in trajs {
        let s = &t.identity.sampling;
        let bad = |msg: String| RowError::Inconsistent { id: row_id(t), msg };
        if s.top_p.is_some_and(|p| p < 1.0) || s.top_k.is_some_and(|k| k > 0) {
            return Err(bad(
                "sampled with top-p or top-k truncation: RL needs the untruncated (tempered) distribution its samples came from; set top_p = 1 and top_k = 0"
                    .into(),
            ));
        }
        if s.temperature.is_nan() || s.temperature <= 0.0 {
            return Err(bad(format!("sampled at temperature {}: RL needs sampled episodes (temperature > 0)", s.temperature)));
        }
        match temp {
            Some(x) if x != s.temperature => return Err(bad(format!("sampled at temperature {} while others were at {x}", s.temperature))),
            _ => temp = Some(s.temperature),
        }
    }
    Ok(temp.unwrap_or(1.0))
}

/// The teacher for SDAR: the privileged context of an episode's task, and the chat template to splice it in.
pub struct Teacher<'a> {
    pub hint_of: &'a dyn Fn(&Trajectory) -> Option<String>,
    pub placement: HintPlacement,
    pub encoder: &'a dyn ChatEncoder,
}

/// One RL row per trajectory; with a teacher, each row carries the teacher's view. Returns the rows and how
/// many episodes had no privileged context (their teacher sees what the student sees: gap 0).
pub fn rl_rows(trajs: &[Trajectory], rewards: &Rewards, teacher: Option<&Teacher>) -> Result<(Vec<RlRow>, usize), RowError> {
    let mut without_hint = 0;
    let mut rows = Vec::with_capacity(trajs.len());
    for t in trajs {
        if t.privileged.is_some() {
            return Err(RowError::Inconsistent {
                id: row_id(t),
                msg: "was sampled with a hint in its prompt: RL trains on the model's own unhinted samples".into(),
            });
        }
        let view = match teacher {
            Some(tc) => Some(match (tc.hint_of)(t) {
                Some(h) => {
                    let (token_ids, shift) = teacher_view(t, &h, tc.placement, tc.encoder)?;
                    TeacherView { token_ids, shift }
                }
                None => {
                    without_hint += 1;
                    TeacherView { token_ids: t.token_ids.clone(), shift: 0 }
                }
            }),
            None => None,
        };
        rows.push(RlRow {
            id: row_id(t),
            group: t.task_id.clone(),
            token_ids: t.token_ids.clone(),
            mask: t.produced_mask.clone(),
            reward: rewards.of(t),
            // A server that returned no log-probs: nothing to compare the trainer's with (NaN is skipped).
            sampler_logprobs: if t.identity.backend.as_ref().is_some_and(|b| !b.logprobs) { vec![f32::NAN; t.logprobs.len()] } else { t.logprobs.clone() },
            teacher: view,
        });
    }
    Ok((rows, without_hint))
}
