//! The quantizer, BatchNorm, HardTanh and max-pool ops against aqe-core, Candle's own ops and
//! finite differences.

use aqe_candle::norm::{Activation, BatchNormConfig, batch_norm, hard_tanh};
use aqe_candle::pool::{MaxPoolConfig, max_pool2d};
use aqe_candle::quant::{QuantSpec, hard_quantize, quantize};
use aqe_candle::{ParamStore, SeededRng};
use aqe_core::{Estimator, Quantizer};
use candle_core::{Device, ModuleT, Tensor, Var};

fn random(shape: &[usize], scale: f32, seed: u64) -> Tensor {
    let mut rng = SeededRng::new(seed);
    let n = shape.iter().product();
    let v: Vec<f32> = (0..n).map(|_| rng.uniform(-scale, scale)).collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

fn vec(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1().unwrap()
}

const QUANTIZERS: &[&str] = &["sign", "ternary", "ternary:twn", "pow2", "uniform:3"];
const ESTIMATORS: &[&str] = &["aqe", "aqe:scaled", "ste", "identity"];

#[test]
fn quantize_op_equals_aqe_core_exactly() {
    let x = random(&[4, 3, 5, 7], 1.6, 1);
    let xs = vec(&x);
    for q in QUANTIZERS {
        let quantizer: Quantizer = q.parse().unwrap();
        for e in ESTIMATORS.iter().chain(if *q == "sign" {
            &["approx_sign", "swish_sign:5"][..]
        } else {
            &[][..]
        }) {
            let estimator: Estimator = e.parse().unwrap();
            let spec = QuantSpec::new(quantizer, estimator).unwrap();
            for alpha in [0.0f32, 0.3, 0.5, 1.0] {
                let var = Var::from_tensor(&x).unwrap();
                let y = quantize(var.as_tensor(), &spec, alpha).unwrap();
                let h = quantizer.resolve(&xs);
                let mut want = vec![0f32; xs.len()];
                estimator.forward(&h, alpha, &xs, &mut want).unwrap();
                assert_eq!(vec(&y), want, "{q} {e} alpha {alpha}: forward");
                // Backward with a non-uniform upstream gradient.
                let up = random(x.dims(), 1.0, 2);
                let grads = (y * &up).unwrap().sum_all().unwrap().backward().unwrap();
                let got = vec(grads.get(var.as_tensor()).unwrap());
                let mut want_dx = vec![0f32; xs.len()];
                estimator
                    .backward(alpha, &xs, &vec(&up), &mut want_dx)
                    .unwrap();
                assert_eq!(got, want_dx, "{q} {e} alpha {alpha}: backward");
            }
        }
    }
}

#[test]
fn quantize_of_a_strided_view_equals_the_contiguous_result() {
    let x = random(&[6, 5], 1.5, 3);
    let spec = QuantSpec::new("ternary:twn".parse().unwrap(), "aqe".parse().unwrap()).unwrap();
    let a = quantize(&x.t().unwrap(), &spec, 0.6).unwrap();
    let b = quantize(&x.t().unwrap().contiguous().unwrap(), &spec, 0.6).unwrap();
    assert_eq!(vec(&a), vec(&b));
}

#[test]
fn quantize_rejects_bad_alpha_and_incompatible_estimators() {
    let x = random(&[3], 1.0, 4);
    let spec = QuantSpec::new("sign".parse().unwrap(), "aqe".parse().unwrap()).unwrap();
    assert!(
        quantize(&x, &spec, 1.5)
            .unwrap_err()
            .to_string()
            .contains("alpha")
    );
    assert!(QuantSpec::new("ternary".parse().unwrap(), "approx_sign".parse().unwrap()).is_err());
}

#[test]
fn aqe_at_one_is_the_hard_quantizer_and_at_half_has_ste_gradients() {
    let x = random(&[50], 1.5, 5);
    for q in QUANTIZERS {
        let quantizer: Quantizer = q.parse().unwrap();
        let aqe = QuantSpec::new(quantizer, "aqe:scaled".parse().unwrap()).unwrap();
        let ste = QuantSpec::new(quantizer, "ste".parse().unwrap()).unwrap();
        assert_eq!(
            vec(&quantize(&x, &aqe, 1.0).unwrap()),
            vec(&hard_quantize(&x, &quantizer).unwrap()),
            "{q}"
        );
        let grad = |spec: &QuantSpec| {
            let v = Var::from_tensor(&x).unwrap();
            let g = quantize(v.as_tensor(), spec, 0.5)
                .unwrap()
                .sqr()
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            vec(g.get(v.as_tensor()).unwrap())
        };
        // Different forwards, so compare the gate: d/dx of sum(y) instead.
        let gate = |spec: &QuantSpec| {
            let v = Var::from_tensor(&x).unwrap();
            let g = quantize(v.as_tensor(), spec, 0.5)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            vec(g.get(v.as_tensor()).unwrap())
        };
        assert_eq!(gate(&aqe), gate(&ste), "{q}: Theorem 1");
        assert!(grad(&aqe).iter().any(|g| *g != 0.0));
    }
}

#[test]
fn hard_tanh_gates_inclusively() {
    let x = Var::new(&[-2.0f32, -1.0, -0.5, 0.0, 1.0, 1.5], &Device::Cpu).unwrap();
    let y = hard_tanh(x.as_tensor()).unwrap();
    assert_eq!(vec(&y), vec![-1.0, -1.0, -0.5, 0.0, 1.0, 1.0]);
    let g = y.sum_all().unwrap().backward().unwrap();
    assert_eq!(
        vec(g.get(x.as_tensor()).unwrap()),
        vec![0.0, 1.0, 1.0, 1.0, 1.0, 0.0]
    );
}

/// (y, dx, dgamma, running mean, running var).
type BnOutputs = (Vec<f32>, Vec<f32>, Vec<f32>, Vec<f32>, Vec<f32>);

fn bn_grads(train: bool, activation: Activation, reference: bool) -> BnOutputs {
    let store = ParamStore::new(0, &Device::Cpu);
    let cfg = BatchNormConfig {
        activation,
        ..Default::default()
    };
    let bn = batch_norm(5, cfg, store.root().pp("bn")).unwrap();
    // Non-trivial gamma/beta so the HardTanh gate is exercised.
    let gamma = store.get("bn.weight").unwrap().var;
    gamma
        .set(&Tensor::new(&[1.5f32, -0.7, 2.0, 0.3, 1.0], &Device::Cpu).unwrap())
        .unwrap();
    let beta = store.get("bn.bias").unwrap().var;
    beta.set(&Tensor::new(&[0.2f32, -0.1, 0.5, 0.0, -0.9], &Device::Cpu).unwrap())
        .unwrap();
    if !train {
        store
            .get("bn.running_mean")
            .unwrap()
            .var
            .set(&Tensor::new(&[0.1f32, -0.2, 0.0, 0.3, 0.05], &Device::Cpu).unwrap())
            .unwrap();
        store
            .get("bn.running_var")
            .unwrap()
            .var
            .set(&Tensor::new(&[0.5f32, 1.2, 0.9, 0.2, 2.0], &Device::Cpu).unwrap())
            .unwrap();
    }
    let x = Var::from_tensor(&random(&[3, 4, 2, 5], 1.0, 6)).unwrap();
    let y = if reference {
        bn.forward_reference(x.as_tensor(), train).unwrap()
    } else {
        bn.forward_t(x.as_tensor(), train).unwrap()
    };
    let up = random(&[3, 4, 2, 5], 1.0, 7);
    let g = (&y * &up).unwrap().sum_all().unwrap().backward().unwrap();
    let (_, _, rm, rv) = bn.parameters();
    (
        vec(&y),
        vec(g.get(x.as_tensor()).unwrap()),
        vec(g.get(gamma.as_tensor()).unwrap()),
        vec(&rm.clone()),
        vec(&rv.clone()),
    )
}

fn close(a: &[f32], b: &[f32], tol: f32, what: &str) {
    assert_eq!(a.len(), b.len(), "{what}");
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!(
            (x - y).abs() <= tol * (1.0 + y.abs()),
            "{what}[{i}]: {x} vs {y}"
        );
    }
}

#[test]
fn fused_batch_norm_matches_the_tensor_op_reference() {
    for train in [true, false] {
        for act in [Activation::Identity, Activation::HardTanh, Activation::Relu] {
            let fast = bn_grads(train, act, false);
            let slow = bn_grads(train, act, true);
            let what = format!("train={train} {act:?}");
            close(&fast.0, &slow.0, 1e-5, &format!("{what} y"));
            close(&fast.1, &slow.1, 1e-4, &format!("{what} dx"));
            close(&fast.2, &slow.2, 1e-4, &format!("{what} dgamma"));
            close(&fast.3, &slow.3, 1e-6, &format!("{what} running mean"));
            close(&fast.4, &slow.4, 1e-6, &format!("{what} running var"));
        }
    }
    // The HardTanh gate actually cut something in this setting.
    let (y, ..) = bn_grads(true, Activation::HardTanh, false);
    assert!(y.iter().any(|v| v.abs() == 1.0));
}

#[test]
fn batch_norm_gradient_matches_finite_differences() {
    let store = ParamStore::new(0, &Device::Cpu);
    let bn = batch_norm(3, BatchNormConfig::default(), store.root()).unwrap();
    let x0 = vec(&random(&[4, 2, 3], 1.0, 8));
    let up = random(&[4, 2, 3], 1.0, 9);
    let loss = |x: &[f32]| -> f64 {
        let t = Tensor::from_vec(x.to_vec(), (4, 2, 3), &Device::Cpu).unwrap();
        let y = bn.forward_t(&t, true).unwrap();
        f64::from(
            (y * &up)
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap(),
        )
    };
    let v = Var::from_vec(x0.clone(), (4, 2, 3), &Device::Cpu).unwrap();
    let g = (bn.forward_t(v.as_tensor(), true).unwrap() * &up)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    let analytic = vec(g.get(v.as_tensor()).unwrap());
    let h = 1e-2f32;
    for i in 0..x0.len() {
        let (mut p, mut m) = (x0.clone(), x0.clone());
        p[i] += h;
        m[i] -= h;
        let fd = (loss(&p) - loss(&m)) / (2.0 * f64::from(h));
        assert!(
            (fd - f64::from(analytic[i])).abs() < 2e-2 * (1.0 + fd.abs()),
            "x[{i}]: fd {fd} vs {}",
            analytic[i]
        );
    }
}

#[test]
fn batch_norm_rejects_channels_first_input() {
    let store = ParamStore::new(0, &Device::Cpu);
    let bn = batch_norm(16, BatchNormConfig::default(), store.root().pp("block1.bn")).unwrap();
    let err = bn
        .forward_t(
            &Tensor::zeros((2, 16, 8, 8), candle_core::DType::F32, &Device::Cpu).unwrap(),
            true,
        )
        .unwrap_err();
    assert!(
        err.to_string().contains("block1.bn") && err.to_string().contains("channels last"),
        "{err}"
    );
}

#[test]
fn max_pool_matches_candle_forward_and_routes_every_gradient_once() {
    let x = random(&[2, 6, 4, 3], 1.0, 10);
    let v = Var::from_tensor(&x).unwrap();
    let ours = max_pool2d(v.as_tensor(), MaxPoolConfig::default()).unwrap();
    let theirs = x
        .permute((0, 3, 1, 2))
        .unwrap()
        .max_pool2d(2)
        .unwrap()
        .permute((0, 2, 3, 1))
        .unwrap();
    assert_eq!(vec(&ours), vec(&theirs));
    // Candle's own max-pool backward divides by the window size; ours routes each upstream
    // gradient, whole, to its window's maximum.
    let up = random(ours.dims(), 1.0, 11);
    let g = vec((&ours * &up)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap()
        .get(v.as_tensor())
        .unwrap());
    let (xs, ys, ups) = (vec(&x), vec(&ours), vec(&up));
    for (o, (y, u)) in ys.iter().zip(&ups).enumerate() {
        let (ch, ox, oy, n) = (o % 3, (o / 3) % 2, (o / 6) % 3, o / 18);
        let window: Vec<usize> = [(0, 0), (0, 1), (1, 0), (1, 1)]
            .iter()
            .map(|(dy, dx)| ((n * 6 + 2 * oy + dy) * 4 + 2 * ox + dx) * 3 + ch)
            .collect();
        let winners: Vec<&usize> = window.iter().filter(|&&i| g[i] != 0.0).collect();
        assert_eq!(winners.len(), 1, "output {o}");
        assert_eq!(xs[*winners[0]], *y);
        assert_eq!(g[*winners[0]], *u);
    }
}

#[test]
fn overlapping_max_pool_routes_gradients_to_window_maxima() {
    // 3x3 stride 2 padding 1 (ResNet-18's stem), checked against a direct loop.
    let (n, h, w, c) = (1, 5, 6, 2);
    let x = random(&[n, h, w, c], 1.0, 12);
    let xs = vec(&x);
    let cfg = MaxPoolConfig {
        kernel: 3,
        stride: 2,
        padding: 1,
    };
    let v = Var::from_tensor(&x).unwrap();
    let y = max_pool2d(v.as_tensor(), cfg).unwrap();
    assert_eq!(y.dims(), &[1, 3, 3, 2]);
    let g = y.sum_all().unwrap().backward().unwrap();
    let got = vec(g.get(v.as_tensor()).unwrap());
    let mut want_y = vec![];
    let mut want_g = vec![0f32; xs.len()];
    for oy in 0..3 {
        for ox in 0..3 {
            for ch in 0..c {
                let mut best: Option<usize> = None;
                for iy in (2 * oy) as isize - 1..=(2 * oy) as isize + 1 {
                    for ix in (2 * ox) as isize - 1..=(2 * ox) as isize + 1 {
                        if iy < 0 || ix < 0 || iy >= h as isize || ix >= w as isize {
                            continue;
                        }
                        let i = (iy as usize * w + ix as usize) * c + ch;
                        if best.is_none_or(|b| xs[i] > xs[b]) {
                            best = Some(i);
                        }
                    }
                }
                want_y.push(xs[best.unwrap()]);
                want_g[best.unwrap()] += 1.0;
            }
        }
    }
    assert_eq!(vec(&y), want_y);
    assert_eq!(got, want_g);
    assert!(
        max_pool2d(
            &x,
            MaxPoolConfig {
                kernel: 2,
                stride: 2,
                padding: 2
            }
        )
        .is_err()
    );
}

#[test]
fn fused_residual_activation_matches_add_then_activation() {
    use aqe_candle::norm::add_activation;
    let a0 = random(&[3, 4, 5], 1.5, 20);
    let b0 = random(&[3, 4, 5], 1.5, 21);
    let up = random(&[3, 4, 5], 1.0, 22);
    for act in [Activation::Identity, Activation::HardTanh, Activation::Relu] {
        let (a, b) = (
            Var::from_tensor(&a0).unwrap(),
            Var::from_tensor(&b0).unwrap(),
        );
        let y = add_activation(a.as_tensor(), b.as_tensor(), act).unwrap();
        let g = (&y * &up).unwrap().sum_all().unwrap().backward().unwrap();
        let s = vec(&(&a0 + &b0).unwrap());
        let (lo, hi) = match act {
            Activation::Identity => (f32::NEG_INFINITY, f32::INFINITY),
            Activation::HardTanh => (-1.0, 1.0),
            Activation::Relu => (0.0, f32::INFINITY),
        };
        let want: Vec<f32> = s.iter().map(|v| v.clamp(lo, hi)).collect();
        let want_g: Vec<f32> = s
            .iter()
            .zip(vec(&up))
            .map(|(v, u)| if *v >= lo && *v <= hi { u } else { 0.0 })
            .collect();
        assert_eq!(vec(&y), want, "{act:?}");
        assert_eq!(vec(g.get(a.as_tensor()).unwrap()), want_g, "{act:?} da");
        assert_eq!(vec(g.get(b.as_tensor()).unwrap()), want_g, "{act:?} db");
        if act != Activation::Identity {
            assert!(want_g.contains(&0.0), "{act:?}: the gate cut nothing");
        }
    }
}
