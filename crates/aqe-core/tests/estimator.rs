//! Estimators: Theorem 1 (AQE at alpha = 1/2 is the STE), the alpha = 0 / 1 endpoints, backward
//! = derivative of the surrogate (closed form and finite differences), slices bit-identical to
//! elements, argument errors, and spec / serde round trips.

use aqe_core::quantizer::{Pow2Edges, TernaryDelta};
use aqe_core::{AqeBackward, AqeError, Estimator, HardQuantizer, Quantizer};
use proptest::prelude::*;

const GATED: Estimator = Estimator::Aqe(AqeBackward::Gated);
const SCALED: Estimator = Estimator::Aqe(AqeBackward::Scaled);
const BETAS: [f32; 5] = [0.5, 1.0, 5.0, 10.0, 20.0];

/// Every estimator, SwishSign at several betas.
fn estimators() -> Vec<Estimator> {
    let mut v = vec![
        GATED,
        SCALED,
        Estimator::Ste,
        Estimator::ApproxSign,
        Estimator::Identity,
    ];
    v.extend(BETAS.map(|beta| Estimator::SwishSign { beta }));
    v
}

/// Every quantizer, resolved (TWN on a vector with mean |x| = 1.25, so delta = 0.875).
fn quantizers() -> Vec<HardQuantizer> {
    let mut qs = vec![
        Quantizer::Sign,
        Quantizer::Ternary(TernaryDelta::default()),
        Quantizer::Ternary(TernaryDelta::Fixed(0.3)),
        Quantizer::Ternary(TernaryDelta::Twn),
        Quantizer::Pow2(Pow2Edges::MIDPOINTS),
        Quantizer::Pow2(Pow2Edges::new([0.1, 0.4, 0.7]).unwrap()),
    ];
    qs.extend((2..=8).map(|bits| Quantizer::Uniform { bits }));
    qs.iter()
        .map(|q| q.resolve(&[0.5, -1.0, 1.5, -2.0]))
        .collect()
}

/// Zeros, ones, the thresholds and levels of every quantizer, and both signs of each.
fn specials() -> Vec<f32> {
    let mut v = vec![
        0.0, 1.0, 0.5, 0.3, 0.875, 0.125, 0.375, 0.75, 0.1, 0.4, 0.7, 2.0, 1e30, 1e-30,
    ];
    for h in quantizers() {
        v.extend(h.levels());
    }
    let base = v.clone();
    v.extend(base.iter().map(|x| -x));
    v
}

/// `a` and `b` are the same float, or both NaN.
fn same(a: f32, b: f32) -> bool {
    a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan())
}

/// Asserts the AQE endpoints at one point, per element and through the slice API.
fn check_endpoints(h: &HardQuantizer, x: f32) {
    for est in [GATED, SCALED] {
        let hard = est.forward_one(h, 1.0, x);
        assert_eq!(
            hard.to_bits(),
            h.apply(x).to_bits(),
            "{est} alpha=1, {h:?}, x={x}"
        );
        let soft = est.forward_one(h, 0.0, x);
        if x == 0.0 {
            // -0.0 comes out as +0.0 (documented): 0 * h(x) + 1 * (-0.0) = +0.0.
            assert_eq!(
                soft.to_bits(),
                0.0f32.to_bits(),
                "{est} alpha=0, {h:?}, x={x}"
            );
        } else {
            assert_eq!(soft.to_bits(), x.to_bits(), "{est} alpha=0, {h:?}, x={x}");
        }
        let mut y = [f32::NAN];
        est.forward(h, 1.0, &[x], &mut y).unwrap();
        assert_eq!(y[0].to_bits(), hard.to_bits());
        est.forward(h, 0.0, &[x], &mut y).unwrap();
        assert_eq!(y[0].to_bits(), soft.to_bits());
    }
}

#[test]
fn aqe_endpoints_on_specials() {
    for h in quantizers() {
        for x in specials() {
            check_endpoints(&h, x);
        }
    }
}

#[test]
fn aqe_blends_in_between() {
    let h = Quantizer::Sign.resolve(&[]);
    assert_eq!(GATED.forward_one(&h, 0.75, 0.5), 0.875);
    assert_eq!(SCALED.forward_one(&h, 0.25, -2.0), -1.75);
}

#[test]
fn other_forwards_are_h_or_x() {
    for h in quantizers() {
        for x in specials() {
            for est in [
                Estimator::Ste,
                Estimator::ApproxSign,
                Estimator::SwishSign { beta: 5.0 },
            ] {
                assert_eq!(
                    est.forward_one(&h, 0.3, x).to_bits(),
                    h.apply(x).to_bits(),
                    "{est}"
                );
            }
            assert_eq!(
                Estimator::Identity.forward_one(&h, 0.3, x).to_bits(),
                x.to_bits()
            );
        }
    }
}

#[test]
fn theorem_1_on_specials() {
    for x in specials().into_iter().chain([f32::INFINITY, f32::NAN]) {
        let ste = Estimator::Ste.grad_scale(0.5, x);
        assert_eq!(GATED.grad_scale(0.5, x).to_bits(), ste.to_bits(), "x={x}");
        assert_eq!(SCALED.grad_scale(0.5, x).to_bits(), ste.to_bits(), "x={x}");
        assert_eq!(ste, if x.abs() <= 1.0 { 1.0 } else { 0.0 }, "x={x}");
    }
}

#[test]
fn gate_and_scale_values() {
    for est in [GATED, Estimator::Ste] {
        assert_eq!(
            [est.grad_scale(0.9, 1.0), est.grad_scale(0.9, -1.0)],
            [1.0, 1.0],
            "{est}"
        );
        assert_eq!(
            [est.grad_scale(0.9, 1.000_001), est.grad_scale(0.9, -1.5)],
            [0.0, 0.0],
            "{est}"
        );
    }
    // Scaled really scales: 2 * alpha inside the gate, 0 outside.
    assert_eq!(SCALED.grad_scale(0.8, 0.3), 1.6);
    assert_eq!(SCALED.grad_scale(0.0, 0.3), 0.0);
    assert_eq!(SCALED.grad_scale(1.0, -1.0), 2.0);
    assert_eq!(SCALED.grad_scale(1.0, 1.01), 0.0);
    // ApproxSign: 2 - 2|x|.
    let a = Estimator::ApproxSign;
    assert_eq!(
        [
            a.grad_scale(0.0, 0.0),
            a.grad_scale(0.0, 0.25),
            a.grad_scale(0.0, -0.5)
        ],
        [2.0, 1.5, 1.0]
    );
    assert_eq!(
        [a.grad_scale(0.0, 1.0), a.grad_scale(0.0, -3.0)],
        [0.0, 0.0]
    );
    assert_eq!(Estimator::Identity.grad_scale(0.2, 1e9), 1.0);
    // NaN x: zero gradient except identity.
    for est in estimators() {
        let want = if est == Estimator::Identity { 1.0 } else { 0.0 };
        assert_eq!(est.grad_scale(0.5, f32::NAN), want, "{est}");
    }
}

#[test]
fn swish_sign_closed_form() {
    for beta in BETAS {
        let est = Estimator::SwishSign { beta };
        assert_eq!(est.grad_scale(0.5, 0.0), beta, "peak at 0");
        for i in -300..=300 {
            let x = i as f32 / 100.0;
            let got = f64::from(est.grad_scale(0.5, x));
            // BNN+'s form: 2 beta s (1 - s) (2 + z (1 - 2 s)), s = sigmoid(z), in f64.
            let z = f64::from(beta) * f64::from(x);
            let s = 1.0 / (1.0 + (-z).exp());
            let want = 2.0 * f64::from(beta) * s * (1.0 - s) * (2.0 + z * (1.0 - 2.0 * s));
            // The tanh / cosh form of the same derivative.
            let want2 = f64::from(beta) * (2.0 - z * (z / 2.0).tanh()) / (1.0 + z.cosh());
            assert!(
                (want - want2).abs() < 1e-9 * f64::from(beta),
                "forms disagree at z={z}"
            );
            let tol = 1e-6 * f64::from(beta);
            assert!(
                (got - want).abs() <= tol,
                "beta={beta} x={x}: {got} vs {want}"
            );
            // Even in x.
            assert_eq!(est.grad_scale(0.5, -x), est.grad_scale(0.5, x));
        }
    }
}

#[test]
fn swish_sign_is_finite_for_extreme_inputs() {
    for beta in [1e-3, 0.5, 5.0, 1e3, 1e30] {
        let est = Estimator::SwishSign { beta };
        for x in [
            0.0,
            1e-30,
            1e-3,
            1.0,
            10.0,
            1e10,
            1e38,
            f32::MAX,
            f32::INFINITY,
        ] {
            for x in [x, -x] {
                let g = est.grad_scale(0.5, x);
                assert!(g.is_finite(), "beta={beta} x={x}: {g}");
                assert!(g.abs() <= beta, "beta={beta} x={x}: {g}");
                let s = est.surrogate(0.5, x);
                assert!(
                    s.is_finite() && s.abs() <= 1.25,
                    "beta={beta} x={x}: SS = {s}"
                );
            }
        }
        assert_eq!(est.grad_scale(0.5, f32::INFINITY), 0.0);
        assert_eq!(est.surrogate(0.5, f32::INFINITY), 1.0);
        assert_eq!(est.surrogate(0.5, f32::NEG_INFINITY), -1.0);
    }
}

#[test]
fn surrogates_match_their_definitions() {
    let a = Estimator::ApproxSign;
    assert_eq!(
        [
            a.surrogate(0.0, -2.0),
            a.surrogate(0.0, -1.0),
            a.surrogate(0.0, 1.0),
            a.surrogate(0.0, 3.0)
        ],
        [-1.0, -1.0, 1.0, 1.0]
    );
    assert_eq!(
        [a.surrogate(0.0, -0.5), a.surrogate(0.0, 0.5)],
        [-0.75, 0.75]
    );
    assert_eq!(
        [
            GATED.surrogate(0.3, 2.0),
            Estimator::Ste.surrogate(0.3, -0.25)
        ],
        [1.0, -0.25]
    );
    assert_eq!(SCALED.surrogate(0.75, -3.0), -1.5);
    assert_eq!(Estimator::Identity.surrogate(0.0, 7.0), 7.0);
    let ss = Estimator::SwishSign { beta: 5.0 };
    assert_eq!(ss.surrogate(0.0, 0.0), 0.0);
    // SS_beta overshoots 1 a little before settling (BNN+ fig. 2) and tends to sign(x).
    assert!(ss.surrogate(0.0, 0.5) > 1.0);
    assert!((ss.surrogate(0.0, 5.0) - 1.0).abs() < 1e-6);
}

/// Central difference of `est.surrogate` at `x` with step `step`, in f64 over the actual f32 step.
fn central_difference(est: &Estimator, alpha: f32, x: f32, step: f32) -> f64 {
    let (xp, xm) = (x + step, x - step);
    (f64::from(est.surrogate(alpha, xp)) - f64::from(est.surrogate(alpha, xm)))
        / (f64::from(xp) - f64::from(xm))
}

proptest! {
    #[test]
    fn aqe_endpoints(x in -3.0f32..3.0) {
        for h in quantizers() {
            check_endpoints(&h, x);
        }
    }

    /// Theorem 1, and the gated rule equals the STE at every alpha.
    #[test]
    fn theorem_1(x in -3.0f32..3.0, alpha in 0.0f32..=1.0, dy in prop::collection::vec(-10.0f32..10.0, 1..40)) {
        let ste = Estimator::Ste.grad_scale(alpha, x);
        prop_assert_eq!(GATED.grad_scale(0.5, x).to_bits(), ste.to_bits());
        prop_assert_eq!(SCALED.grad_scale(0.5, x).to_bits(), ste.to_bits());
        prop_assert_eq!(GATED.grad_scale(alpha, x).to_bits(), ste.to_bits());

        let xs: Vec<f32> = dy.iter().map(|d| x + d / 4.0).collect();
        let mut want = vec![0.0; xs.len()];
        Estimator::Ste.backward(alpha, &xs, &dy, &mut want).unwrap();
        for (est, a) in [(GATED, 0.5), (SCALED, 0.5), (GATED, alpha)] {
            let mut got = vec![f32::NAN; xs.len()];
            est.backward(a, &xs, &dy, &mut got).unwrap();
            for i in 0..xs.len() {
                prop_assert_eq!(got[i].to_bits(), want[i].to_bits(), "{} alpha={}", est, a);
            }
        }
    }

    /// The backward is the derivative of the surrogate, away from the kinks at 0 and +-1.
    #[test]
    fn backward_is_derivative_of_surrogate(x in -3.0f32..3.0, alpha in 0.0f32..=1.0) {
        for est in estimators() {
            let (step, tol) = match est {
                // Constant step in z = beta x keeps the truncation error small for sharp betas.
                Estimator::SwishSign { beta } => (2e-3 / beta, 1e-3 * beta.max(1.0)),
                _ => (1e-3, 1e-3),
            };
            let smooth = matches!(est, Estimator::SwishSign { .. } | Estimator::Identity);
            let near_kink = [0.0f32, 1.0, -1.0].iter().any(|k| (x - k).abs() <= 2.0 * step);
            if near_kink && !smooth {
                continue;
            }
            let fd = central_difference(&est, alpha, x, step);
            let g = f64::from(est.grad_scale(alpha, x));
            prop_assert!((fd - g).abs() <= f64::from(tol), "{}: x={} alpha={}: backward {} vs fd {}", est, x, alpha, g, fd);
        }
    }

    /// Slice forward and backward are the per-element functions, bit for bit.
    #[test]
    fn slices_match_elements(
        x in prop::collection::vec(prop_oneof![4 => -3.0f32..3.0, 1 => any::<f32>()], 0..70),
        alpha in prop_oneof![0.0f32..=1.0, Just(0.0), Just(0.5), Just(1.0)],
        seed in any::<u32>(),
    ) {
        let dy: Vec<f32> = x.iter().enumerate().map(|(i, _)| ((seed as usize + i * 7919) % 2001) as f32 / 100.0 - 10.0).collect();
        for est in estimators() {
            for h in quantizers() {
                if est.check_quantizer(&h.to_quantizer()).is_err() {
                    continue;
                }
                let mut y = vec![f32::NAN; x.len()];
                est.forward(&h, alpha, &x, &mut y).unwrap();
                for i in 0..x.len() {
                    let want = est.forward_one(&h, alpha, x[i]);
                    prop_assert!(same(y[i], want), "{} {:?} x={}: {} vs {}", est, h, x[i], y[i], want);
                }
            }
            let mut dx = vec![f32::NAN; x.len()];
            est.backward(alpha, &x, &dy, &mut dx).unwrap();
            for i in 0..x.len() {
                let want = dy[i] * est.grad_scale(alpha, x[i]);
                prop_assert!(same(dx[i], want), "{} x={}: {} vs {}", est, x[i], dx[i], want);
            }
        }
    }

    #[test]
    fn specs_round_trip(beta in 1e-3f32..100.0) {
        let est = Estimator::SwishSign { beta };
        prop_assert_eq!(est.to_string().parse::<Estimator>().unwrap(), est);
    }
}

#[test]
fn alpha_is_validated_by_every_estimator() {
    let h = Quantizer::Sign.resolve(&[]);
    let x = [0.5f32, -0.5];
    for est in estimators() {
        for alpha in [-0.1, 1.1, f32::NAN, f32::INFINITY, -f32::INFINITY, -1e-9] {
            let mut y = [0.0; 2];
            match est.forward(&h, alpha, &x, &mut y) {
                Err(AqeError::InvalidParameter { name: "alpha", .. }) => {}
                other => panic!("{est} forward alpha={alpha}: {other:?}"),
            }
            match est.backward(alpha, &x, &x, &mut y) {
                Err(AqeError::InvalidParameter { name: "alpha", .. }) => {}
                other => panic!("{est} backward alpha={alpha}: {other:?}"),
            }
        }
        let mut y = [0.0; 2];
        assert!(est.forward(&h, 0.0, &x, &mut y).is_ok());
        assert!(est.backward(1.0, &x, &x, &mut y).is_ok());
    }
}

#[test]
fn lengths_are_checked() {
    let h = Quantizer::Sign.resolve(&[]);
    let x = [0.5f32, -0.5, 2.0];
    for est in estimators() {
        match est.forward(&h, 0.5, &x, &mut [0.0; 2]) {
            Err(AqeError::LengthMismatch {
                op,
                what: "y",
                expected: 3,
                got: 2,
            }) => {
                assert!(
                    op.starts_with(est.name()) && op.ends_with("forward"),
                    "{op}"
                );
            }
            other => panic!("{est}: {other:?}"),
        }
        match est.backward(0.5, &x, &[1.0; 4], &mut [0.0; 3]) {
            Err(AqeError::LengthMismatch {
                op,
                what: "dy",
                expected: 3,
                got: 4,
            }) => {
                assert!(
                    op.starts_with(est.name()) && op.ends_with("backward"),
                    "{op}"
                );
            }
            other => panic!("{est}: {other:?}"),
        }
        match est.backward(0.5, &x, &[1.0; 3], &mut [0.0; 1]) {
            Err(AqeError::LengthMismatch {
                what: "dx",
                expected: 3,
                got: 1,
                ..
            }) => {}
            other => panic!("{est}: {other:?}"),
        }
    }
}

#[test]
fn sign_only_estimators_reject_other_quantizers() {
    let ternary = Quantizer::Ternary(TernaryDelta::default());
    match Estimator::ApproxSign.check_quantizer(&ternary) {
        Err(AqeError::Incompatible {
            estimator,
            quantizer,
            expected,
        }) => {
            assert_eq!(
                (estimator.as_str(), quantizer.as_str(), expected),
                ("approx_sign", "ternary", "sign")
            );
        }
        other => panic!("{other:?}"),
    }
    for q in [
        ternary,
        Quantizer::Pow2(Pow2Edges::MIDPOINTS),
        Quantizer::Uniform { bits: 2 },
    ] {
        for est in [Estimator::ApproxSign, Estimator::SwishSign { beta: 5.0 }] {
            assert!(
                matches!(est.check_quantizer(&q), Err(AqeError::Incompatible { .. })),
                "{est} {q}"
            );
            let mut y = [0.0];
            assert!(
                matches!(
                    est.forward(&q.resolve(&[]), 0.5, &[0.2], &mut y),
                    Err(AqeError::Incompatible { .. })
                ),
                "{est} {q}"
            );
        }
        for est in [GATED, SCALED, Estimator::Ste, Estimator::Identity] {
            assert_eq!(est.check_quantizer(&q), Ok(()), "{est} {q}");
        }
    }
    for est in estimators() {
        assert_eq!(est.check_quantizer(&Quantizer::Sign), Ok(()), "{est}");
    }
}

#[test]
fn names_and_alpha_use() {
    let names: Vec<&str> = estimators().iter().map(Estimator::name).collect();
    assert_eq!(
        &names[..5],
        ["aqe", "aqe", "ste", "approx_sign", "identity"]
    );
    assert_eq!(Estimator::SwishSign { beta: 1.0 }.name(), "swish_sign");
    for est in estimators() {
        assert_eq!(est.uses_alpha(), matches!(est, Estimator::Aqe(_)), "{est}");
    }
    assert_eq!(Estimator::default(), GATED);
    assert_eq!(AqeBackward::default(), AqeBackward::Gated);
}

#[test]
fn specs_parse_and_print_back() {
    let cases = [
        ("aqe", GATED, "aqe"),
        ("aqe:gated", GATED, "aqe"),
        ("AQE:Scaled", SCALED, "aqe:scaled"),
        ("aqe:scaled", SCALED, "aqe:scaled"),
        ("ste", Estimator::Ste, "ste"),
        ("approx_sign", Estimator::ApproxSign, "approx_sign"),
        ("approx-sign", Estimator::ApproxSign, "approx_sign"),
        (
            "swish_sign",
            Estimator::SwishSign { beta: 5.0 },
            "swish_sign",
        ),
        (
            "swish_sign:10",
            Estimator::SwishSign { beta: 10.0 },
            "swish_sign:10",
        ),
        (
            "swish_sign:2.5",
            Estimator::SwishSign { beta: 2.5 },
            "swish_sign:2.5",
        ),
        ("identity", Estimator::Identity, "identity"),
    ];
    for (spec, want, display) in cases {
        let est: Estimator = spec.parse().unwrap_or_else(|e| panic!("{spec}: {e}"));
        assert_eq!(est, want, "{spec}");
        assert_eq!(est.to_string(), display, "{spec}");
        assert_eq!(display.parse::<Estimator>().unwrap(), est, "{spec}");
    }
    for est in estimators() {
        assert_eq!(est.to_string().parse::<Estimator>().unwrap(), est);
    }
}

#[test]
fn bad_specs_give_the_right_errors() {
    let err = "bnn".parse::<Estimator>().unwrap_err();
    match &err {
        AqeError::UnknownName {
            kind: "estimator",
            name,
            valid,
        } => {
            assert_eq!(name, "bnn");
            assert_eq!(*valid, Estimator::NAMES);
        }
        other => panic!("expected UnknownName, got {other:?}"),
    }
    let msg = err.to_string();
    for n in ["aqe", "ste", "approx_sign", "swish_sign", "identity"] {
        assert!(msg.contains(n), "{msg} lacks {n}");
    }
    for spec in [
        "aqe:foo",
        "aqe:scaled:1",
        "ste:1",
        "approx_sign:2",
        "identity:0",
        "swish_sign:x",
        "swish_sign:inf",
    ] {
        assert!(
            matches!(
                spec.parse::<Estimator>(),
                Err(AqeError::BadSpec {
                    kind: "estimator",
                    ..
                })
            ),
            "{spec}"
        );
    }
    for spec in ["swish_sign:0", "swish_sign:-1"] {
        assert!(
            matches!(
                spec.parse::<Estimator>(),
                Err(AqeError::InvalidParameter { name: "beta", .. })
            ),
            "{spec}"
        );
    }
    assert!(matches!(
        Estimator::swish_sign(0.0),
        Err(AqeError::InvalidParameter { name: "beta", .. })
    ));
    assert!(matches!(
        Estimator::SwishSign { beta: f32::NAN }.validate(),
        Err(AqeError::InvalidParameter { .. })
    ));
    assert_eq!(
        Estimator::swish_sign(3.0),
        Ok(Estimator::SwishSign { beta: 3.0 })
    );
}

#[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
struct LayerConfig {
    quantizer: Quantizer,
    estimator: Estimator,
}

#[test]
fn serde_round_trips_through_toml() {
    let cases = [
        (
            Quantizer::Ternary(TernaryDelta::Fixed(0.3)),
            SCALED,
            "ternary:0.3",
            "aqe:scaled",
        ),
        (
            Quantizer::Ternary(TernaryDelta::Twn),
            Estimator::Ste,
            "ternary:twn",
            "ste",
        ),
        (
            Quantizer::Pow2(Pow2Edges::new([0.1, 0.4, 0.7]).unwrap()),
            GATED,
            "pow2:0.1,0.4,0.7",
            "aqe",
        ),
        (
            Quantizer::Sign,
            Estimator::SwishSign { beta: 10.0 },
            "sign",
            "swish_sign:10",
        ),
        (
            Quantizer::Uniform { bits: 4 },
            Estimator::Identity,
            "uniform:4",
            "identity",
        ),
    ];
    for (quantizer, estimator, qs, es) in cases {
        let cfg = LayerConfig {
            quantizer,
            estimator,
        };
        let text = toml::to_string(&cfg).unwrap();
        assert!(text.contains(&format!("quantizer = \"{qs}\"")), "{text}");
        assert!(text.contains(&format!("estimator = \"{es}\"")), "{text}");
        assert_eq!(toml::from_str::<LayerConfig>(&text).unwrap(), cfg, "{text}");
    }
    let err =
        toml::from_str::<LayerConfig>("quantizer = \"binary\"\nestimator = \"aqe\"\n").unwrap_err();
    assert!(
        err.to_string().contains("valid names are: sign, ternary"),
        "{err}"
    );
    let err =
        toml::from_str::<LayerConfig>("quantizer = \"sign\"\nestimator = \"swish_sign:-2\"\n")
            .unwrap_err();
    assert!(err.to_string().contains("beta"), "{err}");
}
