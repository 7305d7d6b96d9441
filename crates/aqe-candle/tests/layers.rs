//! Quantized layers: alpha = 1 is the hard-quantized computation, alpha = 1/2 AQE has STE's
//! gradients, float layers match finite differences, errors name the layer.

use aqe_candle::quant::hard_quantize;
use aqe_candle::{
    AlphaHandle, Alphas, ParamStore, QuantConfig, QuantConv2dConfig, QuantLinearConfig, SeededRng,
    quant_conv2d, quant_linear,
};
use aqe_core::{Estimator, Quantizer};
use candle_core::{Device, ModuleT, Tensor, Var};

fn random(shape: &[usize], scale: f32, seed: u64) -> Tensor {
    let mut rng = SeededRng::new(seed);
    let n = shape.iter().product();
    Tensor::from_vec(
        (0..n)
            .map(|_| rng.uniform(-scale, scale))
            .collect::<Vec<f32>>(),
        shape,
        &Device::Cpu,
    )
    .unwrap()
}

fn vec(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1().unwrap()
}

fn q(s: &str) -> Option<Quantizer> {
    Some(s.parse().unwrap())
}

fn alphas(a: f32) -> Alphas {
    Alphas::shared(AlphaHandle::new(a).unwrap())
}

#[test]
fn conv_at_alpha_one_is_exactly_the_hard_quantized_conv() {
    for (act, wq) in [
        ("sign", "sign"),
        ("ternary", "pow2"),
        ("pow2", "ternary:twn"),
    ] {
        let store = ParamStore::new(3, &Device::Cpu);
        let quant = QuantConfig::minw(q(act), q(wq), "aqe".parse().unwrap()).unwrap();
        let cfg = QuantConv2dConfig {
            padding: 1,
            stride: 1,
            quant,
            ..Default::default()
        };
        let layer = quant_conv2d(5, 7, 3, cfg, &alphas(1.0), store.root().pp("c")).unwrap();
        let x = random(&[2, 6, 5, 5], 1.3, 4);
        let ours = layer.forward_t(&x, true).unwrap();
        // Evaluation mode uses alpha = 1 whatever the handle says.
        let eval = quant_conv2d(
            5,
            7,
            3,
            cfg,
            &alphas(0.5),
            ParamStore::new(3, &Device::Cpu).root().pp("c"),
        )
        .unwrap()
        .forward_t(&x, false)
        .unwrap();
        // The same computation spelled out: quantize both operands, then a float conv.
        let xq = hard_quantize(&x, &act.parse().unwrap()).unwrap();
        let wq_t = hard_quantize(layer.weight(), &wq.parse().unwrap()).unwrap();
        let float = QuantConv2dConfig {
            padding: 1,
            stride: 1,
            ..Default::default()
        };
        let plain = aqe_candle::QuantConv2d::new(wq_t, None, float, alphas(1.0))
            .forward_t(&xq, true)
            .unwrap();
        assert_eq!(vec(&ours), vec(&plain), "{act}/{wq}");
        assert_eq!(vec(&eval), vec(&plain), "{act}/{wq} eval");
    }
}

#[test]
fn aqe_at_half_has_ste_gradients_in_layers() {
    // Kernel-only quantization with a loss linear in the output: dL/dw_hat does not depend on the
    // forward value of w_hat, so the latent gradient is the estimator's gate times the same
    // upstream gradient for AQE(scaled, alpha 1/2) and STE (Theorem 1).
    let grads = |estimator: &str, input_side: bool| {
        let store = ParamStore::new(5, &Device::Cpu);
        let e: Estimator = estimator.parse().unwrap();
        let quant = if input_side {
            QuantConfig::minw(q("sign"), None, e).unwrap()
        } else {
            QuantConfig::minw(None, q("ternary"), e).unwrap()
        };
        let layer = quant_linear(
            6,
            4,
            QuantLinearConfig { bias: false, quant },
            &alphas(0.5),
            store.root().pp("fc"),
        )
        .unwrap();
        let x = Var::from_tensor(&random(&[3, 6], 1.5, 6)).unwrap();
        let r = random(&[3, 4], 1.0, 7);
        let g = (layer.forward_t(x.as_tensor(), true).unwrap() * r)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let w = store.get("fc.weight").unwrap().var;
        if input_side {
            vec(g.get(x.as_tensor()).unwrap())
        } else {
            vec(g.get(w.as_tensor()).unwrap())
        }
    };
    for side in [false, true] {
        let aqe = grads("aqe:scaled", side);
        assert_eq!(aqe, grads("ste", side), "input side: {side}");
        assert!(aqe.iter().any(|g| *g != 0.0));
        // And the gated rule at 1/2 as well.
        assert_eq!(grads("aqe", side), aqe);
    }
}

fn fd_check(f: impl Fn(&Tensor) -> Tensor, x0: &Tensor, what: &str) {
    let v = Var::from_tensor(x0).unwrap();
    let g = f(v.as_tensor()).sum_all().unwrap().backward().unwrap();
    let analytic = vec(g.get(v.as_tensor()).unwrap());
    let base = vec(x0);
    let h = 1e-2f32;
    let eval = |xs: &[f32]| -> f64 {
        let t = Tensor::from_vec(xs.to_vec(), x0.shape(), &Device::Cpu).unwrap();
        f(&t)
            .sum_all()
            .unwrap()
            .to_dtype(candle_core::DType::F64)
            .unwrap()
            .to_scalar::<f64>()
            .unwrap()
    };
    for i in 0..base.len() {
        let (mut p, mut m) = (base.clone(), base.clone());
        p[i] += h;
        m[i] -= h;
        let fd = (eval(&p) - eval(&m)) / (2.0 * f64::from(h));
        assert!(
            (fd - f64::from(analytic[i])).abs() < 1e-2 * (1.0 + fd.abs()),
            "{what}[{i}]: fd {fd} vs {}",
            analytic[i]
        );
    }
}

#[test]
fn float_layers_match_finite_differences() {
    let store = ParamStore::new(8, &Device::Cpu);
    let conv = quant_conv2d(
        3,
        4,
        3,
        QuantConv2dConfig {
            stride: 2,
            padding: 1,
            bias: true,
            ..Default::default()
        },
        &alphas(0.5),
        store.root().pp("c"),
    )
    .unwrap();
    let lin = quant_linear(
        5,
        3,
        QuantLinearConfig {
            bias: true,
            ..Default::default()
        },
        &alphas(0.5),
        store.root().pp("l"),
    )
    .unwrap();
    let r = random(&[2, 3, 3, 4], 1.0, 9);
    fd_check(
        |x| (conv.forward_t(x, true).unwrap() * &r).unwrap(),
        &random(&[2, 5, 6, 3], 1.0, 10),
        "conv dx",
    );
    let w = store.get("c.weight").unwrap().var;
    let x = random(&[2, 5, 6, 3], 1.0, 10);
    fd_check(
        |w| {
            let l = aqe_candle::QuantConv2d::new(
                w.clone(),
                None,
                QuantConv2dConfig {
                    stride: 2,
                    padding: 1,
                    ..Default::default()
                },
                alphas(0.5),
            );
            (l.forward_t(&x, true).unwrap() * &r).unwrap()
        },
        w.as_tensor(),
        "conv dw",
    );
    let r2 = random(&[4, 3], 1.0, 11);
    fd_check(
        |x| (lin.forward_t(x, true).unwrap() * &r2).unwrap(),
        &random(&[4, 5], 1.0, 12),
        "linear dx",
    );
}

#[test]
fn quantized_layers_clip_kind_and_shape_errors_name_the_layer() {
    let store = ParamStore::new(1, &Device::Cpu);
    let quant = QuantConfig::minw(q("sign"), q("sign"), "aqe".parse().unwrap()).unwrap();
    let conv = quant_conv2d(
        16,
        8,
        3,
        QuantConv2dConfig {
            quant,
            ..Default::default()
        },
        &alphas(0.5),
        store.root().pp("stage2.conv1"),
    )
    .unwrap();
    assert_eq!(
        store.get("stage2.conv1.weight").unwrap().kind,
        aqe_candle::ParamKind::QuantizedKernel
    );
    let err = conv
        .forward_t(
            &Tensor::zeros((1, 8, 8, 3), candle_core::DType::F32, &Device::Cpu).unwrap(),
            true,
        )
        .unwrap_err();
    assert!(
        err.to_string().contains("stage2.conv1") && err.to_string().contains("16"),
        "{err}"
    );
    let lin = quant_linear(
        10,
        2,
        QuantLinearConfig::default(),
        &alphas(0.5),
        store.root().pp("fc"),
    )
    .unwrap();
    let err = lin
        .forward_t(
            &Tensor::zeros((1, 9), candle_core::DType::F32, &Device::Cpu).unwrap(),
            true,
        )
        .unwrap_err();
    assert!(err.to_string().contains("fc"), "{err}");
    assert_eq!(
        store.get("fc.weight").unwrap().kind,
        aqe_candle::ParamKind::Kernel
    );
}
