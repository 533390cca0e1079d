//! `flotilla-coordinator`: the coordinator binary (`ca init`, `ca issue`).

mod args;

fn main() -> anyhow::Result<()> {
    <args::Args as clap::Parser>::parse().run()
}
