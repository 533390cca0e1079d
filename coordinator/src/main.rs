//! `flotilla-coordinator`: the coordinator binary (`serve`, `ca init`, `ca issue`).

mod args;

fn main() -> anyhow::Result<()> {
    <args::Args as clap::Parser>::parse().run()
}
