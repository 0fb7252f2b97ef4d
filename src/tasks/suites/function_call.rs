//! `function_call`: user tasks that test calling, not executing. The task declares its own function schemas;
//! the model's first turn is compared with the expected calls (or with calling nothing) and the episode ends.
use super::{Sandbox, Suite, SuiteError};
use crate::data::{Task, ToolCall};

pub struct FunctionCall;

/// Executes nothing: episodes of function-call tasks end before any call would run.
pub struct NoExecSandbox;

impl Sandbox for NoExecSandbox {
    fn call(&mut self, call: &ToolCall) -> Result<String, String> {
        Err(format!("`{}` is declared but not executed in function-call tasks", call.name))
    }
}

impl Suite for FunctionCall {
    fn name(&self) -> &'static str {
        "function_call"
    }
    fn tool_names(&self) -> Option<&'static [&'static str]> {
        None
    }
    fn max_turns(&self, _difficulty: u8) -> u32 {
        1
    }
    fn sandbox(&self, _task: &Task) -> Result<Box<dyn Sandbox>, SuiteError> {
        Ok(Box::new(NoExecSandbox))
    }
}
