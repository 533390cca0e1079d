//! The `flotilla-agent` binary: parse arguments, set up logs, traces and metrics, run.

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use flotilla_agent::args::Args;
use flotilla_proto::telemetry;

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let guard = match telemetry::init("flotilla-agent", args.log_format.into(), &args.log_filter()) {
        Ok(guard) => guard,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let code = match args.run().await.context("flotilla-agent") {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    };
    // Export the spans still buffered before the process ends.
    guard.shutdown();
    code
}
