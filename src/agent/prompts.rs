//! Suite prompts: system text plus few-shot conversations, loaded from `prompts/<suite>.md` (format in
//! prompts/README.md) or from the copies embedded at build time.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::toolcall::{parse_turn, to_py_json, Action};
use crate::data::{Message, Role, Task};

#[derive(Debug, thiserror::Error)]
pub enum PromptError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{file}:{line}: {message}")]
    Format {
        file: String,
        line: usize,
        message: String,
    },
    #[error("no prompt for suite `{0}`")]
    Missing(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct SuitePrompt {
    pub system: String,
    pub examples: Vec<Vec<Message>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PromptOptions {
    /// Include the few-shot conversations as earlier turns.
    pub fewshot: bool,
    /// Put the tool specs in the system message (for chat templates that do not render tools themselves).
    pub tools_in_system: bool,
}

impl Default for PromptOptions {
    fn default() -> Self {
        Self {
            fewshot: true,
            tools_in_system: true,
        }
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
    (
        "function_call",
        include_str!("../../prompts/function_call.md"),
    ),
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
            .map(|(suite, text)| {
                Ok((
                    suite.to_string(),
                    parse_prompt(text, &format!("<embedded>/{suite}.md"))?,
                ))
            })
            .collect::<Result<_, PromptError>>()?;
        Ok(Self { by_suite })
    }

    /// `<dir>/<suite>.md` for every suite with an embedded prompt; a missing or malformed file is an error.
    pub fn from_dir(dir: &Path) -> Result<Self, PromptError> {
        let mut by_suite = BTreeMap::new();
        for (suite, _) in EMBEDDED {
            let path = dir.join(format!("{suite}.md"));
            let text = std::fs::read_to_string(&path).map_err(|source| PromptError::Io {
                path: path.clone(),
                source,
            })?;
            by_suite.insert(
                suite.to_string(),
                parse_prompt(&text, &path.display().to_string())?,
            );
        }
        Ok(Self { by_suite })
    }

    pub fn get(&self, suite: &str) -> Result<&SuitePrompt, PromptError> {
        self.by_suite
            .get(suite)
            .ok_or_else(|| PromptError::Missing(suite.to_string()))
    }
}

/// Parses the delimiter format of prompts/README.md.
pub fn parse_prompt(text: &str, file: &str) -> Result<SuitePrompt, PromptError> {
    let err = |line: usize, message: String| PromptError::Format {
        file: file.to_string(),
        line,
        message,
    };
    enum Section {
        Preamble,
        System,
        Example,
    }
    let mut section = Section::Preamble;
    let mut system: Option<Vec<&str>> = None;
    let mut examples: Vec<Vec<Message>> = Vec::new();
    // The message being read: (role, tool name, lines).
    let mut current: Option<(Role, Option<String>, Vec<&str>)> = None;
    let flush = |current: &mut Option<(Role, Option<String>, Vec<&str>)>,
                 examples: &mut Vec<Vec<Message>>| {
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
            "=== example ===" => {
                flush(&mut current, &mut examples);
                examples.push(Vec::new());
                section = Section::Example;
            }
            l if l.starts_with("===") => {
                return Err(err(line_no, format!("unknown section `{l}`")))
            }
            l if l.starts_with(">>>") => {
                if !matches!(section, Section::Example) {
                    return Err(err(
                        line_no,
                        "a `>>>` message outside an `=== example ===` section".into(),
                    ));
                }
                flush(&mut current, &mut examples);
                let mut words = l[3..].split_whitespace();
                let role = match words.next() {
                    Some("user") => Role::User,
                    Some("assistant") => Role::Assistant,
                    Some("tool") => Role::Tool,
                    other => {
                        return Err(err(
                            line_no,
                            format!("unknown role {other:?}; use user, assistant or tool"),
                        ))
                    }
                };
                current = Some((role, words.next().map(str::to_string), Vec::new()));
            }
            _ => match section {
                Section::Preamble => {}
                Section::System => system.get_or_insert_with(Vec::new).push(line),
                Section::Example => match current.as_mut() {
                    Some((_, _, lines)) => lines.push(line),
                    None if line.trim().is_empty() => {}
                    None => {
                        return Err(err(
                            line_no,
                            "text before the first `>>>` message of an example".into(),
                        ))
                    }
                },
            },
        }
    }
    flush(&mut current, &mut examples);
    let system =
        system.ok_or_else(|| err(text.lines().count(), "no `=== system ===` section".into()))?;
    for (i, ex) in examples.iter().enumerate() {
        if ex.first().map(|m| m.role) != Some(Role::User)
            || ex.last().map(|m| m.role) != Some(Role::Assistant)
        {
            return Err(err(
                0,
                format!(
                    "example {} must start with a user message and end with an assistant message",
                    i + 1
                ),
            ));
        }
    }
    Ok(SuitePrompt {
        system: system.join("\n").trim().to_string(),
        examples,
    })
}

/// `<tools>` block with one spec per line, as Hermes-style templates write it.
pub fn tools_block(tools: &[Value]) -> String {
    let lines: Vec<String> = tools.iter().map(to_py_json).collect();
    format!("<tools>\n{}\n</tools>", lines.join("\n"))
}

/// The conversation an episode starts from: system, few-shot turns (optional), the task's instruction. Returns
/// the messages and how many of them are few-shot turns.
pub fn initial_messages(
    task: &Task,
    prompts: &Prompts,
    opts: PromptOptions,
) -> Result<(Vec<Message>, usize), PromptError> {
    let p = prompts.get(&task.suite)?;
    let system = if !opts.tools_in_system {
        p.system.replace("{tools}\n", "").replace("{tools}", "")
    } else if p.system.contains("{tools}") {
        p.system.replace("{tools}", &tools_block(&task.tools))
    } else {
        format!("{}\n\n{}", p.system, tools_block(&task.tools))
    };
    let mut messages = vec![Message::system(system)];
    if opts.fewshot {
        messages.extend(p.examples.iter().flatten().cloned());
    }
    let fewshot = messages.len() - 1;
    messages.push(Message::user(task.instruction.clone()));
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
        assert_eq!(
            ex.iter().map(|m| m.role).collect::<Vec<_>>(),
            [Role::User, Role::Assistant, Role::Tool, Role::Assistant]
        );
        assert_eq!(ex[0].content, "hi");
        assert_eq!(ex[1].tool_calls.len(), 1);
        assert_eq!(ex[2].name.as_deref(), Some("x"));
        let e = parse_prompt("=== system ===\nx\n=== example ===\n>>> robot\n", "t.md")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("t.md:4:"), "{e}");
        let e = parse_prompt("=== example ===\n>>> user\nq\n", "t.md")
            .unwrap_err()
            .to_string();
        assert!(e.contains("no `=== system ===`"), "{e}");
    }

    #[test]
    fn from_dir_names_the_missing_file() {
        let dir = tempfile::tempdir().unwrap();
        let e = Prompts::from_dir(dir.path()).unwrap_err().to_string();
        assert!(e.contains("arithmetic.md"), "{e}");
    }
}
