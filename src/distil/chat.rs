//! Plain chat rows (`messages` and optional `tools`, the form TRL and OpenAI fine-tuning read) to training rows:
//! checked, rendered with the model's own chat template, and masked so that the loss falls on assistant turns only.
//!
//! A row is rendered turn by turn, as a rollout would have fed it to the model: before each assistant message, the
//! conversation so far up to the generation prompt (mask 0); then the assistant's part, up to and including the
//! template's end-of-turn token (mask 1), so the model learns to stop. What follows the last assistant message is
//! never trained and is left out. Each rendering must extend the previous one, as in a rollout; a template that
//! renders earlier turns differently once a later turn exists is refused for that row, naming the message.
//!
//! Templates differ in what they render: what the model's template would drop (tools, structured calls, tool
//! messages) is written the way the agent's own prompts write it (`rollout::chat_form`). An assistant message with
//! `"weight": 0` (OpenAI's fine-tuning form; `filter` writes it on few-shot examples) stays in the context and is not
//! trained.
use std::collections::{HashSet, VecDeque};
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use super::rows::BuiltRow;
use crate::data::chat::{field_err, optional_str, parse_calls, parse_content};
use crate::data::dataset::{dataset_messages, ChatLine, DataLine, DatasetRow, MaskAudit, RowAt};
use crate::data::{Message, Role};
use crate::model::loaded::segments_between;
use crate::model::LoadedModel;
use crate::rollout::chat_form::ChatForm;
use crate::tools::toolcall::tool_name;

/// A chat row that cannot be trained on, with the file, line (or Parquet row) and field at fault.
#[derive(Debug, thiserror::Error)]
#[error("{}{}: {message}", path.display(), at.after_path())]
pub struct ChatRowError {
    pub path: PathBuf,
    pub at: RowAt,
    pub message: String,
}

/// A checked chat row: roles in order, every tool message answering a call, every call naming a declared tool.
#[derive(Debug, Clone, PartialEq)]
pub struct Conversation {
    /// The row's `id`, else `<file name>:<line>` (`<file name>: row <row>` in a Parquet file).
    pub id: String,
    pub at: RowAt,
    pub messages: Vec<Message>,
    /// Per message: an assistant message the loss falls on (not `"weight": 0`).
    pub trained: Vec<bool>,
    /// `{"type": "function", "function": {"name", ...}}` specs (flat `{"name", ...}` ones are wrapped so).
    pub tools: Vec<Value>,
}

/// A line of a training file after checking.
#[derive(Debug, Clone, PartialEq)]
pub enum TrainingLine {
    Row(DatasetRow),
    Chat(Conversation),
}

/// Checks every chat line (no model needed, so a bad row fails before any model is loaded).
pub fn check_lines(path: &Path, lines: Vec<DataLine>) -> Result<Vec<TrainingLine>, ChatRowError> {
    lines
        .into_iter()
        .map(|l| match l {
            DataLine::Row(r) => Ok(TrainingLine::Row(r)),
            DataLine::Chat(c) => parse_conversation(path, &c).map(TrainingLine::Chat),
        })
        .collect()
}

/// Rows ready for training, in file order, with the audit of the rows rendered here (none when the file held only
/// our own rows, which `filter` audited when it wrote them).
pub struct Rendered {
    pub rows: Vec<DatasetRow>,
    pub audit: Option<MaskAudit>,
    /// What the template could not render and how it was written instead, one line each.
    pub notes: Vec<String>,
}

/// Renders every chat row with the model's template; our own rows pass through unchanged.
pub fn render_lines(path: &Path, lines: Vec<TrainingLine>, model: &LoadedModel) -> Result<Rendered, ChatRowError> {
    let r = ChatRenderer::new(model);
    let convs: Vec<&Conversation> = lines.iter().filter_map(|l| if let TrainingLine::Chat(c) = l { Some(c) } else { None }).collect();
    let notes = r.notes(&convs);
    let mut audit = (!convs.is_empty()).then(MaskAudit::default);
    let mut rows = Vec::with_capacity(lines.len());
    for l in lines {
        match l {
            TrainingLine::Row(row) => rows.push(row),
            TrainingLine::Chat(c) => {
                let built = r.render(&c).map_err(|message| ChatRowError { path: path.into(), at: c.at, message })?;
                if let Some(a) = audit.as_mut() {
                    a.add(&built.provenance(), Some(model.tokenizer.stop_ids()));
                }
                rows.push(built.row);
            }
        }
    }
    Ok(Rendered { rows, audit, notes })
}

/// Checks one chat row and puts it in the one internal form.
pub fn parse_conversation(path: &Path, line: &ChatLine) -> Result<Conversation, ChatRowError> {
    let err = |message: String| ChatRowError { path: path.into(), at: line.at, message };
    let obj = &line.object;
    let id = match obj.get("id") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        None | Some(Value::Null) => {
            let file = path.file_name().map_or_else(|| path.display().to_string(), |f| f.to_string_lossy().into_owned());
            format!("{file}{}", line.at.after_path())
        }
        Some(_) => return Err(err("field `id`: expected a string".into())),
    };
    let tools = parse_tools(obj.get("tools")).map_err(&err)?;
    let messages = match obj.get("messages") {
        Some(Value::Array(a)) if !a.is_empty() => a,
        Some(Value::Array(_)) => return Err(err("field `messages`: empty".into())),
        Some(_) => return Err(err("field `messages`: expected an array of messages".into())),
        None => {
            return Err(err(
                "missing field `messages` (a chat row has `messages` and optional `tools`; a row written by `filter` also has `token_ids` and `loss_mask`)"
                    .into(),
            ))
        }
    };
    let (messages, trained) = parse_messages(messages, &tools).map_err(&err)?;
    Ok(Conversation { id, at: line.at, messages, trained, tools })
}

/// `tools`: absent, null, an array, or a string holding a JSON array (as some Hugging Face datasets store it).
fn parse_tools(v: Option<&Value>) -> Result<Vec<Value>, String> {
    let list = match v {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(a)) => a.clone(),
        Some(Value::String(s)) if s.trim().is_empty() => return Ok(Vec::new()),
        Some(Value::String(s)) => match serde_json::from_str(s) {
            Ok(Value::Array(a)) => a,
            Ok(_) => return Err(field_err("tools", "a string that does not hold a JSON array")),
            Err(e) => return Err(field_err("tools", format_args!("a string that is not JSON: {e}"))),
        },
        Some(_) => return Err(field_err("tools", "expected an array of tool specs")),
    };
    let mut names = HashSet::new();
    let mut out = Vec::with_capacity(list.len());
    for (i, spec) in list.into_iter().enumerate() {
        let spec = match spec {
            Value::Object(o) if o.contains_key("function") => Value::Object(o),
            // A bare function spec, as some datasets write it: wrapped as chat templates expect.
            Value::Object(o) if o.contains_key("name") => json!({"type": "function", "function": o}),
            _ => return Err(field_err(format_args!("tools[{i}]"), "expected {\"type\": \"function\", \"function\": {\"name\": ...}}")),
        };
        let name = tool_name(&spec).ok_or_else(|| field_err(format_args!("tools[{i}].function.name"), "missing or not a string"))?;
        if !names.insert(name.to_string()) {
            return Err(field_err(format_args!("tools[{i}].function.name"), format_args!("`{name}` is declared twice")));
        }
        out.push(spec);
    }
    Ok(out)
}

/// A call waiting for its tool message.
struct Pending {
    at: String,
    id: Option<String>,
    name: String,
}

fn parse_messages(list: &[Value], tools: &[Value]) -> Result<(Vec<Message>, Vec<bool>), String> {
    let declared: Vec<&str> = tools.iter().filter_map(tool_name).collect();
    let mut out: Vec<Message> = Vec::with_capacity(list.len());
    let mut trained = Vec::with_capacity(list.len());
    let mut pending: VecDeque<Pending> = VecDeque::new();
    for (i, v) in list.iter().enumerate() {
        let at = format!("messages[{i}]");
        let Value::Object(m) = v else { return Err(field_err(&at, "expected an object")) };
        let role = match m.get("role").and_then(Value::as_str) {
            Some("system") => Role::System,
            Some("user") => Role::User,
            Some("assistant") => Role::Assistant,
            Some("tool") => Role::Tool,
            Some(other) => return Err(field_err(format_args!("{at}.role"), format_args!("`{other}` (expected system, user, assistant or tool)"))),
            None => return Err(field_err(format_args!("{at}.role"), "missing or not a string")),
        };
        let content = parse_content(m.get("content"), &at)?;
        let prev = out.last().map(|p| p.role);
        let order = |msg: &str| Err(field_err(format_args!("{at}.role"), format_args!("{} {msg}", role_name(role))));
        if role != Role::Tool {
            if let Some(p) = pending.front() {
                return Err(field_err(
                    format_args!("{at}.role"),
                    format_args!("{} before the tool message that answers `{}` ({})", role_name(role), p.name, p.at),
                ));
            }
        }
        let weight = match m.get("weight") {
            None | Some(Value::Null) => None,
            Some(w) if role == Role::Assistant && (w == 0 || w == 1) => w.as_u64(),
            Some(w) => return Err(field_err(format_args!("{at}.weight"), format_args!("{w} (only assistant messages take a weight, 0 or 1)"))),
        };
        trained.push(role == Role::Assistant && weight != Some(0));
        let mut msg = Message::new(role, content);
        match role {
            Role::System if i > 0 => return order("after the first message (a system message comes first)"),
            Role::System => {}
            Role::User => match prev {
                Some(Role::User) => return order("right after another user message"),
                Some(Role::Tool) => return order("right after tool results (the assistant answers them first)"),
                _ => {}
            },
            Role::Assistant => {
                match prev {
                    None => return order("as the first message (a conversation starts with a system or user message)"),
                    Some(Role::System) => return order("right after the system message (a user message comes first)"),
                    Some(Role::Assistant) => return order("right after another assistant message"),
                    _ => {}
                }
                let calls = parse_calls(m.get("tool_calls"), &at, Some(&declared))?;
                for (j, (id, call)) in calls.iter().enumerate() {
                    pending.push_back(Pending { at: format!("{at}.tool_calls[{j}]"), id: id.clone(), name: call.name.clone() });
                }
                msg.tool_calls = calls.into_iter().map(|(_, c)| c).collect();
            }
            Role::Tool => {
                if pending.is_empty() {
                    let why = match prev {
                        Some(Role::Tool) => "every call before it is already answered",
                        Some(Role::Assistant) => "the assistant message before it has no `tool_calls`",
                        _ => "it does not follow an assistant message with `tool_calls`",
                    };
                    return Err(field_err(format_args!("{at}.role"), format_args!("a tool message without a call: {why}")));
                }
                let call_id = optional_str(m.get("tool_call_id"), &format!("{at}.tool_call_id"))?;
                let k = match &call_id {
                    Some(cid) => pending.iter().position(|p| p.id.as_deref() == Some(cid)).ok_or_else(|| {
                        let open: Vec<String> = pending.iter().filter_map(|p| p.id.clone()).collect();
                        field_err(format_args!("{at}.tool_call_id"), format_args!("`{cid}` answers no open call (open: {})", list_or_none(&open)))
                    })?,
                    None => 0,
                };
                let Some(p) = pending.remove(k) else { return Err(field_err(&at, "no open call")) };
                let name = optional_str(m.get("name"), &format!("{at}.name"))?;
                if let Some(n) = &name {
                    if n != &p.name {
                        return Err(field_err(format_args!("{at}.name"), format_args!("`{n}`, but the call it answers ({}) is `{}`", p.at, p.name)));
                    }
                }
                msg.name = Some(p.name);
            }
        }
        out.push(msg);
    }
    if !trained.contains(&true) {
        return Err(field_err("messages", "no assistant message to train on (none, or all with weight 0)"));
    }
    Ok((out, trained))
}

fn role_name(r: Role) -> &'static str {
    match r {
        Role::System => "a system message",
        Role::User => "a user message",
        Role::Assistant => "an assistant message",
        Role::Tool => "a tool message",
    }
}

fn list_or_none(v: &[String]) -> String {
    if v.is_empty() {
        "none with an id".into()
    } else {
        v.join(", ")
    }
}

/// Renders checked rows with one model's template (see the module docs).
pub struct ChatRenderer<'m> {
    model: &'m LoadedModel,
    form: ChatForm,
    /// The text of every end-of-turn token, with its id.
    stops: Vec<(String, u32)>,
}

impl<'m> ChatRenderer<'m> {
    pub fn new(model: &'m LoadedModel) -> Self {
        let tok = &model.tokenizer;
        let stops = tok.stop_ids().iter().filter_map(|&id| tok.id_to_token(id).map(|t| (t, id))).collect();
        ChatRenderer { model, form: ChatForm::of(model), stops }
    }

    /// One line for each thing some row has that the template does not render, saying how it is written instead.
    pub fn notes(&self, convs: &[&Conversation]) -> Vec<String> {
        self.form.notes(convs.iter().map(|c| (c.messages.as_slice(), c.tools.as_slice())))
    }

    /// Token ids and loss mask of one row, as `filter` would have written it had the model produced the assistant
    /// turns itself.
    pub fn render(&self, c: &Conversation) -> Result<BuiltRow, String> {
        let (msgs, tools, shift) = self.form.template_view(&c.messages, &c.tools);
        let tok = &self.model.tokenizer;
        let encode = |segments: &[(&str, bool)], what: &str| tok.encode_segments(segments).map_err(|e| format!("tokenizing {what}: {e}"));
        let (mut ids, mut mask, mut stop_turn_ends) = (Vec::new(), Vec::new(), Vec::new());
        let mut seen = String::new();
        for (k, m) in c.messages.iter().enumerate().filter(|&(k, _)| c.trained[k]) {
            let i = k + shift;
            let render = |n: usize, prompt: bool| {
                self.model.render_chat_segments(&msgs[..n], tools, prompt).map_err(|e| format!("messages[{k}]: rendering the conversation up to it: {e}"))
            };
            let prompt = render(i, true)?;
            let prompt_text: String = prompt.iter().map(|(s, _)| s.as_str()).collect();
            if !prompt_text.starts_with(&seen) {
                return Err(format!(
                    "messages[{k}]: the chat template renders the earlier turns differently once this turn follows them, so the row \
                     cannot be trained turn by turn as the model generates (split the row at this message)"
                ));
            }
            ids.extend(encode(&segments_between(&prompt, seen.len(), prompt_text.len()), "the prompt")?);
            mask.resize(ids.len(), 0);
            let full = render(i + 1, false)?;
            let full_text: String = full.iter().map(|(s, _)| s.as_str()).collect();
            if !full_text.starts_with(&prompt_text) {
                return Err(format!("messages[{k}]: the chat template does not render the assistant message where its generation prompt ends"));
            }
            let end = self.turn_end(&full, prompt_text.len()).ok_or_else(|| {
                let names: Vec<&str> = self.stops.iter().map(|(s, _)| s.as_str()).collect();
                format!("messages[{k}]: the chat template writes no end-of-turn token ({}) after the assistant message", names.join(", "))
            })?;
            let turn = encode(&segments_between(&full, prompt_text.len(), end), "an assistant message")?;
            if !turn.last().is_some_and(|&id| tok.is_stop(id)) {
                return Err(format!("messages[{k}]: the assistant turn does not tokenize to a final end-of-turn token"));
            }
            ids.extend(turn);
            mask.resize(ids.len(), 1);
            stop_turn_ends.push(ids.len() - 1);
            seen = full_text[..end].to_string();
            debug_assert_eq!(m.role, Role::Assistant);
        }
        let row = DatasetRow {
            id: c.id.clone(),
            suite: "chat".into(),
            difficulty: 0,
            messages: weighted(dataset_messages(&c.messages), &c.trained),
            tools: c.tools.clone(),
            token_ids: ids,
            loss_mask: mask.clone(),
        };
        Ok(BuiltRow { row, produced: mask, stop_turn_ends })
    }

    /// The byte just past the first end-of-turn token that the template itself writes at or after `from` (a token
    /// spelled inside a message's content is text, not an end of turn).
    fn turn_end(&self, segments: &[(String, bool)], from: usize) -> Option<usize> {
        let mut at = 0;
        for (s, trusted) in segments {
            let start = from.max(at);
            if *trusted && start < at + s.len() {
                let hay = &s[start - at..];
                let hit = self.stops.iter().filter_map(|(t, _)| hay.find(t.as_str()).map(|p| p + t.len())).min();
                if let Some(p) = hit {
                    return Some(start + p);
                }
            }
            at += s.len();
        }
        None
    }
}

/// Messages in the dataset form with `"weight": 0` on the assistant messages that are not trained.
pub fn weighted(mut messages: Vec<Value>, trained: &[bool]) -> Vec<Value> {
    for (v, &t) in messages.iter_mut().zip(trained) {
        if v["role"] == "assistant" && !t {
            v["weight"] = json!(0);
        }
    }
    messages
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::ToolCall;

    fn conv(v: Value) -> Result<Conversation, String> {
        let Value::Object(object) = v else { panic!("not an object") };
        parse_conversation(Path::new("data/chat.jsonl"), &ChatLine { at: RowAt::Line(7), object }).map_err(|e| e.to_string())
    }

    fn calc() -> Value {
        json!([{"type": "function", "function": {"name": "calc", "parameters": {"type": "object", "properties": {"expr": {"type": "string"}}}}}])
    }

    #[test]
    fn accepts_the_openai_form_and_normalises_it() {
        let c = conv(json!({"tools": calc(), "messages": [
            {"role": "system", "content": "s"},
            {"role": "user", "content": [{"type": "text", "text": "What is "}, {"type": "text", "text": "2+2?"}]},
            {"role": "assistant", "content": null, "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "calc", "arguments": "{\"expr\": \"2+2\"}"}}]},
            {"role": "tool", "tool_call_id": "c1", "content": "4"},
            {"role": "assistant", "content": "4"}
        ]}))
        .unwrap();
        assert_eq!(c.id, "chat.jsonl:7");
        assert_eq!(c.messages[1].content, "What is 2+2?");
        assert_eq!(c.messages[2].tool_calls, vec![ToolCall::new("calc", json!({"expr": "2+2"}))]);
        assert_eq!(c.messages[3].name.as_deref(), Some("calc"));
        // Bare function specs and bare calls, tools as a JSON string.
        let c = conv(json!({"id": 3, "tools": "[{\"name\": \"calc\", \"parameters\": {}}]", "messages": [
            {"role": "user", "content": "q"}, {"role": "assistant", "tool_calls": [{"name": "calc", "arguments": {}}]}
        ]}))
        .unwrap();
        assert_eq!((c.id.as_str(), tool_name(&c.tools[0])), ("3", Some("calc")));
    }

    #[test]
    fn bad_rows_name_file_line_and_field() {
        let cases = [
            (json!({"messages": [{"role": "assistant", "content": "a"}]}), "field `messages[0].role`: an assistant message as the first message"),
            (
                json!({"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}, {"role": "assistant", "content": "c"}]}),
                "messages[1].role`: a user message right after another user message",
            ),
            (
                json!({"messages": [{"role": "user", "content": "a"}, {"role": "system", "content": "b"}]}),
                "messages[1].role`: a system message after the first message",
            ),
            (json!({"messages": [{"role": "user", "content": "a"}, {"role": "tool", "content": "4"}]}), "messages[1].role`: a tool message without a call"),
            (
                json!({"tools": calc(), "messages": [{"role": "user", "content": "a"}, {"role": "assistant", "tool_calls": [{"function": {"name": "calc", "arguments": {}}}]}, {"role": "tool", "content": "4"}, {"role": "tool", "content": "5"}]}),
                "messages[3].role`: a tool message without a call: every call before it is already answered",
            ),
            (
                json!({"tools": calc(), "messages": [{"role": "user", "content": "a"}, {"role": "assistant", "tool_calls": [{"function": {"name": "search", "arguments": {}}}]}]}),
                "field `messages[1].tool_calls[0].function.name`: `search` names no declared tool (declared: calc)",
            ),
            (
                json!({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "tool_calls": [{"function": {"name": "calc", "arguments": {}}}]}]}),
                "`calc` names no declared tool (the row declares no `tools`)",
            ),
            (
                json!({"tools": calc(), "messages": [{"role": "user", "content": "a"}, {"role": "assistant", "tool_calls": [{"id": "x", "function": {"name": "calc"}}]}, {"role": "user", "content": "b"}]}),
                "messages[2].role`: a user message before the tool message that answers `calc` (messages[1].tool_calls[0])",
            ),
            (
                json!({"tools": calc(), "messages": [{"role": "user", "content": "a"}, {"role": "assistant", "tool_calls": [{"id": "x", "function": {"name": "calc"}}]}, {"role": "tool", "tool_call_id": "y", "content": "1"}]}),
                "messages[2].tool_call_id`: `y` answers no open call (open: x)",
            ),
            (
                json!({"tools": calc(), "messages": [{"role": "user", "content": "a"}, {"role": "assistant", "tool_calls": [{"function": {"name": "calc", "arguments": "2+2"}}]}]}),
                "messages[1].tool_calls[0].function.arguments`: a string that does not hold a JSON object",
            ),
            (json!({"messages": [{"role": "developer", "content": "a"}]}), "messages[0].role`: `developer` (expected system, user, assistant or tool)"),
            (json!({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]}), "messages[0].content[0]`: a `image_url` part"),
            (json!({"messages": [{"role": "user", "content": "a"}]}), "field `messages`: no assistant message"),
            (
                json!({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b", "weight": 0}]}),
                "field `messages`: no assistant message to train on",
            ),
            (json!({"messages": [{"role": "user", "content": "a", "weight": 1}]}), "field `messages[0].weight`"),
            (json!({"prompt": "a", "completion": "b"}), "missing field `messages`"),
            (json!({"tools": [{"type": "function"}], "messages": []}), "field `tools[0]`"),
        ];
        for (row, want) in cases {
            let got = conv(row.clone()).unwrap_err();
            assert!(got.starts_with("data/chat.jsonl:7: "), "{got}");
            assert!(got.contains(want), "{row}\n  got:  {got}\n  want: {want}");
        }
    }
}
