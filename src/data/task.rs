//! The task record: what the model is asked, which tools it gets, what the sandbox starts from and how the
//! outcome is judged. One JSON object per line in task files.
use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::message::ToolCall;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    Train,
    /// Held out from training; decides the loop's promotion gate.
    Dev,
    /// Held out from training and from every decision; only reported.
    Test,
}

impl Split {
    pub fn as_str(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Dev => "dev",
            Split::Test => "test",
        }
    }
}

impl std::fmt::Display for Split {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Split {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "train" => Ok(Split::Train),
            "dev" => Ok(Split::Dev),
            "test" => Ok(Split::Test),
            other => Err(format!("unknown split `{other}` (expected `train`, `dev` or `test`)")),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Task {
    pub id: String,
    pub suite: String,
    pub split: Split,
    pub difficulty: u8,
    /// The user message.
    pub instruction: String,
    /// Function specs: `{"type":"function","function":{"name","description","parameters"}}`.
    pub tools: Vec<serde_json::Value>,
    /// Starting state of the sandbox. Never contains the expected outcome.
    #[serde(default)]
    pub data: TaskData,
    pub expected: Expected,
    pub max_turns: u32,
    /// Tool calls in the reference plan (the shortest plan that relies only on tool outputs), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub optimal_steps: Option<u32>,
    /// A known-good solution for generated tasks: used by tests and for debugging, never shown to the model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<Reference>,
}

impl Task {
    /// Names of the tools offered to the model, in spec order; specs without a name are skipped here and
    /// rejected by task validation.
    pub fn tool_names(&self) -> Vec<&str> {
        self.tools.iter().filter_map(|t| t.pointer("/function/name").and_then(|n| n.as_str())).collect()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reference {
    /// Calls in order, one per turn.
    #[serde(default)]
    pub calls: Vec<ToolCall>,
    #[serde(default)]
    pub answer: String,
    /// An environment task's winning actions (text commands), one per turn.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub actions: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum TaskData {
    #[default]
    None,
    Documents {
        documents: Vec<Document>,
    },
    Tables {
        tables: Vec<Table>,
    },
    Files {
        /// Directories, absolute paths; parents of files are implied.
        #[serde(default)]
        dirs: BTreeSet<String>,
        /// Absolute path -> content.
        files: BTreeMap<String, String>,
    },
    /// The task runs on a configured MCP tool server (suite `mcp`).
    Mcp {
        server: String,
    },
    /// The task is an episode of a configured environment (suite `env`), reset with this seed and game.
    Env {
        env: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        seed: Option<u64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        game: Option<String>,
    },
    Grid {
        /// Rows of `.` (open) and `#` (wall).
        rows: Vec<String>,
        start: [usize; 2],
        goal: [usize; 2],
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Document {
    pub id: String,
    #[serde(default)]
    pub title: String,
    pub text: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Table {
    pub name: String,
    /// The first column is the key that `lookup` matches.
    pub columns: Vec<String>,
    pub rows: Vec<Vec<serde_json::Value>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Expected {
    /// A final answer judged by a matcher.
    Answer(AnswerSpec),
    /// The calls of the model's turn, compared without executing them. An empty list means the right
    /// behaviour is to call nothing and answer in text.
    Calls { calls: Vec<ExpectedCall> },
    /// The sandbox's final state must equal `state`; an answer is checked too when given.
    State {
        state: GoalState,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        answer: Option<AnswerSpec>,
    },
    /// The user's own reward: a program reads the finished episode (its trajectory, without a verdict) as JSON on
    /// stdin and prints a score in [0, 1].
    Scorer(ScorerSpec),
    /// An environment's reward: the episode's return, divided by the maximum the environment announced at reset
    /// (if any) and clipped to [0, 1], is the score; a success is a score of at least `threshold`.
    Reward {
        #[serde(default = "full_score")]
        threshold: f64,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScorerSpec {
    /// The program and its arguments, run without a shell (a path, or a name on PATH).
    pub command: Vec<String>,
    /// The scorer's whole environment.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// A success is a score of at least this.
    #[serde(default = "full_score")]
    pub threshold: f64,
    #[serde(default = "scorer_timeout_ms")]
    pub timeout_ms: u64,
}

fn full_score() -> f64 {
    1.0
}

fn scorer_timeout_ms() -> u64 {
    30_000
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AnswerSpec {
    pub answer: String,
    /// Other accepted answers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
    pub matcher: Matcher,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Matcher {
    /// The last number in the answer is within `max(abs_tol, rel_tol * |expected|)` of the expected number.
    Number {
        #[serde(default = "default_abs_tol")]
        abs_tol: f64,
        #[serde(default)]
        rel_tol: f64,
    },
    /// Equal after normalisation: lower case, punctuation and articles removed, whitespace collapsed.
    Exact,
    /// Token F1 after the same normalisation; success when F1 >= `threshold`, score = F1.
    F1 {
        #[serde(default = "default_f1_threshold")]
        threshold: f64,
    },
}

fn default_abs_tol() -> f64 {
    1e-6
}
fn default_f1_threshold() -> f64 {
    0.8
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExpectedCall {
    pub name: String,
    /// Argument name -> allowed values. A `null` among the allowed values means the argument may be omitted.
    /// Arguments the model passes that are not listed here make the call wrong.
    #[serde(default)]
    pub arguments: BTreeMap<String, Vec<serde_json::Value>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum GoalState {
    Files { dirs: BTreeSet<String>, files: BTreeMap<String, String> },
    Grid { position: [usize; 2] },
}
