//! Hard quantizers: outputs are levels, the band rules and tie rules hold, default thresholds give
//! the nearest level, codes and integer levels round-trip exactly, slices match elements, specs
//! parse and print back, and TWN picks `0.7 * mean|x|`.

use aqe_core::quantizer::{Pow2Edges, TernaryDelta};
use aqe_core::{AqeError, HardQuantizer, Quantizer};
use proptest::prelude::*;

/// The next float above a positive finite `x`.
fn up(x: f32) -> f32 {
    f32::from_bits(x.to_bits() + 1)
}

/// Data for TWN: mean |x| = 1.25, so delta = 0.875.
const TWN_DATA: [f32; 4] = [0.5, -1.0, 1.5, -2.0];

/// One of every quantizer, with non-default parameters too, resolved.
fn all() -> Vec<(Quantizer, HardQuantizer)> {
    let mut qs = vec![
        Quantizer::Sign,
        Quantizer::Ternary(TernaryDelta::default()),
        Quantizer::Ternary(TernaryDelta::Fixed(0.3)),
        Quantizer::Ternary(TernaryDelta::Fixed(0.0)),
        Quantizer::Ternary(TernaryDelta::Twn),
        Quantizer::Pow2(Pow2Edges::MIDPOINTS),
        Quantizer::Pow2(Pow2Edges::new([0.1, 0.4, 0.7]).unwrap()),
    ];
    qs.extend((2..=8).map(|bits| Quantizer::Uniform { bits }));
    qs.into_iter().map(|q| (q, q.resolve(&TWN_DATA))).collect()
}

/// The quantizers whose thresholds are the midpoints between levels.
fn nearest_level_quantizers() -> Vec<HardQuantizer> {
    let mut qs = vec![
        Quantizer::Sign,
        Quantizer::Ternary(TernaryDelta::default()),
        Quantizer::Pow2(Pow2Edges::MIDPOINTS),
    ];
    qs.extend((2..=8).map(|bits| Quantizer::Uniform { bits }));
    qs.iter().map(|q| q.resolve(&[])).collect()
}

/// Interesting inputs: zeros, ones, thresholds and levels of every quantizer, their neighbours,
/// infinities.
fn specials() -> Vec<f32> {
    let mut v = vec![
        0.0,
        -0.0,
        1.0,
        -1.0,
        0.5,
        0.3,
        0.875,
        2.0,
        1e30,
        f32::INFINITY,
        f32::MIN_POSITIVE,
    ];
    v.extend([0.125, 0.375, 0.75, 0.1, 0.4, 0.7]);
    for (_, h) in all() {
        v.extend(h.levels());
    }
    let base = v.clone();
    for x in base {
        // The neighbouring floats of a positive finite x.
        if x > 0.0 && x.is_finite() {
            v.extend([
                f32::from_bits(x.to_bits() + 1),
                f32::from_bits(x.to_bits() - 1),
            ]);
        }
    }
    let base = v.clone();
    v.extend(base.iter().map(|x| -x));
    v
}

/// `h(x)` written straight from the rules in the docs, with branches, for the paper quantizers.
fn reference(q: &Quantizer, x: f32) -> f32 {
    let s = if x < 0.0 { -1.0 } else { 1.0 };
    let a = x.abs();
    match *q {
        Quantizer::Sign => s,
        Quantizer::Ternary(TernaryDelta::Fixed(d)) => {
            if a <= d {
                0.0
            } else {
                s
            }
        }
        Quantizer::Ternary(TernaryDelta::Twn) => {
            reference(&Quantizer::Ternary(TernaryDelta::Fixed(0.875)), x)
        }
        Quantizer::Pow2(e) => {
            let [e0, e1, e2] = e.get();
            if a <= e0 {
                0.0
            } else if a <= e1 {
                s * 0.25
            } else if a <= e2 {
                s * 0.5
            } else {
                s
            }
        }
        Quantizer::Uniform { .. } => unreachable!("uniform has no band reference"),
    }
}

/// Asserts `h(x)` is a level, is not `-0.0`, and agrees with `code` and `level`.
fn check_output(h: &HardQuantizer, x: f32) {
    let y = h.apply(x);
    let levels = h.levels();
    assert!(
        levels.contains(&y),
        "{h:?}: h({x}) = {y} is not a level of {levels:?}"
    );
    assert_ne!(y.to_bits(), (-0.0f32).to_bits(), "{h:?}: h({x}) is -0.0");
    let c = h.code(x);
    assert_eq!(
        h.level(c).map(f32::to_bits),
        Some(y.to_bits()),
        "{h:?}: code({x}) = {c}"
    );
}

#[test]
fn every_output_is_a_level_on_specials() {
    for (_, h) in all() {
        for x in specials() {
            check_output(&h, x);
        }
    }
}

#[test]
fn paper_quantizers_follow_their_band_rules_on_specials() {
    for (q, h) in all() {
        if matches!(q, Quantizer::Uniform { .. }) {
            continue;
        }
        for x in specials() {
            assert_eq!(
                h.apply(x).to_bits(),
                reference(&q, x).to_bits(),
                "{q}: h({x})"
            );
        }
    }
}

#[test]
fn tie_rules() {
    let sign = Quantizer::Sign.resolve(&[]);
    assert_eq!(
        [sign.apply(0.0), sign.apply(-0.0), sign.apply(-1e-30)],
        [1.0, 1.0, -1.0]
    );

    let ternary = Quantizer::Ternary(TernaryDelta::default()).resolve(&[]);
    assert_eq!([ternary.apply(0.5), ternary.apply(-0.5)], [0.0, 0.0]);
    assert_eq!(
        [ternary.apply(up(0.5)), ternary.apply(-up(0.5))],
        [1.0, -1.0]
    );
    assert_eq!(ternary.apply(-0.0), 0.0);

    let pow2 = Quantizer::Pow2(Pow2Edges::MIDPOINTS).resolve(&[]);
    for (edge, inside, outside) in [(0.125f32, 0.0, 0.25), (0.375, 0.25, 0.5), (0.75, 0.5, 1.0)] {
        assert_eq!(pow2.apply(edge), inside, "pow2({edge})");
        assert_eq!(pow2.apply(-edge), -inside, "pow2(-{edge})");
        assert_eq!(pow2.apply(up(edge)), outside, "pow2({edge}+)");
        assert_eq!(pow2.apply(-up(edge)), -outside, "pow2(-{edge}+)");
    }

    // Uniform: 0 is the midpoint of the two innermost levels and goes to the larger.
    for bits in 2..=8u8 {
        let h = Quantizer::Uniform { bits }.resolve(&[]);
        let l = f32::from((1u16 << bits) - 1);
        assert_eq!(h.apply(0.0), 1.0 / l, "uniform:{bits}");
        assert_eq!(h.apply(-0.0), 1.0 / l, "uniform:{bits}");
        assert_eq!(h.apply(-1e-6), -1.0 / l, "uniform:{bits}");
    }
}

#[test]
fn nan_maps_to_h_of_plus_zero_and_infinities_saturate() {
    for (q, h) in all() {
        assert_eq!(h.apply(f32::NAN).to_bits(), h.apply(0.0).to_bits(), "{q}");
        assert_eq!(h.apply(-f32::NAN).to_bits(), h.apply(0.0).to_bits(), "{q}");
        assert_eq!(h.code(f32::NAN), h.code(0.0), "{q}");
        assert_eq!(h.apply(f32::INFINITY), 1.0, "{q}");
        assert_eq!(h.apply(f32::NEG_INFINITY), -1.0, "{q}");
        assert_eq!(h.apply(1e38), 1.0, "{q}");
    }
    // Concretely, per the docs.
    assert_eq!(Quantizer::Sign.resolve(&[]).apply(f32::NAN), 1.0);
    assert_eq!(
        Quantizer::Ternary(TernaryDelta::default())
            .resolve(&[])
            .apply(f32::NAN),
        0.0
    );
    assert_eq!(
        Quantizer::Pow2(Pow2Edges::MIDPOINTS)
            .resolve(&[])
            .apply(f32::NAN),
        0.0
    );
    assert_eq!(
        Quantizer::Uniform { bits: 2 }.resolve(&[]).apply(f32::NAN),
        1.0 / 3.0
    );
}

#[test]
fn levels_ints_and_counts() {
    let expect: [(Quantizer, u8, &[i16], f32); 4] = [
        (Quantizer::Sign, 1, &[-1, 1], 1.0),
        (
            Quantizer::Ternary(TernaryDelta::default()),
            2,
            &[-1, 0, 1],
            1.0,
        ),
        (
            Quantizer::Pow2(Pow2Edges::MIDPOINTS),
            3,
            &[-4, -2, -1, 0, 1, 2, 4],
            0.25,
        ),
        (
            Quantizer::Uniform { bits: 2 },
            2,
            &[-3, -1, 1, 3],
            1.0 / 3.0,
        ),
    ];
    for (q, bits, ints, scale) in expect {
        let h = q.resolve(&[]);
        assert_eq!(q.bits(), bits, "{q}");
        assert_eq!(h.bits(), bits, "{q}");
        assert_eq!(h.int_scale(), scale, "{q}");
        let got: Vec<i16> = (0..h.num_levels() as u8)
            .map(|c| h.int_level(c).unwrap())
            .collect();
        assert_eq!(got, ints, "{q}");
    }
    assert_eq!(
        Quantizer::Pow2(Pow2Edges::MIDPOINTS).levels(),
        [-1.0, -0.5, -0.25, 0.0, 0.25, 0.5, 1.0]
    );
    assert_eq!(
        Quantizer::Ternary(TernaryDelta::Twn).levels(),
        [-1.0, 0.0, 1.0]
    );

    for (q, h) in all() {
        let levels = h.levels();
        let n = match q {
            Quantizer::Sign => 2,
            Quantizer::Ternary(_) => 3,
            Quantizer::Pow2(_) => 7,
            Quantizer::Uniform { bits } => 1usize << bits,
        };
        assert_eq!(levels.len(), n, "{q}");
        assert_eq!(h.num_levels(), n, "{q}");
        assert_eq!(q.num_levels(), n, "{q}");
        assert_eq!(q.levels(), levels, "{q}");
        assert!(
            levels.windows(2).all(|w| w[0] < w[1]),
            "{q}: levels not ascending: {levels:?}"
        );
        assert_eq!((levels[0], levels[n - 1]), (-1.0, 1.0), "{q}");
        for c in 0..n as u8 {
            let int = h.int_level(c).unwrap();
            let level = h.level(c).unwrap();
            assert_eq!(
                level.to_bits(),
                (f32::from(int) * h.int_scale()).to_bits(),
                "{q}: code {c}"
            );
            if matches!(q, Quantizer::Uniform { .. }) {
                assert_eq!(int.rem_euclid(2), 1, "{q}: uniform ints are odd");
            }
        }
        let past = u8::try_from(n).unwrap_or(u8::MAX);
        if n <= 255 {
            assert_eq!(h.level(past), None, "{q}");
            assert_eq!(h.int_level(past), None, "{q}");
        }
    }
}

#[test]
fn uniform_levels_are_evenly_spaced_and_exact() {
    for bits in 2..=8u8 {
        let h = Quantizer::Uniform { bits }.resolve(&[]);
        let l = f64::from((1u32 << bits) - 1);
        for (i, level) in h.levels().iter().enumerate() {
            let exact = (2.0 * i as f64 - l) / l;
            assert!(
                (f64::from(*level) - exact).abs() <= 1e-7,
                "uniform:{bits} level {i} = {level}, want {exact}"
            );
        }
    }
}

#[test]
fn codes_round_trip_through_levels() {
    for (q, h) in all() {
        for c in 0..h.num_levels() as u8 {
            let level = h.level(c).unwrap();
            assert_eq!(h.code(level), c, "{q}: code(level({c}) = {level})");
            assert_eq!(h.apply(level), level, "{q}: levels are fixed points");
        }
    }
}

#[test]
fn accessors() {
    let twn = Quantizer::Ternary(TernaryDelta::Twn);
    assert!(twn.is_data_dependent());
    assert!(!Quantizer::Ternary(TernaryDelta::default()).is_data_dependent());
    assert!(!Quantizer::Sign.is_data_dependent());
    let h = twn.resolve(&TWN_DATA);
    assert_eq!(h.delta(), Some(0.875));
    assert_eq!(h.edges(), None);
    assert_eq!(h.name(), "ternary");
    assert_eq!(
        h.to_quantizer(),
        Quantizer::Ternary(TernaryDelta::Fixed(0.875))
    );
    let p = Quantizer::Pow2(Pow2Edges::MIDPOINTS).resolve(&[]);
    assert_eq!(p.edges(), Some([0.125, 0.375, 0.75]));
    assert_eq!(p.delta(), None);
    for (q, h) in all() {
        assert_eq!(h.name(), q.name());
        if !q.is_data_dependent() {
            assert_eq!(h.to_quantizer(), q);
            assert_eq!(h.to_quantizer().resolve(&[]), h);
        }
    }
    assert_eq!(Quantizer::default(), Quantizer::Sign);
}

#[test]
fn twn_delta_is_0_7_mean_abs() {
    let h = Quantizer::Ternary(TernaryDelta::Twn).resolve(&TWN_DATA);
    assert_eq!(h.delta(), Some(0.875)); // 0.7 * (0.5 + 1 + 1.5 + 2) / 4
    let mut out = [0.0; 4];
    h.apply_slice(&TWN_DATA, &mut out).unwrap();
    assert_eq!(out, [0.0, -1.0, 1.0, -1.0]);

    let x = [0.1f32, -0.2, 0.3, -0.05, 0.0];
    let want = (0.7 * x.iter().map(|v| f64::from(v.abs())).sum::<f64>() / 5.0) as f32;
    let got = Quantizer::Ternary(TernaryDelta::Twn)
        .resolve(&x)
        .delta()
        .unwrap();
    assert_eq!(got, want);
    assert!((got - 0.091).abs() < 1e-7, "{got}");

    assert_eq!(
        Quantizer::Ternary(TernaryDelta::Twn).resolve(&[]).delta(),
        Some(0.0)
    );
    assert_eq!(
        Quantizer::Ternary(TernaryDelta::Twn)
            .resolve(&[f32::NAN])
            .delta(),
        Some(0.0)
    );
}

#[test]
fn slices_are_length_checked() {
    let h = Quantizer::Sign.resolve(&[]);
    let mut out = [0.0; 2];
    match h.apply_slice(&[1.0, 2.0, 3.0], &mut out) {
        Err(AqeError::LengthMismatch {
            what: "out",
            expected: 3,
            got: 2,
            ..
        }) => {}
        other => panic!("expected LengthMismatch, got {other:?}"),
    }
    let mut codes = [0u8; 4];
    match h.code_slice(&[1.0, 2.0, 3.0], &mut codes) {
        Err(AqeError::LengthMismatch {
            what: "codes",
            expected: 3,
            got: 4,
            ..
        }) => {}
        other => panic!("expected LengthMismatch, got {other:?}"),
    }
}

#[test]
fn unvalidated_parameters_are_sanitised_by_resolve() {
    let neg = Quantizer::Ternary(TernaryDelta::Fixed(-1.0));
    assert!(matches!(
        neg.validate(),
        Err(AqeError::InvalidParameter { name: "delta", .. })
    ));
    assert_eq!(neg.resolve(&[]).delta(), Some(0.0));
    let nan = Quantizer::Ternary(TernaryDelta::Fixed(f32::NAN));
    assert!(matches!(
        nan.validate(),
        Err(AqeError::InvalidParameter { name: "delta", .. })
    ));
    assert_eq!(nan.resolve(&[]).delta(), Some(0.0));
    assert_eq!(Quantizer::Uniform { bits: 0 }.resolve(&[]).bits(), 2);
    assert_eq!(Quantizer::Uniform { bits: 200 }.resolve(&[]).bits(), 8);
    assert!(matches!(
        Quantizer::uniform(9),
        Err(AqeError::InvalidParameter { name: "bits", .. })
    ));
    assert!(matches!(
        Quantizer::uniform(1),
        Err(AqeError::InvalidParameter { name: "bits", .. })
    ));
    assert_eq!(Quantizer::uniform(8), Ok(Quantizer::Uniform { bits: 8 }));
    assert_eq!(
        Quantizer::ternary(0.0),
        Ok(Quantizer::Ternary(TernaryDelta::Fixed(0.0)))
    );
    assert!(Quantizer::ternary(f32::INFINITY).is_err());
}

#[test]
fn pow2_edges_are_validated() {
    for bad in [
        [0.5, 0.4, 0.7],
        [0.0, 0.4, 0.7],
        [0.1, 0.4, 1.0],
        [0.1, 0.1, 0.7],
        [f32::NAN, 0.4, 0.7],
    ] {
        assert!(
            matches!(
                Pow2Edges::new(bad),
                Err(AqeError::InvalidParameter {
                    name: "pow2 edges",
                    ..
                })
            ),
            "{bad:?}"
        );
    }
    assert_eq!(
        Pow2Edges::new([0.1, 0.4, 0.7]).unwrap().get(),
        [0.1, 0.4, 0.7]
    );
    assert_eq!(Pow2Edges::default(), Pow2Edges::MIDPOINTS);
}

#[test]
fn specs_parse_and_print_back() {
    let cases: Vec<(&str, Quantizer, &str)> = vec![
        ("sign", Quantizer::Sign, "sign"),
        ("SIGN", Quantizer::Sign, "sign"),
        (
            "ternary",
            Quantizer::Ternary(TernaryDelta::Fixed(0.5)),
            "ternary",
        ),
        (
            "ternary:0.5",
            Quantizer::Ternary(TernaryDelta::Fixed(0.5)),
            "ternary",
        ),
        (
            "ternary:0.3",
            Quantizer::Ternary(TernaryDelta::Fixed(0.3)),
            "ternary:0.3",
        ),
        (
            "ternary:0",
            Quantizer::Ternary(TernaryDelta::Fixed(0.0)),
            "ternary:0",
        ),
        (
            "ternary:twn",
            Quantizer::Ternary(TernaryDelta::Twn),
            "ternary:twn",
        ),
        (
            " Ternary : TWN ",
            Quantizer::Ternary(TernaryDelta::Twn),
            "ternary:twn",
        ),
        ("twn", Quantizer::Ternary(TernaryDelta::Twn), "ternary:twn"),
        ("pow2", Quantizer::Pow2(Pow2Edges::MIDPOINTS), "pow2"),
        (
            "pow2:0.125,0.375,0.75",
            Quantizer::Pow2(Pow2Edges::MIDPOINTS),
            "pow2",
        ),
        (
            "pow2:0.1, 0.4, 0.7",
            Quantizer::Pow2(Pow2Edges::new([0.1, 0.4, 0.7]).unwrap()),
            "pow2:0.1,0.4,0.7",
        ),
        ("uniform:4", Quantizer::Uniform { bits: 4 }, "uniform:4"),
        ("uniform:8", Quantizer::Uniform { bits: 8 }, "uniform:8"),
    ];
    for (spec, want, display) in cases {
        let q: Quantizer = spec.parse().unwrap_or_else(|e| panic!("{spec}: {e}"));
        assert_eq!(q, want, "{spec}");
        assert_eq!(q.to_string(), display, "{spec}");
        assert_eq!(display.parse::<Quantizer>().unwrap(), q, "{spec}");
    }
}

#[test]
fn bad_specs_give_the_right_errors() {
    let err = "binary".parse::<Quantizer>().unwrap_err();
    match &err {
        AqeError::UnknownName {
            kind: "quantizer",
            name,
            valid,
        } => {
            assert_eq!(name, "binary");
            assert_eq!(*valid, Quantizer::NAMES);
        }
        other => panic!("expected UnknownName, got {other:?}"),
    }
    let msg = err.to_string();
    assert!(msg.contains("`binary`"), "{msg}");
    for n in ["sign", "ternary", "twn", "pow2", "uniform"] {
        assert!(msg.contains(n), "{msg} lacks {n}");
    }
    assert!(matches!(
        "".parse::<Quantizer>(),
        Err(AqeError::UnknownName { .. })
    ));
    for spec in [
        "ternary:abc",
        "ternary:inf",
        "sign:1",
        "twn:0.3",
        "uniform",
        "uniform:x",
        "pow2:0.1,0.4",
        "pow2:a,b,c",
        "ternary:0.1:0.2",
    ] {
        assert!(
            matches!(
                spec.parse::<Quantizer>(),
                Err(AqeError::BadSpec {
                    kind: "quantizer",
                    ..
                })
            ),
            "{spec}"
        );
    }
    for (spec, param) in [
        ("ternary:-0.1", "delta"),
        ("uniform:1", "bits"),
        ("uniform:9", "bits"),
        ("uniform:300", "bits"),
        ("pow2:0.5,0.4,0.7", "pow2 edges"),
        ("pow2:0.1,0.4,1.5", "pow2 edges"),
    ] {
        match spec.parse::<Quantizer>() {
            Err(AqeError::InvalidParameter { name, .. }) => assert_eq!(name, param, "{spec}"),
            other => panic!("{spec}: expected InvalidParameter, got {other:?}"),
        }
    }
    match "uniform:300".parse::<Quantizer>() {
        Err(AqeError::InvalidParameter { value, .. }) => assert_eq!(value, "300"),
        other => panic!("{other:?}"),
    }
}

fn any_quantizer() -> impl Strategy<Value = Quantizer> {
    prop_oneof![
        Just(Quantizer::Sign),
        Just(Quantizer::Ternary(TernaryDelta::Twn)),
        (0.0f32..4.0).prop_map(|d| Quantizer::Ternary(TernaryDelta::Fixed(d))),
        (0.001f32..0.33, 0.001f32..0.33, 0.001f32..0.33)
            .prop_map(|(a, b, c)| Quantizer::Pow2(Pow2Edges::new([a, a + b, a + b + c]).unwrap())),
        (2u8..=8).prop_map(|bits| Quantizer::Uniform { bits }),
    ]
}

proptest! {
    #[test]
    fn display_round_trips(q in any_quantizer()) {
        let s = q.to_string();
        prop_assert_eq!(s.parse::<Quantizer>().unwrap(), q, "{}", s);
    }

    #[test]
    fn outputs_are_levels(x in -3.0f32..3.0, y in any::<f32>()) {
        for (_, h) in all() {
            check_output(&h, x);
            check_output(&h, y);
        }
    }

    #[test]
    fn band_rules_hold_for_any_thresholds(q in any_quantizer(), x in -3.0f32..3.0) {
        if !matches!(q, Quantizer::Uniform { .. }) {
            let h = q.resolve(&TWN_DATA);
            prop_assert_eq!(h.apply(x).to_bits(), reference(&q, x).to_bits(), "{}: h({})", q, x);
        }
    }

    /// Under the default thresholds h(x) is a nearest level; an exact tie is broken as documented.
    #[test]
    fn default_thresholds_give_the_nearest_level(x in -3.0f32..3.0) {
        for h in nearest_level_quantizers() {
            let y = h.apply(x);
            let dist = |l: f32| (f64::from(l) - f64::from(x)).abs();
            let best = h.levels().into_iter().map(dist).fold(f64::INFINITY, f64::min);
            // Uniform computes x * L in f32, so within an ulp of a midpoint either side may win.
            prop_assert!(dist(y) <= best + 1e-6, "{:?}: h({}) = {} is not a nearest level", h, x, y);
            if h.bits() <= 3 {
                prop_assert!(dist(y) == best, "{:?}: h({}) = {}", h, x, y);
            }
        }
    }

    #[test]
    fn slices_match_elements(q in any_quantizer(), x in prop::collection::vec(any::<f32>(), 0..70)) {
        let h = q.resolve(&x);
        let mut out = vec![f32::NAN; x.len()];
        let mut codes = vec![u8::MAX; x.len()];
        h.apply_slice(&x, &mut out).unwrap();
        h.code_slice(&x, &mut codes).unwrap();
        for i in 0..x.len() {
            prop_assert_eq!(out[i].to_bits(), h.apply(x[i]).to_bits(), "{}: x = {}", q, x[i]);
            prop_assert_eq!(codes[i], h.code(x[i]));
            prop_assert_eq!(h.level(codes[i]).map(f32::to_bits), Some(out[i].to_bits()));
        }
    }
}

#[test]
fn int_of_is_the_integer_of_the_code() {
    // `int_of` computes the level's integer without the code table; it must equal
    // `int_level(code(x))` everywhere, thresholds, signed zeros, infinities and NaN included.
    let mut xs = vec![
        0.0,
        -0.0,
        f32::NAN,
        -f32::NAN,
        f32::INFINITY,
        f32::NEG_INFINITY,
        1e-45,
        -1e-45,
    ];
    for i in -2000..=2000 {
        let x = i as f32 / 1000.0;
        xs.extend([
            x,
            f32::from_bits(x.to_bits() + 1),
            f32::from_bits(x.to_bits().max(1) - 1),
        ]);
    }
    for (q, h) in all() {
        for &x in &xs {
            assert_eq!(
                h.int_of(x),
                h.int_level(h.code(x)).unwrap(),
                "{q}: x = {x} ({:#x})",
                x.to_bits()
            );
        }
    }
}

#[test]
fn int_of_never_decreases_with_x() {
    // The packed int8 engine turns BatchNorm + quantizer into per-channel level steps found by
    // binary search (`xnor_kernels::LevelThresholds::from_monotone`), which is exact only for
    // maps whose level never decreases with the input: checked on every f32 between -2 and 2
    // in steps of 64 ulps and around every integer-thousandth (both neighbours).
    let mut xs: Vec<f32> = Vec::new();
    let mut x = -2.0f32;
    while x <= 2.0 {
        xs.push(x);
        let b = x.to_bits();
        x = if x < 0.0 && b > 0x8000_0040 {
            f32::from_bits(b - 64)
        } else if x < 0.0 {
            0.0
        } else {
            f32::from_bits(b + 64)
        };
    }
    for i in -2000..=2000 {
        let x = i as f32 / 1000.0;
        xs.extend([x, x.next_up(), x.next_down()]);
    }
    xs.extend([f32::NEG_INFINITY, f32::INFINITY, -0.0]);
    xs.sort_by(f32::total_cmp);
    for (q, h) in all() {
        for p in xs.windows(2) {
            assert!(
                h.int_of(p[0]) <= h.int_of(p[1]),
                "{q}: int_of({}) = {} > int_of({}) = {}",
                p[0],
                h.int_of(p[0]),
                p[1],
                h.int_of(p[1])
            );
        }
    }
}
