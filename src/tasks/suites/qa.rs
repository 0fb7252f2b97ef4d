//! `qa`: user answer tasks from files (tasks/*.jsonl). Tools come from the built-in set: `calculator`,
//! `convert`, and `search` / `open` over the documents given inside the task. Nothing is generated.
use serde_json::Value;

use super::arithmetic::{calculator, calculator_spec};
use super::search::{open_spec, search_spec, SearchSandbox};
use super::units::{convert_spec, UnitsSandbox};
use super::{unknown_tool, Sandbox, Suite, SuiteError};
use crate::data::{Task, TaskData, ToolCall};

pub struct Qa;

/// Spec of a built-in tool by name, for task files that list tools by name.
pub fn builtin_spec(name: &str) -> Option<Value> {
    match name {
        "calculator" => Some(calculator_spec()),
        "convert" => Some(convert_spec()),
        "search" => Some(search_spec()),
        "open" => Some(open_spec()),
        _ => None,
    }
}

pub struct QaSandbox {
    search: SearchSandbox,
    units: UnitsSandbox,
}

impl Sandbox for QaSandbox {
    fn call(&mut self, call: &ToolCall) -> Result<String, String> {
        match call.name.as_str() {
            "calculator" => calculator(call),
            "convert" => self.units.call(call),
            _ => self.search.handle(call).unwrap_or_else(|| Err(unknown_tool(call))),
        }
    }
}

impl Suite for Qa {
    fn name(&self) -> &'static str {
        "qa"
    }
    fn tool_names(&self) -> Option<&'static [&'static str]> {
        Some(&["calculator", "convert", "search", "open"])
    }
    fn tools(&self, _difficulty: u8) -> Vec<Value> {
        vec![calculator_spec(), convert_spec(), search_spec(), open_spec()]
    }
    fn max_turns(&self, _difficulty: u8) -> u32 {
        6
    }
    fn sandbox(&self, task: &Task) -> Result<Box<dyn Sandbox>, SuiteError> {
        let docs = match &task.data {
            TaskData::Documents { documents } => documents.clone(),
            TaskData::None => Vec::new(),
            _ => return Err(SuiteError::BadTask { task: task.id.clone(), message: "`data` must be of kind `documents` or `none`".into() }),
        };
        Ok(Box::new(QaSandbox { search: SearchSandbox::new(docs), units: UnitsSandbox::new() }))
    }
}
