//! ResNets for CIFAR-size images (He et al. 2016): ResNet-20/32/44/56/110, depth `6n + 2`.
//!
//! Stem `3x3, 16` then three stages of `n` basic blocks (16, 32, 64 channels; stride 2 entering
//! stages 2 and 3), global average pooling and the classifier. A basic block is
//! `conv -> BN -> act -> conv -> BN`, plus the shortcut, then `act`. With quantized activations
//! `act` is HardTanh (it provides the `1{|x| <= 1}` gate and keeps inputs of the next quantizer in
//! `[-1, 1]`); with float activations it is ReLU. The down-sampling shortcut is He et al.'s
//! option A (sub-sample, zero-pad the new channels: no parameters) or option B (1x1 conv + BN).
//! The classifier is followed by BatchNorm, as every layer in the paper's networks.

use aqe_candle::norm::{Activation, BatchNormConfig, add_activation};
use aqe_candle::{
    Alphas, BatchNorm, QuantConv2d, QuantConv2dConfig, QuantLinear, QuantLinearConfig, Scope,
    batch_norm, quant_conv2d, quant_linear,
};
use candle_core::{ModuleT, Result as CandleResult, Tensor};

use crate::InputShape;
use crate::error::{Error, Result};
use crate::setting::{Position, Precision, QuantPlan};

/// How a block that changes shape routes its shortcut.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ShortcutKind {
    /// Sub-sample by the stride and zero-pad the new channels (He et al.'s option A, the CIFAR
    /// default: ResNet-20 has 0.27 M parameters).
    #[default]
    PadA,
    /// A 1x1 convolution with stride and BatchNorm (option B), quantized like the block.
    ProjectionB,
}

/// The activation after BatchNorm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockActivation {
    /// `clamp(x, -1, 1)`.
    HardTanh,
    /// `max(x, 0)`.
    Relu,
}

impl BlockActivation {
    /// The fused form used by BatchNorm and the residual sum.
    fn fused(self) -> Activation {
        match self {
            BlockActivation::HardTanh => Activation::HardTanh,
            BlockActivation::Relu => Activation::Relu,
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) enum Shortcut {
    Identity,
    PadA {
        stride: usize,
        pad_before: usize,
        pad_after: usize,
    },
    ProjectionB {
        conv: QuantConv2d,
        bn: BatchNorm,
    },
}

/// One basic block.
#[derive(Debug, Clone)]
pub struct BasicBlock {
    pub(crate) conv1: QuantConv2d,
    pub(crate) bn1: BatchNorm,
    pub(crate) conv2: QuantConv2d,
    pub(crate) bn2: BatchNorm,
    pub(crate) shortcut: Shortcut,
    pub(crate) act: BlockActivation,
}

impl BasicBlock {
    /// A block from `in_c` to `out_c` channels whose first conv has `stride`; the shortcut is
    /// the identity when the shape is kept, otherwise of kind `shortcut`.
    #[allow(
        clippy::too_many_arguments,
        reason = "a constructor for the ResNet builders"
    )]
    pub(crate) fn new(
        in_c: usize,
        out_c: usize,
        stride: usize,
        shortcut: ShortcutKind,
        act: BlockActivation,
        plan: &QuantPlan,
        alphas: &Alphas,
        s: &Scope,
    ) -> Result<Self> {
        let conv_cfg = |stride, padding| -> Result<QuantConv2dConfig> {
            Ok(QuantConv2dConfig {
                stride,
                padding,
                bias: false,
                quant: plan.layer(Position::Middle)?,
            })
        };
        let bn_act = BatchNormConfig {
            activation: act.fused(),
            ..Default::default()
        };
        let conv1 = quant_conv2d(in_c, out_c, 3, conv_cfg(stride, 1)?, alphas, s.pp("conv1"))?;
        let bn1 = batch_norm(out_c, bn_act, s.pp("conv1").pp("bn"))?;
        let conv2 = quant_conv2d(out_c, out_c, 3, conv_cfg(1, 1)?, alphas, s.pp("conv2"))?;
        let bn2 = batch_norm(out_c, BatchNormConfig::default(), s.pp("conv2").pp("bn"))?;
        let shortcut = if stride == 1 && in_c == out_c {
            Shortcut::Identity
        } else {
            match shortcut {
                ShortcutKind::PadA => {
                    let extra = out_c.checked_sub(in_c).ok_or_else(|| Error::Config {
                        what: s.prefix().to_string(),
                        reason: "an option-A shortcut cannot reduce channels".into(),
                    })?;
                    Shortcut::PadA {
                        stride,
                        pad_before: extra / 2,
                        pad_after: extra - extra / 2,
                    }
                }
                ShortcutKind::ProjectionB => Shortcut::ProjectionB {
                    conv: quant_conv2d(
                        in_c,
                        out_c,
                        1,
                        conv_cfg(stride, 0)?,
                        alphas,
                        s.pp("shortcut"),
                    )?,
                    bn: batch_norm(out_c, BatchNormConfig::default(), s.pp("shortcut").pp("bn"))?,
                },
            }
        };
        Ok(BasicBlock {
            conv1,
            bn1,
            conv2,
            bn2,
            shortcut,
            act,
        })
    }

    /// Summary rows of the block's convs for an input of `hw`; returns them with the output size.
    pub(crate) fn summary_rows(
        &self,
        hw: (usize, usize),
    ) -> (Vec<crate::summary::LayerRow>, (usize, usize)) {
        use crate::summary::conv_row;
        let (r1, mid) = conv_row(&self.conv1, hw);
        let (r2, out) = conv_row(&self.conv2, mid);
        let mut rows = vec![r1, r2];
        if let Shortcut::ProjectionB { conv, .. } = &self.shortcut {
            rows.push(conv_row(conv, hw).0);
        }
        (rows, out)
    }
}

impl ModuleT for BasicBlock {
    fn forward_t(&self, x: &Tensor, train: bool) -> CandleResult<Tensor> {
        let h = self
            .bn1
            .forward_t(&self.conv1.forward_t(x, train)?, train)?;
        let h = self
            .bn2
            .forward_t(&self.conv2.forward_t(&h, train)?, train)?;
        let s = match &self.shortcut {
            Shortcut::Identity => x.clone(),
            Shortcut::PadA {
                stride,
                pad_before,
                pad_after,
            } => {
                let (n, hh, ww, c) = x.dims4()?;
                let (oh, ow) = (hh.div_ceil(*stride), ww.div_ceil(*stride));
                // Keep rows and columns 0, stride, 2*stride, ...: pad to a multiple of the stride,
                // split each axis into (out, stride) and take index 0 of the inner part.
                let padded = x.pad_with_zeros(1, 0, oh * stride - hh)?.pad_with_zeros(
                    2,
                    0,
                    ow * stride - ww,
                )?;
                let sub = padded
                    .reshape((n, oh, *stride, ow, *stride, c))?
                    .narrow(2, 0, 1)?
                    .narrow(4, 0, 1)?
                    .reshape((n, oh, ow, c))?;
                sub.pad_with_zeros(3, *pad_before, *pad_after)?
            }
            Shortcut::ProjectionB { conv, bn } => {
                bn.forward_t(&conv.forward_t(x, train)?, train)?
            }
        };
        add_activation(&h, &s, self.act.fused())
    }
}

/// Global average pooling, the classifier and its BatchNorm: the head of every ResNet here.
#[derive(Debug, Clone)]
pub(crate) struct PoolHead {
    pub(crate) fc: QuantLinear,
    pub(crate) bn: BatchNorm,
}

impl PoolHead {
    /// A head from `features` pooled channels to `classes`, quantized as the plan's last layer.
    pub(crate) fn new(
        features: usize,
        classes: usize,
        plan: &QuantPlan,
        alphas: &Alphas,
        scope: &Scope,
    ) -> Result<Self> {
        let cfg = QuantLinearConfig {
            bias: false,
            quant: plan.layer(Position::Last)?,
        };
        let fc = quant_linear(features, classes, cfg, alphas, scope.pp("fc"))?;
        let bn = batch_norm(classes, BatchNormConfig::default(), scope.pp("fc").pp("bn"))?;
        Ok(PoolHead { fc, bn })
    }

    /// The classifier's summary row.
    pub(crate) fn summary_row(&self) -> crate::summary::LayerRow {
        crate::summary::linear_row(&self.fc)
    }
}

impl ModuleT for PoolHead {
    fn forward_t(&self, x: &Tensor, train: bool) -> CandleResult<Tensor> {
        let pooled = x.mean((1, 2))?;
        self.bn
            .forward_t(&self.fc.forward_t(&pooled, train)?, train)
    }
}

/// A CIFAR ResNet of depth `6n + 2`.
#[derive(Debug, Clone)]
pub struct ResNetCifar {
    depth: usize,
    pub(crate) stem: QuantConv2d,
    pub(crate) stem_bn: BatchNorm,
    pub(crate) blocks: Vec<BasicBlock>,
    pub(crate) head: PoolHead,
    act: BlockActivation,
}

impl ResNetCifar {
    /// Builds ResNet-`depth` (20, 32, 44, 56, 110, or any `6n + 2`).
    pub fn new(
        depth: usize,
        shortcut: ShortcutKind,
        input: InputShape,
        classes: usize,
        plan: &QuantPlan,
        alphas: &Alphas,
        scope: Scope,
    ) -> Result<Self> {
        if depth < 8 || !(depth - 2).is_multiple_of(6) {
            return Err(Error::Config {
                what: format!("ResNet-{depth}"),
                reason: "CIFAR ResNets have depth 6n + 2 (20, 32, 44, 56, 110)".into(),
            });
        }
        let n = (depth - 2) / 6;
        let act = if plan.setting.activations == Precision::Float {
            BlockActivation::Relu
        } else {
            BlockActivation::HardTanh
        };
        // BatchNorm fused with the block's activation.
        let bn_cfg = BatchNormConfig {
            activation: act.fused(),
            ..Default::default()
        };
        let conv_cfg = |stride, padding, position| -> Result<QuantConv2dConfig> {
            Ok(QuantConv2dConfig {
                stride,
                padding,
                bias: false,
                quant: plan.layer(position)?,
            })
        };
        let stem = quant_conv2d(
            input.channels,
            16,
            3,
            conv_cfg(1, 1, Position::First)?,
            alphas,
            scope.pp("stem"),
        )?;
        let stem_bn = batch_norm(16, bn_cfg, scope.pp("stem").pp("bn"))?;
        let mut blocks = Vec::new();
        let mut in_c = 16;
        for (stage, out_c) in [16usize, 32, 64].into_iter().enumerate() {
            for b in 0..n {
                let stride = if stage > 0 && b == 0 { 2 } else { 1 };
                let s = scope
                    .pp(format!("stage{}", stage + 1))
                    .pp(format!("block{}", b + 1));
                blocks.push(BasicBlock::new(
                    in_c, out_c, stride, shortcut, act, plan, alphas, &s,
                )?);
                in_c = out_c;
            }
        }
        let head = PoolHead::new(64, classes, plan, alphas, &scope)?;
        Ok(ResNetCifar {
            depth,
            stem,
            stem_bn,
            blocks,
            head,
            act,
        })
    }

    /// The depth.
    pub fn depth(&self) -> usize {
        self.depth
    }

    /// Summary rows of every conv and the classifier for `input` images, in order.
    pub(crate) fn summary_rows(&self, input: (usize, usize)) -> Vec<crate::summary::LayerRow> {
        use crate::summary::conv_row;
        let (row, mut hw) = conv_row(&self.stem, input);
        let mut rows = vec![row];
        for b in &self.blocks {
            let (r, out) = b.summary_rows(hw);
            rows.extend(r);
            hw = out;
        }
        rows.push(self.head.summary_row());
        rows
    }

    /// The activation after each BatchNorm and residual sum.
    pub fn activation(&self) -> BlockActivation {
        self.act
    }
}

impl ModuleT for ResNetCifar {
    fn forward_t(&self, x: &Tensor, train: bool) -> CandleResult<Tensor> {
        let mut h = self
            .stem_bn
            .forward_t(&self.stem.forward_t(x, train)?, train)?;
        for b in &self.blocks {
            h = b.forward_t(&h, train)?;
        }
        self.head.forward_t(&h, train)
    }
}
