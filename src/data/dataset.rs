//! The dataset row (chat form + the exact token ids and loss mask to train on), the mask audit, and a reader
//! whose errors name file, line (or Parquet row) and field.
//!
//! A row is the common `{"messages": [...], "tools": [...]}` JSONL form that other trainers read, plus
//! `token_ids` and `loss_mask`. The ids are the rollout's own (never re-tokenised), so `token_ids`, not
//! `messages`, is what training sees; `messages` keeps each assistant turn's raw text, tool calls included in
//! the Hermes `<tool_call>` form the model wrote.
use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::message::{Message, Role};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DatasetRow {
    /// `<task_id>#<sample_index>`, unique in a dataset.
    pub id: String,
    pub suite: String,
    pub difficulty: u8,
    pub messages: Vec<Value>,
    pub tools: Vec<Value>,
    pub token_ids: Vec<u32>,
    /// 1 exactly on the model's own sampled tokens.
    pub loss_mask: Vec<u8>,
}

impl DatasetRow {
    /// Tokens the loss sees: a token at position 0 has nothing to be predicted from and never counts.
    pub fn trained_tokens(&self) -> usize {
        self.loss_mask.iter().skip(1).filter(|&&m| m == 1).count()
    }

    /// `(start, end)` of every maximal run of trained tokens.
    pub fn trained_spans(&self) -> Vec<(usize, usize)> {
        spans(&self.loss_mask)
    }
}

pub fn spans(mask: &[u8]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut start = None;
    for (i, &m) in mask.iter().enumerate() {
        match (m == 1, start) {
            (true, None) => start = Some(i),
            (false, Some(s)) => {
                out.push((s, i));
                start = None;
            }
            _ => {}
        }
    }
    if let Some(s) = start {
        out.push((s, mask.len()));
    }
    out
}

/// Messages in the common chat form: `{"role", "content"}` plus `name` on tool messages. Parsed calls are not
/// repeated as `tool_calls`: the raw content already holds them, and a trainer's template that renders both
/// would show each call twice.
pub fn chat_messages(messages: &[Message]) -> Vec<Value> {
    messages
        .iter()
        .map(|m| {
            let mut v = serde_json::json!({"role": m.role, "content": m.content});
            if let Some(n) = &m.name {
                v["name"] = Value::String(n.clone());
            }
            v
        })
        .collect()
}

/// Messages as chat-data tools read them (OpenAI / Hugging Face form): assistant turns with calls carry
/// `tool_calls` (`{"id", "type": "function", "function": {"name", "arguments"}}`, arguments as an object), tool turns
/// their `name` and the `tool_call_id` they answer. `content` stays exactly what the model wrote, calls included,
/// so the model's own template renders the row back to its `token_ids`.
pub fn dataset_messages(messages: &[Message]) -> Vec<Value> {
    let mut pending: std::collections::VecDeque<String> = Default::default();
    let mut next = 0usize;
    messages
        .iter()
        .zip(chat_messages(messages))
        .map(|(m, mut v)| {
            if m.role == Role::Assistant && !m.tool_calls.is_empty() {
                pending.clear();
                let calls: Vec<Value> = m
                    .tool_calls
                    .iter()
                    .map(|c| {
                        let id = format!("call_{next}");
                        next += 1;
                        pending.push_back(id.clone());
                        serde_json::json!({"id": id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}})
                    })
                    .collect();
                v["tool_calls"] = Value::Array(calls);
            } else if m.role == Role::Tool {
                if let Some(id) = pending.pop_front() {
                    v["tool_call_id"] = Value::String(id);
                }
            }
            v
        })
        .collect()
}

#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{}{}: {message}", path.display(), at.after_path())]
    Line { path: PathBuf, at: RowAt, message: String },
    #[error("{}: no rows", path.display())]
    Empty { path: PathBuf },
    /// The file as a whole cannot be read as Parquet (bad footer, a codec we do not build, no `messages` column).
    #[error("{}: {message}", path.display())]
    Parquet { path: PathBuf, message: String },
}

/// Where a row sits in its file, 1-based: a JSONL line or a Parquet row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowAt {
    Line(usize),
    Row(usize),
}

impl RowAt {
    /// What follows the file name in an error or a default row id: `chat.jsonl:3` as compilers name lines (so
    /// editors jump there), `chat.parquet: row 3` where no line exists.
    pub fn after_path(self) -> String {
        match self {
            RowAt::Line(n) => format!(":{n}"),
            RowAt::Row(n) => format!(": row {n}"),
        }
    }
}

impl std::fmt::Display for RowAt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RowAt::Line(n) => write!(f, "line {n}"),
            RowAt::Row(n) => write!(f, "row {n}"),
        }
    }
}

/// A line of a training file: one of our rows, or a plain chat row (`messages` and optional `tools`, no
/// `token_ids` or `loss_mask`) that the model's chat template turns into one (`distil::chat`).
#[derive(Debug, Clone, PartialEq)]
pub enum DataLine {
    Row(DatasetRow),
    Chat(ChatLine),
}

/// A chat row as read: checked only for being a JSON object; `distil::chat::parse_conversation` checks the rest.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatLine {
    /// Where it is in the file, for errors.
    pub at: RowAt,
    pub object: serde_json::Map<String, Value>,
}

/// Reads every row of a dataset that `filter` wrote. A row without its token fields is an error.
pub fn read_dataset(path: &Path) -> Result<Vec<DatasetRow>, DatasetError> {
    read_lines(path, false).map(|lines| lines.into_iter().filter_map(|l| if let DataLine::Row(r) = l { Some(r) } else { None }).collect())
}

/// Reads a training file: our rows (a line with `token_ids` or `loss_mask` must have every field) or plain chat
/// rows, one form per file; the form is the first row's. A line of the other form, or of neither, is an error
/// naming it. A Parquet file (by its `.parquet` name or its `PAR1` magic) is read the same way, each row as the
/// JSON object its line would be (`data::parquet`).
pub fn read_training_data(path: &Path) -> Result<Vec<DataLine>, DatasetError> {
    read_lines(path, true)
}

const ROW_FORM: &str = "a row with `token_ids` and `loss_mask`, as `filter` writes them";
const CHAT_FORM: &str = "a chat row (`messages` without `token_ids` or `loss_mask`)";

/// Each field is decoded on its own so that a type error names the field (serde's own message says only what it
/// expected), and token/mask length mismatches are caught here rather than in the trainer.
fn read_lines(path: &Path, chat: bool) -> Result<Vec<DataLine>, DatasetError> {
    let io = |source| DatasetError::Io { path: path.into(), source };
    let objects: Box<dyn Iterator<Item = (RowAt, Result<Value, String>)>> = if super::parquet::is_parquet(path).map_err(io)? {
        Box::new(super::parquet::read_objects(path)?.into_iter().map(|(at, v)| (at, v.map(Value::Object))))
    } else {
        let file = std::fs::File::open(path).map_err(io)?;
        Box::new(std::io::BufReader::new(file).lines().enumerate().filter_map(|(i, line)| {
            let parsed = match line {
                Ok(l) if l.trim().is_empty() => return None,
                Ok(l) => serde_json::from_str(&l).map_err(|e| format!("not JSON: {e}")),
                Err(e) => Err(e.to_string()),
            };
            Some((RowAt::Line(i + 1), parsed))
        }))
    };
    let mut rows = Vec::new();
    // The form of the file (true: chat rows) and the row that set it.
    let mut form: Option<(bool, RowAt)> = None;
    for (at, v) in objects {
        let err = |message: String| DatasetError::Line { path: path.into(), at, message };
        let Value::Object(mut obj) = v.map_err(err)? else { return Err(err("expected a JSON object".into())) };
        if chat {
            let is_chat = !obj.contains_key("token_ids") && !obj.contains_key("loss_mask");
            if is_chat && !obj.contains_key("messages") {
                return Err(err(format!("neither {ROW_FORM} nor a chat row (`messages` and optional `tools`)")));
            }
            match form {
                None => form = Some((is_chat, at)),
                Some((f, first)) if f != is_chat => {
                    let name = |c: bool| if c { CHAT_FORM } else { ROW_FORM };
                    return Err(err(format!("{}, but {first} is {}: a file holds rows of one form", name(is_chat), name(f))));
                }
                Some(_) => {}
            }
            if is_chat {
                rows.push(DataLine::Chat(ChatLine { at, object: obj }));
                continue;
            }
        }
        fn field<T: DeserializeOwned>(obj: &mut serde_json::Map<String, Value>, name: &str) -> Result<T, String> {
            let v = obj.remove(name).ok_or_else(|| format!("missing field `{name}`"))?;
            serde_json::from_value(v).map_err(|e| format!("field `{name}`: {e}"))
        }
        let row = (|| -> Result<DatasetRow, String> {
            let row = DatasetRow {
                id: field(&mut obj, "id")?,
                suite: field(&mut obj, "suite")?,
                difficulty: field(&mut obj, "difficulty")?,
                messages: field(&mut obj, "messages")?,
                tools: obj.remove("tools").map_or(Ok(Vec::new()), |v| serde_json::from_value(v).map_err(|e| format!("field `tools`: {e}")))?,
                token_ids: field(&mut obj, "token_ids")?,
                loss_mask: field(&mut obj, "loss_mask")?,
            };
            if row.token_ids.len() != row.loss_mask.len() {
                return Err(format!("field `loss_mask`: {} values for {} token ids", row.loss_mask.len(), row.token_ids.len()));
            }
            if let Some(m) = row.loss_mask.iter().find(|&&m| m > 1) {
                return Err(format!("field `loss_mask`: value {m} (must be 0 or 1)"));
            }
            Ok(row)
        })()
        .map_err(err)?;
        rows.push(DataLine::Row(row));
    }
    if rows.is_empty() {
        return Err(DatasetError::Empty { path: path.into() });
    }
    Ok(rows)
}

/// Where a row's tokens came from, for the audit: the rollout's produced mask and the end of every assistant
/// turn that stopped by itself (its last sampled id must be an end-of-turn token, and must be trained, or the
/// tuned model never learns to stop).
pub struct RowProvenance<'a> {
    pub id: &'a str,
    pub token_ids: &'a [u32],
    pub loss_mask: &'a [u8],
    /// 1 where the token is the model's own (assistant), 0 for system/user/tool/template tokens.
    pub produced: &'a [u8],
    /// Positions of the last sampled token of each turn whose finish reason is `Stop`.
    pub stop_turn_ends: &'a [usize],
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RoleCounts {
    pub assistant: u64,
    pub other: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditProblem {
    pub row: String,
    pub message: String,
}

/// Written next to every dataset as `mask_audit.json`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MaskAudit {
    pub rows: usize,
    pub tokens: RoleCounts,
    /// Tokens with loss_mask 1, by where they came from; `other` must be 0.
    pub trained: RoleCounts,
    /// Assistant tokens left out of the loss (0 unless a row was cut).
    pub untrained_assistant: u64,
    pub stop_turns: u64,
    pub stop_turns_trained: u64,
    /// The end-of-turn ids seen at the end of stopped turns, with counts (empty when no tokenizer was given).
    pub end_of_turn_ids: BTreeMap<u32, u64>,
    pub rows_without_trained_tokens: usize,
    pub problems: Vec<AuditProblem>,
}

impl MaskAudit {
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }

    /// Adds one row. `stop_ids`, when known, are the tokenizer's end-of-turn ids: a stopped turn must end with one.
    pub fn add(&mut self, r: &RowProvenance<'_>, stop_ids: Option<&[u32]>) {
        self.rows += 1;
        let mut problem = |message: String| self.problems.push(AuditProblem { row: r.id.to_string(), message });
        if r.token_ids.len() != r.loss_mask.len() || r.produced.len() != r.loss_mask.len() {
            problem(format!("{} token ids, {} mask values, {} provenance values", r.token_ids.len(), r.loss_mask.len(), r.produced.len()));
            return;
        }
        let mut trained = 0usize;
        for (i, (&m, &p)) in r.loss_mask.iter().zip(r.produced).enumerate() {
            let own = p == 1;
            if own {
                self.tokens.assistant += 1;
            } else {
                self.tokens.other += 1;
            }
            match (m == 1, own) {
                (true, true) => self.trained.assistant += 1,
                (true, false) => self.trained.other += 1,
                (false, true) => self.untrained_assistant += 1,
                (false, false) => {}
            }
            if m == 1 && i > 0 {
                trained += 1;
            }
        }
        let other: usize = r.loss_mask.iter().zip(r.produced).filter(|(&m, &p)| m == 1 && p == 0).count();
        if other > 0 {
            problem(format!("{other} trained tokens are not the model's own (system/user/tool/template tokens)"));
        }
        if trained == 0 {
            self.rows_without_trained_tokens += 1;
            problem("no trained token (loss_mask is 0 after the first token)".into());
        }
        for &end in r.stop_turn_ends {
            self.stop_turns += 1;
            let Some(&id) = r.token_ids.get(end) else {
                problem(format!("end of turn at {end} is past the row's {} tokens", r.token_ids.len()));
                continue;
            };
            if r.loss_mask[end] == 1 {
                self.stop_turns_trained += 1;
            } else {
                problem(format!("end-of-turn token {id} at position {end} is not trained"));
            }
            if let Some(stops) = stop_ids {
                *self.end_of_turn_ids.entry(id).or_default() += 1;
                if !stops.contains(&id) {
                    problem(format!("a stopped turn ends with token {id} at position {end}, which is not an end-of-turn id {stops:?}"));
                }
            }
        }
    }

    /// One line per fact, for stderr.
    pub fn summary(&self) -> String {
        let mut s = format!(
            "mask audit: {} rows; trained tokens: {} assistant, {} other; {} assistant tokens untrained; {}/{} end-of-turn tokens trained",
            self.rows, self.trained.assistant, self.trained.other, self.untrained_assistant, self.stop_turns_trained, self.stop_turns
        );
        if !self.end_of_turn_ids.is_empty() {
            s.push_str(&format!(" (ids {:?})", self.end_of_turn_ids.keys().collect::<Vec<_>>()));
        }
        if self.problems.is_empty() {
            s.push_str("; ok");
        } else {
            s.push_str(&format!("; {} problems", self.problems.len()));
            for p in self.problems.iter().take(5) {
                s.push_str(&format!("\n  {}: {}", p.row, p.message));
            }
            if self.problems.len() > 5 {
                s.push_str(&format!("\n  ... and {} more (see mask_audit.json)", self.problems.len() - 5));
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audit_flags_untrained_rows_and_end_of_turn() {
        let ids = [1, 2, 3, 9, 4, 5, 9];
        let produced = [0, 0, 1, 1, 0, 1, 1];
        let mut a = MaskAudit::default();
        a.add(&RowProvenance { id: "good", token_ids: &ids, loss_mask: &produced, produced: &produced, stop_turn_ends: &[3, 6] }, Some(&[9]));
        assert!(a.ok(), "{:?}", a.problems);
        assert_eq!((a.trained.assistant, a.trained.other, a.stop_turns_trained), (4, 0, 2));
        let none = [0u8; 7];
        a.add(&RowProvenance { id: "empty", token_ids: &ids, loss_mask: &none, produced: &produced, stop_turn_ends: &[3, 6] }, Some(&[9]));
        assert_eq!(a.rows_without_trained_tokens, 1);
        assert!(a.problems.iter().any(|p| p.row == "empty" && p.message.contains("no trained token")));
        assert!(a.problems.iter().any(|p| p.row == "empty" && p.message.contains("end-of-turn token 9 at position 3")));
        let all = [1u8; 7];
        let mut b = MaskAudit::default();
        b.add(&RowProvenance { id: "all", token_ids: &ids, loss_mask: &all, produced: &produced, stop_turn_ends: &[3] }, Some(&[7]));
        assert!(b.problems.iter().any(|p| p.message.contains("not the model's own")));
        assert!(b.problems.iter().any(|p| p.message.contains("not an end-of-turn id")));
    }

    #[test]
    fn spans_cover_runs() {
        assert_eq!(spans(&[0, 1, 1, 0, 1]), vec![(1, 3), (4, 5)]);
        assert_eq!(spans(&[]), vec![]);
    }
}
