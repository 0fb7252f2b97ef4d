//! MCP tool servers as sandboxes: a real server from PyPI (`mcp-server-time`, installed pinned by
//! scripts/mcp-servers.sh) answers the handshake, lists its tools and runs calls inside episodes; servers that
//! misbehave give errors naming them, and no server outlives its client or a killed run.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use serde_json::json;

use autodidact::agent::episode::{run_episodes, Job, Limits, RunConfig};
use autodidact::agent::prompts::{PromptOptions, Prompts};
use autodidact::agent::scripted::{ScriptedPolicy, TurnScript};
use autodidact::data::{Message, Role, Task, Trajectory};
use autodidact::tasks::external::External;
use autodidact::tasks::mcp::client::PROTOCOL_VERSIONS;
use autodidact::tasks::mcp::{Client, McpConfig, McpServers, Scope, ServerSpec};

/// The bin folder of the pinned MCP servers, installed once per test run.
fn servers_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let out = std::process::Command::new("bash").arg(root.join("scripts/mcp-servers.sh")).output().expect("run scripts/mcp-servers.sh");
        assert!(
            out.status.success(),
            "the MCP servers for these tests could not be installed from PyPI (scripts/mcp-servers.sh): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
    })
}

fn time_server() -> ServerSpec {
    ServerSpec {
        command: servers_bin().join("mcp-server-time").display().to_string(),
        url: None,
        args: vec!["--local-timezone".into(), "UTC".into()],
        env: BTreeMap::new(),
        cwd: None,
        scope: Scope::Episode,
        timeout_ms: 30_000,
    }
}

/// A misbehaving server for the fault tests, in Python (which the real servers need anyway).
fn fixture(dir: &Path, mode: &str) -> ServerSpec {
    let script = dir.join("fixture.py");
    std::fs::write(
        &script,
        r#"
import json, os, sys, threading, time
mode = sys.argv[1]
lock = threading.Lock()
busy = [0, 0]
def concurrent(i):
    # Answers after 0.3 s, from a thread of its own, with the most calls it has seen in flight at once.
    with lock:
        busy[0] += 1; busy[1] = max(busy)
    time.sleep(0.3)
    with lock:
        most = busy[1]; busy[0] -= 1
        send({"jsonrpc": "2.0", "id": i, "result": {"content": [{"type": "text", "text": str(most)}]}})
marker = sys.argv[2]
if mode == "nonjson":
    print("Starting server...", flush=True)
def send(m):
    sys.stdout.write(json.dumps(m) + "\n"); sys.stdout.flush()
tool = {"name": "env", "description": "the server's environment", "inputSchema": {"type": "object"}}
if mode == "badschema":
    tool["inputSchema"] = {"type": 5}
for line in sys.stdin:
    m = json.loads(line)
    if "id" not in m:
        continue
    if m["method"] == "initialize":
        version = "1999-01-01" if mode == "badversion" else m["params"]["protocolVersion"]
        send({"jsonrpc": "2.0", "id": m["id"], "result": {"protocolVersion": version, "capabilities": {"tools": {}}, "serverInfo": {"name": "fixture", "version": "0"}}})
    elif m["method"] == "tools/list":
        send({"jsonrpc": "2.0", "id": m["id"], "result": {"tools": [tool]}})
    elif m["method"] == "tools/call":
        if mode == "concurrent":
            threading.Thread(target=concurrent, args=(m["id"],)).start()
            continue
        if mode == "hang":
            time.sleep(3600)
        if mode == "dies" and not os.path.exists(marker):
            open(marker, "w").close()
            sys.stderr.write("fixture: dying on purpose\n"); sys.stderr.flush()
            os._exit(3)
        send({"jsonrpc": "2.0", "id": m["id"], "result": {"content": [{"type": "text", "text": json.dumps(sorted(os.environ))}]}})
"#,
    )
    .unwrap();
    ServerSpec {
        command: servers_bin().join("python").display().to_string(),
        url: None,
        args: vec![script.display().to_string(), mode.into(), dir.join(format!("{mode}.marker")).display().to_string()],
        env: BTreeMap::from([("ONLY_THIS".to_string(), "1".to_string())]),
        cwd: None,
        scope: Scope::Episode,
        timeout_ms: 2_000,
    }
}

/// The process exists and is not a zombie (an orphan's zombie may wait for a reaper that never comes here).
fn alive(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return false };
    let state = stat.rsplit_once(')').and_then(|(_, rest)| rest.trim_start().chars().next());
    !matches!(state, Some('Z') | Some('X') | None)
}

#[test]
fn a_real_server_answers_the_handshake_lists_and_runs_its_tools() {
    let c = Client::start("time", &time_server()).unwrap();
    assert!(PROTOCOL_VERSIONS.contains(&c.protocol_version.as_str()));
    let tools = c.list_tools().unwrap();
    assert!(tools.iter().any(|t| t["name"] == "convert_time"), "{tools:?}");
    let args = json!({"source_timezone": "Asia/Tokyo", "time": "14:30", "target_timezone": "Asia/Kolkata"});
    let text = c.call_tool("convert_time", &args).unwrap().unwrap();
    assert!(text.contains("11:00:00+05:30"), "{text}");
    let bad = c.call_tool("convert_time", &json!({"source_timezone": "Nowhere/Atlantis", "time": "14:30", "target_timezone": "UTC"})).unwrap();
    assert!(bad.is_err(), "an unknown time zone is the tool's error (isError): {bad:?}");
    let pid = c.pid().unwrap();
    drop(c);
    std::thread::sleep(Duration::from_millis(100));
    assert!(!alive(pid), "the server outlived its client");
}

#[test]
fn mcp_tasks_run_as_episodes_on_the_servers_tools() {
    let line = json!({"id": "tz-1", "suite": "mcp", "split": "test", "difficulty": 1, "instruction": "It is 14:30 in Tokyo. What time is it in Kolkata (HH:MM)?",
        "tools": ["convert_time"], "data": {"kind": "mcp", "server": "time"},
        "expected": {"kind": "answer", "answer": "11:00", "matcher": {"type": "exact"}}, "max_turns": 3});
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tz.jsonl");
    std::fs::write(&file, format!("{line}\n")).unwrap();
    let mut tasks = autodidact::tasks::taskfile::load_tasks(&file).unwrap();
    // Without servers configured, the task is refused naming the server.
    let e = McpServers::for_tasks(&McpConfig::default(), tasks.iter_mut()).unwrap_err().to_string();
    assert!(e.contains("`time`") && e.contains("tz-1") && e.contains("not configured"), "{e}");
    let config = McpConfig { servers: BTreeMap::from([("time".to_string(), time_server())]) };
    let servers = McpServers::for_tasks(&config, tasks.iter_mut()).unwrap().unwrap();
    assert_eq!(tasks[0].tool_names(), ["convert_time"], "the named tool, with the server's schema");
    assert!(tasks[0].tools[0].pointer("/function/parameters/properties/target_timezone").is_some());

    let prompts = Prompts::embedded().unwrap();
    let cfg = RunConfig {
        limits: Limits::default(),
        prompts: &prompts,
        prompt_options: PromptOptions::default(),
        identity: Default::default(),
        external: &External { mcp: Some(servers.clone()), envs: None },
    };
    let call = "<tool_call>\n{\"name\": \"convert_time\", \"arguments\": {\"source_timezone\": \"Asia/Tokyo\", \"time\": \"14:30\", \"target_timezone\": \"Asia/Kolkata\"}}\n</tool_call>";
    let jobs: Vec<Job> = (0..2).map(|s| Job { task: &tasks[0], sample_index: s }).collect();
    let mut out: Vec<Trajectory> = Vec::new();
    let mut policy = ScriptedPolicy::new(|_, turn, _: &[Message]| TurnScript::from(if turn == 0 { call } else { "Answer: 11:00" }));
    run_episodes(&mut policy, &jobs, &cfg, |t| out.push(t)).unwrap();
    assert_eq!(out.len(), 2);
    for t in &out {
        assert!(t.verdict.success, "{:?}", t.verdict);
        let tool = t.messages.iter().find(|m| m.role == Role::Tool).unwrap();
        assert!(tool.content.contains("11:00:00+05:30"), "{}", tool.content);
        assert_eq!(t.tools.as_deref(), Some(&tasks[0].tools[..]), "the offered specs travel in the trajectory");
    }
}

/// The SQLite demonstration's prompt parses, and its examples call the server's read-only query tool.
#[test]
fn the_sqlite_demonstrations_prompt_shows_its_tools() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("prompts/mcp-sqlite.md");
    let prompts = Prompts::embedded_with([("mcp", path.as_path())]).unwrap();
    let p = prompts.get("mcp").unwrap();
    assert_eq!(p.examples.len(), 2);
    assert!(p.examples.iter().all(|ex| ex.iter().flat_map(|m| &m.tool_calls).all(|c| c.name == "read_query")));
}

#[test]
fn misbehaving_servers_are_errors_naming_them() {
    let dir = tempfile::tempdir().unwrap();
    let start = |mode: &str| Client::start(mode, &fixture(dir.path(), mode)).err().map(|e| e.to_string()).unwrap_or_default();
    let e = start("nonjson");
    assert!(e.contains("`nonjson`") && e.contains("not JSON-RPC") && e.contains("Starting server"), "{e}");
    let e = start("badversion");
    assert!(e.contains("`badversion`") && e.contains("1999-01-01"), "{e}");
    let missing = ServerSpec { command: "no-such-mcp-server".into(), ..fixture(dir.path(), "ok") };
    let e = Client::start("ghost", &missing).err().unwrap().to_string();
    assert!(e.contains("`ghost`") && e.contains("no-such-mcp-server"), "{e}");

    // A tool whose schema cannot be used is refused when the run starts.
    let mut task: Task = serde_json::from_value(json!({"id": "s-1", "suite": "mcp", "split": "test", "difficulty": 1, "instruction": "x",
        "tools": [], "data": {"kind": "mcp", "server": "badschema"}, "expected": {"kind": "answer", "answer": "1", "matcher": {"type": "exact"}}, "max_turns": 2}))
    .unwrap();
    let config = McpConfig { servers: BTreeMap::from([("badschema".to_string(), fixture(dir.path(), "badschema"))]) };
    let e = McpServers::for_tasks(&config, std::iter::once(&mut task)).unwrap_err().to_string();
    assert!(e.contains("`badschema`") && e.contains("`env`") && e.contains("schema"), "{e}");
}

#[test]
fn a_hung_or_dead_server_is_a_tool_failure_and_is_restarted() {
    let dir = tempfile::tempdir().unwrap();
    let task = |server: &str| -> Task {
        serde_json::from_value(json!({"id": format!("{server}-1"), "suite": "mcp", "split": "test", "difficulty": 1, "instruction": "x",
            "tools": [], "data": {"kind": "mcp", "server": server}, "expected": {"kind": "answer", "answer": "1", "matcher": {"type": "exact"}}, "max_turns": 2}))
        .unwrap()
    };
    let config = McpConfig { servers: ["hang", "dies"].iter().map(|m| (m.to_string(), fixture(dir.path(), m))).collect() };
    let servers = std::sync::Arc::new(McpServers::new(config));
    let call = autodidact::data::ToolCall::new("env", json!({}));

    let mut hung = servers.sandbox(&task("hang")).unwrap();
    let t0 = std::time::Instant::now();
    let e = hung.call(&call).unwrap_err();
    assert!(e.contains("`hang`") && e.contains("no answer") && t0.elapsed() < Duration::from_secs(10), "{e}");

    let mut dies = servers.sandbox(&task("dies")).unwrap();
    let e = dies.call(&call).unwrap_err();
    assert!(e.contains("`dies`") && e.contains("exited") && e.contains("dying on purpose"), "{e}");
    // The next call runs on a fresh server, which sees only its configured environment.
    let env: Vec<String> = serde_json::from_str(&dies.call(&call).unwrap()).unwrap();
    assert!(env.contains(&"ONLY_THIS".to_string()) && !env.contains(&"PATH".to_string()) && !env.contains(&"HOME".to_string()), "{env:?}");
}

/// Run as a child of the test below: starts a server, writes its pid, and waits to be killed.
#[test]
fn child_holding_a_server() {
    let Ok(pid_file) = std::env::var("AUTODIDACT_MCP_TEST_PID_FILE") else { return };
    let c = Client::start("time", &time_server()).unwrap();
    std::fs::write(&pid_file, c.pid().unwrap().to_string()).unwrap();
    std::thread::sleep(Duration::from_secs(60));
}

#[test]
fn a_killed_run_leaves_no_server_behind() {
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("pid");
    servers_bin();
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "mcp::child_holding_a_server", "--test-threads=1"])
        .env("AUTODIDACT_MCP_TEST_PID_FILE", &pid_file)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let t0 = std::time::Instant::now();
    while !pid_file.exists() {
        assert!(t0.elapsed() < Duration::from_secs(60), "the child never started its server");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(100));
    let pid: u32 = std::fs::read_to_string(&pid_file).unwrap().trim().parse().unwrap();
    assert!(alive(pid));
    child.kill().unwrap();
    child.wait().unwrap();
    let t0 = std::time::Instant::now();
    while alive(pid) && t0.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!alive(pid), "server {pid} outlived the killed run");
}

/// A task judged by the user's scorer: the program sees the finished episode and its score is the verdict.
#[test]
fn a_scorer_task_is_judged_by_the_users_program() {
    let dir = tempfile::tempdir().unwrap();
    // Full marks when the episode's last assistant message says 42, a half otherwise.
    let script = dir.path().join("score.py");
    std::fs::write(&script, "import json, sys\nt = json.load(sys.stdin)\nlast = [m['content'] for m in t['messages'] if m['role'] == 'assistant'][-1]\nprint(1.0 if '42' in last else 0.5)\n").unwrap();
    let line = json!({"id": "s-1", "suite": "qa", "split": "test", "difficulty": 1, "instruction": "Say 42.", "tools": ["calculator"],
        "expected": {"kind": "scorer", "command": [servers_bin().join("python").display().to_string(), script.display().to_string()]}, "max_turns": 2});
    let file = dir.path().join("s.jsonl");
    std::fs::write(&file, format!("{line}\n")).unwrap();
    let tasks = autodidact::tasks::taskfile::load_tasks(&file).unwrap();
    let prompts = Prompts::embedded().unwrap();
    let cfg = RunConfig {
        limits: Limits::default(),
        prompts: &prompts,
        prompt_options: PromptOptions::default(),
        identity: Default::default(),
        external: &Default::default(),
    };
    let jobs: Vec<Job> = (0..2).map(|s| Job { task: &tasks[0], sample_index: s }).collect();
    let mut out: Vec<Trajectory> = Vec::new();
    let mut policy = ScriptedPolicy::new(|ep, _, _: &[Message]| TurnScript::from(if ep == 0 { "Answer: 42" } else { "Answer: 41" }));
    run_episodes(&mut policy, &jobs, &cfg, |t| out.push(t)).unwrap();
    out.sort_by_key(|t| t.sample_index);
    assert_eq!((out[0].verdict.success, out[0].verdict.score), (true, 1.0), "{}", out[0].verdict.reason);
    assert_eq!((out[1].verdict.success, out[1].verdict.score), (false, 0.5), "{}", out[1].verdict.reason);
    // A task file that names no program is refused, naming the field.
    std::fs::write(&file, format!("{}\n", json!({"id": "s-2", "suite": "qa", "split": "test", "difficulty": 1, "instruction": "x", "tools": [], "expected": {"kind": "scorer", "command": []}, "max_turns": 2}))).unwrap();
    let e = autodidact::tasks::taskfile::load_tasks(&file).unwrap_err().to_string();
    assert!(e.contains("s.jsonl:1") && e.contains("expected.command"), "{e}");
}

/// A free TCP port on loopback.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A server built with the official Python SDK (FastMCP), over streamable HTTP: the run starts it, each episode
/// gets a session of its own, answers come as server-sent events or as JSON bodies, and the server dies with
/// the run. Other hosts than loopback are refused.
#[test]
fn servers_speak_streamable_http_on_loopback() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("http_server.py");
    std::fs::write(
        &script,
        r#"
import sys
from mcp.server.fastmcp import FastMCP, Context
m = FastMCP("adder", host="127.0.0.1", port=int(sys.argv[1]), json_response=sys.argv[2] == "json")
@m.tool()
def add(a: int, b: int) -> str:
    """Adds two integers."""
    return str(a + b)
@m.tool()
async def session(ctx: Context) -> str:
    """This session's id."""
    return str(id(ctx.session))
m.run(transport="streamable-http")
"#,
    )
    .unwrap();
    for mode in ["sse", "json"] {
        let port = free_port();
        let spec = ServerSpec {
            command: servers_bin().join("python").display().to_string(),
            url: Some(format!("http://127.0.0.1:{port}/mcp")),
            args: vec![script.display().to_string(), port.to_string(), mode.into()],
            env: BTreeMap::new(),
            cwd: None,
            scope: Scope::Episode,
            timeout_ms: 30_000,
        };
        let task: Task = serde_json::from_value(json!({"id": "add-1", "suite": "mcp", "split": "test", "difficulty": 1, "instruction": "2+3?",
            "tools": ["add"], "data": {"kind": "mcp", "server": "adder"}, "expected": {"kind": "answer", "answer": "5", "matcher": {"type": "exact"}}, "max_turns": 2}))
        .unwrap();
        let mut tasks = [task];
        let servers = McpServers::for_tasks(&McpConfig { servers: BTreeMap::from([("adder".to_string(), spec)]) }, tasks.iter_mut()).unwrap().unwrap();
        assert_eq!(tasks[0].tool_names(), ["add"], "{mode}");
        let mut a = servers.sandbox(&tasks[0]).unwrap();
        let mut b = servers.sandbox(&tasks[0]).unwrap();
        assert_eq!(a.call(&autodidact::data::ToolCall::new("add", json!({"a": 2, "b": 3}))).unwrap(), "5", "{mode}");
        let session = autodidact::data::ToolCall::new("session", json!({}));
        let (sa, sb) = (a.call(&session).unwrap(), b.call(&session).unwrap());
        assert_ne!(sa, sb, "{mode}: episodes share a session");
        assert_eq!(a.call(&session).unwrap(), sa, "{mode}: an episode keeps its session");
        let e = a.call(&autodidact::data::ToolCall::new("add", json!({"a": "x"}))).unwrap_err();
        assert!(e.to_lowercase().contains("error"), "{mode}: {e}");
        drop((a, b));
        drop(servers);
        std::thread::sleep(Duration::from_millis(200));
        assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err(), "{mode}: the server outlived the run");
    }
    // A server elsewhere than on this machine is refused before anything is sent.
    let far = ServerSpec { command: String::new(), url: Some("http://example.com/mcp".into()), ..time_server() };
    let e = Client::start("far", &far).err().unwrap().to_string();
    assert!(e.contains("`far`") && e.contains("loopback"), "{e}");
}

/// Episodes sharing one server have their calls in flight at once: each answer goes to the call with its id.
#[test]
fn a_shared_server_takes_several_episodes_calls_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let spec = ServerSpec { scope: Scope::Shared, ..fixture(dir.path(), "concurrent") };
    let servers = std::sync::Arc::new(McpServers::new(McpConfig { servers: BTreeMap::from([("conc".to_string(), spec)]) }));
    let task: Task = serde_json::from_value(json!({"id": "c-1", "suite": "mcp", "split": "test", "difficulty": 1, "instruction": "x",
        "tools": [], "data": {"kind": "mcp", "server": "conc"}, "expected": {"kind": "answer", "answer": "1", "matcher": {"type": "exact"}}, "max_turns": 2}))
    .unwrap();
    let answers: Vec<String> = std::thread::scope(|s| {
        let calls: Vec<_> = (0..4)
            .map(|_| {
                let mut sandbox = servers.sandbox(&task).unwrap();
                s.spawn(move || sandbox.call(&autodidact::data::ToolCall::new("env", json!({}))).unwrap())
            })
            .collect();
        calls.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let most: u32 = answers.iter().map(|a| a.parse::<u32>().unwrap()).max().unwrap();
    assert!(most >= 2, "the calls reached the server one at a time: {answers:?}");
}
