//! Hugging Face datasets' Parquet files as chat training data. The fixtures were written by `datasets` and pyarrow
//! (scripts/dev/make_parquet_fixture.py), not by the crate that reads them: each row must read as its JSONL line
//! does, render to the same token ids and loss masks, and train to the same adapter; bad rows name file, row and
//! field, and a file that is not whole names the file.
use super::common;

use std::path::{Path, PathBuf};
use std::process::Command;

use autodidact::data::dataset::{read_training_data, DataLine, DatasetError};
use autodidact::distil::chat::{check_lines, render_lines, TrainingLine};
use autodidact::model::LoadedModel;
use common::tiny;
use serde_json::{json, Map, Value};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

fn objects(path: &Path) -> Vec<Map<String, Value>> {
    read_training_data(path)
        .unwrap_or_else(|e| panic!("{e}"))
        .into_iter()
        .map(|l| match l {
            DataLine::Chat(c) => c.object,
            DataLine::Row(_) => panic!("read as a token row"),
        })
        .collect()
}

/// A JSONL value as a Parquet struct can hold it: a null field and an absent one are the same there.
fn without_nulls(v: &Value) -> Value {
    match v {
        Value::Object(o) => Value::Object(o.iter().filter(|(_, v)| !v.is_null()).map(|(k, v)| (k.clone(), without_nulls(v))).collect()),
        Value::Array(a) => Value::Array(a.iter().map(without_nulls).collect()),
        v => v.clone(),
    }
}

/// Token ids and loss mask of each row.
type Tokens = Vec<(Vec<u32>, Vec<u8>)>;

/// Every row's tokens, and the conversations' ids.
fn render(path: &Path, model: &LoadedModel) -> (Tokens, Vec<String>) {
    let lines = check_lines(path, read_training_data(path).unwrap()).unwrap();
    let ids = lines.iter().map(|l| if let TrainingLine::Chat(c) = l { c.id.clone() } else { panic!("a token row") }).collect();
    let out = render_lines(path, lines, model).unwrap();
    assert!(out.audit.as_ref().unwrap().ok(), "{}", out.audit.unwrap().summary());
    (out.rows.into_iter().map(|r| (r.token_ids, r.loss_mask)).collect(), ids)
}

#[test]
fn parquet_rows_read_and_render_as_their_jsonl_lines() {
    let jsonl = fixture("chat.jsonl");
    let lines = objects(&jsonl);
    // `datasets`' own writer: tools a list of structs, every message struct with every key (null where unset). The
    // columns a row is not read from (`source`, `score`) are left out, as a JSONL line's extra fields are ignored.
    let rows = objects(&fixture("chat.parquet"));
    assert_eq!(rows.len(), 3);
    for (row, line) in rows.iter().zip(&lines) {
        let mut want = without_nulls(&Value::Object(line.clone()));
        want.as_object_mut().unwrap().retain(|k, _| k != "source" && k != "score");
        assert_eq!(Value::Object(row.clone()), want);
    }
    // pyarrow, gzip: tools as a JSON string, call arguments as structs, a binary column that is not text.
    let other = objects(&fixture("chat_tools_json.parquet"));
    assert_eq!(other[1]["messages"][1]["tool_calls"][0]["function"]["arguments"], json!({"country": "France"}));
    assert!(other[1]["tools"].is_string() && !other[0].contains_key("image"));

    let dir = tempfile::tempdir().unwrap();
    let tiny_dir = dir.path().join("tiny");
    tiny::write_hf(&tiny_dir, "llama", 1);
    // The same file under a name that does not say Parquet is known by its magic.
    let unnamed = dir.path().join("chat.data");
    std::fs::copy(fixture("chat.parquet"), &unnamed).unwrap();
    // A template that renders neither tools nor calls (they are written the agent's way), then the ChatML fallback,
    // which renders both itself from the specs as read.
    for fallback in [false, true] {
        if fallback {
            std::fs::write(tiny_dir.join("tokenizer_config.json"), json!({"eos_token": "<|im_end|>", "bos_token": null}).to_string()).unwrap();
        }
        let m = LoadedModel::load(tiny_dir.to_str().unwrap()).unwrap();
        let (want, _) = render(&jsonl, &m);
        assert_eq!(want.len(), 3);
        for p in [fixture("chat.parquet"), fixture("chat_tools_json.parquet"), unnamed.clone()] {
            let (got, ids) = render(&p, &m);
            assert!(got == want, "{}: renders differently from chat.jsonl", p.display());
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            assert_eq!(ids, [format!("{name}: row 1"), "capitals-1".into(), format!("{name}: row 3")]);
        }
    }
}

fn train(model: &Path, data: &Path, out: &Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_autodidact"))
        .args(["train", "--model", model.to_str().unwrap(), "--data", data.to_str().unwrap(), "--out", out.to_str().unwrap()])
        .args(["--max-steps", "3", "--lr", "1e-2", "--warmup", "1", "--batch-size", "2", "--rank", "4", "--seed", "5", "--json"])
        .output()
        .unwrap()
}

#[test]
fn a_parquet_file_trains_to_the_jsonl_adapter_and_bad_files_name_file_row_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("tiny");
    tiny::write_hf(&model, "llama", 2);
    // The byte-level tiny tokenizer makes the longest row ~700 tokens: a longer context than the tiny default.
    let cfg_path = model.join("config.json");
    let mut cfg: Value = serde_json::from_str(&std::fs::read_to_string(&cfg_path).unwrap()).unwrap();
    cfg["max_position_embeddings"] = json!(1024);
    std::fs::write(&cfg_path, cfg.to_string()).unwrap();
    let (x, y) = (dir.path().join("x"), dir.path().join("y"));
    for (data, out) in [(fixture("chat.jsonl"), &x), (fixture("chat.parquet"), &y)] {
        let o = train(&model, &data, out);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    for f in ["adapter_model.safetensors", "adapter_config.json"] {
        assert_eq!(std::fs::read(x.join("adapter").join(f)).unwrap(), std::fs::read(y.join("adapter").join(f)).unwrap(), "{f}");
    }

    let bytes = std::fs::read(fixture("chat.parquet")).unwrap();
    let cut = dir.path().join("cut.parquet");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let cases = [
        (fixture("chat_bad.parquet"), "chat_bad.parquet: row 2: field `messages[4].role`: a user message right after tool results"),
        (fixture("prompt_completion.parquet"), "prompt_completion.parquet: no `messages` column (columns: prompt, completion)"),
        (fixture("chat_zstd.parquet"), "chat_zstd.parquet: column `messages` is compressed with Zstandard, which is not read"),
        (cut.clone(), "cut.parquet: not a readable Parquet file"),
    ];
    for (data, says) in cases {
        let o = train(&model, &data, &dir.path().join("o"));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success() && err.contains(says), "{says}: {err}");
    }
    assert!(!dir.path().join("o").join("adapter").exists());
    // A file cut anywhere, or with its pages damaged, is refused as an error (never a panic) naming the file.
    for len in (0..bytes.len()).step_by(97) {
        std::fs::write(&cut, &bytes[..len]).unwrap();
        match read_training_data(&cut) {
            Err(e @ (DatasetError::Parquet { .. } | DatasetError::Line { .. })) => assert!(e.to_string().starts_with(&cut.display().to_string()), "{e}"),
            other => panic!("{len} bytes: {other:?}"),
        }
    }
    for at in (4..bytes.len() - 8).step_by(13) {
        let mut damaged = bytes.clone();
        damaged[at] ^= 0xff;
        std::fs::write(&cut, &damaged).unwrap();
        if let Err(e) = read_training_data(&cut) {
            assert!(e.to_string().starts_with(&cut.display().to_string()), "{e}");
        }
    }
}
