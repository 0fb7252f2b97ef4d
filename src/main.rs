use std::process::ExitCode;

use clap::Parser;

mod cli;

fn main() -> ExitCode {
    // candle's spinning element-wise pool fights rayon's gemm pool for cores: 3x slower training here (see train/mod.rs).
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        std::env::set_var("CANDLE_NUM_THREADS", "1");
    }
    // candle asks for its thread count at every matmul, and without this variable that means parsing
    // /proc/cpuinfo each time (3% of a training step). Fixed to candle's own answer (physical cores), which rayon's
    // pool for our kernels then uses too.
    if std::env::var_os("RAYON_NUM_THREADS").is_none() {
        std::env::set_var("RAYON_NUM_THREADS", candle_core::utils::get_num_threads().to_string());
    }
    keep_freed_memory();
    let cli = cli::Cli::parse();
    // The command runs on a pool worker, not beside the pool: a parallel kernel called from outside rayon's pool
    // wakes the workers and puts the caller to sleep until they finish (two context switches per gemm, thousands
    // per training step); from a worker the caller takes part in the work. 7-8% faster training here. The worker
    // gets the main thread's usual 8 MiB of stack.
    let pool = rayon::ThreadPoolBuilder::new().num_threads(candle_core::utils::get_num_threads()).stack_size(8 << 20).build_global();
    if let Err(e) = pool {
        eprintln!("warning: could not configure the thread pool: {e}");
    }
    match rayon::scope(|_| cli::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", chain(&e));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes, each once: many error types already print their cause in their own message.
fn chain(e: &anyhow::Error) -> String {
    let mut msg = e.to_string();
    for cause in e.chain().skip(1) {
        let c = cause.to_string();
        if !msg.contains(&c) {
            msg = format!("{msg}: {c}");
        }
    }
    msg
}

/// candle allocates a fresh buffer for every tensor; glibc hands large ones (mmap'd) back to the kernel on free, so
/// each training step paid page faults and page zeroing for the same few hundred MB again. Serving them from the
/// heap and not trimming it keeps those pages mapped (peak memory is unchanged: it is the peak that stays).
fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; called before any other thread exists.
    unsafe {
        // Older glibc refuses thresholds above 32 MiB; most buffers are smaller than that.
        if libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 30) == 0 {
            libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        }
        libc::mallopt(libc::M_TRIM_THRESHOLD, -1);
    }
}
