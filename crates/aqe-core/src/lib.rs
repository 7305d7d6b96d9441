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
//!
//! # Example
//!
//! One AQE step on a weight vector: quantize with the blend at the current alpha, pass the
//! gradient back, and read off what inference will use once alpha reaches 1.
//!
//! ```
//! use aqe_core::{AlphaSchedule, Estimator, Progress, Quantizer};
//!
//! let h = "ternary".parse::<Quantizer>()?.resolve(&[]); // levels -1, 0, 1; threshold 0.5
//! let aqe: Estimator = "aqe".parse()?;
//! let alpha = "linear:0.5:1".parse::<AlphaSchedule>()?.alpha_at(&Progress::at_epoch(0, 10)?);
//! assert_eq!(alpha, 0.5);
//!
//! let w = [-0.9f32, -0.2, 0.4, 1.5];
//! let mut w_hat = [0.0; 4];
//! aqe.forward(&h, alpha, &w, &mut w_hat)?;
//! assert_eq!(w_hat, [-0.95, -0.1, 0.2, 1.25]);
//! let mut dw = [0.0; 4];
//! aqe.backward(alpha, &w, &[1.0; 4], &mut dw)?;
//! assert_eq!(dw, [1.0, 1.0, 1.0, 0.0]); // gated outside [-1, 1]
//! assert_eq!(w.map(|v| h.apply(v)), [-1.0, 0.0, 0.0, 1.0]); // alpha = 1: what is deployed
//! # Ok::<(), aqe_core::AqeError>(())
//! ```

#![deny(missing_docs)]

// The README's example runs as a doctest too.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

pub mod error;
pub mod estimator;
mod names;
pub mod quantizer;
pub mod schedule;

pub use error::{AqeError, Result};
pub use estimator::{AqeBackward, Estimator};
pub use quantizer::{HardQuantizer, Pow2Edges, Quantizer, TernaryDelta};
pub use schedule::{AlphaSchedule, LrSchedule, Progress, ScheduleUnit};
