//! A Model Context Protocol client over stdio: JSON-RPC 2.0, one message per line, the `initialize` handshake
//! with version negotiation, `tools/list` and `tools/call`. The server runs as a child process with only its
//! configured environment, never through a shell, in its own process group, and is killed when the client is
//! dropped (and, on Linux, when this process dies).
use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, ChildStdin, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::ServerSpec;
use crate::tools::process::{isolated, kill_group, resolve_program};

/// The protocol versions this client speaks, newest first; it asks for the first.
pub const PROTOCOL_VERSIONS: &[&str] = &["2025-06-18", "2025-03-26", "2024-11-05"];

#[derive(Debug, thiserror::Error)]
pub enum McpError {
    #[error("server `{server}`: cannot start `{command}`: {source}")]
    Spawn { server: String, command: String, source: std::io::Error },
    #[error("server `{server}`: {what}")]
    Protocol { server: String, what: String },
    #[error("server `{server}`: `{method}` failed ({code}): {message}")]
    Rpc { server: String, method: String, code: i64, message: String },
    #[error("server `{server}`: no answer to `{method}` within {ms} ms")]
    Timeout { server: String, method: String, ms: u64 },
    #[error("server `{server}` exited{}", if stderr.is_empty() { String::new() } else { format!("; its last output on stderr: {stderr}") })]
    Exited { server: String, stderr: String },
}

impl McpError {
    /// The server can no longer be used (it must be restarted before the next call).
    pub fn is_fatal(&self) -> bool {
        !matches!(self, McpError::Rpc { .. })
    }
}

/// One line the server wrote on stdout.
enum Line {
    Message(Value),
    NotJson(String),
}

pub struct Client {
    server: String,
    child: Child,
    stdin: Arc<Mutex<ChildStdin>>,
    lines: Receiver<Line>,
    stderr: Arc<Mutex<String>>,
    next_id: u64,
    timeout: Duration,
    /// The version the server agreed to.
    pub protocol_version: String,
}

/// Keeps the last this many bytes of a server's stderr for error messages.
const STDERR_TAIL: usize = 2000;

impl Client {
    /// Starts the server and completes the handshake.
    pub fn start(server: &str, spec: &ServerSpec) -> Result<Client, McpError> {
        let program = resolve_program(&spec.command).map_err(|e| McpError::Spawn { server: server.into(), command: spec.command.clone(), source: e })?;
        let mut cmd = isolated(&program, &spec.args, &spec.env);
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        if let Some(dir) = &spec.cwd {
            cmd.current_dir(dir);
        }
        let mut child = cmd.spawn().map_err(|e| McpError::Spawn { server: server.into(), command: program.display().to_string(), source: e })?;
        let (Some(stdin), Some(stdout), Some(stderr)) = (child.stdin.take(), child.stdout.take(), child.stderr.take()) else {
            let _ = child.kill();
            return Err(McpError::Protocol { server: server.into(), what: "no pipes to the child process".into() });
        };
        let stdin = Arc::new(Mutex::new(stdin));
        let (tx, lines) = mpsc::channel();
        let replies = Arc::clone(&stdin);
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if line.trim().is_empty() {
                    continue;
                }
                let msg = match serde_json::from_str::<Value>(&line) {
                    Ok(v) => v,
                    Err(_) => {
                        let _ = tx.send(Line::NotJson(line));
                        continue;
                    }
                };
                // Requests from the server: a ping is answered, anything else is declined.
                if let (Some(id), Some(method)) = (msg.get("id"), msg.get("method").and_then(Value::as_str)) {
                    let reply = if method == "ping" {
                        json!({"jsonrpc": "2.0", "id": id, "result": {}})
                    } else {
                        json!({"jsonrpc": "2.0", "id": id, "error": {"code": -32601, "message": format!("the client does not offer `{method}`")}})
                    };
                    if let Ok(mut w) = replies.lock() {
                        let _ = writeln!(w, "{reply}").and_then(|()| w.flush());
                    }
                    continue;
                }
                if tx.send(Line::Message(msg)).is_err() {
                    break;
                }
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
        let mut c = Client {
            server: server.into(),
            child,
            stdin,
            lines,
            stderr: tail,
            next_id: 1,
            timeout: Duration::from_millis(spec.timeout_ms),
            protocol_version: String::new(),
        };
        let init = c.request(
            "initialize",
            json!({"protocolVersion": PROTOCOL_VERSIONS[0], "capabilities": {}, "clientInfo": {"name": "autodidact", "version": env!("CARGO_PKG_VERSION")}}),
        )?;
        let version = init.get("protocolVersion").and_then(Value::as_str).unwrap_or_default().to_string();
        if !PROTOCOL_VERSIONS.contains(&version.as_str()) {
            return Err(c.protocol(format!("answered `initialize` with protocol version `{version}`; this client speaks {}", PROTOCOL_VERSIONS.join(", "))));
        }
        c.protocol_version = version;
        c.notify("notifications/initialized")?;
        Ok(c)
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    fn protocol(&self, what: String) -> McpError {
        McpError::Protocol { server: self.server.clone(), what }
    }

    fn exited(&mut self) -> McpError {
        // Give the stderr reader a moment to collect the last words.
        let _ = self.child.wait();
        std::thread::sleep(Duration::from_millis(20));
        let stderr = self.stderr.lock().map(|s| s.trim().to_string()).unwrap_or_default();
        McpError::Exited { server: self.server.clone(), stderr }
    }

    fn send(&mut self, msg: &Value) -> Result<(), McpError> {
        let ok = self.stdin.lock().map(|mut w| writeln!(w, "{msg}").and_then(|()| w.flush()).is_ok()).unwrap_or(false);
        if ok {
            Ok(())
        } else {
            Err(self.exited())
        }
    }

    fn notify(&mut self, method: &str) -> Result<(), McpError> {
        self.send(&json!({"jsonrpc": "2.0", "method": method}))
    }

    /// One request and its result; notifications and stale replies in between are skipped.
    pub fn request(&mut self, method: &str, params: Value) -> Result<Value, McpError> {
        let id = self.next_id;
        self.next_id += 1;
        self.send(&json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}))?;
        let deadline = Instant::now() + self.timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let msg = match self.lines.recv_timeout(left) {
                Ok(Line::Message(m)) => m,
                Ok(Line::NotJson(line)) => {
                    let shown: String = line.chars().take(200).collect();
                    return Err(self.protocol(format!("wrote a line that is not JSON-RPC on stdout: `{shown}`")));
                }
                Err(RecvTimeoutError::Timeout) => {
                    return Err(McpError::Timeout { server: self.server.clone(), method: method.into(), ms: self.timeout.as_millis() as u64 })
                }
                Err(RecvTimeoutError::Disconnected) => return Err(self.exited()),
            };
            if msg.get("id").and_then(Value::as_u64) != Some(id) {
                continue;
            }
            if msg.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
                return Err(self.protocol(format!("answered `{method}` without `\"jsonrpc\": \"2.0\"`")));
            }
            if let Some(e) = msg.get("error") {
                let code = e.get("code").and_then(Value::as_i64).unwrap_or(0);
                let message = e.get("message").and_then(Value::as_str).unwrap_or("(no message)").to_string();
                return Err(McpError::Rpc { server: self.server.clone(), method: method.into(), code, message });
            }
            return msg.get("result").cloned().ok_or_else(|| self.protocol(format!("answered `{method}` with neither a result nor an error")));
        }
    }

    /// Every tool the server offers (all pages), as MCP describes them (`name`, `description`, `inputSchema`).
    pub fn list_tools(&mut self) -> Result<Vec<Value>, McpError> {
        let mut tools = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let params = cursor.as_ref().map_or(json!({}), |c| json!({"cursor": c}));
            let page = self.request("tools/list", params)?;
            let Some(list) = page.get("tools").and_then(Value::as_array) else {
                return Err(self.protocol("answered `tools/list` without a `tools` array".into()));
            };
            tools.extend(list.iter().cloned());
            match page.get("nextCursor").and_then(Value::as_str) {
                Some(c) if !c.is_empty() => cursor = Some(c.to_string()),
                _ => return Ok(tools),
            }
        }
    }

    /// Calls a tool: `Ok(text)` for a result, `Err(text)` inside `Ok` for a result with `isError`.
    pub fn call_tool(&mut self, name: &str, arguments: &Value) -> Result<Result<String, String>, McpError> {
        let r = self.request("tools/call", json!({"name": name, "arguments": arguments}))?;
        let text = content_text(&r);
        Ok(if r.get("isError").and_then(Value::as_bool) == Some(true) { Err(text) } else { Ok(text) })
    }
}

/// The text of a `tools/call` result: its text parts (and embedded text resources), one after another; other
/// kinds of content are named, not shown; `structuredContent` stands in when there is no text.
fn content_text(r: &Value) -> String {
    let parts: Vec<String> = r
        .get("content")
        .and_then(Value::as_array)
        .map(|c| {
            c.iter()
                .map(|p| match p.get("type").and_then(Value::as_str) {
                    Some("text") => p.get("text").and_then(Value::as_str).unwrap_or_default().to_string(),
                    Some("resource") => p.pointer("/resource/text").and_then(Value::as_str).map_or("[a resource without text]".into(), str::to_string),
                    Some(other) => format!("[{other} content]"),
                    None => String::new(),
                })
                .collect()
        })
        .unwrap_or_default();
    if parts.iter().all(String::is_empty) {
        if let Some(s) = r.get("structuredContent") {
            return s.to_string();
        }
    }
    parts.join("\n")
}

impl Drop for Client {
    fn drop(&mut self) {
        kill_group(self.child.id());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_becomes_text() {
        let r = json!({"content": [{"type": "text", "text": "a"}, {"type": "image", "data": "..."}, {"type": "text", "text": "b"}]});
        assert_eq!(content_text(&r), "a\n[image content]\nb");
        assert_eq!(content_text(&json!({"content": [], "structuredContent": {"x": 1}})), "{\"x\":1}");
        assert_eq!(content_text(&json!({"content": [{"type": "resource", "resource": {"uri": "u", "text": "t"}}]})), "t");
    }
}
