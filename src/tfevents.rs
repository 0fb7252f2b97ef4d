//! TensorBoard event files (`events.out.tfevents.*`): what TensorBoard, and anything else that reads TensorFlow
//! summaries, plots.
//!
//! A file is a sequence of TFRecords (`u64` length, masked CRC-32C of the length, the bytes, masked CRC-32C of the
//! bytes), each an `Event` protocol buffer: first one carrying `file_version = "brain.Event:2"`, then one per step
//! with a `Summary` of `simple_value` scalars. Only these three messages are needed, so they are encoded here by hand
//! (a protobuf crate would bring code generation for fifteen lines of varints).
//!
//! How files are kept across restarts, the way TensorBoard expects: a writer only appends, each record in one write,
//! so a reader never sees half a step except at the very end of a file (a torn tail, which readers wait on and
//! [`parse`] ignores). A run that continues from a checkpoint first drops the steps after it from the files
//! ([`drop_after`]) and then writes into a new file that sorts after them ([`EventWriter::create`]), so every step is
//! in exactly one place.
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use crc::{Crc, CRC_32_ISCSI};

pub const FILE_VERSION: &str = "brain.Event:2";
/// Every event file's name has this in it (TensorBoard's test for an event file).
const MARK: &str = "tfevents";
const CASTAGNOLI: Crc<u32> = Crc::<u32>::new(&CRC_32_ISCSI);

#[derive(Debug, thiserror::Error)]
pub enum EventsError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: byte {offset}: {msg}", path.display())]
    Corrupt { path: PathBuf, offset: usize, msg: String },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> EventsError + '_ {
    move |source| EventsError::Io { path: path.to_path_buf(), source }
}

/// One `Event`: the file-version header (no scalars) or a step's scalars.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub wall_time: f64,
    pub step: i64,
    pub file_version: Option<String>,
    pub scalars: Vec<(String, f32)>,
}

impl Event {
    pub fn scalars(step: i64, scalars: Vec<(String, f32)>) -> Event {
        Event { wall_time: now(), step, file_version: None, scalars }
    }
}

fn now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

/// TensorFlow's masked CRC-32C: the checksum rotated right by 15 bits plus a constant.
pub fn masked_crc(bytes: &[u8]) -> u32 {
    let c = CASTAGNOLI.checksum(bytes);
    c.rotate_right(15).wrapping_add(0xa282_ead8)
}

/// One TFRecord around `data`.
pub fn frame(data: &[u8]) -> Vec<u8> {
    let len = (data.len() as u64).to_le_bytes();
    let mut out = Vec::with_capacity(data.len() + 16);
    out.extend_from_slice(&len);
    out.extend_from_slice(&masked_crc(&len).to_le_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(&masked_crc(data).to_le_bytes());
    out
}

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn bytes_field(out: &mut Vec<u8>, field: u64, b: &[u8]) {
    varint(out, field << 3 | 2);
    varint(out, b.len() as u64);
    out.extend_from_slice(b);
}

/// The `Event` message: wall_time = 1 (double), step = 2 (int64), file_version = 3, summary = 5; `Summary.value` = 1;
/// `Summary.Value` tag = 1, simple_value = 2 (float).
pub fn encode(e: &Event) -> Vec<u8> {
    let mut out = Vec::new();
    out.push(1 << 3 | 1);
    out.extend_from_slice(&e.wall_time.to_le_bytes());
    // proto3 leaves out fields at their default, as TensorBoard's own writer does.
    if e.step != 0 {
        varint(&mut out, 2 << 3);
        varint(&mut out, e.step as u64);
    }
    if let Some(v) = &e.file_version {
        bytes_field(&mut out, 3, v.as_bytes());
    }
    if !e.scalars.is_empty() {
        let mut summary = Vec::new();
        for (tag, value) in &e.scalars {
            let mut v = Vec::new();
            bytes_field(&mut v, 1, tag.as_bytes());
            v.push(2 << 3 | 5);
            v.extend_from_slice(&value.to_le_bytes());
            bytes_field(&mut summary, 1, &v);
        }
        bytes_field(&mut out, 5, &summary);
    }
    out
}

/// A field's payload: a varint's value, or the bytes of a fixed-size or length-delimited field.
enum Wire<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
}

fn read_varint(b: &mut &[u8]) -> Result<u64, String> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let (&byte, rest) = b.split_first().ok_or("truncated varint")?;
        *b = rest;
        v |= u64::from(byte & 0x7f) << shift;
        if byte < 0x80 {
            return Ok(v);
        }
    }
    Err("varint longer than 10 bytes".into())
}

/// The fields of one message in order, as (field number, payload); unknown fields come back too, for the caller to
/// skip.
fn fields(mut b: &[u8]) -> Result<Vec<(u64, Wire<'_>)>, String> {
    let mut out = Vec::new();
    while !b.is_empty() {
        let key = read_varint(&mut b)?;
        let n = match key & 7 {
            0 => {
                out.push((key >> 3, Wire::Varint(read_varint(&mut b)?)));
                continue;
            }
            1 => 8,
            2 => read_varint(&mut b)? as usize,
            5 => 4,
            w => return Err(format!("unsupported wire type {w}")),
        };
        if b.len() < n {
            return Err("truncated field".into());
        }
        out.push((key >> 3, Wire::Bytes(&b[..n])));
        b = &b[n..];
    }
    Ok(out)
}

fn fixed<const N: usize>(b: &[u8], what: &str) -> Result<[u8; N], String> {
    b.try_into().map_err(|_| format!("{what}: {} bytes, expected {N}", b.len()))
}

/// Reads an `Event` back (the fields [`encode`] writes; others are skipped).
pub fn decode(data: &[u8]) -> Result<Event, String> {
    let mut e = Event { wall_time: 0.0, step: 0, file_version: None, scalars: Vec::new() };
    for (field, w) in fields(data)? {
        match (field, w) {
            (1, Wire::Bytes(b)) => e.wall_time = f64::from_le_bytes(fixed(b, "wall_time")?),
            (2, Wire::Varint(v)) => e.step = v as i64,
            (3, Wire::Bytes(b)) => e.file_version = Some(String::from_utf8_lossy(b).into_owned()),
            (5, Wire::Bytes(summary)) => {
                for (f, value) in fields(summary)? {
                    let (1, Wire::Bytes(value)) = (f, value) else { continue };
                    let (mut tag, mut simple) = (None, None);
                    for (f, x) in fields(value)? {
                        match (f, x) {
                            (1, Wire::Bytes(b)) => tag = Some(String::from_utf8_lossy(b).into_owned()),
                            (2, Wire::Bytes(b)) => simple = Some(f32::from_le_bytes(fixed(b, "simple_value")?)),
                            _ => {}
                        }
                    }
                    if let (Some(tag), Some(v)) = (tag, simple) {
                        e.scalars.push((tag, v));
                    }
                }
            }
            _ => {}
        }
    }
    Ok(e)
}

/// The events of a file's bytes and the length of the complete records they span. A torn tail (a record cut short by
/// a kill, or still being written) ends the list; a checksum that does not match is an error at its byte offset.
pub fn parse(bytes: &[u8]) -> Result<(Vec<Event>, usize), (usize, String)> {
    let mut events = Vec::new();
    let mut at = 0;
    while bytes.len() - at >= 12 {
        let len_bytes = &bytes[at..at + 8];
        let crc = u32::from_le_bytes(fixed(&bytes[at + 8..at + 12], "crc").map_err(|e| (at, e))?);
        if masked_crc(len_bytes) != crc {
            return Err((at, "length checksum does not match".into()));
        }
        let len = u64::from_le_bytes(fixed(len_bytes, "length").map_err(|e| (at, e))?) as usize;
        let end = at + 12 + len + 4;
        if bytes.len() < end {
            break;
        }
        let data = &bytes[at + 12..at + 12 + len];
        let crc = u32::from_le_bytes(fixed(&bytes[end - 4..end], "crc").map_err(|e| (at, e))?);
        if masked_crc(data) != crc {
            return Err((at, "data checksum does not match".into()));
        }
        events.push(decode(data).map_err(|e| (at, e))?);
        at = end;
    }
    Ok((events, at))
}

/// The events of one file (up to a torn tail).
pub fn read_file(path: &Path) -> Result<Vec<Event>, EventsError> {
    Ok(read_complete(path)?.0)
}

fn read_complete(path: &Path) -> Result<(Vec<Event>, usize, usize), EventsError> {
    let bytes = std::fs::read(path).map_err(io(path))?;
    let (events, complete) = parse(&bytes).map_err(|(offset, msg)| EventsError::Corrupt { path: path.to_path_buf(), offset, msg })?;
    Ok((events, complete, bytes.len()))
}

/// The event files in `dir`, in the order TensorBoard reads them (by name); none when the folder does not exist.
pub fn event_files(dir: &Path) -> Result<Vec<PathBuf>, EventsError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io(dir)(e)),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(io(dir))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        // Temporaries of atomic rewrites start with a dot.
        if name.contains(MARK) && !name.starts_with('.') && entry.path().is_file() {
            out.push(entry.path());
        }
    }
    out.sort();
    Ok(out)
}

/// Every event of every file in `dir`, in reading order.
pub fn read_dir(dir: &Path) -> Result<Vec<Event>, EventsError> {
    let mut out = Vec::new();
    for f in event_files(dir)? {
        out.extend(read_file(&f)?);
    }
    Ok(out)
}

/// Removes the event files in `dir` (a run that starts over).
pub fn clear(dir: &Path) -> Result<(), EventsError> {
    for f in event_files(dir)? {
        std::fs::remove_file(&f).map_err(io(&f))?;
    }
    Ok(())
}

/// Drops the steps after `step` from the files in `dir` (a run continuing from a checkpoint at `step` redoes them):
/// a file that has any, or a torn tail, is rewritten atomically without them.
pub fn drop_after(dir: &Path, step: i64) -> Result<(), EventsError> {
    for f in event_files(dir)? {
        let (events, complete, len) = read_complete(&f)?;
        if complete == len && events.iter().all(|e| e.scalars.is_empty() || e.step <= step) {
            continue;
        }
        let kept: Vec<u8> = events.iter().filter(|e| e.scalars.is_empty() || e.step <= step).flat_map(|e| frame(&encode(e))).collect();
        crate::atomic::write_file(&f, &kept).map_err(|e| EventsError::Io { path: e.path, source: e.source })?;
    }
    Ok(())
}

/// Appends events to one file.
pub struct EventWriter {
    path: PathBuf,
    file: File,
}

impl EventWriter {
    /// A new file in `dir` (created if needed) that sorts after every event file already there, starting with the
    /// file-version event.
    pub fn create(dir: &Path) -> Result<EventWriter, EventsError> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let newest = event_files(dir)?.iter().filter_map(|p| seconds_in_name(p)).max();
        let secs = newest.map_or(0, |n| n + 1).max(now() as u64);
        let path = dir.join(format!("events.out.{MARK}.{secs:010}.autodidact"));
        let file = OpenOptions::new().create_new(true).append(true).open(&path).map_err(io(&path))?;
        let mut w = EventWriter { path, file };
        w.write(&Event { wall_time: now(), step: 0, file_version: Some(FILE_VERSION.into()), scalars: Vec::new() })?;
        Ok(w)
    }

    /// Continues the newest file in `dir` after cutting off a torn tail (a record a kill left half written, which
    /// no reader has taken: they stop before it), or starts one.
    pub fn append_to_newest(dir: &Path) -> Result<EventWriter, EventsError> {
        let Some(path) = event_files(dir)?.pop() else { return EventWriter::create(dir) };
        let (_, complete, len) = read_complete(&path)?;
        let file = OpenOptions::new().append(true).open(&path).map_err(io(&path))?;
        if complete < len {
            file.set_len(complete as u64).map_err(io(&path))?;
        }
        Ok(EventWriter { path, file })
    }

    /// One record, in one write.
    pub fn write(&mut self, e: &Event) -> Result<(), EventsError> {
        self.file.write_all(&frame(&encode(e))).map_err(io(&self.path))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// The seconds in `events.out.tfevents.<seconds>.<host>`, where a file is named so.
fn seconds_in_name(p: &Path) -> Option<u64> {
    let name = p.file_name()?.to_str()?;
    name.split_once(&format!("{MARK}."))?.1.split('.').next()?.parse().ok()
}

/// The scalars of a JSON record, tagged `prefix/key`: numbers as they are, true and false as 1 and 0, objects
/// flattened (`prefix/key/inner`); strings, nulls and arrays are not plotted.
pub fn scalars_of(v: &serde_json::Value, prefix: &str, skip: &[&str]) -> Vec<(String, f32)> {
    let mut out = Vec::new();
    if let Some(o) = v.as_object() {
        for (k, x) in o.iter().filter(|(k, _)| !skip.contains(&k.as_str())) {
            let tag = format!("{prefix}/{k}");
            match x {
                serde_json::Value::Number(n) => out.extend(n.as_f64().map(|f| (tag, f as f32))),
                serde_json::Value::Bool(b) => out.push((tag, f32::from(u8::from(*b)))),
                serde_json::Value::Object(_) => out.extend(scalars_of(x, &tag, &[])),
                _ => {}
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The catalogue's check value for CRC-32C, and the bytes TensorBoard's own writer (tensorboard 2.21.0,
    /// `RecordWriter` over `event_pb2.Event`) gave for a file-version event and a step with two scalars.
    #[test]
    fn frames_are_tensorboards_bytes() {
        assert_eq!(CASTAGNOLI.checksum(b"123456789"), 0xE306_9283);
        let tensorboard = "1800000000000000a37f4b2209000000c00b5ad6411a0d627261696e2e4576656e743a324ca9a464\
                           31000000000000009d8383e909000000c00b5ad64110072a240a110a0a747261696e2f6c6f737315\
                           000020400a0f0a08747261696e2f6c721517b7d1382af9e484";
        let events = [
            Event { wall_time: 1.5e9, step: 0, file_version: Some(FILE_VERSION.into()), scalars: vec![] },
            Event { wall_time: 1.5e9, step: 7, file_version: None, scalars: vec![("train/loss".into(), 2.5), ("train/lr".into(), 1e-4)] },
        ];
        let ours: String = events.iter().flat_map(|e| frame(&encode(e))).map(|b| format!("{b:02x}")).collect();
        assert_eq!(ours, tensorboard);
    }

    /// Events round-trip through frames; a flipped byte is caught by its checksum and a torn tail is left out.
    #[test]
    fn frames_round_trip_and_damage_is_caught() {
        let events = vec![
            Event { wall_time: 1.0, step: 0, file_version: Some(FILE_VERSION.into()), scalars: vec![] },
            Event::scalars(1, vec![("train/loss".into(), 2.5), ("train/lr".into(), 1e-4)]),
            Event::scalars(2, vec![("train/loss".into(), -0.25)]),
            Event::scalars(1 << 40, vec![]),
        ];
        let bytes: Vec<u8> = events.iter().flat_map(|e| frame(&encode(e))).collect();
        let (back, n) = parse(&bytes).unwrap();
        assert_eq!((back, n), (events.clone(), bytes.len()));
        let (back, n) = parse(&bytes[..bytes.len() - 3]).unwrap();
        assert_eq!(back, events[..3].to_vec());
        assert!(n < bytes.len() - 3);
        for at in [3, 10, 30] {
            let mut bad = bytes.clone();
            bad[at] ^= 0x40;
            assert!(parse(&bad).is_err(), "byte {at} flipped was not caught");
        }
    }

    /// A resumed run: steps after the checkpoint leave the old files, new ones go to a later file, a torn tail is cut
    /// off before appending, and every step is read back once, in order.
    #[test]
    fn restarts_keep_each_step_once() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let mut w = EventWriter::create(d).unwrap();
        for s in 1..=5 {
            w.write(&Event::scalars(s, vec![("loss".into(), s as f32)])).unwrap();
        }
        let first = w.path().to_path_buf();
        drop(w);
        // A kill in the middle of step 6's record.
        let half = frame(&encode(&Event::scalars(6, vec![("loss".into(), 6.0)])));
        OpenOptions::new().append(true).open(&first).unwrap().write_all(&half[..half.len() / 2]).unwrap();
        assert_eq!(read_dir(d).unwrap().iter().filter(|e| !e.scalars.is_empty()).count(), 5);
        drop_after(d, 3).unwrap();
        let mut w = EventWriter::create(d).unwrap();
        assert!(w.path() > first.as_path());
        for s in 4..=6 {
            w.write(&Event::scalars(s, vec![("loss".into(), s as f32)])).unwrap();
        }
        // Another kill mid-record, then appending to the newest file.
        OpenOptions::new().append(true).open(w.path()).unwrap().write_all(&half[..5]).unwrap();
        drop(w);
        EventWriter::append_to_newest(d).unwrap().write(&Event::scalars(7, vec![("loss".into(), 7.0)])).unwrap();
        let steps: Vec<(i64, f32)> = read_dir(d).unwrap().iter().filter(|e| !e.scalars.is_empty()).map(|e| (e.step, e.scalars[0].1)).collect();
        assert_eq!(steps, (1..=7).map(|s| (s, s as f32)).collect::<Vec<_>>());
        assert_eq!(event_files(d).unwrap().len(), 2);
        clear(d).unwrap();
        assert!(read_dir(d).unwrap().is_empty());
    }

    #[test]
    fn json_records_become_tagged_scalars() {
        let v = serde_json::json!({"step": 3, "loss": 0.5, "ok": true, "name": "x", "gap": null, "suite": {"arith": 0.25}});
        assert_eq!(scalars_of(&v, "train", &["step"]), vec![("train/loss".into(), 0.5), ("train/ok".into(), 1.0), ("train/suite/arith".into(), 0.25)]);
    }
}
