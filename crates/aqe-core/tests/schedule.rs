//! Schedules reach their endpoints, are monotone where they should be, round-trip through their
//! spec strings, and reject bad parameters with errors.

use aqe_core::schedule::{AlphaShape, LrDecay, Milestone};
use aqe_core::{AlphaSchedule, AqeError, LrSchedule, Progress, ScheduleUnit};
use proptest::prelude::*;

fn alphas(s: &AlphaSchedule, epochs: u32, steps: u32) -> Vec<f32> {
    let mut out = Vec::new();
    for e in 0..epochs {
        for i in 0..steps {
            out.push(s.alpha_at(&Progress::new(e, epochs, i, steps).unwrap()));
        }
    }
    out
}

const ALPHA_SPECS: &[&str] = &[
    "linear",
    "linear:0.5:1",
    "linear:0:1@iter",
    "exp:0.5:1:5",
    "exp:0.5:1:0.5@iter",
    "cosine:0.5:1",
    "cosine:0.25:0.9@iter",
    "step:0.5:1:4",
    "step:0.5:1:1@iter",
    "linear:1:0.5",
];

#[test]
fn default_alpha_is_the_paper_default() {
    let d = AlphaSchedule::default();
    assert_eq!(d, "linear:0.5:1@epoch".parse().unwrap());
    let v = alphas(&d, 200, 1);
    assert_eq!(v[0], 0.5);
    assert_eq!(v[199], 1.0);
    // Linear per epoch: equal increments.
    let inc = v[1] - v[0];
    for w in v.windows(2) {
        assert!((w[1] - w[0] - inc).abs() < 1e-6, "{w:?}");
    }
}

#[test]
fn every_shape_reaches_both_endpoints_and_is_monotone() {
    for spec in ALPHA_SPECS {
        let s: AlphaSchedule = spec.parse().unwrap();
        for (epochs, steps) in [(2, 1), (7, 3), (50, 1), (3, 17)] {
            let v = alphas(&s, epochs, steps);
            let per_unit: Vec<f32> = match s.unit() {
                ScheduleUnit::Iteration => v.clone(),
                ScheduleUnit::Epoch => v.iter().step_by(steps as usize).copied().collect(),
            };
            assert_eq!(per_unit[0], s.start(), "{spec} {epochs}x{steps}");
            assert_eq!(
                *per_unit.last().unwrap(),
                s.end(),
                "{spec} {epochs}x{steps}"
            );
            let rising = s.end() >= s.start();
            for w in v.windows(2) {
                if rising {
                    assert!(w[1] >= w[0], "{spec}: not monotone {w:?}");
                } else {
                    assert!(w[1] <= w[0], "{spec}: not monotone {w:?}");
                }
            }
            if s.unit() == ScheduleUnit::Epoch {
                for e in 0..epochs as usize {
                    let epoch = &v[e * steps as usize..(e + 1) * steps as usize];
                    assert!(
                        epoch.iter().all(|a| *a == epoch[0]),
                        "{spec}: changed inside an epoch"
                    );
                }
            }
        }
    }
}

#[test]
fn shapes_differ_in_the_middle() {
    let mid = |spec: &str| {
        spec.parse::<AlphaSchedule>()
            .unwrap()
            .alpha_at(&Progress::at_epoch(5, 11).unwrap())
    };
    assert_eq!(mid("linear"), 0.75);
    assert_eq!(mid("cosine"), 0.75);
    assert!(
        mid("exp:0.5:1:5") > 0.9,
        "exp rises early: {}",
        mid("exp:0.5:1:5")
    );
    assert_eq!(mid("step:0.5:1:2"), 0.75);
    assert_eq!(mid("step:0.5:1:4"), 0.75);
    let quarter = "cosine"
        .parse::<AlphaSchedule>()
        .unwrap()
        .alpha_at(&Progress::at_epoch(1, 5).unwrap());
    assert!(quarter < 0.625, "cosine is slow at the start: {quarter}");
    assert_eq!(mid("constant:0.3"), 0.3);
}

#[test]
fn single_epoch_run_trains_at_the_end_value() {
    let s = AlphaSchedule::default();
    assert_eq!(s.alpha_at(&Progress::at_epoch(0, 1).unwrap()), 1.0);
}

#[test]
fn alpha_specs_round_trip() {
    for spec in ALPHA_SPECS.iter().chain(&["constant:0.7", "const:1"]) {
        let s: AlphaSchedule = spec.parse().unwrap();
        let again: AlphaSchedule = s.to_string().parse().unwrap();
        assert_eq!(s, again, "{spec} -> {s}");
    }
}

#[test]
fn bad_alpha_parameters_are_errors() {
    for bad in [
        "linear:0.5:1.5",
        "linear:-0.1:1",
        "constant:2",
        "exp:0.5:1:0",
        "exp:0.5:1:-3",
        "step:0.5:1:0",
        "linear:nan",
    ] {
        let e = bad.parse::<AlphaSchedule>().unwrap_err();
        assert!(
            matches!(
                e,
                AqeError::InvalidParameter { .. } | AqeError::BadSpec { .. }
            ),
            "{bad}: {e:?}"
        );
    }
    assert!(matches!(
        AlphaSchedule::new(AlphaShape::Linear, 0.5, 1.01, ScheduleUnit::Epoch),
        Err(AqeError::InvalidParameter { name: "end", .. })
    ));
    assert!(matches!(
        "constant".parse::<AlphaSchedule>(),
        Err(AqeError::BadSpec { .. })
    ));
    assert!(matches!(
        "linear:0.5:1:3".parse::<AlphaSchedule>(),
        Err(AqeError::BadSpec { .. })
    ));
    match "sigmoid".parse::<AlphaSchedule>() {
        Err(AqeError::UnknownName { valid, .. }) => {
            assert!(valid.contains(&"linear") && valid.contains(&"cosine"))
        }
        other => panic!("{other:?}"),
    }
    let e = "linear@fortnight".parse::<AlphaSchedule>().unwrap_err();
    assert!(e.to_string().contains("epoch, iter"), "{e}");
}

#[test]
fn progress_rejects_impossible_positions() {
    assert!(matches!(
        Progress::at_epoch(0, 0),
        Err(AqeError::InvalidParameter {
            name: "total_epochs",
            ..
        })
    ));
    assert!(matches!(
        Progress::new(0, 5, 0, 0),
        Err(AqeError::InvalidParameter {
            name: "steps_per_epoch",
            ..
        })
    ));
    assert!(matches!(
        Progress::at_epoch(5, 5),
        Err(AqeError::InvalidParameter { name: "epoch", .. })
    ));
    assert!(matches!(
        Progress::new(1, 5, 9, 9),
        Err(AqeError::InvalidParameter {
            name: "step_in_epoch",
            ..
        })
    ));
    let p = Progress::new(2, 5, 3, 10).unwrap();
    assert_eq!(p.global_step(), 23);
    assert_eq!(p.total_steps(), 50);
    assert_eq!(p.position(ScheduleUnit::Epoch), (2, 5));
    assert_eq!(p.position(ScheduleUnit::Iteration), (23, 50));
}

fn lr(spec: &str, epoch: u32, epochs: u32) -> f64 {
    spec.parse::<LrSchedule>()
        .unwrap()
        .lr_at(0.1, &Progress::at_epoch(epoch, epochs).unwrap())
}

#[test]
fn lr_multistep_follows_the_resnet_recipe() {
    let s: LrSchedule = "multistep:32000,38000:0.1@iter".parse().unwrap();
    let at = |step: u32| {
        s.lr_at(
            0.1,
            &Progress::new(step / 391, 164, step % 391, 391).unwrap(),
        )
    };
    assert_eq!(at(0), 0.1);
    assert_eq!(at(31_999), 0.1);
    assert!((at(32_000) - 0.01).abs() < 1e-15);
    assert!((at(37_999) - 0.01).abs() < 1e-15);
    assert!((at(38_000) - 0.001).abs() < 1e-15);
    // DenseNet: /10 at 50% and 75% of 300 epochs.
    assert_eq!(lr("multistep:50%,75%", 149, 300), 0.1);
    assert!((lr("multistep:50%,75%", 150, 300) - 0.01).abs() < 1e-15);
    assert!((lr("multistep:50%,75%", 225, 300) - 0.001).abs() < 1e-15);
}

#[test]
fn lr_exponential_and_cosine_reach_their_ends() {
    assert!((lr("exp:0.5", 3, 10) - 0.0125).abs() < 1e-15);
    // exp_to reaches FINAL after the run: one epoch beyond the last.
    let s: LrSchedule = "exp_to:0.001".parse().unwrap();
    let last = s.factor_at(&Progress::at_epoch(199, 200).unwrap());
    assert!((last - 0.001f64.powf(199.0 / 200.0)).abs() < 1e-12);
    assert_eq!(lr("exp_to:0.001", 0, 200), 0.1);
    assert_eq!(lr("cosine", 0, 10), 0.1);
    assert!((lr("cosine", 5, 10) - 0.05).abs() < 1e-12);
    let c: LrSchedule = "cosine:0.1".parse().unwrap();
    let mut prev = f64::INFINITY;
    for e in 0..100 {
        let f = c.factor_at(&Progress::at_epoch(e, 100).unwrap());
        assert!(f <= prev && f >= 0.1, "cosine not monotone at {e}: {f}");
        prev = f;
    }
}

#[test]
fn warmup_ramps_linearly_then_hands_over() {
    let s: LrSchedule = "cosine+warmup:4@iter".parse().unwrap();
    let f = |step: u32| s.factor_at(&Progress::new(0, 1, step, 100).unwrap());
    let cos = |step: u32| (1.0 + (std::f64::consts::PI * f64::from(step) / 100.0).cos()) / 2.0;
    for step in 0..4 {
        assert!((f(step) - cos(step) * f64::from(step + 1) / 4.0).abs() < 1e-12);
    }
    assert_eq!(f(4), cos(4));
    assert!(f(0) < f(1) && f(1) < f(2) && f(2) < f(3));
}

#[test]
fn lr_specs_round_trip() {
    for spec in [
        "constant",
        "exp:0.98",
        "exp_to:0.001@iter",
        "multistep:32000,38000:0.1@iter",
        "multistep:50%,75%",
        "cosine",
        "cosine:0.01+warmup:5",
    ] {
        let s: LrSchedule = spec.parse().unwrap();
        let again: LrSchedule = s.to_string().parse().unwrap();
        assert_eq!(s, again, "{spec} -> {s}");
    }
    let s: LrSchedule = "multistep:50%,75%".parse().unwrap();
    assert_eq!(
        s.decay(),
        &LrDecay::MultiStep {
            milestones: vec![Milestone::Percent(50.0), Milestone::Percent(75.0)],
            factor: 0.1
        }
    );
}

#[test]
fn bad_lr_parameters_are_errors() {
    for bad in [
        "exp:0",
        "exp:1.5",
        "exp",
        "exp_to:0",
        "multistep:10:2",
        "multistep:150%",
        "multistep:x",
        "cosine:-1",
        "cosine:2",
        "constant+cooldown:3",
        "constant+warmup",
    ] {
        let e = bad.parse::<LrSchedule>().unwrap_err();
        assert!(
            matches!(
                e,
                AqeError::InvalidParameter { .. } | AqeError::BadSpec { .. }
            ),
            "{bad}: {e:?}"
        );
    }
    assert!(matches!(
        LrSchedule::new(
            LrDecay::MultiStep {
                milestones: vec![],
                factor: 0.1
            },
            0,
            ScheduleUnit::Epoch
        ),
        Err(AqeError::InvalidParameter {
            name: "milestones",
            ..
        })
    ));
    match "onecycle".parse::<LrSchedule>() {
        Err(AqeError::UnknownName { valid, .. }) => assert!(valid.contains(&"multistep")),
        other => panic!("{other:?}"),
    }
}

#[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
struct Cfg {
    alpha: AlphaSchedule,
    lr: LrSchedule,
}

#[test]
fn schedules_serialise_as_their_spec_strings() {
    let cfg = Cfg {
        alpha: "cosine:0.5:1@iter".parse().unwrap(),
        lr: "multistep:50%,75%:0.1".parse().unwrap(),
    };
    let text = toml::to_string(&cfg).unwrap();
    assert!(text.contains("alpha = \"cosine:0.5:1@iter\""), "{text}");
    assert_eq!(toml::from_str::<Cfg>(&text).unwrap(), cfg);
    let err = toml::from_str::<Cfg>("alpha = \"wobble\"\nlr = \"constant\"\n").unwrap_err();
    assert!(err.to_string().contains("unknown alpha schedule"), "{err}");
}

proptest! {
    #[test]
    fn alpha_stays_between_its_endpoints(start in 0.0f32..=1.0, end in 0.0f32..=1.0, k in 0.1f32..20.0,
                                         steps in 1u32..10, shape in 0usize..4, epochs in 1u32..40, e in 0u32..40) {
        let shape = [AlphaShape::Linear, AlphaShape::Exponential { sharpness: k }, AlphaShape::Cosine, AlphaShape::Step { steps }][shape];
        let s = AlphaSchedule::new(shape, start, end, ScheduleUnit::Epoch).unwrap();
        let a = s.alpha_at(&Progress::at_epoch(e % epochs, epochs).unwrap());
        prop_assert!(a >= start.min(end) && a <= start.max(end), "{} at {}/{}: {}", s, e % epochs, epochs, a);
    }

    #[test]
    fn lr_factor_stays_in_the_unit_interval(gamma in 0.01f64..=1.0, epochs in 1u32..300, e in 0u32..300, warm in 0u32..10) {
        let p = Progress::at_epoch(e % epochs, epochs).unwrap();
        for decay in [LrDecay::Exponential { gamma }, LrDecay::ExponentialTo { final_factor: gamma }, LrDecay::Cosine { min_factor: gamma }] {
            let f = LrSchedule::new(decay.clone(), warm, ScheduleUnit::Epoch).unwrap().factor_at(&p);
            prop_assert!((0.0..=1.0).contains(&f), "{decay:?} at {}/{epochs}: {f}", e % epochs);
            // Only per-epoch `exp` decay can reach zero, and only by underflow.
            if f == 0.0 {
                let underflow = matches!(decay, LrDecay::Exponential { .. }) && gamma.powf(f64::from(e % epochs)) == 0.0;
                prop_assert!(underflow, "{:?} reached zero", decay);
            }
        }
    }
}
