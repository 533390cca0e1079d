//! `flotilla`: the operator CLI, a client of the coordinator's Fleet gRPC API (see
//! `flotilla_coordinator::cli`).

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;
use flotilla_coordinator::cli::{self, Cli, Io};

fn main() -> ExitCode {
    let args = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(cli::error::EXIT_SERVER);
        }
    };
    let mut io = Io::stdio();
    match runtime.block_on(cli::run(args, &mut io)) {
        Ok(outcome) => ExitCode::from(outcome.exit_code()),
        Err(e) => {
            let _ = io.out.flush();
            eprintln!("error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
