//! Parquet training files, as Hugging Face `datasets` (pyarrow) and pandas write them: each row becomes the
//! JSON object its JSONL line would be, so `dataset::read_training_data` checks both kinds of file in one place and
//! their errors read alike (`row N` where JSONL has a line).
//!
//! Only the columns a training row is read from are decoded: a dataset's other columns (images, scores, metadata)
//! are never read, as a JSONL line's other fields are ignored. A null struct field is left out of its object: a
//! Parquet struct column gives every row the union of the keys seen when it was written (a user message gets
//! `tool_calls: null`, one tool's parameters every other tool's properties), where the JSONL line had no such key.
use std::fs::File;
use std::io::Read;
use std::path::Path;

use parquet::basic::Compression;
use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::record::{Field, Row};
use parquet::schema::types::Type;
use serde_json::{Map, Number, Value};

use super::dataset::{DatasetError, RowAt};

/// The columns of a chat row and of a row written by `filter`.
const COLUMNS: [&str; 7] = ["messages", "tools", "id", "suite", "difficulty", "token_ids", "loss_mask"];

/// A `.parquet` name, or the `PAR1` magic under any name.
pub fn is_parquet(path: &Path) -> std::io::Result<bool> {
    if path.extension().is_some_and(|e| e.eq_ignore_ascii_case("parquet")) {
        return Ok(true);
    }
    let mut magic = [0u8; 4];
    match File::open(path)?.read_exact(&mut magic) {
        Ok(()) => Ok(&magic == b"PAR1"),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(false),
        Err(e) => Err(e),
    }
}

type Objects = Vec<(RowAt, Result<Map<String, Value>, String>)>;

/// Every row of the file in order, each as a JSON object or the reason it cannot be one (naming the field). A file
/// that cannot be read as a whole is an error naming it.
pub fn read_objects(path: &Path) -> Result<Objects, DatasetError> {
    let file = File::open(path).map_err(|source| DatasetError::Io { path: path.into(), source })?;
    let rows_read = std::cell::Cell::new(0);
    // The `parquet` crate panics on some damaged pages (a failed assertion on nesting levels, an index past a short
    // buffer) where it could return an error: a panic there is a bad file, not a crash.
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| decode(path, file, &rows_read))).unwrap_or_else(|_| {
        let message = format!("damaged: the Parquet reader gave up at row {}", rows_read.get() + 1);
        Err(DatasetError::Parquet { path: path.into(), message })
    })
}

fn decode(path: &Path, file: File, rows_read: &std::cell::Cell<usize>) -> Result<Objects, DatasetError> {
    let fail = |message: String| DatasetError::Parquet { path: path.into(), message };
    let reader = SerializedFileReader::new(file).map_err(|e| fail(format!("not a readable Parquet file: {e}")))?;
    let meta = reader.metadata();
    let root = meta.file_metadata().schema();
    let fields: Vec<_> = root.get_fields().iter().filter(|f| COLUMNS.contains(&f.name())).cloned().collect();
    if !fields.iter().any(|f| f.name() == "messages") {
        let names: Vec<&str> = root.get_fields().iter().map(|f| f.name()).collect();
        return Err(fail(format!(
            "no `messages` column (columns: {}); a chat dataset has `messages` and optional `tools`",
            if names.is_empty() { "none".to_string() } else { names.join(", ") }
        )));
    }
    for column in meta.row_groups().iter().flat_map(|g| g.columns()) {
        let name = column.column_path().parts().first().map_or("", String::as_str);
        if let (true, Some(codec)) = (COLUMNS.contains(&name), unsupported(column.compression())) {
            return Err(fail(format!(
                "column `{name}` is compressed with {codec}, which is not read (Snappy, gzip or none are); write the file \
                 again with another codec, e.g. pyarrow.parquet.write_table(table, path, compression=\"snappy\")"
            )));
        }
    }
    let projection = Type::group_type_builder(root.name()).with_fields(fields).build().map_err(|e| fail(format!("not a readable Parquet file: {e}")))?;
    let rows = reader.get_row_iter(Some(projection)).map_err(|e| fail(format!("not a readable Parquet file: {e}")))?;
    let mut out = Vec::new();
    for (i, row) in rows.enumerate() {
        let at = RowAt::Row(i + 1);
        let row = row.map_err(|e| DatasetError::Line { path: path.into(), at, message: format!("not a readable Parquet row: {e}") })?;
        out.push((at, object(row)));
        rows_read.set(i + 1);
    }
    Ok(out)
}

/// The name of a codec this build does not decompress (the `parquet` dependency's features).
fn unsupported(c: Compression) -> Option<&'static str> {
    match c {
        Compression::UNCOMPRESSED | Compression::SNAPPY | Compression::GZIP(_) => None,
        Compression::ZSTD(_) => Some("Zstandard"),
        Compression::BROTLI(_) => Some("Brotli"),
        Compression::LZ4 | Compression::LZ4_RAW => Some("LZ4"),
        Compression::LZO => Some("LZO"),
    }
}

/// Where a value sits in its row, rendered only for an error, in the JSONL errors' form (`messages[2].content`).
#[derive(Clone, Copy)]
enum At<'a> {
    Root,
    Key(&'a At<'a>, &'a str),
    Index(&'a At<'a>, usize),
}

impl std::fmt::Display for At<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            At::Root => Ok(()),
            At::Key(At::Root, k) => write!(f, "{k}"),
            At::Key(p, k) => write!(f, "{p}.{k}"),
            At::Index(p, i) => write!(f, "{p}[{i}]"),
        }
    }
}

fn object(row: Row) -> Result<Map<String, Value>, String> {
    let mut obj = Map::new();
    for (name, field) in row.into_columns() {
        let v = value(&field, At::Key(&At::Root, &name))?;
        if !v.is_null() {
            obj.insert(name, v);
        }
    }
    Ok(obj)
}

fn value(field: &Field, at: At<'_>) -> Result<Value, String> {
    let err = |msg: &str| Err(super::chat::field_err(at, msg));
    Ok(match field {
        Field::Null => Value::Null,
        Field::Bool(b) => Value::Bool(*b),
        Field::Byte(n) => (*n).into(),
        Field::Short(n) => (*n).into(),
        Field::Int(n) => (*n).into(),
        Field::Long(n) => (*n).into(),
        Field::UByte(n) => (*n).into(),
        Field::UShort(n) => (*n).into(),
        Field::UInt(n) => (*n).into(),
        Field::ULong(n) => (*n).into(),
        Field::Float16(x) => return finite(f64::from(*x)).map_or_else(|| err("not a finite number"), Ok),
        Field::Float(x) => return finite(f64::from(*x)).map_or_else(|| err("not a finite number"), Ok),
        Field::Double(x) => return finite(*x).map_or_else(|| err("not a finite number"), Ok),
        Field::Str(s) => Value::String(s.clone()),
        // A `binary` column holding text (some writers store strings so).
        Field::Bytes(b) => match std::str::from_utf8(b.data()) {
            Ok(s) => Value::String(s.to_string()),
            Err(_) => return err("binary data that is not UTF-8 text"),
        },
        Field::Decimal(_) | Field::Date(_) | Field::TimeMillis(_) | Field::TimeMicros(_) | Field::TimestampMillis(_) | Field::TimestampMicros(_) => {
            Value::String(field.to_string())
        }
        Field::Group(row) => {
            let mut obj = Map::new();
            for (k, f) in row.get_column_iter() {
                let v = value(f, At::Key(&at, k))?;
                if !v.is_null() {
                    obj.insert(k.clone(), v);
                }
            }
            Value::Object(obj)
        }
        Field::ListInternal(list) => Value::Array(list.elements().iter().enumerate().map(|(i, f)| value(f, At::Index(&at, i))).collect::<Result<_, _>>()?),
        Field::MapInternal(map) => {
            let mut obj = Map::new();
            for (k, f) in map.entries() {
                let Field::Str(k) = k else { return err("a map whose keys are not strings") };
                obj.insert(k.clone(), value(f, At::Key(&at, k))?);
            }
            Value::Object(obj)
        }
    })
}

fn finite(x: f64) -> Option<Value> {
    Number::from_f64(x).map(Value::Number)
}
