//! `cargo xtask bench-kernels`: our 1-bit and int8 conv kernels against an AVX-512 float GEMM
//! baseline, per layer of ConvNet A-D / VGG-small, ResNet-20 and ResNet-18, in one run.

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use xnor_kernels::{
    BinaryConv2d, Conv2dConfig, Direction, Int8Conv2d, Isa, LevelThresholds, Output, PadMode,
    Thresholds, binary_gemm_with, int8_gemm_with, reference,
};

/// Options of `bench-kernels`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// A representative subset that runs in under a minute.
    #[arg(long)]
    quick: bool,
    /// Worker threads for every kernel (ours through rayon, the float GEMM through its own).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Write one JSON object per row to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Timed samples per measurement (the median is reported).
    #[arg(long, default_value_t = 7)]
    repeats: usize,
    /// Only layers whose name contains this string.
    #[arg(long)]
    filter: Option<String>,
    /// The activation levels the int8 `layer` rows write: `pow2` (3-bit, six steps per
    /// channel, the most expensive) or `ternary` (2-bit, two steps).
    #[arg(long, value_enum, default_value_t = Levels::Pow2)]
    levels: Levels,
}

/// Level sets of the int8 layers' fused output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Levels {
    /// 3-bit powers of two (x 4: 0, +-1, +-2, +-4).
    Pow2,
    /// 2-bit ternary (-1, 0, 1).
    Ternary,
}

/// One conv layer: NHWC input `batch x h x w x cin`, `cout` filters of `k x k`.
#[derive(Debug, Clone, Copy)]
struct Layer {
    name: &'static str,
    batch: usize,
    h: usize,
    cin: usize,
    cout: usize,
    k: usize,
    stride: usize,
}

impl Layer {
    fn pad(&self) -> usize {
        self.k / 2
    }
    fn out_hw(&self) -> usize {
        (self.h + 2 * self.pad() - self.k) / self.stride + 1
    }
    fn m(&self) -> usize {
        self.batch * self.out_hw() * self.out_hw()
    }
    fn kdim(&self) -> usize {
        self.k * self.k * self.cin
    }
}

const fn l(
    name: &'static str,
    h: usize,
    cin: usize,
    cout: usize,
    k: usize,
    stride: usize,
) -> Layer {
    Layer {
        name,
        batch: 1,
        h,
        cin,
        cout,
        k,
        stride,
    }
}

/// Binary conv layers (the first, full-precision layer of each net is left out).
const LAYERS: &[Layer] = &[
    l("A/vgg-small conv2", 32, 128, 128, 3, 1),
    l("A/vgg-small conv3", 16, 128, 256, 3, 1),
    l("A/vgg-small conv4", 16, 256, 256, 3, 1),
    l("A/vgg-small conv5", 8, 256, 512, 3, 1),
    l("A/vgg-small conv6", 8, 512, 512, 3, 1),
    l("B-D conv2", 32, 64, 64, 3, 1),
    l("B-D conv3", 16, 64, 128, 3, 1),
    l("B-D conv4", 16, 128, 128, 3, 1),
    l("B-D conv5", 8, 128, 256, 3, 1),
    l("B-D conv6", 8, 256, 256, 3, 1),
    l("resnet20 s1 16-16", 32, 16, 16, 3, 1),
    l("resnet20 s2 16-32/2", 32, 16, 32, 3, 2),
    l("resnet20 s2 32-32", 16, 32, 32, 3, 1),
    l("resnet20 s3 32-64/2", 16, 32, 64, 3, 2),
    l("resnet20 s3 64-64", 8, 64, 64, 3, 1),
    l("resnet18 l1 64-64", 56, 64, 64, 3, 1),
    l("resnet18 l2 64-128/2", 56, 64, 128, 3, 2),
    l("resnet18 l2 1x1 64-128/2", 56, 64, 128, 1, 2),
    l("resnet18 l2 128-128", 28, 128, 128, 3, 1),
    l("resnet18 l3 128-256/2", 28, 128, 256, 3, 2),
    l("resnet18 l3 256-256", 14, 256, 256, 3, 1),
    l("resnet18 l4 256-512/2", 14, 256, 512, 3, 2),
    l("resnet18 l4 512-512", 7, 512, 512, 3, 1),
];

const QUICK: &[(&str, usize)] = &[
    ("A/vgg-small conv2", 1),
    ("A/vgg-small conv4", 1),
    ("A/vgg-small conv6", 1),
    ("resnet20 s1 16-16", 1),
    ("resnet20 s3 64-64", 1),
    ("resnet18 l1 64-64", 1),
    ("resnet18 l4 512-512", 1),
    ("A/vgg-small conv4", 64),
    ("resnet20 s2 32-32", 64),
];

/// Deterministic xorshift generator.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn words(&mut self, n: usize, bits: usize) -> Vec<u64> {
        // Random signs in the low `bits` bits of each word (zero pad bits).
        let mask = if bits >= 64 {
            u64::MAX
        } else {
            (1u64 << bits) - 1
        };
        (0..n).map(|_| self.next() & mask).collect()
    }
    fn levels(&mut self, n: usize) -> Vec<i8> {
        (0..n).map(|_| (self.next() % 9) as i8 - 4).collect()
    }
}

/// Level steps of a BatchNorm (per-channel scale and shift) followed by the 3-bit pow2
/// quantizer (levels x 4: 0, +-1, +-2, +-4) or the ternary one for `n` channels of `K = k`
/// int8 products.
fn level_steps(levels: Levels, n: usize, k: usize) -> LevelThresholds {
    let spread = 4.0 * (k as f32).sqrt();
    let bound = 16 * k as i32;
    LevelThresholds::from_monotone(n, (-bound, bound), |c, acc| {
        let scale = if c % 5 == 4 { -1.0 } else { 1.0 } / spread;
        let x = (acc as f32 * scale + (c % 7) as f32 * 0.05 - 0.15).clamp(-1.0, 1.0);
        let mag = match (levels, x.abs()) {
            (Levels::Pow2, a) if a >= 0.75 => 4,
            (Levels::Pow2, a) if a >= 0.375 => 2,
            (Levels::Pow2, a) if a >= 0.125 => 1,
            (Levels::Ternary, a) if a >= 0.5 => 1,
            _ => 0,
        };
        if x < 0.0 { -mag } else { mag }
    })
    .expect("monotone level map")
}

/// Packs rows of `c` signs per pixel: `pixels * ceil(c / 64)` words with zero pad bits.
fn random_packed(rng: &mut Rng, pixels: usize, c: usize) -> Vec<u64> {
    let cw = c.div_ceil(64);
    let mut v = Vec::with_capacity(pixels * cw);
    for _ in 0..pixels {
        for w in 0..cw {
            v.extend(rng.words(1, (c - w * 64).min(64)));
        }
    }
    v
}

/// Median time in ns of `f`, batching calls so each sample lasts at least ~2 ms.
fn time_ns(repeats: usize, mut f: impl FnMut()) -> f64 {
    f();
    let t = Instant::now();
    f();
    let one = t.elapsed().as_secs_f64();
    let inner = ((2e-3 / one.max(1e-9)).ceil() as usize).clamp(1, 10_000);
    let mut samples: Vec<f64> = (0..repeats.max(1))
        .map(|_| {
            let t = Instant::now();
            for _ in 0..inner {
                f();
            }
            t.elapsed().as_secs_f64() * 1e9 / inner as f64
        })
        .collect();
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

/// Float baseline: `C (m x n) = A (m x k) * B (k x n)` through `gemm`, row-major.
fn sgemm(m: usize, n: usize, k: usize, a: &[f32], b: &[f32], c: &mut [f32], threads: usize) {
    let par = if threads > 1 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: the pointers cover m*k, k*n and m*n floats with the row-major strides given.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            n as isize,
            false,
            a.as_ptr(),
            1,
            k as isize,
            b.as_ptr(),
            1,
            n as isize,
            0.0f32,
            1.0f32,
            false,
            false,
            false,
            par,
        )
    }
}

/// Float im2col of an NHWC image batch into `m x (k*k*cin)` rows (zero padding).
fn im2col_f32(layer: &Layer, x: &[f32], cols: &mut [f32]) {
    let (h, cin, k, s, p) = (layer.h, layer.cin, layer.k, layer.stride, layer.pad());
    let ho = layer.out_hw();
    let kd = layer.kdim();
    for b in 0..layer.batch {
        for oy in 0..ho {
            for ox in 0..ho {
                let row = &mut cols[((b * ho + oy) * ho + ox) * kd..][..kd];
                for r in 0..k {
                    for c in 0..k {
                        let dst = &mut row[(r * k + c) * cin..][..cin];
                        let iy = (oy * s + r).wrapping_sub(p);
                        let ix = (ox * s + c).wrapping_sub(p);
                        if iy < h && ix < h {
                            dst.copy_from_slice(&x[((b * h + iy) * h + ix) * cin..][..cin]);
                        } else {
                            dst.fill(0.0);
                        }
                    }
                }
            }
        }
    }
}

/// One table / JSON row.
struct Row {
    layer: String,
    m: usize,
    n: usize,
    k: usize,
    bits: (u32, u32),
    isa: String,
    ns: f64,
    peak_macs: f64,
    f32_ns: f64,
}

impl Row {
    fn gops(&self) -> f64 {
        (self.m * self.n * self.k) as f64 / self.ns
    }
    fn peak_frac(&self) -> f64 {
        self.gops() * 1e9 / self.peak_macs
    }
    fn speedup(&self) -> f64 {
        self.f32_ns / self.ns
    }
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        f64::NAN
    } else {
        v[v.len() / 2]
    }
}

/// Runs the benchmark.
pub(crate) fn run(args: Args) -> Result<()> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(args.threads.max(1))
        .build()
        .context("building the rayon pool")?;
    pool.install(|| bench(&args))
}

fn bench(args: &Args) -> Result<()> {
    let isa = xnor_kernels::selected_isa()?;
    let threads = args.threads.max(1);
    // Which int8 kernel the dispatcher picks at this ISA level.
    let int8 = match isa {
        Isa::Avx512 if xnor_kernels::has_avx512_vnni() => "AVX-512 VNNI",
        Isa::Avx512 | Isa::Avx2 if xnor_kernels::has_avx_vnni() => "AVX-VNNI (ymm)",
        Isa::Avx512 | Isa::Avx2 => "vpmaddubsw",
        _ => "portable",
    };
    println!(
        "bench-kernels: ISA {isa} (int8 kernel: {int8}), threads {threads}, int8 layers write {:?} levels, load average {}",
        args.levels,
        load_average()
    );
    // In-run register peaks per thread (best of many short runs, so that a time slice lost
    // to another process cannot lower them), measured again at the end; the maximum is used.
    let (pop0, vnni0) = measure_peaks();
    println!(
        "in-run peaks per thread (start): XOR+VPOPCNTQ+ADD {:.1} G binary MAC/s, VNNI vpdpbusd {:.1} G int8 MAC/s",
        pop0 / 1e9,
        vnni0 / 1e9
    );
    let mut rows = Vec::new();
    let (popm, vnnim) = run_layers(args, isa, threads, &mut rows)?;
    let (pop1, vnni1) = measure_peaks();
    let (pop, vnni) = (pop0.max(pop1).max(popm), vnni0.max(vnni1).max(vnnim));
    println!(
        "in-run peaks per thread (end): XOR+VPOPCNTQ+ADD {:.1} G binary MAC/s, VNNI vpdpbusd {:.1} G int8 MAC/s; \
         maximum over start, end and between layers: {:.1} / {:.1} (used below)",
        pop1 / 1e9,
        vnni1 / 1e9,
        pop / 1e9,
        vnni / 1e9
    );
    let pop_peak = if pop > 0.0 {
        pop * threads as f64
    } else {
        f64::NAN
    };
    let vnni_peak = if vnni > 0.0 {
        vnni * threads as f64
    } else {
        f64::NAN
    };
    for r in &mut rows {
        r.peak_macs = if r.bits.0 == 1 { pop_peak } else { vnni_peak };
    }
    print_header();
    for r in &rows {
        print_row(r, threads);
    }
    let pick = |suffix: &str, b: u32, f: &dyn Fn(&Row) -> f64| {
        median(
            rows.iter()
                .filter(|r| r.bits.0 == b && r.layer.ends_with(suffix))
                .map(f)
                .collect(),
        )
    };
    // Whole-layer time over bare-GEMM time, per layer, for the 1-bit path.
    let overhead = median(
        rows.windows(2)
            .filter(|w| {
                w[0].bits.0 == 1 && w[0].layer.ends_with("layer") && w[1].layer.ends_with("gemm")
            })
            .map(|w| w[0].ns / w[1].ns)
            .collect(),
    );
    println!(
        "summary ({} rows, ISA {isa}, {threads} thread(s), load {}): 1-bit layers median {:.1}x f32, \
         layer/GEMM time median {overhead:.2}, 1-bit GEMM median {:.0}% of popcount peak; int8 layers median {:.1}x f32, int8 GEMM median {:.0}% of VNNI peak",
        rows.len(),
        load_average(),
        pick("layer", 1, &|r| r.speedup()),
        100.0 * pick("gemm", 1, &|r| r.peak_frac()),
        pick("layer", 3, &|r| r.speedup()),
        100.0 * pick("gemm", 3, &|r| r.peak_frac()),
    );

    if let Some(path) = &args.json {
        let mut f =
            std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
        for r in &rows {
            let v = serde_json::json!({
                "layer": r.layer, "m": r.m, "n": r.n, "k": r.k,
                "bits_a": r.bits.0, "bits_w": r.bits.1, "isa": r.isa, "threads": threads,
                "ns": r.ns, "gops": r.gops(), "peak_frac": r.peak_frac(),
                "f32_ns": r.f32_ns, "speedup": r.speedup(),
            });
            writeln!(f, "{v}")?;
        }
        println!("wrote {} rows to {}", rows.len(), path.display());
    }
    Ok(())
}

fn print_header() {
    println!(
        "{:<34} {:>22} {:>5} {:>7} {:>3} {:>11} {:>8} {:>6} {:>8}",
        "layer", "shape (m,n,k)", "bits", "ISA", "thr", "time", "G MAC/s", "peak", "vs f32"
    );
}

/// Best-of-15 short runs of the popcount and VNNI register loops (MAC/s per thread; 0 when
/// the CPU lacks the instructions).
fn measure_peaks() -> (f64, f64) {
    measure_peaks_n(15, 4_000_000)
}

/// Best of `runs` runs of `iters` iterations of each peak loop.
fn measure_peaks_n(runs: usize, iters: u64) -> (f64, f64) {
    let pop = (0..runs)
        .filter_map(|_| xnor_kernels::peak::popcount_macs_per_sec(iters))
        .fold(0.0f64, f64::max);
    let vnni = (0..runs)
        .filter_map(|_| xnor_kernels::peak::vnni_macs_per_sec(iters))
        .fold(0.0f64, f64::max);
    (pop, vnni)
}

/// Times every selected layer, appending rows (their `peak_macs` is filled in by the caller).
/// Short peak measurements between layers are returned as the best seen (popcount, VNNI).
fn run_layers(
    args: &Args,
    isa: xnor_kernels::Isa,
    threads: usize,
    rows: &mut Vec<Row>,
) -> Result<(f64, f64)> {
    let mut peaks = (0.0f64, 0.0f64);
    let layers: Vec<Layer> = if args.quick {
        QUICK
            .iter()
            .map(|&(name, batch)| {
                let mut l = *LAYERS
                    .iter()
                    .find(|l| l.name == name)
                    .expect("quick layer exists");
                l.batch = batch;
                l
            })
            .collect()
    } else {
        [1, 64]
            .iter()
            .flat_map(|&b| LAYERS.iter().map(move |l| Layer { batch: b, ..*l }))
            .collect()
    };
    let layers: Vec<Layer> = layers
        .into_iter()
        .filter(|l| args.filter.as_deref().is_none_or(|f| l.name.contains(f)))
        .collect();

    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    for layer in &layers {
        let (p, v) = measure_peaks_n(3, 1_000_000);
        peaks = (peaks.0.max(p), peaks.1.max(v));
        let (m, n, kd) = (layer.m(), layer.cout, layer.kdim());
        let label = format!("{} b{}", layer.name, layer.batch);
        let pixels = layer.batch * layer.h * layer.h;
        let cfg = Conv2dConfig {
            stride: layer.stride,
            padding: layer.pad(),
            pad_mode: PadMode::Zero,
        };

        // Float baseline: im2col + gemm (layer) and the bare gemm.
        let xf: Vec<f32> = (0..pixels * layer.cin)
            .map(|i| ((i * 7919) % 13) as f32 - 6.0)
            .collect();
        let bf: Vec<f32> = (0..kd * n)
            .map(|i| ((i * 104_729) % 11) as f32 - 5.0)
            .collect();
        let mut cols = vec![0f32; m * kd];
        let mut cf = vec![0f32; m * n];
        let f32_gemm = time_ns(args.repeats, || {
            sgemm(m, n, kd, &cols, &bf, &mut cf, threads)
        });
        let f32_layer = time_ns(args.repeats, || {
            im2col_f32(layer, &xf, &mut cols);
            sgemm(m, n, kd, &cols, &bf, &mut cf, threads);
        });

        // 1-bit: whole layer (im2col, GEMM, zero-padding correction, threshold to packed bits).
        let x = random_packed(&mut rng, pixels, layer.cin);
        let w = random_packed(&mut rng, n * layer.k * layer.k, layer.cin);
        let conv = BinaryConv2d::new(&w, n, layer.cin, layer.k, layer.k, cfg)?;
        let t: Vec<i32> = (0..n).map(|c| (c as i32 % 7) - 3).collect();
        let th = Thresholds::new(&t, &vec![Direction::Increasing; n])?;
        let mut bits = vec![0u64; m * n.div_ceil(64)];
        let ns = time_ns(args.repeats, || {
            conv.forward_with(
                isa,
                &x,
                layer.batch,
                layer.h,
                layer.h,
                Output::Packed {
                    thresholds: &th,
                    out: &mut bits,
                },
            )
            .expect("binary conv");
        });
        let row = |suffix: &str, bits: (u32, u32), ns: f64, f32_ns: f64| Row {
            layer: format!("{label} {suffix}"),
            m,
            n,
            k: kd,
            bits,
            isa: isa.to_string(),
            ns,
            peak_macs: f64::NAN,
            f32_ns,
        };
        rows.push(row("layer", (1, 1), ns, f32_layer));
        // 1-bit bare GEMM on the conv's own K layout (`m` rows of K bits, zero pad bits).
        let gw = conv.gemm_weights();
        let gemm_ok = gw.words_per_row() == reference::words(gw.k());
        let mut acc = vec![0i32; m * n];
        if gemm_ok {
            let a = random_packed(&mut rng, m, gw.k());
            let ns = time_ns(args.repeats, || {
                binary_gemm_with(isa, &a, gw, m, Output::I32(&mut acc)).expect("binary gemm");
            });
            rows.push(row("gemm", (1, 1), ns, f32_gemm));
        }

        // 2-3 bit layers on int8 levels: whole layer (im2col + GEMM + fused levels), the conv with
        // raw i32 output, and the bare GEMM.
        // bitpack's int8 layout: pixels and weight taps padded to a multiple of 4 bytes.
        let cs = reference::int8_stride(layer.cin);
        let taps = layer.k * layer.k;
        let mut x8 = rng.levels(pixels * cs);
        for px in x8.chunks_mut(cs) {
            px[layer.cin..].fill(0);
        }
        let s = taps * cs;
        let mut w8 = vec![0i8; n * s];
        for (j, r) in w8.chunks_mut(s).enumerate() {
            for (t, tap) in r.chunks_mut(cs).enumerate() {
                for (i, v) in tap[..layer.cin].iter_mut().enumerate() {
                    *v = (((i + t + j) * 2_654_435_761) % 9) as i8 - 4;
                }
            }
        }
        let conv8 = Int8Conv2d::new(&w8, n, layer.cin, layer.k, layer.k, cfg)?;
        // The layer's output is the next 2-3 bit layer's input: BatchNorm + the quantizer of
        // `--levels` as per-channel level steps (pow2: six per channel, the most of any set).
        let lt = level_steps(args.levels, n, kd);
        let mut y8 = vec![0i8; m * reference::int8_stride(n)];
        let conv8_into = |out: Output<'_>| {
            conv8
                .forward_with(isa, &x8, layer.batch, layer.h, layer.h, out)
                .expect("int8 conv");
        };
        let ns = time_ns(args.repeats, || {
            conv8_into(Output::Levels {
                thresholds: &lt,
                out: &mut y8,
            })
        });
        rows.push(row("layer", (3, 3), ns, f32_layer));
        // The same conv with the raw `i32` output (the dot products alone; the rows before
        // 2026-11-28 measured this as "layer").
        let ns = time_ns(args.repeats, || conv8_into(Output::I32(&mut acc)));
        rows.push(row("layer i32", (3, 3), ns, f32_layer));
        let a8 = rng.levels(m * s);
        let ns = time_ns(args.repeats, || {
            int8_gemm_with(isa, &a8, conv8.gemm_weights(), m, Output::I32(&mut acc))
                .expect("int8 gemm");
        });
        rows.push(row("gemm", (3, 3), ns, f32_gemm));
        let done = rows.len() - if gemm_ok { 5 } else { 4 };
        for r in &rows[done..] {
            eprintln!("  measured {} ({:.1} us)", r.layer, r.ns / 1e3);
        }
    }

    Ok(peaks)
}

fn print_row(r: &Row, threads: usize) {
    let time = if r.ns >= 1e6 {
        format!("{:.3} ms", r.ns / 1e6)
    } else {
        format!("{:.1} us", r.ns / 1e3)
    };
    let bits = if r.bits.0 == 1 { "1" } else { "2-3" };
    println!(
        "{:<34} {:>22} {:>5} {:>7} {:>3} {:>11} {:>8.1} {:>5.0}% {:>7.1}x",
        r.layer,
        format!("({},{},{})", r.m, r.n, r.k),
        bits,
        r.isa,
        threads,
        time,
        r.gops(),
        100.0 * r.peak_frac(),
        r.speedup()
    );
}
