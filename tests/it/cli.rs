//! The binary as users run it: results on stdout, JSON that parses, clear errors and exit codes.
use super::common;

use std::process::Command;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_autodidact"))
}

#[test]
fn generate_json_has_texts_ids_and_logprobs() {
    let model = common::default_model();
    let out = bin()
        .args(["generate", "--model", model.to_str().unwrap(), "--prompt", "What is 2+2?", "--temperature", "0", "--max-new-tokens", "16", "-n", "2", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let outs = v["outputs"].as_array().unwrap();
    assert_eq!(outs.len(), 2);
    assert_eq!(outs[0]["tokens"], outs[1]["tokens"], "greedy samples agree");
    assert_eq!(outs[0]["tokens"].as_array().unwrap().len(), outs[0]["logprobs"].as_array().unwrap().len());
    assert!(v["prompt_tokens"].as_u64().unwrap() > 5);
    assert!(String::from_utf8_lossy(&out.stderr).contains("tokens/s"));
}

#[test]
fn info_reports_the_architecture() {
    let model = common::default_model();
    let out = bin().args(["info", "--json", "--model", model.to_str().unwrap()]).output().unwrap();
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["config"]["arch"], "llama");
    assert_eq!(v["config"]["num_layers"], 30);
    assert_eq!(v["tokenizer"]["vocab_size"], 49152);
    assert!(v["chat_template"]["source"].as_str().unwrap().contains("<|im_start|>"));
    assert!(v["tensor_types"].as_array().unwrap().iter().any(|t| t["type"] == "Q4_1"));
}

#[test]
fn bad_model_path_fails_with_a_message() {
    let out = bin().args(["generate", "--model", "no/such/model.gguf", "--prompt", "hi"]).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no/such/model.gguf") && err.starts_with("error:"), "{err}");
}

#[test]
fn chat_answers_on_stdin_and_exits() {
    use std::io::Write;
    let model = common::default_model();
    let mut child = bin()
        .args(["chat", "--model", model.to_str().unwrap(), "--temperature", "0", "--max-new-tokens", "24"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.as_mut().unwrap().write_all(b"What is the capital of France?\n/exit\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("Paris"));
}
