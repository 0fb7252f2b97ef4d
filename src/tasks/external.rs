//! The user's processes a run's tasks need: the MCP servers of `mcp` tasks and the environments of `env` tasks,
//! started lazily and shared by every episode of the run.
use std::sync::Arc;

use super::env::{EnvConfig, Envs};
use super::mcp::{McpConfig, McpServers};
use super::suites::SuiteError;
use crate::data::Task;
use crate::tools::rpc::RpcError;

#[derive(Debug, Clone, Default)]
pub struct External {
    pub mcp: Option<Arc<McpServers>>,
    pub envs: Option<Arc<Envs>>,
}

impl External {
    /// What `tasks` need of the configured servers and environments. Every MCP task's tools are resolved (its
    /// server is asked for them); every environment task's environment must be configured.
    pub fn for_tasks<'t>(mcp: &McpConfig, envs: &EnvConfig, tasks: impl IntoIterator<Item = &'t mut Task>) -> Result<External, ExternalError> {
        let mut tasks: Vec<&mut Task> = tasks.into_iter().collect();
        Ok(External { mcp: McpServers::for_tasks(mcp, tasks.iter_mut().map(|t| &mut **t))?, envs: Envs::for_tasks(envs, tasks.iter().map(|t| &**t))? })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ExternalError {
    #[error(transparent)]
    Mcp(#[from] RpcError),
    #[error(transparent)]
    Env(#[from] SuiteError),
}
