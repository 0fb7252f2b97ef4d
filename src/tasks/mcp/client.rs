//! A Model Context Protocol client over stdio (`crate::tools::rpc`): the `initialize` handshake with version
//! negotiation, `tools/list` and `tools/call`.
use serde_json::{json, Value};

use super::ServerSpec;
use crate::tools::rpc::{RpcChild, RpcError};

/// The protocol versions this client speaks, newest first; it asks for the first.
pub const PROTOCOL_VERSIONS: &[&str] = &["2025-06-18", "2025-03-26", "2024-11-05"];

pub struct Client {
    rpc: RpcChild,
    /// The version the server agreed to.
    pub protocol_version: String,
}

impl Client {
    /// Starts the server and completes the handshake.
    pub fn start(server: &str, spec: &ServerSpec) -> Result<Client, RpcError> {
        let mut rpc = RpcChild::spawn(format!("server `{server}`"), spec)?;
        let init = rpc.request(
            "initialize",
            json!({"protocolVersion": PROTOCOL_VERSIONS[0], "capabilities": {}, "clientInfo": {"name": "autodidact", "version": env!("CARGO_PKG_VERSION")}}),
        )?;
        let version = init.get("protocolVersion").and_then(Value::as_str).unwrap_or_default().to_string();
        if !PROTOCOL_VERSIONS.contains(&version.as_str()) {
            return Err(rpc.protocol(format!("answered `initialize` with protocol version `{version}`; this client speaks {}", PROTOCOL_VERSIONS.join(", "))));
        }
        rpc.notify("notifications/initialized")?;
        Ok(Client { rpc, protocol_version: version })
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.rpc.pid()
    }

    /// Every tool the server offers (all pages), as MCP describes them (`name`, `description`, `inputSchema`).
    pub fn list_tools(&mut self) -> Result<Vec<Value>, RpcError> {
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
    pub fn call_tool(&mut self, name: &str, arguments: &Value) -> Result<Result<String, String>, RpcError> {
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
