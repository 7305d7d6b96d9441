//! `cargo xtask eval-packed`: accuracy of a packed model on a test set, agreement with the
//! training graph (evaluation mode) when the run is given, and images/second at batch 1 and 64
//! for the packed engine and the float path, measured in the same process.
//!
//! Threads: the command runs with `--threads` rayon threads (default 1); when
//! `RAYON_NUM_THREADS` does not already say so it re-runs itself with `RAYON_NUM_THREADS` and
//! `CANDLE_NUM_THREADS` set, so Candle's matmul and the kernels use the same count.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use candle_core::{Device, ModuleT, Tensor};
use minw_models::data::{DatasetKind, Normalize};
use minw_models::packed::{PackedModel, argmax_rows};

/// Arguments of `cargo xtask eval-packed`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Example:\n  \
    cargo xtask eval-packed model.minw --dataset fashion-mnist \\\n    \
    --run runs/quick/D-1-1-aqe-fashion-mnist --json eval.json")]
pub(crate) struct Args {
    /// The packed model file.
    model: PathBuf,
    /// The test set: fashion-mnist, mnist, cifar10, cifar100.
    #[arg(long)]
    dataset: String,
    /// Directory of the dataset (default: the dataset's default directory, if it has one).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// The training run the model was exported from: adds agreement and the float timings.
    #[arg(long)]
    run: Option<PathBuf>,
    /// Write one JSON object per batch size (model, bits, batch, threads, isa,
    /// packed_ms_per_img, float_ms_per_img, speedup, accuracy, agreement) as a JSON array.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Worker threads (rayon, and Candle's matmul).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Evaluate only the first N test images.
    #[arg(long)]
    limit: Option<usize>,
    /// Minimum seconds per timing measurement.
    #[arg(long, default_value_t = 1.0)]
    seconds: f64,
}

/// Entry point.
pub(crate) fn run(args: Args) -> Result<()> {
    let threads = args.threads.max(1);
    if crate::rerun_with_threads(threads, "eval-packed")? {
        return Ok(());
    }
    eval(&args, threads)
}

/// Median-free throughput: repeats `f` (which processes `imgs` images) for at least `secs`.
fn ms_per_img(imgs: usize, secs: f64, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    f()?; // warm-up (plans buffers)
    let start = Instant::now();
    let mut done = 0usize;
    while start.elapsed().as_secs_f64() < secs || done == 0 {
        f()?;
        done += imgs;
    }
    Ok(start.elapsed().as_secs_f64() * 1e3 / done as f64)
}

fn eval(args: &Args, threads: usize) -> Result<()> {
    let isa = xnor_kernels::selected_isa()?;
    let packed = PackedModel::load_path(&args.model)
        .with_context(|| format!("loading {}", args.model.display()))?;
    let meta = packed.meta().clone();
    let kind: DatasetKind = args.dataset.parse()?;
    let shape = kind.shape();
    if [shape.height, shape.width, shape.channels] != meta.input_shape {
        bail!(
            "{} images are {}x{}x{}, the model expects {:?}",
            kind.name(),
            shape.height,
            shape.width,
            shape.channels,
            meta.input_shape
        );
    }
    let data = kind.load(args.data_dir.as_deref())?.test;
    let n = args.limit.unwrap_or(data.len()).min(data.len());
    if n == 0 {
        bail!("no test images");
    }
    let il = packed.image_len();
    let norm = Normalize::new(meta.normalize_mean.clone(), meta.normalize_std.clone());
    let mut images = vec![0f32; n * il];
    norm.apply(&data.images()[..n * il], &mut images);
    let labels = &data.labels()[..n];
    let accuracy =
        |pred: &[u32]| pred.iter().zip(labels).filter(|(p, l)| p == l).count() as f64 / n as f64;

    println!(
        "eval-packed: {} {} on {} ({n} test images), ISA {isa}, {threads} thread(s)",
        meta.architecture,
        meta.bits,
        kind.name()
    );
    let packed_pred = packed.predict(&images, 64)?;
    let packed_acc = accuracy(&packed_pred);
    println!("packed accuracy {:.2}%", 100.0 * packed_acc);

    let run = match &args.run {
        Some(dir) => Some(minw_models::export::load_run(dir)?),
        None => None,
    };
    let float_logits = |batch: &[f32]| -> Result<Vec<f32>> {
        let model = &run.as_ref().context("no run")?.model;
        let b = batch.len() / il;
        let x = Tensor::from_slice(
            batch,
            (b, shape.height, shape.width, shape.channels),
            &Device::Cpu,
        )?;
        Ok(model
            .forward_t(&x, false)?
            .flatten_all()?
            .to_vec1::<f32>()?)
    };
    let mut agreement = None;
    if run.is_some() {
        let mut float_pred = Vec::with_capacity(n);
        let mut same_logits = 0usize;
        let classes = packed.classes();
        let packed_logits = packed.logits(&images, 64)?;
        for (i, chunk) in images.chunks(64 * il).enumerate() {
            let fl = float_logits(chunk)?;
            let pl = &packed_logits[i * 64 * classes..i * 64 * classes + fl.len()];
            same_logits += fl
                .chunks_exact(classes)
                .zip(pl.chunks_exact(classes))
                .filter(|(a, b)| a.iter().zip(*b).all(|(x, y)| x.to_bits() == y.to_bits()))
                .count();
            float_pred.extend(argmax_rows(&fl, classes));
        }
        let agree = float_pred
            .iter()
            .zip(&packed_pred)
            .filter(|(a, b)| a == b)
            .count();
        println!(
            "float (training graph, eval mode) accuracy {:.2}%; top-1 agreement {agree}/{n} ({:.3}%); \
             bit-identical logits {same_logits}/{n}",
            100.0 * accuracy(&float_pred),
            100.0 * agree as f64 / n as f64
        );
        agreement = Some(agree as f64 / n as f64);
    }

    let mut rows = Vec::new();
    for batch in [1usize, 64] {
        let b = batch.min(n);
        let x = &images[..b * il];
        let packed_ms = ms_per_img(b, args.seconds, || {
            packed.predict(x, b)?;
            Ok(())
        })?;
        let float_ms = if run.is_some() {
            Some(ms_per_img(b, args.seconds, || {
                float_logits(x)?;
                Ok(())
            })?)
        } else {
            None
        };
        let speedup = float_ms.map(|f| f / packed_ms);
        println!(
            "batch {b:>3}: packed {packed_ms:.3} ms/img ({:.0} img/s){}",
            1e3 / packed_ms,
            match (float_ms, speedup) {
                (Some(f), Some(s)) => format!(
                    ", float {f:.3} ms/img ({:.0} img/s), speedup {s:.1}x",
                    1e3 / f
                ),
                _ => ", float path not measured (pass --run)".to_string(),
            }
        );
        rows.push(serde_json::json!({
            "model": meta.architecture,
            "bits": meta.bits,
            "batch": b,
            "threads": threads,
            "isa": isa.to_string(),
            "packed_ms_per_img": packed_ms,
            "float_ms_per_img": float_ms,
            "speedup": speedup,
            "accuracy": packed_acc,
            "agreement": agreement,
        }));
    }
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&rows)? + "\n")
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}
