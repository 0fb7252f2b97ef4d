//! Progress bars on stderr, hidden when stderr is not a terminal or output is JSON.
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

pub fn bar(total: u64, what: &str, quiet: bool) -> ProgressBar {
    let pb = ProgressBar::with_draw_target(Some(total), if quiet { ProgressDrawTarget::hidden() } else { ProgressDrawTarget::stderr() });
    let style =
        ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} {per_sec} eta {eta}").unwrap_or_else(|_| ProgressStyle::default_bar()).progress_chars("=> ");
    pb.set_style(style);
    pb.set_message(what.to_string());
    pb
}
