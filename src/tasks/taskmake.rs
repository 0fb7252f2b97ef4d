//! `tasks make`: answer tasks from plain question/answer data (JSONL objects or CSV with a header row), so that
//! nobody writes task JSON by hand. Every task made is validated exactly as a loaded task file would be.
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::taskfile::validate_task;
use crate::data::{AnswerSpec, Document, Expected, Matcher, Split, Task, TaskData};

#[derive(Debug, thiserror::Error)]
pub enum MakeError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{}:{line}: field `{field}`: {message}", path.display())]
    Row { path: PathBuf, line: usize, field: String, message: String },
    #[error("{0}")]
    Option(String),
}

/// How rows become tasks: the same for every row.
#[derive(Debug, Clone)]
pub struct MakeOptions {
    pub question_field: String,
    pub answer_field: String,
    /// Other accepted answers: a JSON array, or `|`-separated text.
    pub aliases_field: String,
    /// A row's own id, when the column exists; otherwise `<id_prefix>-<row number>`.
    pub id_field: String,
    pub id_prefix: String,
    pub tools: Vec<String>,
    pub matcher: Matcher,
    pub split: Split,
    pub difficulty: u8,
    pub max_turns: u32,
    /// Documents for `search` / `open`, the same for every task.
    pub documents: Vec<Document>,
}

/// `number`, `number:ABS_TOL`, `exact`, `f1` or `f1:THRESHOLD`.
pub fn parse_matcher(s: &str) -> Result<Matcher, MakeError> {
    let (kind, arg) = s.split_once(':').map_or((s, None), |(k, a)| (k, Some(a)));
    let num = |a: &str| {
        a.parse::<f64>()
            .ok()
            .filter(|v| v.is_finite() && *v >= 0.0)
            .ok_or_else(|| MakeError::Option(format!("--matcher {s}: `{a}` is not a non-negative number")))
    };
    match (kind, arg) {
        ("number", None) => Ok(Matcher::Number { abs_tol: 1e-6, rel_tol: 0.0 }),
        ("number", Some(a)) => Ok(Matcher::Number { abs_tol: num(a)?, rel_tol: 0.0 }),
        ("exact", None) => Ok(Matcher::Exact),
        ("f1", None) => Ok(Matcher::F1 { threshold: 0.8 }),
        ("f1", Some(a)) => Ok(Matcher::F1 { threshold: num(a)? }),
        _ => Err(MakeError::Option(format!("--matcher {s}: expected number, number:ABS_TOL, exact, f1 or f1:THRESHOLD"))),
    }
}

/// The rows of `path` as (line, JSON object): `.csv` files by header, anything else as JSONL.
/// A row's line number and its fields.
type Row = (usize, serde_json::Map<String, Value>);

fn rows(path: &Path) -> Result<Vec<Row>, MakeError> {
    let io = |source| MakeError::Io { path: path.to_path_buf(), source };
    let row_err = |line: usize, field: &str, message: String| MakeError::Row { path: path.to_path_buf(), line, field: field.into(), message };
    let text = std::fs::read_to_string(path).map_err(io)?;
    let mut out = Vec::new();
    if path.extension().is_some_and(|e| e.eq_ignore_ascii_case("csv")) {
        let mut r = csv::ReaderBuilder::new().flexible(false).from_reader(text.as_bytes());
        let header: Vec<String> = r.headers().map_err(|e| row_err(1, "header", e.to_string()))?.iter().map(|h| h.trim().to_string()).collect();
        for rec in r.records() {
            let rec = rec.map_err(|e| row_err(e.position().map_or(0, |p| p.line() as usize), "row", e.to_string()))?;
            let line = rec.position().map_or(0, |p| p.line() as usize);
            out.push((line, header.iter().cloned().zip(rec.iter().map(|v| Value::String(v.to_string()))).collect()));
        }
    } else {
        for (i, l) in text.lines().enumerate() {
            if l.trim().is_empty() {
                continue;
            }
            match serde_json::from_str::<Value>(l) {
                Ok(Value::Object(o)) => out.push((i + 1, o)),
                Ok(_) => return Err(row_err(i + 1, "row", "expected a JSON object".into())),
                Err(e) => return Err(row_err(i + 1, "row", e.to_string())),
            }
        }
    }
    Ok(out)
}

fn text_of(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) => Some(s.trim().to_string()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
    .filter(|s| !s.is_empty())
}

/// One task per row of `path`; the first bad row is the error (file, line, field).
pub fn make_tasks(path: &Path, o: &MakeOptions) -> Result<Vec<Task>, MakeError> {
    let err = |line: usize, field: &str, message: String| MakeError::Row { path: path.to_path_buf(), line, field: field.into(), message };
    let rows = rows(path)?;
    if rows.is_empty() {
        return Err(MakeError::Option(format!("{}: no rows", path.display())));
    }
    let mut seen = std::collections::BTreeMap::new();
    let mut tasks = Vec::with_capacity(rows.len());
    for (n, (line, row)) in rows.into_iter().enumerate() {
        let question = text_of(row.get(&o.question_field)).ok_or_else(|| err(line, &o.question_field, "missing or empty".into()))?;
        let answer = text_of(row.get(&o.answer_field)).ok_or_else(|| err(line, &o.answer_field, "missing or empty".into()))?;
        let aliases = match row.get(&o.aliases_field) {
            None | Some(Value::Null) => vec![],
            Some(Value::Array(a)) => a
                .iter()
                .map(|v| text_of(Some(v)).ok_or_else(|| err(line, &o.aliases_field, "aliases must be non-empty strings".into())))
                .collect::<Result<_, _>>()?,
            Some(v) => text_of(Some(v)).map(|s| s.split('|').map(|x| x.trim().to_string()).filter(|x| !x.is_empty()).collect()).unwrap_or_default(),
        };
        let id = text_of(row.get(&o.id_field)).unwrap_or_else(|| format!("{}-{}", o.id_prefix, n + 1));
        if let Some(first) = seen.insert(id.clone(), line) {
            return Err(err(line, &o.id_field, format!("duplicate id `{id}` (first on line {first})")));
        }
        let mut task = Task {
            id,
            suite: "qa".into(),
            split: o.split,
            difficulty: o.difficulty,
            instruction: question,
            tools: o.tools.iter().map(|t| Value::String(t.clone())).collect(),
            data: if o.documents.is_empty() { TaskData::None } else { TaskData::Documents { documents: o.documents.clone() } },
            expected: Expected::Answer(AnswerSpec { answer, aliases, matcher: o.matcher.clone() }),
            max_turns: o.max_turns,
            optimal_steps: None,
            reference: None,
        };
        validate_task(&mut task).map_err(|e| err(line, &e.field, e.message))?;
        tasks.push(task);
    }
    Ok(tasks)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> MakeOptions {
        MakeOptions {
            question_field: "question".into(),
            answer_field: "answer".into(),
            aliases_field: "aliases".into(),
            id_field: "id".into(),
            id_prefix: "mine".into(),
            tools: vec!["calculator".into()],
            matcher: Matcher::Number { abs_tol: 1e-6, rel_tol: 0.0 },
            split: Split::Train,
            difficulty: 1,
            max_turns: 4,
            documents: vec![],
        }
    }

    fn file(name: &str, text: &str) -> (tempfile::TempDir, PathBuf) {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join(name);
        std::fs::write(&p, text).unwrap();
        (d, p)
    }

    #[test]
    fn csv_and_jsonl_rows_become_valid_answer_tasks() {
        let (_d, p) = file("qa.csv", "question,answer,aliases\n\"What is 6 * 7, exactly?\",42,42.0|42.00\nHow many legs has a spider?,8,\n");
        let t = make_tasks(&p, &opts()).unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!((t[0].id.as_str(), t[0].instruction.as_str(), t[0].split), ("mine-1", "What is 6 * 7, exactly?", Split::Train));
        match &t[0].expected {
            Expected::Answer(a) => assert_eq!((a.answer.as_str(), a.aliases.clone()), ("42", vec!["42.0".to_string(), "42.00".into()])),
            other => panic!("{other:?}"),
        }
        assert_eq!(t[0].tools[0]["function"]["name"], "calculator", "tool names expand to their specs");
        let (_d, p) = file("qa.jsonl", "{\"id\": \"a\", \"question\": \"Capital of France?\", \"answer\": \"Paris\", \"aliases\": [\"Paris, France\"]}\n\n{\"question\": \"2+2?\", \"answer\": 4}\n");
        let t = make_tasks(&p, &MakeOptions { matcher: parse_matcher("exact").unwrap(), ..opts() }).unwrap();
        assert_eq!((t[0].id.as_str(), t[1].id.as_str()), ("a", "mine-2"));
        assert!(matches!(&t[1].expected, Expected::Answer(a) if a.answer == "4"));
    }

    #[test]
    fn bad_rows_and_options_name_file_line_and_field() {
        let (_d, p) = file("qa.csv", "question,answer\nWhat is 1+1?,2\nWhat is 2+2?,\n");
        let e = make_tasks(&p, &opts()).unwrap_err().to_string();
        assert!(e.contains("qa.csv:3") && e.contains("`answer`") && e.contains("missing"), "{e}");
        let (_d, p) = file("qa.jsonl", "{\"question\": \"a?\", \"answer\": \"b\"}\n{\"question\": \"c?\"\n");
        let e = make_tasks(&p, &opts()).unwrap_err().to_string();
        assert!(e.contains("qa.jsonl:2") && e.contains("`row`"), "{e}");
        let (_d, p) = file("qa.jsonl", "{\"id\": \"x\", \"question\": \"a?\", \"answer\": \"1\"}\n{\"id\": \"x\", \"question\": \"c?\", \"answer\": \"2\"}\n");
        let e = make_tasks(&p, &opts()).unwrap_err().to_string();
        assert!(e.contains("qa.jsonl:2") && e.contains("duplicate id"), "{e}");
        let (_d, p) = file("qa.jsonl", "{\"question\": \"a?\", \"answer\": \"1\"}\n");
        let e = make_tasks(&p, &MakeOptions { tools: vec!["shell".into()], ..opts() }).unwrap_err().to_string();
        assert!(e.contains("qa.jsonl:1") && e.contains("tools"), "{e}");
        assert!(parse_matcher("fuzzy").is_err() && parse_matcher("f1:x").is_err());
        assert!(matches!(parse_matcher("number:0.01").unwrap(), Matcher::Number { abs_tol, .. } if abs_tol == 0.01));
    }
}
