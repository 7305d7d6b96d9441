//! `cargo xtask bench-packed`: packed engine vs the training graph (evaluation mode) on a
//! random-init W1A1 ConvNet or CIFAR ResNet, at batch 1 and 64, without a trained run or a
//! dataset.
//!
//! The model is built at `--bits` (1/1 by default) with random BatchNorm statistics (gammas of both signs, means and
//! variances scaled to each layer's fan-in, so the folded thresholds sit inside the
//! accumulator range as in a trained net), exported in memory and loaded. Inputs are random
//! `u8` pixels normalised with the dataset's mean/std. Each timing is the median over
//! `--repeats` measurements of at least `--min-ms` each; both paths run in the same process.
//!
//! Threads: as `eval-packed`, the command re-runs itself with `RAYON_NUM_THREADS` and
//! `CANDLE_NUM_THREADS` set to `--threads` unless `RAYON_NUM_THREADS` already says so.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use aqe_candle::{Alphas, ParamStore};
use candle_core::{Device, ModuleT, Tensor};
use minw_models::data::DatasetKind;
use minw_models::export::{ExportInfo, export_model, randomize_batch_norm, randomize_weights};
use minw_models::packed::PackedModel;
use minw_models::{ModelSpec, QuantPlan};

/// Arguments of `cargo xtask bench-packed`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Example:\n  \
    cargo xtask bench-packed --model A --input cifar --threads 1 --json bench-A.json\n  \
    cargo xtask bench-packed --model resnet20 --threads 1\n  \
    cargo xtask bench-packed --model A --bits 2/2")]
pub(crate) struct Args {
    /// ConvNet A, B, C or D, or a CIFAR ResNet (`resnet20`, `resnet32`, ..., `-b` for
    /// projection shortcuts), built at W1A1 with random weights and BatchNorm statistics.
    #[arg(long, default_value = "A")]
    model: String,
    /// MINW setting `weights/activations`: 1/1 runs the binary (XNOR-popcount) engine; 2/2,
    /// 3/3 and other 1-3 bit settings of ConvNets run on the exact int8 kernels.
    #[arg(long, default_value = "1/1")]
    bits: String,
    /// Input shape and normalisation: cifar (32x32x3, CIFAR-10) or mnist (28x28x1,
    /// Fashion-MNIST).
    #[arg(long, default_value = "cifar")]
    input: String,
    /// Worker threads (rayon, and Candle's matmul).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Timed measurements per path and batch size; the median is reported.
    #[arg(long, default_value_t = 7)]
    repeats: usize,
    /// Minimum milliseconds per measurement (calls are repeated until it is reached).
    #[arg(long, default_value_t = 200.0)]
    min_ms: f64,
    /// Seed of the weights, BatchNorm statistics and inputs.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Write one JSON object per batch size (model, bits, input, batch, threads, isa,
    /// packed_ms_per_img, float_ms_per_img, speedup, repeats) as a JSON array.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// Entry point.
pub(crate) fn run(args: Args) -> Result<()> {
    let threads = args.threads.max(1);
    if crate::rerun_with_threads(threads, "bench-packed")? {
        return Ok(());
    }
    bench(&args, threads)
}

/// xorshift64*: deterministic random input pixels.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// Median over `repeats` of ms per image, each measurement calling `f` (which processes
/// `imgs` images) until `min_ms` have passed.
fn median_ms_per_img(
    imgs: usize,
    repeats: usize,
    min_ms: f64,
    mut f: impl FnMut() -> Result<()>,
) -> Result<f64> {
    f()?; // warm-up (plans buffers, faults pages in)
    let mut samples = Vec::with_capacity(repeats);
    for _ in 0..repeats.max(1) {
        let start = Instant::now();
        let mut calls = 0usize;
        while calls == 0 || start.elapsed().as_secs_f64() * 1e3 < min_ms {
            f()?;
            calls += 1;
        }
        samples.push(start.elapsed().as_secs_f64() * 1e3 / (calls * imgs) as f64);
    }
    samples.sort_by(f64::total_cmp);
    Ok(samples[samples.len() / 2])
}

fn bench(args: &Args, threads: usize) -> Result<()> {
    let isa = xnor_kernels::selected_isa()?;
    let kind = match args.input.to_ascii_lowercase().as_str() {
        "cifar" | "cifar10" => DatasetKind::Cifar10,
        "mnist" | "fashion-mnist" => DatasetKind::FashionMnist,
        other => bail!("unknown --input `{other}`; valid inputs are: cifar, mnist"),
    };
    let arch: minw_models::Arch = args.model.parse()?;
    if !matches!(
        arch,
        minw_models::Arch::ConvNet(_) | minw_models::Arch::ResNet { .. }
    ) {
        bail!("--model {arch}: only ConvNets A-D and CIFAR ResNets have a packed engine");
    }
    let shape = kind.shape();
    let spec = ModelSpec {
        arch,
        plan: QuantPlan::new(args.bits.parse()?, "aqe".parse()?),
        input: shape,
        classes: kind.classes(),
    };
    let store = ParamStore::new(args.seed, &Device::Cpu);
    let model = spec.build(&Alphas::default(), &store)?;
    if spec.plan.setting != minw_models::MinwSetting::W1A1 {
        // Spread latent weights over [-1, 1] so every level of the 2-3 bit quantizers occurs.
        randomize_weights(&store, args.seed.wrapping_add(5))?;
    }
    randomize_batch_norm(&store, args.seed.wrapping_add(7))?;
    let info = ExportInfo::for_dataset(kind);
    let bytes = export_model(&spec, &model, &info)?;
    let packed = PackedModel::load_bytes(&bytes, "in-memory export")?;
    let il = packed.image_len();

    let mut rng = Rng(args.seed.wrapping_mul(31) | 1);
    let pixels: Vec<u8> = (0..64 * il).map(|_| (rng.next() >> 56) as u8).collect();
    let mut images = vec![0f32; pixels.len()];
    kind.normalize().apply(&pixels, &mut images);

    let arch_name = packed.meta().architecture.clone();
    println!(
        "bench-packed: {arch_name} {} (random init), {}x{}x{} input, ISA {isa}, {threads} \
         thread(s), packed file {} bytes, median of {} x >= {} ms",
        spec.plan.setting,
        shape.height,
        shape.width,
        shape.channels,
        bytes.len(),
        args.repeats,
        args.min_ms
    );
    let mut rows = Vec::new();
    for batch in [1usize, 64] {
        let x = &images[..batch * il];
        let xt = Tensor::from_slice(
            x,
            (batch, shape.height, shape.width, shape.channels),
            &Device::Cpu,
        )?;
        // The two paths must agree before their speed means anything.
        let pp = packed.predict(x, batch)?;
        let fl = model
            .forward_t(&xt, false)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let fp = minw_models::packed::argmax_rows(&fl, packed.classes());
        let agree = pp.iter().zip(&fp).filter(|(a, b)| a == b).count();
        let packed_ms = median_ms_per_img(batch, args.repeats, args.min_ms, || {
            packed.predict(x, batch)?;
            Ok(())
        })?;
        let float_ms = median_ms_per_img(batch, args.repeats, args.min_ms, || {
            model.forward_t(&xt, false)?;
            Ok(())
        })?;
        let speedup = float_ms / packed_ms;
        println!(
            "batch {batch:>2}: packed {packed_ms:.3} ms/img ({:.0} img/s), float {float_ms:.3} \
             ms/img ({:.0} img/s), speedup {speedup:.1}x, top-1 agreement {agree}/{batch}",
            1e3 / packed_ms,
            1e3 / float_ms
        );
        rows.push(serde_json::json!({
            "model": arch_name,
            "bits": spec.plan.setting.to_string(),
            "input": [shape.height, shape.width, shape.channels],
            "batch": batch,
            "threads": threads,
            "isa": isa.to_string(),
            "packed_ms_per_img": packed_ms,
            "float_ms_per_img": float_ms,
            "speedup": speedup,
            "repeats": args.repeats,
            "agreement": agree as f64 / batch as f64,
        }));
    }
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&rows)? + "\n")
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}
