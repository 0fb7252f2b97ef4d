//! The loop's three task splits, resolved once before any model runs: generated suites and/or task files,
//! each file's tasks checked against the split it is used for, no id or content in two splits, and a dev split
//! for every run (generated, from `dev_files`, or a seeded slice held back from the train files).
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use rand::seq::SliceRandom;
use rand::SeedableRng;

use super::config::TasksConfig;
use crate::data::{Split, Task};
use crate::tasks::select::generated;
use crate::tasks::taskfile::load_tasks_numbered;

/// Where a task comes from: `generated`, or the task file's path as given.
pub const GENERATED: &str = "generated";

#[derive(Debug, Clone)]
pub struct TaskSets {
    pub train: Vec<Task>,
    pub dev: Vec<Task>,
    pub test: Vec<Task>,
    /// Task id -> source (`generated` or a file path).
    pub source: BTreeMap<String, String>,
    /// How the dev split was made, for the report.
    pub dev_origin: String,
}

impl TaskSets {
    pub fn resolve(t: &TasksConfig) -> anyhow::Result<TaskSets> {
        let mut sets = TaskSets { train: vec![], dev: vec![], test: vec![], source: BTreeMap::new(), dev_origin: String::new() };
        let mut seen: BTreeMap<String, (String, Split)> = BTreeMap::new();
        let mut content: BTreeMap<String, (String, Split)> = BTreeMap::new();
        let mut add = |sets: &mut TaskSets, task: Task, split: Split, source: &str, at: &str| -> anyhow::Result<()> {
            if let Some((other, other_split)) = seen.get(&task.id) {
                bail!("{at}: field `id`: `{}` is also in {other} ({other_split} split)", task.id);
            }
            let key = format!("{}\0{}", task.instruction, serde_json::to_string(&task.data)?);
            if let Some((other, other_split)) = content.get(&key) {
                if *other_split != split {
                    bail!("{at}: field `instruction`: the same task (instruction and data) as {other}, in the {other_split} split");
                }
            }
            seen.insert(task.id.clone(), (at.to_string(), split));
            content.insert(key, (at.to_string(), split));
            sets.source.insert(task.id.clone(), source.to_string());
            sets.list_mut(split).push(task);
            Ok(())
        };
        if t.generated() {
            for (split, per) in [(Split::Train, t.train_per), (Split::Dev, t.dev_per), (Split::Test, t.test_per)] {
                for task in generated(&t.suites, &t.difficulties, split, t.seed, per)
                    .context("field `tasks.suites` / `tasks.difficulties` (suites that run tasks from files take tasks.train_files and the like)")?
                {
                    let at = format!("generated task `{}`", task.id);
                    add(&mut sets, task, split, GENERATED, &at)?;
                }
            }
        }
        let mut held_back: Vec<Task> = Vec::new();
        for (split, patterns, field) in
            [(Split::Train, &t.train_files, "train_files"), (Split::Dev, &t.dev_files, "dev_files"), (Split::Test, &t.test_files, "test_files")]
        {
            for path in expand(patterns, field)? {
                let shown = path.display().to_string();
                let tasks = load_tasks_numbered(&path).with_context(|| format!("field `tasks.{field}`"))?;
                if tasks.is_empty() {
                    bail!("{shown}: field `tasks.{field}`: the file holds no task");
                }
                for (line, task) in tasks {
                    let at = format!("{shown}:{line}");
                    if task.split != split {
                        bail!("{at}: field `split`: `{}`, but the file is listed in tasks.{field} (the {split} split)", task.split);
                    }
                    if split == Split::Train && t.dev_files.is_empty() {
                        held_back.push(task.clone());
                    }
                    add(&mut sets, task, split, &shown, &at)?;
                }
            }
        }
        sets.dev_origin = if !t.dev_files.is_empty() {
            format!("{} tasks from tasks.dev_files{}", sets.dev.len(), if t.generated() { " and the generated suites" } else { "" })
        } else if !held_back.is_empty() {
            let n = ((held_back.len() as f64 * t.dev_fraction).round() as usize).clamp(1, held_back.len().saturating_sub(1).max(1));
            held_back.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(t.seed));
            let ids: std::collections::BTreeSet<String> = held_back.into_iter().take(n).map(|t| t.id).collect();
            let (dev, train): (Vec<Task>, Vec<Task>) = std::mem::take(&mut sets.train).into_iter().partition(|t| ids.contains(&t.id));
            sets.train = train;
            sets.dev.extend(dev.into_iter().map(|t| Task { split: Split::Dev, ..t }));
            format!(
                "{n} tasks held back from tasks.train_files (seed {}, dev_fraction {}){}",
                t.seed,
                t.dev_fraction,
                if t.generated() { ", plus the generated dev split" } else { "" }
            )
        } else {
            format!("{} generated tasks ({} per suite and difficulty)", sets.dev.len(), t.dev_per)
        };
        for (split, list) in [(Split::Train, &sets.train), (Split::Dev, &sets.dev), (Split::Test, &sets.test)] {
            if list.is_empty() {
                bail!("field `tasks`: the {split} split has no task");
            }
        }
        Ok(sets)
    }

    fn list_mut(&mut self, split: Split) -> &mut Vec<Task> {
        match split {
            Split::Train => &mut self.train,
            Split::Dev => &mut self.dev,
            Split::Test => &mut self.test,
        }
    }

    /// The train tasks round `round` rolls out on: generated ones only at the ramp's difficulties.
    pub fn train_for(&self, t: &TasksConfig, round: usize) -> Vec<Task> {
        let difficulties = t.rollout_difficulties(round);
        self.train.iter().filter(|task| self.source.get(&task.id).is_none_or(|s| s != GENERATED) || difficulties.contains(&task.difficulty)).cloned().collect()
    }

    /// The distinct sources in order: generated first, then the files as listed.
    pub fn sources(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for t in self.train.iter().chain(&self.dev).chain(&self.test) {
            if let Some(s) = self.source.get(&t.id) {
                if !out.contains(s) {
                    out.push(s.clone());
                }
            }
        }
        out
    }
}

/// Paths of the patterns in order (a plain path is its own pattern); a pattern that matches nothing is an error.
fn expand(patterns: &[String], field: &str) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for p in patterns {
        let is_glob = p.contains(['*', '?', '[']);
        if !is_glob {
            let path = Path::new(p);
            if !path.is_file() {
                bail!("field `tasks.{field}`: `{p}`: no such file");
            }
            out.push(path.to_path_buf());
            continue;
        }
        let mut matched: Vec<PathBuf> = glob::glob(p)
            .map_err(|e| anyhow::anyhow!("field `tasks.{field}`: `{p}`: bad pattern: {e}"))?
            .filter_map(Result::ok)
            .filter(|p| p.is_file())
            .collect();
        if matched.is_empty() {
            bail!("field `tasks.{field}`: `{p}` matches no file");
        }
        matched.sort();
        out.extend(matched);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(id: &str, split: &str, n: u32) -> String {
        format!(
            r#"{{"id": "{id}", "suite": "qa", "split": "{split}", "difficulty": 1, "instruction": "What is {n} + 1?", "tools": ["calculator"], "expected": {{"kind": "answer", "answer": "{}", "matcher": {{"type": "number"}}}}, "max_turns": 3}}"#,
            n + 1
        )
    }

    fn write(dir: &Path, name: &str, lines: &[String]) -> String {
        let p = dir.join(name);
        std::fs::write(&p, lines.join("\n") + "\n").unwrap();
        p.display().to_string()
    }

    fn files(train: Vec<String>, dev: Vec<String>, test: Vec<String>) -> TasksConfig {
        TasksConfig { train_files: train, dev_files: dev, test_files: test, ..TasksConfig::default() }
    }

    fn err(t: &TasksConfig) -> String {
        format!("{:#}", TaskSets::resolve(t).unwrap_err())
    }

    #[test]
    fn generated_splits_are_disjoint_and_sized() {
        let t = TasksConfig { suites: vec!["arithmetic".into()], difficulties: vec![1, 2], train_per: 5, dev_per: 3, test_per: 4, ..TasksConfig::default() };
        let s = TaskSets::resolve(&t).unwrap();
        assert_eq!((s.train.len(), s.dev.len(), s.test.len()), (10, 6, 8));
        assert!(s.dev.iter().all(|x| x.split == Split::Dev) && s.test.iter().all(|x| x.split == Split::Test));
        assert_eq!(s.sources(), vec![GENERATED.to_string()]);
        // The ramp's first round rolls out only difficulty 1.
        let ramp = TasksConfig { ramp: true, ..t };
        assert_eq!(s.train_for(&ramp, 1).len(), 5);
    }

    #[test]
    fn train_files_without_dev_files_hold_back_a_seeded_slice() {
        let dir = tempfile::tempdir().unwrap();
        let train = write(dir.path(), "a.train.jsonl", &(0..10).map(|i| line(&format!("t{i}"), "train", i)).collect::<Vec<_>>());
        let test = write(dir.path(), "test.jsonl", &[line("x", "test", 100)]);
        let glob = dir.path().join("*.train.jsonl").display().to_string();
        let t = files(vec![glob], vec![], vec![test.clone()]);
        let s = TaskSets::resolve(&t).unwrap();
        assert_eq!((s.train.len(), s.dev.len(), s.test.len()), (8, 2, 1));
        assert!(s.dev.iter().all(|x| x.split == Split::Dev));
        let ids = |v: &[Task]| v.iter().map(|x| x.id.clone()).collect::<Vec<_>>();
        assert!(ids(&s.dev).iter().all(|id| !ids(&s.train).contains(id)));
        assert_eq!(ids(&TaskSets::resolve(&t).unwrap().dev), ids(&s.dev), "the slice depends on the seed only");
        let other = TaskSets::resolve(&TasksConfig { seed: 5, ..t.clone() }).unwrap();
        assert_eq!(other.dev.len(), 2);
        assert!(s.dev_origin.contains("held back"), "{}", s.dev_origin);
        assert_eq!(s.sources(), vec![train, test]);
        // Mixed with a generated suite: both kinds in every split.
        let mixed =
            TaskSets::resolve(&TasksConfig { suites: vec!["arithmetic".into()], difficulties: vec![1], train_per: 2, dev_per: 2, test_per: 2, ..t }).unwrap();
        assert_eq!((mixed.train.len(), mixed.dev.len(), mixed.test.len()), (10, 4, 3));
    }

    #[test]
    fn bad_files_are_named_with_line_and_field() {
        let dir = tempfile::tempdir().unwrap();
        let train = write(dir.path(), "train.jsonl", &[line("a", "train", 1), line("b", "test", 2)]);
        let test = write(dir.path(), "test.jsonl", &[line("x", "test", 100)]);
        let e = err(&files(vec![train.clone()], vec![], vec![test.clone()]));
        assert!(e.contains("train.jsonl:2") && e.contains("`split`") && e.contains("train_files"), "{e}");

        let train = write(dir.path(), "train2.jsonl", &[line("a", "train", 1), line("b", "train", 2)]);
        let dup = write(dir.path(), "dup.jsonl", &[line("a", "test", 9)]);
        let e = err(&files(vec![train.clone()], vec![], vec![dup]));
        assert!(e.contains("dup.jsonl:1") && e.contains("`id`") && e.contains("train2.jsonl:1"), "{e}");

        let same = write(dir.path(), "same.jsonl", &[line("z", "test", 2)]);
        let e = err(&files(vec![train.clone()], vec![], vec![same]));
        assert!(e.contains("same.jsonl:1") && e.contains("same task") && e.contains("train2.jsonl:2"), "{e}");

        let e = err(&files(vec![dir.path().join("nothing-*.jsonl").display().to_string()], vec![], vec![test.clone()]));
        assert!(e.contains("tasks.train_files") && e.contains("matches no file"), "{e}");
        let e = err(&files(vec![train.clone()], vec![], vec![dir.path().join("missing.jsonl").display().to_string()]));
        assert!(e.contains("tasks.test_files") && e.contains("no such file"), "{e}");

        let broken = write(dir.path(), "broken.jsonl", &[line("q", "test", 50), "{\"id\": 3}".into()]);
        let e = err(&files(vec![train], vec![], vec![broken]));
        assert!(e.contains("broken.jsonl:2") && e.contains("tasks.test_files"), "{e}");
    }
}
