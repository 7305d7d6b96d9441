//! Differentiable quantizers: every [`aqe_core::Estimator`] as a Candle op whose forward and
//! backward values equal `aqe_core`'s exactly.
//!
//! Forward: `y = estimator.forward_one(h, alpha, x)` element by element (for AQE
//! `alpha * h(x) + (1 - alpha) * x`); backward: `dx = dy * estimator.grad_scale(alpha, x)`.
//! Data-dependent quantizers (TWN's ternary) resolve their threshold over the whole tensor.
//!
//! On the CPU this is one custom op each way. On other devices the tensor is quantized on the
//! CPU and moved back (correct, slower); see the crate's README.

use aqe_core::{Estimator, HardQuantizer, Quantizer};
use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor};

use crate::cpu;

/// A quantizer with its estimator: what a layer applies to its weights or its inputs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QuantSpec {
    /// The hard quantizer `h`.
    pub quantizer: Quantizer,
    /// The forward/backward rule.
    pub estimator: Estimator,
}

impl QuantSpec {
    /// A spec, checking that the estimator is defined for the quantizer.
    pub fn new(
        quantizer: Quantizer,
        estimator: Estimator,
    ) -> std::result::Result<Self, aqe_core::AqeError> {
        estimator.check_quantizer(&quantizer)?;
        Ok(QuantSpec {
            quantizer,
            estimator,
        })
    }
}

/// Quantizes `x` with `spec` at `alpha`, differentiably.
///
/// ```
/// use aqe_candle::quant::{quantize, QuantSpec};
/// use candle_core::{Device, Tensor, Var};
///
/// let spec = QuantSpec::new("sign".parse()?, "aqe".parse()?)?;
/// let x = Var::new(&[-2.0f32, -0.5, 0.0, 0.25], &Device::Cpu)?;
/// let y = quantize(x.as_tensor(), &spec, 0.75)?;
/// // 0.75 * sign(x) + 0.25 * x
/// assert_eq!(y.to_vec1::<f32>()?, vec![-1.25, -0.875, 0.75, 0.8125]);
/// let grads = y.sum_all()?.backward()?;
/// // Straight through inside [-1, 1].
/// assert_eq!(grads.get(&x).unwrap().to_vec1::<f32>()?, vec![0.0, 1.0, 1.0, 1.0]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn quantize(x: &Tensor, spec: &QuantSpec, alpha: f32) -> Result<Tensor> {
    if !(0.0..=1.0).contains(&alpha) {
        candle_core::bail!("quantize: alpha = {alpha} must lie in [0, 1]");
    }
    spec.estimator
        .check_quantizer(&spec.quantizer)
        .map_err(candle_core::Error::wrap)?;
    cpu::expect_f32("quantize", x)?;
    if spec.estimator == Estimator::Identity {
        return Ok(x.clone());
    }
    let device = x.device().clone();
    let on_cpu = if device.is_cpu() {
        x.contiguous()?
    } else {
        x.to_device(&candle_core::Device::Cpu)?.contiguous()?
    };
    let y = on_cpu.apply_op1(QuantizeOp { spec: *spec, alpha })?;
    if device.is_cpu() {
        Ok(y)
    } else {
        y.to_device(&device)
    }
}

/// Applies `h` (the hard quantizer, alpha = 1) without gradient: what inference computes.
pub fn hard_quantize(x: &Tensor, quantizer: &Quantizer) -> Result<Tensor> {
    let device = x.device().clone();
    let values = cpu::with_slice(&x.to_device(&candle_core::Device::Cpu)?, |s| {
        let h = quantizer.resolve(s);
        s.iter().map(|&v| h.apply(v)).collect::<Vec<f32>>()
    })?;
    Tensor::from_vec(values, x.shape(), &device)
}

struct QuantizeOp {
    spec: QuantSpec,
    alpha: f32,
}

impl QuantizeOp {
    fn hard(&self, x: &[f32]) -> HardQuantizer {
        self.spec.quantizer.resolve(x)
    }
}

impl CustomOp1 for QuantizeOp {
    fn name(&self) -> &'static str {
        "aqe-quantize"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = cpu::contiguous(storage, layout)?;
        let h = self.hard(x);
        let (e, a) = (self.spec.estimator, self.alpha);
        let y: Vec<f32> = x.iter().map(|&v| e.forward_one(&h, a, v)).collect();
        Ok((CpuStorage::F32(y), layout.shape().clone()))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        let g = grad_res.contiguous()?;
        Ok(Some(arg.apply_op2_no_bwd(
            &g,
            &QuantizeGradOp {
                estimator: self.spec.estimator,
                alpha: self.alpha,
            },
        )?))
    }
}

/// `dx = dy * grad_scale(alpha, x)` over (x, dy).
struct QuantizeGradOp {
    estimator: Estimator,
    alpha: f32,
}

impl CustomOp2 for QuantizeGradOp {
    fn name(&self) -> &'static str {
        "aqe-quantize-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = cpu::contiguous(s1, l1)?;
        let dy = cpu::contiguous(s2, l2)?;
        if x.len() != dy.len() {
            candle_core::bail!(
                "aqe-quantize-grad: x has {} elements, dy {}",
                x.len(),
                dy.len()
            );
        }
        let (e, a) = (self.estimator, self.alpha);
        let dx: Vec<f32> = x
            .iter()
            .zip(dy)
            .map(|(&x, &g)| g * e.grad_scale(a, x))
            .collect();
        Ok((CpuStorage::F32(dx), l1.shape().clone()))
    }
}
