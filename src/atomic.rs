//! The one way files and folders are written: into a temporary sibling, then renamed into place, so that a
//! crash or a kill at any instant leaves the previous version or the new one at the path, never a mixture.
//!
//! - A file: written and synced as `.<name>.tmp-<pid>`, then renamed over the path. A failed write removes its
//!   temporary and names the path.
//! - A folder: filled as `.<name>.tmp-<pid>`, then swapped with the old folder in one step (`renameat2` with
//!   `RENAME_EXCHANGE` on Linux), after which the old copy, now under the temporary name, is removed. Where the
//!   kernel has no exchange, the old folder is first moved aside to `.<name>.old` and restored by the next write
//!   if a crash came between the two renames. Temporaries of killed writers are removed by the next write.
use std::io::Write;
use std::path::{Path, PathBuf};

/// A write that failed, naming the path it was for.
#[derive(Debug, thiserror::Error)]
#[error("{}: {source}", path.display())]
pub struct WriteError {
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

fn err(path: &Path) -> impl FnOnce(std::io::Error) -> WriteError + '_ {
    move |source| WriteError { path: path.to_path_buf(), source }
}

fn parent_and_name(path: &Path) -> (&Path, String) {
    let parent = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "out".into());
    (parent, name)
}

/// Writes `bytes` to `path` (creating its folder).
pub fn write_file(path: &Path, bytes: &[u8]) -> Result<(), WriteError> {
    let (parent, name) = parent_and_name(path);
    std::fs::create_dir_all(parent).map_err(err(parent))?;
    remove_stale(parent, &name)?;
    let tmp = parent.join(format!(".{name}.tmp-{}", std::process::id()));
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        crate::fault::point("atomic:file-written");
        std::fs::rename(&tmp, path)
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        WriteError { path: path.to_path_buf(), source: e }
    })
}

/// Fills a new folder with `fill` and puts it in place of `out`. An error from `fill` leaves `out` as it was.
pub fn write_dir<E: From<WriteError>>(out: &Path, fill: impl FnOnce(&Path) -> Result<(), E>) -> Result<(), E> {
    let (parent, name) = parent_and_name(out);
    std::fs::create_dir_all(parent).map_err(err(parent))?;
    let old = parent.join(format!(".{name}.old"));
    if !out.exists() && old.is_dir() {
        // The last write died between moving the old folder aside and moving the new one in.
        std::fs::rename(&old, out).map_err(err(out))?;
    }
    remove_stale(parent, &name)?;
    let tmp = parent.join(format!(".{name}.tmp-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).map_err(err(&tmp))?;
    if let Err(e) = fill(&tmp) {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    crate::fault::point("atomic:dir-filled");
    if !out.exists() {
        std::fs::rename(&tmp, out).map_err(err(out))?;
        return Ok(());
    }
    if exchange(&tmp, out).map_err(err(out))? {
        crate::fault::point("atomic:dir-swapped");
        std::fs::remove_dir_all(&tmp).map_err(err(&tmp))?;
        return Ok(());
    }
    std::fs::rename(out, &old).map_err(err(out))?;
    crate::fault::point("atomic:dir-old-aside");
    std::fs::rename(&tmp, out).map_err(err(out))?;
    std::fs::remove_dir_all(&old).map_err(err(&old))?;
    Ok(())
}

/// Temporaries `.<name>.tmp-*` left beside `name` by writers that were killed.
fn remove_stale(parent: &Path, name: &str) -> Result<(), WriteError> {
    let prefix = format!(".{name}.tmp-");
    for e in std::fs::read_dir(parent).map_err(err(parent))?.flatten() {
        if e.file_name().to_string_lossy().starts_with(&prefix) {
            let p = e.path();
            let gone = if p.is_dir() { std::fs::remove_dir_all(&p) } else { std::fs::remove_file(&p) };
            gone.map_err(err(&p))?;
        }
    }
    Ok(())
}

/// Swaps two paths in one step; false where the system cannot.
#[cfg(target_os = "linux")]
fn exchange(a: &Path, b: &Path) -> std::io::Result<bool> {
    use std::os::unix::ffi::OsStrExt;
    let c = |p: &Path| std::ffi::CString::new(p.as_os_str().as_bytes()).map_err(std::io::Error::other);
    let (ca, cb) = (c(a)?, c(b)?);
    // SAFETY: both pointers are valid NUL-terminated paths for the duration of the call.
    let r = unsafe { libc::renameat2(libc::AT_FDCWD, ca.as_ptr(), libc::AT_FDCWD, cb.as_ptr(), libc::RENAME_EXCHANGE) };
    if r == 0 {
        return Ok(true);
    }
    let e = std::io::Error::last_os_error();
    match e.raw_os_error() {
        // Kernels or file systems without RENAME_EXCHANGE.
        Some(libc::EINVAL) | Some(libc::ENOSYS) => Ok(false),
        _ => Err(e),
    }
}

#[cfg(not(target_os = "linux"))]
fn exchange(_: &Path, _: &Path) -> std::io::Result<bool> {
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHILD: &str = "AUTODIDACT_ATOMIC_TEST_DIR";

    fn read(dir: &Path) -> Option<String> {
        std::fs::read_to_string(dir.join("f")).ok()
    }

    fn siblings(parent: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(parent).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        v.sort();
        v
    }

    /// Run as a child of the test below: writes "new" into `<dir>/out` (a folder) and `<dir>/file`, to be killed
    /// at the point `AUTODIDACT_KILL_AT` names.
    #[test]
    fn child_writer() {
        let Ok(dir) = std::env::var(CHILD) else { return };
        let dir = Path::new(&dir);
        write_dir::<WriteError>(&dir.join("out"), |tmp| std::fs::write(tmp.join("f"), "new").map_err(err(tmp))).unwrap();
        write_file(&dir.join("file"), b"new").unwrap();
    }

    #[test]
    fn a_kill_between_any_two_steps_leaves_the_old_or_the_new_version() {
        let points = ["atomic:dir-filled", "atomic:dir-swapped", "atomic:dir-old-aside", "atomic:file-written"];
        for point in points {
            let d = tempfile::tempdir().unwrap();
            let out = d.path().join("out");
            std::fs::create_dir(&out).unwrap();
            std::fs::write(out.join("f"), "old").unwrap();
            std::fs::write(d.path().join("file"), "old").unwrap();
            let status = std::process::Command::new(std::env::current_exe().unwrap())
                .args(["--exact", "atomic::tests::child_writer", "--test-threads=1"])
                .env(CHILD, d.path())
                .env(crate::fault::ENV, point)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status()
                .unwrap();
            let file = std::fs::read_to_string(d.path().join("file")).unwrap();
            if point == "atomic:dir-old-aside" && status.success() {
                // The exchange worked, so the fallback's point was never reached: nothing was killed.
                assert_eq!((read(&out).as_deref(), file.as_str()), (Some("new"), "new"));
                continue;
            }
            assert!(!status.success(), "{point}: the writer was not killed");
            let expected = match point {
                "atomic:dir-filled" => Some("old"),
                "atomic:dir-swapped" | "atomic:file-written" => Some("new"),
                _ => None, // between the fallback's two renames: the folder is aside until the next write
            };
            if let Some(e) = expected {
                assert_eq!(read(&out).as_deref(), Some(e), "{point}");
            }
            assert_eq!(file, "old", "{point}: the file is written last");
            // The next write finds either version (or the fallback's folder moved aside), and leaves only the new one.
            write_dir::<WriteError>(&out, |tmp| std::fs::write(tmp.join("f"), "newer").map_err(err(tmp))).unwrap();
            assert_eq!(read(&out).as_deref(), Some("newer"), "{point}");
            write_file(&d.path().join("file"), b"newer").unwrap();
            let left: Vec<String> = siblings(d.path()).into_iter().filter(|n| n.starts_with('.')).collect();
            assert!(left.is_empty(), "{point}: {left:?} left behind");
        }
    }

    #[test]
    fn a_failed_fill_keeps_the_old_folder() {
        let d = tempfile::tempdir().unwrap();
        let out = d.path().join("out");
        write_dir::<WriteError>(&out, |tmp| std::fs::write(tmp.join("f"), "one").map_err(err(tmp))).unwrap();
        let e = write_dir::<WriteError>(&out, |tmp| Err(WriteError { path: tmp.to_path_buf(), source: std::io::Error::other("full") }));
        assert!(e.is_err());
        assert_eq!(read(&out).as_deref(), Some("one"));
        assert_eq!(siblings(d.path()), vec!["out".to_string()]);
    }
}
