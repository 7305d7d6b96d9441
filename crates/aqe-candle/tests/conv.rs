//! Our NHWC convolution against Candle's `conv2d` (forward, input and weight gradients), against
//! the element-wise transform followed by a plain convolution, and against central finite
//! differences of an `f64` reference.

use aqe_candle::conv::{
    Conv2dGeometry, ConvError, InputTransform, conv2d_backward_input, conv2d_backward_weight,
    conv2d_forward, conv2d_nhwc,
};
use aqe_core::{Estimator, Quantizer};
use candle_core::{DType, Device, Tensor, Var};

/// SplitMix64: a tiny seeded generator (Candle's CPU device cannot be seeded).
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[lo, hi)`.
    fn uniform(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * ((self.next_u64() >> 40) as f32 / (1u64 << 24) as f32)
    }

    fn vec(&mut self, len: usize, lo: f32, hi: f32) -> Vec<f32> {
        (0..len).map(|_| self.uniform(lo, hi)).collect()
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

type Res<T = ()> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

fn geom(
    batch: usize,
    hw: (usize, usize),
    ci: usize,
    co: usize,
    k: usize,
    stride: usize,
    padding: usize,
) -> Conv2dGeometry {
    Conv2dGeometry {
        batch,
        in_h: hw.0,
        in_w: hw.1,
        in_c: ci,
        out_c: co,
        kernel_h: k,
        kernel_w: k,
        stride,
        padding,
    }
}

/// Hand-picked shapes: every (stride, kernel, padding) combination, batch 1 and odd batches, odd
/// channels, the 1x1 fast path, several images per block, and an image split into row blocks.
fn fixed_shapes() -> Vec<Conv2dGeometry> {
    vec![
        geom(1, (5, 7), 3, 4, 3, 1, 1),
        geom(3, (8, 8), 5, 7, 3, 2, 1),
        geom(1, (6, 6), 2, 3, 3, 1, 0),
        geom(5, (9, 9), 3, 5, 3, 2, 0),
        geom(2, (6, 5), 3, 2, 1, 1, 0),
        geom(3, (7, 7), 4, 6, 1, 2, 0),
        geom(2, (4, 4), 3, 2, 1, 1, 1),
        geom(1, (5, 6), 3, 5, 1, 2, 1),
        geom(7, (8, 8), 16, 9, 3, 1, 1),
        geom(3, (64, 64), 8, 5, 3, 1, 1),
        geom(2, (65, 63), 7, 3, 3, 2, 1),
    ]
}

/// Random shapes from a seeded generator.
fn random_shapes(seed: u64, count: usize) -> Vec<Conv2dGeometry> {
    let mut rng = Rng(seed);
    (0..count)
        .map(|_| {
            let k = [1, 3][rng.below(2)];
            geom(
                [1, 2, 3, 5][rng.below(4)],
                (3 + rng.below(9), 3 + rng.below(9)),
                1 + 2 * rng.below(5),
                1 + 2 * rng.below(5),
                k,
                1 + rng.below(2),
                rng.below(2),
            )
        })
        .collect()
}

/// `max |a - b| <= tol * max(max |b|, 1e-3)`: relative to the reference's scale (an
/// element-wise relative error is meaningless for sums that cancel to near zero).
fn assert_close(what: &str, got: &[f32], want: &[f32], tol: f32) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    let scale = want.iter().fold(1e-3f32, |m, v| m.max(v.abs()));
    let (i, err) = got
        .iter()
        .zip(want)
        .map(|(a, b)| (a - b).abs())
        .enumerate()
        .fold(
            (0, 0.0f32),
            |best, (i, e)| if e > best.1 { (i, e) } else { best },
        );
    assert!(
        err <= tol * scale,
        "{what}: max error {err} at {i} (got {}, want {}) exceeds {tol} x scale {scale}",
        got[i],
        want[i]
    );
}

fn flat(t: &Tensor) -> Res<Vec<f32>> {
    Ok(t.flatten_all()?.to_vec1::<f32>()?)
}

/// Output, input gradient and weight gradient of `loss = sum(y * gy)`.
struct Run {
    y: Vec<f32>,
    dx: Vec<f32>,
    dw: Vec<f32>,
}

/// Our op through Candle's autograd.
fn ours(
    g: &Conv2dGeometry,
    x: &[f32],
    w: &[f32],
    gy: &[f32],
    t: Option<InputTransform>,
) -> Res<Run> {
    let dev = Device::Cpu;
    let xv = Var::from_tensor(&Tensor::from_slice(x, &g.input_shape(), &dev)?)?;
    let wv = Var::from_tensor(&Tensor::from_slice(w, &g.weight_shape(), &dev)?)?;
    let y = conv2d_nhwc(xv.as_tensor(), wv.as_tensor(), g.stride, g.padding, t)?;
    assert_eq!(y.dims(), &g.output_shape());
    let gy = Tensor::from_slice(gy, &g.output_shape(), &dev)?;
    let grads = (&y * &gy)?.sum_all()?.backward()?;
    Ok(Run {
        y: flat(&y)?,
        dx: flat(grads.get(xv.as_tensor()).ok_or("no dx")?)?,
        dw: flat(grads.get(wv.as_tensor()).ok_or("no dw")?)?,
    })
}

/// Candle's NCHW `conv2d` (and its autograd), with NHWC/OHWI tensors permuted in the graph.
fn candle_ref(g: &Conv2dGeometry, x: &[f32], w: &[f32], gy: &[f32]) -> Res<Run> {
    let dev = Device::Cpu;
    let xv = Var::from_tensor(&Tensor::from_slice(x, &g.input_shape(), &dev)?)?;
    let wv = Var::from_tensor(&Tensor::from_slice(w, &g.weight_shape(), &dev)?)?;
    let xn = xv.as_tensor().permute((0, 3, 1, 2))?;
    let wn = wv.as_tensor().permute((0, 3, 1, 2))?;
    let y = xn
        .conv2d(&wn, g.padding, g.stride, 1, 1)?
        .permute((0, 2, 3, 1))?;
    let gy = Tensor::from_slice(gy, &g.output_shape(), &dev)?;
    let grads = (&y * &gy)?.sum_all()?.backward()?;
    Ok(Run {
        y: flat(&y)?,
        dx: flat(grads.get(xv.as_tensor()).ok_or("no dx")?)?,
        dw: flat(grads.get(wv.as_tensor()).ok_or("no dw")?)?,
    })
}

/// Candle 0.11.1's conv2d backward derives the transpose-conv output padding from the height
/// only, so it fails with a shape mismatch when `(in + 2p - k) % stride` differs between height
/// and width. Those shapes are checked against [`naive`] instead.
fn candle_backward_ok(g: &Conv2dGeometry) -> bool {
    let rem = |i: usize, k: usize| (i + 2 * g.padding - k) % g.stride;
    rem(g.in_h, g.kernel_h) == rem(g.in_w, g.kernel_w)
}

/// Direct loops in `f64`: the output and both gradients of `loss = sum(y * gy)`.
fn naive(g: &Conv2dGeometry, x: &[f32], w: &[f32], gy: &[f32]) -> Run {
    let (oh_n, ow_n) = (g.out_h(), g.out_w());
    let mut y = vec![0.0f64; g.output_len()];
    let mut dx = vec![0.0f64; g.input_len()];
    let mut dw = vec![0.0f64; g.weight_len()];
    for n in 0..g.batch {
        for oh in 0..oh_n {
            for ow in 0..ow_n {
                for co in 0..g.out_c {
                    let oi = ((n * oh_n + oh) * ow_n + ow) * g.out_c + co;
                    for kh in 0..g.kernel_h {
                        for kw in 0..g.kernel_w {
                            let ih = (oh * g.stride + kh) as isize - g.padding as isize;
                            let iw = (ow * g.stride + kw) as isize - g.padding as isize;
                            if ih < 0 || iw < 0 || ih >= g.in_h as isize || iw >= g.in_w as isize {
                                continue;
                            }
                            for ci in 0..g.in_c {
                                let xi = ((n * g.in_h + ih as usize) * g.in_w + iw as usize)
                                    * g.in_c
                                    + ci;
                                let wi = ((co * g.kernel_h + kh) * g.kernel_w + kw) * g.in_c + ci;
                                y[oi] += f64::from(x[xi]) * f64::from(w[wi]);
                                dx[xi] += f64::from(gy[oi]) * f64::from(w[wi]);
                                dw[wi] += f64::from(gy[oi]) * f64::from(x[xi]);
                            }
                        }
                    }
                }
            }
        }
    }
    let f = |v: Vec<f64>| v.into_iter().map(|v| v as f32).collect();
    Run {
        y: f(y),
        dx: f(dx),
        dw: f(dw),
    }
}

/// Candle's autograd where it works, else [`naive`].
fn reference(g: &Conv2dGeometry, x: &[f32], w: &[f32], gy: &[f32]) -> Res<Run> {
    if candle_backward_ok(g) {
        candle_ref(g, x, w, gy)
    } else {
        Ok(naive(g, x, w, gy))
    }
}

fn data(g: &Conv2dGeometry, seed: u64) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let mut rng = Rng(seed);
    (
        rng.vec(g.input_len(), -1.5, 1.5),
        rng.vec(g.weight_len(), -1.0, 1.0),
        rng.vec(g.output_len(), -1.0, 1.0),
    )
}

fn compare_with_candle(g: &Conv2dGeometry, seed: u64) -> Res {
    let (x, w, gy) = data(g, seed);
    let got = ours(g, &x, &w, &gy, None)?;
    let want = reference(g, &x, &w, &gy)?;
    assert_close(&format!("{g:?} forward"), &got.y, &want.y, 1e-4);
    assert_close(&format!("{g:?} d-input"), &got.dx, &want.dx, 1e-4);
    assert_close(&format!("{g:?} d-weight"), &got.dw, &want.dw, 1e-4);
    Ok(())
}

fn in_pool<R: Send>(threads: usize, f: impl FnOnce() -> R + Send) -> R {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .expect("thread pool")
        .install(f)
}

#[test]
fn naive_reference_agrees_with_candle() -> Res {
    for (i, g) in fixed_shapes()
        .iter()
        .filter(|g| candle_backward_ok(g) && g.in_h < 20)
        .enumerate()
    {
        let (x, w, gy) = data(g, 500 + i as u64);
        let (a, b) = (naive(g, &x, &w, &gy), candle_ref(g, &x, &w, &gy)?);
        assert_close("naive y", &a.y, &b.y, 1e-5);
        assert_close("naive dx", &a.dx, &b.dx, 1e-5);
        assert_close("naive dw", &a.dw, &b.dw, 1e-5);
    }
    Ok(())
}

#[test]
fn equals_candle_on_fixed_shapes_one_thread() -> Res {
    in_pool(1, || -> Res {
        for (i, g) in fixed_shapes().iter().enumerate() {
            compare_with_candle(g, 100 + i as u64)?;
        }
        Ok(())
    })
}

#[test]
fn equals_candle_on_fixed_shapes_three_threads() -> Res {
    in_pool(3, || -> Res {
        for (i, g) in fixed_shapes().iter().enumerate() {
            compare_with_candle(g, 200 + i as u64)?;
        }
        Ok(())
    })
}

#[test]
fn equals_candle_on_random_shapes() -> Res {
    for (i, g) in random_shapes(7, 24).iter().enumerate() {
        in_pool(1 + i % 4, || compare_with_candle(g, 300 + i as u64))?;
    }
    Ok(())
}

fn aqe_sign(alpha: f32) -> Res<InputTransform> {
    Ok(InputTransform {
        estimator: "aqe".parse()?,
        quantizer: Quantizer::Sign.resolve(&[]),
        alpha,
    })
}

/// With a transform, our fused op equals: `x_hat = transform(x)` element-wise with aqe-core, a
/// plain convolution of `x_hat`, and the chain rule `dx = d(x_hat) * grad_scale(alpha, x)`.
fn compare_transform(g: &Conv2dGeometry, t: InputTransform, seed: u64) -> Res {
    let (x, w, gy) = data(g, seed);
    let mut x_hat = vec![0.0; x.len()];
    t.estimator.forward(&t.quantizer, t.alpha, &x, &mut x_hat)?;
    let plain = reference(g, &x_hat, &w, &gy)?;
    let mut dx_want = vec![0.0; x.len()];
    t.estimator.backward(t.alpha, &x, &plain.dx, &mut dx_want)?;
    let got = ours(g, &x, &w, &gy, Some(t))?;
    assert_close(&format!("{g:?} {t:?} forward"), &got.y, &plain.y, 1e-4);
    assert_close(&format!("{g:?} {t:?} d-input"), &got.dx, &dx_want, 1e-4);
    assert_close(&format!("{g:?} {t:?} d-weight"), &got.dw, &plain.dw, 1e-4);
    Ok(())
}

#[test]
fn input_transform_equals_elementwise_then_conv() -> Res {
    let transforms = [
        aqe_sign(0.7)?,
        aqe_sign(1.0)?,
        InputTransform {
            estimator: "aqe:scaled".parse()?,
            quantizer: Quantizer::Sign.resolve(&[]),
            alpha: 0.6,
        },
        InputTransform {
            estimator: Estimator::Ste,
            quantizer: Quantizer::ternary(0.4)?.resolve(&[]),
            alpha: 0.0,
        },
        InputTransform {
            estimator: Estimator::ApproxSign,
            quantizer: Quantizer::Sign.resolve(&[]),
            alpha: 0.0,
        },
    ];
    for (i, g) in fixed_shapes().iter().enumerate() {
        let t = transforms[i % transforms.len()];
        in_pool(1 + i % 3, || compare_transform(g, t, 400 + i as u64))?;
    }
    Ok(())
}

/// A padded position contributes 0 after quantization, not `h(0) = +1`: with sign and alpha 1,
/// a 3x3 kernel of ones over a 1x1 image of `-0.2` gives `-1` (one real tap), not `-1 + 8`.
#[test]
fn padding_contributes_zero_after_quantization() -> Res {
    let g = geom(1, (1, 1), 1, 1, 3, 1, 1);
    let mut out = [0.0];
    conv2d_forward(&g, &[-0.2], &[1.0; 9], Some(&aqe_sign(1.0)?), &mut out)?;
    assert_eq!(out, [-1.0]);
    Ok(())
}

#[test]
fn one_and_many_threads_agree() -> Res {
    let g = geom(9, (10, 10), 5, 6, 3, 1, 1);
    let (x, w, gy) = data(&g, 11);
    let t = aqe_sign(0.7)?;
    let one = in_pool(1, || ours(&g, &x, &w, &gy, Some(t)))?;
    let many = in_pool(4, || ours(&g, &x, &w, &gy, Some(t)))?;
    // Forward and input gradient do the same arithmetic per image whatever the split.
    assert_eq!(one.y, many.y);
    assert_eq!(one.dx, many.dx);
    // The weight gradient adds per-group partial sums: equal up to rounding.
    assert_close("dw, 1 vs 4 threads", &many.dw, &one.dw, 1e-5);
    Ok(())
}

/// `sum_{n,oh,ow,co} gy * conv(f(x), w)` in `f64`, zero padding, with `f` applied to real
/// positions only.
fn loss_f64(g: &Conv2dGeometry, x: &[f64], w: &[f64], gy: &[f64], f: impl Fn(f64) -> f64) -> f64 {
    let (oh_n, ow_n) = (g.out_h(), g.out_w());
    let mut loss = 0.0;
    for n in 0..g.batch {
        for oh in 0..oh_n {
            for ow in 0..ow_n {
                for co in 0..g.out_c {
                    let mut acc = 0.0;
                    for kh in 0..g.kernel_h {
                        for kw in 0..g.kernel_w {
                            let ih = (oh * g.stride + kh) as isize - g.padding as isize;
                            let iw = (ow * g.stride + kw) as isize - g.padding as isize;
                            if ih < 0 || iw < 0 || ih >= g.in_h as isize || iw >= g.in_w as isize {
                                continue;
                            }
                            for ci in 0..g.in_c {
                                let xi = ((n * g.in_h + ih as usize) * g.in_w + iw as usize)
                                    * g.in_c
                                    + ci;
                                let wi = ((co * g.kernel_h + kh) * g.kernel_w + kw) * g.in_c + ci;
                                acc += f(x[xi]) * w[wi];
                            }
                        }
                    }
                    loss += acc * gy[((n * oh_n + oh) * ow_n + ow) * g.out_c + co];
                }
            }
        }
    }
    loss
}

/// Central differences of the `f64` loss. The loss is linear in `w` and, with `f` the identity
/// or a clamp whose kinks are kept more than `H` away from every `x`, linear in each `x` over
/// `[x - H, x + H]`, so the central difference equals the derivative up to `f64` rounding
/// (about `1e-16 |loss| / H`, below `1e-11` here). What remains is our `f32` accumulation
/// error, a few ulps of the largest partial sum over at most 54 products: the tolerance
/// `1e-4` relative to the largest gradient leaves a margin of more than 10x.
fn check_finite_differences(
    g: &Conv2dGeometry,
    t: Option<InputTransform>,
    f: impl Fn(f64) -> f64 + Copy,
) -> Res {
    const H: f64 = 1e-3;
    let (mut x, w, gy) = data(g, 77);
    for v in &mut x {
        // Keep every x away from the clamp's kinks at +-1.
        if (v.abs() - 1.0).abs() < 0.01 {
            *v *= 0.95;
        }
    }
    let x64: Vec<f64> = x.iter().map(|&v| f64::from(v)).collect();
    let w64: Vec<f64> = w.iter().map(|&v| f64::from(v)).collect();
    let gy64: Vec<f64> = gy.iter().map(|&v| f64::from(v)).collect();
    let central = |xs: &[f64], ws: &[f64], i: usize, on_x: bool| {
        let (mut xp, mut wp) = (xs.to_vec(), ws.to_vec());
        let (mut xm, mut wm) = (xs.to_vec(), ws.to_vec());
        if on_x {
            xp[i] += H;
            xm[i] -= H;
        } else {
            wp[i] += H;
            wm[i] -= H;
        }
        ((loss_f64(g, &xp, &wp, &gy64, f) - loss_f64(g, &xm, &wm, &gy64, f)) / (2.0 * H)) as f32
    };
    let dx_fd: Vec<f32> = (0..x.len()).map(|i| central(&x64, &w64, i, true)).collect();
    let dw_fd: Vec<f32> = (0..w.len())
        .map(|i| central(&x64, &w64, i, false))
        .collect();
    let mut dx = vec![0.0; x.len()];
    let mut dw = vec![0.0; w.len()];
    conv2d_backward_input(g, &gy, &w, &x, t.as_ref(), &mut dx)?;
    conv2d_backward_weight(g, &gy, &x, t.as_ref(), &mut dw)?;
    assert_close(
        &format!("{g:?} dx vs finite differences"),
        &dx,
        &dx_fd,
        1e-4,
    );
    assert_close(
        &format!("{g:?} dw vs finite differences"),
        &dw,
        &dw_fd,
        1e-4,
    );
    Ok(())
}

#[test]
fn gradients_match_finite_differences() -> Res {
    for g in [
        geom(2, (4, 5), 2, 3, 3, 1, 1),
        geom(1, (5, 5), 3, 2, 3, 2, 1),
        geom(2, (3, 4), 3, 2, 1, 1, 0),
    ] {
        check_finite_differences(&g, None, |v| v)?;
    }
    Ok(())
}

/// The AQE (gated) backward is the derivative of `conv(clamp(x, -1, 1))`, whatever alpha: its
/// input gradient matches finite differences of that surrogate loss. The weight gradient is
/// that of the quantized forward, so it is checked against finite differences only without a
/// transform (above) and against the element-wise composition in
/// `input_transform_equals_elementwise_then_conv`.
#[test]
fn aqe_input_gradient_matches_surrogate_finite_differences() -> Res {
    let g = geom(2, (4, 5), 2, 3, 3, 1, 1);
    let t = aqe_sign(0.7)?;
    let (mut x, w, gy) = data(&g, 78);
    for v in &mut x {
        if (v.abs() - 1.0).abs() < 0.01 {
            *v *= 0.95;
        }
    }
    const H: f64 = 1e-3;
    let x64: Vec<f64> = x.iter().map(|&v| f64::from(v)).collect();
    let w64: Vec<f64> = w.iter().map(|&v| f64::from(v)).collect();
    let gy64: Vec<f64> = gy.iter().map(|&v| f64::from(v)).collect();
    let clamp = |v: f64| v.clamp(-1.0, 1.0);
    let dx_fd: Vec<f32> = (0..x.len())
        .map(|i| {
            let (mut xp, mut xm) = (x64.clone(), x64.clone());
            xp[i] += H;
            xm[i] -= H;
            ((loss_f64(&g, &xp, &w64, &gy64, clamp) - loss_f64(&g, &xm, &w64, &gy64, clamp))
                / (2.0 * H)) as f32
        })
        .collect();
    let mut dx = vec![0.0; x.len()];
    conv2d_backward_input(&g, &gy, &w, &x, Some(&t), &mut dx)?;
    assert_close("aqe dx vs surrogate finite differences", &dx, &dx_fd, 1e-4);
    Ok(())
}

#[test]
fn non_contiguous_inputs_and_untracked_input() -> Res {
    let g = geom(2, (5, 6), 3, 4, 3, 2, 1);
    let (x, w, gy) = data(&g, 5);
    let want = reference(&g, &x, &w, &gy)?;
    let dev = Device::Cpu;
    // x built as NCHW data then viewed as NHWC: a strided, non-contiguous tensor.
    let x_nchw = Tensor::from_slice(&x, &g.input_shape(), &dev)?
        .permute((0, 3, 1, 2))?
        .contiguous()?;
    let x_view = x_nchw.permute((0, 2, 3, 1))?;
    assert!(!x_view.is_contiguous());
    let wv = Var::from_tensor(&Tensor::from_slice(&w, &g.weight_shape(), &dev)?)?;
    let y = conv2d_nhwc(&x_view, wv.as_tensor(), 2, 1, None)?;
    assert_close("strided x forward", &flat(&y)?, &want.y, 1e-4);
    let grads = (&y * &Tensor::from_slice(&gy, &g.output_shape(), &dev)?)?
        .sum_all()?
        .backward()?;
    assert!(
        grads.get(&x_view).is_none(),
        "an untracked input gets no gradient"
    );
    assert_close(
        "dw with untracked x",
        &flat(grads.get(wv.as_tensor()).ok_or("no dw")?)?,
        &want.dw,
        1e-4,
    );
    Ok(())
}

#[test]
fn errors_name_the_shapes() -> Res {
    let dev = Device::Cpu;
    let x = Tensor::zeros((1, 4, 4, 3), DType::F32, &dev)?;
    let w = Tensor::zeros((2, 3, 3, 5), DType::F32, &dev)?;
    let err = conv2d_nhwc(&x, &w, 1, 1, None).expect_err("channel mismatch");
    assert!(err.to_string().contains("[2, 3, 3, 5]"), "{err}");

    for bad in [
        geom(1, (2, 2), 1, 1, 5, 1, 1),
        geom(1, (0, 3), 1, 1, 1, 1, 1),
        geom(1, (3, 3), 1, 1, 1, 0, 0),
    ] {
        assert!(
            matches!(bad.validate(), Err(ConvError::Geometry { .. })),
            "{bad:?}"
        );
        let mut out = vec![0.0; bad.output_len()];
        let r = conv2d_forward(
            &bad,
            &vec![0.0; bad.input_len()],
            &vec![0.0; bad.weight_len()],
            None,
            &mut out,
        );
        assert!(matches!(r, Err(ConvError::Geometry { .. })), "{bad:?}");
    }
    let g = geom(1, (4, 4), 1, 1, 3, 1, 1);
    let mut out = vec![0.0; g.output_len()];
    let err = conv2d_forward(&g, &[0.0; 15], &[0.0; 9], None, &mut out);
    assert_eq!(
        err,
        Err(ConvError::Shape {
            op: "conv2d forward",
            arg: "x",
            expected: vec![1, 4, 4, 1],
            got: vec![15]
        })
    );
    let bad = InputTransform {
        alpha: 1.5,
        ..aqe_sign(0.5)?
    };
    assert!(matches!(
        conv2d_forward(&g, &[0.0; 16], &[0.0; 9], Some(&bad), &mut out),
        Err(ConvError::Transform(_))
    ));

    let x64 = Tensor::zeros((1, 4, 4, 1), DType::F64, &dev)?;
    let w1 = Tensor::zeros((1, 3, 3, 1), DType::F32, &dev)?;
    assert!(conv2d_nhwc(&x64, &w1, 1, 1, None).is_err());
    Ok(())
}

#[test]
fn empty_batch_is_fine() -> Res {
    let g = geom(0, (4, 4), 2, 3, 3, 1, 1);
    let mut out = vec![];
    conv2d_forward(&g, &[], &vec![1.0; g.weight_len()], None, &mut out)?;
    let mut dw = vec![f32::NAN; g.weight_len()];
    conv2d_backward_weight(&g, &[], &[], None, &mut dw)?;
    assert!(
        dw.iter().all(|&v| v == 0.0),
        "the weight gradient of no images is 0"
    );
    let y = conv2d_nhwc(
        &Tensor::zeros((0, 4, 4, 2), DType::F32, &Device::Cpu)?,
        &Tensor::ones((3, 3, 3, 2), DType::F32, &Device::Cpu)?,
        1,
        1,
        None,
    )?;
    assert_eq!(y.dims(), &[0, 4, 4, 3]);
    Ok(())
}
