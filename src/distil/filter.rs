//! Which episodes to distil: successful, valid, short, not duplicated, optionally balanced per difficulty.
//!
//! Every episode gets exactly one fate; the first rule that applies names its drop reason, in this order:
//! 1. `held_out`: the task belongs to the dev or test split (training on it would leak the evaluation).
//! 2. `over_cap`: the episode ended by a turn, token or sandbox cap instead of a final answer.
//! 3. `failed`: the verifier rejected the final answer.
//! 4. `invalid_steps`: some turn could not be parsed into calls or an answer (the model learns to recover from
//!    its own format errors otherwise).
//! 5. `duplicate`: same action sequence (tool calls with arguments, then the answer) as an episode of the
//!    same task kept before it.
//! 6. `over_k`: the task already has `keep_per_task` shorter episodes. Shorter = fewer turns, then fewer
//!    generated tokens, then the lower sample index (so the choice is deterministic).
//! 7. `balance` (with `balance`): within each suite, every difficulty is capped at the count of the suite's
//!    least represented difficulty that has any kept episode; the episodes kept are the best-ranked of
//!    their task first, round-robin across tasks, so a capped difficulty keeps as many tasks as possible.
//!    Difficulties with nothing kept do not count, or one unsolved level would empty the whole suite.
use std::collections::{BTreeMap, HashMap, HashSet};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::data::{Role, Split, Termination, Trajectory};
use crate::tools::toolcall::{parse_turn, Action};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FilterParams {
    pub keep_per_task: usize,
    pub balance: bool,
}

impl Default for FilterParams {
    fn default() -> Self {
        FilterParams { keep_per_task: 1, balance: false }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DropReason {
    HeldOut,
    OverCap,
    Failed,
    InvalidSteps,
    Duplicate,
    OverK,
    Balance,
}

impl DropReason {
    pub const ALL: [DropReason; 7] =
        [DropReason::HeldOut, DropReason::OverCap, DropReason::Failed, DropReason::InvalidSteps, DropReason::Duplicate, DropReason::OverK, DropReason::Balance];

    pub fn name(self) -> &'static str {
        match self {
            DropReason::HeldOut => "held_out",
            DropReason::OverCap => "over_cap",
            DropReason::Failed => "failed",
            DropReason::InvalidSteps => "invalid_steps",
            DropReason::Duplicate => "duplicate",
            DropReason::OverK => "over_k",
            DropReason::Balance => "balance",
        }
    }
}

/// Counts for one group of episodes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupCounts {
    pub episodes: usize,
    pub kept: usize,
    /// Every reason appears (with 0) so that reports compare line by line.
    pub dropped: BTreeMap<String, usize>,
    /// Tasks seen, and tasks with at least one kept episode.
    pub tasks: usize,
    pub tasks_kept: usize,
}

impl Default for GroupCounts {
    fn default() -> Self {
        GroupCounts { episodes: 0, kept: 0, dropped: DropReason::ALL.iter().map(|r| (r.name().to_string(), 0)).collect(), tasks: 0, tasks_kept: 0 }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FilterReport {
    pub params: FilterParams,
    pub total: GroupCounts,
    pub by_suite: BTreeMap<String, GroupCounts>,
    /// Keyed `<suite>/d<difficulty>`.
    pub by_suite_difficulty: BTreeMap<String, GroupCounts>,
    /// The per-difficulty cap applied by balancing, per suite.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub balance_caps: BTreeMap<String, usize>,
}

/// The fate of every input episode, in input order (`None` = kept), and the report.
pub struct Selection {
    pub fates: Vec<Option<DropReason>>,
    pub report: FilterReport,
}

impl Selection {
    pub fn kept(&self) -> impl Iterator<Item = usize> + '_ {
        self.fates.iter().enumerate().filter(|(_, f)| f.is_none()).map(|(i, _)| i)
    }
}

/// What the episode did, as a comparable key: each assistant turn's calls (name + arguments with sorted keys),
/// or its answer with whitespace trimmed; few-shot turns excluded.
pub fn action_key(t: &Trajectory) -> Vec<String> {
    t.messages
        .iter()
        .skip(1 + t.fewshot_messages)
        .filter(|m| m.role == Role::Assistant)
        .map(|m| {
            if !m.tool_calls.is_empty() {
                return m.tool_calls.iter().map(|c| format!("call {} {}", c.name, canonical(&c.arguments))).collect::<Vec<_>>().join("\n");
            }
            match parse_turn(&m.content) {
                Ok(Action::Answer(a)) => format!("answer {}", a.trim()),
                Ok(Action::Calls(calls)) => calls.iter().map(|c| format!("call {} {}", c.name, canonical(&c.arguments))).collect::<Vec<_>>().join("\n"),
                Err(_) => format!("text {}", m.content.trim()),
            }
        })
        .collect()
}

/// JSON with object keys sorted at every level, so argument order does not make two calls differ.
fn canonical(v: &Value) -> String {
    fn sort(v: &Value) -> Value {
        match v {
            Value::Object(m) => {
                let sorted: BTreeMap<&String, Value> = m.iter().map(|(k, v)| (k, sort(v))).collect();
                Value::Object(sorted.into_iter().map(|(k, v)| (k.clone(), v)).collect())
            }
            Value::Array(a) => Value::Array(a.iter().map(sort).collect()),
            other => other.clone(),
        }
    }
    sort(v).to_string()
}

fn first_reason(t: &Trajectory) -> Option<DropReason> {
    if t.split != Split::Train {
        Some(DropReason::HeldOut)
    } else if !matches!(t.termination, Termination::FinalAnswer | Termination::Terminated) {
        Some(DropReason::OverCap)
    } else if !t.verdict.success {
        Some(DropReason::Failed)
    } else if t.counts.invalid_steps > 0 || t.turns.iter().any(|r| !r.valid) {
        Some(DropReason::InvalidSteps)
    } else {
        None
    }
}

pub fn select(trajs: &[Trajectory], p: &FilterParams) -> Selection {
    let mut fates: Vec<Option<DropReason>> = trajs.iter().map(first_reason).collect();

    // Shortest k distinct episodes per task.
    let mut by_task: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, t) in trajs.iter().enumerate() {
        by_task.entry(t.task_id.as_str()).or_default().push(i);
    }
    // Rank of each kept episode within its task (0 = best), for balancing.
    let mut rank: HashMap<usize, usize> = HashMap::new();
    for idx in by_task.values() {
        let mut cands: Vec<usize> = idx.iter().copied().filter(|&i| fates[i].is_none()).collect();
        cands.sort_by_key(|&i| (trajs[i].counts.turns, trajs[i].counts.generated_tokens, trajs[i].sample_index, i));
        let mut seen: HashSet<Vec<String>> = HashSet::new();
        let mut kept = 0;
        for i in cands {
            if !seen.insert(action_key(&trajs[i])) {
                fates[i] = Some(DropReason::Duplicate);
            } else if kept >= p.keep_per_task {
                fates[i] = Some(DropReason::OverK);
            } else {
                rank.insert(i, kept);
                kept += 1;
            }
        }
    }

    let mut balance_caps = BTreeMap::new();
    if p.balance {
        // suite -> difficulty -> kept episodes
        let mut groups: BTreeMap<&str, BTreeMap<u8, Vec<usize>>> = BTreeMap::new();
        for (i, t) in trajs.iter().enumerate() {
            if fates[i].is_none() {
                groups.entry(t.suite.as_str()).or_default().entry(t.difficulty).or_default().push(i);
            }
        }
        for (suite, by_diff) in groups {
            let cap = by_diff.values().map(Vec::len).min().unwrap_or(0);
            balance_caps.insert(suite.to_string(), cap);
            for mut eps in by_diff.into_values() {
                eps.sort_by_key(|&i| {
                    (
                        rank.get(&i).copied().unwrap_or(0),
                        trajs[i].counts.turns,
                        trajs[i].counts.generated_tokens,
                        trajs[i].task_id.clone(),
                        trajs[i].sample_index,
                    )
                });
                for &i in eps.iter().skip(cap) {
                    fates[i] = Some(DropReason::Balance);
                }
            }
        }
    }

    let report = report(trajs, &fates, p, balance_caps);
    Selection { fates, report }
}

fn report(trajs: &[Trajectory], fates: &[Option<DropReason>], p: &FilterParams, balance_caps: BTreeMap<String, usize>) -> FilterReport {
    let mut total = GroupCounts::default();
    let mut by_suite: BTreeMap<String, GroupCounts> = BTreeMap::new();
    let mut by_sd: BTreeMap<String, GroupCounts> = BTreeMap::new();
    // (group key, task) -> kept anything
    let mut tasks: BTreeMap<(u8, String, String), bool> = BTreeMap::new();
    for (t, fate) in trajs.iter().zip(fates) {
        let sd = format!("{}/d{}", t.suite, t.difficulty);
        for g in [&mut total, by_suite.entry(t.suite.clone()).or_default(), by_sd.entry(sd.clone()).or_default()] {
            g.episodes += 1;
            match fate {
                None => g.kept += 1,
                Some(r) => *g.dropped.entry(r.name().to_string()).or_default() += 1,
            }
        }
        for (level, key) in [(0u8, String::new()), (1, t.suite.clone()), (2, sd)] {
            *tasks.entry((level, key, t.task_id.clone())).or_default() |= fate.is_none();
        }
    }
    for ((level, key, _), kept) in tasks {
        let g = match level {
            0 => &mut total,
            1 => by_suite.entry(key).or_default(),
            _ => by_sd.entry(key).or_default(),
        };
        g.tasks += 1;
        g.tasks_kept += usize::from(kept);
    }
    FilterReport { params: p.clone(), total, by_suite, by_suite_difficulty: by_sd, balance_caps }
}
