//! `mcp`: user tasks answered with the tools of an MCP server (`crate::tasks::mcp`). The server and its tools
//! come from the run's configuration, so the suite itself neither generates tasks nor holds a sandbox.
use super::{Sandbox, Suite, SuiteError};
use crate::data::Task;

pub struct Mcp;

impl Suite for Mcp {
    fn name(&self) -> &'static str {
        "mcp"
    }
    fn tool_names(&self) -> Option<&'static [&'static str]> {
        None
    }
    fn max_turns(&self, _difficulty: u8) -> u32 {
        6
    }
    fn sandbox(&self, task: &Task) -> Result<Box<dyn Sandbox>, SuiteError> {
        Err(SuiteError::BadTask {
            task: task.id.clone(),
            message: "MCP tasks run on a configured server: give the servers (`--mcp-config FILE`, or `[mcp.servers.NAME]` in a loop config)".into(),
        })
    }
}
