//! `cargo xtask export`: a trained run's latest checkpoint to a packed model file.

use std::path::PathBuf;

use anyhow::{Context, Result};

/// Arguments of `cargo xtask export`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Example:\n  \
    cargo xtask export runs/quick/D-1-1-aqe-fashion-mnist --out model.minw")]
pub(crate) struct Args {
    /// The run directory (with `config.toml` and `checkpoints/latest.json`).
    run: PathBuf,
    /// The packed model file to write.
    #[arg(long)]
    out: PathBuf,
}

/// Exports and prints the per-layer summary and the size next to the float checkpoint's.
pub(crate) fn run(args: Args) -> Result<()> {
    let report = minw_models::export::export_run(&args.run, &args.out)
        .with_context(|| format!("exporting {}", args.run.display()))?;
    println!(
        "{} {} -> {}",
        report.architecture,
        report.bits,
        report.path.display()
    );
    for (name, kind, constant) in &report.layers {
        let note = if *constant > 0 {
            format!(" ({constant} constant channels)")
        } else {
            String::new()
        };
        println!("  {name:<6} {kind}{note}");
    }
    println!(
        "packed {} bytes, float checkpoint {} bytes: {:.1}x smaller",
        report.packed_bytes,
        report.float_bytes,
        report.compression()
    );
    Ok(())
}
