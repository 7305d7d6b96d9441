//! Hard quantizers `h`: sign, ternary, powers of two and uniform, with their levels and codes.
//!
//! A [`Quantizer`] is the configuration-level object: it parses from a short spec (`"sign"`,
//! `"ternary:0.3"`, `"pow2"`, ...), prints back to it and goes through serde as that string.
//! [`Quantizer::resolve`] turns it into a [`HardQuantizer`], the fully determined function `h`
//! (only TWN looks at the data, to pick its threshold). Levels are the literal values of the
//! paper (section 2 of the method note): no scaling factors anywhere.
//!
//! # Exact rules
//!
//! Write `a = |x|` and `s = +1` if `x >= 0` (so `x = -0.0` has `s = +1`), `s = -1` otherwise.
//!
//! | quantizer | bits | levels (ascending) | `h(x)` |
//! | --- | --- | --- | --- |
//! | `sign` | 1 | `-1, +1` | `s` (so `sign(0) = sign(-0.0) = +1`) |
//! | `ternary[:DELTA]` | 2 | `-1, 0, +1` | `0` if `a <= delta`, else `s` (Eq. 21) |
//! | `pow2[:E0,E1,E2]` | 3 | `-1, -1/2, -1/4, 0, 1/4, 1/2, 1` | `0` if `a <= e0`; `s/4` if `e0 < a <= e1`; `s/2` if `e1 < a <= e2`; `s` if `a > e2` (Eq. 22) |
//! | `uniform:K` | `K` | `(2i - L) / L`, `i = 0..=L`, `L = 2^K - 1` | the nearest level; values outside `[-1, 1]` saturate; a tie goes to the larger level |
//!
//! With the default thresholds (`delta = 0.5`, edges at the midpoints `1/8, 3/8, 3/4`) every
//! quantizer returns the nearest level; ties go towards zero for ternary and pow2 (the bands are
//! closed on the inside) and to `+1` for sign at `0`. For uniform the tie rule holds up to the
//! rounding of `x * L` in `f32`, i.e. within an ulp of a midpoint either neighbour may come out.
//!
//! **NaN** maps to `h(+0)`: `+1` for sign, `0` for ternary and pow2, `+1/L` for uniform. No
//! input panics. The output is never `-0.0`.
//!
//! # Codes and integer levels
//!
//! [`HardQuantizer::code`] is the index of `h(x)` in the ascending level list (what a packed
//! format stores). Each level is an integer times one scale, and this holds exactly in `f32`
//! because the levels are *defined* as `int as f32 * scale`:
//!
//! | quantizer | integers | scale |
//! | --- | --- | --- |
//! | sign | `-1, 1` | `1` |
//! | ternary | `-1, 0, 1` | `1` |
//! | pow2 | `-4, -2, -1, 0, 1, 2, 4` | `1/4` |
//! | uniform `K` | odd integers `2i - L`, `L = 2^K - 1` | `1/L` (rounded to `f32`; `L * scale == 1` exactly for `K` in `2..=8`) |
//!
//! # Example
//!
//! ```
//! use aqe_core::Quantizer;
//!
//! let q: Quantizer = "pow2".parse()?;
//! let h = q.resolve(&[]);
//! assert_eq!(h.apply(0.3), 0.25);
//! assert_eq!(h.apply(-0.8), -1.0);
//! assert_eq!(h.apply(0.1), 0.0);
//! assert_eq!(h.code(-0.8), 0);
//! assert_eq!(q.to_string(), "pow2");
//!
//! let twn: Quantizer = "ternary:twn".parse()?;
//! let w = [0.5, -1.0, 1.5, -2.0];
//! let h = twn.resolve(&w); // delta = 0.7 * mean|w| = 0.875
//! let mut out = [0.0; 4];
//! h.apply_slice(&w, &mut out)?;
//! assert_eq!(out, [0.0, -1.0, 1.0, -1.0]);
//! # Ok::<(), aqe_core::AqeError>(())
//! ```

use std::fmt;
use std::str::FromStr;

use crate::error::{AqeError, Result, check_len};
use crate::names::{Spec, serde_via_str};

const KIND: &str = "quantizer";

/// The threshold `delta` of the ternary quantizer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum TernaryDelta {
    /// A fixed threshold; the paper's default is [`TernaryDelta::DEFAULT`] (`0.5`, the midpoint
    /// between levels `0` and `1`). Must be finite and `>= 0` ([`Quantizer::validate`]).
    Fixed(f32),
    /// TWN (Li et al., "Ternary Weight Networks", 2016): `delta = 0.7 * mean(|x|)` over the
    /// whole tensor passed to [`Quantizer::resolve`] (per layer for weights).
    Twn,
}

impl TernaryDelta {
    /// The default fixed threshold, `0.5`.
    pub const DEFAULT: f32 = 0.5;
    /// TWN's factor: `delta = TWN_FACTOR * mean(|x|)`.
    pub const TWN_FACTOR: f64 = 0.7;
}

impl Default for TernaryDelta {
    fn default() -> Self {
        TernaryDelta::Fixed(Self::DEFAULT)
    }
}

/// The three band edges of the power-of-two quantizer, between levels `0|1/4`, `1/4|1/2` and
/// `1/2|1`; strictly increasing and inside `(0, 1)` by construction.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pow2Edges([f32; 3]);

impl Pow2Edges {
    /// The default edges, the midpoints `[1/8, 3/8, 3/4]`, under which `h` is the nearest level.
    pub const MIDPOINTS: Pow2Edges = Pow2Edges([0.125, 0.375, 0.75]);

    /// Edges `[e0, e1, e2]`.
    ///
    /// # Errors
    ///
    /// [`AqeError::InvalidParameter`] unless `0 < e0 < e1 < e2 < 1` (NaN fails).
    pub fn new(edges: [f32; 3]) -> Result<Self> {
        let [e0, e1, e2] = edges;
        if 0.0 < e0 && e0 < e1 && e1 < e2 && e2 < 1.0 {
            Ok(Pow2Edges(edges))
        } else {
            Err(AqeError::InvalidParameter {
                name: "pow2 edges",
                value: format!("{e0},{e1},{e2}"),
                reason: "must be strictly increasing and inside (0, 1)",
            })
        }
    }

    /// The edges `[e0, e1, e2]`.
    pub fn get(&self) -> [f32; 3] {
        self.0
    }
}

impl Default for Pow2Edges {
    fn default() -> Self {
        Self::MIDPOINTS
    }
}

/// A hard quantizer as configured: parses from and prints to a short spec, see the
/// [module documentation](self) for the exact rules.
///
/// | spec | value |
/// | --- | --- |
/// | `sign` | [`Quantizer::Sign`] |
/// | `ternary`, `ternary:0.3` | [`Quantizer::Ternary`] with [`TernaryDelta::Fixed`] (default `0.5`) |
/// | `ternary:twn`, `twn` | [`Quantizer::Ternary`] with [`TernaryDelta::Twn`] |
/// | `pow2`, `pow2:0.1,0.4,0.7` | [`Quantizer::Pow2`] (default edges `1/8, 3/8, 3/4`) |
/// | `uniform:4` | [`Quantizer::Uniform`] |
///
/// Names are case-insensitive; an unknown name is [`AqeError::UnknownName`] listing
/// [`Quantizer::NAMES`].
///
/// ```
/// use aqe_core::Quantizer;
///
/// let q: Quantizer = "ternary:0.3".parse()?;
/// assert_eq!(q.to_string(), "ternary:0.3");
/// let h = q.resolve(&[]);
/// assert_eq!([h.apply(-0.2), h.apply(0.31), h.apply(-7.0)], [0.0, 1.0, -1.0]);
/// assert!("binary".parse::<Quantizer>().is_err());
/// # Ok::<(), aqe_core::AqeError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum Quantizer {
    /// 1 bit, levels `{-1, +1}`: `h(x) = +1` if `x >= 0` (including `-0.0`), else `-1`.
    #[default]
    Sign,
    /// 2 bits, levels `{-1, 0, +1}`: `h(x) = 0` if `|x| <= delta`, else `sign(x)` (Eq. 21).
    Ternary(TernaryDelta),
    /// 3 bits, levels `{0, +-1/4, +-1/2, +-1}` (Eq. 22): with edges `e0 < e1 < e2`,
    /// `h(x) = sign(x) * (0 if |x| <= e0; 1/4 if |x| <= e1; 1/2 if |x| <= e2; 1 otherwise)`.
    Pow2(Pow2Edges),
    /// Extension, not in the paper: `2^bits` evenly spaced levels spanning `[-1, 1]`, `h(x)` the
    /// nearest one (ties to the larger), saturating outside `[-1, 1]`. `bits` in `2..=8`.
    Uniform {
        /// Bit width, `2..=8`.
        bits: u8,
    },
}

serde_via_str!(Quantizer);

impl Quantizer {
    /// Every quantizer name accepted by [`FromStr`].
    pub const NAMES: &'static [&'static str] = &["sign", "ternary", "twn", "pow2", "uniform"];

    /// Ternary with a fixed threshold.
    ///
    /// # Errors
    ///
    /// [`AqeError::InvalidParameter`] unless `delta` is finite and `>= 0`.
    pub fn ternary(delta: f32) -> Result<Self> {
        let q = Quantizer::Ternary(TernaryDelta::Fixed(delta));
        q.validate()?;
        Ok(q)
    }

    /// Uniform with `bits` bits.
    ///
    /// # Errors
    ///
    /// [`AqeError::InvalidParameter`] unless `bits` is in `2..=8`.
    pub fn uniform(bits: u8) -> Result<Self> {
        let q = Quantizer::Uniform { bits };
        q.validate()?;
        Ok(q)
    }

    /// Checks the parameters that the public variants cannot enforce by themselves.
    ///
    /// # Errors
    ///
    /// [`AqeError::InvalidParameter`] for a fixed ternary `delta` that is not finite and `>= 0`,
    /// or uniform `bits` outside `2..=8`.
    pub fn validate(&self) -> Result<()> {
        match *self {
            Quantizer::Ternary(TernaryDelta::Fixed(delta))
                if !(delta.is_finite() && delta >= 0.0) =>
            {
                Err(AqeError::InvalidParameter {
                    name: "delta",
                    value: delta.to_string(),
                    reason: "must be finite and >= 0",
                })
            }
            Quantizer::Uniform { bits } if !(2..=8).contains(&bits) => {
                Err(bits_error(u32::from(bits)))
            }
            _ => Ok(()),
        }
    }

    /// The short name: `"sign"`, `"ternary"`, `"pow2"` or `"uniform"`.
    pub fn name(&self) -> &'static str {
        match self {
            Quantizer::Sign => "sign",
            Quantizer::Ternary(_) => "ternary",
            Quantizer::Pow2(_) => "pow2",
            Quantizer::Uniform { .. } => "uniform",
        }
    }

    /// Bit width: 1 (sign), 2 (ternary), 3 (pow2) or `bits` (uniform).
    pub fn bits(&self) -> u8 {
        match *self {
            Quantizer::Sign => 1,
            Quantizer::Ternary(_) => 2,
            Quantizer::Pow2(_) => 3,
            Quantizer::Uniform { bits } => bits,
        }
    }

    /// Number of levels: 2, 3, 7 or `2^bits`.
    pub fn num_levels(&self) -> usize {
        self.resolve(&[]).num_levels()
    }

    /// The levels in ascending order (independent of any data, also for TWN).
    pub fn levels(&self) -> Vec<f32> {
        self.resolve(&[]).levels()
    }

    /// Whether [`Quantizer::resolve`] looks at the data (only TWN does).
    pub fn is_data_dependent(&self) -> bool {
        matches!(self, Quantizer::Ternary(TernaryDelta::Twn))
    }

    /// The fully determined hard quantizer for tensor `x`. Only TWN reads `x`:
    /// `delta = 0.7 * mean(|x|)` (accumulated in `f64`), `0` for an empty `x`.
    ///
    /// Does not fail: a fixed `delta` that is negative or NaN (see [`Quantizer::validate`]) is
    /// taken as `0`, as is a NaN TWN threshold; uniform `bits` are clamped into `2..=8`.
    pub fn resolve(&self, x: &[f32]) -> HardQuantizer {
        let kind = match *self {
            Quantizer::Sign => Kind::Sign,
            Quantizer::Ternary(TernaryDelta::Fixed(delta)) => Kind::Ternary {
                delta: sanitize_delta(delta),
            },
            Quantizer::Ternary(TernaryDelta::Twn) => Kind::Ternary {
                delta: sanitize_delta(twn_delta(x)),
            },
            Quantizer::Pow2(edges) => Kind::Pow2 { edges: edges.0 },
            Quantizer::Uniform { bits } => {
                let bits = bits.clamp(2, 8);
                let max_int = (1u16 << bits) - 1;
                Kind::Uniform {
                    bits,
                    max_int,
                    max_f: f32::from(max_int),
                }
            }
        };
        HardQuantizer { kind }
    }
}

/// The error for uniform `bits` outside `2..=8`.
fn bits_error(bits: u32) -> AqeError {
    AqeError::InvalidParameter {
        name: "bits",
        value: bits.to_string(),
        reason: "must lie in 2..=8",
    }
}

/// `0.7 * mean(|x|)`, `0` for empty `x`.
fn twn_delta(x: &[f32]) -> f32 {
    if x.is_empty() {
        return 0.0;
    }
    let sum: f64 = x.iter().map(|v| f64::from(v.abs())).sum();
    (TernaryDelta::TWN_FACTOR * sum / x.len() as f64) as f32
}

/// `delta` if it is `>= 0`, else `0` (negative or NaN).
fn sanitize_delta(delta: f32) -> f32 {
    if delta >= 0.0 { delta } else { 0.0 }
}

impl fmt::Display for Quantizer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Quantizer::Sign => f.write_str("sign"),
            Quantizer::Ternary(TernaryDelta::Twn) => f.write_str("ternary:twn"),
            Quantizer::Ternary(TernaryDelta::Fixed(d)) if d == TernaryDelta::DEFAULT => {
                f.write_str("ternary")
            }
            Quantizer::Ternary(TernaryDelta::Fixed(d)) => write!(f, "ternary:{d}"),
            Quantizer::Pow2(e) if e == Pow2Edges::MIDPOINTS => f.write_str("pow2"),
            Quantizer::Pow2(Pow2Edges([e0, e1, e2])) => write!(f, "pow2:{e0},{e1},{e2}"),
            Quantizer::Uniform { bits } => write!(f, "uniform:{bits}"),
        }
    }
}

impl FromStr for Quantizer {
    type Err = AqeError;

    fn from_str(s: &str) -> Result<Self> {
        let spec = Spec::parse(s);
        let q = match spec.name.as_str() {
            "sign" => {
                spec.expect_params(KIND, 0, 0, "sign")?;
                Quantizer::Sign
            }
            "twn" => {
                spec.expect_params(KIND, 0, 0, "twn")?;
                Quantizer::Ternary(TernaryDelta::Twn)
            }
            "ternary" => {
                const EXPECTED: &str = "ternary[:DELTA|:twn]";
                spec.expect_params(KIND, 0, 1, EXPECTED)?;
                match spec.params.first() {
                    Some(p) if p.eq_ignore_ascii_case("twn") => {
                        Quantizer::Ternary(TernaryDelta::Twn)
                    }
                    _ => Quantizer::Ternary(TernaryDelta::Fixed(spec.f32_or(
                        KIND,
                        0,
                        TernaryDelta::DEFAULT,
                        EXPECTED,
                    )?)),
                }
            }
            "pow2" => {
                const EXPECTED: &str = "pow2[:E0,E1,E2]";
                spec.expect_params(KIND, 0, 1, EXPECTED)?;
                match spec.params.first() {
                    None => Quantizer::Pow2(Pow2Edges::MIDPOINTS),
                    Some(p) => {
                        let parts: Vec<&str> = p.split(',').map(str::trim).collect();
                        if parts.len() != 3 {
                            return Err(spec.bad(
                                KIND,
                                format!("{} edges given, 3 needed", parts.len()),
                                EXPECTED,
                            ));
                        }
                        let mut edges = [0.0f32; 3];
                        for (e, part) in edges.iter_mut().zip(&parts) {
                            *e = part
                                .parse::<f32>()
                                .ok()
                                .filter(|v| v.is_finite())
                                .ok_or_else(|| {
                                    spec.bad(
                                        KIND,
                                        format!("edge `{part}` is not a finite number"),
                                        EXPECTED,
                                    )
                                })?;
                        }
                        Quantizer::Pow2(Pow2Edges::new(edges)?)
                    }
                }
            }
            "uniform" => {
                const EXPECTED: &str = "uniform:BITS";
                spec.expect_params(KIND, 1, 1, EXPECTED)?;
                let bits = spec.u32_or(KIND, 0, 0, EXPECTED)?;
                match u8::try_from(bits) {
                    Ok(bits) => Quantizer::Uniform { bits },
                    Err(_) => return Err(bits_error(bits)),
                }
            }
            _ => return Err(spec.unknown(KIND, Self::NAMES)),
        };
        q.validate()?;
        Ok(q)
    }
}

/// The resolved quantizer behind a [`HardQuantizer`].
#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Sign,
    Ternary {
        delta: f32,
    },
    Pow2 {
        edges: [f32; 3],
    },
    Uniform {
        bits: u8,
        /// `L = 2^bits - 1`, the largest integer level.
        max_int: u16,
        /// `L` as `f32`.
        max_f: f32,
    },
}

/// Integers of the pow2 levels, ascending.
const POW2_INTS: [i16; 7] = [-4, -2, -1, 0, 1, 2, 4];

/// `-1` if `x < 0`, else `+1` (so `-0.0` and NaN give `+1`).
#[inline(always)]
fn sign_int(x: f32) -> i32 {
    1 - 2 * i32::from(x < 0.0)
}

/// Ternary integer level `-1, 0, 1`.
#[inline(always)]
fn ternary_int(delta: f32, x: f32) -> i32 {
    sign_int(x) * i32::from(x.abs() > delta)
}

/// Index of the pow2 magnitude band of `|x|`: 0 (level 0), 1 (1/4), 2 (1/2), 3 (1).
#[inline(always)]
fn pow2_band(edges: &[f32; 3], x: f32) -> i32 {
    let a = x.abs();
    i32::from(a > edges[0]) + i32::from(a > edges[1]) + i32::from(a > edges[2])
}

/// Pow2 integer level in units of 1/4: `0, +-1, +-2, +-4`.
#[inline(always)]
fn pow2_int(edges: &[f32; 3], x: f32) -> i32 {
    let a = x.abs();
    let mag = i32::from(a > edges[0]) + i32::from(a > edges[1]) + 2 * i32::from(a > edges[2]);
    sign_int(x) * mag
}

/// Uniform code `i` in `0..=L`: the level `(2i - L) / L` nearest to `x`, ties to the larger.
///
/// The levels in units of `1/L` are the odd integers; the nearest odd integer to `u = x * L` is
/// `2 * floor(u / 2) + 1` (an even `u` rounds up). With `u` clamped to `[-L, L]`,
/// `u / 2 + (L + 1) / 2` is `>= 1/2`, so truncation is the floor.
#[inline(always)]
fn uniform_code(max_f: f32, x: f32) -> i32 {
    let x = if x.is_nan() { 0.0 } else { x };
    let u = (x * max_f).clamp(-max_f, max_f);
    (u * 0.5 + (max_f + 1.0) * 0.5) as i32
}

/// A fully determined hard quantizer `h`: [`Quantizer::resolve`] builds it. Cheap to copy.
///
/// See the [module documentation](self) for the exact rules, the NaN policy and the
/// integer/scale representation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HardQuantizer {
    kind: Kind,
}

impl HardQuantizer {
    /// `h(x)`. Always one of [`HardQuantizer::levels`], never `-0.0`; NaN gives `h(+0)`.
    #[inline]
    pub fn apply(&self, x: f32) -> f32 {
        match self.kind {
            Kind::Sign => sign_int(x) as f32,
            Kind::Ternary { delta } => ternary_int(delta, x) as f32,
            Kind::Pow2 { edges } => pow2_int(&edges, x) as f32 * 0.25,
            Kind::Uniform { max_int, max_f, .. } => {
                (2 * uniform_code(max_f, x) - i32::from(max_int)) as f32 * (1.0 / max_f)
            }
        }
    }

    /// `out[i] = h(x[i])`, bit-identical to [`HardQuantizer::apply`]; a branch-free loop.
    ///
    /// # Errors
    ///
    /// [`AqeError::LengthMismatch`] if `out.len() != x.len()`.
    pub fn apply_slice(&self, x: &[f32], out: &mut [f32]) -> Result<()> {
        check_len("hard quantizer apply", "out", x.len(), out.len())?;
        let pairs = out.iter_mut().zip(x);
        match self.kind {
            Kind::Sign => pairs.for_each(|(o, &x)| *o = sign_int(x) as f32),
            Kind::Ternary { delta } => pairs.for_each(|(o, &x)| *o = ternary_int(delta, x) as f32),
            Kind::Pow2 { edges } => {
                pairs.for_each(|(o, &x)| *o = pow2_int(&edges, x) as f32 * 0.25)
            }
            Kind::Uniform { max_int, max_f, .. } => {
                let l = i32::from(max_int);
                let scale = 1.0 / max_f;
                pairs.for_each(|(o, &x)| *o = (2 * uniform_code(max_f, x) - l) as f32 * scale);
            }
        }
        Ok(())
    }

    /// The index of `h(x)` in the ascending level list, `0..num_levels()`.
    #[inline]
    pub fn code(&self, x: f32) -> u8 {
        // Every value below lies in 0..=255, so the casts are lossless.
        match self.kind {
            Kind::Sign => u8::from(x < 0.0) ^ 1,
            Kind::Ternary { delta } => (1 + ternary_int(delta, x)) as u8,
            Kind::Pow2 { edges } => (3 + sign_int(x) * pow2_band(&edges, x)) as u8,
            Kind::Uniform { max_f, .. } => uniform_code(max_f, x) as u8,
        }
    }

    /// `codes[i] = code(x[i])`.
    ///
    /// # Errors
    ///
    /// [`AqeError::LengthMismatch`] if `codes.len() != x.len()`.
    pub fn code_slice(&self, x: &[f32], codes: &mut [u8]) -> Result<()> {
        check_len("hard quantizer code", "codes", x.len(), codes.len())?;
        codes
            .iter_mut()
            .zip(x)
            .for_each(|(c, &x)| *c = self.code(x));
        Ok(())
    }

    /// The integer of `h(x)` (see [`HardQuantizer::int_scale`]): `int_level(code(x))`,
    /// computed without the code table, so that a loop over a slice can be vectorised.
    ///
    /// ```
    /// use aqe_core::Quantizer;
    /// let h = Quantizer::ternary(0.5).unwrap().resolve(&[]);
    /// assert_eq!([h.int_of(-0.7), h.int_of(0.2), h.int_of(0.9)], [-1, 0, 1]);
    /// ```
    #[inline]
    pub fn int_of(&self, x: f32) -> i16 {
        // Every value below lies in -255..=255, so the casts are lossless.
        match self.kind {
            Kind::Sign => sign_int(x) as i16,
            Kind::Ternary { delta } => ternary_int(delta, x) as i16,
            Kind::Pow2 { edges } => pow2_int(&edges, x) as i16,
            Kind::Uniform { max_int, max_f, .. } => {
                (2 * uniform_code(max_f, x) - i32::from(max_int)) as i16
            }
        }
    }

    /// The integer of level `code` (see [`HardQuantizer::int_scale`]), `None` past the last.
    pub fn int_level(&self, code: u8) -> Option<i16> {
        let c = usize::from(code);
        match self.kind {
            Kind::Sign => [-1, 1].get(c).copied(),
            Kind::Ternary { .. } => [-1, 0, 1].get(c).copied(),
            Kind::Pow2 { .. } => POW2_INTS.get(c).copied(),
            Kind::Uniform { max_int, .. } => {
                let code = u16::from(code);
                // max_int <= 255, so 2 * code - max_int fits an i16.
                (code <= max_int).then(|| 2 * code as i16 - max_int as i16)
            }
        }
    }

    /// The common scale of the integer levels: `level == int_level as f32 * int_scale` exactly.
    /// `1` for sign and ternary, `1/4` for pow2, `1/(2^bits - 1)` (in `f32`) for uniform.
    pub fn int_scale(&self) -> f32 {
        match self.kind {
            Kind::Sign | Kind::Ternary { .. } => 1.0,
            Kind::Pow2 { .. } => 0.25,
            Kind::Uniform { max_f, .. } => 1.0 / max_f,
        }
    }

    /// The value of level `code`, `None` past the last.
    pub fn level(&self, code: u8) -> Option<f32> {
        self.int_level(code)
            .map(|i| f32::from(i) * self.int_scale())
    }

    /// All levels, ascending.
    pub fn levels(&self) -> Vec<f32> {
        (0..=u8::MAX).map_while(|c| self.level(c)).collect()
    }

    /// Number of levels: 2 (sign), 3 (ternary), 7 (pow2), `2^bits` (uniform).
    pub fn num_levels(&self) -> usize {
        match self.kind {
            Kind::Sign => 2,
            Kind::Ternary { .. } => 3,
            Kind::Pow2 { .. } => POW2_INTS.len(),
            Kind::Uniform { max_int, .. } => usize::from(max_int) + 1,
        }
    }

    /// Bit width: 1, 2, 3 or the uniform `bits`.
    pub fn bits(&self) -> u8 {
        match self.kind {
            Kind::Sign => 1,
            Kind::Ternary { .. } => 2,
            Kind::Pow2 { .. } => 3,
            Kind::Uniform { bits, .. } => bits,
        }
    }

    /// The short name of the quantizer, as [`Quantizer::name`].
    pub fn name(&self) -> &'static str {
        self.to_quantizer().name()
    }

    /// The ternary threshold in use (the resolved one for TWN); `None` for other quantizers.
    pub fn delta(&self) -> Option<f32> {
        match self.kind {
            Kind::Ternary { delta } => Some(delta),
            _ => None,
        }
    }

    /// The pow2 band edges; `None` for other quantizers.
    pub fn edges(&self) -> Option<[f32; 3]> {
        match self.kind {
            Kind::Pow2 { edges } => Some(edges),
            _ => None,
        }
    }

    /// A data-independent [`Quantizer`] that resolves to this `h` (TWN becomes its resolved
    /// fixed threshold), e.g. to record in a checkpoint or export.
    pub fn to_quantizer(&self) -> Quantizer {
        match self.kind {
            Kind::Sign => Quantizer::Sign,
            Kind::Ternary { delta } => Quantizer::Ternary(TernaryDelta::Fixed(delta)),
            Kind::Pow2 { edges } => Quantizer::Pow2(Pow2Edges(edges)),
            Kind::Uniform { bits, .. } => Quantizer::Uniform { bits },
        }
    }
}
