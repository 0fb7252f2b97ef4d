//! JSON-RPC 2.0 with a child process over stdio, one message per line: how MCP servers and environments are
//! spoken to. The child is started as `process` says (no shell, only its configured environment, its own process
//! group, killed with this process on Linux) and is killed when its `RpcChild` is dropped. Requests the child
//! sends are answered: `ping` with an empty result, anything else with "method not found". Several threads may
//! have requests in flight on one child: each answer goes to the request with its id.
use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::process::{isolated, kill_group, resolve_program, spawn};

/// How to start a child that speaks JSON-RPC on stdio. `S` is what its owner does with it (its scope).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProcessSpec<S> {
    /// The program: a path, or a name looked up on this process's PATH. Never run through a shell.
    #[serde(default)]
    pub command: String,
    /// An MCP server's streamable HTTP endpoint on loopback, instead of stdio; `command`, if given, starts the
    /// server (once per run), and the run connects to this address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default)]
    pub args: Vec<String>,
    /// The child's whole environment: nothing else of this process's environment is passed on.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Working directory (default: this process's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<PathBuf>,
    #[serde(default)]
    pub scope: S,
    /// Longest wait for one answer, the handshake included.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
}

fn default_timeout_ms() -> u64 {
    30_000
}

/// `peer` names the child in every message: "server `time`", "environment `textworld`".
#[derive(Debug, thiserror::Error)]
pub enum RpcError {
    #[error("{peer}: cannot start `{command}`: {source}")]
    Spawn { peer: String, command: String, source: std::io::Error },
    #[error("{peer}: {what}")]
    Protocol { peer: String, what: String },
    #[error("{peer}: `{method}` failed ({code}): {message}")]
    Rpc { peer: String, method: String, code: i64, message: String },
    #[error("{peer}: no answer to `{method}` within {ms} ms")]
    Timeout { peer: String, method: String, ms: u64 },
    #[error("{peer} exited{}", if stderr.is_empty() { String::new() } else { format!("; its last output on stderr: {stderr}") })]
    Exited { peer: String, stderr: String },
}

impl RpcError {
    /// The child can no longer be used (it must be restarted before the next request).
    pub fn is_fatal(&self) -> bool {
        !matches!(self, RpcError::Rpc { .. })
    }
}

/// What the reader thread hands to a waiting request.
enum Line {
    Message(Value),
    NotJson(String),
}

/// Requests waiting for their answers, by id; the reader thread delivers each answer to its request, so that
/// several episodes can use one child at once.
#[derive(Default)]
struct Pending {
    waiters: HashMap<u64, Sender<Line>>,
    /// A line that was not JSON: the child is out of protocol and every later request fails with it.
    broken: Option<String>,
    /// Stdout closed: the child exited.
    closed: bool,
}

pub struct RpcChild {
    peer: String,
    child: Mutex<Child>,
    pid: u32,
    stdin: Arc<Mutex<ChildStdin>>,
    pending: Arc<Mutex<Pending>>,
    stderr: Arc<Mutex<String>>,
    next_id: AtomicU64,
    timeout: Duration,
}

/// Keeps the last this many bytes of a child's stderr for error messages.
const STDERR_TAIL: usize = 2000;

impl RpcChild {
    pub fn spawn<S>(peer: String, spec: &ProcessSpec<S>) -> Result<RpcChild, RpcError> {
        let program = resolve_program(&spec.command).map_err(|e| RpcError::Spawn { peer: peer.clone(), command: spec.command.clone(), source: e })?;
        let mut cmd = isolated(&program, &spec.args, &spec.env);
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        if let Some(dir) = &spec.cwd {
            cmd.current_dir(dir);
        }
        let mut child = spawn(cmd).map_err(|e| RpcError::Spawn { peer: peer.clone(), command: program.display().to_string(), source: e })?;
        let (Some(stdin), Some(stdout), Some(stderr)) = (child.stdin.take(), child.stdout.take(), child.stderr.take()) else {
            let _ = child.kill();
            return Err(RpcError::Protocol { peer, what: "no pipes to the child process".into() });
        };
        let stdin = Arc::new(Mutex::new(stdin));
        let pending = Arc::new(Mutex::new(Pending::default()));
        let replies = Arc::clone(&stdin);
        let deliver = Arc::clone(&pending);
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if line.trim().is_empty() {
                    continue;
                }
                let Ok(mut p) = deliver.lock() else { break };
                let msg = match serde_json::from_str::<Value>(&line) {
                    Ok(v) => v,
                    Err(_) => {
                        for (_, w) in p.waiters.drain() {
                            let _ = w.send(Line::NotJson(line.clone()));
                        }
                        p.broken.get_or_insert(line);
                        continue;
                    }
                };
                if let Some(reply) = reply_to_request(&msg) {
                    if let Ok(mut w) = replies.lock() {
                        let _ = writeln!(w, "{reply}").and_then(|()| w.flush());
                    }
                    continue;
                }
                if let Some(w) = msg.get("id").and_then(Value::as_u64).and_then(|id| p.waiters.remove(&id)) {
                    let _ = w.send(Line::Message(msg));
                }
            }
            if let Ok(mut p) = deliver.lock() {
                p.closed = true;
                p.waiters.clear();
            }
        });
        let tail = Arc::new(Mutex::new(String::new()));
        let keep = Arc::clone(&tail);
        std::thread::spawn(move || {
            let mut buf = [0u8; 1024];
            let mut err = stderr;
            while let Ok(n) = err.read(&mut buf) {
                if n == 0 {
                    break;
                }
                if let Ok(mut t) = keep.lock() {
                    t.push_str(&String::from_utf8_lossy(&buf[..n]));
                    if t.len() > STDERR_TAIL {
                        let cut = t.len() - STDERR_TAIL;
                        let cut = (cut..t.len()).find(|&i| t.is_char_boundary(i)).unwrap_or(t.len());
                        t.drain(..cut);
                    }
                }
            }
        });
        let pid = child.id();
        Ok(RpcChild {
            peer,
            child: Mutex::new(child),
            pid,
            stdin,
            pending,
            stderr: tail,
            next_id: AtomicU64::new(1),
            timeout: Duration::from_millis(spec.timeout_ms),
        })
    }

    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// A protocol error naming the child.
    pub fn protocol(&self, what: String) -> RpcError {
        RpcError::Protocol { peer: self.peer.clone(), what }
    }

    fn exited(&self) -> RpcError {
        // Give the stderr reader a moment to collect the last words.
        if let Ok(mut c) = self.child.lock() {
            let _ = c.wait();
        }
        std::thread::sleep(Duration::from_millis(20));
        let stderr = self.stderr.lock().map(|s| s.trim().to_string()).unwrap_or_default();
        RpcError::Exited { peer: self.peer.clone(), stderr }
    }

    fn send(&self, msg: &Value) -> Result<(), RpcError> {
        let ok = self.stdin.lock().map(|mut w| writeln!(w, "{msg}").and_then(|()| w.flush()).is_ok()).unwrap_or(false);
        if ok {
            Ok(())
        } else {
            Err(self.exited())
        }
    }

    pub fn notify(&self, method: &str) -> Result<(), RpcError> {
        self.send(&json!({"jsonrpc": "2.0", "method": method}))
    }

    /// One request and its result. Requests from several threads may be in flight at once.
    pub fn request(&self, method: &str, params: Value) -> Result<Value, RpcError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel();
        {
            let mut p = self.pending.lock().map_err(|_| self.protocol("poisoned".into()))?;
            if let Some(line) = &p.broken {
                return Err(self.not_json(line));
            }
            if p.closed {
                drop(p);
                return Err(self.exited());
            }
            p.waiters.insert(id, tx);
        }
        let forget = || {
            if let Ok(mut p) = self.pending.lock() {
                p.waiters.remove(&id);
            }
        };
        if let Err(e) = self.send(&json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params})) {
            forget();
            return Err(e);
        }
        let msg = match rx.recv_timeout(self.timeout) {
            Ok(Line::Message(m)) => m,
            Ok(Line::NotJson(line)) => return Err(self.not_json(&line)),
            Err(RecvTimeoutError::Timeout) => {
                forget();
                return Err(RpcError::Timeout { peer: self.peer.clone(), method: method.into(), ms: self.timeout.as_millis() as u64 });
            }
            Err(RecvTimeoutError::Disconnected) => return Err(self.exited()),
        };
        result_of(&self.peer, msg, method)
    }

    fn not_json(&self, line: &str) -> RpcError {
        let shown: String = line.chars().take(200).collect();
        self.protocol(format!("wrote a line that is not JSON-RPC on stdout: `{shown}`"))
    }
}

/// The answer to a request the other side sent (`None` when `msg` is not a request): `ping` is answered, anything
/// else declined.
pub fn reply_to_request(msg: &Value) -> Option<Value> {
    let (id, method) = (msg.get("id")?, msg.get("method")?.as_str()?);
    Some(if method == "ping" {
        json!({"jsonrpc": "2.0", "id": id, "result": {}})
    } else {
        json!({"jsonrpc": "2.0", "id": id, "error": {"code": -32601, "message": format!("the client does not offer `{method}`")}})
    })
}

/// The result of `method` from its answer `msg`, or the error the answer carries.
pub fn result_of(peer: &str, msg: Value, method: &str) -> Result<Value, RpcError> {
    let protocol = |what: String| RpcError::Protocol { peer: peer.to_string(), what };
    if msg.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return Err(protocol(format!("answered `{method}` without `\"jsonrpc\": \"2.0\"`")));
    }
    if let Some(e) = msg.get("error") {
        let code = e.get("code").and_then(Value::as_i64).unwrap_or(0);
        let message = e.get("message").and_then(Value::as_str).unwrap_or("(no message)").to_string();
        return Err(RpcError::Rpc { peer: peer.to_string(), method: method.into(), code, message });
    }
    msg.get("result").cloned().ok_or_else(|| protocol(format!("answered `{method}` with neither a result nor an error")))
}

impl Drop for RpcChild {
    fn drop(&mut self) {
        kill_group(self.pid);
        if let Ok(c) = self.child.get_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
