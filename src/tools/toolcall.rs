//! Tool calls in model text: Hermes / Qwen2.5 style rendering and a lenient-but-exact parser.
//!
//! A turn is either calls or a final answer:
//! - calls: one or more `<tool_call>{"name": ..., "arguments": {...}}</tool_call>` blocks (a block may hold a
//!   JSON list of calls; a missing `</tool_call>` at the very end is accepted because stop strings may cut it),
//!   or a bare call object / list of call objects as the whole message. `arguments` may be an object or a JSON
//!   string holding an object; `parameters` is accepted as a synonym. Text around the blocks is ignored.
//! - answer: a message without calls. The answer is the text after the last `Answer:` (any case), or the whole
//!   message when there is no such marker. When a message has both, the calls win and the answer is ignored.
use serde_json::{Map, Value};

pub use crate::data::ToolCall;
use crate::data::{StepError, StepErrorKind};

use super::schema;

pub const CALL_OPEN: &str = "<tool_call>";
pub const CALL_CLOSE: &str = "</tool_call>";

/// What one assistant turn asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Calls(Vec<ToolCall>),
    Answer(String),
}

/// `<tool_call>\n{"name": "...", "arguments": {...}}\n</tool_call>`, with Python `json.dumps` spacing, which
/// is what Hermes-style chat templates produce.
pub fn render_call(call: &ToolCall) -> String {
    let mut obj = Map::new();
    obj.insert("name".into(), Value::String(call.name.clone()));
    obj.insert("arguments".into(), call.arguments.clone());
    // Keys in fixed order: name first, as models have seen it.
    let body = format!("{{\"name\": {}, \"arguments\": {}}}", to_py_json(&obj["name"]), to_py_json(&obj["arguments"]));
    format!("{CALL_OPEN}\n{body}\n{CALL_CLOSE}")
}

pub fn render_calls(calls: &[ToolCall]) -> String {
    calls.iter().map(render_call).collect::<Vec<_>>().join("\n")
}

/// JSON with `", "` and `": "` separators.
pub fn to_py_json(v: &Value) -> String {
    let mut out = Vec::new();
    let mut ser = serde_json::Serializer::with_formatter(&mut out, PyFormatter);
    // Serialising a Value into a Vec cannot fail.
    if serde::Serialize::serialize(v, &mut ser).is_err() {
        return v.to_string();
    }
    String::from_utf8(out).unwrap_or_else(|_| v.to_string())
}

struct PyFormatter;

impl serde_json::ser::Formatter for PyFormatter {
    fn begin_array_value<W: ?Sized + std::io::Write>(&mut self, w: &mut W, first: bool) -> std::io::Result<()> {
        if first {
            Ok(())
        } else {
            w.write_all(b", ")
        }
    }
    fn begin_object_key<W: ?Sized + std::io::Write>(&mut self, w: &mut W, first: bool) -> std::io::Result<()> {
        if first {
            Ok(())
        } else {
            w.write_all(b", ")
        }
    }
    fn begin_object_value<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        w.write_all(b": ")
    }
}

fn malformed(msg: impl Into<String>) -> StepError {
    StepError::new(StepErrorKind::MalformedJson, msg)
}

/// Syntax only: splits a turn into calls or an answer. Tool names and arguments are checked by `check_calls`.
pub fn parse_turn(text: &str) -> Result<Action, StepError> {
    if text.contains(CALL_OPEN) {
        return parse_blocks(text).map(Action::Calls);
    }
    let t = strip_code_fence(text.trim());
    if t.starts_with('{') || t.starts_with('[') {
        match serde_json::from_str::<Value>(t) {
            Ok(v) if looks_like_call(&v) => return calls_from_value(v, 0).map(Action::Calls),
            Ok(_) => {}
            Err(e) if t.contains("\"name\"") => return Err(malformed(format!("the tool call is not valid JSON: {e}"))),
            Err(_) => {}
        }
    }
    match extract_answer(text) {
        Some(a) => Ok(Action::Answer(a)),
        None => Err(StepError::new(StepErrorKind::EmptyMessage, "the message has neither a tool call nor an answer")),
    }
}

/// Parses the turn and checks every call against the offered tools.
pub fn parse_and_check(text: &str, tools: &[Value], max_calls: usize) -> Result<Action, StepError> {
    let action = parse_turn(text)?;
    if let Action::Calls(calls) = &action {
        check_calls(calls, tools, max_calls)?;
    }
    Ok(action)
}

/// The final answer of a message without calls: the text after the last `Answer:`, else the whole text.
pub fn extract_answer(text: &str) -> Option<String> {
    // ASCII lower-casing keeps byte offsets valid for slicing the original.
    let lower = text.to_ascii_lowercase();
    let body = match lower.rfind("answer:") {
        Some(pos) => &text[pos + "answer:".len()..],
        None => text,
    };
    let a = body.trim().trim_matches('*').trim();
    (!a.is_empty()).then(|| a.to_string())
}

fn parse_blocks(text: &str) -> Result<Vec<ToolCall>, StepError> {
    let mut calls = Vec::new();
    let mut rest = text;
    let mut block = 0;
    while let Some(pos) = rest.find(CALL_OPEN) {
        block += 1;
        let body = strip_open_fence(rest[pos + CALL_OPEN.len()..].trim_start());
        let mut stream = serde_json::Deserializer::from_str(body).into_iter::<Value>();
        let value = match stream.next() {
            Some(Ok(v)) => v,
            Some(Err(e)) => return Err(malformed(format!("tool call {block} is not valid JSON: {e}")).at(calls.len())),
            None => return Err(malformed(format!("tool call {block} is empty")).at(calls.len())),
        };
        let tail = body[stream.byte_offset()..].trim_start();
        let tail = tail.strip_prefix("```").map_or(tail, str::trim_start);
        rest = if let Some(after) = tail.strip_prefix(CALL_CLOSE) {
            after
        } else if tail.is_empty() || tail.starts_with(CALL_OPEN) {
            tail
        } else {
            let snippet: String = tail.chars().take(30).collect();
            return Err(malformed(format!("unexpected text after the JSON of tool call {block}: `{snippet}`")).at(calls.len()));
        };
        let first = calls.len();
        calls.extend(calls_from_value(value, first)?);
    }
    if calls.is_empty() {
        return Err(malformed("the <tool_call> block holds an empty list"));
    }
    Ok(calls)
}

fn looks_like_call(v: &Value) -> bool {
    match v {
        Value::Object(o) => o.contains_key("name") || o.contains_key("arguments"),
        Value::Array(items) => !items.is_empty() && items.iter().all(looks_like_call),
        _ => false,
    }
}

fn calls_from_value(v: Value, first_index: usize) -> Result<Vec<ToolCall>, StepError> {
    match v {
        Value::Array(items) => items.into_iter().enumerate().map(|(i, item)| call_from_value(item, first_index + i)).collect(),
        other => Ok(vec![call_from_value(other, first_index)?]),
    }
}

fn call_from_value(v: Value, index: usize) -> Result<ToolCall, StepError> {
    let Value::Object(mut obj) = v else {
        return Err(malformed(format!("a tool call must be a JSON object, got {v}")).at(index));
    };
    let name = match obj.remove("name") {
        Some(Value::String(s)) if !s.trim().is_empty() => s.trim().to_string(),
        _ => return Err(StepError::new(StepErrorKind::MissingName, "the tool call has no \"name\" string").at(index)),
    };
    let arguments = match obj.remove("arguments").or_else(|| obj.remove("parameters")) {
        None | Some(Value::Null) => Value::Object(Map::new()),
        Some(Value::Object(a)) => Value::Object(a),
        Some(Value::String(s)) => match serde_json::from_str::<Value>(&s) {
            Ok(Value::Object(a)) => Value::Object(a),
            _ => return Err(StepError::new(StepErrorKind::BadArguments, format!("\"arguments\" of `{name}` must be a JSON object")).at(index)),
        },
        Some(_) => return Err(StepError::new(StepErrorKind::BadArguments, format!("\"arguments\" of `{name}` must be a JSON object")).at(index)),
    };
    Ok(ToolCall { name, arguments })
}

/// Every call must name an offered tool and pass its parameter schema.
pub fn check_calls(calls: &[ToolCall], tools: &[Value], max_calls: usize) -> Result<(), StepError> {
    if calls.len() > max_calls {
        return Err(StepError::new(StepErrorKind::TooManyCalls, format!("{} tool calls in one message; at most {max_calls} are allowed", calls.len())));
    }
    for (i, call) in calls.iter().enumerate() {
        let Some(spec) = find_tool(tools, &call.name) else {
            let names: Vec<&str> = tools.iter().filter_map(tool_name).collect();
            return Err(StepError::new(StepErrorKind::UnknownTool, format!("unknown tool `{}`; available tools: {}", call.name, names.join(", "))).at(i));
        };
        if let Some(params) = spec.pointer("/function/parameters") {
            schema::validate(&call.arguments, params, "arguments")
                .map_err(|msg| StepError::new(StepErrorKind::SchemaViolation, format!("`{}`: {msg}", call.name)).at(i))?;
        }
    }
    Ok(())
}

pub fn tool_name(spec: &Value) -> Option<&str> {
    spec.pointer("/function/name").and_then(Value::as_str)
}

pub fn find_tool<'a>(tools: &'a [Value], name: &str) -> Option<&'a Value> {
    tools.iter().find(|t| tool_name(t) == Some(name))
}

fn strip_code_fence(t: &str) -> &str {
    let Some(inner) = t.strip_prefix("```") else {
        return t;
    };
    let inner = inner.strip_prefix("json").unwrap_or(inner);
    inner.trim().strip_suffix("```").map_or(inner.trim(), str::trim)
}

fn strip_open_fence(t: &str) -> &str {
    match t.strip_prefix("```") {
        Some(inner) => inner.strip_prefix("json").unwrap_or(inner).trim_start(),
        None => t,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn calc_tools() -> Vec<Value> {
        vec![json!({"type": "function", "function": {"name": "calculator", "description": "d",
            "parameters": {"type": "object", "properties": {"expression": {"type": "string"}},
            "required": ["expression"], "additionalProperties": false}}})]
    }

    #[test]
    fn renders_hermes_style() {
        let c = ToolCall::new("calculator", json!({"expression": "2+3", "n": [1, 2]}));
        assert_eq!(render_call(&c), "<tool_call>\n{\"name\": \"calculator\", \"arguments\": {\"expression\": \"2+3\", \"n\": [1, 2]}}\n</tool_call>");
    }

    #[test]
    fn parses_the_accepted_forms() {
        let one = ToolCall::new("calculator", json!({"expression": "1+1"}));
        let forms = [
            "<tool_call>\n{\"name\": \"calculator\", \"arguments\": {\"expression\": \"1+1\"}}\n</tool_call>",
            "Let me compute.\n<tool_call>{\"name\":\"calculator\",\"arguments\":\"{\\\"expression\\\": \\\"1+1\\\"}\"}</tool_call>",
            "<tool_call>\n{\"name\": \"calculator\", \"arguments\": {\"expression\": \"1+1\"}}",
            "{\"name\": \"calculator\", \"arguments\": {\"expression\": \"1+1\"}}",
            "```json\n{\"name\": \"calculator\", \"parameters\": {\"expression\": \"1+1\"}}\n```",
        ];
        for f in forms {
            assert_eq!(parse_turn(f).unwrap(), Action::Calls(vec![one.clone()]), "{f}");
        }
        let two = "<tool_call>[{\"name\": \"a\", \"arguments\": {}}, {\"name\": \"b\"}]</tool_call>\n<tool_call>{\"name\": \"c\", \"arguments\": {\"x\": 1}}</tool_call>";
        let Action::Calls(calls) = parse_turn(two).unwrap() else { panic!("expected calls") };
        assert_eq!(calls.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(), ["a", "b", "c"]);
        assert_eq!(calls[1].arguments, json!({}));
    }

    #[test]
    fn answers() {
        assert_eq!(parse_turn("The sum is 5.\nAnswer: 5").unwrap(), Action::Answer("5".into()));
        assert_eq!(parse_turn("**Answer:** Paris").unwrap(), Action::Answer("Paris".into()));
        assert_eq!(parse_turn("  42 ").unwrap(), Action::Answer("42".into()));
        assert_eq!(parse_turn("{\"x\": 1}").unwrap(), Action::Answer("{\"x\": 1}".into()));
        assert_eq!(parse_turn("  \n").unwrap_err().kind, StepErrorKind::EmptyMessage);
        assert_eq!(parse_turn("Answer:").unwrap_err().kind, StepErrorKind::EmptyMessage);
    }

    #[test]
    fn structured_errors() {
        let kind = |t: &str| parse_and_check(t, &calc_tools(), 4).unwrap_err().kind;
        assert_eq!(kind("<tool_call>{\"name\": \"calculator\", \"arguments\": {</tool_call>"), StepErrorKind::MalformedJson);
        assert_eq!(kind("<tool_call>{\"name\": \"calculator\"}}</tool_call>"), StepErrorKind::MalformedJson);
        assert_eq!(kind("{\"name\": \"calculator\", \"arguments\": "), StepErrorKind::MalformedJson);
        assert_eq!(kind("<tool_call></tool_call>"), StepErrorKind::MalformedJson);
        assert_eq!(kind("<tool_call>{\"arguments\": {}}</tool_call>"), StepErrorKind::MissingName);
        assert_eq!(kind("<tool_call>{\"name\": \"calculator\", \"arguments\": 3}</tool_call>"), StepErrorKind::BadArguments);
        assert_eq!(kind("<tool_call>{\"name\": \"calculator\", \"arguments\": \"nope\"}</tool_call>"), StepErrorKind::BadArguments);
        assert_eq!(kind("<tool_call>{\"name\": \"search\", \"arguments\": {}}</tool_call>"), StepErrorKind::UnknownTool);
        assert_eq!(kind("<tool_call>{\"name\": \"calculator\", \"arguments\": {}}</tool_call>"), StepErrorKind::SchemaViolation);
        assert_eq!(kind("<tool_call>{\"name\": \"calculator\", \"arguments\": {\"expression\": 7}}</tool_call>"), StepErrorKind::SchemaViolation);
        let many = render_calls(&vec![ToolCall::new("calculator", json!({"expression": "1"})); 5]);
        assert_eq!(kind(&many), StepErrorKind::TooManyCalls);
        let e = parse_and_check(
            "<tool_call>{\"name\": \"calculator\", \"arguments\": {\"expression\": \"1\"}}</tool_call><tool_call>{\"name\": \"x\"}</tool_call>",
            &calc_tools(),
            4,
        )
        .unwrap_err();
        assert_eq!(e.call_index, Some(1));
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        fn json_leaf() -> impl Strategy<Value = Value> {
            prop_oneof![
                Just(Value::Null),
                any::<bool>().prop_map(Value::Bool),
                any::<i64>().prop_map(|n| json!(n)),
                // Eighths are exact in binary, so the float survives printing and parsing.
                (-8000i32..8000).prop_map(|n| json!(f64::from(n) / 8.0)),
                ".{0,20}".prop_map(Value::String),
                Just(json!("</tool_call> <tool_call> {\"name\": \"x\"}")),
            ]
        }

        fn json_value() -> impl Strategy<Value = Value> {
            json_leaf().prop_recursive(3, 24, 4, |inner| {
                prop_oneof![
                    prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                    prop::collection::btree_map("[a-z_]{1,8}", inner, 0..4).prop_map(|m| Value::Object(m.into_iter().collect())),
                ]
            })
        }

        fn call() -> impl Strategy<Value = ToolCall> {
            ("[a-zA-Z_][a-zA-Z0-9_.-]{0,15}", prop::collection::btree_map("[a-z_]{1,8}", json_value(), 0..5))
                .prop_map(|(name, args)| ToolCall::new(name, Value::Object(args.into_iter().collect())))
        }

        proptest! {
            #[test]
            fn render_then_parse_gives_the_same_calls(calls in prop::collection::vec(call(), 1..4), prose in "[a-z .]{0,20}") {
                let text = format!("{prose}\n{}", render_calls(&calls));
                prop_assert_eq!(parse_turn(&text).unwrap(), Action::Calls(calls));
            }

            #[test]
            fn parser_never_panics(text in ".{0,200}") {
                let _ = parse_and_check(&text, &calc_tools(), 4);
            }
        }
    }
}
