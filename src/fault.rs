//! Fault injection for the kill soak (scripts/dev/soak.sh): with `AUTODIDACT_KILL_AT=<point>` the process sends itself
//! SIGKILL when it reaches that point, so steps that last milliseconds (writing a filter's files, the report)
//! are interrupted deterministically instead of by luck. Unset (always, outside the soak), a point does nothing.
pub const ENV: &str = "AUTODIDACT_KILL_AT";

/// The named points, in the order a round reaches them.
pub const POINTS: &[&str] = &["filter:audit", "filter:dataset", "round:record", "report:md", "report:curves"];

pub fn point(name: &str) {
    if std::env::var(ENV).is_ok_and(|v| v == name) {
        eprintln!("{ENV}={name}: killing this process here");
        #[cfg(unix)]
        // SAFETY: kill(2) on our own pid with a valid signal number has no memory-safety preconditions.
        unsafe {
            libc::kill(libc::getpid(), libc::SIGKILL);
        }
        std::process::abort();
    }
}
