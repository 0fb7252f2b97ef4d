//! Plain chat datasets (`messages` + `tools`, OpenAI / TRL form) as training rows: rendered exactly as the model's
//! template renders the conversation, the loss on assistant turns only; a `filter` dataset trains to the same
//! adapter with or without its token fields; bad rows name file, line and field.
use super::common;

use std::path::Path;
use std::process::Command;

use autodidact::data::dataset::{read_training_data, spans, DatasetRow};
use autodidact::data::jsonl::write_jsonl_atomic;
use autodidact::data::Message;
use autodidact::data::Split;
use autodidact::distil::chat::{check_lines, render_lines, Conversation, TrainingLine};
use autodidact::distil::{build_row, ChatEncoder};
use autodidact::model::LoadedModel;
use autodidact::rollout::chat_form::ChatForm;
use autodidact::rollout::policy::ChatView;
use autodidact::tasks::suites::{self, generate_many};
use common::template_policy::rollouts;
use common::tiny;
use serde_json::{json, Value};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_autodidact"))
}

fn calculator() -> Value {
    json!({"type": "function", "function": {"name": "calculator", "description": "Evaluates an arithmetic expression.",
        "parameters": {"type": "object", "properties": {"expression": {"type": "string"}}, "required": ["expression"]}}})
}

/// A TRL-style row: a call with `content: null` and arguments as a JSON string (OpenAI's form), its tool message,
/// the answer, then a second exchange; one assistant turn kept out of the loss with `"weight": 0`.
fn conversation() -> Value {
    json!({"tools": [calculator()], "messages": [
        {"role": "system", "content": "You are a careful assistant."},
        {"role": "user", "content": "What is 17 * 23?"},
        {"role": "assistant", "content": null, "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "calculator", "arguments": "{\"expression\": \"17 * 23\"}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "391"},
        {"role": "assistant", "content": "17 * 23 = 391."},
        {"role": "user", "content": "And half of it?"},
        {"role": "assistant", "content": "Half of 391 is 195.5.", "weight": 0},
        {"role": "user", "content": "Thanks!"},
        {"role": "assistant", "content": "You're welcome."}
    ]})
}

fn read_chat(dir: &Path, rows: &[Value]) -> (std::path::PathBuf, Vec<TrainingLine>) {
    let path = dir.join("chat.jsonl");
    write_jsonl_atomic(&path, rows).unwrap();
    let lines = check_lines(&path, read_training_data(&path).unwrap()).unwrap();
    (path, lines)
}

fn conversation_of(lines: &[TrainingLine]) -> &Conversation {
    match &lines[0] {
        TrainingLine::Chat(c) => c,
        TrainingLine::Row(_) => panic!("read as a token row"),
    }
}

/// The rendered row is the template's rendering of the whole conversation (as tokenized in one piece), cut after
/// the last trained turn; exactly the trained assistant turns and their end-of-turn tokens carry the loss.
fn check_rendering(model: &LoadedModel, dir: &Path) -> String {
    let (path, lines) = read_chat(dir, &[conversation()]);
    let c = conversation_of(&lines).clone();
    let out = render_lines(&path, lines, model).unwrap();
    let audit = out.audit.as_ref().unwrap();
    assert!(audit.ok(), "{}", audit.summary());
    let row = &out.rows[0];
    let (msgs, tools, _) = ChatForm::of(model).template_view(&c.messages, &c.tools);
    let whole = model.encode_chat(&msgs, tools, false).unwrap();
    assert_eq!(row.token_ids[..], whole[..row.token_ids.len()], "the row is not the whole conversation's tokens");
    let eot = model.tokenizer.decode(&[*row.token_ids.last().unwrap()], false).unwrap();
    let trained: Vec<String> = spans(&row.loss_mask).iter().map(|&(s, e)| model.tokenizer.decode(&row.token_ids[s..e], false).unwrap()).collect();
    let call = "<tool_call>\n{\"name\": \"calculator\", \"arguments\": {\"expression\": \"17 * 23\"}}\n</tool_call>";
    assert_eq!(trained, [format!("{call}{eot}"), format!("17 * 23 = 391.{eot}"), format!("You're welcome.{eot}")]);
    assert_eq!(audit.stop_turns_trained, 3);
    assert_eq!(row.messages[6]["weight"], json!(0));
    model.tokenizer.decode(&row.token_ids, false).unwrap()
}

#[test]
fn chat_rows_render_as_the_template_renders_the_conversation() {
    let dir = tempfile::tempdir().unwrap();
    // The real default model: SmolLM2's template renders neither tools nor calls, so they are written the agent's way.
    let m = LoadedModel::load(common::default_model().to_str().unwrap()).unwrap();
    assert_eq!(ChatForm::of(&m), ChatForm { tools: false, tool_calls: false, tool_role: true, empty_think: false });
    let text = check_rendering(&m, dir.path());
    assert!(
        text.starts_with("<|im_start|>system\nYou are a careful assistant.\n\nYou can call tools. Available tools:\n<tools>\n{\"type\": \"function\""),
        "{text}"
    );
    assert!(text.contains("<|im_start|>tool\n391<|im_end|>"), "{text}");
    // A tiny generated model whose template is plain ChatML.
    let tiny_dir = dir.path().join("tiny");
    tiny::write_hf(&tiny_dir, "llama", 1);
    let t = LoadedModel::load(tiny_dir.to_str().unwrap()).unwrap();
    check_rendering(&t, dir.path());
    // A template that renders tools and calls itself (the ChatML fallback, Qwen2.5's format) is given them as they are.
    std::fs::write(tiny_dir.join("tokenizer_config.json"), json!({"eos_token": "<|im_end|>", "bos_token": null}).to_string()).unwrap();
    let q = LoadedModel::load(tiny_dir.to_str().unwrap()).unwrap();
    assert_eq!(ChatForm::of(&q), ChatForm { tools: true, tool_calls: true, tool_role: true, empty_think: false });
    let text = check_rendering(&q, dir.path());
    assert!(text.contains("# Tools\n\nYou may call one or more functions"), "{text}");
    assert!(text.contains("<|im_start|>user\n<tool_response>\n391\n</tool_response><|im_end|>"), "{text}");
}

fn train(model: &Path, data: &Path, out: &Path) -> Value {
    let o = bin()
        .args(["train", "--model", model.to_str().unwrap(), "--data", data.to_str().unwrap(), "--out", out.to_str().unwrap()])
        .args(["--max-steps", "4", "--lr", "1e-2", "--warmup", "1", "--batch-size", "2", "--rank", "4", "--seed", "5", "--json"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}

#[test]
fn a_filter_dataset_trains_to_the_same_adapter_without_its_token_fields() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("tiny");
    tiny::write_hf(&model, "llama", 2);
    // Rows with the few-shot examples run to ~1,300 tokens: a longer context than the tiny model's default.
    let cfg_path = model.join("config.json");
    let mut cfg: Value = serde_json::from_str(&std::fs::read_to_string(&cfg_path).unwrap()).unwrap();
    cfg["max_position_embeddings"] = json!(4096);
    std::fs::write(&cfg_path, cfg.to_string()).unwrap();
    let m = LoadedModel::load(model.to_str().unwrap()).unwrap();
    let tasks = generate_many(suites::get("arithmetic").unwrap(), 3, Split::Train, 2, 3).unwrap();
    let trajs = rollouts(&m, &tasks, true, None);
    // Rows with their few-shot examples in the context (weight 0) and one without them (context distillation).
    let mut rows: Vec<DatasetRow> = trajs.iter().map(|t| build_row(t, None).unwrap().row).collect();
    rows.push(build_row(&trajs[0], Some(&m as &dyn ChatEncoder)).unwrap().row);
    assert!(rows.iter().all(|r| r.messages.iter().any(|v| v.get("tool_calls").is_some())), "every episode calls a tool");
    let ours = dir.path().join("dataset.jsonl");
    write_jsonl_atomic(&ours, &rows).unwrap();
    let chat: Vec<Value> =
        rows.iter().map(|r| json!({"id": r.id, "suite": r.suite, "difficulty": r.difficulty, "messages": r.messages, "tools": r.tools})).collect();
    let (path, lines) = read_chat(dir.path(), &chat);
    let rendered = render_lines(&path, lines, &m).unwrap();
    for (a, b) in rendered.rows.iter().zip(&rows) {
        assert_eq!((&a.token_ids, &a.loss_mask), (&b.token_ids, &b.loss_mask), "{}", b.id);
    }
    let (x, y) = (dir.path().join("x"), dir.path().join("y"));
    let (sx, sy) = (train(&model, &ours, &x), train(&model, &path, &y));
    assert_eq!(sx["first_loss"], sy["first_loss"]);
    for f in ["adapter_model.safetensors", "adapter_config.json"] {
        assert_eq!(std::fs::read(x.join("adapter").join(f)).unwrap(), std::fs::read(y.join("adapter").join(f)).unwrap(), "{f}");
    }
    let audit: Value = serde_json::from_str(&std::fs::read_to_string(y.join("mask_audit.json")).unwrap()).unwrap();
    assert_eq!((audit["rows"].as_u64(), audit["problems"].as_array().map(Vec::len)), (Some(rows.len() as u64), Some(0)));
}

#[test]
fn bad_chat_rows_name_file_line_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("tiny");
    tiny::write_hf(&model, "llama", 1);
    let good = conversation();
    let token_row = json!({"id": "a#0", "suite": "s", "difficulty": 1, "messages": [], "token_ids": [1, 2], "loss_mask": [0, 1]});
    let mut out_of_order = good.clone();
    out_of_order["messages"][4]["role"] = json!("user");
    let mut no_call = good.clone();
    no_call["messages"][2] = json!({"role": "assistant", "content": "Let me compute."});
    let mut undeclared = good.clone();
    undeclared["messages"][2]["tool_calls"][0]["function"]["name"] = json!("search");
    let cases = [
        (vec![good.clone(), token_row.clone()], 2, "a file holds rows of one form"),
        (vec![token_row, good.clone()], 2, "a file holds rows of one form"),
        (vec![good.clone(), json!({"prompt": "p", "completion": "c"})], 2, "neither a row with `token_ids`"),
        (vec![good.clone(), good.clone(), out_of_order], 3, "field `messages[4].role`: a user message right after tool results"),
        (vec![no_call], 1, "field `messages[3].role`: a tool message without a call"),
        (vec![good, undeclared], 2, "field `messages[2].tool_calls[0].function.name`: `search` names no declared tool (declared: calculator)"),
    ];
    for (rows, line, says) in cases {
        let data = dir.path().join("bad.jsonl");
        write_jsonl_atomic(&data, &rows).unwrap();
        let o = bin()
            .args(["train", "--model", model.to_str().unwrap(), "--data", data.to_str().unwrap(), "--out", dir.path().join("o").to_str().unwrap()])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success());
        assert!(err.contains(&format!("bad.jsonl:{line}: ")), "{says}: {err}");
        assert!(err.contains(says), "{says}: {err}");
    }
    assert!(!dir.path().join("o").join("adapter").exists());
}

/// Qwen3's own template (tests/fixtures/qwen3_chat_template.jinja, Qwen3-0.6B's) opens the model's turn with an empty
/// think block and renders that block again in earlier turns only for messages that carry reasoning. Assistant
/// messages are given an empty reasoning, so an agent episode's every prompt extends what the model saw, and a chat
/// row of several turns renders with the loss on the assistant's own text only.
#[test]
fn qwen3_template_renders_earlier_turns_as_the_model_saw_them() {
    let dir = tempfile::tempdir().unwrap();
    let tiny_dir = dir.path().join("qwen3");
    tiny::write_hf(&tiny_dir, "qwen3", 1);
    let template = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/qwen3_chat_template.jinja")).unwrap();
    std::fs::write(tiny_dir.join("tokenizer_config.json"), json!({"eos_token": "<|im_end|>", "bos_token": null, "chat_template": template}).to_string())
        .unwrap();
    let m = LoadedModel::load(tiny_dir.to_str().unwrap()).unwrap();
    assert!(ChatForm::of(&m).empty_think);
    let view = ChatView::new(&m);
    let mut messages = vec![Message::system("Use the calculator."), Message::user("What is 17 * 23?")];
    let (mut seen, _) = view.delta(0, &messages, "").unwrap();
    assert!(seen.ends_with("<|im_start|>assistant\n<think>\n\n</think>\n\n"), "{seen}");
    let call = "<tool_call>\n{\"name\": \"calculator\", \"arguments\": {\"expression\": \"17 * 23\"}}\n</tool_call>";
    for (turn, reply) in [call, call, "17 * 23 = 391."].into_iter().enumerate() {
        seen.push_str(&view.sampled_text(reply, Some(view.turn_end())));
        messages.push(Message::assistant(reply));
        messages.push(Message::tool(Some("calculator"), "391"));
        let (rest, _) = view.delta(0, &messages, &seen).unwrap_or_else(|e| panic!("turn {turn}: {e:#}"));
        assert!(rest.starts_with("\n<|im_start|>user\n<tool_response>\n391\n</tool_response>"), "{rest}");
        seen.push_str(&rest);
    }
    assert_eq!(seen.matches("<think>\n\n</think>\n\n").count(), 4, "{seen}");
    // A chat row of one query with a tool call: both assistant turns trained, each after its think block. (A second
    // query makes the template drop the earlier blocks; such a row is refused at that message.)
    let mut row = conversation();
    row["messages"].as_array_mut().unwrap().truncate(5);
    let (path, lines) = read_chat(dir.path(), &[row]);
    let out = render_lines(&path, lines, &m).unwrap();
    assert!(out.audit.as_ref().unwrap().ok());
    let r = &out.rows[0];
    let text = m.tokenizer.decode(&r.token_ids, false).unwrap();
    let trained: Vec<String> = spans(&r.loss_mask).iter().map(|&(s, e)| m.tokenizer.decode(&r.token_ids[s..e], false).unwrap()).collect();
    assert_eq!(trained.len(), 2, "{trained:?}");
    assert!(trained[1] == "17 * 23 = 391.<|im_end|>", "{trained:?}");
    for t in &trained {
        assert!(text.contains(&format!("<|im_start|>assistant\n<think>\n\n</think>\n\n{t}")), "{text}");
    }
}
