//! The paper's ImageNet models: AlexNet with BatchNorm in place of LRN (Table IV) and ResNet-18
//! (Table V; ResNet-34 too). Definitions and shapes; training them is for users with a GPU.
//!
//! AlexNet-BN: `96C11/4 - MP3/2 - 256C5 - MP3/2 - 384C3 - 384C3 - 256C3 - MP3/2 - 4096FC -
//! 4096FC - 1000FC` on 224x224 inputs (padding 2 on the first conv so 224 gives 55x55), every
//! conv and FC followed by BatchNorm, then HardTanh (quantized activations) or ReLU (float).
//! ResNet-18: `7x7/2, 64` stem with BatchNorm, activation and a 3x3/2 max-pool, four stages of
//! basic blocks (64, 128, 256, 512 channels, stride 2 entering stages 2-4, projection
//! shortcuts), global average pooling and the classifier followed by BatchNorm.

use aqe_candle::norm::{Activation, BatchNormConfig};
use aqe_candle::pool::{MaxPoolConfig, max_pool2d};
use aqe_candle::{
    Alphas, BatchNorm, QuantConv2d, QuantConv2dConfig, QuantLinear, QuantLinearConfig, Scope,
    batch_norm, quant_conv2d, quant_linear,
};
use candle_core::{ModuleT, Result as CandleResult, Tensor};

use crate::InputShape;
use crate::error::{Error, Result};
use crate::resnet::{BasicBlock, BlockActivation, PoolHead, ShortcutKind};
use crate::setting::{Position, Precision, QuantPlan};
use crate::summary::{LayerRow, conv_row, linear_row};

const POOL3: MaxPoolConfig = MaxPoolConfig {
    kernel: 3,
    stride: 2,
    padding: 0,
};

fn activation(plan: &QuantPlan) -> Activation {
    if plan.setting.activations == Precision::Float {
        Activation::Relu
    } else {
        Activation::HardTanh
    }
}

/// AlexNet with BatchNorm.
#[derive(Debug, Clone)]
pub struct AlexNetBn {
    convs: Vec<(QuantConv2d, bool, BatchNorm)>,
    fcs: Vec<(QuantLinear, BatchNorm)>,
}

impl AlexNetBn {
    /// Builds AlexNet-BN for `input` images (at least 224x224 for the usual shapes) and
    /// `classes` classes.
    pub fn new(
        input: InputShape,
        classes: usize,
        plan: &QuantPlan,
        alphas: &Alphas,
        scope: Scope,
    ) -> Result<Self> {
        let act = BatchNormConfig {
            activation: activation(plan),
            ..Default::default()
        };
        // (out channels, kernel, stride, padding, max-pool after)
        let spec = [
            (96, 11, 4, 2, true),
            (256, 5, 1, 2, true),
            (384, 3, 1, 1, false),
            (384, 3, 1, 1, false),
            (256, 3, 1, 1, true),
        ];
        let mut convs = Vec::new();
        let (mut h, mut w, mut in_c) = (input.height, input.width, input.channels);
        for (i, &(out_c, k, stride, padding, pool)) in spec.iter().enumerate() {
            let position = if i == 0 {
                Position::First
            } else {
                Position::Middle
            };
            let cfg = QuantConv2dConfig {
                stride,
                padding,
                bias: false,
                quant: plan.layer(position)?,
            };
            let s = scope.pp(format!("conv{}", i + 1));
            let conv = quant_conv2d(in_c, out_c, k, cfg, alphas, s.clone())?;
            let too_small = || Error::Config {
                what: "AlexNet-BN".into(),
                reason: format!(
                    "input {}x{} is too small (224x224 expected)",
                    input.height, input.width
                ),
            };
            h = (h + 2 * padding).checked_sub(k).ok_or_else(too_small)? / stride + 1;
            w = (w + 2 * padding).checked_sub(k).ok_or_else(too_small)? / stride + 1;
            if pool {
                if h < 3 || w < 3 {
                    return Err(too_small());
                }
                (h, w) = (POOL3.out_size(h), POOL3.out_size(w));
            }
            convs.push((conv, pool, batch_norm(out_c, act, s.pp("bn"))?));
            in_c = out_c;
        }
        let dims = [h * w * in_c, 4096, 4096, classes];
        let mut fcs = Vec::new();
        for i in 0..3 {
            let last = i == 2;
            let cfg = QuantLinearConfig {
                bias: false,
                quant: plan.layer(if last {
                    Position::Last
                } else {
                    Position::Middle
                })?,
            };
            let s = scope.pp(format!("fc{}", i + 6));
            let fc = quant_linear(dims[i], dims[i + 1], cfg, alphas, s.clone())?;
            fcs.push((
                fc,
                batch_norm(
                    dims[i + 1],
                    if last {
                        BatchNormConfig::default()
                    } else {
                        act
                    },
                    s.pp("bn"),
                )?,
            ));
        }
        Ok(AlexNetBn { convs, fcs })
    }

    pub(crate) fn summary_rows(&self, mut hw: (usize, usize)) -> Vec<LayerRow> {
        let mut rows = Vec::new();
        for (conv, pool, _) in &self.convs {
            let (row, out) = conv_row(conv, hw);
            rows.push(row);
            hw = if *pool {
                (POOL3.out_size(out.0), POOL3.out_size(out.1))
            } else {
                out
            };
        }
        rows.extend(self.fcs.iter().map(|(fc, _)| linear_row(fc)));
        rows
    }
}

impl ModuleT for AlexNetBn {
    fn forward_t(&self, x: &Tensor, train: bool) -> CandleResult<Tensor> {
        let mut h = x.clone();
        for (conv, pool, bn) in &self.convs {
            h = conv.forward_t(&h, train)?;
            // Pooling before BatchNorm, as in the paper's block (max-pool commutes with a
            // monotone increasing BatchNorm + activation, not with a decreasing one).
            if *pool {
                h = max_pool2d(&h, POOL3)?;
            }
            h = bn.forward_t(&h, train)?;
        }
        let mut h = h.flatten_from(1)?;
        for (fc, bn) in &self.fcs {
            h = bn.forward_t(&fc.forward_t(&h, train)?, train)?;
        }
        Ok(h)
    }
}

/// An ImageNet ResNet with basic blocks (ResNet-18 or ResNet-34).
#[derive(Debug, Clone)]
pub struct ResNetImageNet {
    depth: usize,
    stem: QuantConv2d,
    stem_bn: BatchNorm,
    blocks: Vec<BasicBlock>,
    head: PoolHead,
}

impl ResNetImageNet {
    /// Builds ResNet-18 or ResNet-34.
    pub fn new(
        depth: usize,
        input: InputShape,
        classes: usize,
        plan: &QuantPlan,
        alphas: &Alphas,
        scope: Scope,
    ) -> Result<Self> {
        let per_stage = match depth {
            18 => [2, 2, 2, 2],
            34 => [3, 4, 6, 3],
            _ => {
                return Err(Error::Config {
                    what: format!("ResNet-{depth}"),
                    reason: "ImageNet ResNets here: 18 or 34".into(),
                });
            }
        };
        let act = if plan.setting.activations == Precision::Float {
            BlockActivation::Relu
        } else {
            BlockActivation::HardTanh
        };
        let stem_cfg = QuantConv2dConfig {
            stride: 2,
            padding: 3,
            bias: false,
            quant: plan.layer(Position::First)?,
        };
        let stem = quant_conv2d(input.channels, 64, 7, stem_cfg, alphas, scope.pp("stem"))?;
        let stem_bn = batch_norm(
            64,
            BatchNormConfig {
                activation: activation(plan),
                ..Default::default()
            },
            scope.pp("stem").pp("bn"),
        )?;
        let mut blocks = Vec::new();
        let mut in_c = 64;
        for (stage, (&n, out_c)) in per_stage.iter().zip([64usize, 128, 256, 512]).enumerate() {
            for b in 0..n {
                let stride = if stage > 0 && b == 0 { 2 } else { 1 };
                let s = scope
                    .pp(format!("stage{}", stage + 1))
                    .pp(format!("block{}", b + 1));
                blocks.push(BasicBlock::new(
                    in_c,
                    out_c,
                    stride,
                    ShortcutKind::ProjectionB,
                    act,
                    plan,
                    alphas,
                    &s,
                )?);
                in_c = out_c;
            }
        }
        let head = PoolHead::new(512, classes, plan, alphas, &scope)?;
        Ok(ResNetImageNet {
            depth,
            stem,
            stem_bn,
            blocks,
            head,
        })
    }

    /// The depth.
    pub fn depth(&self) -> usize {
        self.depth
    }

    pub(crate) fn summary_rows(&self, hw: (usize, usize)) -> Vec<LayerRow> {
        let stem_pool = MaxPoolConfig {
            kernel: 3,
            stride: 2,
            padding: 1,
        };
        let (row, out) = conv_row(&self.stem, hw);
        let mut rows = vec![row];
        let mut hw = (stem_pool.out_size(out.0), stem_pool.out_size(out.1));
        for b in &self.blocks {
            let (r, out) = b.summary_rows(hw);
            rows.extend(r);
            hw = out;
        }
        rows.push(self.head.summary_row());
        rows
    }
}

impl ModuleT for ResNetImageNet {
    fn forward_t(&self, x: &Tensor, train: bool) -> CandleResult<Tensor> {
        let h = self
            .stem_bn
            .forward_t(&self.stem.forward_t(x, train)?, train)?;
        let mut h = max_pool2d(
            &h,
            MaxPoolConfig {
                kernel: 3,
                stride: 2,
                padding: 1,
            },
        )?;
        for b in &self.blocks {
            h = b.forward_t(&h, train)?;
        }
        self.head.forward_t(&h, train)
    }
}
