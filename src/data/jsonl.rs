//! JSONL reading with file:line errors, atomic whole-file writes, and a line-flushing append writer for
//! resumable rollouts.
use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum JsonlError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    /// `message` is serde_json's message, which names the missing or mistyped field; its column refers to
    /// the line.
    #[error("{}:{line}: {message}", path.display())]
    Parse { path: PathBuf, line: usize, message: String },
    #[error("{}: {source}", path.display())]
    Serialize { path: PathBuf, source: serde_json::Error },
}

impl JsonlError {
    fn io(path: &Path, source: std::io::Error) -> Self {
        Self::Io { path: path.to_path_buf(), source }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReadMode {
    /// The first bad line is an error.
    #[default]
    Strict,
    /// Bad lines are skipped and reported in `JsonlRead::skipped`.
    SkipInvalid,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedLine {
    pub line: usize,
    pub message: String,
}

#[derive(Debug)]
pub struct JsonlRead<T> {
    /// Parsed records with their 1-based line numbers.
    pub items: Vec<(usize, T)>,
    pub skipped: Vec<SkippedLine>,
}

impl<T> JsonlRead<T> {
    pub fn into_items(self) -> Vec<T> {
        self.items.into_iter().map(|(_, t)| t).collect()
    }
}

/// Reads one record per non-blank line.
pub fn read_jsonl<T: DeserializeOwned>(path: &Path, mode: ReadMode) -> Result<JsonlRead<T>, JsonlError> {
    let file = File::open(path).map_err(|e| JsonlError::io(path, e))?;
    let mut out = JsonlRead { items: Vec::new(), skipped: Vec::new() };
    for (i, line) in BufReader::new(file).lines().enumerate() {
        let line_no = i + 1;
        let line = match line {
            Ok(l) => l,
            Err(e) if mode == ReadMode::SkipInvalid && e.kind() == std::io::ErrorKind::InvalidData => {
                out.skipped.push(SkippedLine { line: line_no, message: e.to_string() });
                continue;
            }
            Err(e) => return Err(JsonlError::io(path, e)),
        };
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<T>(&line) {
            Ok(v) => out.items.push((line_no, v)),
            Err(e) => match mode {
                ReadMode::Strict => return Err(JsonlError::Parse { path: path.to_path_buf(), line: line_no, message: e.to_string() }),
                ReadMode::SkipInvalid => out.skipped.push(SkippedLine { line: line_no, message: e.to_string() }),
            },
        }
    }
    Ok(out)
}

/// Writes all records to a temporary file next to `path`, then renames it over `path`, so readers never
/// see a half-written file.
pub fn write_jsonl_atomic<T: Serialize>(path: &Path, items: &[T]) -> Result<(), JsonlError> {
    let mut buf = Vec::new();
    for item in items {
        serde_json::to_writer(&mut buf, item).map_err(|source| JsonlError::Serialize { path: path.to_path_buf(), source })?;
        buf.push(b'\n');
    }
    write_bytes_atomic(path, &buf)
}

/// Pretty JSON (e.g. an evaluation report), written atomically.
pub fn write_json_atomic<T: Serialize>(path: &Path, value: &T) -> Result<(), JsonlError> {
    let mut buf = serde_json::to_vec_pretty(value).map_err(|source| JsonlError::Serialize { path: path.to_path_buf(), source })?;
    buf.push(b'\n');
    write_bytes_atomic(path, &buf)
}

fn write_bytes_atomic(path: &Path, bytes: &[u8]) -> Result<(), JsonlError> {
    crate::atomic::write_file(path, bytes).map_err(|e| JsonlError::io(path, e.source))
}

/// Appends one record per line and flushes after each line. On open, a last line without its newline (a crash
/// mid-write) is cut off, so the file always holds whole records.
pub struct JsonlAppender {
    path: PathBuf,
    file: File,
}

impl JsonlAppender {
    /// Opens or creates `path`; returns the writer and the number of bytes dropped from a truncated last line.
    pub fn open(path: &Path) -> Result<(Self, u64), JsonlError> {
        let mut file = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(path).map_err(|e| JsonlError::io(path, e))?;
        let dropped = drop_partial_last_line(&mut file).map_err(|e| JsonlError::io(path, e))?;
        file.seek(SeekFrom::End(0)).map_err(|e| JsonlError::io(path, e))?;
        Ok((Self { path: path.to_path_buf(), file }, dropped))
    }

    pub fn append<T: Serialize>(&mut self, item: &T) -> Result<(), JsonlError> {
        let mut line = serde_json::to_vec(item).map_err(|source| JsonlError::Serialize { path: self.path.clone(), source })?;
        line.push(b'\n');
        // One write of the whole line: a crash leaves at most one partial line, which `open` removes.
        self.file.write_all(&line).and_then(|_| self.file.flush()).map_err(|e| JsonlError::io(&self.path, e))
    }
}

fn drop_partial_last_line(file: &mut File) -> std::io::Result<u64> {
    let len = file.metadata()?.len();
    if len == 0 {
        return Ok(0);
    }
    // Scan backwards in chunks for the last newline.
    let mut end = len;
    let mut buf = vec![0u8; 64 * 1024];
    let mut last_newline: Option<u64> = None;
    while end > 0 && last_newline.is_none() {
        let start = end.saturating_sub(buf.len() as u64);
        let n = (end - start) as usize;
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(&mut buf[..n])?;
        if let Some(pos) = buf[..n].iter().rposition(|&b| b == b'\n') {
            last_newline = Some(start + pos as u64);
        }
        end = start;
    }
    let keep = last_newline.map_or(0, |p| p + 1);
    if keep < len {
        file.set_len(keep)?;
    }
    Ok(len - keep)
}

#[derive(Deserialize)]
struct SampleKey {
    task_id: String,
    sample_index: u32,
}

/// `(task_id, sample_index)` of every whole trajectory line already in `path` (empty when the file does not
/// exist), so a restarted rollout skips finished samples. A truncated or unreadable line is not counted.
pub fn completed_samples(path: &Path) -> Result<HashSet<(String, u32)>, JsonlError> {
    if !path.exists() {
        return Ok(HashSet::new());
    }
    let mut bytes = Vec::new();
    File::open(path).and_then(|mut f| f.read_to_end(&mut bytes)).map_err(|e| JsonlError::io(path, e))?;
    let whole = match bytes.iter().rposition(|&b| b == b'\n') {
        Some(p) => &bytes[..=p],
        None => &bytes[..0],
    };
    Ok(whole.split(|&b| b == b'\n').filter_map(|line| serde_json::from_slice::<SampleKey>(line).ok()).map(|k| (k.task_id, k.sample_index)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Rec {
        id: String,
        n: u32,
    }

    #[test]
    fn strict_read_names_file_line_and_field() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.jsonl");
        std::fs::write(&p, "{\"id\":\"a\",\"n\":1}\n\n{\"id\":\"b\"}\n").unwrap();
        let err = read_jsonl::<Rec>(&p, ReadMode::Strict).unwrap_err().to_string();
        assert!(err.contains("x.jsonl:3:"), "{err}");
        assert!(err.contains("missing field `n`"), "{err}");
    }

    #[test]
    fn skip_invalid_counts_bad_lines() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.jsonl");
        std::fs::write(&p, "{\"id\":\"a\",\"n\":1}\nnot json\n{\"id\":\"c\",\"n\":\"x\"}\n{\"id\":\"d\",\"n\":4}\n").unwrap();
        let r = read_jsonl::<Rec>(&p, ReadMode::SkipInvalid).unwrap();
        assert_eq!(r.items.iter().map(|(l, _)| *l).collect::<Vec<_>>(), vec![1, 4]);
        assert_eq!(r.skipped.iter().map(|s| s.line).collect::<Vec<_>>(), vec![2, 3]);
    }

    #[test]
    fn atomic_write_round_trips_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("out.jsonl");
        let recs = vec![Rec { id: "a".into(), n: 1 }, Rec { id: "b".into(), n: 2 }];
        write_jsonl_atomic(&p, &recs).unwrap();
        assert_eq!(read_jsonl::<Rec>(&p, ReadMode::Strict).unwrap().into_items(), recs);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn appender_drops_truncated_line_and_lists_done_samples() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("traj.jsonl");
        std::fs::write(&p, "{\"task_id\":\"t1\",\"sample_index\":0}\n{\"task_id\":\"t1\",\"sample_in").unwrap();
        let done = completed_samples(&p).unwrap();
        assert_eq!(done.len(), 1);
        let (mut w, dropped) = JsonlAppender::open(&p).unwrap();
        assert_eq!(dropped, "{\"task_id\":\"t1\",\"sample_in".len() as u64);
        w.append(&serde_json::json!({"task_id": "t1", "sample_index": 1})).unwrap();
        let done = completed_samples(&p).unwrap();
        assert!(done.contains(&("t1".to_string(), 0)) && done.contains(&("t1".to_string(), 1)));
        let text = std::fs::read_to_string(&p).unwrap();
        assert_eq!(text.lines().count(), 2);
        assert!(text.ends_with('\n'));
    }
}
