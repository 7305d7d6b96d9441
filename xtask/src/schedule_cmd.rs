//! `cargo xtask schedule`: print what an alpha and a learning-rate schedule give over a run.

use aqe_core::{AlphaSchedule, LrSchedule, Progress, ScheduleUnit};

/// Arguments of `cargo xtask schedule`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  \
    cargo xtask schedule --epochs 200\n  \
    cargo xtask schedule --alpha exp:0.5:1:5 --lr exp_to:0.001 --base-lr 0.01 --epochs 200\n  \
    cargo xtask schedule --alpha cosine:0.5:1@iter --lr multistep:32000,38000:0.1@iter \\\n    \
    --base-lr 0.1 --epochs 164 --steps-per-epoch 391")]
pub(crate) struct Args {
    /// Alpha schedule: `constant:V | linear[:START[:END]] | exp[:START[:END[:SHARPNESS]]] |
    /// cosine[:START[:END]] | step[:START[:END[:STEPS]]]`, then optionally @epoch or @iter.
    #[arg(long, default_value = "linear:0.5:1@epoch")]
    alpha: AlphaSchedule,
    /// Learning-rate schedule: `constant | exp:GAMMA | exp_to:FINAL | multistep:M1,M2,..[:FACTOR]`
    /// (milestones in units or N%) `| cosine[:MIN]`, then optionally +warmup:N and @epoch or @iter.
    #[arg(long, default_value = "constant")]
    lr: LrSchedule,
    /// The optimizer's base learning rate.
    #[arg(long, default_value_t = 0.01)]
    base_lr: f64,
    /// Epochs in the run.
    #[arg(long, default_value_t = 200)]
    epochs: u32,
    /// Iterations per epoch (matters for @iter schedules).
    #[arg(long, default_value_t = 1)]
    steps_per_epoch: u32,
    /// Print every N-th epoch (the first and last are always printed); 0 picks about 20 rows.
    #[arg(long, default_value_t = 0)]
    every: u32,
}

/// Prints one row per selected epoch: alpha and learning rate at the epoch's first step, and,
/// for per-iteration schedules, at its last step too.
pub(crate) fn run(args: Args) -> anyhow::Result<()> {
    let every = if args.every == 0 {
        args.epochs.div_ceil(20).max(1)
    } else {
        args.every
    };
    let per_iter =
        args.alpha.unit() == ScheduleUnit::Iteration || args.lr.unit() == ScheduleUnit::Iteration;
    println!(
        "alpha: {}    lr: {} (base {})",
        args.alpha, args.lr, args.base_lr
    );
    if per_iter {
        println!(
            "{:>7} {:>10} {:>10} {:>12} {:>12}",
            "epoch", "alpha@0", "alpha@end", "lr@0", "lr@end"
        );
    } else {
        println!("{:>7} {:>10} {:>12}", "epoch", "alpha", "lr");
    }
    for epoch in 0..args.epochs {
        if epoch % every != 0 && epoch + 1 != args.epochs {
            continue;
        }
        let first = Progress::new(epoch, args.epochs, 0, args.steps_per_epoch)?;
        let (a0, lr0) = (
            args.alpha.alpha_at(&first),
            args.lr.lr_at(args.base_lr, &first),
        );
        if per_iter {
            let last = Progress::new(
                epoch,
                args.epochs,
                args.steps_per_epoch - 1,
                args.steps_per_epoch,
            )?;
            let (a1, lr1) = (
                args.alpha.alpha_at(&last),
                args.lr.lr_at(args.base_lr, &last),
            );
            println!("{epoch:>7} {a0:>10.4} {a1:>10.4} {lr0:>12.6e} {lr1:>12.6e}");
        } else {
            println!("{epoch:>7} {a0:>10.4} {lr0:>12.6e}");
        }
    }
    Ok(())
}
