//! `autodidact serve` on loopback with the real default model, and rollouts through it: the OpenAI endpoints, run-time
//! adapters, errors, and trajectories that equal in-process ones.
use super::common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::process::Command;

use autodidact::backend::BackendConfig;
use autodidact::data::Message;
use autodidact::model::lora::{LoraAdapter, LoraConfig, Proj};
use autodidact::model::LoadedModel;
use autodidact::rollout::chat_form::ChatForm;
use autodidact::serve::{ServeOptions, Server};
use serde_json::{json, Value};

fn start(key: Option<&str>) -> Server {
    let m = LoadedModel::load(common::default_model().to_str().unwrap()).unwrap();
    let opts = ServeOptions { addr: "127.0.0.1:0".into(), served_name: None, adapters: vec![], api_key: key.map(String::from), cache_bytes: 512 << 20 };
    Server::start(m, opts).unwrap()
}

fn post(url: &str, body: &Value) -> (u16, Value) {
    match ureq::post(url).send_string(&body.to_string()) {
        Ok(r) => (r.status(), serde_json::from_str(&r.into_string().unwrap()).unwrap()),
        Err(ureq::Error::Status(c, r)) => (c, serde_json::from_str(&r.into_string().unwrap()).unwrap()),
        Err(e) => panic!("{url}: {e}"),
    }
}

fn rollout_cmd(extra: &[&str], out: &std::path::Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_autodidact"));
    c.args(["rollout", "--model", common::default_model().to_str().unwrap(), "--suites", "arithmetic,units", "--difficulties", "1"])
        .args(["--tasks-per", "1", "-k", "2", "--seed", "3", "--out", out.to_str().unwrap()])
        .args(extra);
    c
}

/// The episodes of a rollout (see `episodes`).
fn rollout(extra: &[&str], out: &std::path::Path) -> BTreeMap<(String, u64), Value> {
    let o = rollout_cmd(extra, out).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    episodes(out)
}

/// A trajectories file keyed by (task, sample), without wall times and the backend record.
fn episodes(path: &std::path::Path) -> BTreeMap<(String, u64), Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| {
            let mut t: Value = serde_json::from_str(l).unwrap();
            let o = t.as_object_mut().unwrap();
            o.remove("wall_ms");
            o.remove("backend");
            ((t["task_id"].as_str().unwrap().to_string(), t["sample_index"].as_u64().unwrap()), t)
        })
        .collect()
}

#[test]
fn rollouts_through_servers_equal_in_process_ones_shard_exactly_and_survive_a_dead_server() {
    let (a, b) = (start(None), start(None));
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n);
    // Greedy: the server computes exactly what the in-process sampler does (same ids, same log-probs).
    let local = rollout(&["--temperature", "0"], &p("local.jsonl"));
    let remote = rollout(&["--temperature", "0", "--backend-url", &a.url()], &p("remote.jsonl"));
    assert_eq!(local.len(), 4);
    assert_eq!(local, remote, "greedy episodes through the server differ from in-process ones");
    let first: Value = serde_json::from_str(std::fs::read_to_string(p("remote.jsonl")).unwrap().lines().next().unwrap()).unwrap();
    assert_eq!(first["backend"]["token_ids"], json!(true));
    assert_eq!(first["backend"]["logprobs"], json!(true));
    // Sampled: a turn's seed depends on (seed, episode, turn) only, so two servers give what one gives.
    let sampled = ["--temperature", "0.8", "--top-p", "1"];
    let one = rollout(&[&sampled[..], &["--backend-url", &a.url()]].concat(), &p("one.jsonl"));
    let two = rollout(&[&sampled[..], &["--backend-url", &format!("{},{}", a.url(), b.url())]].concat(), &p("two.jsonl"));
    assert_eq!(one, two, "a rollout sharded over two servers differs from one server's");
    assert_ne!(one, remote, "sampling at 0.8 should not reproduce greedy decoding");

    // The same rollout on a server process that is SIGKILLed mid-run: the rollout stops with an error naming the
    // server, and rerun on another server it continues to exactly the uninterrupted episodes.
    let out = p("killed.jsonl");
    let args = |url: &str| rollout_cmd(&[&sampled[..], &["--max-active", "2", "--backend-url", url]].concat(), &out);
    let (mut server, url) = serve_process();
    let run = args(&url).stdout(std::process::Stdio::null()).stderr(std::process::Stdio::piped()).spawn().unwrap();
    // Kill the server once an episode is written (two more have not started).
    while std::fs::read_to_string(&out).map(|s| s.lines().count()).unwrap_or(0) < 1 {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    server.kill().unwrap();
    server.wait().unwrap();
    let o = run.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(err.contains(&url.replace("http://", "")) && err.contains("cannot reach"), "{err}");
    let written = std::fs::read_to_string(&out).unwrap().lines().count();
    assert!((1..4).contains(&written), "{written} episodes written before the server died");

    let (mut server, url) = serve_process();
    let o = args(&url).output().unwrap();
    server.kill().unwrap();
    server.wait().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(episodes(&out), one, "the resumed rollout differs from an uninterrupted one");
    a.stop();
    b.stop();
}

#[test]
fn serve_answers_openai_requests_streamed_or_whole() {
    let s = start(None);
    let url = s.url();
    let models: Value = serde_json::from_str(&ureq::get(&format!("{url}/v1/models")).call().unwrap().into_string().unwrap()).unwrap();
    assert_eq!(models["data"][0]["id"], json!(s.model_name));

    let chat = json!({"messages": [{"role": "user", "content": "What is the capital of France?"}], "max_tokens": 24, "temperature": 0});
    let (code, whole) = post(&format!("{url}/v1/chat/completions"), &chat);
    assert_eq!(code, 200, "{whole}");
    let text = whole["choices"][0]["message"]["content"].as_str().unwrap().to_string();
    assert!(!text.is_empty());
    assert_eq!(
        whole["usage"]["completion_tokens"].as_u64().unwrap() as usize,
        whole["usage"]["total_tokens"].as_u64().unwrap() as usize - whole["usage"]["prompt_tokens"].as_u64().unwrap() as usize
    );

    // The same request streamed: the deltas add up to the whole reply.
    let mut streamed = json!(chat);
    streamed["stream"] = json!(true);
    let body = ureq::post(&format!("{url}/v1/chat/completions")).send_string(&streamed.to_string()).unwrap().into_string().unwrap();
    let events: Vec<&str> = body.lines().filter_map(|l| l.strip_prefix("data: ")).collect();
    assert_eq!(events.last(), Some(&"[DONE]"));
    let joined: String = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str::<Value>(e).unwrap()["choices"][0]["delta"]["content"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(joined, text);

    // Token-id prompts, returned ids and log-probs (what rollouts use).
    let ids: Vec<u32> = vec![504, 3575, 282, 4998];
    let (code, c) = post(&format!("{url}/v1/completions"), &json!({"prompt": ids, "max_tokens": 5, "temperature": 0, "logprobs": 1, "return_token_ids": true}));
    assert_eq!(code, 200, "{c}");
    let choice = &c["choices"][0];
    assert_eq!(choice["token_ids"].as_array().unwrap().len(), 5);
    assert_eq!(choice["logprobs"]["token_logprobs"].as_array().unwrap().len(), 5);
    assert!(choice["logprobs"]["token_logprobs"].as_array().unwrap().iter().all(|l| l.as_f64().unwrap() <= 0.0));
    assert_eq!(choice["finish_reason"], json!("length"));

    // Bad requests: named, not crashes.
    let (code, e) = post(&format!("{url}/v1/chat/completions"), &json!({"model": "nope", "messages": []}));
    assert_eq!(code, 404);
    assert!(e["error"]["message"].as_str().unwrap().contains("nope"), "{e}");
    let (code, e) = post(&format!("{url}/v1/completions"), &json!({"prompt": [99999999], "max_tokens": 2}));
    assert_eq!(code, 400);
    assert!(e["error"]["message"].as_str().unwrap().contains("vocabulary"), "{e}");
    let r = ureq::post(&format!("{url}/v1/completions")).send_string("{not json");
    assert!(matches!(r, Err(ureq::Error::Status(400, _))));

    // Tools offered to a model whose template ignores them (SmolLM2's) reach the prompt as the agent's prompts write
    // them: the prompt is what `ChatForm` gives the template, and it holds the tool and how to call it.
    let m = LoadedModel::load(common::default_model().to_str().unwrap()).unwrap();
    let tool = json!({"type": "function", "function": {"name": "calculator", "description": "Evaluates an arithmetic expression.",
        "parameters": {"type": "object", "properties": {"expression": {"type": "string"}}, "required": ["expression"]}}});
    let ask = json!({"messages": [{"role": "user", "content": "What is 17 * 23?"}], "max_tokens": 1, "temperature": 0});
    let (_, plain) = post(&format!("{url}/v1/chat/completions"), &ask);
    let mut with_tools = ask.clone();
    with_tools["tools"] = json!([tool]);
    let (code, r) = post(&format!("{url}/v1/chat/completions"), &with_tools);
    assert_eq!(code, 200, "{r}");
    let tools = [tool];
    let (msgs, t, _) = ChatForm::of(&m).template_view(&[Message::user("What is 17 * 23?")], &tools);
    let prompt = m.render_chat(&msgs, t, true).unwrap();
    assert!(prompt.contains("{\"type\": \"function\", \"function\": {\"name\": \"calculator\", \"description\": \"Evaluates"), "{prompt}");
    assert!(prompt.contains("To call a tool, write:\n<tool_call>"), "{prompt}");
    let n = r["usage"]["prompt_tokens"].as_u64().unwrap() as usize;
    assert_eq!(n, m.encode_chat(&msgs, t, true).unwrap().len());
    assert!(n > plain["usage"]["prompt_tokens"].as_u64().unwrap() as usize + 50, "{n} prompt tokens with the tool: {plain}");

    // The port is taken: the error names the address.
    let err = Server::start(m, ServeOptions { addr: s.addr.to_string(), served_name: None, adapters: vec![], api_key: None, cache_bytes: 0 })
        .err()
        .expect("a second server on the same port");
    assert!(err.to_string().contains(&s.addr.to_string()), "{err}");
    s.stop();
}

#[test]
fn adapters_load_at_run_time_and_a_fresh_one_changes_nothing() {
    let s = start(None);
    let url = s.url();
    let m = LoadedModel::load(common::default_model().to_str().unwrap()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cfg = LoraConfig { r: 4, alpha: 8.0, dropout: 0.0, targets: vec![Proj::Q, Proj::V], base_model: m.base_name.clone() };
    let fresh = LoraAdapter::new(cfg, &m.transformer.cfg, 1).unwrap();
    fresh.save(&dir.path().join("fresh")).unwrap();
    let mut bent = fresh.clone();
    for l in bent.layers.iter_mut() {
        for p in l.values_mut() {
            p.b.iter_mut().enumerate().for_each(|(i, v)| *v = if i % 3 == 0 { 1.0 } else { -0.7 });
        }
    }
    bent.save(&dir.path().join("bent")).unwrap();

    let client = BackendConfig::new(vec![url.clone()]).connect().unwrap().remove(0);
    client.load_adapter("fresh", &dir.path().join("fresh")).unwrap();
    client.load_adapter("bent", &dir.path().join("bent")).unwrap();
    let ask = |model: &str| {
        let (code, v) = post(
            &format!("{url}/v1/completions"),
            &json!({"model": model, "prompt": "Once upon a time", "max_tokens": 12, "temperature": 0, "return_token_ids": true}),
        );
        assert_eq!(code, 200, "{v}");
        v["choices"][0]["token_ids"].clone()
    };
    let base = ask(&s.model_name);
    assert_eq!(ask("fresh"), base, "a fresh adapter (B = 0) must not change the output");
    assert_ne!(ask("bent"), base, "a non-zero adapter must change the output");
    let names: Value = serde_json::from_str(&ureq::get(&format!("{url}/v1/models")).call().unwrap().into_string().unwrap()).unwrap();
    assert_eq!(names["data"].as_array().unwrap().len(), 3);
    let err = client.load_adapter("missing", &dir.path().join("missing")).unwrap_err();
    assert!(format!("{err:#}").contains("missing"), "{err:#}");
    s.stop();
}

#[test]
fn backend_errors_name_what_was_tried() {
    // A key is required and a wrong one is refused.
    std::env::set_var("AUTODIDACT_TEST_KEY_OK", "k1");
    std::env::set_var("AUTODIDACT_TEST_KEY_BAD", "k2");
    let s = start(Some("k1"));
    let mut cfg = BackendConfig::new(vec![s.url()]);
    cfg.api_key_env = Some("AUTODIDACT_TEST_KEY_BAD".into());
    let err = format!("{:#}", cfg.connect().unwrap_err());
    assert!(err.contains("API key"), "{err}");
    cfg.api_key_env = Some("AUTODIDACT_TEST_KEY_OK".into());
    assert!(cfg.connect().is_ok());
    cfg.model = Some("other-model".into());
    let err = format!("{:#}", cfg.connect().unwrap_err());
    assert!(err.contains("other-model") && err.contains(&s.model_name), "{err}");
    s.stop();

    // Nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut cfg = BackendConfig::new(vec![format!("http://127.0.0.1:{port}")]);
    cfg.retries = 2;
    let err = format!("{:#}", cfg.connect().unwrap_err());
    assert!(err.contains(&format!("127.0.0.1:{port}")) && err.contains("cannot reach") && err.contains("2 times"), "{err}");

    // Something that is not an OpenAI server.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in listener.incoming().flatten().take(1) {
            let mut s = s;
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello");
        }
    });
    let err = format!("{:#}", BackendConfig::new(vec![format!("http://{addr}")]).connect().unwrap_err());
    assert!(err.contains("not JSON") && err.contains(&addr.to_string()), "{err}");
}

/// `autodidact serve` as its own process on a free port.
fn serve_process() -> (std::process::Child, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let child = Command::new(env!("CARGO_BIN_EXE_autodidact"))
        .args(["serve", "--model", common::default_model().to_str().unwrap(), "--port", &port.to_string()])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}");
    for _ in 0..300 {
        if ureq::get(&format!("{url}/health")).call().is_ok() {
            return (child, url);
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let mut child = child;
    let _ = child.kill();
    let _ = child.wait();
    panic!("autodidact serve did not come up at {url}");
}
