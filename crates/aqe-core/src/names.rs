//! Parsing of the short spec strings shared by quantizers, estimators and schedules.
//!
//! A spec is a name optionally followed by `:`-separated parameters, e.g. `ternary:0.3`,
//! `linear:0.5:1.0` or `multistep:100,150:0.1`. Names are case-insensitive and `-` equals `_`.

use crate::error::{AqeError, Result};

/// A parsed spec: the normalised name and its raw parameters.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Spec<'a> {
    /// Lower-case name with `-` replaced by `_`.
    pub(crate) name: String,
    /// The `:`-separated parameters after the name, trimmed.
    pub(crate) params: Vec<&'a str>,
    /// The whole input, for error messages.
    pub(crate) raw: &'a str,
}

impl<'a> Spec<'a> {
    /// Splits `raw` into name and parameters.
    pub(crate) fn parse(raw: &'a str) -> Spec<'a> {
        let mut parts = raw.trim().split(':').map(str::trim);
        let name = parts
            .next()
            .unwrap_or("")
            .to_ascii_lowercase()
            .replace('-', "_");
        Spec {
            name,
            params: parts.collect(),
            raw,
        }
    }

    /// The error for an unknown name of `kind`.
    pub(crate) fn unknown(&self, kind: &'static str, valid: &'static [&'static str]) -> AqeError {
        AqeError::UnknownName {
            kind,
            name: self.raw.trim().to_string(),
            valid,
        }
    }

    /// An error saying the spec is malformed.
    pub(crate) fn bad(
        &self,
        kind: &'static str,
        reason: impl Into<String>,
        expected: &'static str,
    ) -> AqeError {
        AqeError::BadSpec {
            kind,
            spec: self.raw.trim().to_string(),
            reason: reason.into(),
            expected,
        }
    }

    /// Fails unless there are between `min` and `max` parameters.
    pub(crate) fn expect_params(
        &self,
        kind: &'static str,
        min: usize,
        max: usize,
        expected: &'static str,
    ) -> Result<()> {
        let n = self.params.len();
        if n < min || n > max {
            let reason = if min == max {
                format!("takes {min} parameter(s), got {n}")
            } else {
                format!("takes {min} to {max} parameter(s), got {n}")
            };
            return Err(self.bad(kind, reason, expected));
        }
        Ok(())
    }

    /// Parameter `i` as `f32`, or `default` when absent.
    pub(crate) fn f32_or(
        &self,
        kind: &'static str,
        i: usize,
        default: f32,
        expected: &'static str,
    ) -> Result<f32> {
        match self.params.get(i) {
            None => Ok(default),
            Some(p) => p
                .parse::<f32>()
                .ok()
                .filter(|v| v.is_finite())
                .ok_or_else(|| {
                    self.bad(
                        kind,
                        format!("parameter `{p}` is not a finite number"),
                        expected,
                    )
                }),
        }
    }

    /// Parameter `i` as `u32`, or `default` when absent.
    pub(crate) fn u32_or(
        &self,
        kind: &'static str,
        i: usize,
        default: u32,
        expected: &'static str,
    ) -> Result<u32> {
        match self.params.get(i) {
            None => Ok(default),
            Some(p) => p.parse::<u32>().map_err(|_| {
                self.bad(
                    kind,
                    format!("parameter `{p}` is not a non-negative integer"),
                    expected,
                )
            }),
        }
    }
}

/// Implements `Serialize`/`Deserialize` through `Display`/`FromStr`, so configs hold the same
/// short spec strings as the command line.
macro_rules! serde_via_str {
    ($t:ty) => {
        impl serde::Serialize for $t {
            fn serialize<S: serde::Serializer>(
                &self,
                s: S,
            ) -> std::result::Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }
        impl<'de> serde::Deserialize<'de> for $t {
            fn deserialize<D: serde::Deserializer<'de>>(
                d: D,
            ) -> std::result::Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str> as serde::Deserialize>::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}
pub(crate) use serde_via_str;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_name_and_params() {
        let s = Spec::parse(" Linear-Warm:0.5 : 1 ");
        assert_eq!(s.name, "linear_warm");
        assert_eq!(s.params, vec!["0.5", "1"]);
    }

    #[test]
    fn bad_number_is_an_error() {
        let s = Spec::parse("ternary:abc");
        let e = s
            .f32_or("quantizer", 0, 0.5, "ternary[:DELTA]")
            .unwrap_err();
        assert!(
            e.to_string().contains("`abc` is not a finite number"),
            "{e}"
        );
        assert!(s.f32_or("quantizer", 0, 0.5, "x").is_err());
        assert!(
            Spec::parse("ternary:inf")
                .f32_or("quantizer", 0, 0.5, "x")
                .is_err()
        );
    }

    #[test]
    fn param_count_is_checked() {
        let s = Spec::parse("sign:1");
        assert!(s.expect_params("quantizer", 0, 0, "sign").is_err());
        assert!(
            Spec::parse("sign")
                .expect_params("quantizer", 0, 0, "sign")
                .is_ok()
        );
    }
}
