//! Gradient estimators: the forward and backward passes of AQE, STE, ApproxSign, SwishSign and identity.
//!
//! An [`Estimator`] says what a quantized tensor `x` becomes in the forward pass (given a
//! [`HardQuantizer`] `h` and the blend factor `alpha`) and how the incoming gradient `dy` is
//! turned into `dx`: always `dx = dy * grad_scale(alpha, x)`.
//!
//! Each rule exists once, as a per-element function ([`Estimator::forward_one`],
//! [`Estimator::grad_scale`]) that adapters on strided storage call directly; the slice entry
//! points ([`Estimator::forward`], [`Estimator::backward`]) validate their arguments and then run
//! the same inlined functions in branch-free loops, so both give bit-identical results.
//! [`Estimator::surrogate`] is the function whose derivative the backward pass is, for tests.
//!
//! | spec | estimator | forward | backward `dx / dy` |
//! | --- | --- | --- | --- |
//! | `aqe` (= `aqe:gated`) | AQE, Algorithm 1 | `alpha * h(x) + (1 - alpha) * x` | `1{abs(x) <= 1}` |
//! | `aqe:scaled` | AQE, Eq. 18/19 | `alpha * h(x) + (1 - alpha) * x` | `2 * alpha * 1{abs(x) <= 1}` |
//! | `ste` | straight-through | `h(x)` | `1{abs(x) <= 1}` |
//! | `approx_sign` | Bi-Real Net | `sign(x)` | `2 - 2 * abs(x)` if `abs(x) < 1`, else `0` |
//! | `swish_sign[:BETA]` | BNN+ | `sign(x)` | `SS_beta'(x)` |
//! | `identity` | no quantization | `x` | `1` |
//!
//! A NaN `x` gets a zero gradient from every estimator except identity.
//!
//! # Example
//!
//! ```
//! use aqe_core::{Estimator, Quantizer};
//!
//! let est: Estimator = "aqe".parse()?;
//! let h = Quantizer::Sign.resolve(&[]);
//! let x = [-2.0, -0.5, 0.25, 1.0];
//! let mut y = [0.0; 4];
//! est.forward(&h, 0.5, &x, &mut y)?;
//! assert_eq!(y, [-1.5, -0.75, 0.625, 1.0]);
//!
//! let dy = [1.0; 4];
//! let mut dx = [0.0; 4];
//! est.backward(0.5, &x, &dy, &mut dx)?;
//! assert_eq!(dx, [0.0, 1.0, 1.0, 1.0]);
//! # Ok::<(), aqe_core::AqeError>(())
//! ```

use std::fmt;
use std::str::FromStr;

use crate::error::{AqeError, Result, check_len};
use crate::names::{Spec, serde_via_str};
use crate::quantizer::{HardQuantizer, Quantizer};

const KIND: &str = "estimator";

/// Which of the paper's two AQE backward rules to use; they agree at `alpha = 1/2`
/// (Theorem 1, where both equal the STE).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AqeBackward {
    /// Algorithm 1 (the default): `dx = dy * 1{|x| <= 1}`, independent of `alpha`.
    #[default]
    Gated,
    /// Eq. 18/19: `dx = 2 * alpha * dy * 1{|x| <= 1}`.
    Scaled,
}

/// A gradient estimator; see the [module documentation](self) for a summary table.
///
/// Parses from `aqe`, `aqe:gated`, `aqe:scaled`, `ste`, `approx_sign`, `swish_sign`,
/// `swish_sign:BETA` and `identity` (case-insensitive, `-` equals `_`), prints back to the
/// shortest of these and goes through serde as that string. An unknown name is
/// [`AqeError::UnknownName`] listing [`Estimator::NAMES`].
///
/// ```
/// use aqe_core::{AqeBackward, Estimator};
///
/// let est: Estimator = "aqe:scaled".parse()?;
/// assert_eq!(est, Estimator::Aqe(AqeBackward::Scaled));
/// assert_eq!(est.to_string(), "aqe:scaled");
/// assert_eq!(est.grad_scale(0.75, 0.5), 1.5);
/// assert_eq!("swish_sign:10".parse::<Estimator>()?, Estimator::SwishSign { beta: 10.0 });
/// # Ok::<(), aqe_core::AqeError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Estimator {
    /// The Asymptotic-Quantized Estimator (J. Chen et al., "Propagating Asymptotic-Estimated
    /// Gradients for Low Bitwidth Quantized Neural Networks", IEEE JSTSP 2020).
    ///
    /// - Forward (Eq. 6, 18, 19): `x_hat = alpha * h(x) + (1 - alpha) * x`, evaluated in exactly
    ///   this order, so `alpha = 1` gives `h(x)` and `alpha = 0` gives `x` bit for bit (for
    ///   finite `x`, except that `-0.0` comes out as `+0.0`). Inference uses `h(x)` (Eq. 20).
    /// - Backward: [`AqeBackward::Gated`] (Algorithm 1) `dx = dy * 1{|x| <= 1}`, or
    ///   [`AqeBackward::Scaled`] (Eq. 18/19) `dx = 2 * alpha * dy * 1{|x| <= 1}`.
    /// - Parameters: `alpha` in `[0, 1]`, annealed from 0.5 to 1 by a schedule; the backward rule.
    /// - Theorem 1: at `alpha = 1/2` both rules equal the [`Estimator::Ste`] gradient.
    Aqe(AqeBackward),
    /// The straight-through estimator with a hard-tanh gate (Hubara, Courbariaux et al.,
    /// "Binarized Neural Networks", NeurIPS 2016).
    ///
    /// - Forward: `h(x)`.
    /// - Backward: `dx = dy * 1{|x| <= 1}`.
    /// - Parameters: none (`alpha` is ignored).
    Ste,
    /// ApproxSign (Liu et al., "Bi-Real Net", ECCV 2018): the derivative of a piecewise
    /// quadratic approximation of `sign`. Defined only for the `sign` quantizer.
    ///
    /// - Forward: `h(x) = sign(x)`.
    /// - Backward: `dx = dy * (2 - 2|x|)` for `|x| < 1`, else `0`.
    /// - Surrogate: `-1` for `x < -1`, `2x + x^2` on `[-1, 0)`, `2x - x^2` on `[0, 1)`, `1` above.
    /// - Parameters: none (`alpha` is ignored).
    ApproxSign,
    /// SwishSign (Darabi et al., "BNN+: Improved Binary Network Training", 2018): the derivative
    /// of `SS_beta(x) = 2 * sigmoid(beta x) * (1 + beta x * (1 - sigmoid(beta x))) - 1`.
    /// Defined only for the `sign` quantizer.
    ///
    /// - Forward: `h(x) = sign(x)`.
    /// - Backward: `dx = dy * beta * (2 - beta x * tanh(beta x / 2)) / (1 + cosh(beta x))`,
    ///   evaluated as `2 beta e / (1 + e)^2 * (2 - |z| (1 - e) / (1 + e))` with `z = beta x`,
    ///   `e = exp(-|z|)`, which cannot overflow; `0` where `|z| >= 100` (the true value is below
    ///   `1e-40 * beta` there).
    /// - Parameters: `beta > 0` (default [`Estimator::DEFAULT_SWISH_BETA`] = 5); `alpha` is ignored.
    SwishSign {
        /// Sharpness `beta > 0`; the gradient peaks at `beta` at `x = 0`.
        beta: f32,
    },
    /// No quantization: forward `x`, backward `dx = dy`. Parameters: none.
    Identity,
}

serde_via_str!(Estimator);

impl Default for Estimator {
    /// AQE with the Algorithm 1 backward.
    fn default() -> Self {
        Estimator::Aqe(AqeBackward::Gated)
    }
}

/// Beyond `|beta x| >= SWISH_Z_MAX` SwishSign is flat: its surrogate is `sign(x)`, its gradient 0.
const SWISH_Z_MAX: f32 = 100.0;

/// The AQE blend, in the documented order.
#[inline(always)]
fn aqe_blend(alpha: f32, hx: f32, x: f32) -> f32 {
    alpha * hx + (1.0 - alpha) * x
}

/// `1{|x| <= 1}`.
#[inline(always)]
fn gate(x: f32) -> f32 {
    if x.abs() <= 1.0 { 1.0 } else { 0.0 }
}

/// `2 * alpha * 1{|x| <= 1}`.
#[inline(always)]
fn scaled_gate(alpha: f32, x: f32) -> f32 {
    if x.abs() <= 1.0 { 2.0 * alpha } else { 0.0 }
}

/// Bi-Real Net: `2 - 2|x|` inside `(-1, 1)`, else 0.
#[inline(always)]
fn approx_sign_grad(x: f32) -> f32 {
    let a = x.abs();
    if a < 1.0 { 2.0 - 2.0 * a } else { 0.0 }
}

/// `SS_beta'(x)` in the overflow-free form.
#[inline(always)]
fn swish_sign_grad(beta: f32, x: f32) -> f32 {
    let z = (beta * x).abs();
    let e = (-z.min(SWISH_Z_MAX)).exp();
    let p = 1.0 + e;
    let g = 2.0 * beta * e / (p * p) * (2.0 - z.min(SWISH_Z_MAX) * (1.0 - e) / p);
    if z < SWISH_Z_MAX { g } else { 0.0 }
}

/// `SS_beta(x) = 2 sigmoid(z) (1 + z (1 - sigmoid(z))) - 1`, `z = beta x` clamped to `+-100`.
fn swish_sign_surrogate(beta: f32, x: f32) -> f32 {
    let z = (beta * x).clamp(-SWISH_Z_MAX, SWISH_Z_MAX);
    let sig = 1.0 / (1.0 + (-z).exp());
    let one_minus_sig = 1.0 / (1.0 + z.exp());
    2.0 * sig * (1.0 + z * one_minus_sig) - 1.0
}

/// Bi-Real Net's piecewise polynomial approximation of `sign`.
fn approx_sign_surrogate(x: f32) -> f32 {
    if x < -1.0 {
        -1.0
    } else if x < 0.0 {
        2.0 * x + x * x
    } else if x < 1.0 {
        2.0 * x - x * x
    } else {
        1.0
    }
}

/// `dx[i] = dy[i] * f(x[i])`.
#[inline(always)]
fn scale_grad(x: &[f32], dy: &[f32], dx: &mut [f32], f: impl Fn(f32) -> f32) {
    for ((d, &x), &g) in dx.iter_mut().zip(x).zip(dy) {
        *d = g * f(x);
    }
}

impl Estimator {
    /// Every estimator name accepted by [`FromStr`].
    pub const NAMES: &'static [&'static str] =
        &["aqe", "ste", "approx_sign", "swish_sign", "identity"];

    /// The default SwishSign sharpness, `5`.
    pub const DEFAULT_SWISH_BETA: f32 = 5.0;

    /// SwishSign with sharpness `beta`.
    ///
    /// # Errors
    ///
    /// [`AqeError::InvalidParameter`] unless `beta` is finite and `> 0`.
    pub fn swish_sign(beta: f32) -> Result<Self> {
        let e = Estimator::SwishSign { beta };
        e.validate()?;
        Ok(e)
    }

    /// Checks the parameters the public variants cannot enforce by themselves (SwishSign's `beta`).
    ///
    /// # Errors
    ///
    /// [`AqeError::InvalidParameter`] for a SwishSign `beta` that is not finite and `> 0`.
    pub fn validate(&self) -> Result<()> {
        match *self {
            Estimator::SwishSign { beta } if !(beta.is_finite() && beta > 0.0) => {
                Err(AqeError::InvalidParameter {
                    name: "beta",
                    value: beta.to_string(),
                    reason: "must be finite and > 0",
                })
            }
            _ => Ok(()),
        }
    }

    /// The short name: `"aqe"`, `"ste"`, `"approx_sign"`, `"swish_sign"` or `"identity"`.
    pub fn name(&self) -> &'static str {
        match self {
            Estimator::Aqe(_) => "aqe",
            Estimator::Ste => "ste",
            Estimator::ApproxSign => "approx_sign",
            Estimator::SwishSign { .. } => "swish_sign",
            Estimator::Identity => "identity",
        }
    }

    /// Whether `alpha` changes anything (only AQE; the slice functions still validate it).
    pub fn uses_alpha(&self) -> bool {
        matches!(self, Estimator::Aqe(_))
    }

    /// Checks that this estimator is defined for quantizer `q`: ApproxSign and SwishSign
    /// approximate `sign` and accept only [`Quantizer::Sign`]; the others accept any quantizer.
    ///
    /// # Errors
    ///
    /// [`AqeError::Incompatible`] otherwise.
    pub fn check_quantizer(&self, q: &Quantizer) -> Result<()> {
        match (self, q) {
            (Estimator::ApproxSign | Estimator::SwishSign { .. }, q) if *q != Quantizer::Sign => {
                Err(AqeError::Incompatible {
                    estimator: self.to_string(),
                    quantizer: q.to_string(),
                    expected: "sign",
                })
            }
            _ => Ok(()),
        }
    }

    /// The forward value of one element: `alpha * h(x) + (1 - alpha) * x` for AQE, `h(x)` for
    /// STE, ApproxSign and SwishSign, `x` for identity. Does not validate `alpha`.
    #[inline]
    pub fn forward_one(&self, h: &HardQuantizer, alpha: f32, x: f32) -> f32 {
        match self {
            Estimator::Aqe(_) => aqe_blend(alpha, h.apply(x), x),
            Estimator::Ste | Estimator::ApproxSign | Estimator::SwishSign { .. } => h.apply(x),
            Estimator::Identity => x,
        }
    }

    /// The backward factor of one element: `dx = dy * grad_scale(alpha, x)`. Does not validate
    /// `alpha`. See each variant for the formula.
    #[inline]
    pub fn grad_scale(&self, alpha: f32, x: f32) -> f32 {
        match *self {
            Estimator::Aqe(AqeBackward::Gated) | Estimator::Ste => gate(x),
            Estimator::Aqe(AqeBackward::Scaled) => scaled_gate(alpha, x),
            Estimator::ApproxSign => approx_sign_grad(x),
            Estimator::SwishSign { beta } => swish_sign_grad(beta, x),
            Estimator::Identity => 1.0,
        }
    }

    /// The function whose derivative (where it exists) is [`Estimator::grad_scale`]:
    /// `clamp(x, -1, 1)` for gated AQE and STE, `2 alpha clamp(x, -1, 1)` for scaled AQE, the
    /// Bi-Real polynomial for ApproxSign, `SS_beta(x)` for SwishSign, `x` for identity.
    /// Not used in training; it lets tests check the backward by finite differences.
    pub fn surrogate(&self, alpha: f32, x: f32) -> f32 {
        match *self {
            Estimator::Aqe(AqeBackward::Gated) | Estimator::Ste => x.clamp(-1.0, 1.0),
            Estimator::Aqe(AqeBackward::Scaled) => 2.0 * alpha * x.clamp(-1.0, 1.0),
            Estimator::ApproxSign => approx_sign_surrogate(x),
            Estimator::SwishSign { beta } => swish_sign_surrogate(beta, x),
            Estimator::Identity => x,
        }
    }

    /// `y[i] = forward_one(h, alpha, x[i])`, bit for bit.
    ///
    /// # Errors
    ///
    /// - [`AqeError::InvalidParameter`] (`name: "alpha"`) unless `alpha` is finite and in
    ///   `[0, 1]`, for every estimator;
    /// - [`AqeError::Incompatible`] if [`Estimator::check_quantizer`] rejects `h`;
    /// - [`AqeError::LengthMismatch`] if `y.len() != x.len()`.
    pub fn forward(&self, h: &HardQuantizer, alpha: f32, x: &[f32], y: &mut [f32]) -> Result<()> {
        check_alpha(alpha)?;
        self.check_quantizer(&h.to_quantizer())?;
        let op = self.op_names().0;
        check_len(op, "y", x.len(), y.len())?;
        match self {
            Estimator::Aqe(_) => {
                h.apply_slice(x, y)?;
                for (y, &x) in y.iter_mut().zip(x) {
                    *y = aqe_blend(alpha, *y, x);
                }
            }
            Estimator::Ste | Estimator::ApproxSign | Estimator::SwishSign { .. } => {
                h.apply_slice(x, y)?
            }
            Estimator::Identity => y.copy_from_slice(x),
        }
        Ok(())
    }

    /// `dx[i] = dy[i] * grad_scale(alpha, x[i])`, bit for bit.
    ///
    /// # Errors
    ///
    /// - [`AqeError::InvalidParameter`] (`name: "alpha"`) unless `alpha` is finite and in
    ///   `[0, 1]`, for every estimator;
    /// - [`AqeError::LengthMismatch`] if `dy` or `dx` does not have `x.len()` elements.
    pub fn backward(&self, alpha: f32, x: &[f32], dy: &[f32], dx: &mut [f32]) -> Result<()> {
        check_alpha(alpha)?;
        let op = self.op_names().1;
        check_len(op, "dy", x.len(), dy.len())?;
        check_len(op, "dx", x.len(), dx.len())?;
        match *self {
            Estimator::Aqe(AqeBackward::Gated) | Estimator::Ste => scale_grad(x, dy, dx, gate),
            Estimator::Aqe(AqeBackward::Scaled) => scale_grad(x, dy, dx, |x| scaled_gate(alpha, x)),
            Estimator::ApproxSign => scale_grad(x, dy, dx, approx_sign_grad),
            Estimator::SwishSign { beta } => scale_grad(x, dy, dx, |x| swish_sign_grad(beta, x)),
            Estimator::Identity => dx.copy_from_slice(dy),
        }
        Ok(())
    }

    /// The operation names used in errors: (forward, backward).
    fn op_names(&self) -> (&'static str, &'static str) {
        match self {
            Estimator::Aqe(_) => ("aqe forward", "aqe backward"),
            Estimator::Ste => ("ste forward", "ste backward"),
            Estimator::ApproxSign => ("approx_sign forward", "approx_sign backward"),
            Estimator::SwishSign { .. } => ("swish_sign forward", "swish_sign backward"),
            Estimator::Identity => ("identity forward", "identity backward"),
        }
    }
}

/// Fails unless `alpha` is finite and in `[0, 1]`.
fn check_alpha(alpha: f32) -> Result<()> {
    if (0.0..=1.0).contains(&alpha) {
        Ok(())
    } else {
        Err(AqeError::InvalidParameter {
            name: "alpha",
            value: alpha.to_string(),
            reason: "must be a finite number in [0, 1]",
        })
    }
}

impl fmt::Display for Estimator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Estimator::Aqe(AqeBackward::Gated) => f.write_str("aqe"),
            Estimator::Aqe(AqeBackward::Scaled) => f.write_str("aqe:scaled"),
            Estimator::SwishSign { beta } if beta == Self::DEFAULT_SWISH_BETA => {
                f.write_str("swish_sign")
            }
            Estimator::SwishSign { beta } => write!(f, "swish_sign:{beta}"),
            other => f.write_str(other.name()),
        }
    }
}

impl FromStr for Estimator {
    type Err = AqeError;

    fn from_str(s: &str) -> Result<Self> {
        let spec = Spec::parse(s);
        let e = match spec.name.as_str() {
            "aqe" => {
                const EXPECTED: &str = "aqe[:gated|:scaled]";
                spec.expect_params(KIND, 0, 1, EXPECTED)?;
                match spec.params.first().map(|p| p.to_ascii_lowercase()) {
                    None => Estimator::Aqe(AqeBackward::Gated),
                    Some(p) if p == "gated" => Estimator::Aqe(AqeBackward::Gated),
                    Some(p) if p == "scaled" => Estimator::Aqe(AqeBackward::Scaled),
                    Some(p) => {
                        return Err(spec.bad(
                            KIND,
                            format!("unknown AQE backward `{p}`"),
                            EXPECTED,
                        ));
                    }
                }
            }
            "ste" => {
                spec.expect_params(KIND, 0, 0, "ste")?;
                Estimator::Ste
            }
            "approx_sign" => {
                spec.expect_params(KIND, 0, 0, "approx_sign")?;
                Estimator::ApproxSign
            }
            "swish_sign" => {
                const EXPECTED: &str = "swish_sign[:BETA]";
                spec.expect_params(KIND, 0, 1, EXPECTED)?;
                Estimator::SwishSign {
                    beta: spec.f32_or(KIND, 0, Self::DEFAULT_SWISH_BETA, EXPECTED)?,
                }
            }
            "identity" => {
                spec.expect_params(KIND, 0, 0, "identity")?;
                Estimator::Identity
            }
            _ => return Err(spec.unknown(KIND, Self::NAMES)),
        };
        e.validate()?;
        Ok(e)
    }
}
