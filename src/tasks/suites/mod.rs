//! Task suites: deterministic generators, sandboxes and the registry.
//!
//! Every generated task comes from `(suite, seed, split, difficulty, index)` through a ChaCha RNG seeded by a
//! stable hash of those five values. Train and test never share a task: a drafted task goes to the split
//! picked by a hash of its content (instruction + sandbox data), and drafts that land in the other split are
//! redrawn. Disjointness therefore holds by content, not just by id.
//!
//! Sandboxes: what they protect and what they do not.
//! - Tools only touch the sandbox's own in-memory state, built from the task's `data`. No tool reaches the host
//!   file system, the network, processes, clocks or environment variables; the `files` suite's file system is a
//!   map of strings.
//! - The expected outcome (`Task::expected`, `Task::reference`) is never given to a sandbox, so no tool call can
//!   read the answer; the verifier runs outside the model's reach.
//! - Work is bounded: expressions are length- and depth-capped with overflow errors, files and trees are capped
//!   in size and count, listing and search outputs are capped, and the episode caps tool calls per turn and per
//!   episode and truncates every tool output (`episode::Limits`).
//! - Not protected: a sandbox does not time individual calls (the caps bound the work instead), and a model can
//!   read everything its own task put in the sandbox, by design.
use std::ops::RangeInclusive;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{json, Value};

use crate::data::{Expected, GoalState, Reference, Split, Task, TaskData, ToolCall};

pub mod arithmetic;
pub mod env;
pub mod files;
pub mod function_call;
pub mod grid;
pub mod mcp;
pub mod qa;
pub mod search;
pub mod tables;
pub mod units;

pub type TaskRng = ChaCha8Rng;

#[derive(Debug, thiserror::Error)]
pub enum SuiteError {
    #[error("unknown suite `{name}` (known: {known})")]
    UnknownSuite { name: String, known: String },
    #[error("suite `{suite}` does not generate tasks (it runs tasks from files)")]
    NotGenerative { suite: String },
    #[error("suite `{suite}` has no difficulty {difficulty} (it has {range:?})")]
    BadDifficulty { suite: String, difficulty: u8, range: RangeInclusive<u8> },
    #[error("suite `{suite}` could not draft a task for the {split} split after {attempts} attempts")]
    SplitExhausted { suite: String, split: Split, attempts: u32 },
    #[error("task `{task}`: {message}")]
    BadTask { task: String, message: String },
}

/// Where a generated task comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TaskKey {
    pub seed: u64,
    pub split: Split,
    pub difficulty: u8,
    pub index: u64,
}

/// A generated task before it is given its id, split and tools.
pub struct Draft {
    pub instruction: String,
    pub data: TaskData,
    pub expected: Expected,
    pub reference: Reference,
}

/// Executes validated tool calls against in-memory state.
pub trait Sandbox: Send {
    /// `Err` is a tool failure (e.g. a missing file): shown to the model as the tool's output and flagged in the
    /// trajectory, but not an invalid step.
    fn call(&mut self, call: &ToolCall) -> Result<String, String>;
    /// The state a goal is compared with, for suites whose tasks have goal states.
    fn state(&self) -> Option<GoalState> {
        None
    }
    /// Calls go to another process and may take long, so they run off the decoding batch.
    fn external(&self) -> bool {
        false
    }
}

pub trait Suite: Sync {
    fn name(&self) -> &'static str;
    /// Difficulties `draft` supports; `None` (the default) for suites whose tasks only come from files.
    fn difficulties(&self) -> Option<RangeInclusive<u8>> {
        None
    }
    /// Names of the tools the sandbox executes; `None` when any declared tool is accepted (function-call
    /// tasks, where nothing is executed).
    fn tool_names(&self) -> Option<&'static [&'static str]>;
    /// Specs of the tools a generated task at this difficulty offers (none by default: file tasks bring theirs).
    fn tools(&self, _difficulty: u8) -> Vec<Value> {
        Vec::new()
    }
    fn max_turns(&self, difficulty: u8) -> u32;
    /// One candidate task; `generate` decides whether it belongs to the requested split. Suites whose tasks only
    /// come from files keep the default, which refuses.
    fn draft(&self, _rng: &mut TaskRng, _difficulty: u8) -> Result<Draft, SuiteError> {
        Err(SuiteError::NotGenerative { suite: self.name().into() })
    }
    /// A fresh sandbox holding the task's data.
    fn sandbox(&self, task: &Task) -> Result<Box<dyn Sandbox>, SuiteError>;
}

static SUITES: [&dyn Suite; 10] = [
    &arithmetic::Arithmetic,
    &units::Units,
    &tables::Tables,
    &files::Files,
    &search::Search,
    &grid::Grid,
    &qa::Qa,
    &function_call::FunctionCall,
    &mcp::Mcp,
    &env::Env,
];

/// Every suite, generative ones first.
pub fn all() -> &'static [&'static dyn Suite] {
    &SUITES
}

/// The six suites that generate tasks.
pub fn generative() -> impl Iterator<Item = &'static dyn Suite> {
    SUITES.iter().copied().filter(|s| s.difficulties().is_some())
}

pub fn get(name: &str) -> Result<&'static dyn Suite, SuiteError> {
    SUITES
        .iter()
        .copied()
        .find(|s| s.name() == name)
        .ok_or_else(|| SuiteError::UnknownSuite { name: name.to_string(), known: SUITES.iter().map(|s| s.name()).collect::<Vec<_>>().join(", ") })
}

/// Share of drafts that belong to the test split (1/4) and to the dev split (1/8).
const TEST_SHARE_DENOM: u64 = 4;
const DEV_SHARE_DENOM: u64 = 8;
const MAX_ATTEMPTS: u32 = 10_000;

/// The task at `key`: deterministic, and never the same content in two splits.
pub fn generate(suite: &dyn Suite, key: TaskKey) -> Result<Task, SuiteError> {
    let range = suite.difficulties().ok_or_else(|| SuiteError::NotGenerative { suite: suite.name().into() })?;
    if !range.contains(&key.difficulty) {
        return Err(SuiteError::BadDifficulty { suite: suite.name().into(), difficulty: key.difficulty, range });
    }
    let mut rng = task_rng(suite.name(), key);
    for _ in 0..MAX_ATTEMPTS {
        let draft = suite.draft(&mut rng, key.difficulty)?;
        if split_of(&draft.instruction, &draft.data) != key.split {
            continue;
        }
        return Ok(Task {
            id: format!("{}-{}-d{}-s{}-{}", suite.name(), key.split, key.difficulty, key.seed, key.index),
            suite: suite.name().into(),
            split: key.split,
            difficulty: key.difficulty,
            instruction: draft.instruction,
            tools: suite.tools(key.difficulty),
            data: draft.data,
            expected: draft.expected,
            max_turns: suite.max_turns(key.difficulty),
            optimal_steps: Some(draft.reference.calls.len() as u32),
            reference: Some(draft.reference),
        });
    }
    Err(SuiteError::SplitExhausted { suite: suite.name().into(), split: key.split, attempts: MAX_ATTEMPTS })
}

/// `count` tasks at indices `0..count`.
pub fn generate_many(suite: &dyn Suite, seed: u64, split: Split, difficulty: u8, count: u64) -> Result<Vec<Task>, SuiteError> {
    (0..count).map(|index| generate(suite, TaskKey { seed, split, difficulty, index })).collect()
}

/// The split a task's content belongs to.
pub fn split_of(instruction: &str, data: &TaskData) -> Split {
    let data = serde_json::to_string(data).unwrap_or_default();
    let h = fnv1a(&[instruction.as_bytes(), b"\0", data.as_bytes()]);
    // Dev is carved out of what was train content, so the test split stays what it always was.
    let v = splitmix(h);
    if v.is_multiple_of(TEST_SHARE_DENOM) {
        Split::Test
    } else if v % DEV_SHARE_DENOM == 1 {
        Split::Dev
    } else {
        Split::Train
    }
}

pub fn task_rng(suite: &str, key: TaskKey) -> TaskRng {
    let text = format!("{suite}\0{}\0{}\0{}\0{}", key.seed, key.split, key.difficulty, key.index);
    let mut state = fnv1a(&[text.as_bytes()]);
    let mut seed = [0u8; 32];
    for chunk in seed.chunks_mut(8) {
        state = splitmix(state);
        chunk.copy_from_slice(&state.to_le_bytes());
    }
    ChaCha8Rng::from_seed(seed)
}

/// FNV-1a: stable across Rust versions and platforms, unlike `DefaultHasher`.
fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in parts.iter().flat_map(|p| p.iter()) {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A function spec with `additionalProperties: false`.
pub fn tool_spec(name: &str, description: &str, properties: Value, required: &[&str]) -> Value {
    json!({"type": "function", "function": {"name": name, "description": description, "parameters": {
        "type": "object", "properties": properties, "required": required, "additionalProperties": false}}})
}

pub fn pick<'a, T>(rng: &mut TaskRng, items: &'a [T]) -> &'a T {
    &items[rng.random_range(0..items.len())]
}

pub fn arg_str<'a>(call: &'a ToolCall, name: &str) -> Result<&'a str, String> {
    call.arguments.get(name).and_then(Value::as_str).ok_or_else(|| format!("missing string argument `{name}`"))
}

pub fn arg_f64(call: &ToolCall, name: &str) -> Result<f64, String> {
    call.arguments.get(name).and_then(Value::as_f64).ok_or_else(|| format!("missing number argument `{name}`"))
}

pub fn unknown_tool(call: &ToolCall) -> String {
    format!("unknown tool `{}`", call.name)
}

/// Replays the reference calls through a sandbox; generators use it to make sure reference plans work and to
/// read the values the tools print.
pub fn replay(sandbox: &mut dyn Sandbox, calls: &[ToolCall]) -> Result<Vec<String>, String> {
    calls.iter().map(|c| sandbox.call(c)).collect()
}

const SYLLABLES: &[&str] = &[
    "var", "nol", "esk", "tar", "mib", "quo", "zen", "dra", "lun", "fey", "rok", "sal", "ter", "vin", "bar", "cor", "del", "fim", "gal", "hes", "jor", "kel",
    "mar", "nev", "pol", "ris", "sut", "tov", "ulm", "wes",
];

/// A made-up capitalised word of 2-3 syllables, so that generated facts cannot be answered from the model's
/// world knowledge.
pub fn coined_word(rng: &mut TaskRng) -> String {
    let n = rng.random_range(2..4);
    let mut w: String = (0..n).map(|_| *pick(rng, SYLLABLES)).collect();
    if let Some(first) = w.get_mut(0..1) {
        first.make_ascii_uppercase();
    }
    w
}

/// `n` distinct coined words, none equal to anything in `taken` (compared case-insensitively).
pub fn coined_words(rng: &mut TaskRng, n: usize, taken: &mut std::collections::BTreeSet<String>) -> Vec<String> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let w = coined_word(rng);
        if taken.insert(w.to_lowercase()) {
            out.push(w);
        }
    }
    out
}
