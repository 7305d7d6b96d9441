//! A user-defined estimator as a Candle op, outside the library: the AQE forward blend with a
//! backward gate that narrows as alpha grows, `dx = dy * 1{|x| <= 2 - alpha}`.
//!
//! ```sh
//! cargo run --release -p aqe-candle --example custom_estimator
//! ```
//!
//! It checks the op the way the library's tests check the built-in ones (at alpha = 1 the rule
//! is the STE, so values and gradients must equal `aqe_candle::quantize` with `ste`), then uses
//! it in a W1A1 convolution through `aqe_candle::conv::conv2d_nhwc` and trains it to match a
//! binary teacher while alpha goes from 0.5 to 1.

use aqe_candle::conv::conv2d_nhwc;
use aqe_candle::quant::{QuantSpec, quantize};
use aqe_core::{HardQuantizer, Quantizer};
use candle_core::{CpuStorage, CustomOp1, Device, Layout, Result, Shape, Tensor, Var};

/// Forward `alpha * h(x) + (1 - alpha) * x`; backward `dy * 1{|x| <= 2 - alpha}`.
struct NarrowingGate {
    quantizer: Quantizer,
    alpha: f32,
}

impl NarrowingGate {
    fn gate(&self, x: f32) -> f32 {
        if x.abs() <= 2.0 - self.alpha {
            1.0
        } else {
            0.0
        }
    }
}

/// The contiguous `f32` slice of a CPU tensor's storage.
fn slice<'a>(storage: &'a CpuStorage, layout: &Layout) -> Result<&'a [f32]> {
    match (storage, layout.contiguous_offsets()) {
        (CpuStorage::F32(v), Some((start, end))) => Ok(&v[start..end]),
        _ => candle_core::bail!("narrowing-gate: expected a contiguous f32 tensor"),
    }
}

impl CustomOp1 for NarrowingGate {
    fn name(&self) -> &'static str {
        "narrowing-gate"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = slice(storage, layout)?;
        // `resolve` fixes data-dependent thresholds (TWN's ternary) over the whole tensor.
        let h: HardQuantizer = self.quantizer.resolve(x);
        let a = self.alpha;
        let y = x.iter().map(|&v| a * h.apply(v) + (1.0 - a) * v).collect();
        Ok((CpuStorage::F32(y), layout.shape().clone()))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        let x = arg.flatten_all()?.to_vec1::<f32>()?;
        let mask: Vec<f32> = x.iter().map(|&v| self.gate(v)).collect();
        let mask = Tensor::from_vec(mask, arg.shape(), arg.device())?;
        Ok(Some(grad_res.mul(&mask)?))
    }
}

fn narrowing_gate(x: &Tensor, quantizer: Quantizer, alpha: f32) -> Result<Tensor> {
    x.contiguous()?
        .apply_op1(NarrowingGate { quantizer, alpha })
}

fn main() -> std::result::Result<(), Box<dyn std::error::Error>> {
    let dev = Device::Cpu;
    let sign: Quantizer = "sign".parse()?;

    // 1. At alpha = 1 the rule is the STE: same values, same gradients as the library's op.
    let x = Var::new(&[-1.5f32, -1.0, -0.25, 0.0, 0.5, 1.25], &dev)?;
    let ours = narrowing_gate(x.as_tensor(), sign, 1.0)?;
    let ste = quantize(x.as_tensor(), &QuantSpec::new(sign, "ste".parse()?)?, 1.0)?;
    assert_eq!(ours.to_vec1::<f32>()?, ste.to_vec1::<f32>()?);
    let g_ours = ours.sum_all()?.backward()?;
    let g_ste = ste.sum_all()?.backward()?;
    assert_eq!(
        g_ours.get(&x).unwrap().to_vec1::<f32>()?,
        g_ste.get(&x).unwrap().to_vec1::<f32>()?
    );
    // At alpha = 0.5 the gate is wider: |x| <= 1.5.
    let g = narrowing_gate(x.as_tensor(), sign, 0.5)?
        .sum_all()?
        .backward()?;
    println!(
        "alpha 0.5 gradient of sum(x_hat) at {:?}: {:?}",
        x.to_vec1::<f32>()?,
        g.get(&x).unwrap().to_vec1::<f32>()?
    );

    // 2. In a W1A1 convolution: quantize weights and inputs with it, convolve, train.
    // Deterministic data, so every run prints the same numbers.
    let wave = |n: usize, freq: f64, amp: f64| -> Result<Tensor> {
        (Tensor::arange(0u32, n as u32, &dev)?.to_dtype(candle_core::DType::F64)? * freq)?
            .sin()?
            .affine(amp, 0.0)?
            .to_dtype(candle_core::DType::F32)
    };
    let w = Var::from_tensor(&wave(8 * 3 * 3 * 4, 0.37, 0.5)?.reshape((8, 3, 3, 4))?)?;
    let input = wave(16 * 8 * 8 * 4, 0.11, 1.5)?.reshape((16, 8, 8, 4))?;
    // A binary teacher: the target is reachable exactly at alpha = 1.
    let teacher = wave(8 * 3 * 3 * 4, 0.23, 1.0)?
        .ge(0f32)?
        .to_dtype(candle_core::DType::F32)?;
    let teacher = teacher.affine(2.0, -1.0)?.reshape((8, 3, 3, 4))?;
    let forward = |w: &Tensor, alpha: f32| -> Result<Tensor> {
        let w_hat = narrowing_gate(w, sign, alpha)?;
        let x_hat = narrowing_gate(&input, sign, alpha)?;
        conv2d_nhwc(&x_hat, &w_hat, 1, 1, None)? / 36.0
    };
    let target = forward(&teacher, 1.0)?;
    let hard_loss = |w: &Tensor| -> Result<f32> {
        (forward(w, 1.0)? - &target)?
            .sqr()?
            .mean_all()?
            .to_scalar::<f32>()
    };
    let agreement = |w: &Tensor| -> Result<f32> {
        let same = w
            .ge(0f32)?
            .eq(&teacher.ge(0f32)?)?
            .to_dtype(candle_core::DType::F32)?;
        same.mean_all()?.to_scalar::<f32>()
    };
    println!(
        "before: hard loss {:.4}, weight signs agreeing with the teacher {:.1}%",
        hard_loss(w.as_tensor())?,
        100.0 * agreement(w.as_tensor())?
    );
    let steps = 40;
    for step in 0..steps {
        let alpha = 0.5 + 0.5 * step as f32 / (steps - 1) as f32; // linear:0.5:1
        let loss = (forward(w.as_tensor(), alpha)? - &target)?
            .sqr()?
            .mean_all()?;
        let grads = loss.backward()?;
        let dw = grads.get(&w).unwrap();
        // Plain SGD, then the kernel constraint: latent weights stay in [-1, 1].
        w.set(&(w.as_tensor() - (dw * 20.0)?)?.clamp(-1f32, 1f32)?)?;
    }
    println!(
        "after {steps} steps (alpha 0.5 -> 1): hard loss {:.4}, weight signs agreeing {:.1}%",
        hard_loss(w.as_tensor())?,
        100.0 * agreement(w.as_tensor())?
    );
    Ok(())
}
