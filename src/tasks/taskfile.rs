//! User task files (tasks/*.jsonl): loading with validation, so that a bad task fails with file, line and
//! field before any model runs. Tools may be given by name (`"calculator"`), which expands to the built-in
//! spec, or as full JSON-schema function specs.
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::data::jsonl::{read_jsonl, JsonlError, ReadMode, SkippedLine};
use crate::data::{Expected, Matcher, Task};
use crate::tasks::suites::{self, qa::builtin_spec};
use crate::tools::toolcall::tool_name;

#[derive(Debug, thiserror::Error)]
pub enum TaskFileError {
    #[error(transparent)]
    Jsonl(#[from] JsonlError),
    #[error("{}:{line}: field `{field}`: {message}", path.display())]
    Invalid { path: PathBuf, line: usize, field: String, message: String },
}

/// A validation failure: the offending field (a path such as `expected.calls[0].name`) and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

fn bad(field: impl Into<String>, message: impl Into<String>) -> FieldError {
    FieldError { field: field.into(), message: message.into() }
}

/// Reads and validates every task of a file; ids must be unique within the file.
pub fn load_tasks(path: &Path) -> Result<Vec<Task>, TaskFileError> {
    load_tasks_with(path, ReadMode::Strict).map(|(tasks, _)| tasks)
}

/// Like `load_tasks`; with `ReadMode::SkipInvalid` a bad line (JSON, a field, a duplicate id) is skipped and
/// returned with its reason instead of failing the whole file.
pub fn load_tasks_with(path: &Path, mode: ReadMode) -> Result<(Vec<Task>, Vec<SkippedLine>), TaskFileError> {
    load_numbered(path, mode).map(|(tasks, skipped)| (tasks.into_iter().map(|(_, t)| t).collect(), skipped))
}

/// Every task of a file with its line number (strict: the first bad line is the error).
pub fn load_tasks_numbered(path: &Path) -> Result<Vec<(usize, Task)>, TaskFileError> {
    load_numbered(path, ReadMode::Strict).map(|(tasks, _)| tasks)
}

/// Tasks with their line numbers, and the lines skipped.
type Numbered = (Vec<(usize, Task)>, Vec<SkippedLine>);

fn load_numbered(path: &Path, mode: ReadMode) -> Result<Numbered, TaskFileError> {
    let read = read_jsonl::<Task>(path, mode)?;
    let mut skipped = read.skipped;
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut tasks = Vec::with_capacity(read.items.len());
    for (line, mut task) in read.items {
        let checked = validate_task(&mut task).and_then(|()| match seen.get(&task.id) {
            Some(first) => Err(bad("id", format!("duplicate id `{}` (first on line {first})", task.id))),
            None => Ok(()),
        });
        match checked {
            Ok(()) => {
                seen.insert(task.id.clone(), line);
                tasks.push((line, task));
            }
            Err(e) if mode == ReadMode::SkipInvalid => skipped.push(SkippedLine { line, message: format!("field `{}`: {}", e.field, e.message) }),
            Err(e) => return Err(TaskFileError::Invalid { path: path.to_path_buf(), line, field: e.field, message: e.message }),
        }
    }
    skipped.sort_by_key(|s| s.line);
    Ok((tasks, skipped))
}

/// Checks a task against its suite and expands tools given by name. Also used on generated tasks in tests.
pub fn validate_task(task: &mut Task) -> Result<(), FieldError> {
    let suite = suites::get(&task.suite).map_err(|e| bad("suite", e.to_string()))?;
    if task.id.trim().is_empty() {
        return Err(bad("id", "must not be empty"));
    }
    let env = super::env::env_of(task).is_some();
    if env != (suite.name() == "env") {
        return Err(bad(
            if env { "suite" } else { "data" },
            "environment tasks have suite `env` and data `{\"kind\": \"env\", \"env\": NAME, \"seed\": N, \"game\": ...}`",
        ));
    }
    if env && !matches!(task.expected, Expected::Reward { .. } | Expected::Scorer(_)) {
        return Err(bad("expected", "an environment task is judged by the environment's reward (`{\"kind\": \"reward\"}`) or a scorer"));
    }
    if !env && matches!(task.expected, Expected::Reward { .. }) {
        return Err(bad("expected", "only environment tasks have a reward to judge by"));
    }
    if env {
        // The instruction may be empty (the first observation says what to do); tools come from `reset`.
        if !task.tools.is_empty() {
            return Err(bad("tools", "an environment task's tools are the ones its environment offers at reset; leave this empty"));
        }
    } else if task.instruction.trim().is_empty() {
        return Err(bad("instruction", "must not be empty"));
    }
    if task.difficulty == 0 {
        return Err(bad("difficulty", "must be at least 1"));
    }
    if task.max_turns == 0 {
        return Err(bad("max_turns", "must be at least 1"));
    }
    if env {
        return validate_expected(task, &BTreeSet::new());
    }
    let mcp = super::mcp::server_of(task).is_some();
    if mcp != (suite.name() == "mcp") {
        return Err(bad(if mcp { "suite" } else { "data" }, "MCP tasks have suite `mcp` and data `{\"kind\": \"mcp\", \"server\": NAME}`"));
    }
    if mcp {
        // Tools are the server's (all of them, or those named here), resolved when the run starts the server.
        for (i, tool) in task.tools.iter().enumerate() {
            if tool.as_str().is_none_or(|n| n.trim().is_empty()) {
                return Err(bad(format!("tools[{i}]"), "an MCP task names its server's tools by name (or lists none to offer all)"));
            }
        }
        return validate_expected(task, &task.tools.iter().filter_map(|t| t.as_str().map(str::to_string)).collect());
    }
    let mut names = BTreeSet::new();
    for (i, tool) in task.tools.iter_mut().enumerate() {
        let field = format!("tools[{i}]");
        if let Value::String(name) = tool {
            *tool = builtin_spec(name)
                .or_else(|| suite.tools(task.difficulty.max(1)).into_iter().find(|t| tool_name(t) == Some(name.as_str())))
                .ok_or_else(|| bad(&field, format!("unknown built-in tool `{name}`")))?;
        }
        if tool.get("type").and_then(Value::as_str) != Some("function") {
            return Err(bad(&field, "must be {\"type\": \"function\", \"function\": {...}} or a built-in tool name"));
        }
        let name = tool_name(tool).filter(|n| !n.trim().is_empty()).ok_or_else(|| bad(format!("{field}.function.name"), "missing"))?;
        if let Some(p) = tool.pointer("/function/parameters") {
            if !p.is_object() {
                return Err(bad(format!("{field}.function.parameters"), "must be a JSON schema object"));
            }
            crate::tools::schema::compile(p).map_err(|e| bad(format!("{field}.function.parameters"), e))?;
        }
        if let Some(allowed) = suite.tool_names() {
            if !allowed.contains(&name) {
                return Err(bad(&field, format!("unknown tool `{name}` for suite `{}` (available: {})", suite.name(), allowed.join(", "))));
            }
        }
        if !names.insert(name.to_string()) {
            return Err(bad(&field, format!("duplicate tool `{name}`")));
        }
    }
    validate_expected(task, &names)?;
    let sandbox = suite.sandbox(task).map_err(|e| bad("data", e.to_string()))?;
    if matches!(task.expected, Expected::State { .. }) && sandbox.state().is_none() {
        return Err(bad("expected", format!("suite `{}` has no state to compare with", suite.name())));
    }
    Ok(())
}

fn validate_expected(task: &Task, tools: &BTreeSet<String>) -> Result<(), FieldError> {
    let check_answer = |field: &str, spec: &crate::data::AnswerSpec| -> Result<(), FieldError> {
        if spec.answer.trim().is_empty() {
            return Err(bad(format!("{field}.answer"), "must not be empty"));
        }
        match spec.matcher {
            Matcher::Number { abs_tol, rel_tol } => {
                if !(abs_tol >= 0.0 && rel_tol >= 0.0) {
                    return Err(bad(format!("{field}.matcher"), "tolerances must be >= 0"));
                }
                for a in std::iter::once(&spec.answer).chain(&spec.aliases) {
                    if crate::tools::verify::numbers_in(a).is_empty() {
                        return Err(bad(format!("{field}.answer"), format!("`{a}` has no number for the number matcher")));
                    }
                }
            }
            Matcher::F1 { threshold } if !(0.0..=1.0).contains(&threshold) => {
                return Err(bad(format!("{field}.matcher.threshold"), "must be in [0, 1]"));
            }
            _ => {}
        }
        Ok(())
    };
    match &task.expected {
        Expected::Scorer(spec) => {
            if spec.command.first().is_none_or(|c| c.trim().is_empty()) {
                return Err(bad("expected.command", "must name the scorer program"));
            }
            if !(0.0..=1.0).contains(&spec.threshold) {
                return Err(bad("expected.threshold", "must be in [0, 1]"));
            }
            Ok(())
        }
        Expected::Reward { threshold } if !(0.0..=1.0).contains(threshold) => Err(bad("expected.threshold", "must be in [0, 1]")),
        Expected::Reward { .. } => Ok(()),
        Expected::Answer(spec) => check_answer("expected", spec),
        Expected::State { answer: Some(spec), .. } => check_answer("expected.answer", spec),
        Expected::State { .. } => Ok(()),
        Expected::Calls { calls } => {
            for (i, c) in calls.iter().enumerate() {
                let field = format!("expected.calls[{i}]");
                if !tools.contains(&c.name) {
                    return Err(bad(format!("{field}.name"), format!("`{}` is not one of the task's tools", c.name)));
                }
                let spec = task.tools.iter().find(|t| tool_name(t) == Some(c.name.as_str()));
                let props = spec.and_then(|s| s.pointer("/function/parameters/properties")).and_then(Value::as_object);
                for (arg, allowed) in &c.arguments {
                    if allowed.is_empty() {
                        return Err(bad(format!("{field}.arguments.{arg}"), "needs at least one allowed value"));
                    }
                    if props.is_some_and(|p| !p.contains_key(arg)) {
                        return Err(bad(format!("{field}.arguments.{arg}"), format!("`{}` has no parameter `{arg}`", c.name)));
                    }
                }
            }
            Ok(())
        }
    }
}
