//! Suite prompts: system text plus few-shot conversations, loaded from `prompts/<suite>.md` (format in
//! prompts/README.md) or from the copies embedded at build time.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::data::{Message, Role, Task};
use crate::tools::toolcall::{parse_turn, to_py_json, Action, CALL_CLOSE, CALL_OPEN};

#[derive(Debug, thiserror::Error)]
pub enum PromptError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{file}:{line}: {message}")]
    Format { file: String, line: usize, message: String },
    #[error("no prompt for suite `{0}`")]
    Missing(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct SuitePrompt {
    pub system: String,
    pub examples: Vec<Vec<Message>>,
    /// Indices of `=== tool example ===` examples: shown only to tasks that offer every tool they call.
    pub gated: std::collections::BTreeSet<usize>,
}

impl SuitePrompt {
    /// The examples a task offering `tools` sees, in file order.
    pub fn examples_for<'a>(&'a self, tools: &'a [&str]) -> impl Iterator<Item = &'a Vec<Message>> + 'a {
        self.examples.iter().enumerate().filter(move |(i, ex)| !self.gated.contains(i) || example_tools(ex).iter().all(|t| tools.contains(t))).map(|(_, ex)| ex)
    }
}

/// The tools an example's assistant turns call.
fn example_tools(ex: &[Message]) -> Vec<&str> {
    ex.iter().flat_map(|m| m.tool_calls.iter().map(|c| c.name.as_str())).collect()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PromptOptions {
    /// Include the few-shot conversations as earlier turns.
    pub fewshot: bool,
    /// Put the tool specs in the system message (for chat templates that do not render tools themselves).
    pub tools_in_system: bool,
    /// Append privileged context from this source to the system or user message (hinted rollouts); the
    /// trajectory records the text so that training rows can take it out again.
    pub hint: Option<super::hint::HintSpec>,
}

impl Default for PromptOptions {
    fn default() -> Self {
        Self { fewshot: true, tools_in_system: true, hint: None }
    }
}

const EMBEDDED: &[(&str, &str)] = &[
    ("arithmetic", include_str!("../../prompts/arithmetic.md")),
    ("units", include_str!("../../prompts/units.md")),
    ("tables", include_str!("../../prompts/tables.md")),
    ("files", include_str!("../../prompts/files.md")),
    ("search", include_str!("../../prompts/search.md")),
    ("grid", include_str!("../../prompts/grid.md")),
    ("qa", include_str!("../../prompts/qa.md")),
    ("function_call", include_str!("../../prompts/function_call.md")),
    ("mcp", include_str!("../../prompts/mcp.md")),
    ("env", include_str!("../../prompts/env.md")),
];

#[derive(Debug, Clone)]
pub struct Prompts {
    by_suite: BTreeMap<String, SuitePrompt>,
}

impl Prompts {
    /// The prompts compiled into the binary.
    pub fn embedded() -> Result<Self, PromptError> {
        let by_suite = EMBEDDED
            .iter()
            .map(|(suite, text)| Ok((suite.to_string(), parse_prompt(text, &format!("<embedded>/{suite}.md"))?)))
            .collect::<Result<_, PromptError>>()?;
        Ok(Self { by_suite })
    }

    /// `<dir>/<suite>.md` for every suite with an embedded prompt; a missing or malformed file is an error.
    pub fn from_dir(dir: &Path) -> Result<Self, PromptError> {
        let mut by_suite = BTreeMap::new();
        for (suite, _) in EMBEDDED {
            let path = dir.join(format!("{suite}.md"));
            let text = std::fs::read_to_string(&path).map_err(|source| PromptError::Io { path: path.clone(), source })?;
            by_suite.insert(suite.to_string(), parse_prompt(&text, &path.display().to_string())?);
        }
        Ok(Self { by_suite })
    }

    /// Replaces the prompt of `suite` by the prompt file at `path` (same format).
    pub fn with_file(mut self, suite: &str, path: &Path) -> Result<Self, PromptError> {
        let text = std::fs::read_to_string(path).map_err(|source| PromptError::Io { path: path.to_path_buf(), source })?;
        self.by_suite.insert(suite.to_string(), parse_prompt(&text, &path.display().to_string())?);
        Ok(self)
    }

    /// The embedded prompts with some suites' prompts replaced by files (suite -> path).
    pub fn embedded_with<'a>(files: impl IntoIterator<Item = (&'a str, &'a Path)>) -> anyhow::Result<Self> {
        let mut p = Self::embedded()?;
        for (suite, path) in files {
            crate::tasks::suites::get(suite).map_err(|e| anyhow::anyhow!("prompt file {}: {e}", path.display()))?;
            p = p.with_file(suite, path)?;
        }
        Ok(p)
    }

    pub fn get(&self, suite: &str) -> Result<&SuitePrompt, PromptError> {
        self.by_suite.get(suite).ok_or_else(|| PromptError::Missing(suite.to_string()))
    }
}

/// Parses the delimiter format of prompts/README.md.
pub fn parse_prompt(text: &str, file: &str) -> Result<SuitePrompt, PromptError> {
    let err = |line: usize, message: String| PromptError::Format { file: file.to_string(), line, message };
    enum Section {
        Preamble,
        System,
        Example,
    }
    let mut section = Section::Preamble;
    let mut system: Option<Vec<&str>> = None;
    let mut examples: Vec<Vec<Message>> = Vec::new();
    let mut gated = std::collections::BTreeSet::new();
    // The message being read: (role, tool name, lines).
    let mut current: Option<(Role, Option<String>, Vec<&str>)> = None;
    let flush = |current: &mut Option<(Role, Option<String>, Vec<&str>)>, examples: &mut Vec<Vec<Message>>| {
        if let Some((role, name, lines)) = current.take() {
            let mut m = Message::new(role, lines.join("\n").trim().to_string());
            m.name = name;
            if let (Role::Assistant, Ok(Action::Calls(calls))) = (role, parse_turn(&m.content)) {
                m.tool_calls = calls;
            }
            if let Some(ex) = examples.last_mut() {
                ex.push(m);
            }
        }
    };
    for (i, line) in text.lines().enumerate() {
        let line_no = i + 1;
        match line.trim_end() {
            "=== system ===" => {
                flush(&mut current, &mut examples);
                if system.is_some() {
                    return Err(err(line_no, "a second `=== system ===` section".into()));
                }
                system = Some(Vec::new());
                section = Section::System;
            }
            header @ ("=== example ===" | "=== tool example ===") => {
                flush(&mut current, &mut examples);
                if header == "=== tool example ===" {
                    gated.insert(examples.len());
                }
                examples.push(Vec::new());
                section = Section::Example;
            }
            l if l.starts_with("===") => return Err(err(line_no, format!("unknown section `{l}`"))),
            l if l.starts_with(">>>") => {
                if !matches!(section, Section::Example) {
                    return Err(err(line_no, "a `>>>` message outside an `=== example ===` section".into()));
                }
                flush(&mut current, &mut examples);
                let mut words = l[3..].split_whitespace();
                let role = match words.next() {
                    Some("user") => Role::User,
                    Some("assistant") => Role::Assistant,
                    Some("tool") => Role::Tool,
                    other => return Err(err(line_no, format!("unknown role {other:?}; use user, assistant or tool"))),
                };
                current = Some((role, words.next().map(str::to_string), Vec::new()));
            }
            _ => match section {
                Section::Preamble => {}
                Section::System => system.get_or_insert_with(Vec::new).push(line),
                Section::Example => match current.as_mut() {
                    Some((_, _, lines)) => lines.push(line),
                    None if line.trim().is_empty() => {}
                    None => return Err(err(line_no, "text before the first `>>>` message of an example".into())),
                },
            },
        }
    }
    flush(&mut current, &mut examples);
    let system = system.ok_or_else(|| err(text.lines().count(), "no `=== system ===` section".into()))?;
    for (i, ex) in examples.iter().enumerate() {
        if ex.first().map(|m| m.role) != Some(Role::User) || ex.last().map(|m| m.role) != Some(Role::Assistant) {
            return Err(err(0, format!("example {} must start with a user message and end with an assistant message", i + 1)));
        }
    }
    Ok(SuitePrompt { system: system.join("\n").trim().to_string(), examples, gated })
}

/// `<tools>` block with one spec per line, as Hermes-style templates write it.
pub fn tools_block(tools: &[Value]) -> String {
    let lines: Vec<String> = tools.iter().map(to_py_json).collect();
    format!("<tools>\n{}\n</tools>", lines.join("\n"))
}

/// Tools for a conversation without a suite prompt (`serve`, chat rows for training) on a model whose template
/// cannot render them: the `<tools>` block and how to call, in the words of the suites' system prompts.
pub fn tools_system(tools: &[Value]) -> String {
    format!(
        "You can call tools. Available tools:\n{}\nTo call a tool, write:\n{CALL_OPEN}\n{{\"name\": \"tool name\", \"arguments\": {{\"argument\": \"value\"}}}}\n{CALL_CLOSE}\nThen wait for the result.",
        tools_block(tools)
    )
}

/// The conversation an episode starts from: system, few-shot turns (optional), the task's instruction. Returns
/// the messages and how many of them are few-shot turns.
pub fn initial_messages(task: &Task, prompts: &Prompts, opts: PromptOptions) -> Result<(Vec<Message>, usize), PromptError> {
    conversation(task, &task.tools, task.instruction.clone(), prompts, opts)
}

/// `initial_messages` with the tools and the first user message given: an environment's, from its reset.
pub fn conversation(task: &Task, tools: &[Value], user: String, prompts: &Prompts, opts: PromptOptions) -> Result<(Vec<Message>, usize), PromptError> {
    let p = prompts.get(&task.suite)?;
    let system = if !opts.tools_in_system {
        p.system.replace("{tools}\n", "").replace("{tools}", "")
    } else if tools.is_empty() {
        p.system.replace("{tools}", "").trim_end().to_string()
    } else if p.system.contains("{tools}") {
        p.system.replace("{tools}", &tools_block(tools))
    } else {
        format!("{}\n\n{}", p.system, tools_block(tools))
    };
    let mut messages = vec![Message::system(system)];
    if opts.fewshot {
        messages.extend(p.examples_for(&task.tool_names()).flatten().cloned());
    }
    let fewshot = messages.len() - 1;
    messages.push(Message::user(user));
    if let Some(spec) = opts.hint {
        if let Some(h) = super::hint::privileged(task, spec.source) {
            let m = &mut messages[spec.placement.index(fewshot)];
            m.content = super::hint::with_hint(&m.content, &h);
        }
    }
    Ok((messages, fewshot))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sections_and_reports_line_numbers() {
        let p = parse_prompt("doc\n=== system ===\nBe brief.\n{tools}\n=== example ===\n>>> user\nhi\n\n>>> assistant\n<tool_call>\n{\"name\": \"x\", \"arguments\": {}}\n</tool_call>\n>>> tool x\nok\n>>> assistant\nAnswer: 1\n", "t.md").unwrap();
        assert_eq!(p.system, "Be brief.\n{tools}");
        assert_eq!(p.examples.len(), 1);
        let ex = &p.examples[0];
        assert_eq!(ex.iter().map(|m| m.role).collect::<Vec<_>>(), [Role::User, Role::Assistant, Role::Tool, Role::Assistant]);
        assert_eq!(ex[0].content, "hi");
        assert_eq!(ex[1].tool_calls.len(), 1);
        assert_eq!(ex[2].name.as_deref(), Some("x"));
        let e = parse_prompt("=== system ===\nx\n=== example ===\n>>> robot\n", "t.md").unwrap_err().to_string();
        assert!(e.starts_with("t.md:4:"), "{e}");
        let e = parse_prompt("=== example ===\n>>> user\nq\n", "t.md").unwrap_err().to_string();
        assert!(e.contains("no `=== system ===`"), "{e}");
    }

    #[test]
    fn from_dir_names_the_missing_file() {
        let dir = tempfile::tempdir().unwrap();
        let e = Prompts::from_dir(dir.path()).unwrap_err().to_string();
        assert!(e.contains("arithmetic.md"), "{e}");
    }

    #[test]
    fn qa_tasks_see_only_examples_that_call_tools_they_offer() {
        let prompts = Prompts::embedded().unwrap();
        let qa = prompts.get("qa").unwrap();
        let called = |tools: &[&str]| -> Vec<Vec<String>> {
            qa.examples_for(tools).map(|ex| ex.iter().flat_map(|m| m.tool_calls.iter().map(|c| c.name.clone())).collect()).collect()
        };
        assert_eq!(called(&["calculator"]), vec![vec!["calculator".to_string()]]);
        assert_eq!(called(&["search", "open"]), vec![vec!["search".to_string(), "open".into()]]);
        assert_eq!(called(&["convert", "calculator"]).len(), 2);
        assert!(called(&["search"]).is_empty(), "an example that also opens documents needs `open` offered");
        // Plain examples are shown whatever the task offers.
        let p = parse_prompt("=== system ===\ns\n=== example ===\n>>> user\nq\n>>> assistant\n<tool_call>\n{\"name\": \"x\", \"arguments\": {}}\n</tool_call>\n=== tool example ===\n>>> user\nq\n>>> assistant\n<tool_call>\n{\"name\": \"x\", \"arguments\": {}}\n</tool_call>\n", "t.md").unwrap();
        assert_eq!((p.examples_for(&["y"]).count(), p.examples_for(&["x"]).count()), (1, 2));
    }

    #[test]
    fn a_suite_prompt_can_come_from_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mine.md");
        std::fs::write(&path, "=== system ===\nOnly numbers.\n{tools}\n").unwrap();
        let p = Prompts::embedded_with([("qa", path.as_path())]).unwrap();
        assert_eq!((p.get("qa").unwrap().system.as_str(), p.get("qa").unwrap().examples.len()), ("Only numbers.\n{tools}", 0));
        assert_eq!(p.get("units").unwrap(), Prompts::embedded().unwrap().get("units").unwrap());
        std::fs::write(&path, "=== system ===\nx\n=== example ===\n>>> robot\n").unwrap();
        let e = format!("{:#}", Prompts::embedded_with([("qa", path.as_path())]).unwrap_err());
        assert!(e.contains("mine.md:4"), "{e}");
        let e = format!("{:#}", Prompts::embedded_with([("nope", path.as_path())]).unwrap_err());
        assert!(e.contains("nope"), "{e}");
    }
}
