//! Optimizers: hand-computed updates, parameter groups, clipping, bit-identical resume, and a
//! small W1A1 network that learns.

use aqe_candle::norm::{Activation, BatchNormConfig, batch_norm};
use aqe_candle::optim::{AdamConfig, Algorithm, Nesterov, Optimizer, SgdConfig, WeightDecay};
use aqe_candle::pool::{MaxPoolConfig, max_pool2d};
use aqe_candle::{
    AlphaHandle, Alphas, BatchNorm, Error, Init, Loss, ParamKind, ParamStore, QuantConfig,
    QuantConv2d, QuantConv2dConfig, QuantLinear, QuantLinearConfig, SeededRng, quant_conv2d,
    quant_linear,
};
use aqe_core::{AlphaSchedule, Progress};
use candle_core::{Device, ModuleT, Tensor};

fn vec(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1().unwrap()
}

#[test]
fn adam_matches_a_hand_computation() {
    let store = ParamStore::new(0, &Device::Cpu);
    let w = store
        .root()
        .get(2, "w", Init::Const(0.5), ParamKind::Kernel)
        .unwrap();
    let cfg = AdamConfig {
        lr: 0.1,
        ..Default::default()
    };
    let mut opt = Optimizer::new(&store, Algorithm::Adam(cfg)).unwrap();
    let coef = Tensor::new(&[3.0f32, -0.5], &Device::Cpu).unwrap();
    let (mut m, mut v, mut p) = ([0f64; 2], [0f64; 2], [0.5f64; 2]);
    for t in 1..=3 {
        // loss = sum(coef * w^2) -> grad = 2 coef w.
        let loss = (&coef * w.sqr().unwrap()).unwrap().sum_all().unwrap();
        opt.backward_step(&loss).unwrap();
        for i in 0..2 {
            let g = 2.0 * [3.0, -0.5][i] * p[i];
            m[i] = 0.9 * m[i] + 0.1 * g;
            v[i] = 0.999 * v[i] + 0.001 * g * g;
            let (mh, vh) = (
                m[i] / (1.0 - 0.9f64.powi(t)),
                v[i] / (1.0 - 0.999f64.powi(t)),
            );
            p[i] -= 0.1 * mh / (vh.sqrt() + 1e-8);
        }
        let got = vec(&w);
        for i in 0..2 {
            assert!(
                (f64::from(got[i]) - p[i]).abs() < 1e-5,
                "step {t}: {got:?} vs {p:?}"
            );
        }
    }
    assert_eq!(opt.steps(), 3);
}

#[test]
fn sgd_momentum_and_weight_decay_follow_pytorch() {
    let store = ParamStore::new(0, &Device::Cpu);
    let w = store
        .root()
        .get(1, "w", Init::Const(1.0), ParamKind::Kernel)
        .unwrap();
    let b = store
        .root()
        .get(1, "b", Init::Const(1.0), ParamKind::Bias)
        .unwrap();
    let cfg = SgdConfig {
        lr: 0.1,
        momentum: 0.9,
        weight_decay: 0.01,
        nesterov: Nesterov::Off,
    };
    let mut opt = Optimizer::new(&store, Algorithm::Sgd(cfg)).unwrap();
    let (mut pw, mut pb, mut bw, mut bb) = (1.0f64, 1.0f64, 0.0f64, 0.0f64);
    for step in 0..3 {
        // loss = 2w + 3b: gradients 2 and 3; decay only on the kernel.
        let loss = ((&w * 2.0).unwrap() + (&b * 3.0).unwrap())
            .unwrap()
            .sum_all()
            .unwrap();
        opt.backward_step(&loss).unwrap();
        let gw = 2.0 + 0.01 * pw;
        bw = if step == 0 { gw } else { 0.9 * bw + gw };
        pw -= 0.1 * bw;
        bb = if step == 0 { 3.0 } else { 0.9 * bb + 3.0 };
        pb -= 0.1 * bb;
        assert!(
            (f64::from(vec(&w)[0]) - pw).abs() < 1e-6,
            "w {} vs {pw}",
            vec(&w)[0]
        );
        assert!(
            (f64::from(vec(&b)[0]) - pb).abs() < 1e-6,
            "b {} vs {pb}",
            vec(&b)[0]
        );
    }
}

#[test]
fn groups_clip_quantized_kernels_and_skip_buffers() {
    let store = ParamStore::new(0, &Device::Cpu);
    let q = store
        .root()
        .get(3, "q", Init::Const(0.95), ParamKind::QuantizedKernel)
        .unwrap();
    let f = store
        .root()
        .get(3, "f", Init::Const(0.95), ParamKind::Kernel)
        .unwrap();
    let buf = store
        .root()
        .get(3, "running", Init::Const(0.95), ParamKind::Buffer)
        .unwrap();
    for algorithm in [
        Algorithm::Adam(AdamConfig {
            lr: 0.5,
            ..Default::default()
        }),
        Algorithm::Sgd(SgdConfig {
            lr: 0.5,
            ..Default::default()
        }),
    ] {
        let mut opt = Optimizer::new(&store, algorithm).unwrap();
        let loss = ((q.sum_all().unwrap() + f.sum_all().unwrap()).unwrap()
            + buf.sum_all().unwrap())
        .unwrap()
        .neg()
        .unwrap();
        opt.backward_step(&loss).unwrap();
        assert!(
            vec(&q).iter().all(|v| *v == 1.0),
            "{algorithm:?}: {:?}",
            vec(&q)
        );
        assert!(
            vec(&f).iter().all(|v| *v > 1.0),
            "{algorithm:?}: float kernels are not clipped"
        );
        assert_eq!(vec(&buf), vec![0.95; 3], "buffers are not trained");
    }
    let decoupled = AdamConfig {
        lr: 0.1,
        weight_decay: 0.5,
        decay_mode: WeightDecay::Decoupled,
        ..Default::default()
    };
    assert!(Optimizer::new(&store, Algorithm::Adam(decoupled)).is_ok());
    assert!(matches!(
        Optimizer::new(
            &store,
            Algorithm::Sgd(SgdConfig {
                lr: -1.0,
                ..Default::default()
            })
        ),
        Err(Error::Config { .. })
    ));
}

/// A small W1A1 ConvNet: float-input conv, then binary conv, pool, BN + HardTanh, binary FC.
struct Net {
    c1: QuantConv2d,
    bn1: BatchNorm,
    c2: QuantConv2d,
    bn2: BatchNorm,
    fc: QuantLinear,
    bn3: BatchNorm,
}

impl Net {
    fn new(store: &ParamStore, alphas: &Alphas, estimator: &str) -> Net {
        let e = estimator.parse().unwrap();
        let w1 = QuantConfig::minw(None, Some("sign".parse().unwrap()), e).unwrap();
        let w1a1 = QuantConfig::minw(
            Some("sign".parse().unwrap()),
            Some("sign".parse().unwrap()),
            e,
        )
        .unwrap();
        let bn = BatchNormConfig {
            activation: Activation::HardTanh,
            ..Default::default()
        };
        let r = store.root();
        Net {
            c1: quant_conv2d(
                1,
                8,
                3,
                QuantConv2dConfig {
                    padding: 1,
                    quant: w1,
                    ..Default::default()
                },
                alphas,
                r.pp("c1"),
            )
            .unwrap(),
            bn1: batch_norm(8, bn, r.pp("bn1")).unwrap(),
            c2: quant_conv2d(
                8,
                16,
                3,
                QuantConv2dConfig {
                    padding: 1,
                    quant: w1a1,
                    ..Default::default()
                },
                alphas,
                r.pp("c2"),
            )
            .unwrap(),
            bn2: batch_norm(16, bn, r.pp("bn2")).unwrap(),
            fc: quant_linear(
                16 * 4 * 4,
                2,
                QuantLinearConfig {
                    bias: false,
                    quant: w1a1,
                },
                alphas,
                r.pp("fc"),
            )
            .unwrap(),
            bn3: batch_norm(2, BatchNormConfig::default(), r.pp("bn3")).unwrap(),
        }
    }

    fn forward(&self, x: &Tensor, train: bool) -> Tensor {
        let h = self
            .bn1
            .forward_t(&self.c1.forward_t(x, train).unwrap(), train)
            .unwrap();
        let h = max_pool2d(
            &self.c2.forward_t(&h, train).unwrap(),
            MaxPoolConfig::default(),
        )
        .unwrap();
        let h = self.bn2.forward_t(&h, train).unwrap();
        let h = h.flatten_from(1).unwrap();
        self.bn3
            .forward_t(&self.fc.forward_t(&h, train).unwrap(), train)
            .unwrap()
    }
}

/// 8x8 single-channel images: horizontal (class 0) or vertical (class 1) bars at random
/// positions, plus noise.
fn bars(n: usize, seed: u64) -> (Tensor, Tensor) {
    let mut rng = SeededRng::new(seed);
    let mut x = vec![0f32; n * 64];
    let mut y = vec![0u32; n];
    for i in 0..n {
        let class = rng.below(2);
        let line = rng.below(8);
        for a in 0..8 {
            for b in 0..8 {
                let on = if class == 0 { a == line } else { b == line };
                x[i * 64 + a * 8 + b] = if on { 1.0 } else { -0.3 } + 0.3 * rng.normal();
            }
        }
        y[i] = class as u32;
    }
    (
        Tensor::from_vec(x, (n, 8, 8, 1), &Device::Cpu).unwrap(),
        Tensor::from_vec(y, n, &Device::Cpu).unwrap(),
    )
}

fn train(net: &Net, store: &ParamStore, alpha: &AlphaHandle, steps: u32) -> (Optimizer, Vec<f32>) {
    let mut opt = Optimizer::new(
        store,
        Algorithm::Adam(AdamConfig {
            lr: 0.01,
            ..Default::default()
        }),
    )
    .unwrap();
    let schedule = AlphaSchedule::default();
    let mut losses = vec![];
    for step in 0..steps {
        alpha.advance(&schedule, &Progress::new(0, 1, step, steps).unwrap());
        let (x, y) = bars(32, 100 + u64::from(step));
        let loss = Loss::CrossEntropy
            .compute(&net.forward(&x, true), &y)
            .unwrap();
        losses.push(loss.to_scalar::<f32>().unwrap());
        opt.backward_step(&loss).unwrap();
    }
    (opt, losses)
}

fn accuracy(net: &Net) -> f32 {
    let (x, y) = bars(400, 7);
    let pred = net.forward(&x, false).argmax(1).unwrap();
    let hits: u32 = pred
        .eq(&y)
        .unwrap()
        .to_dtype(candle_core::DType::U32)
        .unwrap()
        .sum_all()
        .unwrap()
        .to_scalar()
        .unwrap();
    hits as f32 / 400.0
}

#[test]
fn a_small_w1a1_network_learns_a_generated_task() {
    let store = ParamStore::new(11, &Device::Cpu);
    let alpha = AlphaHandle::new(0.5).unwrap();
    let net = Net::new(&store, &Alphas::shared(alpha.clone()), "aqe");
    let (_, losses) = train(&net, &store, &alpha, 150);
    let first: f32 = losses[..10].iter().sum::<f32>() / 10.0;
    let last: f32 = losses[losses.len() - 10..].iter().sum::<f32>() / 10.0;
    assert!(first > 0.5, "starts near chance: {first}");
    assert!(
        last < 0.25,
        "training loss should fall below 0.25 within 150 steps: {first} -> {last}"
    );
    let acc = accuracy(&net);
    assert!(acc > 0.9, "hard-quantized accuracy {acc}");
    // Every quantized kernel stayed inside [-1, 1].
    for (name, p) in store.params() {
        if p.kind == ParamKind::QuantizedKernel {
            assert!(
                vec(p.var.as_tensor()).iter().all(|v| v.abs() <= 1.0),
                "{name}"
            );
        }
    }
}

#[test]
fn resumed_training_takes_a_bit_identical_next_step() {
    let dir = std::env::temp_dir().join(format!("aqe-candle-resume-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let run = |sgd: bool| {
        let algorithm = if sgd {
            Algorithm::Sgd(SgdConfig::default())
        } else {
            Algorithm::Adam(AdamConfig::default())
        };
        let alpha = AlphaHandle::new(0.6).unwrap();
        let store = ParamStore::new(5, &Device::Cpu);
        let net = Net::new(&store, &Alphas::shared(alpha.clone()), "aqe");
        let mut opt = Optimizer::new(&store, algorithm).unwrap();
        let step = |opt: &mut Optimizer, net: &Net, seed| {
            let (x, y) = bars(16, seed);
            let loss = Loss::SquaredHinge
                .compute(&net.forward(&x, true), &y)
                .unwrap();
            opt.backward_step(&loss).unwrap();
        };
        for s in 0..3 {
            step(&mut opt, &net, s);
        }
        store.save(&dir.join("model.safetensors")).unwrap();
        opt.set_learning_rate(0.003);
        opt.save(&dir.join("optim.safetensors")).unwrap();
        step(&mut opt, &net, 99);
        let uninterrupted = store.tensors();

        let store2 = ParamStore::new(77, &Device::Cpu); // different init, overwritten by the load
        let net2 = Net::new(&store2, &Alphas::shared(alpha.clone()), "aqe");
        let mut opt2 = Optimizer::new(&store2, algorithm).unwrap();
        store2.load(&dir.join("model.safetensors")).unwrap();
        opt2.load(&dir.join("optim.safetensors")).unwrap();
        assert_eq!(opt2.steps(), 3);
        assert_eq!(opt2.learning_rate(), 0.003);
        step(&mut opt2, &net2, 99);
        let resumed = store2.tensors();
        for (name, t) in &uninterrupted {
            assert_eq!(
                vec(t),
                vec(&resumed[name]),
                "{name} differs after resume (sgd: {sgd})"
            );
        }
    };
    run(false);
    run(true);

    // Loading state into the wrong optimizer or model fails with the file named.
    let store = ParamStore::new(5, &Device::Cpu);
    let _net = Net::new(&store, &Alphas::default(), "aqe");
    // The last run saved SGD state; an Adam optimizer refuses it.
    let mut adam = Optimizer::new(&store, Algorithm::Adam(AdamConfig::default())).unwrap();
    let err = adam.load(&dir.join("optim.safetensors")).unwrap_err();
    assert!(
        err.to_string().contains("optim.safetensors") && err.to_string().contains("sgd"),
        "{err}"
    );
    let other = ParamStore::new(5, &Device::Cpu);
    other
        .root()
        .get(3, "x", Init::Const(0.0), ParamKind::Kernel)
        .unwrap();
    let err = other.load(&dir.join("model.safetensors")).unwrap_err();
    assert!(
        err.to_string().contains("unexpected tensor") || err.to_string().contains("missing tensor"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
