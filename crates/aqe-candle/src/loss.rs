//! Classification losses: cross-entropy and BNN's squared hinge.

use candle_core::{DType, Result, Tensor};

/// Which loss a run trains with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Loss {
    /// Softmax cross-entropy (mean over the batch).
    #[default]
    CrossEntropy,
    /// BNN's squared hinge: mean over batch and classes of `max(0, 1 - t * y)^2`, with targets
    /// `t = +1` for the true class and `-1` otherwise (Courbariaux et al. 2016).
    SquaredHinge,
}

impl Loss {
    /// Short name: `"cross_entropy"` or `"squared_hinge"`.
    pub fn name(self) -> &'static str {
        match self {
            Loss::CrossEntropy => "cross_entropy",
            Loss::SquaredHinge => "squared_hinge",
        }
    }

    /// The loss of `logits` (`[batch, classes]`) against `labels` (`[batch]`, `u32`).
    pub fn compute(self, logits: &Tensor, labels: &Tensor) -> Result<Tensor> {
        match self {
            Loss::CrossEntropy => cross_entropy(logits, labels),
            Loss::SquaredHinge => squared_hinge(logits, labels),
        }
    }
}

impl std::str::FromStr for Loss {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.trim().to_ascii_lowercase().replace('-', "_").as_str() {
            "cross_entropy" | "ce" => Ok(Loss::CrossEntropy),
            "squared_hinge" | "hinge" => Ok(Loss::SquaredHinge),
            other => Err(format!(
                "unknown loss `{other}`; valid names are: cross_entropy, squared_hinge"
            )),
        }
    }
}

impl std::fmt::Display for Loss {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

fn check(logits: &Tensor, labels: &Tensor) -> Result<(usize, usize)> {
    let (b, c) = logits.dims2()?;
    if labels.dims() != [b] {
        candle_core::bail!(
            "loss: logits are [{b}, {c}] but labels have shape {:?}",
            labels.dims()
        );
    }
    Ok((b, c))
}

/// Softmax cross-entropy, mean over the batch.
pub fn cross_entropy(logits: &Tensor, labels: &Tensor) -> Result<Tensor> {
    check(logits, labels)?;
    candle_nn::loss::cross_entropy(logits, &labels.to_dtype(DType::U32)?)
}

/// BNN's squared hinge loss, mean over batch and classes.
///
/// ```
/// use aqe_candle::loss::squared_hinge;
/// use candle_core::{Device, Tensor};
///
/// let logits = Tensor::new(&[[1.0f32, -1.0], [0.0, 0.5]], &Device::Cpu)?;
/// let labels = Tensor::new(&[0u32, 0], &Device::Cpu)?;
/// // Row 0 meets both margins; row 1: (1 - 0)^2 + (1 + 0.5)^2 = 3.25; mean over 4 entries.
/// assert_eq!(squared_hinge(&logits, &labels)?.to_scalar::<f32>()?, 0.8125);
/// # Ok::<(), candle_core::Error>(())
/// ```
pub fn squared_hinge(logits: &Tensor, labels: &Tensor) -> Result<Tensor> {
    let (_, c) = check(logits, labels)?;
    let onehot = candle_nn::encoding::one_hot(labels.to_dtype(DType::U32)?, c, 1f32, -1f32)?;
    let margin = (1.0 - (logits * onehot)?)?.relu()?;
    margin.sqr()?.mean_all()
}
