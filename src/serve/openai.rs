//! OpenAI API shapes: requests into engine jobs, engine events into replies (whole or streamed chunks).
use serde_json::{json, Value};

use super::engine::{Event, Prompt};
use crate::data::chat::{field_err, optional_str, parse_calls, parse_content};
use crate::data::{Message, Role};
use crate::sample::SamplingParams;
use crate::tools::toolcall::{parse_turn, Action};

/// A request error: HTTP status and message.
#[derive(Debug)]
pub struct ApiError(pub u16, pub String);

impl ApiError {
    pub fn bad(msg: impl Into<String>) -> Self {
        ApiError(400, msg.into())
    }
    pub fn body(&self) -> Value {
        let kind = match self.0 {
            401 => "authentication_error",
            404 => "not_found_error",
            400..=499 => "invalid_request_error",
            _ => "server_error",
        };
        json!({"error": {"message": self.1, "type": kind, "code": self.0}})
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Endpoint {
    Completions,
    Chat,
}

/// What the HTTP layer needs besides the job.
pub struct Parsed {
    pub model: String,
    pub prompt: Prompt,
    pub params: SamplingParams,
    pub stream: bool,
    pub logprobs: bool,
    pub token_ids: bool,
    /// Chat requests that offer tools: tool calls in the reply are parsed into `tool_calls`.
    pub tools: bool,
}

fn num<T>(v: &Value, key: &str, default: T, conv: impl Fn(&Value) -> Option<T>) -> Result<T, ApiError> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(default),
        Some(x) => conv(x).ok_or_else(|| ApiError::bad(format!("`{key}`: expected a number, got {x}"))),
    }
}

pub fn parse(ep: Endpoint, v: &Value, default_model: &str) -> Result<Parsed, ApiError> {
    if !v.is_object() {
        return Err(ApiError::bad("the request body must be a JSON object"));
    }
    let model = match v.get("model") {
        None | Some(Value::Null) => default_model.to_string(),
        Some(Value::String(s)) => s.clone(),
        Some(x) => return Err(ApiError::bad(format!("`model`: expected a string, got {x}"))),
    };
    if num(v, "n", 1u64, Value::as_u64)? != 1 {
        return Err(ApiError::bad("`n`: only 1 is supported (send several requests: they are decoded as one batch)"));
    }
    if v.get("echo").and_then(Value::as_bool) == Some(true) {
        return Err(ApiError::bad("`echo` is not supported"));
    }
    let max_key = if ep == Endpoint::Chat && v.get("max_completion_tokens").is_some() { "max_completion_tokens" } else { "max_tokens" };
    let max_tokens = num(v, max_key, if ep == Endpoint::Chat { 1024 } else { 16 }, |x| x.as_u64().map(|n| n as usize))?;
    if max_tokens == 0 {
        return Err(ApiError::bad(format!("`{max_key}` must be at least 1")));
    }
    let temperature = num(v, "temperature", 1.0f32, |x| x.as_f64().map(|f| f as f32))?;
    let top_p = num(v, "top_p", 1.0f32, |x| x.as_f64().map(|f| f as f32))?;
    if !((0.0..=2.0).contains(&temperature) && top_p > 0.0 && top_p <= 1.0) {
        return Err(ApiError::bad("`temperature` must be in [0, 2] and `top_p` in (0, 1]"));
    }
    let top_k = match v.get("top_k").and_then(Value::as_i64) {
        Some(k) if k > 0 => k as usize,
        _ => 0,
    };
    let seed = num(v, "seed", 0u64, |x| x.as_u64().or_else(|| x.as_i64().map(|i| i as u64)))?;
    let stop_strings = match v.get("stop") {
        None | Some(Value::Null) => vec![],
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) => {
            a.iter().map(|s| s.as_str().map(str::to_string).ok_or_else(|| ApiError::bad("`stop`: expected strings"))).collect::<Result<_, _>>()?
        }
        Some(x) => return Err(ApiError::bad(format!("`stop`: expected a string or a list of strings, got {x}"))),
    };
    let params = SamplingParams { temperature, top_k, top_p, seed, max_new_tokens: max_tokens, stop_tokens: vec![], stop_strings };
    let stream = v.get("stream").and_then(Value::as_bool).unwrap_or(false);
    let token_ids = v.get("return_token_ids").and_then(Value::as_bool).unwrap_or(false);
    let (prompt, logprobs, tools) = match ep {
        Endpoint::Completions => {
            let prompt = match v.get("prompt") {
                Some(Value::String(s)) => Prompt::Text(s.clone()),
                Some(Value::Array(a)) if a.len() == 1 && a[0].is_string() => Prompt::Text(a[0].as_str().unwrap_or_default().to_string()),
                Some(Value::Array(a)) if a.len() == 1 && a[0].is_array() => Prompt::Ids(ids(&a[0])?),
                Some(a @ Value::Array(_)) => Prompt::Ids(ids(a)?),
                _ => return Err(ApiError::bad("`prompt`: expected a string or a list of token ids")),
            };
            let lp = !matches!(v.get("logprobs"), None | Some(Value::Null) | Some(Value::Bool(false)));
            (prompt, lp, false)
        }
        Endpoint::Chat => {
            let messages = v.get("messages").and_then(Value::as_array).ok_or_else(|| ApiError::bad("`messages`: expected a list"))?;
            let messages = messages.iter().enumerate().map(|(i, m)| chat_message(i, m)).collect::<Result<Vec<_>, _>>()?;
            let tools = match v.get("tools") {
                None | Some(Value::Null) => Vec::new(),
                Some(Value::Array(t)) => t.clone(),
                Some(x) => return Err(ApiError::bad(format!("`tools`: expected a list, got {x}"))),
            };
            let has_tools = !tools.is_empty();
            (Prompt::Chat { messages, tools }, v.get("logprobs").and_then(Value::as_bool).unwrap_or(false), has_tools)
        }
    };
    Ok(Parsed { model, prompt, params, stream, logprobs, token_ids, tools })
}

fn ids(v: &Value) -> Result<Vec<u32>, ApiError> {
    v.as_array()
        .and_then(|a| a.iter().map(|x| x.as_u64().filter(|&n| n <= u32::MAX as u64).map(|n| n as u32)).collect::<Option<Vec<_>>>())
        .ok_or_else(|| ApiError::bad("`prompt`: expected a list of token ids"))
}

/// One OpenAI message, read as training files read it (`data::chat`); `developer` is `system`. Tools, calls and
/// tool results are given to the template by `rollout::chat_form`, the way the agent's prompts write them where the
/// template cannot.
fn chat_message(i: usize, m: &Value) -> Result<Message, ApiError> {
    let at = format!("messages[{i}]");
    let bad = |e: String| ApiError::bad(e);
    let role = match m.get("role").and_then(Value::as_str) {
        Some("system" | "developer") => Role::System,
        Some("user") => Role::User,
        Some("assistant") => Role::Assistant,
        Some("tool") => Role::Tool,
        Some(r) => return Err(bad(field_err(format_args!("{at}.role"), format_args!("unknown role `{r}`")))),
        None => return Err(bad(field_err(format_args!("{at}.role"), "missing"))),
    };
    let mut out = Message::new(role, parse_content(m.get("content"), &at).map_err(bad)?);
    out.tool_calls = parse_calls(m.get("tool_calls"), &at, None).map_err(bad)?.into_iter().map(|(_, c)| c).collect();
    out.name = optional_str(m.get("name"), &format!("{at}.name")).map_err(bad)?;
    Ok(out)
}

/// A finished generation, gathered from the engine's events.
#[derive(Default)]
pub struct Gathered {
    pub ids: Vec<u32>,
    pub logprobs: Vec<f32>,
    pub pieces: Vec<String>,
    pub text: String,
    pub stopped: bool,
    pub prompt_tokens: usize,
}

impl Gathered {
    /// Adds one event; returns an error event's message.
    pub fn add(&mut self, e: Event) -> Result<bool, String> {
        match e {
            Event::Token { id, logprob, text } => {
                self.ids.push(id);
                self.logprobs.push(logprob);
                self.text.push_str(&text);
                self.pieces.push(text);
                Ok(false)
            }
            Event::Done { stopped, prompt_tokens } => {
                self.stopped = stopped;
                self.prompt_tokens = prompt_tokens;
                Ok(true)
            }
            Event::Error(m) => Err(m),
        }
    }
}

fn usage(g: &Gathered) -> Value {
    json!({"prompt_tokens": g.prompt_tokens, "completion_tokens": g.ids.len(), "total_tokens": g.prompt_tokens + g.ids.len()})
}

fn completion_logprobs(g: &Gathered) -> Value {
    let mut offset = 0;
    let offsets: Vec<usize> = g
        .pieces
        .iter()
        .map(|p| {
            let at = offset;
            offset += p.len();
            at
        })
        .collect();
    json!({"tokens": g.pieces, "token_logprobs": g.logprobs, "top_logprobs": Value::Null, "text_offset": offsets})
}

pub fn finish_reason(stopped: bool, calls: bool) -> &'static str {
    match (stopped, calls) {
        (_, true) => "tool_calls",
        (true, _) => "stop",
        (false, _) => "length",
    }
}

/// The assistant message of a chat reply: tool calls parsed from the text when tools were offered.
pub fn assistant_message(text: &str, tools: bool) -> (Value, bool) {
    if tools {
        if let Ok(Action::Calls(calls)) = parse_turn(text) {
            let calls: Vec<Value> = calls
                .iter()
                .enumerate()
                .map(|(i, c)| json!({"id": format!("call_{i}"), "type": "function", "function": {"name": c.name, "arguments": c.arguments.to_string()}}))
                .collect();
            return (json!({"role": "assistant", "content": Value::Null, "tool_calls": calls}), true);
        }
    }
    (json!({"role": "assistant", "content": text}), false)
}

pub fn reply(ep: Endpoint, p: &Parsed, id: &str, created: u64, g: &Gathered) -> Value {
    match ep {
        Endpoint::Completions => {
            let mut choice = json!({"index": 0, "text": g.text, "finish_reason": finish_reason(g.stopped, false), "logprobs": Value::Null});
            if p.logprobs {
                choice["logprobs"] = completion_logprobs(g);
            }
            if p.token_ids {
                choice["token_ids"] = json!(g.ids);
            }
            json!({"id": id, "object": "text_completion", "created": created, "model": p.model, "choices": [choice], "usage": usage(g)})
        }
        Endpoint::Chat => {
            let (message, calls) = assistant_message(&g.text, p.tools);
            let mut choice = json!({"index": 0, "message": message, "finish_reason": finish_reason(g.stopped, calls), "logprobs": Value::Null});
            if p.logprobs {
                let content: Vec<Value> =
                    g.pieces.iter().zip(&g.logprobs).map(|(t, l)| json!({"token": t, "logprob": l, "bytes": t.as_bytes(), "top_logprobs": []})).collect();
                choice["logprobs"] = json!({"content": content});
            }
            if p.token_ids {
                choice["token_ids"] = json!(g.ids);
            }
            json!({"id": id, "object": "chat.completion", "created": created, "model": p.model, "choices": [choice], "usage": usage(g)})
        }
    }
}

/// One streamed chunk carrying `text` (and the finish reason on the last one).
pub fn chunk(ep: Endpoint, model: &str, id: &str, created: u64, text: Option<&str>, delta: Option<Value>, finish: Option<&str>) -> Value {
    match ep {
        Endpoint::Completions => json!({"id": id, "object": "text_completion", "created": created, "model": model,
            "choices": [{"index": 0, "text": text.unwrap_or(""), "finish_reason": finish, "logprobs": Value::Null}]}),
        Endpoint::Chat => json!({"id": id, "object": "chat.completion.chunk", "created": created, "model": model,
            "choices": [{"index": 0, "delta": delta.unwrap_or_else(|| json!({"content": text.unwrap_or("")})), "finish_reason": finish, "logprobs": Value::Null}]}),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::ToolCall;

    #[test]
    fn a_tool_call_in_the_text_becomes_structured_tool_calls() {
        let text = "<tool_call>\n{\"name\": \"calculator\", \"arguments\": {\"expression\": \"2+2\"}}\n</tool_call>";
        let (m, calls) = assistant_message(text, true);
        assert!(calls);
        assert_eq!(m["content"], Value::Null);
        assert_eq!(m["tool_calls"][0]["function"]["name"], json!("calculator"));
        let args: Value = serde_json::from_str(m["tool_calls"][0]["function"]["arguments"].as_str().unwrap()).unwrap();
        assert_eq!(args, json!({"expression": "2+2"}));
        // Without tools offered, or for plain text, the text is the content.
        assert_eq!(assistant_message(text, false).0["content"], json!(text));
        assert_eq!(assistant_message("Answer: 4", true), (json!({"role": "assistant", "content": "Answer: 4"}), false));
    }

    #[test]
    fn openai_messages_are_read_field_by_field() {
        let m = json!({"role": "assistant", "content": null, "tool_calls": [{"id": "c0", "type": "function", "function": {"name": "calculator", "arguments": "{\"expression\": \"2+2\"}"}}]});
        let out = chat_message(0, &m).unwrap();
        assert_eq!((out.content.as_str(), out.tool_calls.clone()), ("", vec![ToolCall::new("calculator", json!({"expression": "2+2"}))]));
        let tool = chat_message(1, &json!({"role": "tool", "tool_call_id": "c0", "name": "calculator", "content": "4"})).unwrap();
        assert_eq!((tool.role, tool.content.as_str(), tool.name.as_deref()), (Role::Tool, "4", Some("calculator")));
        assert!(chat_message(2, &json!({"role": "wizard", "content": "x"})).unwrap_err().1.contains("messages[2].role"));
        let bad = chat_message(3, &json!({"role": "assistant", "tool_calls": [{"function": {"name": "f", "arguments": "{oops"}}]}));
        assert!(bad.unwrap_err().1.contains("messages[3].tool_calls[0].function.arguments"));
    }

    #[test]
    fn requests_are_checked_field_by_field() {
        let p = parse(Endpoint::Completions, &json!({"prompt": [1, 2], "max_tokens": 3, "temperature": 0.5, "stop": "x"}), "m").unwrap();
        assert_eq!((p.model.as_str(), p.params.max_new_tokens, p.params.stop_strings.clone()), ("m", 3, vec!["x".to_string()]));
        assert!(matches!(p.prompt, Prompt::Ids(ref ids) if ids == &[1, 2]));
        for (body, field) in [
            (json!({"prompt": "a", "n": 2}), "`n`"),
            (json!({"prompt": "a", "temperature": "hot"}), "`temperature`"),
            (json!({"prompt": "a", "max_tokens": 0}), "`max_tokens`"),
            (json!({"prompt": {"a": 1}}), "`prompt`"),
            (json!({"prompt": "a", "stop": 3}), "`stop`"),
        ] {
            let e = parse(Endpoint::Completions, &body, "m").err().expect("an error");
            assert!(e.1.contains(field), "{body}: {}", e.1);
        }
    }
}
