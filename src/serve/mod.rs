//! `autodidact serve`: the runtime behind an OpenAI-compatible HTTP endpoint (`/v1/models`, `/v1/completions`,
//! `/v1/chat/completions` with tools and streaming, vLLM's `/v1/load_lora_adapter` and
//! `/v1/unload_lora_adapter`). Requests in flight are decoded together by one engine thread.
pub mod engine;
mod openai;

use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use serde_json::{json, Value};

use crate::model::LoadedModel;
use engine::{Command, Engine, Event, Job, Served};
use openai::{ApiError, Endpoint, Gathered, Parsed};

pub struct ServeOptions {
    /// `host:port`; port 0 picks a free one.
    pub addr: String,
    /// The name requests use for the base model (default: the model's Hugging Face name).
    pub served_name: Option<String>,
    /// Adapters loaded at start-up, as (name, folder).
    pub adapters: Vec<(String, PathBuf)>,
    /// Required as `Authorization: Bearer <key>` when set.
    pub api_key: Option<String>,
    /// Finished turns' KV caches kept for the conversation's next turn.
    pub cache_bytes: usize,
}

/// A running server; dropping it does not stop it (call `stop`).
pub struct Server {
    pub addr: std::net::SocketAddr,
    pub model_name: String,
    http: Arc<tiny_http::Server>,
    accept: std::thread::JoinHandle<()>,
}

struct Ctx {
    tx: Mutex<Sender<Command>>,
    served: Served,
    base: String,
    key: Option<String>,
    counter: std::sync::atomic::AtomicU64,
}

impl Server {
    /// Binds and serves, with the engine on a thread of its own; returns once requests are accepted.
    pub fn start(model: LoadedModel, opts: ServeOptions) -> anyhow::Result<Server> {
        let (server, engine, rx) = Self::bind(model, opts)?;
        std::thread::Builder::new().name("engine".into()).spawn(move || engine.run(rx)).context("starting the engine")?;
        Ok(server)
    }

    /// Binds, calls `ready`, and serves until the process ends with the engine on the calling thread: called
    /// from a rayon worker (as the CLI runs), the model's parallel kernels then have every core; an engine on a
    /// thread of its own while the caller blocks would leave them one worker short.
    pub fn run(model: LoadedModel, opts: ServeOptions, ready: impl FnOnce(&Server)) -> anyhow::Result<()> {
        let (server, engine, rx) = Self::bind(model, opts)?;
        ready(&server);
        engine.run(rx);
        Ok(())
    }

    fn bind(model: LoadedModel, opts: ServeOptions) -> anyhow::Result<(Server, Engine, Receiver<Command>)> {
        let http = tiny_http::Server::http(&opts.addr).map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", opts.addr))?;
        let addr = http.server_addr().to_ip().context("the server's address")?;
        let base = opts.served_name.clone().unwrap_or_else(|| model.base_name.clone());
        let served: Served = Arc::new(Mutex::new(Vec::new()));
        let mut engine = Engine::new(model, base.clone(), opts.cache_bytes, served.clone());
        for (name, dir) in &opts.adapters {
            engine.load_adapter(name, dir).map_err(|e| anyhow::anyhow!("adapter `{name}`: {e}"))?;
        }
        let (tx, rx) = channel();
        let ctx = Arc::new(Ctx { tx: Mutex::new(tx), served, base: base.clone(), key: opts.api_key, counter: Default::default() });
        let http = Arc::new(http);
        let h = http.clone();
        let accept = std::thread::Builder::new()
            .name("accept".into())
            .spawn(move || {
                for req in h.incoming_requests() {
                    let ctx = ctx.clone();
                    std::thread::spawn(move || handle(req, &ctx));
                }
            })
            .context("starting the HTTP listener")?;
        Ok((Server { addr, model_name: base, http, accept }, engine, rx))
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops accepting requests (the engine ends when the last request in flight is answered).
    pub fn stop(self) {
        self.http.unblock();
        let _ = self.accept.join();
    }
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

fn header(name: &str, value: &str) -> tiny_http::Header {
    tiny_http::Header::from_bytes(name.as_bytes(), value.as_bytes()).unwrap_or_else(|_| "X-Invalid: 1".parse().expect("a valid header"))
}

fn json_response(status: u16, v: &Value) -> tiny_http::Response<std::io::Cursor<Vec<u8>>> {
    tiny_http::Response::from_data(v.to_string().into_bytes()).with_status_code(status).with_header(header("Content-Type", "application/json"))
}

fn handle(mut req: tiny_http::Request, ctx: &Ctx) {
    let method = req.method().as_str().to_ascii_uppercase();
    let path = req.url().split('?').next().unwrap_or("").trim_end_matches('/').to_string();
    if let Some(key) = &ctx.key {
        let ok = req.headers().iter().any(|h| h.field.equiv("Authorization") && h.value.as_str() == format!("Bearer {key}"));
        if !ok && path != "/health" {
            let _ = req.respond(json_response(401, &ApiError(401, "missing or wrong API key (Authorization: Bearer ...)".into()).body()));
            return;
        }
    }
    let mut body = Vec::new();
    if let Err(e) = req.as_reader().take(64 << 20).read_to_end(&mut body) {
        let _ = req.respond(json_response(400, &ApiError::bad(format!("reading the request body: {e}")).body()));
        return;
    }
    let result = match (method.as_str(), path.as_str()) {
        ("GET", "/health") => Ok(json_response(200, &json!({"status": "ok"}))),
        ("GET", "/v1/models") => {
            let names = ctx.served.lock().map(|s| s.clone()).unwrap_or_default();
            let data: Vec<Value> = names.iter().map(|n| json!({"id": n, "object": "model", "created": 0, "owned_by": "autodidact"})).collect();
            Ok(json_response(200, &json!({"object": "list", "data": data})))
        }
        ("POST", "/v1/completions") => return generate(req, ctx, Endpoint::Completions, &body),
        ("POST", "/v1/chat/completions") => return generate(req, ctx, Endpoint::Chat, &body),
        ("POST", "/v1/load_lora_adapter") | ("POST", "/v1/unload_lora_adapter") => adapter_command(ctx, &path, &body),
        _ => Err(ApiError(404, format!("no route {method} {path}"))),
    };
    let _ = req.respond(result.unwrap_or_else(|e| json_response(e.0, &e.body())));
}

fn body_json(body: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::bad(format!("the body is not JSON: {e}")))
}

fn send(ctx: &Ctx, c: Command) -> Result<(), ApiError> {
    ctx.tx.lock().map_err(|_| ApiError(500, "the engine is gone".into()))?.send(c).map_err(|_| ApiError(500, "the engine stopped".into()))
}

fn adapter_command(ctx: &Ctx, path: &str, body: &[u8]) -> Result<tiny_http::Response<std::io::Cursor<Vec<u8>>>, ApiError> {
    let v = body_json(body)?;
    let name = v.get("lora_name").and_then(Value::as_str).ok_or_else(|| ApiError::bad("`lora_name` missing"))?.to_string();
    let (reply, rx) = channel();
    if path.ends_with("unload_lora_adapter") {
        send(ctx, Command::UnloadAdapter { name: name.clone(), reply })?;
    } else {
        let dir = v.get("lora_path").and_then(Value::as_str).ok_or_else(|| ApiError::bad("`lora_path` missing"))?;
        send(ctx, Command::LoadAdapter { name: name.clone(), path: PathBuf::from(dir), reply })?;
    }
    match rx.recv() {
        Ok(Ok(())) => Ok(json_response(200, &json!({"status": "ok", "lora_name": name}))),
        Ok(Err(e)) => Err(ApiError::bad(e)),
        Err(_) => Err(ApiError(500, "the engine stopped".into())),
    }
}

fn generate(req: tiny_http::Request, ctx: &Ctx, ep: Endpoint, body: &[u8]) {
    let parsed = body_json(body).and_then(|v| openai::parse(ep, &v, &ctx.base)).and_then(|p| {
        let served = ctx.served.lock().map(|s| s.contains(&p.model)).unwrap_or(false);
        if served {
            Ok(p)
        } else {
            Err(ApiError(404, format!("model `{}` does not exist here (GET /v1/models lists what is served)", p.model)))
        }
    });
    let p = match parsed {
        Ok(p) => p,
        Err(e) => {
            let _ = req.respond(json_response(e.0, &e.body()));
            return;
        }
    };
    let (events, rx) = channel();
    let job = Job { model: p.model.clone(), prompt: p.prompt.clone(), params: p.params.clone(), events };
    if let Err(e) = send(ctx, Command::Generate(job)) {
        let _ = req.respond(json_response(e.0, &e.body()));
        return;
    }
    let n = ctx.counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let id = format!("{}-{n}", if ep == Endpoint::Chat { "chatcmpl" } else { "cmpl" });
    if p.stream {
        // Written by hand and flushed per event: tiny_http's chunked encoder holds 8 KB back.
        let mut sse = Sse { rx, ep, p, id, created: now(), buf: Vec::new(), done: false, started: false, gathered: Gathered::default() };
        let mut w = req.into_writer();
        let mut ok =
            w.write_all(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\nTransfer-Encoding: chunked\r\n\r\n").is_ok();
        while ok && sse.next_event() {
            if sse.buf.is_empty() {
                continue; // an empty chunk would end the body
            }
            let mut chunk = format!("{:x}\r\n", sse.buf.len()).into_bytes();
            chunk.extend_from_slice(&sse.buf);
            chunk.extend_from_slice(b"\r\n");
            ok = w.write_all(&chunk).and_then(|()| w.flush()).is_ok();
            sse.buf.clear();
        }
        if ok {
            let _ = w.write_all(b"0\r\n\r\n").and_then(|()| w.flush());
        }
        return;
    }
    let mut g = Gathered::default();
    let result = loop {
        match rx.recv() {
            Ok(e) => match g.add(e) {
                Ok(true) => break Ok(()),
                Ok(false) => {}
                Err(m) => break Err(ApiError::bad(m)),
            },
            Err(_) => break Err(ApiError(500, "the engine stopped".into())),
        }
    };
    let response = match result {
        Ok(()) => json_response(200, &openai::reply(ep, &p, &id, now(), &g)),
        Err(e) => json_response(e.0, &e.body()),
    };
    let _ = req.respond(response);
}

/// A streamed reply: server-sent events, one per token (chat requests with tools send their reply whole at the
/// end, once it is known whether it is a tool call).
struct Sse {
    rx: Receiver<Event>,
    ep: Endpoint,
    p: Parsed,
    id: String,
    created: u64,
    buf: Vec<u8>,
    done: bool,
    started: bool,
    gathered: Gathered,
}

impl Sse {
    fn push(&mut self, v: &Value) {
        self.buf.extend_from_slice(format!("data: {v}\n\n").as_bytes());
    }

    /// Fills `buf` with the next event's lines; false at the end of the stream.
    fn next_event(&mut self) -> bool {
        if self.done {
            return false;
        }
        let (ep, model, id, created) = (self.ep, self.p.model.clone(), self.id.clone(), self.created);
        if ep == Endpoint::Chat && !self.started {
            self.started = true;
            self.push(&openai::chunk(ep, &model, &id, created, None, Some(json!({"role": "assistant", "content": ""})), None));
            return true;
        }
        let event = match self.rx.recv() {
            Ok(e) => e,
            Err(_) => Event::Error("the engine stopped".into()),
        };
        let text = match &event {
            Event::Token { text, .. } => Some(text.clone()),
            _ => None,
        };
        match self.gathered.add(event) {
            Ok(false) => {
                if !(ep == Endpoint::Chat && self.p.tools) {
                    if let Some(t) = text.filter(|t| !t.is_empty()) {
                        self.push(&openai::chunk(ep, &model, &id, created, Some(&t), None, None));
                    }
                }
            }
            Ok(true) => {
                let g = &self.gathered;
                let (delta, calls) = if ep == Endpoint::Chat && self.p.tools {
                    let (mut m, calls) = openai::assistant_message(&g.text, true);
                    if let Some(list) = m.get_mut("tool_calls").and_then(Value::as_array_mut) {
                        for (i, c) in list.iter_mut().enumerate() {
                            c["index"] = json!(i);
                        }
                    }
                    (Some(m), calls)
                } else {
                    (Some(json!({})), false)
                };
                let finish = openai::finish_reason(g.stopped, calls);
                let last = openai::chunk(ep, &model, &id, created, Some(""), if ep == Endpoint::Chat { delta } else { None }, Some(finish));
                self.push(&last);
                self.buf.extend_from_slice(b"data: [DONE]\n\n");
                self.done = true;
            }
            Err(m) => {
                self.push(&ApiError::bad(m).body());
                self.done = true;
            }
        }
        true
    }
}
