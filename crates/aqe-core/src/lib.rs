//! The Asymptotic-Quantized Estimator (AQE) maths on plain `f32` slices: hard quantizers,
//! gradient estimators and the alpha / learning-rate schedules that drive them.
//!
//! This crate implements the method of J. Chen et al., "Propagating Asymptotic-Estimated
//! Gradients for Low Bitwidth Quantized Neural Networks", IEEE JSTSP 14(4), 2020
//! (arXiv 2003.04296). During training every quantized tensor `x` becomes
//!
//! ```text
//! x_hat = alpha * h(x) + (1 - alpha) * x          (Eq. 6, 18, 19)
//! ```
//!
//! with `alpha` annealed from 0.5 to 1; gradients pass straight through inside `[-1, 1]`; at the
//! end the network is exactly quantized by the hard quantizer `h` (1-bit sign, 2-bit ternary,
//! 3-bit powers of two).
//!
//! - [`quantizer`]: the hard quantizers `h`, their levels and integer codes.
//! - [`estimator`]: forward and backward passes of AQE, STE, ApproxSign, SwishSign and identity.
//! - [`schedule`]: alpha schedules and learning-rate schedules, by epoch or by iteration.
//!
//! Everything parses from a short name (`"sign"`, `"aqe"`, `"linear:0.5:1"`, ...), prints back
//! to the same string and (de)serialises through it with serde; an unknown name is an error
//! listing the valid ones. There is no Candle here and no I/O.

pub mod error;
pub mod estimator;
mod names;
pub mod quantizer;
pub mod schedule;

pub use error::{AqeError, Result};
pub use estimator::{AqeBackward, Estimator};
pub use quantizer::{HardQuantizer, Pow2Edges, Quantizer, TernaryDelta};
pub use schedule::{AlphaSchedule, LrSchedule, Progress, ScheduleUnit};
