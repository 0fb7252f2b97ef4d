//! One writer per output: an advisory lock (`flock`) on a `.autodidact.lock` file in the output folder (or
//! `<file>.lock` beside an output file), holding the writer's pid. A second process on the same folder is refused at once, naming the holder; a lock left by a
//! killed process never blocks, because the OS releases it with the process.
use std::fs::File;
use std::io::{Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

pub const LOCK_FILE: &str = ".autodidact.lock";

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("{}: another autodidact process (pid {pid}) is writing it; wait for it to finish, or use another output", output.display())]
    Held { output: PathBuf, pid: String },
    #[error("{}: cannot take the output lock: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
}

/// Held for as long as the value lives. A command that fails before writing anything leaves nothing behind: on
/// drop the lock file goes when its output does not exist, and so does a folder that only the lock created.
#[derive(Debug)]
pub struct OutputLock {
    file: Option<File>,
    path: PathBuf,
    output: PathBuf,
    created_dir: bool,
}

impl OutputLock {
    /// Locks `dir` (created if missing) for this process.
    pub fn acquire(dir: &Path) -> Result<OutputLock, LockError> {
        let created_dir = !dir.exists();
        std::fs::create_dir_all(dir).map_err(|source| LockError::Io { path: dir.to_path_buf(), source })?;
        let mut lock = Self::take(&dir.join(LOCK_FILE), dir)?;
        lock.created_dir = created_dir;
        Ok(lock)
    }

    /// Locks the output file `path` (through `<path>.lock`, so other files in its folder stay free).
    pub fn for_file(path: &Path) -> Result<OutputLock, LockError> {
        let mut name = path.as_os_str().to_owned();
        name.push(".lock");
        if let Some(dir) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| LockError::Io { path: dir.to_path_buf(), source })?;
        }
        Self::take(Path::new(&name), path)
    }

    /// Whether the output holds anything besides the lock.
    fn output_written(&self) -> bool {
        match std::fs::read_dir(&self.output) {
            Ok(mut entries) => entries.any(|e| e.map_or(true, |e| e.path() != self.path)),
            Err(_) => self.output.exists(),
        }
    }

    fn take(path: &Path, output: &Path) -> Result<OutputLock, LockError> {
        let io = |source| LockError::Io { path: path.to_path_buf(), source };
        let mut file = std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(false).open(path).map_err(io)?;
        // SAFETY: flock on a file descriptor this function owns; no memory is involved.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
                let mut pid = String::new();
                let _ = file.read_to_string(&mut pid);
                let pid = if pid.trim().is_empty() { "unknown".to_string() } else { pid.trim().to_string() };
                return Err(LockError::Held { output: output.to_path_buf(), pid });
            }
            return Err(io(err));
        }
        file.set_len(0).map_err(io)?;
        file.rewind().map_err(io)?;
        writeln!(file, "{}", std::process::id()).map_err(io)?;
        file.flush().map_err(io)?;
        Ok(OutputLock { file: Some(file), path: path.to_path_buf(), output: output.to_path_buf(), created_dir: false })
    }
}

impl Drop for OutputLock {
    fn drop(&mut self) {
        if self.output_written() {
            return;
        }
        // Unlinked while still held, so no other process can take a lock on a file about to disappear unseen.
        let _ = std::fs::remove_file(&self.path);
        self.file.take();
        if self.created_dir {
            // Only an empty folder is removed: anything another process wrote meanwhile stays.
            let _ = std::fs::remove_dir(&self.output);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_the_folder_is_refused_and_released_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let first = OutputLock::acquire(dir.path()).unwrap();
        // flock locks belong to the open file description, so a second open in this process conflicts too.
        let e = OutputLock::acquire(dir.path()).unwrap_err().to_string();
        assert!(e.contains(&format!("pid {}", std::process::id())), "{e}");
        drop(first);
        OutputLock::acquire(dir.path()).unwrap();
    }

    /// A failed command leaves no trace; one that wrote its output keeps it (and the lock file beside it).
    #[test]
    fn nothing_is_left_behind_when_nothing_was_written() {
        let dir = tempfile::tempdir().unwrap();
        let (out, existing) = (dir.path().join("new-run"), dir.path().join("old-run"));
        drop(OutputLock::acquire(&out).unwrap());
        assert!(!out.exists(), "an output folder only the lock created");
        std::fs::create_dir(&existing).unwrap();
        drop(OutputLock::acquire(&existing).unwrap());
        assert!(existing.is_dir() && !existing.join(LOCK_FILE).exists(), "a folder that was already there stays");
        let lock = OutputLock::acquire(&out).unwrap();
        std::fs::write(out.join("eval.json"), "{}").unwrap();
        drop(lock);
        assert!(out.join("eval.json").is_file() && out.join(LOCK_FILE).is_file());

        let file = dir.path().join("traj.jsonl");
        drop(OutputLock::for_file(&file).unwrap());
        assert!(!dir.path().join("traj.jsonl.lock").exists());
        let lock = OutputLock::for_file(&file).unwrap();
        std::fs::write(&file, "").unwrap();
        drop(lock);
        assert!(dir.path().join("traj.jsonl.lock").is_file());
    }
}
