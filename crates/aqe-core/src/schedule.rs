//! Alpha schedules (how AQE anneals from the float network to the quantized one) and
//! learning-rate schedules, evaluated by epoch or by iteration.
//!
//! # Where a run is: [`Progress`]
//! Every schedule is a pure function of a [`Progress`] (epoch, step within the epoch, and the
//! run's totals), so a resumed run recomputes exactly the values an uninterrupted one had.
//!
//! # Alpha
//! The paper gives no formula for alpha. Its histograms (epochs 5, 25, 55) show alpha near 0.50,
//! 0.63, 0.78 and a sister paper anneals the same blend from 0.5 to 1.0 "gradually", so the
//! default [`AlphaSchedule`] is `linear:0.5:1@epoch`: 0.5 at the first epoch, 1.0 at the last,
//! linear per epoch. Every shape maps the run fraction `p` in `[0, 1]` (with `p = 1` at the
//! **last** epoch or iteration, so the end value is actually trained with) to
//! `alpha = start + (end - start) * f(p)` with `f(0) = 0`, `f(1) = 1`.
//!
//! # Learning rate
//! An [`LrSchedule`] is a multiplier of the optimizer's base learning rate, with `p = t / T`
//! (the last epoch does not reach the end value, as in PyTorch's schedulers), an optional linear
//! warm-up and milestones given in units or as percentages of the run.
//!
//! ```
//! use aqe_core::{AlphaSchedule, LrSchedule, Progress};
//!
//! let alpha: AlphaSchedule = "linear:0.5:1".parse()?;
//! assert_eq!(alpha.alpha_at(&Progress::at_epoch(0, 11)?), 0.5);
//! assert_eq!(alpha.alpha_at(&Progress::at_epoch(5, 11)?), 0.75);
//! assert_eq!(alpha.alpha_at(&Progress::at_epoch(10, 11)?), 1.0);
//!
//! let lr: LrSchedule = "multistep:50%,75%:0.1".parse()?;
//! assert_eq!(lr.lr_at(0.1, &Progress::at_epoch(10, 300)?), 0.1);
//! assert!((lr.lr_at(0.1, &Progress::at_epoch(160, 300)?) - 0.01).abs() < 1e-12);
//! # Ok::<(), aqe_core::AqeError>(())
//! ```

use std::fmt;
use std::str::FromStr;

use crate::error::{AqeError, Result};
use crate::names::{Spec, serde_via_str};

/// Whether a schedule changes once per epoch or at every iteration (optimizer step).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ScheduleUnit {
    /// One value per epoch (the paper's default).
    #[default]
    Epoch,
    /// A new value at every iteration.
    Iteration,
}

impl ScheduleUnit {
    /// Short name: `"epoch"` or `"iter"`.
    pub fn name(self) -> &'static str {
        match self {
            ScheduleUnit::Epoch => "epoch",
            ScheduleUnit::Iteration => "iter",
        }
    }

    fn parse(s: &str, kind: &'static str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "epoch" | "epochs" => Ok(ScheduleUnit::Epoch),
            "iter" | "iters" | "iteration" | "iterations" | "step" | "steps" => {
                Ok(ScheduleUnit::Iteration)
            }
            other => Err(AqeError::UnknownName {
                kind,
                name: format!("unit `{other}`"),
                valid: &["epoch", "iter"],
            }),
        }
    }
}

/// Where a run stands: which epoch, which step inside it, and the run's totals.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Progress {
    epoch: u32,
    total_epochs: u32,
    step_in_epoch: u32,
    steps_per_epoch: u32,
}

impl Progress {
    /// A position inside a run of `total_epochs` epochs of `steps_per_epoch` iterations.
    ///
    /// Errors when a total is zero or a position lies outside its total.
    pub fn new(
        epoch: u32,
        total_epochs: u32,
        step_in_epoch: u32,
        steps_per_epoch: u32,
    ) -> Result<Self> {
        if total_epochs == 0 {
            return Err(invalid(
                "total_epochs",
                total_epochs,
                "a run needs at least one epoch",
            ));
        }
        if steps_per_epoch == 0 {
            return Err(invalid(
                "steps_per_epoch",
                steps_per_epoch,
                "an epoch needs at least one step",
            ));
        }
        if epoch >= total_epochs {
            return Err(invalid(
                "epoch",
                epoch,
                "must be below total_epochs (epochs count from 0)",
            ));
        }
        if step_in_epoch >= steps_per_epoch {
            return Err(invalid(
                "step_in_epoch",
                step_in_epoch,
                "must be below steps_per_epoch (steps count from 0)",
            ));
        }
        Ok(Progress {
            epoch,
            total_epochs,
            step_in_epoch,
            steps_per_epoch,
        })
    }

    /// The start of `epoch` in a run of `total_epochs` epochs, for epoch-wise schedules.
    pub fn at_epoch(epoch: u32, total_epochs: u32) -> Result<Self> {
        Progress::new(epoch, total_epochs, 0, 1)
    }

    /// The epoch, counted from 0.
    pub fn epoch(&self) -> u32 {
        self.epoch
    }

    /// Number of epochs in the run.
    pub fn total_epochs(&self) -> u32 {
        self.total_epochs
    }

    /// The step inside the current epoch, counted from 0.
    pub fn step_in_epoch(&self) -> u32 {
        self.step_in_epoch
    }

    /// Number of steps per epoch.
    pub fn steps_per_epoch(&self) -> u32 {
        self.steps_per_epoch
    }

    /// Steps since the start of the run.
    pub fn global_step(&self) -> u64 {
        u64::from(self.epoch) * u64::from(self.steps_per_epoch) + u64::from(self.step_in_epoch)
    }

    /// Steps in the whole run.
    pub fn total_steps(&self) -> u64 {
        u64::from(self.total_epochs) * u64::from(self.steps_per_epoch)
    }

    /// `(position, total)` counted in `unit`.
    pub fn position(&self, unit: ScheduleUnit) -> (u64, u64) {
        match unit {
            ScheduleUnit::Epoch => (u64::from(self.epoch), u64::from(self.total_epochs)),
            ScheduleUnit::Iteration => (self.global_step(), self.total_steps()),
        }
    }

    /// `t / (T - 1)`: 0 at the first unit, 1 at the last (1 when the run has a single unit).
    pub fn fraction_inclusive(&self, unit: ScheduleUnit) -> f64 {
        let (t, total) = self.position(unit);
        if total <= 1 {
            1.0
        } else {
            t as f64 / (total - 1) as f64
        }
    }

    /// `t / T`: 0 at the first unit, `(T - 1) / T` at the last.
    pub fn fraction(&self, unit: ScheduleUnit) -> f64 {
        let (t, total) = self.position(unit);
        t as f64 / total as f64
    }
}

fn invalid(name: &'static str, value: impl fmt::Display, reason: &'static str) -> AqeError {
    AqeError::InvalidParameter {
        name,
        value: value.to_string(),
        reason,
    }
}

/// Splits a trailing `@epoch` / `@iter` off a spec.
fn split_unit<'a>(s: &'a str, kind: &'static str) -> Result<(&'a str, ScheduleUnit)> {
    match s.rsplit_once('@') {
        Some((body, unit)) => Ok((body, ScheduleUnit::parse(unit, kind)?)),
        None => Ok((s, ScheduleUnit::Epoch)),
    }
}

/// The shape of an [`AlphaSchedule`]: `f(p)` with `f(0) = 0` and `f(1) = 1`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum AlphaShape {
    /// Always `start` (`end` is ignored and equals `start`).
    Constant,
    /// `f(p) = p`. The default.
    Linear,
    /// `f(p) = (1 - exp(-k p)) / (1 - exp(-k))`: the gap to `end` shrinks geometrically, as in
    /// `1 - alpha = 0.5 * r^epoch`, normalised so that `end` is reached at the last unit.
    /// Larger `sharpness` `k` (> 0) moves alpha towards `end` earlier.
    Exponential {
        /// `k`, the decay exponent over the whole run; default 5.
        sharpness: f32,
    },
    /// `f(p) = (1 - cos(pi p)) / 2`: slow at both ends.
    Cosine,
    /// `f(p) = floor(p * steps) / steps`: `steps` equal jumps, the last at the final unit.
    Step {
        /// Number of jumps (>= 1).
        steps: u32,
    },
}

impl AlphaShape {
    fn f(self, p: f64) -> f64 {
        match self {
            AlphaShape::Constant => 0.0,
            AlphaShape::Linear => p,
            AlphaShape::Exponential { sharpness } => {
                let k = f64::from(sharpness);
                (-k * p).exp_m1() / (-k).exp_m1()
            }
            AlphaShape::Cosine => (1.0 - (std::f64::consts::PI * p).cos()) / 2.0,
            AlphaShape::Step { steps } => {
                let n = f64::from(steps);
                (p * n).floor() / n
            }
        }
    }
}

/// How alpha, the weight of the hard quantizer in `alpha * h(x) + (1 - alpha) * x`, moves over a
/// run.
///
/// Spec strings (also the serde form): `SHAPE[:START[:END[:PARAM]]][@epoch|@iter]`, e.g.
/// `linear` (= `linear:0.5:1@epoch`, the default), `constant:1`, `exp:0.5:1:5`,
/// `cosine:0.5:1@iter`, `step:0.5:1:4`. Values must lie in `[0, 1]`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AlphaSchedule {
    shape: AlphaShape,
    start: f32,
    end: f32,
    unit: ScheduleUnit,
}

impl Default for AlphaSchedule {
    fn default() -> Self {
        AlphaSchedule {
            shape: AlphaShape::Linear,
            start: 0.5,
            end: 1.0,
            unit: ScheduleUnit::Epoch,
        }
    }
}

const ALPHA_NAMES: &[&str] = &["constant", "linear", "exp", "cosine", "step"];
const ALPHA_SYNTAX: &str = "constant:V | linear[:START[:END]] | exp[:START[:END[:SHARPNESS]]] | \
cosine[:START[:END]] | step[:START[:END[:STEPS]]], optionally followed by @epoch or @iter";

impl AlphaSchedule {
    /// A schedule from `start` to `end` (both in `[0, 1]`) with the given shape and unit.
    pub fn new(shape: AlphaShape, start: f32, end: f32, unit: ScheduleUnit) -> Result<Self> {
        check_alpha("start", start)?;
        check_alpha("end", end)?;
        match shape {
            AlphaShape::Exponential { sharpness }
                if !(sharpness.is_finite() && sharpness > 0.0) =>
            {
                return Err(invalid(
                    "sharpness",
                    sharpness,
                    "must be a finite number above 0",
                ));
            }
            AlphaShape::Step { steps: 0 } => return Err(invalid("steps", 0, "must be at least 1")),
            _ => {}
        }
        let end = if shape == AlphaShape::Constant {
            start
        } else {
            end
        };
        Ok(AlphaSchedule {
            shape,
            start,
            end,
            unit,
        })
    }

    /// Alpha fixed at `value` (in `[0, 1]`): `constant:1` is STE-like hard quantization all along.
    pub fn constant(value: f32) -> Result<Self> {
        AlphaSchedule::new(AlphaShape::Constant, value, value, ScheduleUnit::Epoch)
    }

    /// The value at `progress`, in `[min(start, end), max(start, end)]`.
    pub fn alpha_at(&self, progress: &Progress) -> f32 {
        let p = progress.fraction_inclusive(self.unit);
        let (start, end) = (f64::from(self.start), f64::from(self.end));
        if p >= 1.0 {
            return self.end;
        }
        let a = start + (end - start) * self.shape.f(p);
        (a as f32).clamp(self.start.min(self.end), self.start.max(self.end))
    }

    /// The shape.
    pub fn shape(&self) -> AlphaShape {
        self.shape
    }

    /// Alpha at the first unit.
    pub fn start(&self) -> f32 {
        self.start
    }

    /// Alpha at the last unit.
    pub fn end(&self) -> f32 {
        self.end
    }

    /// Whether the value changes per epoch or per iteration.
    pub fn unit(&self) -> ScheduleUnit {
        self.unit
    }
}

fn check_alpha(name: &'static str, v: f32) -> Result<()> {
    if (0.0..=1.0).contains(&v) {
        Ok(())
    } else {
        Err(invalid(name, v, "alpha must lie in [0, 1]"))
    }
}

impl FromStr for AlphaSchedule {
    type Err = AqeError;

    fn from_str(s: &str) -> Result<Self> {
        const KIND: &str = "alpha schedule";
        let (body, unit) = split_unit(s, KIND)?;
        let spec = Spec::parse(body);
        let d = AlphaSchedule::default();
        let start_end = |spec: &Spec<'_>| -> Result<(f32, f32)> {
            Ok((
                spec.f32_or(KIND, 0, d.start, ALPHA_SYNTAX)?,
                spec.f32_or(KIND, 1, d.end, ALPHA_SYNTAX)?,
            ))
        };
        let (shape, start, end) = match spec.name.as_str() {
            "constant" | "const" => {
                spec.expect_params(KIND, 1, 1, ALPHA_SYNTAX)?;
                let v = spec.f32_or(KIND, 0, 1.0, ALPHA_SYNTAX)?;
                (AlphaShape::Constant, v, v)
            }
            "linear" => {
                spec.expect_params(KIND, 0, 2, ALPHA_SYNTAX)?;
                let (a, b) = start_end(&spec)?;
                (AlphaShape::Linear, a, b)
            }
            "exp" | "exponential" => {
                spec.expect_params(KIND, 0, 3, ALPHA_SYNTAX)?;
                let (a, b) = start_end(&spec)?;
                (
                    AlphaShape::Exponential {
                        sharpness: spec.f32_or(KIND, 2, 5.0, ALPHA_SYNTAX)?,
                    },
                    a,
                    b,
                )
            }
            "cosine" | "cos" => {
                spec.expect_params(KIND, 0, 2, ALPHA_SYNTAX)?;
                let (a, b) = start_end(&spec)?;
                (AlphaShape::Cosine, a, b)
            }
            "step" => {
                spec.expect_params(KIND, 0, 3, ALPHA_SYNTAX)?;
                let (a, b) = start_end(&spec)?;
                (
                    AlphaShape::Step {
                        steps: spec.u32_or(KIND, 2, 4, ALPHA_SYNTAX)?,
                    },
                    a,
                    b,
                )
            }
            _ => return Err(spec.unknown(KIND, ALPHA_NAMES)),
        };
        AlphaSchedule::new(shape, start, end, unit)
    }
}

impl fmt::Display for AlphaSchedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (start, end) = (self.start, self.end);
        match self.shape {
            AlphaShape::Constant => write!(f, "constant:{start}")?,
            AlphaShape::Linear => write!(f, "linear:{start}:{end}")?,
            AlphaShape::Exponential { sharpness } => write!(f, "exp:{start}:{end}:{sharpness}")?,
            AlphaShape::Cosine => write!(f, "cosine:{start}:{end}")?,
            AlphaShape::Step { steps } => write!(f, "step:{start}:{end}:{steps}")?,
        }
        write!(f, "@{}", self.unit.name())
    }
}

serde_via_str!(AlphaSchedule);

/// A multistep milestone: an absolute position in schedule units, or a share of the run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Milestone {
    /// After this many epochs or iterations.
    At(u64),
    /// After this percentage of the run (e.g. `50%`).
    Percent(f64),
}

impl Milestone {
    fn position(self, total: u64) -> f64 {
        match self {
            Milestone::At(t) => t as f64,
            Milestone::Percent(p) => p / 100.0 * total as f64,
        }
    }
}

impl fmt::Display for Milestone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Milestone::At(t) => write!(f, "{t}"),
            Milestone::Percent(p) => write!(f, "{p}%"),
        }
    }
}

/// How the learning rate decays after warm-up. Values are multipliers of the base rate.
#[derive(Debug, Clone, PartialEq)]
pub enum LrDecay {
    /// Always 1.
    Constant,
    /// `gamma^t`, `t` counted in the schedule's unit (`exp:GAMMA`).
    Exponential {
        /// Factor per unit, in `(0, 1]`.
        gamma: f64,
    },
    /// `final^(t / T)`: exponential decay reaching `final` times the base rate after the run
    /// (`exp_to:FINAL`; BNN's ConvNet recipe decays by 1e-3 over the run).
    ExponentialTo {
        /// Multiplier at the end of the run, in `(0, 1]`.
        final_factor: f64,
    },
    /// `factor^(number of milestones passed)` (`multistep:M1,M2,..:FACTOR`; milestones in units
    /// or as `N%` of the run).
    MultiStep {
        /// Positions after which the rate is multiplied by `factor`.
        milestones: Vec<Milestone>,
        /// Multiplier applied at each milestone, in `(0, 1]`; default 0.1.
        factor: f64,
    },
    /// `min + (1 - min) * (1 + cos(pi t / T)) / 2` (`cosine[:MIN]`).
    Cosine {
        /// Multiplier reached at the end of the run, in `[0, 1]`; default 0.
        min_factor: f64,
    },
}

/// A learning-rate schedule: a decay shape, an optional linear warm-up, and a unit.
///
/// The warm-up multiplies the decay by `(t + 1) / warmup` for the first `warmup` units.
/// Spec strings (also the serde form): `DECAY[+warmup:N][@epoch|@iter]` with `DECAY` one of
/// `constant`, `exp:GAMMA`, `exp_to:FINAL`, `multistep:M1,M2,...[:FACTOR]`, `cosine[:MIN]`,
/// e.g. `multistep:32000,38000:0.1@iter` (the ResNet recipe) or `cosine+warmup:5`.
#[derive(Debug, Clone, PartialEq)]
pub struct LrSchedule {
    decay: LrDecay,
    warmup: u32,
    unit: ScheduleUnit,
}

impl Default for LrSchedule {
    fn default() -> Self {
        LrSchedule {
            decay: LrDecay::Constant,
            warmup: 0,
            unit: ScheduleUnit::Epoch,
        }
    }
}

const LR_NAMES: &[&str] = &["constant", "exp", "exp_to", "multistep", "cosine"];
const LR_SYNTAX: &str = "constant | exp:GAMMA | exp_to:FINAL | multistep:M1,M2,..[:FACTOR] | \
cosine[:MIN], optionally followed by +warmup:N and @epoch or @iter";

impl LrSchedule {
    /// A schedule with the given decay, `warmup` units of linear warm-up, counted in `unit`.
    pub fn new(decay: LrDecay, warmup: u32, unit: ScheduleUnit) -> Result<Self> {
        let factor_ok = |name, v: f64| {
            if v.is_finite() && v > 0.0 && v <= 1.0 {
                Ok(())
            } else {
                Err(invalid(name, v, "must lie in (0, 1]"))
            }
        };
        match &decay {
            LrDecay::Constant => {}
            LrDecay::Exponential { gamma } => factor_ok("gamma", *gamma)?,
            LrDecay::ExponentialTo { final_factor } => factor_ok("final", *final_factor)?,
            LrDecay::MultiStep { milestones, factor } => {
                factor_ok("factor", *factor)?;
                if milestones.is_empty() {
                    return Err(invalid(
                        "milestones",
                        "[]",
                        "multistep needs at least one milestone",
                    ));
                }
                for m in milestones {
                    if let Milestone::Percent(p) = m
                        && !(p.is_finite() && (0.0..=100.0).contains(p))
                    {
                        return Err(invalid("milestone", m, "a percentage must lie in [0, 100]"));
                    }
                }
            }
            LrDecay::Cosine { min_factor } => {
                if !(min_factor.is_finite() && (0.0..=1.0).contains(min_factor)) {
                    return Err(invalid("min", min_factor, "must lie in [0, 1]"));
                }
            }
        }
        Ok(LrSchedule {
            decay,
            warmup,
            unit,
        })
    }

    /// The multiplier of the base learning rate at `progress`, in `[0, 1]`.
    ///
    /// It is zero only where `exp` decay underflows `f64` (for example `exp:0.01` after
    /// more than 161 epochs), which is a zero learning rate in all but name.
    pub fn factor_at(&self, progress: &Progress) -> f64 {
        let (t, total) = progress.position(self.unit);
        let p = progress.fraction(self.unit);
        let decay = match &self.decay {
            LrDecay::Constant => 1.0,
            LrDecay::Exponential { gamma } => gamma.powf(t as f64),
            LrDecay::ExponentialTo { final_factor } => final_factor.powf(p),
            LrDecay::MultiStep { milestones, factor } => {
                let passed = milestones
                    .iter()
                    .filter(|m| t as f64 >= m.position(total))
                    .count();
                factor.powi(passed as i32)
            }
            LrDecay::Cosine { min_factor } => {
                min_factor + (1.0 - min_factor) * (1.0 + (std::f64::consts::PI * p).cos()) / 2.0
            }
        };
        if t < u64::from(self.warmup) {
            decay * (t + 1) as f64 / f64::from(self.warmup)
        } else {
            decay
        }
    }

    /// The learning rate at `progress` for an optimizer whose base rate is `base`.
    pub fn lr_at(&self, base: f64, progress: &Progress) -> f64 {
        base * self.factor_at(progress)
    }

    /// The decay shape.
    pub fn decay(&self) -> &LrDecay {
        &self.decay
    }

    /// Number of warm-up units.
    pub fn warmup(&self) -> u32 {
        self.warmup
    }

    /// Whether the value changes per epoch or per iteration.
    pub fn unit(&self) -> ScheduleUnit {
        self.unit
    }
}

impl FromStr for LrSchedule {
    type Err = AqeError;

    fn from_str(s: &str) -> Result<Self> {
        const KIND: &str = "learning-rate schedule";
        let (body, unit) = split_unit(s, KIND)?;
        let (body, warmup) = match body.split_once('+') {
            Some((decay, warm)) => {
                let w = Spec::parse(warm);
                if w.name != "warmup" {
                    return Err(w.bad(KIND, "only `+warmup:N` may follow the decay", LR_SYNTAX));
                }
                w.expect_params(KIND, 1, 1, LR_SYNTAX)?;
                (decay, w.u32_or(KIND, 0, 0, LR_SYNTAX)?)
            }
            None => (body, 0),
        };
        let spec = Spec::parse(body);
        let exact_f64 = |i: usize| -> Result<f64> {
            // f32 parsing would round e.g. 0.1; read factors as f64.
            let p = spec.params[i];
            p.parse::<f64>()
                .ok()
                .filter(|v| v.is_finite())
                .ok_or_else(|| {
                    spec.bad(
                        KIND,
                        format!("parameter `{p}` is not a finite number"),
                        LR_SYNTAX,
                    )
                })
        };
        let decay = match spec.name.as_str() {
            "constant" | "const" => {
                spec.expect_params(KIND, 0, 0, LR_SYNTAX)?;
                LrDecay::Constant
            }
            "exp" | "exponential" => {
                spec.expect_params(KIND, 1, 1, LR_SYNTAX)?;
                LrDecay::Exponential {
                    gamma: exact_f64(0)?,
                }
            }
            "exp_to" => {
                spec.expect_params(KIND, 1, 1, LR_SYNTAX)?;
                LrDecay::ExponentialTo {
                    final_factor: exact_f64(0)?,
                }
            }
            "multistep" => {
                spec.expect_params(KIND, 1, 2, LR_SYNTAX)?;
                let milestones = spec.params[0]
                    .split(',')
                    .map(|m| {
                        parse_milestone(m.trim()).ok_or_else(|| {
                            spec.bad(KIND, format!("bad milestone `{m}`"), LR_SYNTAX)
                        })
                    })
                    .collect::<Result<Vec<_>>>()?;
                let factor = if spec.params.len() == 2 {
                    exact_f64(1)?
                } else {
                    0.1
                };
                LrDecay::MultiStep { milestones, factor }
            }
            "cosine" | "cos" => {
                spec.expect_params(KIND, 0, 1, LR_SYNTAX)?;
                LrDecay::Cosine {
                    min_factor: if spec.params.is_empty() {
                        0.0
                    } else {
                        exact_f64(0)?
                    },
                }
            }
            _ => return Err(spec.unknown(KIND, LR_NAMES)),
        };
        LrSchedule::new(decay, warmup, unit)
    }
}

fn parse_milestone(m: &str) -> Option<Milestone> {
    match m.strip_suffix('%') {
        Some(p) => p.trim().parse::<f64>().ok().map(Milestone::Percent),
        None => m.parse::<u64>().ok().map(Milestone::At),
    }
}

impl fmt::Display for LrSchedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.decay {
            LrDecay::Constant => write!(f, "constant")?,
            LrDecay::Exponential { gamma } => write!(f, "exp:{gamma}")?,
            LrDecay::ExponentialTo { final_factor } => write!(f, "exp_to:{final_factor}")?,
            LrDecay::MultiStep { milestones, factor } => {
                let ms: Vec<String> = milestones.iter().map(ToString::to_string).collect();
                write!(f, "multistep:{}:{factor}", ms.join(","))?
            }
            LrDecay::Cosine { min_factor } => write!(f, "cosine:{min_factor}")?,
        }
        if self.warmup > 0 {
            write!(f, "+warmup:{}", self.warmup)?;
        }
        write!(f, "@{}", self.unit.name())
    }
}

serde_via_str!(LrSchedule);
