//! `cargo xtask bench-train`: time one training step (forward, loss, backward, optimizer step)
//! of ResNet-20 and ConvNet Model D, float and AQE W1A1, at 1 and 2 threads.
//!
//! Each configuration runs in a child process with `RAYON_NUM_THREADS` and `CANDLE_NUM_THREADS`
//! set to its thread count (Candle sizes its element-wise thread pool once per process, from
//! those variables), so a 1-thread row really uses one core; peak memory is that child's resident
//! high-water mark (`VmHWM`), reset through `/proc/self/clear_refs` after start-up.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, bail};
use aqe_candle::optim::{AdamConfig, Algorithm, Optimizer, SgdConfig};
use aqe_candle::{AlphaHandle, Alphas, Loss, ParamStore, SeededRng};
use candle_core::{Device, ModuleT, Tensor};
use minw_models::{Arch, InputShape, MinwSetting, ModelSpec, QuantPlan};

/// Arguments of `cargo xtask bench-train`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  \
    cargo xtask bench-train\n  \
    cargo xtask bench-train --models resnet20 --threads 1 --repeats 9 --json train.json")]
pub(crate) struct Args {
    /// Models, comma separated, each with its batch: `resnet20:128`, `D:256`, `A:256`, ...
    #[arg(long, value_delimiter = ',', default_value = "resnet20:128,D:256")]
    models: Vec<String>,
    /// MINW settings (activation/weight bits), comma separated; `32/32` is the float network.
    #[arg(long, value_delimiter = ',', default_value = "32/32,1/1")]
    bits: Vec<String>,
    /// Estimator for the quantized settings.
    #[arg(long, default_value = "aqe")]
    estimator: String,
    /// Thread counts, comma separated.
    #[arg(long, value_delimiter = ',', default_value = "1,2")]
    threads: Vec<usize>,
    /// Timed steps per configuration (the median is reported).
    #[arg(long, default_value_t = 5)]
    repeats: usize,
    /// Untimed steps first.
    #[arg(long, default_value_t = 1)]
    warmup: usize,
    /// Write one JSON object per row (keys: model, bits, batch, threads, step_ms, peak_mib).
    #[arg(long)]
    json: Option<PathBuf>,
    /// Internal: run exactly one configuration in this process and print it as JSON.
    #[arg(long, hide = true)]
    child: bool,
}

struct Row {
    model: String,
    bits: String,
    batch: usize,
    threads: usize,
    times_ms: Vec<f64>,
    peak_mib: Option<f64>,
}

impl Row {
    fn median(&self) -> f64 {
        let mut t = self.times_ms.clone();
        t.sort_by(f64::total_cmp);
        t[t.len() / 2]
    }
}

fn reset_peak() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

fn peak_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

fn parse_model(s: &str) -> anyhow::Result<(Arch, usize)> {
    let (name, batch) = s
        .split_once(':')
        .with_context(|| format!("`{s}`: expected MODEL:BATCH, e.g. resnet20:128"))?;
    let arch: Arch = name.parse()?;
    let batch: usize = batch
        .parse()
        .with_context(|| format!("`{s}`: bad batch size"))?;
    if batch == 0 {
        bail!("`{s}`: batch must be at least 1");
    }
    Ok((arch, batch))
}

fn run_one(
    arch: Arch,
    batch: usize,
    setting: MinwSetting,
    args: &Args,
) -> anyhow::Result<(Vec<f64>, Option<f64>)> {
    let spec = ModelSpec {
        arch,
        plan: QuantPlan::new(setting, args.estimator.parse()?),
        input: InputShape::CIFAR,
        classes: 10,
    };
    let store = ParamStore::new(0, &Device::Cpu);
    let alpha = AlphaHandle::new(0.75)?;
    let model = spec.build(&Alphas::shared(alpha), &store)?;
    // The paper's recipes: Adam for the ConvNets, SGD with momentum for the ResNets.
    let algorithm = match arch {
        Arch::ConvNet(_) | Arch::AlexNetBn => Algorithm::Adam(AdamConfig::default()),
        Arch::ResNet { .. } | Arch::ResNetImageNet { .. } => Algorithm::Sgd(SgdConfig::default()),
    };
    let mut opt = Optimizer::new(&store, algorithm)?;
    let mut rng = SeededRng::new(1);
    let n = batch * 32 * 32 * 3;
    let x = Tensor::from_vec(
        (0..n).map(|_| rng.normal()).collect::<Vec<f32>>(),
        (batch, 32, 32, 3),
        &Device::Cpu,
    )?;
    let y = Tensor::from_vec(
        (0..batch)
            .map(|_| rng.below(10) as u32)
            .collect::<Vec<u32>>(),
        batch,
        &Device::Cpu,
    )?;
    let measuring = reset_peak();
    let mut times = Vec::with_capacity(args.repeats);
    for i in 0..args.warmup + args.repeats {
        let t = Instant::now();
        let loss = Loss::CrossEntropy.compute(&model.forward_t(&x, true)?, &y)?;
        opt.backward_step(&loss)?;
        let ms = t.elapsed().as_secs_f64() * 1e3;
        if i >= args.warmup {
            times.push(ms);
        }
    }
    Ok((times, if measuring { peak_mib() } else { None }))
}

/// Runs one configuration in a child process with the thread count fixed by environment.
fn spawn_child(model: &str, bits: &str, threads: usize, args: &Args) -> anyhow::Result<Row> {
    let exe = std::env::current_exe().context("locating the xtask binary")?;
    let out = std::process::Command::new(exe)
        .args([
            "bench-train",
            "--child",
            "--models",
            model,
            "--bits",
            bits,
            "--estimator",
            &args.estimator,
        ])
        .args([
            "--threads",
            &threads.to_string(),
            "--repeats",
            &args.repeats.to_string(),
        ])
        .args(["--warmup", &args.warmup.to_string()])
        .env("RAYON_NUM_THREADS", threads.to_string())
        .env("CANDLE_NUM_THREADS", threads.to_string())
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("running a bench-train child")?;
    if !out.status.success() {
        bail!(
            "bench-train child for {model} {bits} at {threads} thread(s) failed ({})",
            out.status
        );
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("ROW "))
        .context("child printed no result")?;
    let v: serde_json::Value = serde_json::from_str(line)?;
    let times_ms = v["times_ms"]
        .as_array()
        .context("times_ms")?
        .iter()
        .filter_map(|t| t.as_f64())
        .collect();
    Ok(Row {
        model: v["model"].as_str().unwrap_or_default().to_string(),
        bits: v["bits"].as_str().unwrap_or_default().to_string(),
        batch: v["batch"].as_u64().unwrap_or_default() as usize,
        threads,
        times_ms,
        peak_mib: v["peak_mib"].as_f64(),
    })
}

pub(crate) fn run(args: Args) -> anyhow::Result<()> {
    if args.repeats == 0 {
        bail!("--repeats must be at least 1");
    }
    let models = args
        .models
        .iter()
        .map(|m| Ok((m.clone(), parse_model(m)?)))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let settings = args
        .bits
        .iter()
        .map(|b| b.parse::<MinwSetting>())
        .collect::<Result<Vec<_>, _>>()?;
    if args.child {
        let [(_, (arch, batch))] = models.as_slice() else {
            bail!("--child runs exactly one model")
        };
        let [setting] = settings.as_slice() else {
            bail!("--child runs exactly one setting")
        };
        let (times_ms, peak) = run_one(*arch, *batch, *setting, &args)?;
        let row = serde_json::json!({
            "model": arch.to_string(), "bits": setting.to_string(), "batch": batch, "times_ms": times_ms, "peak_mib": peak,
        });
        println!("ROW {row}");
        return Ok(());
    }
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "bench-train: one step = forward + loss + backward + optimizer step, median of {} (after {} warm-up), one process per row",
        args.repeats, args.warmup
    );
    println!(
        "load average before: {}",
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    let mut rows = Vec::new();
    for (name, (_, batch)) in &models {
        for &threads in &args.threads {
            for setting in &settings {
                let row = spawn_child(name, &setting.to_string(), threads, &args)?;
                println!(
                    "  {:<10} {:>5} batch {:>3} threads {}  {:>9.1} ms   peak {}",
                    row.model,
                    row.bits,
                    batch,
                    row.threads,
                    row.median(),
                    row.peak_mib.map_or("n/a".into(), |p| format!("{p:.0} MiB"))
                );
                rows.push(row);
            }
        }
    }
    println!();
    println!(
        "| model | bits | batch | threads | step ms (median) | min-max | peak MiB | vs float |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- |");
    for r in &rows {
        let float = rows
            .iter()
            .find(|f| f.model == r.model && f.threads == r.threads && f.bits == "32/32");
        let ratio = float.map_or("".into(), |f| format!("{:.2}x", r.median() / f.median()));
        let (lo, hi) = r
            .times_ms
            .iter()
            .fold((f64::MAX, 0f64), |(a, b), &t| (a.min(t), b.max(t)));
        println!(
            "| {} | {} | {} | {} | {:.1} | {:.0}-{:.0} | {} | {} |",
            r.model,
            r.bits,
            r.batch,
            r.threads,
            r.median(),
            lo,
            hi,
            r.peak_mib.map_or("n/a".into(), |p| format!("{p:.0}")),
            ratio
        );
    }
    if let Some(path) = &args.json {
        let mut out = String::new();
        for r in &rows {
            let obj = serde_json::json!({
                "model": r.model, "bits": r.bits, "batch": r.batch, "threads": r.threads,
                "step_ms": r.median(), "peak_mib": r.peak_mib,
            });
            out.push_str(&obj.to_string());
            out.push('\n');
        }
        std::fs::write(path, out).with_context(|| format!("writing {}", path.display()))?;
        println!("wrote {}", path.display());
    }
    Ok(())
}
