//! Context distillation: dropping the few-shot examples from a rollout's context keeps the model's sampled
//! ids exactly and rebuilds the prompt as the chat template renders it without examples.
use super::common;

use autodidact::data::dataset::{chat_messages, spans};
use autodidact::data::jsonl::write_jsonl_atomic;
use autodidact::data::Split;
use autodidact::distil::{build_row, ChatEncoder, RowError};
use autodidact::model::LoadedModel;
use autodidact::tasks::suites::{self, generate_many};
use common::template_policy::rollouts;
use common::tiny;

fn sampled_runs(ids: &[u32], mask: &[u8]) -> Vec<Vec<u32>> {
    spans(mask).into_iter().map(|(s, e)| ids[s..e].to_vec()).collect()
}

#[test]
fn dropping_fewshot_keeps_sampled_ids_and_renders_the_short_prompt() {
    let dir = tempfile::tempdir().unwrap();
    tiny::write_hf(dir.path(), "llama", 1);
    let model = LoadedModel::load(dir.path().to_str().unwrap()).unwrap();
    let mut tasks = generate_many(suites::get("arithmetic").unwrap(), 3, Split::Train, 2, 2).unwrap();
    tasks.extend(generate_many(suites::get("grid").unwrap(), 3, Split::Train, 1, 1).unwrap());
    let trajs = rollouts(&model, &tasks, true, None);
    assert_eq!(trajs.len(), 3);
    for t in &trajs {
        assert!(t.verdict.success && t.fewshot_messages > 0, "{}: {:?}", t.task_id, t.verdict);
        let full = build_row(t, None).unwrap();
        let short = build_row(t, Some(&model as &dyn ChatEncoder)).unwrap();
        let r = &short.row;
        // Identical sampled ids, turn by turn, and nothing else trained.
        assert_eq!(sampled_runs(&r.token_ids, &r.loss_mask), sampled_runs(&t.token_ids, &t.produced_mask));
        assert_eq!(r.loss_mask.iter().filter(|&&m| m == 1).count() as u32, t.counts.generated_tokens);
        // Everything from the first real user turn on is the rollout's own tail.
        let cut = t.token_ids.len() - r.token_ids.len();
        assert!(cut > 100, "the few-shot examples were long; only {cut} tokens dropped");
        assert_eq!(&r.token_ids[r.token_ids.len() - 50..], &t.token_ids[t.token_ids.len() - 50..]);
        // The new prompt is exactly what the template renders for [system, user].
        let first = r.loss_mask.iter().position(|&m| m == 1).unwrap();
        let msgs = chat_messages(&[t.messages[0].clone(), t.messages[1 + t.fewshot_messages].clone()]);
        assert_eq!(r.token_ids[..first], model.encode_chat(&msgs, None, true).unwrap()[..]);
        assert_eq!(r.messages.len(), t.messages.len() - t.fewshot_messages);
        assert_eq!(r.messages[1]["content"], t.messages[1 + t.fewshot_messages].content.as_str());
        // End-of-turn positions move with the splice and still point at <|im_end|>.
        assert_eq!(short.stop_turn_ends.len(), full.stop_turn_ends.len());
        for (&s, &f) in short.stop_turn_ends.iter().zip(&full.stop_turn_ends) {
            assert_eq!(r.token_ids[s], 258);
            assert_eq!(s + cut, f);
        }
    }

    // A trajectory whose prefix does not come from this template cannot be aligned: a clear error, not a row.
    let mut tampered = trajs[0].clone();
    tampered.token_ids[5] = 65;
    match build_row(&tampered, Some(&model as &dyn ChatEncoder)) {
        Err(RowError::Splice { id, msg }) => {
            assert!(id.starts_with(&trajs[0].task_id));
            assert!(msg.contains("no rendering of the head aligns"), "{msg}");
        }
        other => panic!("expected a splice error, got {:?}", other.map(|b| b.row.id)),
    }

    // Through the CLI: the audit checks each stopped turn ends with the tokenizer's end-of-turn id.
    let tp = dir.path().join("t.jsonl");
    write_jsonl_atomic(&tp, &trajs).unwrap();
    let out = dir.path().join("ds");
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_autodidact"))
        .args(["filter", "--trajectories", tp.to_str().unwrap(), "--out", out.to_str().unwrap(), "--drop-fewshot", "--model", dir.path().to_str().unwrap()])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let audit: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("mask_audit.json")).unwrap()).unwrap();
    assert_eq!(audit["end_of_turn_ids"]["258"], audit["stop_turns"]);
    assert!(audit["stop_turns"].as_u64().unwrap() >= 6);
    let text = std::fs::read_to_string(out.join("dataset.jsonl")).unwrap();
    assert_eq!(text.lines().count(), 3);
    assert!(!text.contains(&trajs[0].messages[1].content), "few-shot text left in the messages");
}

/// Rows carry structured calls the way chat-data tools expect them, and the model's own template renders a
/// row's `messages` (+ `tools`) back to exactly its `token_ids`, with and without the few-shot examples: on a
/// tiny ChatML model and on the real default model with its own GGUF template.
#[test]
fn dataset_rows_have_structured_calls_and_render_back_to_their_ids() {
    let dir = tempfile::tempdir().unwrap();
    tiny::write_hf(dir.path(), "llama", 1);
    for model in [LoadedModel::load(dir.path().to_str().unwrap()).unwrap(), LoadedModel::load(common::default_model().to_str().unwrap()).unwrap()] {
        rows_render_back(&model);
    }
}

fn rows_render_back(model: &LoadedModel) {
    let tasks = generate_many(suites::get("arithmetic").unwrap(), 5, Split::Train, 2, 2).unwrap();
    for t in &rollouts(model, &tasks, true, None) {
        for encoder in [None, Some(model as &dyn ChatEncoder)] {
            let r = build_row(t, encoder).unwrap().row;
            let rendered = model.encode_chat(&r.messages, Some(&r.tools), false).unwrap();
            assert!(rendered.starts_with(&r.token_ids), "{}: the template does not give back the row's ids", r.id);
            let tail = model.tokenizer.decode(&rendered[r.token_ids.len()..], false).unwrap();
            assert!(tail.trim().is_empty(), "{}: only the newline after the last turn may differ, got {tail:?}", r.id);
            let mut ids = Vec::new();
            for m in &r.messages {
                if let Some(calls) = m["tool_calls"].as_array() {
                    assert_eq!(m["role"], "assistant");
                    for c in calls {
                        assert_eq!(c["type"], "function");
                        assert!(c["function"]["name"].is_string() && c["function"]["arguments"].is_object(), "{c}");
                        ids.push(c["id"].as_str().unwrap().to_string());
                    }
                }
                if m["role"] == "tool" {
                    assert!(m["name"].is_string(), "{m}");
                    assert_eq!(m["tool_call_id"].as_str(), Some(ids.remove(0).as_str()), "a tool turn answers the oldest open call");
                }
            }
            assert!(ids.is_empty());
            assert!(r.messages.iter().any(|m| m["tool_calls"].is_array()), "difficulty 2 takes calls");
        }
    }
}
