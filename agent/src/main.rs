//! The `flotilla-agent` binary: parse arguments, set up logging, run.

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use flotilla_agent::args::{Args, LogFormat};

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let filter = tracing_subscriber::EnvFilter::try_new(args.log_filter())
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match args.log_format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().with_current_span(true).with_span_list(true).init(),
    }
    match args.run().await.context("flotilla-agent") {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
