//! MCP's streamable HTTP transport, on loopback only: every JSON-RPC message is POSTed to the server's endpoint;
//! a request's answer comes back as one JSON body or within a `text/event-stream` (server-sent events, which may
//! also carry the server's own requests and notifications before it). The session id the server gives at
//! `initialize` (`Mcp-Session-Id`) and the negotiated protocol version go with every later message; the session
//! is ended with DELETE when the client is dropped.
use std::io::{BufRead, BufReader};
use std::net::{IpAddr, SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::tools::rpc::{reply_to_request, result_of, RpcError};

pub struct HttpSession {
    peer: String,
    url: String,
    agent: ureq::Agent,
    session: Option<String>,
    version: Option<String>,
    next_id: u64,
    timeout: Duration,
}

/// The socket address of a loopback URL; any other host is refused (a run talks only to servers on this machine).
pub fn loopback_addr(url: &str) -> Result<SocketAddr, String> {
    let parsed = url::Url::parse(url).map_err(|e| format!("`{url}` is not a URL: {e}"))?;
    if parsed.scheme() != "http" {
        return Err(format!("`{url}`: only http:// on loopback is supported"));
    }
    let host = parsed.host_str().unwrap_or_default().trim_start_matches('[').trim_end_matches(']');
    let port = parsed.port_or_known_default().unwrap_or(80);
    let loopback = host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
    if !loopback {
        return Err(format!("`{url}`: the server must be on loopback (127.0.0.1, ::1 or localhost)"));
    }
    (host, port).to_socket_addrs().ok().and_then(|mut a| a.next()).ok_or_else(|| format!("`{url}`: cannot resolve `{host}`"))
}

/// Waits until something accepts connections at `url` (a server that was just started).
pub fn wait_until_listening(url: &str, timeout: Duration) -> Result<(), String> {
    let addr = loopback_addr(url)?;
    let deadline = Instant::now() + timeout;
    loop {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!("nothing accepted connections at {url} within {} ms", timeout.as_millis()));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl HttpSession {
    pub fn new(peer: String, url: &str, timeout_ms: u64) -> Result<HttpSession, RpcError> {
        loopback_addr(url).map_err(|what| RpcError::Protocol { peer: peer.clone(), what })?;
        let timeout = Duration::from_millis(timeout_ms);
        let agent = ureq::AgentBuilder::new().timeout(timeout).build();
        Ok(HttpSession { peer, url: url.to_string(), agent, session: None, version: None, next_id: 1, timeout })
    }

    pub fn protocol(&self, what: String) -> RpcError {
        RpcError::Protocol { peer: self.peer.clone(), what }
    }

    /// Every later message carries this version.
    pub fn set_version(&mut self, version: &str) {
        self.version = Some(version.to_string());
    }

    fn post(&mut self, msg: &Value, method: &str) -> Result<ureq::Response, RpcError> {
        let mut req = self.agent.post(&self.url).set("Content-Type", "application/json").set("Accept", "application/json, text/event-stream");
        if let Some(s) = &self.session {
            req = req.set("Mcp-Session-Id", s);
        }
        if let Some(v) = &self.version {
            req = req.set("MCP-Protocol-Version", v);
        }
        match req.send_string(&msg.to_string()) {
            Ok(r) => Ok(r),
            Err(ureq::Error::Status(code, r)) => {
                let body: String = r.into_string().unwrap_or_default().chars().take(300).collect();
                Err(self.protocol(format!("answered `{method}` with HTTP {code}: {body}")))
            }
            Err(ureq::Error::Transport(t)) if t.kind() == ureq::ErrorKind::Io && t.to_string().contains("timed out") => {
                Err(RpcError::Timeout { peer: self.peer.clone(), method: method.into(), ms: self.timeout.as_millis() as u64 })
            }
            Err(e) => Err(RpcError::Exited { peer: self.peer.clone(), stderr: format!("HTTP {}: {e}", self.url) }),
        }
    }

    pub fn notify(&mut self, method: &str) -> Result<(), RpcError> {
        self.post(&json!({"jsonrpc": "2.0", "method": method}), method).map(drop)
    }

    pub fn request(&mut self, method: &str, params: Value) -> Result<Value, RpcError> {
        let id = self.next_id;
        self.next_id += 1;
        let resp = self.post(&json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}), method)?;
        if let Some(s) = resp.header("Mcp-Session-Id") {
            self.session = Some(s.to_string());
        }
        let answer = if resp.content_type() == "text/event-stream" {
            self.read_events(resp, id, method)?
        } else {
            let body = resp.into_string().map_err(|e| self.protocol(format!("`{method}`: unreadable answer: {e}")))?;
            let v: Value =
                serde_json::from_str(&body).map_err(|_| self.protocol(format!("answered `{method}` with a body that is not JSON: `{}`", shorten(&body))))?;
            // A batch answer is an array of messages.
            let found = match v {
                Value::Array(items) => items.into_iter().find(|m| m.get("id").and_then(Value::as_u64) == Some(id)),
                m => Some(m),
            };
            found.ok_or_else(|| self.protocol(format!("answered `{method}` without a message of id {id}")))?
        };
        result_of(&self.peer, answer, method)
    }

    /// Reads server-sent events until the answer to `id`; the server's own requests are answered as over stdio.
    fn read_events(&mut self, resp: ureq::Response, id: u64, method: &str) -> Result<Value, RpcError> {
        let mut data = String::new();
        for line in BufReader::new(resp.into_reader()).lines() {
            let line = line.map_err(|e| self.protocol(format!("`{method}`: the event stream broke: {e}")))?;
            if let Some(d) = line.strip_prefix("data:") {
                data.push_str(d.strip_prefix(' ').unwrap_or(d));
                data.push('\n');
                continue;
            }
            if !line.is_empty() || data.is_empty() {
                continue;
            }
            let event = std::mem::take(&mut data);
            let msg: Value =
                serde_json::from_str(event.trim()).map_err(|_| self.protocol(format!("sent an event that is not JSON-RPC: `{}`", shorten(&event))))?;
            if let Some(reply) = reply_to_request(&msg) {
                self.post(&reply, "a reply")?;
                continue;
            }
            if msg.get("id").and_then(Value::as_u64) == Some(id) {
                return Ok(msg);
            }
        }
        Err(self.protocol(format!("ended the event stream without answering `{method}`")))
    }
}

fn shorten(s: &str) -> String {
    s.chars().take(200).collect()
}

impl Drop for HttpSession {
    fn drop(&mut self) {
        if let Some(s) = &self.session {
            let _ = self.agent.delete(&self.url).set("Mcp-Session-Id", s).timeout(Duration::from_secs(2)).call();
        }
    }
}
