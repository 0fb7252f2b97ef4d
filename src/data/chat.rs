//! One message of a chat in the OpenAI form, read part by part: its text content and its tool calls. Training
//! files (`distil::chat`) and `serve` requests read messages the same way, and errors name the field.
use serde_json::{json, Map, Value};

use super::ToolCall;

/// `field `{field}`: {msg}`, the form every error about a chat row's field takes.
pub fn field_err(field: impl std::fmt::Display, msg: impl std::fmt::Display) -> String {
    format!("field `{field}`: {msg}")
}

pub fn optional_str(v: Option<&Value>, field: &str) -> Result<Option<String>, String> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(field_err(field, "expected a string")),
    }
}

/// `content`: a string, null (an assistant message that only calls tools), or a list of text parts (OpenAI's form),
/// joined.
pub fn parse_content(v: Option<&Value>, at: &str) -> Result<String, String> {
    match v {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Array(parts)) => {
            let mut s = String::new();
            for (k, p) in parts.iter().enumerate() {
                match (p.get("type").and_then(Value::as_str), p.get("text").and_then(Value::as_str)) {
                    (Some("text") | None, Some(t)) => s.push_str(t),
                    (Some(kind), _) => {
                        return Err(field_err(format_args!("{at}.content[{k}]"), format_args!("a `{kind}` part; only text parts are supported")))
                    }
                    (None, None) => return Err(field_err(format_args!("{at}.content[{k}]"), "expected {\"type\": \"text\", \"text\": ...}")),
                }
            }
            Ok(s)
        }
        Some(_) => Err(field_err(format_args!("{at}.content"), "expected a string, null or a list of text parts")),
    }
}

/// `tool_calls`: OpenAI's `{"id", "type": "function", "function": {"name", "arguments"}}` or a bare `{"name",
/// "arguments"}`; `arguments` an object or a string holding one (as the OpenAI API sends it).
pub fn parse_calls(v: Option<&Value>, at: &str, declared: Option<&[&str]>) -> Result<Vec<(Option<String>, ToolCall)>, String> {
    let list = match v {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(a)) => a,
        Some(_) => return Err(field_err(format_args!("{at}.tool_calls"), "expected an array")),
    };
    let mut out = Vec::with_capacity(list.len());
    for (j, c) in list.iter().enumerate() {
        let here = format!("{at}.tool_calls[{j}]");
        let Value::Object(c) = c else { return Err(field_err(&here, "expected an object")) };
        if let Some(t) = c.get("type").and_then(Value::as_str).filter(|t| *t != "function") {
            return Err(field_err(format_args!("{here}.type"), format_args!("`{t}` (only `function` calls are supported)")));
        }
        let (f, fat): (&Map<String, Value>, String) = match c.get("function") {
            Some(Value::Object(f)) => (f, format!("{here}.function")),
            Some(_) => return Err(field_err(format_args!("{here}.function"), "expected an object")),
            None => (c, here.clone()),
        };
        let name = f.get("name").and_then(Value::as_str).ok_or_else(|| field_err(format_args!("{fat}.name"), "missing or not a string"))?;
        if let Some(declared) = declared.filter(|d| !d.contains(&name)) {
            let why = if declared.is_empty() { "the row declares no `tools`".to_string() } else { format!("declared: {}", declared.join(", ")) };
            return Err(field_err(format_args!("{fat}.name"), format_args!("`{name}` names no declared tool ({why})")));
        }
        let arguments = match f.get("arguments") {
            None | Some(Value::Null) => json!({}),
            Some(Value::Object(o)) => Value::Object(o.clone()),
            Some(Value::String(s)) if s.trim().is_empty() => json!({}),
            Some(Value::String(s)) => match serde_json::from_str(s) {
                Ok(Value::Object(o)) => Value::Object(o),
                _ => return Err(field_err(format_args!("{fat}.arguments"), "a string that does not hold a JSON object")),
            },
            Some(_) => return Err(field_err(format_args!("{fat}.arguments"), "expected an object or a string holding one")),
        };
        let id = optional_str(c.get("id"), &format!("{here}.id"))?;
        out.push((id, ToolCall::new(name, arguments)));
    }
    Ok(out)
}
