//! `files`: a virtual in-memory file system with `ls`, `cat`, `write`, `mkdir`, `mv`, `rm`, `grep`. Goals are
//! answers (read a value) or end states (the verifier compares the whole final tree). Level 1 is one call,
//! level 2 two (list then read, copy via cat + write, mkdir + mv), level 3 three or more (find then move into a
//! new directory, delete every matching file).
//!
//! The tree is a map of strings: paths never reach the host. Node count, path length and depth, file size and
//! total size are capped, and `grep` output is capped.
use std::collections::{BTreeMap, BTreeSet};

use rand::seq::SliceRandom;
use rand::Rng;
use serde_json::{json, Value};

use super::arithmetic::NAMES;
use super::{arg_str, coined_words, pick, tool_spec, unknown_tool, Draft, Sandbox, Suite, SuiteError, TaskRng};
use crate::data::{AnswerSpec, Expected, GoalState, Matcher, Reference, Task, TaskData, ToolCall};

pub struct Files;

const MAX_NODES: usize = 256;
const MAX_FILE_BYTES: usize = 16 * 1024;
const MAX_TOTAL_BYTES: usize = 256 * 1024;
const MAX_PATH_CHARS: usize = 256;
const MAX_DEPTH: usize = 16;
const MAX_GREP_LINES: usize = 50;

/// The file system. Invariant: every ancestor of a file or directory is in `dirs` (the root `/` is implied).
#[derive(Debug, Clone, Default)]
pub struct Vfs {
    dirs: BTreeSet<String>,
    files: BTreeMap<String, String>,
}

/// `/a/./b/../c` -> `/a/c`; relative paths are taken from `/`.
pub fn normalize(path: &str) -> Result<String, String> {
    let path = path.trim();
    if path.is_empty() {
        return Err("empty path".into());
    }
    if path.chars().count() > MAX_PATH_CHARS {
        return Err(format!("path longer than {MAX_PATH_CHARS} characters"));
    }
    let mut parts: Vec<&str> = Vec::new();
    for seg in path.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            s => parts.push(s),
        }
    }
    if parts.len() > MAX_DEPTH {
        return Err(format!("path deeper than {MAX_DEPTH} levels"));
    }
    Ok(format!("/{}", parts.join("/")))
}

fn parent(path: &str) -> &str {
    match path.rfind('/') {
        Some(0) | None => "/",
        Some(i) => &path[..i],
    }
}

fn base(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

fn is_under(path: &str, dir: &str) -> bool {
    dir == "/" || path == dir || path.strip_prefix(dir).is_some_and(|r| r.starts_with('/'))
}

impl Vfs {
    /// Builds a tree from task data, adding implied parent directories.
    pub fn new(dirs: &BTreeSet<String>, files: &BTreeMap<String, String>) -> Result<Self, String> {
        let mut v = Vfs::default();
        for d in dirs {
            v.mkdir(d)?;
        }
        for (p, content) in files {
            let p = normalize(p)?;
            v.mkdir(parent(&p))?;
            v.write(&p, content)?;
        }
        Ok(v)
    }

    pub fn state(&self) -> GoalState {
        GoalState::Files { dirs: self.dirs.clone(), files: self.files.clone() }
    }

    fn is_dir(&self, p: &str) -> bool {
        p == "/" || self.dirs.contains(p)
    }

    fn check_room(&self, extra_nodes: usize, extra_bytes: usize) -> Result<(), String> {
        if self.dirs.len() + self.files.len() + extra_nodes > MAX_NODES {
            return Err(format!("the file system is full (at most {MAX_NODES} entries)"));
        }
        let total: usize = self.files.values().map(String::len).sum();
        if total + extra_bytes > MAX_TOTAL_BYTES {
            return Err(format!("the file system is full (at most {MAX_TOTAL_BYTES} bytes)"));
        }
        Ok(())
    }

    pub fn ls(&self, path: &str) -> Result<String, String> {
        let p = normalize(path)?;
        if self.files.contains_key(&p) {
            return Err(format!("{p} is a file, not a directory"));
        }
        if !self.is_dir(&p) {
            return Err(format!("no such directory: {p}"));
        }
        let dirs = self.dirs.iter().filter(|d| parent(d) == p && d.as_str() != p).map(|d| format!("{}/", base(d)));
        let files = self.files.keys().filter(|f| parent(f) == p).map(|f| base(f).to_string());
        let mut entries: Vec<String> = dirs.chain(files).collect();
        entries.sort();
        Ok(if entries.is_empty() { "(empty)".into() } else { entries.join("\n") })
    }

    pub fn cat(&self, path: &str) -> Result<String, String> {
        let p = normalize(path)?;
        match self.files.get(&p) {
            Some(c) => Ok(c.clone()),
            None if self.is_dir(&p) => Err(format!("{p} is a directory")),
            None => Err(format!("no such file: {p}")),
        }
    }

    pub fn write(&mut self, path: &str, content: &str) -> Result<String, String> {
        let p = normalize(path)?;
        if p == "/" || self.is_dir(&p) {
            return Err(format!("{p} is a directory"));
        }
        if !self.is_dir(parent(&p)) {
            return Err(format!("no such directory: {} (create it with mkdir first)", parent(&p)));
        }
        if content.len() > MAX_FILE_BYTES {
            return Err(format!("content longer than {MAX_FILE_BYTES} bytes"));
        }
        let old = self.files.get(&p).map_or(0, String::len);
        self.check_room(usize::from(old == 0), content.len().saturating_sub(old))?;
        self.files.insert(p.clone(), content.to_string());
        Ok(format!("wrote {} bytes to {p}", content.len()))
    }

    /// Creates the directory and any missing parents.
    pub fn mkdir(&mut self, path: &str) -> Result<String, String> {
        let p = normalize(path)?;
        if self.is_dir(&p) {
            return Ok(format!("{p} already exists"));
        }
        let mut missing = Vec::new();
        let mut cur = p.as_str();
        while cur != "/" && !self.dirs.contains(cur) {
            if self.files.contains_key(cur) {
                return Err(format!("{cur} is a file"));
            }
            missing.push(cur.to_string());
            cur = parent(cur);
        }
        self.check_room(missing.len(), 0)?;
        self.dirs.extend(missing);
        Ok(format!("created {p}"))
    }

    /// Moves a file or a directory tree; into `dst` when `dst` is an existing directory.
    pub fn mv(&mut self, src: &str, dst: &str) -> Result<String, String> {
        let s = normalize(src)?;
        let mut d = normalize(dst)?;
        if s == "/" {
            return Err("cannot move /".into());
        }
        if !self.files.contains_key(&s) && !self.dirs.contains(&s) {
            return Err(format!("no such file or directory: {s}"));
        }
        if self.is_dir(&d) {
            d = normalize(&format!("{d}/{}", base(&s)))?;
        }
        if d == s {
            return Ok(format!("{s} is already there"));
        }
        if self.files.contains_key(&d) || self.dirs.contains(&d) {
            return Err(format!("{d} already exists"));
        }
        if !self.is_dir(parent(&d)) {
            return Err(format!("no such directory: {} (create it with mkdir first)", parent(&d)));
        }
        if is_under(&d, &s) {
            return Err(format!("cannot move {s} into itself"));
        }
        let moved = |p: &str| format!("{d}{}", &p[s.len()..]);
        let files: Vec<String> = self.files.keys().filter(|p| is_under(p, &s)).cloned().collect();
        let dirs: Vec<String> = self.dirs.iter().filter(|p| is_under(p, &s)).cloned().collect();
        for f in files {
            if let Some(c) = self.files.remove(&f) {
                self.files.insert(moved(&f), c);
            }
        }
        for dir in dirs {
            self.dirs.remove(&dir);
            self.dirs.insert(moved(&dir));
        }
        Ok(format!("moved {s} to {d}"))
    }

    /// Removes a file, or a directory with everything in it.
    pub fn rm(&mut self, path: &str) -> Result<String, String> {
        let p = normalize(path)?;
        if p == "/" {
            return Err("cannot remove /".into());
        }
        if self.files.remove(&p).is_some() {
            return Ok(format!("removed {p}"));
        }
        if !self.dirs.contains(&p) {
            return Err(format!("no such file or directory: {p}"));
        }
        self.files.retain(|f, _| !is_under(f, &p));
        self.dirs.retain(|d| !is_under(d, &p));
        Ok(format!("removed {p}"))
    }

    /// Lines containing `pattern` (a fixed string, case-sensitive) in files at or under `path`.
    pub fn grep(&self, pattern: &str, path: &str) -> Result<String, String> {
        let p = normalize(path)?;
        if !self.files.contains_key(&p) && !self.is_dir(&p) {
            return Err(format!("no such file or directory: {p}"));
        }
        let mut hits = Vec::new();
        let mut total = 0;
        for (f, content) in self.files.iter().filter(|(f, _)| is_under(f, &p)) {
            for (i, line) in content.lines().enumerate() {
                if line.contains(pattern) {
                    total += 1;
                    if hits.len() < MAX_GREP_LINES {
                        hits.push(format!("{f}:{}:{line}", i + 1));
                    }
                }
            }
        }
        if total > hits.len() {
            hits.push(format!("(and {} more matches)", total - hits.len()));
        }
        Ok(if hits.is_empty() { "no matches".into() } else { hits.join("\n") })
    }
}

pub struct FilesSandbox {
    fs: Vfs,
}

impl Sandbox for FilesSandbox {
    fn call(&mut self, call: &ToolCall) -> Result<String, String> {
        let fs = &mut self.fs;
        match call.name.as_str() {
            "ls" => fs.ls(call.arguments.get("path").and_then(Value::as_str).unwrap_or("/")),
            "cat" => fs.cat(arg_str(call, "path")?),
            "write" => fs.write(arg_str(call, "path")?, arg_str(call, "content")?),
            "mkdir" => fs.mkdir(arg_str(call, "path")?),
            "mv" => fs.mv(arg_str(call, "src")?, arg_str(call, "dst")?),
            "rm" => fs.rm(arg_str(call, "path")?),
            "grep" => fs.grep(arg_str(call, "pattern")?, call.arguments.get("path").and_then(Value::as_str).unwrap_or("/")),
            _ => Err(unknown_tool(call)),
        }
    }
    fn state(&self) -> Option<GoalState> {
        Some(self.fs.state())
    }
}

fn path_prop() -> Value {
    json!({"type": "string", "description": "absolute path such as /docs/notes.txt"})
}

impl Suite for Files {
    fn name(&self) -> &'static str {
        "files"
    }
    fn difficulties(&self) -> Option<std::ops::RangeInclusive<u8>> {
        Some(1..=3)
    }
    fn tool_names(&self) -> Option<&'static [&'static str]> {
        Some(&["ls", "cat", "write", "mkdir", "mv", "rm", "grep"])
    }
    fn tools(&self, _difficulty: u8) -> Vec<Value> {
        vec![
            tool_spec("ls", "List a directory.", json!({ "path": path_prop() }), &["path"]),
            tool_spec("cat", "Show the content of a file.", json!({ "path": path_prop() }), &["path"]),
            tool_spec(
                "write",
                "Create or overwrite a file with the given content.",
                json!({"path": path_prop(), "content": {"type": "string"}}),
                &["path", "content"],
            ),
            tool_spec("mkdir", "Create a directory (and missing parents).", json!({ "path": path_prop() }), &["path"]),
            tool_spec(
                "mv",
                "Move or rename a file or directory. If dst is an existing directory, src is moved into it.",
                json!({"src": path_prop(), "dst": path_prop()}),
                &["src", "dst"],
            ),
            tool_spec("rm", "Delete a file, or a directory with everything in it.", json!({ "path": path_prop() }), &["path"]),
            tool_spec(
                "grep",
                "Find lines containing a text in the files under a path.",
                json!({"pattern": {"type": "string"}, "path": path_prop()}),
                &["pattern", "path"],
            ),
        ]
    }
    fn max_turns(&self, difficulty: u8) -> u32 {
        3 + 3 * u32::from(difficulty)
    }
    fn draft(&self, rng: &mut TaskRng, difficulty: u8) -> Result<Draft, SuiteError> {
        let tree = Tree::generate(rng);
        let g = match difficulty {
            1 => tree.level1(rng),
            2 => tree.level2(rng),
            _ => tree.level3(rng),
        };
        let bad = |m: String| SuiteError::BadTask { task: g.instruction.clone(), message: m };
        let mut sandbox = FilesSandbox { fs: Vfs::new(&tree.dirs, &tree.files).map_err(bad)? };
        super::replay(&mut sandbox, &g.calls).map_err(bad)?;
        let expected = match &g.answer {
            Some(a) => Expected::Answer(AnswerSpec { answer: a.clone(), aliases: vec![], matcher: Matcher::Exact }),
            None => Expected::State { state: sandbox.fs.state(), answer: None },
        };
        Ok(Draft {
            instruction: g.instruction,
            data: TaskData::Files { dirs: tree.dirs, files: tree.files },
            expected,
            reference: Reference { calls: g.calls, answer: g.answer.unwrap_or_else(|| "done".into()), actions: Vec::new() },
        })
    }
    fn sandbox(&self, task: &Task) -> Result<Box<dyn Sandbox>, SuiteError> {
        match &task.data {
            TaskData::Files { dirs, files } => {
                Ok(Box::new(FilesSandbox { fs: Vfs::new(dirs, files).map_err(|m| SuiteError::BadTask { task: task.id.clone(), message: m })? }))
            }
            _ => Err(SuiteError::BadTask { task: task.id.clone(), message: "`data` must be of kind `files`".into() }),
        }
    }
}

const TOP_DIRS: &[&str] = &["/home", "/docs", "/logs", "/projects", "/notes", "/work"];
const NEW_DIRS: &[&str] = &["/archive", "/backup", "/old", "/done", "/shared"];
const CONF_KEYS: &[&str] = &["port", "timeout", "retries", "user", "mode", "level", "region", "color"];
const TXT_NAMES: &[&str] = &["notes", "todo", "report", "plan", "ideas", "minutes", "summary", "letter"];
const DAYS: &[&str] = &["Monday", "Tuesday", "Wednesday", "Thursday", "Friday"];

/// A drafted tree plus the per-file facts questions are made from.
struct Tree {
    dirs: BTreeSet<String>,
    files: BTreeMap<String, String>,
    /// .conf files with their key/value pairs.
    confs: Vec<(String, Vec<(String, String)>)>,
    /// .txt files with the unique topic word each mentions.
    topics: Vec<(String, String)>,
    /// The top-level directories that exist.
    tops: Vec<String>,
}

struct Goal {
    instruction: String,
    calls: Vec<ToolCall>,
    answer: Option<String>,
}

fn call(name: &str, args: Value) -> ToolCall {
    ToolCall::new(name, args)
}

impl Tree {
    fn generate(rng: &mut TaskRng) -> Self {
        let mut tops: Vec<String> = TOP_DIRS.iter().map(|s| s.to_string()).collect();
        tops.shuffle(rng);
        tops.truncate(rng.random_range(3..5));
        tops.sort();
        let mut taken = BTreeSet::new();
        let mut t = Tree { dirs: tops.iter().cloned().collect(), files: BTreeMap::new(), confs: vec![], topics: vec![], tops };
        for dir in t.tops.clone() {
            let mut names: Vec<&str> = TXT_NAMES.to_vec();
            names.shuffle(rng);
            let n_txt = rng.random_range(1..4);
            for name in names.iter().take(n_txt) {
                let path = format!("{dir}/{name}.txt");
                let topic = coined_words(rng, 1, &mut taken).remove(0).to_lowercase();
                let who = pick(rng, NAMES);
                let day = pick(rng, DAYS);
                t.files.insert(path.clone(), format!("Topic: {topic}\n{who} will review it on {day}.\n"));
                t.topics.push((path, topic));
            }
            if rng.random_bool(0.6) {
                let path = format!("{dir}/{}.conf", coined_words(rng, 1, &mut taken).remove(0).to_lowercase());
                let mut keys = CONF_KEYS.to_vec();
                keys.shuffle(rng);
                let pairs: Vec<(String, String)> = keys
                    .iter()
                    .take(3)
                    .map(|k| {
                        let v = if rng.random_bool(0.5) {
                            rng.random_range(1..10000).to_string()
                        } else {
                            coined_words(rng, 1, &mut taken).remove(0).to_lowercase()
                        };
                        (k.to_string(), v)
                    })
                    .collect();
                let body: String = pairs.iter().map(|(k, v)| format!("{k} = {v}\n")).collect();
                t.files.insert(path.clone(), body);
                t.confs.push((path, pairs));
            }
            for i in 0..rng.random_range(0..3) {
                t.files.insert(format!("{dir}/cache{i}.tmp"), format!("temporary data {}\n", rng.random_range(0..1000)));
            }
        }
        if t.confs.is_empty() {
            let dir = t.tops[0].clone();
            let path = format!("{dir}/app.conf");
            let pairs = vec![("port".to_string(), rng.random_range(1000..9999).to_string())];
            t.files.insert(path.clone(), format!("port = {}\n", pairs[0].1));
            t.confs.push((path, pairs));
        }
        t
    }

    fn conf_question(&self, rng: &mut TaskRng) -> (&str, &str, &str) {
        let (path, pairs) = pick(rng, &self.confs);
        let (k, v) = pick(rng, pairs);
        (path, k, v)
    }

    fn new_dir(&self, rng: &mut TaskRng) -> String {
        format!("{}/{}", pick(rng, NEW_DIRS), rng.random_range(2020..2031))
    }

    fn level1(&self, rng: &mut TaskRng) -> Goal {
        let (txt, _) = pick(rng, &self.topics).clone();
        match rng.random_range(0..5) {
            0 => {
                let (path, k, v) = self.conf_question(rng);
                Goal { instruction: format!("What is the value of {k} in {path}?"), calls: vec![call("cat", json!({ "path": path }))], answer: Some(v.into()) }
            }
            1 => {
                let d = self.new_dir(rng);
                Goal { instruction: format!("Create the directory {d}."), calls: vec![call("mkdir", json!({ "path": d }))], answer: None }
            }
            2 => Goal { instruction: format!("Delete the file {txt}."), calls: vec![call("rm", json!({ "path": txt }))], answer: None },
            3 => {
                let dst = format!("{}/old_{}", parent(&txt), base(&txt));
                Goal { instruction: format!("Rename {txt} to {dst}."), calls: vec![call("mv", json!({"src": txt, "dst": dst}))], answer: None }
            }
            _ => {
                let dir = pick(rng, &self.tops);
                let path = format!("{dir}/reminder.txt");
                let text = format!("call {} on {}", pick(rng, NAMES), pick(rng, DAYS));
                Goal {
                    instruction: format!("Create the file {path} containing exactly: {text}"),
                    calls: vec![call("write", json!({"path": path, "content": text}))],
                    answer: None,
                }
            }
        }
    }

    fn level2(&self, rng: &mut TaskRng) -> Goal {
        match rng.random_range(0..3) {
            0 => {
                let (path, k, v) = self.conf_question(rng);
                let dir = parent(path);
                Goal {
                    instruction: format!("What is the value of {k} in the .conf file in {dir}?"),
                    calls: vec![call("ls", json!({ "path": dir })), call("cat", json!({ "path": path }))],
                    answer: Some(v.into()),
                }
            }
            1 => {
                let (src, _) = pick(rng, &self.topics);
                let dst_dir = pick(rng, &self.tops);
                let dst = format!("{dst_dir}/copy_of_{}", base(src));
                Goal {
                    instruction: format!("Copy {src} to {dst}."),
                    calls: vec![call("cat", json!({ "path": src })), call("write", json!({"path": dst, "content": self.files[src]}))],
                    answer: None,
                }
            }
            _ => {
                let (src, _) = pick(rng, &self.topics);
                let d = self.new_dir(rng);
                Goal {
                    instruction: format!("Move {src} into a new directory {d}."),
                    calls: vec![call("mkdir", json!({ "path": d })), call("mv", json!({"src": src, "dst": d}))],
                    answer: None,
                }
            }
        }
    }

    fn level3(&self, rng: &mut TaskRng) -> Goal {
        // At least two .tmp files, so that the plan takes three calls or more.
        let with_tmp: Vec<&String> =
            self.tops.iter().filter(|d| self.files.keys().filter(|f| parent(f) == d.as_str() && f.ends_with(".tmp")).count() >= 2).collect();
        if !with_tmp.is_empty() && rng.random_bool(0.5) {
            let dir = *pick(rng, &with_tmp);
            let mut calls = vec![call("ls", json!({ "path": dir }))];
            calls.extend(self.files.keys().filter(|f| parent(f) == dir.as_str() && f.ends_with(".tmp")).map(|f| call("rm", json!({ "path": f }))));
            return Goal { instruction: format!("Delete every .tmp file in {dir}."), calls, answer: None };
        }
        let (src, topic) = pick(rng, &self.topics);
        let top = self.tops.iter().find(|t| is_under(src, t)).cloned().unwrap_or_else(|| "/".into());
        let d = self.new_dir(rng);
        Goal {
            instruction: format!("Find the file under {top} that mentions {topic} and move it into a new directory {d}."),
            calls: vec![call("grep", json!({"pattern": topic, "path": top})), call("mkdir", json!({ "path": d })), call("mv", json!({"src": src, "dst": d}))],
            answer: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fs() -> Vfs {
        let files = BTreeMap::from([("/docs/a.txt".to_string(), "hello\nworld\n".to_string()), ("/docs/sub/b.txt".to_string(), "hello there\n".to_string())]);
        Vfs::new(&BTreeSet::from(["/empty".to_string()]), &files).unwrap()
    }

    #[test]
    fn basic_operations() {
        let mut v = fs();
        assert_eq!(v.ls("/").unwrap(), "docs/\nempty/");
        assert_eq!(v.ls("docs").unwrap(), "a.txt\nsub/");
        assert_eq!(v.ls("/empty").unwrap(), "(empty)");
        assert_eq!(v.cat("/docs/../docs/./a.txt").unwrap(), "hello\nworld\n");
        assert!(v.cat("/docs").unwrap_err().contains("directory"));
        assert_eq!(v.grep("hello", "/docs").unwrap(), "/docs/a.txt:1:hello\n/docs/sub/b.txt:1:hello there");
        assert!(v.write("/nope/x.txt", "x").unwrap_err().contains("mkdir"));
        v.mv("/docs/sub", "/empty").unwrap();
        assert_eq!(v.cat("/empty/sub/b.txt").unwrap(), "hello there\n");
        assert!(v.ls("/docs/sub").is_err());
        assert!(v.mv("/empty", "/empty/sub").unwrap_err().contains("itself"));
        v.rm("/empty").unwrap();
        assert_eq!(v.ls("/").unwrap(), "docs/");
        assert!(v.rm("/").is_err());
        v.mkdir("/x/y/z").unwrap();
        assert_eq!(v.ls("/x/y").unwrap(), "z/");
    }

    #[test]
    fn caps_hold() {
        let mut v = fs();
        assert!(v.write("/docs/big", &"x".repeat(MAX_FILE_BYTES + 1)).is_err());
        let mut last = Ok(String::new());
        for i in 0..MAX_NODES + 5 {
            last = v.mkdir(&format!("/d{i}"));
        }
        assert!(last.unwrap_err().contains("full"));
        assert!(normalize(&"/a".repeat(MAX_DEPTH + 1)).is_err());
        assert_eq!(normalize("/../..").unwrap(), "/");
    }
}
