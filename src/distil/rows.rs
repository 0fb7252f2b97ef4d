//! Trajectory -> dataset row: the rollout's own token ids with the produced mask as loss mask, optionally with
//! the few-shot examples cut out of the context (context distillation).
//!
//! A trajectory's `token_ids` are, turn after turn, the prompt delta (mask 0: the rendered conversation since the
//! model's last token) and the sampled ids (mask 1). The first delta holds system + few-shot + first user message,
//! rendered by the model's chat template. To drop the few-shot examples we render `[system, few-shot...]` and
//! require its tokens to be a prefix of `token_ids` (that pins where the real conversation starts), replace
//! that prefix by the tokens of `[system]` alone, and keep every later id, sampled ones included, unchanged.
//! The splice is verified: the new context up to the first sampled token must equal what the template gives
//! for `[system, first user message]` with the generation prompt, i.e. exactly what the model would have seen
//! had it been prompted without examples.
use serde_json::Value;

use crate::agent::hint::HintPlacement;
use crate::data::dataset::{chat_messages, dataset_messages, DatasetRow, RowProvenance};
use crate::data::{FinishReason, Message, Role, Trajectory};

#[derive(Debug, thiserror::Error)]
pub enum RowError {
    #[error("trajectory {id}: {msg}")]
    Inconsistent { id: String, msg: String },
    #[error("trajectory {id}: cannot drop the few-shot examples: {msg}")]
    Splice { id: String, msg: String },
}

/// Renders and tokenizes a conversation with the model's chat template (implemented by `LoadedModel`).
pub trait ChatEncoder {
    fn encode_chat(&self, messages: &[Value], tools: Option<&[Value]>, add_generation_prompt: bool) -> Result<Vec<u32>, String>;
}

impl ChatEncoder for crate::model::LoadedModel {
    fn encode_chat(&self, messages: &[Value], tools: Option<&[Value]>, add_generation_prompt: bool) -> Result<Vec<u32>, String> {
        crate::model::LoadedModel::encode_chat(self, messages, tools, add_generation_prompt).map_err(|e| e.to_string())
    }
}

/// A dataset row with what the audit needs to check it.
pub struct BuiltRow {
    pub row: DatasetRow,
    /// 1 where the token is the model's own.
    pub produced: Vec<u8>,
    /// Position of the last sampled token of every turn that ended with `Stop`.
    pub stop_turn_ends: Vec<usize>,
}

impl BuiltRow {
    /// What the mask audit checks of this row.
    pub fn provenance(&self) -> RowProvenance<'_> {
        RowProvenance {
            id: &self.row.id,
            token_ids: &self.row.token_ids,
            loss_mask: &self.row.loss_mask,
            produced: &self.produced,
            stop_turn_ends: &self.stop_turn_ends,
        }
    }
}

pub fn row_id(t: &Trajectory) -> String {
    format!("{}#{}", t.task_id, t.sample_index)
}

/// The tool specs of an episode as recorded in it; for files written before they were recorded, those of the
/// generated suite at that difficulty, else none.
pub fn episode_tools(t: &Trajectory) -> Vec<Value> {
    if let Some(tools) = &t.tools {
        return tools.clone();
    }
    crate::tasks::suites::get(&t.suite)
        .ok()
        .filter(|s| s.difficulties().is_some_and(|r| r.contains(&t.difficulty)))
        .map(|s| s.tools(t.difficulty))
        .unwrap_or_default()
}

/// Builds the row; with `drop_fewshot`, the few-shot examples are removed from the context (see module docs).
pub fn build_row(t: &Trajectory, drop_fewshot: Option<&dyn ChatEncoder>) -> Result<BuiltRow, RowError> {
    let id = row_id(t);
    let bad = |msg: String| RowError::Inconsistent { id: id.clone(), msg };
    if t.privileged.is_some() {
        return Err(bad("was sampled with a hint in its prompt; a training row must not contain it (strip_hint first)".into()));
    }
    if t.token_ids.len() != t.produced_mask.len() {
        return Err(bad(format!("{} token ids but {} produced-mask values", t.token_ids.len(), t.produced_mask.len())));
    }
    let produced_pos: Vec<usize> = (0..t.produced_mask.len()).filter(|&i| t.produced_mask[i] == 1).collect();
    let per_turn: usize = t.turns.iter().map(|r| r.generated_tokens as usize).sum();
    if per_turn != produced_pos.len() {
        return Err(bad(format!("turns report {per_turn} generated tokens but the produced mask has {}", produced_pos.len())));
    }
    let mut stop_turn_ends = Vec::new();
    let mut seen = 0;
    for r in &t.turns {
        seen += r.generated_tokens as usize;
        // A turn ended by a stop string ends with that string's tokens, not with an end-of-turn id.
        if r.finish == FinishReason::Stop && r.generated_tokens > 0 {
            stop_turn_ends.push(produced_pos[seen - 1]);
        }
    }
    let tools = episode_tools(t);
    let (messages, token_ids, mask, shift, fewshot) = match drop_fewshot {
        Some(enc) if t.fewshot_messages > 0 => {
            let s = splice(t, 1 + t.fewshot_messages, &t.messages[..1], &tools, enc).map_err(|msg| RowError::Splice { id: id.clone(), msg })?;
            (s.messages, s.token_ids, s.mask, s.shift, 0)
        }
        _ => (t.messages.clone(), t.token_ids.clone(), t.produced_mask.clone(), 0isize, t.fewshot_messages),
    };
    let stop_turn_ends = stop_turn_ends.into_iter().map(|p| (p as isize + shift) as usize).collect();
    // The few-shot examples' assistant turns are context, not the model's: `"weight": 0` says so to trainers that
    // render the messages (ours included) instead of reading `token_ids`.
    let trained: Vec<bool> = (0..messages.len()).map(|i| !(1..=fewshot).contains(&i)).collect();
    let messages = super::chat::weighted(dataset_messages(&messages), &trained);
    let row = DatasetRow { id, suite: t.suite.clone(), difficulty: t.difficulty, messages, tools, token_ids, loss_mask: mask.clone() };
    Ok(BuiltRow { row, produced: mask, stop_turn_ends })
}

fn styled(messages: &[Message], with_calls: bool) -> Vec<Value> {
    let mut out = chat_messages(messages);
    if with_calls {
        for (v, m) in out.iter_mut().zip(messages) {
            if !m.tool_calls.is_empty() {
                v["tool_calls"] =
                    m.tool_calls.iter().map(|c| serde_json::json!({"type": "function", "function": {"name": c.name, "arguments": c.arguments}})).collect();
            }
        }
    }
    out
}

struct Spliced {
    messages: Vec<Message>,
    token_ids: Vec<u32>,
    mask: Vec<u8>,
    /// New position - old position of every token after the head.
    shift: isize,
    /// Tokens of the old head.
    old_prefix: usize,
}

/// The episode as if it had been sampled without its hint: the system or user message without the privileged
/// context, the token ids spliced to match (sampled ids unchanged), `privileged` cleared. A successful hinted
/// episode then trains the model to do unaided what it did with the hint (context distillation).
pub fn strip_hint(t: &Trajectory, enc: &dyn ChatEncoder) -> Result<Trajectory, RowError> {
    let Some(hint) = &t.privileged else { return Ok(t.clone()) };
    let bad = |msg: String| RowError::Splice { id: row_id(t), msg };
    let found = [HintPlacement::System, HintPlacement::User].into_iter().find_map(|p| {
        let i = p.index(t.fewshot_messages);
        Some((i, crate::agent::hint::without_hint(&t.messages.get(i)?.content, hint)?))
    });
    let (i, plain) = found.ok_or_else(|| bad("neither the system nor the task's message ends with the recorded hint".into()))?;
    let mut head =
        t.messages.get(..hint_head_len(t, i)).ok_or_else(|| bad(format!("fewer messages than {} few-shot ones and the task's", t.fewshot_messages)))?.to_vec();
    head[i].content = plain.to_string();
    let s = splice(t, head.len(), &head, &episode_tools(t), enc).map_err(bad)?;
    let old_len = s.old_prefix;
    let mut logprobs = vec![0f32; old_len.saturating_add_signed(s.shift)];
    logprobs.extend_from_slice(t.logprobs.get(old_len..).ok_or_else(|| bad("fewer log-probs than tokens".into()))?);
    Ok(Trajectory { messages: s.messages, token_ids: s.token_ids, produced_mask: s.mask, logprobs, privileged: None, ..t.clone() })
}

/// The teacher's copy of an episode for SDAR: the same tokens with `hint` appended to the system or the task's
/// message. Returns the teacher's token ids and the offset of every later token in them.
pub fn teacher_view(t: &Trajectory, hint: &str, placement: HintPlacement, enc: &dyn ChatEncoder) -> Result<(Vec<u32>, isize), RowError> {
    let bad = |msg: String| RowError::Splice { id: row_id(t), msg };
    let i = placement.index(t.fewshot_messages);
    let mut head = t.messages.get(..hint_head_len(t, i)).ok_or_else(|| bad(format!("no message {i} for the hint")))?.to_vec();
    head[i].content = crate::agent::hint::with_hint(&head[i].content, hint);
    let s = splice(t, head.len(), &head, &episode_tools(t), enc).map_err(bad)?;
    Ok((s.token_ids, s.shift))
}

/// How many leading messages a splice replaces to change message `i`: the system and few-shot messages at
/// least (the template renders them as one head), up to the task's message when `i` is it.
fn hint_head_len(t: &Trajectory, i: usize) -> usize {
    (i + 1).max(1 + t.fewshot_messages)
}

/// Replaces the rendering of the episode's first `n` messages (system and few-shot messages, and possibly the
/// task's user message) by the rendering of `head`, keeping every later token. The rollout's
/// renderer is not recorded, so the plausible ones are tried (tools passed to the template or not; calls passed
/// as `tool_calls` or only in the text) and the first whose rendering is a verified prefix wins.
fn splice(t: &Trajectory, n: usize, head: &[Message], tools: &[Value], enc: &dyn ChatEncoder) -> Result<Spliced, String> {
    let first_user = 1 + t.fewshot_messages;
    match (t.messages.first().map(|m| m.role), t.messages.get(first_user).map(|m| m.role)) {
        (Some(Role::System), Some(Role::User)) => {}
        _ => return Err(format!("expected a system message, {} few-shot messages, then the user message", t.fewshot_messages)),
    }
    if n != first_user && n != first_user + 1 {
        return Err(format!("a spliced head ends before or with the task's message, not at message {n}"));
    }
    let first_sampled = t.produced_mask.iter().position(|&m| m == 1).unwrap_or(t.token_ids.len());
    let tool_args: Vec<Option<&[Value]>> = if tools.is_empty() { vec![None] } else { vec![None, Some(tools)] };
    let mut tried = Vec::new();
    for &tools_arg in &tool_args {
        for with_calls in [false, true] {
            let old = enc.encode_chat(&styled(&t.messages[..n], with_calls), tools_arg, false)?;
            if !t.token_ids.starts_with(&old) {
                tried.push(format!(
                    "tools {} / calls {}: the rendered head ({} tokens) is not a prefix of the trajectory",
                    tools_arg.is_some(),
                    if with_calls { "structured" } else { "in text" },
                    old.len()
                ));
                continue;
            }
            if old.len() > first_sampled {
                return Err(format!("the rendered head ({} tokens) runs into the model's first sampled token at {first_sampled}", old.len()));
            }
            let new_prefix = enc.encode_chat(&styled(head, with_calls), tools_arg, false)?;
            let mut new_context = head.to_vec();
            new_context.extend_from_slice(&t.messages[n..=first_user]);
            let expected = enc.encode_chat(&styled(&new_context, with_calls), tools_arg, true)?;
            let mut got = new_prefix.clone();
            got.extend_from_slice(&t.token_ids[old.len()..first_sampled]);
            if got != expected {
                tried.push(format!(
                    "tools {}: the new head + the retained tail is not what the template renders for [head, user] ({} vs {} tokens)",
                    tools_arg.is_some(),
                    got.len(),
                    expected.len()
                ));
                continue;
            }
            let mut ids = new_prefix.clone();
            ids.extend_from_slice(&t.token_ids[old.len()..]);
            let mut mask = vec![0u8; new_prefix.len()];
            mask.extend_from_slice(&t.produced_mask[old.len()..]);
            let mut messages = head.to_vec();
            messages.extend_from_slice(&t.messages[n..]);
            return Ok(Spliced { messages, token_ids: ids, mask, shift: new_prefix.len() as isize - old.len() as isize, old_prefix: old.len() });
        }
    }
    Err(format!("no rendering of the head aligns with the trajectory's token ids (was it rolled out with this model's template?): {}", tried.join("; ")))
}
