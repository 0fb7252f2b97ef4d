//! Chat templates: the model's own Jinja template, rendered as Hugging Face transformers renders it.
//!
//! A model was trained on the exact bytes its template produces, so the goal is byte equality with
//! `tokenizer.apply_chat_template(..., tokenize=False)`, not a prettier prompt. transformers compiles
//! templates in `ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
//! extensions=[loopcontrols])` with Jinja's default `keep_trailing_newline=False`, adds `raise_exception`
//! and `strftime_now`, and replaces `tojson` with `json.dumps(x, ensure_ascii=False, ...)`; minijinja is set
//! up the same way here. Values print the Python way (`None`, `True`, `['a']`) because templates print them.
//!
//! Known gaps, checked against jinja2 3.1.6: object keys reach the template sorted, not in the caller's
//! order, unless serde_json and minijinja are built with their `preserve_order` features (a tool spec
//! rendered with `tojson` then differs from transformers unless its keys are already sorted); Python `%`
//! string formatting is an error; tuples print as lists.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use minijinja::value::{Kwargs, ValueKind};
use minijinja::{Environment, Error, ErrorKind, Output, State, Value};
use serde_json::Value as JsonValue;

const TEMPLATE_NAME: &str = "chat_template";

/// ChatML with Hermes-style tools, for models that ship no template. It is Qwen2.5's template minus the
/// Qwen identity line, so a model that learned Qwen2.5's tool format sees the same bytes.
const CHATML_TEMPLATE: &str = r#"{%- if tools %}
    {{- '<|im_start|>system\n' }}
    {%- if messages and messages[0].role == 'system' %}
        {{- messages[0].content + '\n\n' }}
    {%- endif %}
    {{- '# Tools\n\nYou may call one or more functions to assist with the user query.\n\nYou are provided with function signatures within <tools></tools> XML tags:\n<tools>' }}
    {%- for tool in tools %}
        {{- '\n' + tool | tojson }}
    {%- endfor %}
    {{- '\n</tools>\n\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call><|im_end|>\n' }}
{%- elif messages and messages[0].role == 'system' %}
    {{- '<|im_start|>system\n' + messages[0].content + '<|im_end|>\n' }}
{%- endif %}
{%- for message in messages %}
    {%- if message.role == 'system' and loop.first %}
    {%- elif message.role == 'tool' %}
        {%- if loop.first or messages[loop.index0 - 1].role != 'tool' %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\n<tool_response>\n' }}
        {%- if message.content is string %}
            {{- message.content }}
        {%- else %}
            {{- message.content | tojson }}
        {%- endif %}
        {{- '\n</tool_response>' }}
        {%- if loop.last or messages[loop.index0 + 1].role != 'tool' %}
            {{- '<|im_end|>\n' }}
        {%- endif %}
    {%- elif message.role == 'assistant' and message.tool_calls %}
        {{- '<|im_start|>assistant' }}
        {%- if message.content %}
            {{- '\n' + message.content }}
        {%- endif %}
        {%- for tool_call in message.tool_calls %}
            {%- if tool_call.function is defined %}
                {%- set tool_call = tool_call.function %}
            {%- endif %}
            {{- '\n<tool_call>\n{"name": "' + tool_call.name + '", "arguments": ' }}
            {%- if tool_call.arguments is string %}
                {{- tool_call.arguments }}
            {%- else %}
                {{- tool_call.arguments | tojson }}
            {%- endif %}
            {{- '}\n</tool_call>' }}
        {%- endfor %}
        {{- '<|im_end|>\n' }}
    {%- else %}
        {{- '<|im_start|>' + message.role + '\n' + message.content + '<|im_end|>\n' }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\n' }}
{%- endif %}"#;

thread_local! {
    /// The message of the last `raise_exception` call on this thread. minijinja has no user error kind, so
    /// this is how `render` tells a template's deliberate refusal from an engine error.
    static RAISED: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Why a chat template could not be compiled or rendered.
#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error("chat template does not compile: {0}")]
    Compile(String),
    /// The template refused the conversation with `raise_exception(message)`.
    #[error("chat template raised an exception: {0}")]
    Raised(String),
    #[error("cannot render the chat template: {0}")]
    Render(String),
}

/// A compiled chat template plus the special-token strings it may refer to.
#[derive(Clone)]
pub struct ChatTemplate {
    env: Environment<'static>,
    source: String,
    bos_token: Option<String>,
    eos_token: Option<String>,
    /// `enable_thinking`, as Qwen3's template reads it: false (the default) renders the generation prompt with an
    /// empty `<think>\n\n</think>\n\n`, so the model answers without a reasoning block.
    thinking: bool,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate")
            .field("source", &self.source)
            .field("bos_token", &self.bos_token)
            .field("eos_token", &self.eos_token)
            .finish_non_exhaustive()
    }
}

impl ChatTemplate {
    /// Compiles `source` now, so a broken template fails at model load rather than mid-episode.
    /// `bos_token`/`eos_token` are left undefined in the template when `None`, as transformers does for
    /// tokens a tokenizer does not have.
    pub fn new(source: &str, bos_token: Option<String>, eos_token: Option<String>) -> Result<Self, TemplateError> {
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_keep_trailing_newline(false);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.set_formatter(python_formatter);
        env.add_filter("tojson", tojson_filter);
        env.add_function("raise_exception", raise_exception);
        env.add_function("strftime_now", |fmt: String| strftime(&fmt, unix_now()));
        env.add_template_owned(TEMPLATE_NAME, source.to_string()).map_err(|e| TemplateError::Compile(describe(&e)))?;
        Ok(Self { env, source: source.to_string(), bos_token, eos_token, thinking: false })
    }

    /// ChatML fallback for models without a template. With `add_generation_prompt` it renders exactly:
    ///
    /// ```text
    /// <|im_start|>system\n{system content}<|im_end|>\n      (only if messages[0] is a system message)
    /// <|im_start|>{role}\n{content}<|im_end|>\n              (each user / assistant / later system turn)
    /// <|im_start|>assistant\n                                (the generation prompt)
    /// ```
    ///
    /// With tools (Hermes style, as Qwen2.5) the system turn becomes
    ///
    /// ```text
    /// <|im_start|>system\n[{system content}\n\n]# Tools\n\nYou may call one or more functions to assist with
    /// the user query.\n\nYou are provided with function signatures within <tools></tools> XML tags:\n<tools>
    /// \n{tool 1 as JSON}\n{tool 2 as JSON}...\n</tools>\n\nFor each function call, return a json object with
    /// function name and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n{"name":
    /// <function-name>, "arguments": <args-json-object>}\n</tool_call><|im_end|>\n
    /// ```
    ///
    /// (one line in reality; tools are `{"type": "function", "function": {...}}` specs printed with Python
    /// `json.dumps` spacing). An assistant turn with `tool_calls` renders as
    /// `<|im_start|>assistant[\n{content}]` then, per call, `\n<tool_call>\n{"name": "{name}", "arguments":
    /// {arguments as JSON, or verbatim if a string}}\n</tool_call>`, then `<|im_end|>\n`. Consecutive `tool`
    /// messages share one user turn: `<|im_start|>user` + per result `\n<tool_response>\n{content}\n
    /// </tool_response>` + `<|im_end|>\n`. Unlike Qwen2.5 there is no default system message.
    pub fn chatml() -> Self {
        match Self::new(CHATML_TEMPLATE, None, None) {
            Ok(template) => template,
            // The source is a constant covered by tests; failing here is a bug in this file, not user input.
            Err(e) => panic!("built-in ChatML template does not compile: {e}"),
        }
    }

    /// Renders a conversation. `messages` are `{"role", "content", ["tool_calls"], ["tool_call_id"],
    /// ["name"]}` objects; `tools` are `{"type": "function", "function": {...}}` specs. `tools: None` is
    /// passed as `none`, as transformers passes `tools=None`.
    pub fn render(&self, messages: &[JsonValue], tools: Option<&[JsonValue]>, add_generation_prompt: bool) -> Result<String, TemplateError> {
        let mut ctx: BTreeMap<&str, Value> = BTreeMap::new();
        ctx.insert("messages", Value::from_serialize(messages));
        ctx.insert("tools", Value::from_serialize(tools));
        ctx.insert("add_generation_prompt", Value::from(add_generation_prompt));
        ctx.insert("enable_thinking", Value::from(self.thinking));
        if let Some(bos) = &self.bos_token {
            ctx.insert("bos_token", Value::from(bos.as_str()));
        }
        if let Some(eos) = &self.eos_token {
            ctx.insert("eos_token", Value::from(eos.as_str()));
        }
        let template = self.env.get_template(TEMPLATE_NAME).map_err(|e| TemplateError::Render(e.to_string()))?;
        RAISED.with(|r| r.borrow_mut().take());
        template.render(ctx).map_err(|e| match RAISED.with(|r| r.borrow_mut().take()) {
            Some(message) => TemplateError::Raised(message),
            None => TemplateError::Render(describe(&e)),
        })
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    /// Renders with `enable_thinking` set to `on` from now on (templates that do not read it are unaffected).
    pub fn set_thinking(&mut self, on: bool) {
        self.thinking = on;
    }
}

/// "syntax error at line 3: unexpected `}`" reads better than minijinja's "(in chat_template:3)" suffix.
fn describe(e: &Error) -> String {
    let mut out = e.kind().to_string();
    if let Some(line) = e.line() {
        let _ = write!(out, " at line {line}");
    }
    if let Some(detail) = e.detail() {
        let _ = write!(out, ": {detail}");
    }
    out
}

fn raise_exception(message: String) -> Result<Value, Error> {
    RAISED.with(|r| *r.borrow_mut() = Some(message.clone()));
    Err(Error::new(ErrorKind::InvalidOperation, message))
}

/// Prints values as Python's `str()` would, since transformers renders with Python objects.
fn python_formatter(out: &mut Output, state: &State, value: &Value) -> Result<(), Error> {
    match value.kind() {
        ValueKind::None | ValueKind::Bool | ValueKind::Seq | ValueKind::Map => {
            out.write_str(&python_repr(value))?;
            Ok(())
        }
        ValueKind::Number if !value.is_integer() => {
            out.write_str(&python_repr(value))?;
            Ok(())
        }
        _ => minijinja::escape_formatter(out, state, value),
    }
}

/// Python `repr()` of a template value (strings quoted the Python way).
fn python_repr(value: &Value) -> String {
    let mut out = String::new();
    write_repr(&mut out, value);
    out
}

fn write_repr(out: &mut String, value: &Value) {
    match value.kind() {
        ValueKind::Undefined | ValueKind::None => out.push_str("None"),
        ValueKind::Bool => out.push_str(if value.is_true() { "True" } else { "False" }),
        ValueKind::Number if value.is_integer() => out.push_str(&value.to_string()),
        ValueKind::Number => out.push_str(&python_float(f64::try_from(value.clone()).unwrap_or(f64::NAN))),
        ValueKind::String => write_python_str(out, value.as_str().unwrap_or_default()),
        ValueKind::Seq | ValueKind::Iterable => {
            out.push('[');
            for (i, item) in value.try_iter().into_iter().flatten().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_repr(out, &item);
            }
            out.push(']');
        }
        ValueKind::Map => {
            out.push('{');
            for (i, key) in value.try_iter().into_iter().flatten().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_repr(out, &key);
                out.push_str(": ");
                write_repr(out, &value.get_item(&key).unwrap_or_default());
            }
            out.push('}');
        }
        _ => out.push_str(&value.to_string()),
    }
}

fn write_python_str(out: &mut String, s: &str) {
    let quote = if s.contains('\'') && !s.contains('"') { '"' } else { '\'' };
    out.push(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push(quote);
}

/// Python's float `repr`: shortest round-trip digits like Rust's `{:?}`, but exponents are written `e+16`
/// and `e-05`.
fn python_float(x: f64) -> String {
    if x.is_nan() {
        return "NaN".into();
    }
    if x.is_infinite() {
        return if x > 0.0 { "Infinity".into() } else { "-Infinity".into() };
    }
    let s = format!("{x:?}");
    match s.split_once('e') {
        Some((mantissa, exp)) => {
            let (sign, digits) = match exp.strip_prefix('-') {
                Some(d) => ('-', d),
                None => ('+', exp),
            };
            format!("{mantissa}e{sign}{digits:0>2}")
        }
        None => s,
    }
}

/// `tojson` as transformers defines it: `json.dumps(x, ensure_ascii=False, indent=None, separators=None,
/// sort_keys=False)`, i.e. `", "` and `": "` separators and non-ASCII left as is. minijinja's own `tojson`
/// is compact and HTML-escapes, which would change the prompt.
fn tojson_filter(value: Value, kwargs: Kwargs) -> Result<Value, Error> {
    let indent: Option<String> = match kwargs.get::<Option<Value>>("indent")? {
        None => None,
        Some(v) if v.is_none() => None,
        Some(v) if v.kind() == ValueKind::Number => Some(" ".repeat(v.as_usize().unwrap_or(0))),
        Some(v) => Some(v.as_str().unwrap_or_default().to_string()),
    };
    let separators: Option<Vec<String>> = kwargs.get("separators")?;
    let (item_sep, key_sep) = match separators.as_deref() {
        Some([item, key]) => (item.clone(), key.clone()),
        Some(_) => return Err(Error::new(ErrorKind::InvalidOperation, "tojson: separators must be two strings")),
        None if indent.is_some() => (",".to_string(), ": ".to_string()),
        None => (", ".to_string(), ": ".to_string()),
    };
    let opts = JsonOpts {
        indent,
        item_sep,
        key_sep,
        sort_keys: kwargs.get::<Option<bool>>("sort_keys")?.unwrap_or(false),
        ensure_ascii: kwargs.get::<Option<bool>>("ensure_ascii")?.unwrap_or(false),
    };
    kwargs.assert_all_used()?;
    let mut out = String::new();
    write_json(&mut out, &value, &opts, 0)?;
    Ok(Value::from_safe_string(out))
}

struct JsonOpts {
    indent: Option<String>,
    item_sep: String,
    key_sep: String,
    sort_keys: bool,
    ensure_ascii: bool,
}

fn write_json(out: &mut String, value: &Value, opts: &JsonOpts, depth: usize) -> Result<(), Error> {
    let newline = |out: &mut String, depth: usize| {
        if let Some(indent) = &opts.indent {
            out.push('\n');
            for _ in 0..depth {
                out.push_str(indent);
            }
        }
    };
    match value.kind() {
        ValueKind::None => out.push_str("null"),
        ValueKind::Bool => out.push_str(if value.is_true() { "true" } else { "false" }),
        ValueKind::Number if value.is_integer() => out.push_str(&value.to_string()),
        ValueKind::Number => out.push_str(&python_float(f64::try_from(value.clone())?)),
        ValueKind::String => write_json_str(out, value.as_str().unwrap_or_default(), opts.ensure_ascii),
        ValueKind::Seq | ValueKind::Iterable => {
            let items: Vec<Value> = value.try_iter()?.collect();
            if items.is_empty() {
                out.push_str("[]");
                return Ok(());
            }
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(&opts.item_sep);
                }
                newline(out, depth + 1);
                write_json(out, item, opts, depth + 1)?;
            }
            newline(out, depth);
            out.push(']');
        }
        ValueKind::Map => {
            let mut entries: Vec<(String, Value)> = Vec::new();
            for key in value.try_iter()? {
                let item = value.get_item(&key)?;
                let key = match key.kind() {
                    ValueKind::String => key.as_str().unwrap_or_default().to_string(),
                    ValueKind::None => "null".into(),
                    ValueKind::Bool => (if key.is_true() { "true" } else { "false" }).into(),
                    _ => key.to_string(),
                };
                entries.push((key, item));
            }
            if opts.sort_keys {
                entries.sort_by(|a, b| a.0.cmp(&b.0));
            }
            if entries.is_empty() {
                out.push_str("{}");
                return Ok(());
            }
            out.push('{');
            for (i, (key, item)) in entries.iter().enumerate() {
                if i > 0 {
                    out.push_str(&opts.item_sep);
                }
                newline(out, depth + 1);
                write_json_str(out, key, opts.ensure_ascii);
                out.push_str(&opts.key_sep);
                write_json(out, item, opts, depth + 1)?;
            }
            newline(out, depth);
            out.push('}');
        }
        kind => return Err(Error::new(ErrorKind::InvalidOperation, format!("tojson: cannot serialize a value of type {kind}"))),
    }
    Ok(())
}

fn write_json_str(out: &mut String, s: &str, ensure_ascii: bool) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 || (ensure_ascii && !c.is_ascii()) => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    let _ = write!(out, "\\u{unit:04x}");
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

fn unix_now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

const MONTHS: [&str; 12] = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October", "November", "December"];
const WEEKDAYS: [&str; 7] = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"];

/// `strftime` in UTC for the directives chat templates use (Llama 3 prints "%d %b %Y"). UTC rather than
/// local time keeps rollouts reproducible across machines; unknown directives are printed as written.
fn strftime(fmt: &str, unix_secs: i64) -> String {
    let days = unix_secs.div_euclid(86_400);
    let secs = unix_secs.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    let (hour, minute, second) = (secs / 3600, secs % 3600 / 60, secs % 60);
    let weekday = (days + 3).rem_euclid(7) as usize; // 1970-01-01 was a Thursday; Monday = 0.
    let day_of_year = days - days_from_civil(year, 1, 1) + 1;
    let month_name = MONTHS[(month - 1) as usize];
    let mut out = String::new();
    let mut chars = fmt.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let _ = match chars.next() {
            Some('Y') => write!(out, "{year}"),
            Some('y') => write!(out, "{:02}", year.rem_euclid(100)),
            Some('m') => write!(out, "{month:02}"),
            Some('d') => write!(out, "{day:02}"),
            Some('e') => write!(out, "{day:>2}"),
            Some('B') => write!(out, "{month_name}"),
            Some('b') | Some('h') => write!(out, "{}", &month_name[..3]),
            Some('A') => write!(out, "{}", WEEKDAYS[weekday]),
            Some('a') => write!(out, "{}", &WEEKDAYS[weekday][..3]),
            Some('H') => write!(out, "{hour:02}"),
            Some('I') => write!(out, "{:02}", if hour % 12 == 0 { 12 } else { hour % 12 }),
            Some('p') => write!(out, "{}", if hour < 12 { "AM" } else { "PM" }),
            Some('M') => write!(out, "{minute:02}"),
            Some('S') => write!(out, "{second:02}"),
            Some('j') => write!(out, "{day_of_year:03}"),
            Some('Z') => write!(out, "UTC"),
            Some('z') => write!(out, "+0000"),
            Some('%') => write!(out, "%"),
            Some(other) => write!(out, "%{other}"),
            None => write!(out, "%"),
        };
    }
    out
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = if month > 2 { month - 3 } else { month + 9 };
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn render_str(source: &str, messages: &[JsonValue]) -> Result<String, TemplateError> {
        ChatTemplate::new(source, Some("<s>".into()), Some("</s>".into()))?.render(messages, None, false)
    }

    #[test]
    fn strftime_matches_python() {
        // Expected strings printed by CPython's datetime.strftime for the same UTC instants.
        let fmt = "%d %b %Y|%Y-%m-%d %H:%M:%S|%A %a %B %j %I %p %y %%";
        assert_eq!(strftime(fmt, 1_721_997_296), "26 Jul 2024|2024-07-26 12:34:56|Friday Fri July 208 12 PM 24 %");
        assert_eq!(strftime(fmt, 951_782_400), "29 Feb 2000|2000-02-29 00:00:00|Tuesday Tue February 060 12 AM 00 %");
    }

    #[test]
    fn tojson_matches_python_json_dumps() {
        let messages = [json!({"a": [1, 2.5, 1e20, 1e-7, "é<\n\"\\\u{1}"], "b": {}})];
        let out = render_str("{{ messages[0] | tojson }}", &messages).unwrap();
        assert_eq!(out, r#"{"a": [1, 2.5, 1e+20, 1e-07, "é<\n\"\\\u0001"], "b": {}}"#);
        let messages = [json!({"a": [1, 2], "b": []})];
        let out = render_str("{{ messages[0] | tojson(indent=2) }}", &messages).unwrap();
        assert_eq!(out, "{\n  \"a\": [\n    1,\n    2\n  ],\n  \"b\": []\n}");
        let out = render_str("{{ 'é' | tojson(ensure_ascii=true) }}", &[]).unwrap();
        assert_eq!(out, r#""\u00e9""#);
    }

    #[test]
    fn values_print_like_python() {
        let out = render_str("{{ none }} {{ true }} {{ 1.0 }} {{ 'a,b'.split(',') }} {{ [\"it's\", none, false] }} {{ {'k': 1} }}", &[]).unwrap();
        assert_eq!(out, r#"None True 1.0 ['a', 'b'] ["it's", None, False] {'k': 1}"#);
    }

    #[test]
    fn python_string_methods_work() {
        let out = render_str("{{ '  x '.strip() }}|{{ 'abc'.startswith('ab') }}|{{ 'A-b'.lower() }}|{{ 'a b'.split()[1] }}", &[]).unwrap();
        assert_eq!(out, "x|True|a-b|b");
    }

    #[test]
    fn whitespace_control_matches_transformers() {
        // trim_blocks + lstrip_blocks, no trailing newline kept.
        let out = render_str("{% if true %}\n  A\n  {% endif %}\nB\n", &[]).unwrap();
        assert_eq!(out, "  A\nB");
    }

    #[test]
    fn loop_controls_work() {
        let src = "{% for x in [1, 2, 3, 4] %}{% if x == 2 %}{% continue %}{% endif %}{% if x == 4 %}{% break %}{% endif %}{{ x }}{% endfor %}";
        assert_eq!(render_str(src, &[]).unwrap(), "13");
    }

    #[test]
    fn special_tokens_are_defined_only_when_known() {
        let src = "{{ bos_token }}|{{ eos_token is defined }}";
        assert_eq!(render_str(src, &[]).unwrap(), "<s>|True");
        let t = ChatTemplate::new(src, None, None).unwrap();
        assert_eq!(t.render(&[], None, false).unwrap(), "|False");
    }

    #[test]
    fn tools_none_is_passed_as_none() {
        let t = ChatTemplate::new("{{ tools is none }}|{{ tools | length if tools is not none }}", None, None).unwrap();
        assert_eq!(t.render(&[], None, false).unwrap(), "True|");
        assert_eq!(t.render(&[], Some(&[json!({})]), false).unwrap(), "False|1");
    }

    #[test]
    fn compile_errors_are_reported() {
        let err = ChatTemplate::new("{% for m in messages %}", None, None).unwrap_err();
        assert!(matches!(err, TemplateError::Compile(_)), "{err:?}");
        assert!(err.to_string().contains("chat template does not compile"), "{err}");
    }

    #[test]
    fn engine_errors_are_not_mistaken_for_raise_exception() {
        let err = render_str("{{ raise_exception('x') if false }}{{ 1 + 'a' }}", &[]).unwrap_err();
        assert!(matches!(err, TemplateError::Render(_)), "{err:?}");
    }

    /// Qwen3's generation prompt: thinking is off unless asked for, as agents render it.
    #[test]
    fn enable_thinking_is_false_unless_set() {
        let src = "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% if enable_thinking is defined and enable_thinking is false %}{{ '<think>\\n\\n</think>\\n\\n' }}{% endif %}{% endif %}";
        let mut t = ChatTemplate::new(src, None, None).unwrap();
        assert_eq!(t.render(&[], None, true).unwrap(), "<|im_start|>assistant\n<think>\n\n</think>\n\n");
        t.set_thinking(true);
        assert_eq!(t.render(&[], None, true).unwrap(), "<|im_start|>assistant\n");
    }
}
