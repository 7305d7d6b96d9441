//! Quantized layers in Larq's vocabulary and Candle's shape: [`QuantConv2d`] and
//! [`QuantLinear`].
//!
//! A layer has an optional `input_quantizer` (M-bit activations), an optional
//! `kernel_quantizer` (N-bit weights) and a `kernel_constraint` (clip the latent weights to
//! `[-1, 1]` after every optimizer step, Algorithm 1). With neither quantizer it is a plain float
//! layer running the same kernels, so float-versus-AQE comparisons are fair.
//!
//! In training mode (`forward_t(x, true)`) the quantizers use the current alpha of the layer's
//! [`Alphas`]; in evaluation mode they use alpha = 1, the hard quantizer `h`, which is what the
//! accuracy of a quantized network means and what the packed kernels compute.
//!
//! # Padding rule
//! Convolutions pad with zeros **after** input quantization: a padded position contributes
//! exactly 0 to the sum, even for 1-bit inputs whose levels are +-1. The packed kernels reproduce
//! this exactly (by a per-position correction), so training and deployment agree.

use aqe_core::{Estimator, Quantizer};
use candle_core::{D, ModuleT, Result, Tensor};

use crate::alpha::Alphas;
use crate::conv::{self, InputTransform};
use crate::init::Init;
use crate::params::{ParamKind, Scope};
use crate::quant::{QuantSpec, quantize};

/// What happens to latent weights after every optimizer step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KernelConstraint {
    /// Nothing.
    #[default]
    None,
    /// Clip to `[-1, 1]` (the paper's rule for quantized weights).
    Clip,
}

/// The quantization of one layer.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct QuantConfig {
    /// Quantizer of the layer's input; `None` keeps it in float (e.g. the raw image).
    pub input_quantizer: Option<QuantSpec>,
    /// Quantizer of the layer's weights; `None` keeps them in float.
    pub kernel_quantizer: Option<QuantSpec>,
    /// Constraint on the latent weights.
    pub kernel_constraint: KernelConstraint,
}

impl QuantConfig {
    /// A float layer.
    pub fn float() -> Self {
        QuantConfig::default()
    }

    /// A MINW layer: `input` quantizer for activations, `kernel` for weights (either may be
    /// `None`), both with `estimator`; quantized weights are clipped to `[-1, 1]`.
    pub fn minw(
        input: Option<Quantizer>,
        kernel: Option<Quantizer>,
        estimator: Estimator,
    ) -> std::result::Result<Self, aqe_core::AqeError> {
        let spec = |q: Option<Quantizer>| q.map(|q| QuantSpec::new(q, estimator)).transpose();
        let kernel_quantizer = spec(kernel)?;
        Ok(QuantConfig {
            input_quantizer: spec(input)?,
            kernel_quantizer,
            kernel_constraint: if kernel_quantizer.is_some() {
                KernelConstraint::Clip
            } else {
                KernelConstraint::None
            },
        })
    }

    fn kernel_kind(&self) -> ParamKind {
        if self.kernel_constraint == KernelConstraint::Clip {
            ParamKind::QuantizedKernel
        } else {
            ParamKind::Kernel
        }
    }
}

/// Convolution settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QuantConv2dConfig {
    /// Step between output positions; default 1.
    pub stride: usize,
    /// Zero padding on each side; default 0.
    pub padding: usize,
    /// Whether the layer has a bias (false when BatchNorm follows); default false.
    pub bias: bool,
    /// Quantization.
    pub quant: QuantConfig,
}

impl Default for QuantConv2dConfig {
    fn default() -> Self {
        QuantConv2dConfig {
            stride: 1,
            padding: 0,
            bias: false,
            quant: QuantConfig::float(),
        }
    }
}

/// A 2-D convolution over NHWC inputs with OHWI weights, optionally quantized.
#[derive(Debug, Clone)]
pub struct QuantConv2d {
    weight: Tensor,
    bias: Option<Tensor>,
    cfg: QuantConv2dConfig,
    alphas: Alphas,
    name: String,
}

impl QuantConv2d {
    /// A layer from its weight (`[out, k, k, in]`), optional bias (`[out]`) and settings.
    pub fn new(
        weight: Tensor,
        bias: Option<Tensor>,
        cfg: QuantConv2dConfig,
        alphas: Alphas,
    ) -> Self {
        QuantConv2d {
            weight,
            bias,
            cfg,
            alphas,
            name: "conv".into(),
        }
    }

    /// The latent weight.
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    /// The bias.
    pub fn bias(&self) -> Option<&Tensor> {
        self.bias.as_ref()
    }

    /// The settings.
    pub fn config(&self) -> &QuantConv2dConfig {
        &self.cfg
    }

    /// The layer's name (its parameter scope).
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// The initialisation of a quantized layer's latent weights.
///
/// Glorot-uniform, except for weight quantizers with a dead zone at fixed thresholds (ternary
/// with a fixed `delta`, pow2): there the latent weights start uniform in `[-1, 1]`, the range
/// the weight constraint keeps them in, so that every level occurs from the first step.
/// Glorot's bound (about 0.06 for a 3x3x64 conv) lies far inside ternary's `delta = 0.5`: every
/// weight would quantize to 0, the hard-quantized network would be constant, and once alpha
/// reaches 1 training collapses to chance (seen on Fashion-MNIST with Model D at 2/2). Sign
/// weights (scale-free) and TWN (its threshold follows the weights) keep Glorot.
///
/// ```
/// use aqe_candle::{Init, QuantConfig, weight_init};
/// let ternary = QuantConfig::minw(Some("ternary".parse()?), Some("ternary".parse()?), "aqe".parse()?)?;
/// assert_eq!(weight_init(&ternary, 576, 576), Init::Uniform(1.0));
/// let sign = QuantConfig::minw(Some("sign".parse()?), Some("sign".parse()?), "aqe".parse()?)?;
/// assert!(matches!(weight_init(&sign, 576, 576), Init::GlorotUniform { .. }));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn weight_init(quant: &QuantConfig, fan_in: usize, fan_out: usize) -> Init {
    use aqe_core::{Quantizer, TernaryDelta};
    match quant.kernel_quantizer.map(|s| s.quantizer) {
        Some(Quantizer::Ternary(TernaryDelta::Fixed(_)) | Quantizer::Pow2(_)) => Init::Uniform(1.0),
        _ => Init::GlorotUniform { fan_in, fan_out },
    }
}

/// A [`QuantConv2d`] with `in_c` input and `out_c` output channels and a `kernel` x `kernel`
/// window, its parameters created in `scope` (`weight`, and `bias` when configured).
///
/// Weights are initialised as [`weight_init`] says (latent weights start inside `[-1, 1]`).
///
/// ```
/// use aqe_candle::{quant_conv2d, Alphas, ParamStore, QuantConfig, QuantConv2dConfig};
/// use candle_core::{Device, ModuleT, Tensor};
///
/// let store = ParamStore::new(0, &Device::Cpu);
/// let quant = QuantConfig::minw(Some("sign".parse()?), Some("sign".parse()?), "aqe".parse()?)?;
/// let cfg = QuantConv2dConfig { padding: 1, quant, ..Default::default() };
/// let conv = quant_conv2d(3, 8, 3, cfg, &Alphas::default(), store.root().pp("conv1"))?;
/// let x = Tensor::zeros((2, 5, 5, 3), candle_core::DType::F32, &Device::Cpu)?;
/// assert_eq!(conv.forward_t(&x, true)?.dims(), &[2, 5, 5, 8]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn quant_conv2d(
    in_c: usize,
    out_c: usize,
    kernel: usize,
    cfg: QuantConv2dConfig,
    alphas: &Alphas,
    scope: Scope,
) -> crate::Result<QuantConv2d> {
    let init = weight_init(&cfg.quant, kernel * kernel * in_c, kernel * kernel * out_c);
    let weight = scope.get(
        (out_c, kernel, kernel, in_c),
        "weight",
        init,
        cfg.quant.kernel_kind(),
    )?;
    let bias = if cfg.bias {
        Some(scope.get(out_c, "bias", Init::Const(0.0), ParamKind::Bias)?)
    } else {
        None
    };
    Ok(QuantConv2d {
        weight,
        bias,
        cfg,
        alphas: alphas.clone(),
        name: scope.prefix().to_string(),
    })
}

/// The alpha a quantizer uses: the handle's in training, 1 (the hard quantizer) in evaluation.
fn alpha_for(handle: &crate::AlphaHandle, train: bool) -> f32 {
    if train { handle.get() } else { 1.0 }
}

/// The quantized kernel (or the latent one when the layer has no kernel quantizer).
fn kernel(weight: &Tensor, cfg: &QuantConfig, alphas: &Alphas, train: bool) -> Result<Tensor> {
    match &cfg.kernel_quantizer {
        Some(spec) => quantize(weight, spec, alpha_for(&alphas.weight, train)),
        None => Ok(weight.clone()),
    }
}

impl ModuleT for QuantConv2d {
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let (_, _, _, c) = x.dims4().map_err(|_| {
            candle_core::Error::Msg(format!(
                "{}: expected an NHWC input, got shape {:?}",
                self.name,
                x.dims()
            ))
        })?;
        let want = self.weight.dim(3)?;
        if c != want {
            candle_core::bail!(
                "{}: input has {c} channels, the layer expects {want} (NHWC {:?})",
                self.name,
                x.dims()
            );
        }
        let w = kernel(&self.weight, &self.cfg.quant, &self.alphas, train)?;
        let alpha = alpha_for(&self.alphas.input, train);
        let (x, transform) = match &self.cfg.quant.input_quantizer {
            None => (x.clone(), None),
            // Off the CPU the fused transform is not available: quantize first (zero padding then
            // applies to the quantized tensor, the same rule).
            Some(spec) if !x.device().is_cpu() => (quantize(x, spec, alpha)?, None),
            Some(spec) => {
                let hard = if spec.quantizer.is_data_dependent() {
                    crate::cpu::with_slice(x, |s| spec.quantizer.resolve(s))?
                } else {
                    spec.quantizer.resolve(&[])
                };
                (
                    x.clone(),
                    Some(InputTransform {
                        estimator: spec.estimator,
                        quantizer: hard,
                        alpha,
                    }),
                )
            }
        };
        let y = conv::conv2d_nhwc(&x, &w, self.cfg.stride, self.cfg.padding, transform)?;
        match &self.bias {
            Some(b) => y.broadcast_add(b),
            None => Ok(y),
        }
    }
}

/// Fully connected layer settings.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct QuantLinearConfig {
    /// Whether the layer has a bias (false when BatchNorm follows).
    pub bias: bool,
    /// Quantization.
    pub quant: QuantConfig,
}

/// A fully connected layer `y = q(x) q(W)^T (+ b)` over `[batch, in]` inputs.
#[derive(Debug, Clone)]
pub struct QuantLinear {
    weight: Tensor,
    bias: Option<Tensor>,
    cfg: QuantLinearConfig,
    alphas: Alphas,
    name: String,
}

impl QuantLinear {
    /// A layer from its weight (`[out, in]`), optional bias (`[out]`) and settings.
    pub fn new(
        weight: Tensor,
        bias: Option<Tensor>,
        cfg: QuantLinearConfig,
        alphas: Alphas,
    ) -> Self {
        QuantLinear {
            weight,
            bias,
            cfg,
            alphas,
            name: "linear".into(),
        }
    }

    /// The latent weight.
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    /// The bias.
    pub fn bias(&self) -> Option<&Tensor> {
        self.bias.as_ref()
    }

    /// The settings.
    pub fn config(&self) -> &QuantLinearConfig {
        &self.cfg
    }

    /// The layer's name (its parameter scope).
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// A [`QuantLinear`] from `in_f` to `out_f` features, its parameters created in `scope`.
pub fn quant_linear(
    in_f: usize,
    out_f: usize,
    cfg: QuantLinearConfig,
    alphas: &Alphas,
    scope: Scope,
) -> crate::Result<QuantLinear> {
    let init = weight_init(&cfg.quant, in_f, out_f);
    let weight = scope.get((out_f, in_f), "weight", init, cfg.quant.kernel_kind())?;
    let bias = if cfg.bias {
        Some(scope.get(out_f, "bias", Init::Const(0.0), ParamKind::Bias)?)
    } else {
        None
    };
    Ok(QuantLinear {
        weight,
        bias,
        cfg,
        alphas: alphas.clone(),
        name: scope.prefix().to_string(),
    })
}

impl ModuleT for QuantLinear {
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let want = self.weight.dim(1)?;
        if x.rank() != 2 || x.dim(D::Minus1)? != want {
            candle_core::bail!(
                "{}: expected input [batch, {want}], got {:?}",
                self.name,
                x.dims()
            );
        }
        let x = match &self.cfg.quant.input_quantizer {
            Some(spec) => quantize(x, spec, alpha_for(&self.alphas.input, train))?,
            None => x.clone(),
        };
        let w = kernel(&self.weight, &self.cfg.quant, &self.alphas, train)?;
        let y = x.matmul(&w.t()?)?;
        match &self.bias {
            Some(b) => y.broadcast_add(b),
            None => Ok(y),
        }
    }
}
