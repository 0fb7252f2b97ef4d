//! Privileged context c+: text that helps with a task without giving its answer, shown only to the teacher
//! (SDAR) and to hinted rollouts, never to the trained model (method.md §2-3). Two sources: a skill text per
//! suite (`prompts/skills/<suite>.md`) and, for generated tasks, the calls of the task's reference plan.
use serde::{Deserialize, Serialize};

use crate::data::Task;
use crate::tools::toolcall::render_call;

/// Where c+ comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HintSource {
    /// How to approach the suite's tasks.
    #[default]
    Skill,
    /// The reference plan's calls (no final answer); the skill text for tasks without a reference.
    Plan,
}

impl std::str::FromStr for HintSource {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "skill" => Ok(HintSource::Skill),
            "plan" => Ok(HintSource::Plan),
            o => Err(format!("unknown hint source `{o}` (expected skill or plan)")),
        }
    }
}

/// Where c+ goes in the prompt: the end of the system message, or the end of the task's user message (right
/// before the model's turn, where a small model attends most).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HintPlacement {
    #[default]
    System,
    User,
}

impl std::str::FromStr for HintPlacement {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "system" => Ok(HintPlacement::System),
            "user" => Ok(HintPlacement::User),
            o => Err(format!("unknown hint placement `{o}` (expected system or user)")),
        }
    }
}

/// Which privileged context, and where it goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HintSpec {
    pub source: HintSource,
    pub placement: HintPlacement,
}

impl HintPlacement {
    /// The index of the message that carries c+ in a conversation with `fewshot` few-shot messages.
    pub fn index(self, fewshot: usize) -> usize {
        match self {
            HintPlacement::System => 0,
            HintPlacement::User => 1 + fewshot,
        }
    }
}

/// Put between the message text and the hint.
pub const HINT_HEADER: &str = "\n\nHint:\n";

const SKILLS: &[(&str, &str)] = &[
    ("arithmetic", include_str!("../../prompts/skills/arithmetic.md")),
    ("units", include_str!("../../prompts/skills/units.md")),
    ("tables", include_str!("../../prompts/skills/tables.md")),
    ("files", include_str!("../../prompts/skills/files.md")),
    ("search", include_str!("../../prompts/skills/search.md")),
    ("grid", include_str!("../../prompts/skills/grid.md")),
    ("qa", include_str!("../../prompts/skills/qa.md")),
    ("function_call", include_str!("../../prompts/skills/function_call.md")),
];

/// The skill text of `suite`, if it has one.
pub fn skill(suite: &str) -> Option<&'static str> {
    SKILLS.iter().find(|(s, _)| *s == suite).map(|(_, t)| t.trim())
}

/// The reference plan as instructions: each call with its arguments, in order, and no answer.
pub fn plan_hint(task: &Task) -> Option<String> {
    let r = task.reference.as_ref()?;
    if !r.actions.is_empty() {
        let steps: Vec<String> = r.actions.iter().enumerate().map(|(i, a)| format!("{}. {a}", i + 1)).collect();
        return Some(format!("Actions that succeed, one per turn:\n{}", steps.join("\n")));
    }
    let r = Some(r).filter(|r| !r.calls.is_empty())?;
    let steps: Vec<String> = r.calls.iter().enumerate().map(|(i, c)| format!("Step {}:\n{}", i + 1, render_call(c))).collect();
    Some(format!("A plan that works, one call per turn:\n{}\nThen read the last result and give the answer as Answer: ...", steps.join("\n")))
}

/// c+ for `task` from `source`, or None when the task has none.
pub fn privileged(task: &Task, source: HintSource) -> Option<String> {
    match source {
        HintSource::Plan => plan_hint(task).or_else(|| skill(&task.suite).map(str::to_string)),
        HintSource::Skill => skill(&task.suite).map(str::to_string),
    }
}

/// The message text with c+ at its end.
pub fn with_hint(text: &str, hint: &str) -> String {
    format!("{text}{HINT_HEADER}{hint}")
}

/// The message text without the c+ that `with_hint` added, or None when it does not end with it.
pub fn without_hint<'a>(text: &'a str, hint: &str) -> Option<&'a str> {
    text.strip_suffix(hint)?.strip_suffix(HINT_HEADER)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_suite_with_a_prompt_has_a_skill_and_plans_never_show_the_answer() {
        for s in ["arithmetic", "units", "tables", "files", "search", "grid", "qa", "function_call"] {
            assert!(skill(s).is_some_and(|t| t.len() > 40), "{s}");
        }
        let suite = crate::tasks::suites::get("tables").unwrap();
        for task in crate::tasks::suites::generate_many(suite, 0, crate::data::Split::Train, 2, 5).unwrap() {
            let h = privileged(&task, HintSource::Plan).unwrap();
            let answer = &task.reference.as_ref().unwrap().answer;
            assert!(h.starts_with("A plan that works, one call per turn:\nStep 1:\n<tool_call>\n{\"name\": "), "{h}");
            assert!(!h.contains(&format!("Answer: {answer}")), "{h}");
            let sys = with_hint("You solve tasks.", &h);
            assert_eq!(without_hint(&sys, &h), Some("You solve tasks."));
        }
        assert_eq!(without_hint("You solve tasks.", "x"), None);
    }
}
