use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = autodidact::cli::Cli::parse();
    match autodidact::cli::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
