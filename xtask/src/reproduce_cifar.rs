//! `cargo xtask reproduce-cifar`: train the paper's models with AQE and compare with its tables.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, bail};
use aqe_core::{AlphaSchedule, Estimator, LrSchedule};
use minw_models::data::{CifarVariant, DatasetKind, FASHION_MNIST_DEFAULT_DIR, resolve_cifar_dir};
use minw_models::train::{EpochMetrics, Outcome, RunData, TrainConfig, Trainer};

use crate::fetch_data::{self, Source, Unreachable};

/// Arguments of `cargo xtask reproduce-cifar`.
#[derive(Debug, Clone, clap::Args)]
#[command(after_help = "Examples:\n  \
    cargo xtask reproduce-cifar --quick                       # ~10 min: Model D, float vs STE vs AQE\n  \
    cargo xtask reproduce-cifar --model D --bits 1/1          # the paper's recipe (200 epochs)\n  \
    cargo xtask reproduce-cifar --model resnet20 --bits 1/1 --epochs 10 --out runs/r20\n  \
    cargo xtask reproduce-cifar --table 1 --model D --epochs 50\n  \
    cargo xtask reproduce-cifar --table 2 --model D           # CIFAR-100, AQE vs STE\n  \
    cargo xtask reproduce-cifar --resume runs/D-1-1-aqe-cifar10\n\n\
Data: CIFAR-10/100 are read from --data-dir (default ./data or $MINW_DATA_DIR) and fetched there when \
missing (see `cargo xtask fetch-data --help`); Fashion-MNIST comes from the Debian package \
dataset-fashion-mnist (/usr/share/datasets/fashion-mnist) unless --data-dir is given.\n\
Ctrl-C writes a checkpoint; --resume continues exactly where the run stopped.")]
pub(crate) struct Args {
    /// Model: A, B, C, D (the paper's ConvNets) or resnet20, resnet32, resnet44, resnet56, resnet110.
    #[arg(long, default_value = "D")]
    model: String,
    /// MINW setting M/N: activation bits / weight bits, each 1, 2, 3, or 16/32 (float).
    #[arg(long, default_value = "1/1")]
    bits: String,
    /// Estimator: aqe, aqe:scaled, ste, approx_sign, `swish_sign[:BETA]`, identity.
    #[arg(long, default_value = "aqe")]
    estimator: Estimator,
    /// Alpha schedule, e.g. linear:0.5:1 (default), exp:0.5:1:5, cosine:0.5:1@iter, constant:1.
    #[arg(long)]
    alpha_schedule: Option<AlphaSchedule>,
    /// Dataset: cifar10, cifar100, fashion-mnist, mnist.
    #[arg(long, default_value = "cifar10")]
    dataset: String,
    /// Epochs (default: the paper's recipe for the model).
    #[arg(long)]
    epochs: Option<u32>,
    /// Batch size (default: the recipe's).
    #[arg(long)]
    batch_size: Option<usize>,
    /// Base learning rate (default: the recipe's).
    #[arg(long)]
    lr: Option<f64>,
    /// Learning-rate schedule, e.g. exp_to:0.001, multistep:50%,75%, cosine (default: the recipe's).
    #[arg(long)]
    lr_schedule: Option<LrSchedule>,
    /// Optimizer: adam or sgd (default: the recipe's).
    #[arg(long)]
    optimizer: Option<String>,
    /// Loss: cross_entropy or squared_hinge.
    #[arg(long)]
    loss: Option<String>,
    /// Keep the first layer's weights in float.
    #[arg(long)]
    first_layer_float: bool,
    /// Keep the last layer in float.
    #[arg(long)]
    last_layer_float: bool,
    /// Seed of initialisation, split, shuffles and augmentation.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Train on only this many images (after the validation split).
    #[arg(long)]
    train_subset: Option<usize>,
    /// Test on only this many images.
    #[arg(long)]
    test_subset: Option<usize>,
    /// Images held out of the training set for validation (the paper: 5000).
    #[arg(long)]
    validation: Option<usize>,
    /// Where datasets live (default ./data or $MINW_DATA_DIR; Fashion-MNIST: the Debian package's directory).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Output directory (default `runs/MODEL-BITS-ESTIMATOR-DATASET`; a table gets one sub-directory per row).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Continue the run in this directory from its last checkpoint.
    #[arg(long, conflicts_with_all = ["table", "quick"])]
    resume: Option<PathBuf>,
    /// Run every row of the paper's Table I (CIFAR-10, all M/N) or Table II (CIFAR-100, W1A1 AQE vs STE) for --model.
    #[arg(long, value_parser = ["1", "2"])]
    table: Option<String>,
    /// About 10 minutes on 2 cores: Model D at W1A1 with AQE and STE and in float, a few epochs on a subset.
    #[arg(long, conflicts_with = "table")]
    quick: bool,
    /// Worker threads (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
}

/// The paper's Table I (CIFAR-10 test accuracy %, rows M/N, columns A-D).
const TABLE1: &[(&str, [f64; 4])] = &[
    ("1/1", [88.4, 85.1, 84.7, 84.4]),
    ("1/2", [88.9, 86.6, 85.9, 85.5]),
    ("1/3", [89.7, 87.3, 86.8, 86.7]),
    ("2/1", [89.1, 87.5, 86.8, 86.7]),
    ("2/2", [89.8, 87.9, 87.3, 87.1]),
    ("2/3", [90.3, 88.8, 88.8, 88.1]),
    ("3/1", [89.0, 88.9, 88.0, 88.0]),
    ("3/2", [89.5, 89.2, 88.7, 88.8]),
    ("3/3", [90.6, 89.8, 89.1, 89.3]),
    ("16/1", [90.8, 89.0, 88.6, 88.7]),
    ("16/3", [91.1, 90.1, 90.4, 90.3]),
    ("32/32", [91.8, 91.0, 91.2, 91.0]),
];

/// The paper's Table II (CIFAR-100 test accuracy %, W1A1): AQE, STE and float for A-D.
const TABLE2: &[(&str, &str, [f64; 4])] = &[
    ("1/1", "aqe", [59.6, 55.4, 54.6, 53.0]),
    ("1/1", "ste", [59.6, 55.2, 53.5, 51.5]),
    ("32/32", "identity", [64.6, 63.4, 63.0, 62.3]),
];

fn column(model: &str) -> Option<usize> {
    ["A", "B", "C", "D"]
        .iter()
        .position(|m| m.eq_ignore_ascii_case(model))
}

/// One training run to do.
#[derive(Debug, Clone)]
struct Job {
    label: String,
    cfg: TrainConfig,
    dir: PathBuf,
    paper: Option<f64>,
}

fn base_config(
    args: &Args,
    bits: &str,
    estimator: Estimator,
    dataset: &str,
) -> anyhow::Result<TrainConfig> {
    let mut cfg = TrainConfig::paper(&args.model, bits, estimator, dataset)?;
    if let Some(a) = args.alpha_schedule {
        cfg.alpha = a;
    }
    if let Some(e) = args.epochs {
        cfg.epochs = e;
    }
    if let Some(b) = args.batch_size {
        cfg.batch_size = b;
    }
    if let Some(lr) = args.lr {
        cfg.lr = lr;
    }
    if let Some(s) = &args.lr_schedule {
        cfg.lr_schedule = s.clone();
    }
    if let Some(o) = &args.optimizer {
        cfg.optimizer = o.clone();
    }
    if let Some(l) = &args.loss {
        cfg.loss = l.clone();
    }
    cfg.first_layer_float = args.first_layer_float;
    cfg.last_layer_float = args.last_layer_float;
    cfg.seed = args.seed;
    cfg.train_subset = args.train_subset;
    cfg.test_subset = args.test_subset;
    if let Some(v) = args.validation {
        cfg.validation = v;
    }
    cfg.resolve()?;
    Ok(cfg)
}

fn run_name(cfg: &TrainConfig) -> String {
    format!(
        "{}-{}-{}-{}",
        cfg.model,
        cfg.bits.replace('/', "-"),
        cfg.estimator.to_string().replace(':', "-"),
        cfg.dataset
    )
}

/// Loads the dataset of `kind`, fetching CIFAR when it is missing.
fn load_data(kind: DatasetKind, args: &Args) -> anyhow::Result<minw_models::data::TrainTest> {
    let data_dir = args
        .data_dir
        .clone()
        .unwrap_or_else(fetch_data::default_data_dir);
    let dir = match kind {
        DatasetKind::Cifar10 | DatasetKind::Cifar100 => {
            let (which, variant) = if kind == DatasetKind::Cifar10 {
                (fetch_data::Dataset::Cifar10, CifarVariant::Cifar10)
            } else {
                (fetch_data::Dataset::Cifar100, CifarVariant::Cifar100)
            };
            // Files already in place (the official set, or any set in the same binary format)
            // are used as they are; the loader checks them. Otherwise fetch the official set.
            if resolve_cifar_dir(&data_dir, variant).is_ok() {
                Some(data_dir.clone())
            } else {
                match fetch_data::ensure_dataset(which, &data_dir, &Source::Official) {
                    Ok(dir) => Some(dir),
                    Err(e) => {
                        if let Some(u) = e.downcast_ref::<Unreachable>() {
                            bail!(
                                "{} is not in {} and its host cannot be reached ({u}).\nFetch the archive by other means, then run:\n  {}\nand run this command again.",
                                kind.name(),
                                data_dir.display(),
                                u.command()
                            );
                        }
                        return Err(e);
                    }
                }
            }
        }
        DatasetKind::FashionMnist | DatasetKind::Mnist => args.data_dir.clone(),
    };
    Ok(kind.load(dir.as_deref())?)
}

fn run_info(cfg: &TrainConfig, threads: usize) -> serde_json::Value {
    let commit = std::process::Command::new("git")
        .args(["rev-parse", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    let dirty = std::process::Command::new("git")
        .args(["status", "--porcelain", "--untracked-files=no"])
        .output()
        .ok()
        .map(|o| !o.stdout.is_empty());
    let started = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    serde_json::json!({
        "git_commit": commit,
        "git_dirty": dirty,
        "seed": cfg.seed,
        "isa": xnor_kernels::selected_isa().map(|i| i.to_string()).unwrap_or_else(|e| format!("error: {e}")),
        "threads": threads,
        "versions": {
            "minw": env!("CARGO_PKG_VERSION"),
            "candle-core": "0.11.1",
        },
        "started_unix": started,
        "command": std::env::args().collect::<Vec<_>>(),
    })
}

/// The accuracy a row reports: test accuracy at the epoch of best validation accuracy (the last
/// epoch without a validation set).
fn reported(metrics: &[EpochMetrics]) -> Option<(f64, u32)> {
    let best = metrics
        .iter()
        .filter(|m| !m.val_acc.is_nan())
        .max_by(|a, b| a.val_acc.total_cmp(&b.val_acc).then(b.epoch.cmp(&a.epoch)))
        .or(metrics.last())?;
    Some((best.test_acc, best.epoch))
}

fn run_job(
    job: &Job,
    data: &RunData,
    stop: &AtomicBool,
    threads: usize,
) -> anyhow::Result<(Outcome, Vec<EpochMetrics>)> {
    let mut trainer = if job.dir.join("config.toml").exists() {
        let t = Trainer::resume(&job.dir)?;
        if t.config() != &job.cfg {
            bail!(
                "{} holds a run with a different configuration; use another --out or --resume {} to continue it as it is",
                job.dir.display(),
                job.dir.display()
            );
        }
        t
    } else {
        Trainer::create(job.cfg.clone(), &job.dir, run_info(&job.cfg, threads))?
    };
    println!(
        "== {}: {} (run dir {})",
        job.label,
        describe(&job.cfg, data),
        job.dir.display()
    );
    println!(
        "{}\n",
        trainer
            .model()
            .summary(job.cfg.resolve()?.spec.input, trainer.store())
    );
    let outcome = trainer.fit(data, stop)?;
    Ok((outcome, trainer.metrics().to_vec()))
}

fn describe(cfg: &TrainConfig, data: &RunData) -> String {
    format!(
        "model {} bits {} estimator {} alpha {} on {} ({} train / {} val / {} test images), {} epochs, batch {}, {} lr {} {}",
        cfg.model,
        cfg.bits,
        cfg.estimator,
        cfg.alpha,
        cfg.dataset,
        data.train.len(),
        data.val.len(),
        data.test.len(),
        cfg.epochs,
        cfg.batch_size,
        cfg.optimizer,
        cfg.lr,
        cfg.lr_schedule
    )
}

pub(crate) fn run(args: Args) -> anyhow::Result<()> {
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    // Candle sizes its element-wise thread pool from this variable on first use.
    // SAFETY: no other thread exists yet (the Ctrl-C handler and the rayon pool start below),
    // so nothing can read the environment concurrently.
    unsafe { std::env::set_var("CANDLE_NUM_THREADS", threads.to_string()) };
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build_global()
        .ok();
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        ctrlc::set_handler(move || {
            if stop.swap(true, Ordering::SeqCst) {
                eprintln!("\nsecond Ctrl-C: exiting without a checkpoint");
                std::process::exit(130);
            }
            eprintln!("\nCtrl-C: finishing the current step and writing a checkpoint (Ctrl-C again to abort)");
        })
        .context("installing the Ctrl-C handler")?;
    }

    if let Some(dir) = &args.resume {
        let cfg = Trainer::resume(dir)?.config().clone();
        let kind: DatasetKind = cfg.dataset.parse()?;
        let raw = load_data(kind, &args)?;
        let data = RunData::prepare(&cfg, &raw.train, &raw.test)?;
        let job = Job {
            label: "resume".into(),
            cfg,
            dir: dir.clone(),
            paper: None,
        };
        let (outcome, metrics) = run_job(&job, &data, &stop, threads)?;
        return finish(
            &[(job, outcome, metrics)],
            args.out.as_deref().unwrap_or(dir),
            None,
        );
    }

    let (jobs, dataset, title) = plan(&args)?;
    let kind: DatasetKind = dataset.parse()?;
    let raw = load_data(kind, &args)?;
    let mut results = Vec::new();
    for job in jobs {
        let data = RunData::prepare(&job.cfg, &raw.train, &raw.test)?;
        let (outcome, metrics) = run_job(&job, &data, &stop, threads)?;
        let interrupted = outcome == Outcome::Interrupted;
        results.push((job, outcome, metrics));
        if interrupted {
            break;
        }
    }
    // The table goes beside the runs: into the common parent of a preset's or a table's run
    // directories, into the run directory of a single run.
    let out = match results.as_slice() {
        [(job, ..)] if title.is_none() => job.dir.clone(),
        _ => results
            .first()
            .and_then(|r| r.0.dir.parent().map(Path::to_path_buf))
            .unwrap_or_else(|| PathBuf::from("runs")),
    };
    finish(&results, &out, title.as_deref())
}

/// The jobs to run, the dataset and an optional table title.
fn plan(args: &Args) -> anyhow::Result<(Vec<Job>, String, Option<String>)> {
    let out = |default: String| {
        args.out
            .clone()
            .unwrap_or_else(|| PathBuf::from("runs").join(default))
    };
    if args.quick {
        let dataset = quick_dataset(args);
        let mut jobs = Vec::new();
        for (label, bits, est) in [
            ("float", "32/32", "identity"),
            ("W1A1 STE", "1/1", "ste"),
            ("W1A1 AQE", "1/1", "aqe"),
        ] {
            let mut quick = args.clone();
            quick.model = "D".into();
            let mut cfg = base_config(&quick, bits, est.parse()?, &dataset)?;
            cfg.epochs = args.epochs.unwrap_or(4);
            cfg.batch_size = args.batch_size.unwrap_or(100);
            cfg.train_subset = Some(args.train_subset.unwrap_or(6000));
            cfg.test_subset = Some(args.test_subset.unwrap_or(2000));
            cfg.validation = args.validation.unwrap_or(0);
            let dir = out(format!("quick-{dataset}")).join(run_name(&cfg));
            jobs.push(Job {
                label: label.into(),
                cfg,
                dir,
                paper: None,
            });
        }
        println!(
            "quick preset: ConvNet Model D on {dataset}, float vs W1A1 STE vs W1A1 AQE, {} epochs on {} training and {} test images each",
            jobs[0].cfg.epochs,
            jobs[0].cfg.train_subset.unwrap_or(0),
            jobs[0].cfg.test_subset.unwrap_or(0)
        );
        let title = format!("Quick run: Model D on {dataset}");
        return Ok((jobs, dataset, Some(title)));
    }
    match args.table.as_deref() {
        None => {
            let cfg = base_config(args, &args.bits, args.estimator, &args.dataset)?;
            let dir = args
                .out
                .clone()
                .unwrap_or_else(|| PathBuf::from("runs").join(run_name(&cfg)));
            Ok((
                vec![Job {
                    label: run_name(&cfg),
                    cfg,
                    dir,
                    paper: None,
                }],
                args.dataset.clone(),
                None,
            ))
        }
        Some(t) => {
            let col = column(&args.model).context(
                "--table needs --model A, B, C or D (the paper's tables cover the ConvNets)",
            )?;
            let (dataset, rows): (&str, Vec<(String, String, f64)>) = if t == "1" {
                (
                    "cifar10",
                    TABLE1
                        .iter()
                        .map(|(bits, v)| (bits.to_string(), args.estimator.to_string(), v[col]))
                        .collect(),
                )
            } else {
                (
                    "cifar100",
                    TABLE2
                        .iter()
                        .map(|(bits, est, v)| (bits.to_string(), est.to_string(), v[col]))
                        .collect(),
                )
            };
            let root = out(format!("table{t}-{}", args.model.to_ascii_uppercase()));
            let mut jobs = Vec::new();
            for (bits, est, paper) in rows {
                let cfg = base_config(args, &bits, est.parse()?, dataset)?;
                let dir = root.join(run_name(&cfg));
                jobs.push(Job {
                    label: format!("{bits} {est}"),
                    cfg,
                    dir,
                    paper: Some(paper),
                });
            }
            let title = format!(
                "Table {t}, Model {} on {dataset}",
                args.model.to_ascii_uppercase()
            );
            Ok((jobs, dataset.to_string(), Some(title)))
        }
    }
}

/// CIFAR-10 when it is present or can be fetched, otherwise Fashion-MNIST from the Debian
/// package (this machine's offline dataset).
fn quick_dataset(args: &Args) -> String {
    if args.dataset != "cifar10" {
        return args.dataset.clone();
    }
    let data_dir = args
        .data_dir
        .clone()
        .unwrap_or_else(fetch_data::default_data_dir);
    match fetch_data::ensure_dataset(fetch_data::Dataset::Cifar10, &data_dir, &Source::Official) {
        Ok(_) => "cifar10".into(),
        Err(e) if Path::new(FASHION_MNIST_DEFAULT_DIR).exists() => {
            println!(
                "CIFAR-10 is not available ({e:#}); the quick preset runs on Fashion-MNIST from {FASHION_MNIST_DEFAULT_DIR} instead"
            );
            "fashion-mnist".into()
        }
        Err(_) => "cifar10".into(),
    }
}

/// Prints the results as a Markdown table and writes it to `out/results.md`.
fn finish(
    results: &[(Job, Outcome, Vec<EpochMetrics>)],
    out: &Path,
    title: Option<&str>,
) -> anyhow::Result<()> {
    let mut md = String::new();
    if let Some(t) = title {
        md.push_str(&format!("## {t}\n\n"));
    }
    md.push_str("| run | bits | estimator | epochs done | test acc % (ours) | at epoch | paper % | train s/epoch | run dir |\n");
    md.push_str("| --- | --- | --- | --- | --- | --- | --- | --- | --- |\n");
    for (job, outcome, metrics) in results {
        let (acc, epoch) = reported(metrics).map_or(("-".into(), "-".into()), |(a, e)| {
            (format!("{:.2}", 100.0 * a), (e + 1).to_string())
        });
        let secs = if metrics.is_empty() {
            "-".into()
        } else {
            format!(
                "{:.0}",
                metrics.iter().map(|m| m.seconds).sum::<f64>() / metrics.len() as f64
            )
        };
        let done = format!(
            "{}/{}{}",
            metrics.len(),
            job.cfg.epochs,
            if *outcome == Outcome::Interrupted {
                " (interrupted)"
            } else {
                ""
            }
        );
        md.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            job.label,
            job.cfg.bits,
            job.cfg.estimator,
            done,
            acc,
            epoch,
            job.paper.map_or("-".into(), |p| format!("{p:.1}")),
            secs,
            job.dir.display()
        ));
    }
    md.push_str("\nTest accuracy with the hard quantizer (alpha = 1), at the epoch of best validation accuracy (the last epoch without a validation set).\n");
    println!("\n{md}");
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let path = out.join("results.md");
    std::fs::write(&path, &md).with_context(|| format!("writing {}", path.display()))?;
    println!("written to {}", path.display());
    if results.iter().any(|(_, o, _)| *o == Outcome::Interrupted) {
        let dir = &results.last().map(|r| r.0.dir.clone()).unwrap_or_default();
        println!(
            "interrupted: continue with `cargo xtask reproduce-cifar --resume {}`",
            dir.display()
        );
    }
    Ok(())
}
