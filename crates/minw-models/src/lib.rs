//! MINW-Net models (M-bit inputs, N-bit weights) trained with AQE: the paper's CIFAR ConvNets
//! A-D and the CIFAR ResNets, built at any MINW setting with the paper's layer policy.
//!
//! Training runs through [`train`]; [`export`] writes a trained network to a packed `.minw`
//! file that [`packed::PackedModel`] runs on `xnor-kernels` (the README's example, also run as a
//! doctest, exports a ConvNet D and checks that the packed logits equal the training graph's).
//!
//! ```
//! use aqe_candle::{Alphas, ParamStore};
//! use candle_core::{Device, ModuleT, Tensor};
//! use minw_models::{Arch, InputShape, ModelSpec, QuantPlan};
//!
//! let spec = ModelSpec {
//!     arch: "resnet20".parse()?,
//!     plan: QuantPlan::new("1/1".parse()?, "aqe".parse()?),
//!     input: InputShape::CIFAR,
//!     classes: 10,
//! };
//! let store = ParamStore::new(0, &Device::Cpu);
//! let model = spec.build(&Alphas::default(), &store)?;
//! let x = Tensor::zeros((2, 32, 32, 3), candle_core::DType::F32, &Device::Cpu)?;
//! assert_eq!(model.forward_t(&x, false)?.dims(), &[2, 10]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![deny(missing_docs)]

// The README's example runs as a doctest too.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

pub mod classify;
pub mod convnet;
pub mod data;
mod error;
pub mod export;
pub mod imagenet;
pub mod packed;
pub mod resnet;
pub mod setting;
pub mod summary;
pub mod train;

use std::fmt;
use std::str::FromStr;

use aqe_candle::{Alphas, ParamStore};
use candle_core::{ModuleT, Result as CandleResult, Tensor};

pub use convnet::{ConvNet, ConvNetVariant};
pub use error::{Error, Result};
pub use resnet::{ResNetCifar, ShortcutKind};
pub use setting::{LayerPolicy, LayerPrecision, MinwSetting, Position, Precision, QuantPlan};

/// The shape of input images (NHWC without the batch).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct InputShape {
    /// Image height.
    pub height: usize,
    /// Image width.
    pub width: usize,
    /// Colour channels.
    pub channels: usize,
}

impl InputShape {
    /// ImageNet crops: 224x224 RGB.
    pub const IMAGENET: InputShape = InputShape {
        height: 224,
        width: 224,
        channels: 3,
    };
    /// CIFAR-10/100: 32x32 RGB.
    pub const CIFAR: InputShape = InputShape {
        height: 32,
        width: 32,
        channels: 3,
    };
    /// (Fashion-)MNIST: 28x28 grey.
    pub const MNIST: InputShape = InputShape {
        height: 28,
        width: 28,
        channels: 1,
    };
}

/// A model architecture.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Arch {
    /// One of the paper's ConvNets A-D.
    ConvNet(ConvNetVariant),
    /// AlexNet with BatchNorm (ImageNet).
    AlexNetBn,
    /// An ImageNet ResNet (18 or 34).
    ResNetImageNet {
        /// 18 or 34.
        depth: usize,
    },
    /// A CIFAR ResNet of the given depth.
    ResNet {
        /// `6n + 2`.
        depth: usize,
        /// Down-sampling shortcut.
        shortcut: ShortcutKind,
    },
}

const ARCH_NAMES: &str = "A, B, C, D, resnet20, resnet32, resnet44, resnet56, resnet110 (append -b for projection shortcuts), alexnet-bn, resnet18, resnet34";

impl FromStr for Arch {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let lower = s.trim().to_ascii_lowercase();
        let variant = match lower.as_str() {
            "a" | "convnet-a" => Some(ConvNetVariant::A),
            "b" | "convnet-b" => Some(ConvNetVariant::B),
            "c" | "convnet-c" => Some(ConvNetVariant::C),
            "d" | "convnet-d" => Some(ConvNetVariant::D),
            _ => None,
        };
        if let Some(v) = variant {
            return Ok(Arch::ConvNet(v));
        }
        match lower.as_str() {
            "alexnet-bn" | "alexnet" | "alexnet_bn" => return Ok(Arch::AlexNetBn),
            "resnet18" | "resnet-18" => return Ok(Arch::ResNetImageNet { depth: 18 }),
            "resnet34" | "resnet-34" => return Ok(Arch::ResNetImageNet { depth: 34 }),
            _ => {}
        }
        let unknown = || Error::Config {
            what: format!("model `{s}`"),
            reason: format!("unknown model; valid models are: {ARCH_NAMES}"),
        };
        let rest = lower
            .strip_prefix("resnet")
            .ok_or_else(unknown)?
            .trim_start_matches('-');
        let (depth, shortcut) = match rest.strip_suffix("-b") {
            Some(d) => (d, ShortcutKind::ProjectionB),
            None => (rest, ShortcutKind::PadA),
        };
        let depth: usize = depth.parse().map_err(|_| unknown())?;
        if depth < 8 || !(depth - 2).is_multiple_of(6) {
            return Err(unknown());
        }
        Ok(Arch::ResNet { depth, shortcut })
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Arch::ConvNet(v) => f.write_str(v.name()),
            Arch::AlexNetBn => f.write_str("alexnet-bn"),
            Arch::ResNetImageNet { depth } => write!(f, "resnet{depth}"),
            Arch::ResNet {
                depth,
                shortcut: ShortcutKind::PadA,
            } => write!(f, "resnet{depth}"),
            Arch::ResNet {
                depth,
                shortcut: ShortcutKind::ProjectionB,
            } => write!(f, "resnet{depth}-b"),
        }
    }
}

/// Everything needed to build a model.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ModelSpec {
    /// The architecture.
    pub arch: Arch,
    /// How it is quantized.
    pub plan: QuantPlan,
    /// Input image shape.
    pub input: InputShape,
    /// Number of classes.
    pub classes: usize,
}

impl ModelSpec {
    /// Builds the model, creating its parameters in `store` (names are the layer paths, e.g.
    /// `stage2.block1.conv1.weight`).
    pub fn build(&self, alphas: &Alphas, store: &ParamStore) -> Result<Model> {
        let scope = store.root();
        Ok(match self.arch {
            Arch::ConvNet(v) => Model::ConvNet(ConvNet::new(
                v,
                self.input,
                self.classes,
                &self.plan,
                alphas,
                scope,
            )?),
            Arch::AlexNetBn => Model::AlexNetBn(Box::new(imagenet::AlexNetBn::new(
                self.input,
                self.classes,
                &self.plan,
                alphas,
                scope,
            )?)),
            Arch::ResNetImageNet { depth } => {
                Model::ResNetImageNet(Box::new(imagenet::ResNetImageNet::new(
                    depth,
                    self.input,
                    self.classes,
                    &self.plan,
                    alphas,
                    scope,
                )?))
            }
            Arch::ResNet { depth, shortcut } => Model::ResNet(Box::new(ResNetCifar::new(
                depth,
                shortcut,
                self.input,
                self.classes,
                &self.plan,
                alphas,
                scope,
            )?)),
        })
    }
}

/// A built model.
#[derive(Debug, Clone)]
pub enum Model {
    /// ConvNet A-D.
    ConvNet(ConvNet),
    /// A CIFAR ResNet.
    ResNet(Box<ResNetCifar>),
    /// AlexNet-BN.
    AlexNetBn(Box<imagenet::AlexNetBn>),
    /// ResNet-18/34 for ImageNet.
    ResNetImageNet(Box<imagenet::ResNetImageNet>),
}

impl Model {
    /// The model's summary for `input` images, with parameter totals from `store`.
    pub fn summary(&self, input: InputShape, store: &ParamStore) -> summary::Summary {
        let hw = (input.height, input.width);
        let (title, rows) = match self {
            Model::ConvNet(m) => {
                let mut rows = Vec::new();
                let mut size = hw;
                for b in m.conv_blocks() {
                    let (row, out) = summary::conv_row(&b.conv, size);
                    rows.push(row);
                    size = if b.pool { (out.0 / 2, out.1 / 2) } else { out };
                }
                rows.extend(m.fc_blocks().iter().map(|b| summary::linear_row(&b.fc)));
                (format!("ConvNet {}", m.variant().name()), rows)
            }
            Model::ResNet(m) => (format!("ResNet-{}", m.depth()), m.summary_rows(hw)),
            Model::AlexNetBn(m) => ("AlexNet-BN".to_string(), m.summary_rows(hw)),
            Model::ResNetImageNet(m) => (format!("ResNet-{}", m.depth()), m.summary_rows(hw)),
        };
        summary::Summary::new(
            format!(
                "{title} on {}x{}x{} inputs",
                input.height, input.width, input.channels
            ),
            rows,
            store,
        )
    }
}

impl ModuleT for Model {
    fn forward_t(&self, x: &Tensor, train: bool) -> CandleResult<Tensor> {
        match self {
            Model::ConvNet(m) => m.forward_t(x, train),
            Model::ResNet(m) => m.forward_t(x, train),
            Model::AlexNetBn(m) => m.forward_t(x, train),
            Model::ResNetImageNet(m) => m.forward_t(x, train),
        }
    }
}
