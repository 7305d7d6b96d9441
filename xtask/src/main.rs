//! `cargo xtask`: the project's task runner (data fetching, reproduction runs, benchmarks).
//!
//! Run `cargo xtask --help` for the list of commands. Each command lives in its own module.

mod schedule_cmd;

use clap::{Parser, Subcommand};

/// Project tasks for the MINW / AQE workspace.
#[derive(Debug, Parser)]
#[command(name = "cargo xtask", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print the alpha and learning-rate values a schedule gives over a run.
    Schedule(schedule_cmd::Args),
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Schedule(args) => schedule_cmd::run(args),
    }
}
