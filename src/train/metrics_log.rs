//! A training run's step log, written twice: `metrics.jsonl` (one line per step) and TensorBoard event files with
//! the same numbers (every number of a line as the scalar `train/<field>` at its step). A fresh run empties both; a
//! resumed run cuts both back to its checkpoint's step, so no step is ever logged twice.
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::{Result, TrainError};
use crate::tfevents::{self, Event, EventWriter};

/// The TensorBoard tag prefix of training steps.
pub const TAG_PREFIX: &str = "train";

pub struct MetricsLog {
    jsonl: PathBuf,
    tensorboard: PathBuf,
    /// Opened at the first step this process logs: a new file, after those of the steps before it.
    writer: Option<EventWriter>,
}

impl MetricsLog {
    pub fn new(jsonl: PathBuf, tensorboard: PathBuf) -> MetricsLog {
        MetricsLog { jsonl, tensorboard, writer: None }
    }

    /// A run from its first step: no lines and no events of an earlier run in the same folder.
    pub fn start(&mut self) -> Result<()> {
        std::fs::write(&self.jsonl, "").map_err(|e| TrainError::io(&self.jsonl, e))?;
        tfevents::clear(&self.tensorboard)?;
        self.writer = None;
        Ok(())
    }

    /// A run continuing from a checkpoint at `step`: lines and events of later steps are dropped (they will be redone).
    pub fn keep_up_to(&mut self, step: usize) -> Result<()> {
        let text = match std::fs::read_to_string(&self.jsonl) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(TrainError::io(&self.jsonl, e)),
        };
        let kept: String = text.lines().filter(|l| step_of_line(l).is_some_and(|s| s as usize <= step)).map(|l| format!("{l}\n")).collect();
        std::fs::write(&self.jsonl, kept).map_err(|e| TrainError::io(&self.jsonl, e))?;
        tfevents::drop_after(&self.tensorboard, step as i64)?;
        sync_events(&self.jsonl, &self.tensorboard)?;
        self.writer = None;
        Ok(())
    }

    /// Logs one step: its line, then its event.
    pub fn append<M: Serialize>(&mut self, m: &M) -> Result<()> {
        let value = serde_json::to_value(m).map_err(|e| TrainError::Data(e.to_string()))?;
        let mut f = std::fs::OpenOptions::new().create(true).append(true).open(&self.jsonl).map_err(|e| TrainError::io(&self.jsonl, e))?;
        writeln!(f, "{value}").map_err(|e| TrainError::io(&self.jsonl, e))?;
        let event = event_of(&value).ok_or_else(|| TrainError::Data(format!("a metrics line without a step: {value}")))?;
        let writer = match &mut self.writer {
            Some(w) => w,
            None => self.writer.insert(EventWriter::create(&self.tensorboard)?),
        };
        writer.write(&event)?;
        Ok(())
    }
}

fn step_of_line(line: &str) -> Option<u64> {
    serde_json::from_str::<serde_json::Value>(line).ok()?["step"].as_u64()
}

fn event_of(v: &serde_json::Value) -> Option<Event> {
    Some(Event::scalars(v["step"].as_i64()?, tfevents::scalars_of(v, TAG_PREFIX, &["step"])))
}

/// Makes the event files in `dir` hold the steps of `jsonl`, each once: when they do not (a run logged before event
/// files were written, or one whose files were deleted), they are written again from the lines.
pub fn sync_events(jsonl: &Path, dir: &Path) -> Result<()> {
    let lines: Vec<serde_json::Value> = match std::fs::read_to_string(jsonl) {
        Ok(t) => t.lines().filter_map(|l| serde_json::from_str(l).ok()).collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(TrainError::io(jsonl, e)),
    };
    let want: Vec<i64> = lines.iter().filter_map(|v| v["step"].as_i64()).collect();
    let have: Vec<i64> = tfevents::read_dir(dir)?.iter().filter(|e| !e.scalars.is_empty()).map(|e| e.step).collect();
    if have == want {
        return Ok(());
    }
    tfevents::clear(dir)?;
    let mut w = EventWriter::create(dir)?;
    for e in lines.iter().filter_map(event_of) {
        w.write(&e)?;
    }
    Ok(())
}
