//! `env`: episodes of a configured environment (`crate::tasks::env`). The environment, its observations and its
//! tools come from the run's configuration, so the suite neither generates tasks nor holds a sandbox.
use super::{Sandbox, Suite, SuiteError};
use crate::data::Task;

pub struct Env;

impl Suite for Env {
    fn name(&self) -> &'static str {
        "env"
    }
    fn tool_names(&self) -> Option<&'static [&'static str]> {
        None
    }
    fn max_turns(&self, _difficulty: u8) -> u32 {
        10
    }
    fn sandbox(&self, task: &Task) -> Result<Box<dyn Sandbox>, SuiteError> {
        Err(SuiteError::BadTask {
            task: task.id.clone(),
            message: "environment tasks run in a configured environment: give it (`--env-config FILE`, or `[envs.NAME]` in a loop config)".into(),
        })
    }
}
