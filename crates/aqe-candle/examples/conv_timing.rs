//! Times the convolutions of one ResNet-20 training step (CIFAR-10, batch 128): our NHWC engine
//! (forward, input gradient, weight gradient) against the Candle ops its `conv2d` autograd runs
//! (`conv2d`, `conv_transpose2d`, and the transposed `conv2d` for the weight gradient).
//!
//! ```text
//! cargo run --release -p aqe-candle --example conv_timing -- [--threads N] [--reps R] [--batch B] [--no-candle] [--aqe] [--autograd]
//! ```
//!
//! `--autograd` adds a column `ag`: forward and backward of [`conv2d_nhwc`] through Candle's
//! autograd (`y.sum_all().backward()` on `Var`s), which adds Candle's own bookkeeping (output
//! allocation, gradient accumulation into zero tensors, the broadcast gradient of `sum_all`).
//!
//! `--aqe` runs our engine with the fused input transform (AQE, sign quantizer, alpha 0.7), as a
//! layer with 1-bit activations would; the Candle columns stay float.
//!
//! Reports the median of `R` repetitions per shape (after one warm-up), milliseconds per call,
//! the step total weighted by how often each shape occurs in ResNet-20, and GFLOP/s.

use std::time::Instant;

use aqe_candle::conv::{
    Conv2dGeometry, InputTransform, conv2d_backward_input, conv2d_backward_weight, conv2d_forward,
    conv2d_nhwc,
};
use aqe_core::{Estimator, Quantizer};
use candle_core::{Device, Tensor, Var};

struct Args {
    threads: usize,
    reps: usize,
    batch: usize,
    candle: bool,
    transform: Option<InputTransform>,
    autograd: bool,
}

fn parse_args() -> Args {
    let mut a = Args {
        threads: 1,
        reps: 5,
        batch: 128,
        candle: true,
        transform: None,
        autograd: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut num = |name: &str| -> usize {
            it.next()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{name} needs a number"))
        };
        match arg.as_str() {
            "--threads" => a.threads = num("--threads"),
            "--reps" => a.reps = num("--reps"),
            "--batch" => a.batch = num("--batch"),
            "--no-candle" => a.candle = false,
            "--autograd" => a.autograd = true,
            "--aqe" => {
                a.transform = Some(InputTransform {
                    estimator: Estimator::default(),
                    quantizer: Quantizer::Sign.resolve(&[]),
                    alpha: 0.7,
                })
            }
            other => panic!("unknown argument {other}"),
        }
    }
    a
}

/// Median wall time of `reps` runs of `f`, in milliseconds, after one warm-up run.
fn time_ms(reps: usize, mut f: impl FnMut()) -> f64 {
    f();
    let mut t: Vec<f64> = (0..reps.max(1))
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    t.sort_by(f64::total_cmp);
    t[t.len() / 2]
}

fn pseudo_random(len: usize, seed: u32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(2_654_435_761).max(1);
    (0..len)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            (s >> 8) as f32 / (1u32 << 24) as f32 - 0.5
        })
        .collect()
}

struct Times {
    fwd: f64,
    bwd_in: f64,
    bwd_w: f64,
}

impl Times {
    fn total(&self) -> f64 {
        self.fwd + self.bwd_in + self.bwd_w
    }
}

fn ours(g: &Conv2dGeometry, reps: usize, t: Option<&InputTransform>) -> Times {
    let x = pseudo_random(g.input_len(), 1);
    let w = pseudo_random(g.weight_len(), 2);
    let dout = pseudo_random(g.output_len(), 3);
    let mut out = vec![0.0; g.output_len()];
    let mut dx = vec![0.0; g.input_len()];
    let mut dw = vec![0.0; g.weight_len()];
    Times {
        fwd: time_ms(reps, || {
            conv2d_forward(g, &x, &w, t, &mut out).expect("forward")
        }),
        bwd_in: time_ms(reps, || {
            conv2d_backward_input(g, &dout, &w, &x, t, &mut dx).expect("backward input")
        }),
        bwd_w: time_ms(reps, || {
            conv2d_backward_weight(g, &dout, &x, t, &mut dw).expect("backward weight")
        }),
    }
}

/// Forward and backward of our op through Candle's autograd.
fn autograd(
    g: &Conv2dGeometry,
    reps: usize,
    t: Option<InputTransform>,
) -> candle_core::Result<f64> {
    let dev = Device::Cpu;
    let x = Var::from_vec(pseudo_random(g.input_len(), 1), &g.input_shape(), &dev)?;
    let w = Var::from_vec(pseudo_random(g.weight_len(), 2), &g.weight_shape(), &dev)?;
    Ok(time_ms(reps, || {
        let y = conv2d_nhwc(x.as_tensor(), w.as_tensor(), g.stride, g.padding, t).expect("forward");
        let grads = y.sum_all().and_then(|l| l.backward()).expect("backward");
        assert!(grads.get(w.as_tensor()).is_some());
    }))
}

/// The three ops Candle 0.11.1's conv2d forward and backward run (see its `backprop.rs`).
fn candle(g: &Conv2dGeometry, reps: usize) -> candle_core::Result<Times> {
    let dev = Device::Cpu;
    let (n, c, h, w) = (g.batch, g.in_c, g.in_h, g.in_w);
    let x = Tensor::from_vec(pseudo_random(g.input_len(), 1), (n, c, h, w), &dev)?;
    let k = Tensor::from_vec(
        pseudo_random(g.weight_len(), 2),
        (g.out_c, c, g.kernel_h, g.kernel_w),
        &dev,
    )?;
    let grad = Tensor::from_vec(
        pseudo_random(g.output_len(), 3),
        (n, g.out_c, g.out_h(), g.out_w()),
        &dev,
    )?;
    let (p, s) = (g.padding, g.stride);
    let out_size = (g.out_h() - 1) * s + g.kernel_h - 2 * p;
    let out_padding = h - out_size;
    let fwd = time_ms(reps, || {
        x.conv2d(&k, p, s, 1, 1).expect("candle conv2d");
    });
    let bwd_in = time_ms(reps, || {
        grad.conv_transpose2d(&k, p, out_padding, s, 1)
            .expect("candle conv_transpose2d");
    });
    let bwd_w = time_ms(reps, || {
        let gk = x
            .transpose(0, 1)
            .and_then(|xt| xt.conv2d(&grad.transpose(0, 1)?, p, 1, s, 1))
            .and_then(|t| t.transpose(0, 1))
            .expect("candle weight gradient");
        let _ = gk
            .narrow(2, 0, g.kernel_h)
            .and_then(|t| t.narrow(3, 0, g.kernel_w))
            .expect("narrow");
    });
    Ok(Times { fwd, bwd_in, bwd_w })
}

fn main() -> candle_core::Result<()> {
    let args = parse_args();
    // SAFETY: no other thread exists yet; Candle's CPU conv reads this variable for its
    // thread count, and the pool built right below has the same number.
    unsafe { std::env::set_var("RAYON_NUM_THREADS", args.threads.to_string()) };
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(args.threads)
        .build()
        .expect("rayon pool");
    // Inside the pool, a one-thread run does all its work on the measuring thread.
    pool.install(|| run(&args))
}

fn run(args: &Args) -> candle_core::Result<()> {
    let b = args.batch;
    let conv =
        |hw: usize, ci: usize, co: usize, k: usize, stride: usize, padding: usize| Conv2dGeometry {
            batch: b,
            in_h: hw,
            in_w: hw,
            in_c: ci,
            out_c: co,
            kernel_h: k,
            kernel_w: k,
            stride,
            padding,
        };
    // (name, geometry, occurrences in one ResNet-20 step; 0 = option-B shortcut, not counted).
    let shapes = [
        ("stem 32x32 3->16", conv(32, 3, 16, 3, 1, 1), 1),
        ("32x32 16->16", conv(32, 16, 16, 3, 1, 1), 6),
        ("32x32 16->32 s2", conv(32, 16, 32, 3, 2, 1), 1),
        ("16x16 32->32", conv(16, 32, 32, 3, 1, 1), 5),
        ("16x16 32->64 s2", conv(16, 32, 64, 3, 2, 1), 1),
        ("8x8 64->64", conv(8, 64, 64, 3, 1, 1), 5),
        ("1x1 s2 16->32 (opt. B)", conv(32, 16, 32, 1, 2, 0), 0),
        ("1x1 s2 32->64 (opt. B)", conv(16, 32, 64, 1, 2, 0), 0),
    ];

    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "ResNet-20 convs, batch {b}, {} thread(s), wall ms, input transform {:?}, median of {} reps; avx512f: {}; loadavg: {}",
        args.threads,
        args.transform.map(|t| t.estimator.to_string()),
        args.reps,
        cfg!(target_arch = "x86_64") && std::is_x86_feature_detected!("avx512f"),
        load.trim()
    );
    println!(
        "{:<24} {:>3} | {:>7} {:>7} {:>7} {:>7} {:>6} | {:>8} {:>8} {:>8} {:>8} | {:>6}",
        "shape",
        "x",
        "fwd",
        "d-in",
        "d-w",
        "sum",
        "GF/s",
        "c.fwd",
        "c.d-in",
        "c.d-w",
        "c.sum",
        "ratio"
    );
    let (mut ours_total, mut candle_total, mut flops_total, mut ag_total) = (0.0, 0.0, 0.0, 0.0);
    for (name, g, count) in &shapes {
        let t = ours(g, args.reps, args.transform.as_ref());
        let flops = 3.0 * 2.0 * g.macs() as f64;
        let gflops = flops / (t.total() * 1e-3) / 1e9;
        let c = if args.candle {
            Some(candle(g, args.reps.min(3))?)
        } else {
            None
        };
        let ag = if args.autograd {
            Some(autograd(g, args.reps, args.transform)?)
        } else {
            None
        };
        let fmt_c = |v: Option<f64>| v.map_or_else(|| "-".to_string(), |v| format!("{v:.1}"));
        println!(
            "{:<24} {:>3} | {:>7.1} {:>7.1} {:>7.1} {:>7.1} {:>6.1} | {:>8} {:>8} {:>8} {:>8} | {:>6} | {:>7}",
            name,
            count,
            t.fwd,
            t.bwd_in,
            t.bwd_w,
            t.total(),
            gflops,
            fmt_c(c.as_ref().map(|c| c.fwd)),
            fmt_c(c.as_ref().map(|c| c.bwd_in)),
            fmt_c(c.as_ref().map(|c| c.bwd_w)),
            fmt_c(c.as_ref().map(Times::total)),
            c.as_ref().map_or_else(
                || "-".to_string(),
                |c| format!("{:.1}x", c.total() / t.total())
            ),
            fmt_c(ag),
        );
        let count = f64::from(*count);
        ours_total += count * t.total();
        candle_total += count * c.as_ref().map_or(0.0, Times::total);
        flops_total += count * flops;
        ag_total += count * ag.unwrap_or(0.0);
    }
    println!(
        "step total (19 convs, fwd + both grads): ours {:.0} ms ({:.1} GFLOP/s over {:.1} GFLOP), candle {}, ours via autograd {}",
        ours_total,
        flops_total / (ours_total * 1e-3) / 1e9,
        flops_total / 1e9,
        if args.candle {
            format!("{candle_total:.0} ms")
        } else {
            "-".to_string()
        },
        if args.autograd {
            format!("{ag_total:.0} ms")
        } else {
            "-".to_string()
        },
    );
    Ok(())
}
