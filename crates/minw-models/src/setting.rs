//! MINW settings (M-bit inputs, N-bit weights) and the layer policy that turns them into per-layer
//! quantization.

use std::fmt;
use std::str::FromStr;

use aqe_candle::QuantConfig;
use aqe_core::{Estimator, Quantizer};

use crate::error::{Error, Result};

/// The precision of one side (activations or weights) of a layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Precision {
    /// Not quantized (the paper's "16" and "32").
    Float,
    /// 1-bit sign {-1, +1}.
    Bits1,
    /// 2-bit ternary {-1, 0, +1}.
    Bits2,
    /// 3-bit powers of two {0, +-1/4, +-1/2, +-1}.
    Bits3,
}

impl Precision {
    /// The bit width as the paper's tables write it (`Float` is 32).
    pub fn bits(self) -> u8 {
        match self {
            Precision::Float => 32,
            Precision::Bits1 => 1,
            Precision::Bits2 => 2,
            Precision::Bits3 => 3,
        }
    }

    /// The paper's quantizer for this width: `sign`, `ternary` (delta 0.5) or `pow2`.
    pub fn default_quantizer(self) -> Option<Quantizer> {
        match self {
            Precision::Float => None,
            Precision::Bits1 => Some(Quantizer::Sign),
            Precision::Bits2 => Some(Quantizer::Ternary(Default::default())),
            Precision::Bits3 => Some(Quantizer::Pow2(Default::default())),
        }
    }

    fn parse(s: &str) -> Option<Precision> {
        match s.trim() {
            "1" => Some(Precision::Bits1),
            "2" => Some(Precision::Bits2),
            "3" => Some(Precision::Bits3),
            "16" | "32" | "f" | "float" => Some(Precision::Float),
            _ => None,
        }
    }
}

/// A MINW setting `M/N`: activation bits M and weight bits N, as in the paper's Table I rows
/// (`1/1`, `2/3`, `16/1`, `32/32`, ...). `16` and `32` both mean "not quantized".
///
/// ```
/// use minw_models::{MinwSetting, Precision};
///
/// let s: MinwSetting = "2/3".parse()?;
/// assert_eq!((s.activations, s.weights), (Precision::Bits2, Precision::Bits3));
/// assert_eq!(s.to_string(), "2/3");
/// assert!("4/1".parse::<MinwSetting>().is_err());
/// # Ok::<(), minw_models::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MinwSetting {
    /// M: the precision of layer inputs.
    pub activations: Precision,
    /// N: the precision of weights.
    pub weights: Precision,
}

impl MinwSetting {
    /// The full-precision network (`32/32`).
    pub const FLOAT: MinwSetting = MinwSetting {
        activations: Precision::Float,
        weights: Precision::Float,
    };
    /// Binary weights and activations (`1/1`).
    pub const W1A1: MinwSetting = MinwSetting {
        activations: Precision::Bits1,
        weights: Precision::Bits1,
    };
}

impl FromStr for MinwSetting {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let bad = || {
            Error::Config {
            what: format!("bits `{s}`"),
            reason: "expected M/N (activation bits / weight bits) with M, N in {1, 2, 3, 16, 32}, e.g. 1/1 or 2/3".into(),
        }
        };
        let (m, n) = s.split_once('/').ok_or_else(bad)?;
        Ok(MinwSetting {
            activations: Precision::parse(m).ok_or_else(bad)?,
            weights: Precision::parse(n).ok_or_else(bad)?,
        })
    }
}

impl fmt::Display for MinwSetting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let side = |p: Precision| {
            if p == Precision::Float {
                "32".to_string()
            } else {
                p.bits().to_string()
            }
        };
        write!(f, "{}/{}", side(self.activations), side(self.weights))
    }
}

/// Which layers stay in float whatever the setting says.
///
/// The paper quantizes everything except the raw image entering the first convolution (first
/// layer weights and last layer included): that is [`LayerPolicy::default`]. Its ImageNet
/// ResNet-18 runs kept the first layer float (W1A1) and first and last float (W1A2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LayerPolicy {
    /// Keep the first layer's weights in float.
    pub first_layer: LayerPrecision,
    /// Keep the last layer's weights and input in float.
    pub last_layer: LayerPrecision,
}

/// Whether a layer follows the setting or stays float.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LayerPrecision {
    /// Quantized as the MINW setting says.
    #[default]
    Quantized,
    /// Float weights and inputs.
    Float,
}

/// Where a layer sits, for the policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Position {
    /// The first convolution (its input is the raw image, never quantized).
    First,
    /// Any layer between the first and the last.
    Middle,
    /// The classifier.
    Last,
}

/// Everything that decides how a model is quantized.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QuantPlan {
    /// The MINW setting.
    pub setting: MinwSetting,
    /// The estimator for every quantized tensor.
    pub estimator: Estimator,
    /// Float-layer overrides.
    pub policy: LayerPolicy,
    /// Activation quantizer override (default: the setting's width's paper quantizer).
    pub activation_quantizer: Option<Quantizer>,
    /// Weight quantizer override (default: the setting's width's paper quantizer).
    pub weight_quantizer: Option<Quantizer>,
}

impl QuantPlan {
    /// The plan for `setting` with `estimator` and the paper's defaults.
    pub fn new(setting: MinwSetting, estimator: Estimator) -> Self {
        QuantPlan {
            setting,
            estimator,
            policy: LayerPolicy::default(),
            activation_quantizer: None,
            weight_quantizer: None,
        }
    }

    /// The activation quantizer, if activations are quantized.
    pub fn activation(&self) -> Option<Quantizer> {
        self.setting
            .activations
            .default_quantizer()
            .map(|d| self.activation_quantizer.unwrap_or(d))
    }

    /// The weight quantizer, if weights are quantized.
    pub fn weight(&self) -> Option<Quantizer> {
        self.setting
            .weights
            .default_quantizer()
            .map(|d| self.weight_quantizer.unwrap_or(d))
    }

    /// The quantization of a layer at `position`.
    pub fn layer(&self, position: Position) -> Result<QuantConfig> {
        let (input, kernel) = match position {
            Position::First if self.policy.first_layer == LayerPrecision::Float => (None, None),
            Position::First => (None, self.weight()),
            Position::Last if self.policy.last_layer == LayerPrecision::Float => (None, None),
            Position::Middle | Position::Last => (self.activation(), self.weight()),
        };
        Ok(QuantConfig::minw(input, kernel, self.estimator)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_parse_and_print() {
        for s in [
            "1/1", "1/2", "1/3", "2/1", "2/2", "2/3", "3/1", "3/2", "3/3", "16/1", "16/3", "32/32",
        ] {
            let m: MinwSetting = s.parse().unwrap();
            let printed = m.to_string();
            assert_eq!(printed.replace("32", "16"), s.replace("32", "16"), "{s}");
        }
        for bad in ["1", "1/4", "x/1", "1/1/1", ""] {
            assert!(bad.parse::<MinwSetting>().is_err(), "{bad}");
        }
    }

    #[test]
    fn policy_keeps_the_image_float_and_honours_overrides() {
        let plan = QuantPlan::new(MinwSetting::W1A1, Estimator::default());
        let first = plan.layer(Position::First).unwrap();
        assert!(first.input_quantizer.is_none() && first.kernel_quantizer.is_some());
        let last = plan.layer(Position::Last).unwrap();
        assert!(last.input_quantizer.is_some() && last.kernel_quantizer.is_some());
        let mut p = plan;
        p.policy = LayerPolicy {
            first_layer: LayerPrecision::Float,
            last_layer: LayerPrecision::Float,
        };
        assert_eq!(p.layer(Position::First).unwrap(), QuantConfig::float());
        assert_eq!(p.layer(Position::Last).unwrap(), QuantConfig::float());
        let float = QuantPlan::new(MinwSetting::FLOAT, Estimator::default());
        assert_eq!(float.layer(Position::Middle).unwrap(), QuantConfig::float());
    }
}
