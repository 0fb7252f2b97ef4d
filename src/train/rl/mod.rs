//! On-policy RL on sampled episodes: GRPO, and SDAR (GRPO plus a gated self-distillation term whose teacher is
//! the same model with privileged context in its prompt; ../shared/docs/method.md §2).
//!
//! setup -> reference pass (before any update, no gradient: each generated token's log-prob under the policy
//! that starts the run (`old`), under the base model (`reference`, adapter off) and, for SDAR, under the teacher;
//! written to `out_dir/reference.json` so that a resumed run uses the very same numbers) -> steps: a step takes
//! `groups_per_step` task groups (all samples of a task together), micro-batches of `batch_size` episodes, the
//! loss of `loss::token_terms` summed over generated tokens and divided by the step's generated tokens -> clip ->
//! AdamW -> metrics -> checkpoint (the SFT checkpoint format, so exact resume works the same way).
pub mod loss;

use std::path::PathBuf;
use std::time::Instant;

use candle_core::Tensor;
use serde::{Deserialize, Serialize};

use super::checkpoint::TrainState;
use super::data::epoch_batches;
use super::metrics_log::MetricsLog;
use super::model::{next_token_targets, Batch, LoraVars, Target, TrainModel};
use super::optim::{AdamW, OptimParams};
use super::sft::{accumulate_grads, apply_step, resume, save_if_due, Schedule};
use super::{Result, TrainError};
use crate::model::lora::LoraAdapter;
pub use loss::{advantages, token_terms, RlCoefs, TokenInputs, TokenTerms};

pub const REFERENCE_FILE: &str = "reference.json";

/// What training optimises.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Objective {
    /// Supervised fine-tuning on the filtered, successful episodes.
    #[default]
    Sft,
    /// Group-relative policy optimisation on every sampled episode.
    Grpo,
    /// GRPO plus SDAR's gated self-distillation from the privileged-context teacher.
    Sdar,
}

impl Objective {
    pub fn is_rl(self) -> bool {
        self != Objective::Sft
    }
}

impl std::str::FromStr for Objective {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "sft" => Ok(Objective::Sft),
            "grpo" => Ok(Objective::Grpo),
            "sdar" => Ok(Objective::Sdar),
            o => Err(format!("unknown objective `{o}` (expected sft, grpo or sdar)")),
        }
    }
}

/// The teacher's copy of an episode: the same tokens with the privileged context spliced into the prompt, so
/// that generated token `i` sits at `i + shift`.
#[derive(Debug, Clone, PartialEq)]
pub struct TeacherView {
    pub token_ids: Vec<u32>,
    pub shift: isize,
}

/// One sampled episode.
#[derive(Debug, Clone, PartialEq)]
pub struct RlRow {
    pub id: String,
    /// The task: a task's samples form one group.
    pub group: String,
    pub token_ids: Vec<u32>,
    /// 1 where the model generated the token (only those are trained).
    pub mask: Vec<u8>,
    pub reward: f64,
    /// The sampler's log-prob of every token (0 where not generated), to measure sampler / trainer agreement.
    pub sampler_logprobs: Vec<f32>,
    /// Needed by SDAR.
    pub teacher: Option<TeacherView>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RlParams {
    pub objective: Objective,
    pub coefs: RlCoefs,
    /// The shared optimiser settings (`grad_accum` is unused: a step is `groups_per_step` task groups).
    pub optim: OptimParams,
    /// Task groups per optimizer step.
    pub groups_per_step: usize,
    pub max_seq_len: usize,
    pub out_dir: PathBuf,
    /// TensorBoard event files of the steps (`out_dir/tensorboard` unless the caller gathers them elsewhere).
    pub tensorboard: PathBuf,
    pub resume: bool,
    pub stop_after: Option<usize>,
    /// Forward and backward a task's samples as one packed row with their shared prompt computed once
    /// (the same numbers as unpacked, up to summation order; `optim.batch_size` is then unused).
    pub shared_prefix: bool,
    /// Floor under a group's reward std in the advantages (0: plain GRPO); see [`loss::advantages`].
    pub std_floor: f64,
}

impl RlParams {
    /// A fresh run into `out_dir`: the given objective and optimiser settings, the method's coefficients.
    pub fn new(objective: Objective, optim: OptimParams, max_seq_len: usize, out_dir: PathBuf) -> Self {
        RlParams {
            objective,
            coefs: RlCoefs::default(),
            optim,
            groups_per_step: 4,
            max_seq_len,
            tensorboard: out_dir.join("tensorboard"),
            out_dir,
            resume: false,
            stop_after: None,
            shared_prefix: true,
            std_floor: 0.0,
        }
    }
}

impl RlParams {
    fn fingerprint(&self, rows: &[RlRow]) -> String {
        let tokens: usize = rows.iter().map(|r| r.token_ids.len()).sum();
        format!(
            "rows={} tokens={tokens} objective={:?} coefs={:?} lr={} warmup={} min_lr_ratio={} epochs={} groups={} batch={} clip={} adam={:?} seed={} packed={}{}",
            rows.len(), self.objective, self.coefs, self.optim.lr, self.optim.warmup, self.optim.min_lr_ratio, self.optim.epochs, self.groups_per_step,
            self.optim.batch_size, self.optim.max_grad_norm, self.optim.adam(), self.optim.seed, self.shared_prefix,
            // Only when set, so runs checkpointed before the floor existed still resume.
            if self.std_floor > 0.0 { format!(" std_floor={}", self.std_floor) } else { String::new() }
        )
    }
}

/// One line of `metrics.jsonl` for an RL step. Means are over the step's generated tokens unless named per
/// episode.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct RlStepMetrics {
    pub step: usize,
    pub epoch: usize,
    pub loss: f64,
    pub pg_loss: f64,
    pub lr: f64,
    pub grad_norm: f64,
    pub tokens_per_s: f64,
    pub step_tokens: usize,
    pub trained_tokens: u64,
    /// Per episode, over the step's episodes.
    pub reward_mean: f64,
    pub reward_std: f64,
    /// Share of the run's task groups whose rewards are all equal (no GRPO signal).
    pub zero_variance_groups: f64,
    pub clip_fraction: f64,
    /// k3 estimate of KL(policy || base).
    pub kl: f64,
    /// The step's largest per-token k3: k3 grows as exp(base - policy log-prob), so a mean far above the typical
    /// token comes from a few tokens the policy has made much less likely than the base did.
    #[serde(default)]
    pub kl_max: f64,
    pub entropy: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gate_mean: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gate_above_half: Option<f64>,
    /// Mean teacher - student log-prob gap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gap_mean: Option<f64>,
}

/// How far the sampler's log-probs (quantized inference runtime) are from the trainer's (f32) for the same
/// tokens and weights.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct SamplerGap {
    pub tokens: usize,
    pub mean_abs: f64,
    pub max_abs: f64,
    /// Mean of sampler - trainer.
    pub mean: f64,
}

/// The constants of the run, computed before the first update.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Reference {
    fingerprint: String,
    /// Per episode, per generated token (in `next_token_targets` order).
    old: Vec<Vec<f32>>,
    reference: Vec<Vec<f32>>,
    teacher: Option<Vec<Vec<f32>>>,
    sampler_gap: SamplerGap,
}

#[derive(Debug, Clone)]
pub struct RlOutcome {
    pub steps: usize,
    pub adapter: LoraAdapter,
    pub adapter_dir: PathBuf,
    pub finished: bool,
    /// Task groups in the data, and how many had all-equal rewards.
    pub groups: usize,
    pub zero_variance_groups: usize,
    /// Episodes that took part in training.
    pub episodes_used: usize,
    pub sampler_gap: SamplerGap,
}

/// Task groups, each episode's advantage, and the groups a step may draw (GRPO: only groups with a reward
/// spread; SDAR: all, since its term teaches on any episode).
pub struct Plan {
    pub groups: Vec<Vec<usize>>,
    /// Each episode's group.
    pub group_of: Vec<usize>,
    pub advantages: Vec<f64>,
    pub flat: Vec<bool>,
    pub used: Vec<usize>,
}

pub fn plan(rows: &[RlRow], p: &RlParams) -> Result<Plan> {
    let (objective, std_floor) = (p.objective, p.std_floor);
    let mut names: Vec<&str> = Vec::new();
    let mut index = std::collections::HashMap::new();
    let mut group_of = Vec::with_capacity(rows.len());
    for r in rows {
        let g = *index.entry(r.group.as_str()).or_insert_with(|| {
            names.push(&r.group);
            names.len() - 1
        });
        group_of.push(g);
    }
    let mut groups = vec![Vec::new(); names.len()];
    for (i, &g) in group_of.iter().enumerate() {
        groups[g].push(i);
    }
    if let Some((g, _)) = groups.iter().enumerate().find(|(_, m)| m.len() < 2) {
        return Err(TrainError::Params(format!(
            "task `{}` has one sampled episode: group-relative advantages need at least 2 samples per task (rollout.samples >= 2)",
            names[g]
        )));
    }
    let rewards: Vec<f64> = rows.iter().map(|r| r.reward).collect();
    let (advantages, flat) = advantages(&rewards, &group_of, std_floor);
    let used = (0..groups.len()).filter(|&g| objective == Objective::Sdar || !flat[g]).collect();
    Ok(Plan { groups, group_of, advantages, flat, used })
}

fn validate(rows: &[RlRow], p: &RlParams) -> Result<()> {
    if rows.is_empty() {
        return Err(TrainError::Data("no episodes to train on".into()));
    }
    for r in rows {
        let n = r.token_ids.len();
        if r.mask.len() != n || r.sampler_logprobs.len() != n {
            return Err(TrainError::Data(format!("{}: {n} token ids, {} mask and {} log-prob values", r.id, r.mask.len(), r.sampler_logprobs.len())));
        }
        if n > p.max_seq_len {
            return Err(TrainError::Data(format!("{}: {n} tokens, more than the maximum sequence length {}", r.id, p.max_seq_len)));
        }
        if !r.reward.is_finite() {
            return Err(TrainError::Data(format!("{}: reward {} is not finite", r.id, r.reward)));
        }
        match (&r.teacher, p.objective) {
            (None, Objective::Sdar) => return Err(TrainError::Data(format!("{}: SDAR needs the teacher's view of every episode", r.id))),
            (Some(t), _) => {
                for tg in targets_of(r) {
                    let tp = tg.pos as isize + 1 + t.shift;
                    if tp < 1 || t.token_ids.get(tp as usize) != Some(&tg.target) {
                        return Err(TrainError::Data(format!(
                            "{}: the teacher's tokens do not contain the generated token at {} (shift {})",
                            r.id,
                            tg.pos + 1,
                            t.shift
                        )));
                    }
                }
            }
            _ => {}
        }
    }
    Ok(())
}

fn targets_of(r: &RlRow) -> Vec<Target> {
    next_token_targets(&[(&r.token_ids, &r.mask)])
}

/// One forward pass's input: sequences side by side (right-padded), or packed on their shared prefix (computed
/// once for all of them: a task's samples share their whole prompt). `targets` lists every sequence's targets
/// in order, mapped to the batch.
struct Unit {
    batch: Batch,
    targets: Vec<Target>,
}

/// `seqs`: token ids and their targets (positions within the sequence).
fn unit(seqs: &[(&[u32], &[Target])], pack: bool) -> Result<Unit> {
    let ids: Vec<&[u32]> = seqs.iter().map(|s| s.0).collect();
    if pack && seqs.len() > 1 {
        let first = ids[0];
        let prefix = ids[1..].iter().fold(first.len(), |n, s| n.min(s.iter().zip(first).take_while(|(a, b)| a == b).count()));
        let (batch, starts) = Batch::packed(&ids, prefix)?;
        let targets = seqs
            .iter()
            .zip(&starts)
            .flat_map(|((_, t), &start)| {
                t.iter().map(move |t| Target { seq: 0, pos: if t.pos < prefix { t.pos } else { start + t.pos - prefix }, target: t.target })
            })
            .collect();
        return Ok(Unit { batch, targets });
    }
    let targets = seqs.iter().enumerate().flat_map(|(s, (_, t))| t.iter().map(move |t| Target { seq: s, ..*t })).collect();
    Ok(Unit { batch: Batch::new(&ids), targets })
}

/// The forward units of a list of episodes: one per task group when packing, else chunks of `batch_size`
/// sorted by length (little padding).
fn units_of(members: &[usize], rows: &[RlRow], plan_group: &[usize], pack: bool, batch_size: usize) -> Vec<Vec<usize>> {
    if pack {
        let mut by_group: Vec<Vec<usize>> = Vec::new();
        for &i in members {
            match by_group.iter_mut().find(|u| plan_group[u[0]] == plan_group[i]) {
                Some(u) => u.push(i),
                None => by_group.push(vec![i]),
            }
        }
        return by_group;
    }
    let mut sorted = members.to_vec();
    sorted.sort_by_key(|&i| (rows[i].token_ids.len(), i));
    sorted.chunks(batch_size.max(1)).map(|c| c.to_vec()).collect()
}

/// Per-episode log-probs of the generated tokens, without gradient. `seqs[i]`: episode `i`'s ids (the student's
/// or the teacher's) and targets; episodes outside `units` get none.
fn logprobs(model: &TrainModel, vars: Option<&LoraVars>, seqs: &[(&[u32], Vec<Target>)], units: &[Vec<usize>], pack: bool) -> Result<Vec<Vec<f32>>> {
    let mut out = vec![Vec::new(); seqs.len()];
    for u in units {
        let part: Vec<(&[u32], &[Target])> = u.iter().map(|&i| (seqs[i].0, seqs[i].1.as_slice())).collect();
        let un = unit(&part, pack)?;
        if un.targets.is_empty() {
            continue;
        }
        let lp = model.target_logprobs(&un.batch, vars, None, &un.targets)?.detach().to_vec1::<f32>()?;
        let mut at = 0;
        for &i in u {
            let n = seqs[i].1.len();
            out[i] = lp[at..at + n].to_vec();
            at += n;
        }
    }
    Ok(out)
}

/// The constants of the episodes that train (`members`), computed with the starting adapter.
fn reference_pass(
    model: &TrainModel,
    vars: &LoraVars,
    rows: &[RlRow],
    members: &[usize],
    group_of: &[usize],
    p: &RlParams,
    fingerprint: String,
) -> Result<Reference> {
    let units = units_of(members, rows, group_of, p.shared_prefix, p.optim.batch_size);
    let student: Vec<(&[u32], Vec<Target>)> = rows.iter().map(|r| (r.token_ids.as_slice(), targets_of(r))).collect();
    let old = logprobs(model, Some(vars), &student, &units, p.shared_prefix)?;
    // A fresh adapter (B = 0) adds exactly nothing: the base model's log-probs are the same numbers.
    let reference = if vars.is_identity()? { old.clone() } else { logprobs(model, None, &student, &units, p.shared_prefix)? };
    let teacher = if p.objective == Objective::Sdar {
        let views: Vec<(&[u32], Vec<Target>)> = rows
            .iter()
            .map(|r| match r.teacher.as_ref() {
                Some(t) => (t.token_ids.as_slice(), targets_of(r).into_iter().map(|x| Target { pos: (x.pos as isize + t.shift) as usize, ..x }).collect()),
                None => (r.token_ids.as_slice(), Vec::new()),
            })
            .collect();
        Some(logprobs(model, Some(vars), &views, &units, p.shared_prefix)?)
    } else {
        None
    };
    let mut gap = SamplerGap::default();
    let mut sum = 0f64;
    // The sampler records untempered log-probs: comparable only when the trainer scores at temperature 1.
    let comparable = model.temperature() == 1.0;
    for (r, o) in rows.iter().zip(&old).filter(|_| comparable) {
        let sampled = targets_of(r).iter().map(|t| r.sampler_logprobs[t.pos + 1]).collect::<Vec<_>>();
        for (&s, &t) in sampled.iter().zip(o).filter(|(s, _)| !s.is_nan()) {
            let d = (s - t) as f64;
            gap.tokens += 1;
            sum += d.abs();
            gap.mean += d;
            gap.max_abs = gap.max_abs.max(d.abs());
        }
    }
    if gap.tokens > 0 {
        gap.mean_abs = sum / gap.tokens as f64;
        gap.mean /= gap.tokens as f64;
    }
    Ok(Reference { fingerprint, old, reference, teacher, sampler_gap: gap })
}

fn read_reference(path: &std::path::Path) -> Result<Option<Reference>> {
    match std::fs::read_to_string(path) {
        Ok(text) => serde_json::from_str(&text).map(Some).map_err(|e| TrainError::Checkpoint { path: path.to_path_buf(), msg: e.to_string() }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(TrainError::io(path, e)),
    }
}

/// Trains `adapter` on the sampled episodes `rows` with the GRPO or SDAR objective (or resumes from
/// `p.out_dir/checkpoint`). `on_step` sees every step's metrics.
pub fn train_rl(model: &TrainModel, adapter: LoraAdapter, rows: &[RlRow], p: &RlParams, on_step: &mut dyn FnMut(&RlStepMetrics)) -> Result<RlOutcome> {
    // ---- setup
    if !p.objective.is_rl() {
        return Err(TrainError::Params("train_rl needs the grpo or sdar objective".into()));
    }
    p.optim.check().map_err(TrainError::Params)?;
    if p.groups_per_step == 0 || p.optim.epochs == 0 {
        return Err(TrainError::Params("groups_per_step and epochs must be positive".into()));
    }
    let o = &p.optim;
    validate(rows, p)?;
    let plan = plan(rows, p)?;
    let zero_var = plan.flat.iter().filter(|&&f| f).count();
    let zero_share = zero_var as f64 / plan.groups.len().max(1) as f64;
    let group_len: Vec<usize> = plan.used.iter().map(|&g| plan.groups[g].iter().map(|&i| rows[i].token_ids.len()).sum()).collect();
    let steps_per_epoch = epoch_batches(&group_len, p.groups_per_step, o.seed, 0).len();
    let total_steps = o.epochs * steps_per_epoch;
    let episodes_used = plan.used.iter().map(|&g| plan.groups[g].len()).sum();
    std::fs::create_dir_all(&p.out_dir).map_err(|e| TrainError::io(&p.out_dir, e))?;
    let adapter_dir = p.out_dir.join("adapter");
    let ckpt_dir = p.out_dir.join("checkpoint");
    let mut log = MetricsLog::new(p.out_dir.join("metrics.jsonl"), p.tensorboard.clone());
    let ref_path = p.out_dir.join(REFERENCE_FILE);
    let fingerprint = p.fingerprint(rows);
    let outcome = |steps, adapter: LoraAdapter, finished, gap| RlOutcome {
        steps,
        adapter,
        adapter_dir: adapter_dir.clone(),
        finished,
        groups: plan.groups.len(),
        zero_variance_groups: zero_var,
        episodes_used,
        sampler_gap: gap,
    };
    if total_steps == 0 {
        // Every group is flat: no gradient at all. The adapter is unchanged.
        log.start()?;
        adapter.save(&adapter_dir)?;
        return Ok(outcome(0, adapter, true, SamplerGap::default()));
    }

    let resumed = if p.resume { resume(model, &adapter, &ckpt_dir, &fingerprint, &mut log, o.adam())? } else { None };
    let (vars, mut opt, mut state, reference) = if let Some((vars, opt, state)) = resumed {
        let reference =
            read_reference(&ref_path)?.ok_or_else(|| TrainError::Checkpoint { path: ref_path.clone(), msg: "missing beside the checkpoint".into() })?;
        if reference.fingerprint != fingerprint {
            return Err(TrainError::Checkpoint { path: ref_path, msg: "computed for other data or parameters".into() });
        }
        (vars, opt, state, reference)
    } else {
        let vars = LoraVars::from_adapter(&adapter, model.device())?;
        // A run killed after its reference pass keeps it (the pass costs up to three forwards of the data).
        let reference = match read_reference(&ref_path)? {
            Some(r) if r.fingerprint == fingerprint && p.resume => r,
            _ => {
                let members: Vec<usize> = plan.used.iter().flat_map(|&g| plan.groups[g].iter().copied()).collect();
                let r = reference_pass(model, &vars, rows, &members, &plan.group_of, p, fingerprint.clone())?;
                let text = serde_json::to_vec(&r).map_err(|e| TrainError::Data(e.to_string()))?;
                crate::atomic::write_file(&ref_path, &text).map_err(|e| TrainError::io(e.path, e.source))?;
                r
            }
        };
        let opt = AdamW::new(o.adam(), &vars.named_vars())?;
        log.start()?;
        let state = TrainState { step: 0, epoch: 0, next_batch: 0, seed: o.seed, trained_tokens: 0, total_steps, fingerprint, last_loss: None };
        (vars, opt, state, reference)
    };
    let named = vars.named_vars();
    let names: Vec<String> = named.iter().map(|(n, _)| n.clone()).collect();
    let stop_at = p.stop_after.unwrap_or(total_steps).min(total_steps);

    // ---- loop
    while state.step < stop_at {
        let t0 = Instant::now();
        let (step, epoch) = (state.step, state.epoch);
        let order = epoch_batches(&group_len, p.groups_per_step, o.seed, state.epoch);
        let members: Vec<usize> = order[state.next_batch].iter().flat_map(|&k| plan.groups[plan.used[k]].iter().copied()).collect();
        let step_tokens: usize = members.iter().map(|&i| targets_of(&rows[i]).len()).sum();
        let mut acc = StepAcc::default();
        let mut grads: Vec<Option<Tensor>> = vec![None; named.len()];
        for micro in units_of(&members, rows, &plan.group_of, p.shared_prefix, o.batch_size) {
            let per_row: Vec<Vec<Target>> = micro.iter().map(|&i| targets_of(&rows[i])).collect();
            let seqs: Vec<(&[u32], &[Target])> = micro.iter().zip(&per_row).map(|(&i, t)| (rows[i].token_ids.as_slice(), t.as_slice())).collect();
            let Unit { batch, targets } = unit(&seqs, p.shared_prefix)?;
            if targets.is_empty() {
                continue;
            }
            let out = model.target_logprobs_entropy(&batch, Some(&vars), &targets)?; // n x 2
            let vals = out.to_vec2::<f32>()?;
            let mut coef = Vec::with_capacity(2 * vals.len());
            let mut k = 0;
            for (&i, t) in micro.iter().zip(&per_row) {
                for j in 0..t.len() {
                    let x = TokenInputs {
                        s: vals[k][0] as f64,
                        h: vals[k][1] as f64,
                        old: reference.old[i][j] as f64,
                        reference: reference.reference[i][j] as f64,
                        teacher: reference.teacher.as_ref().map(|tt| tt[i][j] as f64),
                        advantage: plan.advantages[i],
                    };
                    let terms = token_terms(&p.coefs, &x);
                    acc.add(&x, &terms);
                    coef.push((terms.d_s / step_tokens as f64) as f32);
                    coef.push((terms.d_h / step_tokens as f64) as f32);
                    k += 1;
                }
            }
            let coef = Tensor::from_vec(coef, out.shape(), out.device())?;
            let loss = (out * coef)?.sum_all()?;
            accumulate_grads(&mut grads, &loss.backward()?, &named)?;
        }
        let mean_loss = acc.loss / step_tokens.max(1) as f64;
        let schedule = Schedule { lr: o.lr, warmup_steps: o.warmup, min_lr_ratio: o.min_lr_ratio, total_steps, max_grad_norm: o.max_grad_norm };
        let (grad_norm, lr) = apply_step(&mut opt, &named, grads, mean_loss, step, &schedule, &ckpt_dir)?;

        state.step += 1;
        state.next_batch += 1;
        if state.next_batch == order.len() {
            state.epoch += 1;
            state.next_batch = 0;
        }
        state.trained_tokens += step_tokens as u64;
        state.last_loss = Some(mean_loss);
        let rewards: Vec<f64> = members.iter().map(|&i| rows[i].reward).collect();
        let m = acc.metrics(&state, epoch, step_tokens, lr, grad_norm, t0.elapsed().as_secs_f64(), &rewards, zero_share);
        log.append(&m)?;
        on_step(&m);
        save_if_due(&ckpt_dir, &vars, &opt, &names, &state, stop_at, o.save_every)?;
    }

    // ---- finish
    let adapter = vars.to_adapter()?;
    let finished = state.step >= total_steps;
    if finished {
        adapter.save(&adapter_dir)?;
    }
    Ok(outcome(state.step, adapter, finished, reference.sampler_gap))
}

/// Sums over one step's generated tokens.
#[derive(Default)]
struct StepAcc {
    tokens: usize,
    loss: f64,
    pg: f64,
    kl: f64,
    kl_max: f64,
    entropy: f64,
    clipped: usize,
    gates: usize,
    gate: f64,
    gate_above: usize,
    gap: f64,
}

impl StepAcc {
    fn add(&mut self, x: &TokenInputs, t: &TokenTerms) {
        self.tokens += 1;
        self.loss += t.loss;
        self.pg += t.pg;
        self.kl += t.kl;
        self.kl_max = self.kl_max.max(t.kl);
        self.entropy += x.h;
        self.clipped += t.clipped as usize;
        if let (Some(g), Some(gap)) = (t.gate, t.gap) {
            self.gates += 1;
            self.gate += g;
            self.gate_above += (g > 0.5) as usize;
            self.gap += gap;
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn metrics(
        &self,
        state: &TrainState,
        epoch: usize,
        step_tokens: usize,
        lr: f64,
        grad_norm: f64,
        secs: f64,
        rewards: &[f64],
        zero_share: f64,
    ) -> RlStepMetrics {
        let n = self.tokens.max(1) as f64;
        let reward_mean = rewards.iter().sum::<f64>() / rewards.len().max(1) as f64;
        let reward_std = (rewards.iter().map(|r| (r - reward_mean).powi(2)).sum::<f64>() / rewards.len().max(1) as f64).sqrt();
        let g = self.gates.max(1) as f64;
        let sdar = |v: f64| (self.gates > 0).then_some(v);
        RlStepMetrics {
            step: state.step,
            epoch,
            loss: self.loss / n,
            pg_loss: self.pg / n,
            lr,
            grad_norm,
            tokens_per_s: step_tokens as f64 / secs.max(1e-9),
            step_tokens,
            trained_tokens: state.trained_tokens,
            reward_mean,
            reward_std,
            zero_variance_groups: zero_share,
            clip_fraction: self.clipped as f64 / n,
            kl: self.kl / n,
            kl_max: self.kl_max,
            entropy: self.entropy / n,
            gate_mean: sdar(self.gate / g),
            gate_above_half: sdar(self.gate_above as f64 / g),
            gap_mean: sdar(self.gap / g),
        }
    }
}
