//! Starting the user's programs (MCP servers, scorers): the program is looked up without a shell, gets only the
//! environment it is configured with, runs in its own process group, and on Linux dies with this process.
use std::path::PathBuf;
use std::process::{Child, Command};
use std::sync::mpsc;
use std::sync::OnceLock;

/// `command` itself when it names a path, else the first match on this process's PATH.
pub fn resolve_program(command: &str) -> std::io::Result<PathBuf> {
    if command.contains('/') {
        return Ok(PathBuf::from(command));
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|d| d.join(command))
        .find(|p| p.is_file())
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, format!("`{command}` is not on PATH")))
}

/// A command for `program` with only `env`, in a process group of its own, killed (on Linux) when this process dies.
pub fn isolated<'a>(program: &PathBuf, args: &[String], env: impl IntoIterator<Item = (&'a String, &'a String)>) -> Command {
    let mut cmd = Command::new(program);
    cmd.args(args).env_clear().envs(env);
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt;
        cmd.process_group(0);
        #[cfg(target_os = "linux")]
        // SAFETY: prctl is async-signal-safe; the closure touches no memory of the parent.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
    }
    cmd
}

/// Kills `pid`'s process group (the child and anything it started).
pub fn kill_group(pid: u32) {
    #[cfg(unix)]
    // SAFETY: kill(2) on a process group this module created, with a valid signal.
    unsafe {
        libc::kill(-(pid as i32), libc::SIGKILL);
    }
}

type SpawnRequest = (Command, mpsc::Sender<std::io::Result<Child>>);

/// Starts `cmd` from a thread that lives as long as this process. On Linux a child's death signal follows the
/// thread that started it, not the process, and episodes start their servers on short-lived threads.
pub fn spawn(cmd: Command) -> std::io::Result<Child> {
    static SPAWNER: OnceLock<mpsc::Sender<SpawnRequest>> = OnceLock::new();
    let spawner = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnRequest>();
        std::thread::spawn(move || {
            for (mut cmd, back) in rx {
                let _ = back.send(cmd.spawn());
            }
        });
        tx
    });
    let (back, answer) = mpsc::channel();
    let gone = || std::io::Error::other("the process-starting thread is gone");
    spawner.send((cmd, back)).map_err(|_| gone())?;
    answer.recv().map_err(|_| gone())?
}

/// A child killed, with its process group, when this is dropped.
pub struct OwnedChild(pub Child);

impl Drop for OwnedChild {
    fn drop(&mut self) {
        kill_group(self.0.id());
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
