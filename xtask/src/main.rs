//! `cargo xtask`: the project's task runner (data fetching, reproduction runs, benchmarks).
//!
//! Run `cargo xtask --help` for the list of commands. Each command lives in its own module.

mod bench_kernels;
mod bench_packed;
mod bench_train;
mod eval_packed;
mod export_cmd;
mod fetch_data;
mod reproduce_cifar;
mod schedule_cmd;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};

/// Re-runs this xtask command in a child process with `RAYON_NUM_THREADS` and
/// `CANDLE_NUM_THREADS` set to `threads` (both pools are sized once per process), unless this
/// process already runs with that `RAYON_NUM_THREADS`. Returns `true` when the child ran (the
/// caller is done), `false` when the caller should do the work itself.
///
/// # Errors
/// When the child cannot be started or fails (`command` names it).
pub(crate) fn rerun_with_threads(threads: usize, command: &str) -> Result<bool> {
    let want = threads.to_string();
    if std::env::var("RAYON_NUM_THREADS").ok().as_deref() == Some(want.as_str()) {
        return Ok(false);
    }
    let exe = std::env::current_exe().context("locating the xtask binary")?;
    let status = std::process::Command::new(exe)
        .args(std::env::args_os().skip(1))
        .env("RAYON_NUM_THREADS", &want)
        .env("CANDLE_NUM_THREADS", &want)
        .status()
        .context("re-running with RAYON_NUM_THREADS")?;
    if !status.success() {
        bail!("{command} failed ({status})");
    }
    Ok(true)
}

/// Project tasks for the MINW / AQE workspace.
#[derive(Debug, Parser)]
#[command(name = "cargo xtask", bin_name = "cargo xtask", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print the alpha and learning-rate values a schedule gives over a run.
    Schedule(schedule_cmd::Args),
    /// Time the 1-bit and int8 conv kernels against an AVX-512 float GEMM baseline.
    BenchKernels(bench_kernels::Args),
    /// Time one training step of ResNet-20 and ConvNet D, float and AQE W1A1, at 1 and 2 threads.
    BenchTrain(bench_train::Args),
    /// Download, verify and unpack CIFAR-10 or CIFAR-100 (resumable; `--from` for offline use).
    #[command(long_about = fetch_data::LONG_ABOUT)]
    FetchData(fetch_data::Args),
    /// Train the paper's models with AQE (or STE, float, ...) and compare with its Tables I and II.
    ReproduceCifar(Box<reproduce_cifar::Args>),
    /// Export a trained W1A1 ConvNet run to a packed model file.
    Export(export_cmd::Args),
    /// Accuracy, agreement with the training graph and speed of a packed model.
    EvalPacked(eval_packed::Args),
    /// Time the packed engine against the float graph on a random-init W1A1 ConvNet A-D.
    BenchPacked(bench_packed::Args),
}

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    aqe_candle::tune_allocator();
    let result = match cli.command {
        Command::Schedule(args) => schedule_cmd::run(args),
        Command::BenchKernels(args) => bench_kernels::run(args),
        Command::BenchTrain(args) => bench_train::run(args),
        Command::FetchData(args) => fetch_data::run(args),
        Command::ReproduceCifar(args) => reproduce_cifar::run(*args),
        Command::Export(args) => export_cmd::run(args),
        Command::EvalPacked(args) => eval_packed::run(args),
        Command::BenchPacked(args) => bench_packed::run(args),
    };
    // Errors are for people: the message and its causes, never a backtrace (which anyhow
    // would print for an error returned from main when RUST_BACKTRACE is set).
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
