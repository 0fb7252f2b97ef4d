//! `autodidact train` end to end on a tiny generated model: loss falls, the adapter loads, resume is exact,
//! and the throughput bench reports every shape.
use super::common;

use std::path::Path;
use std::process::Command;

use autodidact::data::dataset::DatasetRow;
use autodidact::data::jsonl::write_jsonl_atomic;
use autodidact::model::LoadedModel;
use common::tiny;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_autodidact"))
}

/// Chat rows tokenized by the tiny model, loss on the assistant answer and its <|im_end|>.
fn dataset(model: &LoadedModel, path: &Path) {
    let rows: Vec<DatasetRow> = [("2+2?", "4"), ("3+5?", "8"), ("1+1?", "2"), ("6+1?", "7")]
        .iter()
        .enumerate()
        .map(|(i, (q, a))| {
            let prompt = model.encode_chat(&[serde_json::json!({"role": "user", "content": q})], None, true).unwrap();
            let mut answer = model.tokenizer.encode(&format!("Answer: {a}")).unwrap();
            answer.push(258);
            let mut loss_mask = vec![0u8; prompt.len()];
            loss_mask.extend(vec![1u8; answer.len()]);
            let mut token_ids = prompt;
            token_ids.extend(answer);
            DatasetRow { id: format!("r{i}"), suite: "arithmetic".into(), difficulty: 1, messages: vec![], tools: vec![], token_ids, loss_mask }
        })
        .collect();
    write_jsonl_atomic(path, &rows).unwrap();
}

fn train(model: &Path, data: &Path, out: &Path, extra: &[&str]) -> serde_json::Value {
    let o = bin()
        .args(["train", "--model", model.to_str().unwrap(), "--data", data.to_str().unwrap(), "--out", out.to_str().unwrap()])
        .args(["--lr", "1e-2", "--warmup", "2", "--batch-size", "2", "--rank", "4", "--alpha", "8", "--seed", "3", "--json"])
        .args(extra)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}

#[test]
fn train_cli_lowers_the_loss_and_writes_a_loadable_adapter() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("tiny");
    tiny::write_hf(&model, "llama", 1);
    let m = LoadedModel::load(model.to_str().unwrap()).unwrap();
    let data = dir.path().join("dataset.jsonl");
    dataset(&m, &data);

    let run = dir.path().join("run");
    let s = train(&model, &data, &run, &["--max-steps", "30"]);
    let (first, last) = (s["first_loss"].as_f64().unwrap(), s["last_loss"].as_f64().unwrap());
    eprintln!("loss {first:.3} -> {last:.3}, {:.0} tok/s", s["tokens_per_second"].as_f64().unwrap());
    assert_eq!(s["steps"], 30);
    assert!(last < 0.5 * first, "loss did not fall: {first} -> {last}");
    assert!(s["tokens_per_second"].as_f64().unwrap() > 0.0);
    let mut with = LoadedModel::load(model.to_str().unwrap()).unwrap();
    with.attach_adapter(&run.join("adapter")).unwrap();
    let ad = with.transformer.adapter.as_ref().unwrap();
    assert_eq!(ad.config.r, 4);
    assert!(ad.layers[0].values().any(|p| p.b.iter().any(|&v| v != 0.0)), "B moved away from zero");

    // Stopping half-way and resuming gives the same adapter bytes as the straight run.
    let split = dir.path().join("split");
    let half = train(&model, &data, &split, &["--max-steps", "30", "--stop-after", "12"]);
    assert_eq!(half["finished"], false);
    assert!(!split.join("adapter").exists());
    let rest = train(&model, &data, &split, &["--max-steps", "30", "--resume"]);
    assert_eq!(rest["steps"], 30);
    for f in ["adapter_model.safetensors", "adapter_config.json"] {
        assert_eq!(std::fs::read(run.join("adapter").join(f)).unwrap(), std::fs::read(split.join("adapter").join(f)).unwrap(), "{f}");
    }
    // The curves cover all 30 steps (loss, gradient norm, learning rate), the resumed run's as well.
    let curves = std::fs::read_to_string(s["plot"].as_str().unwrap()).unwrap();
    assert_eq!(curves.matches("<circle").count(), 3 * 30);
    assert_eq!(curves, std::fs::read_to_string(split.join("loss.svg")).unwrap());
}

#[test]
fn bench_reports_every_shape() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("tiny");
    tiny::write_hf(&model, "llama", 1);
    let o =
        bin().args(["train", "--bench", "--model", model.to_str().unwrap(), "--bench-shapes", "1x32,2x48", "--bench-repeats", "1", "--json"]).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let r = v["results"].as_array().unwrap();
    assert_eq!(r.len(), 2);
    assert_eq!((r[1]["batch"].as_u64(), r[1]["seq_len"].as_u64()), (Some(2), Some(48)));
    assert_eq!(r[1]["trained_tokens"], 2 * 47);
    assert!(r.iter().all(|x| x["tokens_per_second"].as_f64().unwrap() > 0.0));
    assert!(String::from_utf8_lossy(&o.stderr).contains("CANDLE_NUM_THREADS=1"), "main sets the candle pool to one thread");
    // A shape longer than the model's context is refused up front.
    let o = bin().args(["train", "--bench", "--model", model.to_str().unwrap(), "--bench-shapes", "1x4096"]).output().unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("4096"));
}
