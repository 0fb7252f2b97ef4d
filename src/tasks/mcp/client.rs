//! A Model Context Protocol client, over stdio (`crate::tools::rpc`) or streamable HTTP on loopback (`http`): the
//! `initialize` handshake with version negotiation, `tools/list` and `tools/call`.
use std::sync::Mutex;

use serde_json::{json, Value};

use super::http::HttpSession;
use super::ServerSpec;
use crate::tools::rpc::{RpcChild, RpcError};

/// Over stdio several requests may be in flight at once; an HTTP session takes one at a time.
enum Link {
    Stdio(RpcChild),
    Http(Mutex<HttpSession>),
}

impl Link {
    fn http<T>(h: &Mutex<HttpSession>, f: impl FnOnce(&mut HttpSession) -> Result<T, RpcError>) -> Result<T, RpcError> {
        let mut h = h.lock().map_err(|_| RpcError::Protocol { peer: "MCP server".into(), what: "session poisoned".into() })?;
        f(&mut h)
    }
    fn request(&self, method: &str, params: Value) -> Result<Value, RpcError> {
        match self {
            Link::Stdio(c) => c.request(method, params),
            Link::Http(h) => Self::http(h, |h| h.request(method, params)),
        }
    }
    fn notify(&self, method: &str) -> Result<(), RpcError> {
        match self {
            Link::Stdio(c) => c.notify(method),
            Link::Http(h) => Self::http(h, |h| h.notify(method)),
        }
    }
    fn protocol(&self, what: String) -> RpcError {
        match self {
            Link::Stdio(c) => c.protocol(what),
            Link::Http(h) => Self::http(h, |h| Ok(h.protocol(what))).unwrap_or_else(|e| e),
        }
    }
}

/// The protocol versions this client speaks, newest first; it asks for the first.
pub const PROTOCOL_VERSIONS: &[&str] = &["2025-06-18", "2025-03-26", "2024-11-05"];

pub struct Client {
    rpc: Link,
    /// The version the server agreed to.
    pub protocol_version: String,
}

impl Client {
    /// Starts the server (stdio), or opens a session with it (HTTP), and completes the handshake.
    pub fn start(server: &str, spec: &ServerSpec) -> Result<Client, RpcError> {
        let peer = format!("server `{server}`");
        let rpc = match &spec.url {
            Some(url) => Link::Http(Mutex::new(HttpSession::new(peer, url, spec.timeout_ms)?)),
            None => Link::Stdio(RpcChild::spawn(peer, spec)?),
        };
        let init = rpc.request(
            "initialize",
            json!({"protocolVersion": PROTOCOL_VERSIONS[0], "capabilities": {}, "clientInfo": {"name": "autodidact", "version": env!("CARGO_PKG_VERSION")}}),
        )?;
        let version = init.get("protocolVersion").and_then(Value::as_str).unwrap_or_default().to_string();
        if !PROTOCOL_VERSIONS.contains(&version.as_str()) {
            return Err(rpc.protocol(format!("answered `initialize` with protocol version `{version}`; this client speaks {}", PROTOCOL_VERSIONS.join(", "))));
        }
        if let Link::Http(h) = &rpc {
            Link::http(h, |h| {
                h.set_version(&version);
                Ok(())
            })?;
        }
        rpc.notify("notifications/initialized")?;
        Ok(Client { rpc, protocol_version: version })
    }

    /// The server's process id (over stdio).
    pub fn pid(&self) -> Option<u32> {
        match &self.rpc {
            Link::Stdio(c) => Some(c.pid()),
            Link::Http(_) => None,
        }
    }

    /// Every tool the server offers (all pages), as MCP describes them (`name`, `description`, `inputSchema`).
    pub fn list_tools(&self) -> Result<Vec<Value>, RpcError> {
        let mut tools = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let params = cursor.as_ref().map_or(json!({}), |c| json!({"cursor": c}));
            let page = self.rpc.request("tools/list", params)?;
            let Some(list) = page.get("tools").and_then(Value::as_array) else {
                return Err(self.rpc.protocol("answered `tools/list` without a `tools` array".into()));
            };
            tools.extend(list.iter().cloned());
            match page.get("nextCursor").and_then(Value::as_str) {
                Some(c) if !c.is_empty() => cursor = Some(c.to_string()),
                _ => return Ok(tools),
            }
        }
    }

    /// Calls a tool: `Ok(text)` for a result, `Err(text)` inside `Ok` for a result with `isError`.
    pub fn call_tool(&self, name: &str, arguments: &Value) -> Result<Result<String, String>, RpcError> {
        let r = self.rpc.request("tools/call", json!({"name": name, "arguments": arguments}))?;
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
