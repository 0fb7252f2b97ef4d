use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // candle's spinning element-wise pool fights rayon's gemm pool for cores: 3x slower training here (see train/mod.rs).
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        std::env::set_var("CANDLE_NUM_THREADS", "1");
    }
    let cli = autodidact::cli::Cli::parse();
    match autodidact::cli::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
