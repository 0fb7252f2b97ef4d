//! MCP tool servers as sandboxes. A task of the `mcp` suite names a configured server (`"data": {"kind": "mcp",
//! "server": NAME}`); the server's `tools/list` tools are offered to the model (all of them, or those the task
//! names), and each call runs through `tools/call`. A server runs per episode (the default: no state leaks from one
//! episode to the next) or is shared by every episode of a run (`scope = "shared"`, for stateless tools). A call
//! that times out, or a server that dies, is a tool failure in the trajectory; the server is restarted for the
//! next call. Over streamable HTTP (`url`), "per episode" is a session of its own on the one server, which the run
//! starts when it is given a `command`.
pub mod client;
pub mod http;

use std::collections::BTreeMap;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

pub use crate::tools::rpc::RpcError;
pub use client::Client;

use super::suites::{Sandbox, SuiteError};
use crate::data::{Task, TaskData, ToolCall};
use crate::tools::process::{isolated, resolve_program, spawn, OwnedChild};
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

/// Where an episode finds its client: its own, or the run's shared one (several episodes call it at once).
type Slot = Arc<Mutex<Option<Arc<Client>>>>;

/// The servers a run's episodes use, with the shared ones kept running.
pub struct McpServers {
    config: McpConfig,
    shared: Mutex<BTreeMap<String, Slot>>,
    /// HTTP servers the run started, killed when the run ends.
    launched: Mutex<BTreeMap<String, OwnedChild>>,
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
        McpServers { config, shared: Mutex::new(BTreeMap::new()), launched: Mutex::new(BTreeMap::new()) }
    }

    /// A client of `server`: a fresh process over stdio, or a fresh session over HTTP (starting the server
    /// first if the run starts it).
    pub fn connect(&self, server: &str, spec: &ServerSpec) -> Result<Client, RpcError> {
        let peer = || format!("server `{server}`");
        if let (Some(url), false) = (&spec.url, spec.command.is_empty()) {
            let mut launched = self.launched.lock().map_err(|_| RpcError::Protocol { peer: peer(), what: "registry poisoned".into() })?;
            if !launched.contains_key(server) {
                let program = resolve_program(&spec.command).map_err(|e| RpcError::Spawn { peer: peer(), command: spec.command.clone(), source: e })?;
                let mut cmd = isolated(&program, &spec.args, &spec.env);
                cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
                if let Some(dir) = &spec.cwd {
                    cmd.current_dir(dir);
                }
                let child = spawn(cmd).map_err(|e| RpcError::Spawn { peer: peer(), command: program.display().to_string(), source: e })?;
                let child = OwnedChild(child);
                http::wait_until_listening(url, Duration::from_millis(spec.timeout_ms)).map_err(|what| RpcError::Protocol { peer: peer(), what })?;
                launched.insert(server.to_string(), child);
            }
        }
        Client::start(server, spec)
    }

    /// Stops the server the run started for `server`, so that the next connection starts it again.
    fn relaunch(&self, server: &str) {
        if let Ok(mut launched) = self.launched.lock() {
            launched.remove(server);
        }
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
        let spec = self.config.servers.get(server).ok_or_else(|| SuiteError::BadTask {
            task: task.into(),
            message: format!("MCP server `{server}` is not configured (known: {})", self.config.servers.keys().cloned().collect::<Vec<_>>().join(", ")),
        })?;
        if spec.command.trim().is_empty() && spec.url.is_none() {
            return Err(SuiteError::BadTask { task: task.into(), message: format!("MCP server `{server}` has neither a `command` nor a `url`") });
        }
        Ok(spec)
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
                let c = self.connect(&server, spec)?;
                let mut specs = Vec::new();
                for tool in c.list_tools()? {
                    let f = function_spec(&tool);
                    let name = f.pointer("/function/name").and_then(Value::as_str).unwrap_or_default().to_string();
                    if name.is_empty() {
                        return Err(RpcError::Protocol { peer: format!("server `{server}`"), what: format!("offers a tool without a name: {tool}") });
                    }
                    crate::tools::schema::compile(&f["function"]["parameters"]).map_err(|e| RpcError::Protocol {
                        peer: format!("server `{server}`"),
                        what: format!("tool `{name}` has an unusable input schema: {e}"),
                    })?;
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
    pub fn sandbox(self: &Arc<Self>, task: &Task) -> Result<Box<dyn Sandbox>, SuiteError> {
        let server = server_of(task).ok_or_else(|| SuiteError::BadTask { task: task.id.clone(), message: "not an MCP task".into() })?;
        let spec = self.spec(server, &task.id)?.clone();
        let slot = match spec.scope {
            Scope::Episode => Arc::new(Mutex::new(None)),
            Scope::Shared => {
                let mut shared = self.shared.lock().map_err(|_| SuiteError::BadTask { task: task.id.clone(), message: "MCP registry poisoned".into() })?;
                Arc::clone(shared.entry(server.to_string()).or_default())
            }
        };
        Ok(Box::new(McpSandbox { servers: Arc::clone(self), server: server.to_string(), spec, slot }))
    }
}

/// Tool calls of one episode, on its own server or the run's shared one. The server starts at the first call.
struct McpSandbox {
    servers: Arc<McpServers>,
    server: String,
    spec: ServerSpec,
    slot: Slot,
}

impl Sandbox for McpSandbox {
    fn external(&self) -> bool {
        true
    }

    fn call(&mut self, call: &ToolCall) -> Result<String, String> {
        let unavailable = || format!("MCP server `{}`: unavailable", self.server);
        let client = {
            let mut slot = self.slot.lock().map_err(|_| unavailable())?;
            if slot.is_none() {
                *slot = Some(Arc::new(self.servers.connect(&self.server, &self.spec).map_err(|e| e.to_string())?));
            }
            slot.clone().ok_or_else(unavailable)?
        };
        match client.call_tool(&call.name, &call.arguments) {
            Ok(result) => result,
            Err(e) => {
                if e.is_fatal() {
                    // The next call starts a fresh server (stdio: the old one is killed with its last client).
                    if let Ok(mut slot) = self.slot.lock() {
                        if slot.as_ref().is_some_and(|c| Arc::ptr_eq(c, &client)) {
                            *slot = None;
                        }
                    }
                    if matches!(e, RpcError::Exited { .. }) {
                        self.servers.relaunch(&self.server);
                    }
                }
                Err(e.to_string())
            }
        }
    }
}
