//! The CIFAR ConvNet of Courbariaux et al. (BNN) and its narrower variants, the paper's Models
//! A-D: `2x128C3 - MP2 - 2x256C3 - MP2 - 2x512C3 - MP2 - 1024FC - 1024FC - 10FC`.
//!
//! Every block is `QuantConv -> (MaxPool) -> BatchNorm -> HardTanh` (BatchNorm in every conv and
//! FC layer, the last FC followed by BatchNorm without HardTanh). Model B halves the conv
//! channels, C also halves the FC widths, D halves the FC widths again.

use aqe_candle::norm::{Activation, BatchNormConfig};
use aqe_candle::pool::{MaxPoolConfig, max_pool2d};
use aqe_candle::{
    Alphas, BatchNorm, QuantConv2d, QuantConv2dConfig, QuantLinear, QuantLinearConfig, Scope,
    batch_norm, quant_conv2d, quant_linear,
};
use candle_core::{ModuleT, Result as CandleResult, Tensor};

use crate::InputShape;
use crate::error::{Error, Result};
use crate::setting::{Position, QuantPlan};

/// Which of the paper's ConvNets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConvNetVariant {
    /// 128-128-256-256-512-512 conv channels, 1024-1024 FC.
    A,
    /// Half the conv channels of A.
    B,
    /// B with 512-wide FC layers.
    C,
    /// C with 256-wide FC layers.
    D,
}

impl ConvNetVariant {
    /// The six conv widths.
    pub fn conv_channels(self) -> [usize; 6] {
        match self {
            ConvNetVariant::A => [128, 128, 256, 256, 512, 512],
            _ => [64, 64, 128, 128, 256, 256],
        }
    }

    /// The two hidden FC widths.
    pub fn fc_width(self) -> usize {
        match self {
            ConvNetVariant::A | ConvNetVariant::B => 1024,
            ConvNetVariant::C => 512,
            ConvNetVariant::D => 256,
        }
    }

    /// `"A"` .. `"D"`.
    pub fn name(self) -> &'static str {
        match self {
            ConvNetVariant::A => "A",
            ConvNetVariant::B => "B",
            ConvNetVariant::C => "C",
            ConvNetVariant::D => "D",
        }
    }
}

/// One conv block: conv, optional 2x2 max-pool, BatchNorm + HardTanh.
#[derive(Debug, Clone)]
pub struct ConvBlock {
    /// The convolution.
    pub conv: QuantConv2d,
    /// Whether a 2x2 max-pool follows the convolution.
    pub pool: bool,
    /// BatchNorm fused with HardTanh.
    pub bn: BatchNorm,
}

/// One FC block: linear, BatchNorm (+ HardTanh except for the classifier).
#[derive(Debug, Clone)]
pub struct FcBlock {
    /// The fully connected layer.
    pub fc: QuantLinear,
    /// BatchNorm, fused with HardTanh for hidden layers.
    pub bn: BatchNorm,
}

/// A ConvNet A-D.
#[derive(Debug, Clone)]
pub struct ConvNet {
    variant: ConvNetVariant,
    convs: Vec<ConvBlock>,
    fcs: Vec<FcBlock>,
}

impl ConvNet {
    /// Builds the variant for `input` images and `classes` classes with the quantization `plan`.
    pub fn new(
        variant: ConvNetVariant,
        input: InputShape,
        classes: usize,
        plan: &QuantPlan,
        alphas: &Alphas,
        scope: Scope,
    ) -> Result<Self> {
        let mut size = (input.height, input.width);
        let mut in_c = input.channels;
        let hidden = BatchNormConfig {
            activation: Activation::HardTanh,
            ..Default::default()
        };
        let mut convs = Vec::new();
        for (i, &out_c) in variant.conv_channels().iter().enumerate() {
            let position = if i == 0 {
                Position::First
            } else {
                Position::Middle
            };
            let cfg = QuantConv2dConfig {
                stride: 1,
                padding: 1,
                bias: false,
                quant: plan.layer(position)?,
            };
            let s = scope.pp(format!("conv{}", i + 1));
            let conv = quant_conv2d(in_c, out_c, 3, cfg, alphas, s.clone())?;
            let pool = i % 2 == 1;
            if pool {
                if size.0 < 2 || size.1 < 2 {
                    return Err(Error::Config {
                        what: format!("ConvNet {}", variant.name()),
                        reason: format!(
                            "input {}x{} is too small for three 2x2 max-pools",
                            input.height, input.width
                        ),
                    });
                }
                size = (size.0 / 2, size.1 / 2);
            }
            convs.push(ConvBlock {
                conv,
                pool,
                bn: batch_norm(out_c, hidden, s.pp("bn"))?,
            });
            in_c = out_c;
        }
        let width = variant.fc_width();
        let dims = [size.0 * size.1 * in_c, width, width, classes];
        let mut fcs = Vec::new();
        for i in 0..3 {
            let last = i == 2;
            let position = if last {
                Position::Last
            } else {
                Position::Middle
            };
            let cfg = QuantLinearConfig {
                bias: false,
                quant: plan.layer(position)?,
            };
            let s = scope.pp(format!("fc{}", i + 1));
            let fc = quant_linear(dims[i], dims[i + 1], cfg, alphas, s.clone())?;
            let bn_cfg = if last {
                BatchNormConfig::default()
            } else {
                hidden
            };
            fcs.push(FcBlock {
                fc,
                bn: batch_norm(dims[i + 1], bn_cfg, s.pp("bn"))?,
            });
        }
        Ok(ConvNet {
            variant,
            convs,
            fcs,
        })
    }

    /// The variant.
    pub fn variant(&self) -> ConvNetVariant {
        self.variant
    }

    /// The conv blocks, in order.
    pub fn conv_blocks(&self) -> &[ConvBlock] {
        &self.convs
    }

    /// The FC blocks, in order (the last is the classifier).
    pub fn fc_blocks(&self) -> &[FcBlock] {
        &self.fcs
    }
}

impl ModuleT for ConvNet {
    fn forward_t(&self, x: &Tensor, train: bool) -> CandleResult<Tensor> {
        let mut h = x.clone();
        for b in &self.convs {
            h = b.conv.forward_t(&h, train)?;
            if b.pool {
                h = max_pool2d(&h, MaxPoolConfig::default())?;
            }
            h = b.bn.forward_t(&h, train)?;
        }
        let mut h = h.flatten_from(1)?;
        for b in &self.fcs {
            h = b.bn.forward_t(&b.fc.forward_t(&h, train)?, train)?;
        }
        Ok(h)
    }
}
