//! MCP tool servers as sandboxes. A task of the `mcp` suite names a configured server (`"data": {"kind": "mcp",
//! "server": NAME}`); the server's `tools/list` tools are offered to the model (all of them, or those the task
//! names), and each call runs through `tools/call`. A server runs per episode (the default: no state leaks from one
//! episode to the next) or is shared by every episode of a run (`scope = "shared"`, for stateless tools). A call
//! that times out, or a server that dies, is a tool failure in the trajectory; the server is restarted for the
//! next call.
pub mod client;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

pub use client::Client;
pub use crate::tools::rpc::RpcError;

use super::suites::{Sandbox, SuiteError};
use crate::data::{Task, TaskData, ToolCall};
use crate::tools::rpc::ProcessSpec;

/// How to start one server (stdio transport).
pub type ServerSpec = ProcessSpec<Scope>;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// A fresh server for every episode.
    #[default]
    Episode,
    /// One server for every episode of a run.
    Shared,
}

/// The configured servers of a run: a config's `[mcp.servers.NAME]` tables.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct McpConfig {
    #[serde(default)]
    pub servers: BTreeMap<String, ServerSpec>,
}

impl McpConfig {
    pub fn is_empty(&self) -> bool {
        self.servers.is_empty()
    }

    /// Reads a TOML file of `[servers.NAME]` tables.
    pub fn load(path: &std::path::Path) -> Result<McpConfig, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
    }
}

/// The servers a run's episodes use, with the shared ones kept running.
pub struct McpServers {
    config: McpConfig,
    shared: Mutex<BTreeMap<String, Arc<Mutex<Option<Client>>>>>,
}

impl std::fmt::Debug for McpServers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("McpServers").field("config", &self.config).finish_non_exhaustive()
    }
}

/// The server a task runs on, if it is an MCP task.
pub fn server_of(task: &Task) -> Option<&str> {
    match &task.data {
        TaskData::Mcp { server } => Some(server),
        _ => None,
    }
}

/// An MCP tool as a function spec the model is shown.
pub(crate) fn function_spec(tool: &Value) -> Value {
    json!({"type": "function", "function": {
        "name": tool.get("name").cloned().unwrap_or(Value::Null),
        "description": tool.get("description").cloned().unwrap_or_else(|| json!("")),
        "parameters": tool.get("inputSchema").cloned().unwrap_or_else(|| json!({"type": "object"})),
    }})
}

impl McpServers {
    pub fn new(config: McpConfig) -> Self {
        McpServers { config, shared: Mutex::new(BTreeMap::new()) }
    }

    /// The servers `tasks` need, with every MCP task's tools resolved; `None` when no task runs on a server.
    pub fn for_tasks<'t>(config: &McpConfig, tasks: impl IntoIterator<Item = &'t mut Task>) -> Result<Option<Arc<McpServers>>, RpcError> {
        let mut mine: Vec<&mut Task> = tasks.into_iter().filter(|t| server_of(t).is_some()).collect();
        if mine.is_empty() {
            return Ok(None);
        }
        let servers = McpServers::new(config.clone());
        servers.resolve_tools(mine.iter_mut().map(|t| &mut **t))?;
        Ok(Some(Arc::new(servers)))
    }

    fn spec(&self, server: &str, task: &str) -> Result<&ServerSpec, SuiteError> {
        self.config.servers.get(server).ok_or_else(|| SuiteError::BadTask {
            task: task.into(),
            message: format!("MCP server `{server}` is not configured (known: {})", self.config.servers.keys().cloned().collect::<Vec<_>>().join(", ")),
        })
    }

    /// Asks each server the tasks name for its tools and gives every MCP task its specs: all the server's tools,
    /// or those the task names. A tool with an unusable schema, or a name the server does not offer, is an error
    /// naming the server and the task.
    pub fn resolve_tools<'t>(&self, tasks: impl IntoIterator<Item = &'t mut Task>) -> Result<(), RpcError> {
        let mut offered: BTreeMap<String, Vec<Value>> = BTreeMap::new();
        for task in tasks {
            let Some(server) = server_of(task).map(str::to_string) else { continue };
            let bad = |what: String| RpcError::Protocol { peer: format!("server `{server}`"), what: format!("task `{}`: {what}", task.id) };
            let spec = self.spec(&server, &task.id).map_err(|e| bad(e.to_string()))?;
            if !offered.contains_key(&server) {
                let mut c = Client::start(&server, spec)?;
                let mut specs = Vec::new();
                for tool in c.list_tools()? {
                    let f = function_spec(&tool);
                    let name = f.pointer("/function/name").and_then(Value::as_str).unwrap_or_default().to_string();
                    if name.is_empty() {
                        return Err(RpcError::Protocol { peer: format!("server `{server}`"), what: format!("offers a tool without a name: {tool}") });
                    }
                    crate::tools::schema::compile(&f["function"]["parameters"])
                        .map_err(|e| RpcError::Protocol { peer: format!("server `{server}`"), what: format!("tool `{name}` has an unusable input schema: {e}") })?;
                    specs.push(f);
                }
                offered.insert(server.clone(), specs);
            }
            let all = &offered[&server];
            let name_of = |v: &Value| v.pointer("/function/name").and_then(Value::as_str).map(str::to_string);
            task.tools = if task.tools.is_empty() {
                all.clone()
            } else {
                let mut chosen = Vec::new();
                for t in &task.tools {
                    let name = t.as_str().map(str::to_string).or_else(|| name_of(t)).unwrap_or_default();
                    let spec = all.iter().find(|s| name_of(s).as_deref() == Some(name.as_str())).ok_or_else(|| {
                        bad(format!(
                            "names tool `{name}`, which the server does not offer (it offers {})",
                            all.iter().filter_map(name_of).collect::<Vec<_>>().join(", ")
                        ))
                    })?;
                    chosen.push(spec.clone());
                }
                chosen
            };
        }
        Ok(())
    }

    /// Checks that the task's server is configured, without starting it.
    pub fn check(&self, task: &Task) -> Result<(), SuiteError> {
        server_of(task).map_or(Ok(()), |s| self.spec(s, &task.id).map(|_| ()))
    }

    /// The sandbox of one episode of an MCP task.
    pub fn sandbox(&self, task: &Task) -> Result<Box<dyn Sandbox>, SuiteError> {
        let server = server_of(task).ok_or_else(|| SuiteError::BadTask { task: task.id.clone(), message: "not an MCP task".into() })?;
        let spec = self.spec(server, &task.id)?.clone();
        let slot = match spec.scope {
            Scope::Episode => Arc::new(Mutex::new(None)),
            Scope::Shared => {
                let mut shared = self.shared.lock().map_err(|_| SuiteError::BadTask { task: task.id.clone(), message: "MCP registry poisoned".into() })?;
                Arc::clone(shared.entry(server.to_string()).or_default())
            }
        };
        Ok(Box::new(McpSandbox { server: server.to_string(), spec, slot }))
    }
}

/// Tool calls of one episode, on its own server or the run's shared one. The server starts at the first call.
struct McpSandbox {
    server: String,
    spec: ServerSpec,
    slot: Arc<Mutex<Option<Client>>>,
}

impl Sandbox for McpSandbox {
    fn external(&self) -> bool {
        true
    }

    fn call(&mut self, call: &ToolCall) -> Result<String, String> {
        let mut slot = self.slot.lock().map_err(|_| format!("MCP server `{}`: unavailable", self.server))?;
        if slot.is_none() {
            *slot = Some(Client::start(&self.server, &self.spec).map_err(|e| e.to_string())?);
        }
        let Some(client) = slot.as_mut() else { return Err(format!("MCP server `{}`: unavailable", self.server)) };
        match client.call_tool(&call.name, &call.arguments) {
            Ok(result) => result,
            Err(e) => {
                if e.is_fatal() {
                    // Dropping the client kills the server; the next call starts a fresh one.
                    *slot = None;
                }
                Err(e.to_string())
            }
        }
    }
}
