//! Environments with state and a reward (Gymnasium's `reset` / `step`) as the worlds of `env` tasks. An
//! environment is a child process that speaks JSON-RPC 2.0 over stdio (`crate::tools::rpc`), documented in
//! tasks/README.md:
//!
//! ```text
//! reset {task, seed?, game?}  -> {observation, tools?, max_reward?}
//! step  {action}              -> {observation, reward, terminated, truncated}
//! ```
//!
//! `action` is the model's turn: its text, or `{"name", "arguments"}` when the environment offered tools.
//! scripts/env_bridge.py serves any Gymnasium text environment this way.
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::suites::SuiteError;
use crate::data::{Task, TaskData};
use crate::tools::rpc::{ProcessSpec, RpcChild, RpcError};

/// How to start one environment process.
pub type EnvSpec = ProcessSpec<Scope>;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// A process serves one episode after another: `reset` starts each afresh (Gymnasium's contract), and
    /// starting Python once per episode is what this saves. A process that failed is never reused.
    #[default]
    Reuse,
    /// A fresh process for every episode.
    Episode,
}

/// The configured environments of a run: a config's `[envs.NAME]` tables.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct EnvConfig(pub BTreeMap<String, EnvSpec>);

/// A file of `[envs.NAME]` tables, as `--env-config` reads it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct EnvFile {
    envs: EnvConfig,
}

impl EnvConfig {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Reads a TOML file of `[envs.NAME]` tables.
    pub fn load(path: &std::path::Path) -> Result<EnvConfig, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        toml::from_str::<EnvFile>(&text).map(|f| f.envs).map_err(|e| format!("{}: {e}", path.display()))
    }
}

/// The environment a task runs in, if it is an environment task.
pub fn env_of(task: &Task) -> Option<&str> {
    match &task.data {
        TaskData::Env { env, .. } => Some(env),
        _ => None,
    }
}

/// The environments of a run, with the idle processes kept for reuse.
pub struct Envs {
    config: EnvConfig,
    idle: Mutex<BTreeMap<String, Vec<RpcChild>>>,
}

impl std::fmt::Debug for Envs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Envs").field("config", &self.config).finish_non_exhaustive()
    }
}

impl Envs {
    /// The environments `tasks` need, each checked to be configured; `None` when no task runs in one.
    pub fn for_tasks<'t>(config: &EnvConfig, tasks: impl IntoIterator<Item = &'t Task>) -> Result<Option<Arc<Envs>>, SuiteError> {
        let envs = Envs { config: config.clone(), idle: Mutex::new(BTreeMap::new()) };
        let mut any = false;
        for t in tasks {
            if env_of(t).is_some() {
                envs.check(t)?;
                any = true;
            }
        }
        Ok(any.then(|| Arc::new(envs)))
    }

    /// Checks that the task's environment is configured, without starting it.
    pub fn check(&self, task: &Task) -> Result<(), SuiteError> {
        env_of(task).map_or(Ok(()), |e| self.spec(e, &task.id).map(|_| ()))
    }

    fn spec(&self, env: &str, task: &str) -> Result<&EnvSpec, SuiteError> {
        let spec = self.config.0.get(env).ok_or_else(|| SuiteError::BadTask {
            task: task.into(),
            message: format!("environment `{env}` is not configured (known: {})", self.config.0.keys().cloned().collect::<Vec<_>>().join(", ")),
        })?;
        if spec.url.is_some() || spec.command.trim().is_empty() {
            return Err(SuiteError::BadTask {
                task: task.into(),
                message: format!("environment `{env}` needs a `command` (environments speak over stdio; `url` is for MCP servers)"),
            });
        }
        Ok(spec)
    }

    /// An episode of `task`, not yet reset.
    pub fn session(self: &Arc<Self>, task: &Task) -> Result<EnvSession, SuiteError> {
        let TaskData::Env { env, seed, game } = &task.data else {
            return Err(SuiteError::BadTask { task: task.id.clone(), message: "not an environment task".into() });
        };
        self.spec(env, &task.id)?;
        Ok(EnvSession {
            envs: Arc::clone(self),
            env: env.clone(),
            task: task.id.clone(),
            reset: json!({"task": task.id, "seed": seed, "game": game}),
            child: None,
            healthy: true,
            max_reward: None,
            total_reward: 0.0,
        })
    }

    /// An idle process (`true`: it served an episode before), else a new one.
    fn take(&self, env: &str) -> Result<(RpcChild, bool), RpcError> {
        let idle = self.idle.lock().ok().and_then(|mut m| m.get_mut(env).and_then(Vec::pop));
        match idle {
            Some(c) => Ok((c, true)),
            None => {
                let spec = self.config.0.get(env).ok_or_else(|| RpcError::Protocol { peer: format!("environment `{env}`"), what: "not configured".into() })?;
                RpcChild::spawn(format!("environment `{env}`"), spec).map(|c| (c, false))
            }
        }
    }

    fn give_back(&self, env: &str, child: RpcChild) {
        if self.config.0.get(env).is_some_and(|s| s.scope == Scope::Reuse) {
            if let Ok(mut m) = self.idle.lock() {
                m.entry(env.to_string()).or_default().push(child);
            }
        }
    }
}

/// What `reset` gave: the first observation and the tools the model may call.
#[derive(Debug, Clone, PartialEq)]
pub struct Start {
    pub observation: String,
    /// Function specs, as in task files; empty when the action is the model's text.
    pub tools: Vec<Value>,
}

/// What one `step` gave.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    pub observation: String,
    pub reward: f64,
    pub terminated: bool,
    pub truncated: bool,
}

/// One episode in an environment. Dropping it gives a healthy reusable process back to the run.
pub struct EnvSession {
    envs: Arc<Envs>,
    env: String,
    task: String,
    reset: Value,
    child: Option<RpcChild>,
    healthy: bool,
    /// The most return the episode can have, if the environment said.
    pub max_reward: Option<f64>,
    pub total_reward: f64,
}

impl EnvSession {
    /// The episode's score: its return over the announced maximum (or as is), clipped to [0, 1].
    pub fn score(&self) -> f64 {
        let r = match self.max_reward {
            Some(m) if m > 0.0 => self.total_reward / m,
            _ => self.total_reward,
        };
        if r.is_finite() {
            r.clamp(0.0, 1.0)
        } else {
            0.0
        }
    }

    /// An error text naming the environment and the task.
    fn failed(&mut self, what: impl std::fmt::Display) -> String {
        self.healthy = false;
        self.child = None;
        format!("environment `{}`, task `{}`: {what}", self.env, self.task)
    }

    fn request(&mut self, method: &str, params: Value) -> Result<Value, String> {
        let mut reused = false;
        if self.child.is_none() {
            match self.envs.take(&self.env) {
                Ok((c, r)) => (self.child, reused) = (Some(c), r),
                Err(e) => return Err(self.failed(e)),
            }
        }
        let Some(child) = self.child.as_ref() else { return Err(self.failed("not running")) };
        match child.request(method, params.clone()) {
            Ok(v) => Ok(v),
            // An idle process may have died since its last episode: the episode's first request gets a fresh one.
            Err(e) if reused && e.is_fatal() => {
                self.child = None;
                self.request(method, params)
            }
            Err(e) => Err(self.failed(e)),
        }
    }

    pub fn start(&mut self) -> Result<Start, String> {
        let r = self.request("reset", self.reset.clone())?;
        let Some(observation) = r.get("observation").and_then(Value::as_str).map(str::to_string) else {
            return Err(self.failed(format!("`reset` returned no observation (a string): {}", shown(&r))));
        };
        let tools = match r.get("tools") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(t)) => t.iter().map(tool_spec).collect::<Result<_, _>>().map_err(|e| self.failed(e))?,
            Some(other) => return Err(self.failed(format!("`reset` returned `tools` that is not a list: {}", shown(other)))),
        };
        self.max_reward = match r.get("max_reward") {
            None | Some(Value::Null) => None,
            Some(v) => Some(v.as_f64().ok_or_else(|| self.failed(format!("`reset` returned a non-numeric `max_reward`: {}", shown(v))))?),
        };
        Ok(Start { observation, tools })
    }

    pub fn step(&mut self, action: Value) -> Result<Step, String> {
        let r = self.request("step", json!({"action": action}))?;
        let Some(observation) = r.get("observation").and_then(Value::as_str).map(str::to_string) else {
            return Err(self.failed(format!("`step` returned no observation (a string): {}", shown(&r))));
        };
        let reward = match r.get("reward") {
            Some(v) => v.as_f64().filter(|x| x.is_finite()).ok_or_else(|| self.failed(format!("`step` returned a non-numeric reward: {}", shown(v))))?,
            None => return Err(self.failed("`step` returned no reward")),
        };
        let flag = |k: &str| r.get(k).and_then(Value::as_bool).unwrap_or(false);
        let (terminated, truncated) = (flag("terminated"), flag("truncated"));
        self.total_reward += reward;
        Ok(Step { observation, reward, terminated, truncated })
    }
}

impl Drop for EnvSession {
    fn drop(&mut self) {
        if let (true, Some(c)) = (self.healthy, self.child.take()) {
            self.envs.give_back(&self.env, c);
        }
    }
}

fn shown(v: &Value) -> String {
    v.to_string().chars().take(200).collect()
}

/// A tool an environment offers: a function spec, or MCP's `{name, description, inputSchema}`; its schema must
/// compile.
fn tool_spec(t: &Value) -> Result<Value, String> {
    let spec = if t.get("type").and_then(Value::as_str) == Some("function") { t.clone() } else { super::mcp::function_spec(t) };
    let name = spec
        .pointer("/function/name")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .ok_or_else(|| format!("offers a tool without a name: {}", shown(t)))?;
    if let Some(p) = spec.pointer("/function/parameters") {
        crate::tools::schema::compile(p).map_err(|e| format!("tool `{name}` has an unusable parameter schema: {e}"))?;
    }
    Ok(spec)
}
