//! Candle adapters for AQE training of MINW-Nets: differentiable quantizers, quantized layers,
//! a fused CPU convolution, BatchNorm / HardTanh / max-pool with backward, optimizers with
//! savable state, and losses.
//!
//! Adapts [`aqe_core`]'s slice maths to Candle tensors. Nothing here knows about packed bits.
//! Activations are NHWC (`[batch, height, width, channels]`) and convolution weights OHWI
//! (`[out_channels, kernel_h, kernel_w, in_channels]`), the layouts the packed kernels use.
//!
//! - [`quant`]: every `aqe_core` estimator as a Candle op with an exact backward.
//! - [`layers`]: [`QuantConv2d`] and [`QuantLinear`] with `input_quantizer`, `kernel_quantizer`
//!   and `kernel_constraint`.
//! - [`conv`]: the NHWC convolution (im2col + AVX-512 gemm, rayon across the batch) used by both
//!   the float and the quantized layers.
//! - [`norm`], [`pool`]: BatchNorm (optionally fused with HardTanh), HardTanh, max pooling.
//! - [`optim`]: Adam and SGD with parameter groups, clipping and state save/load.
//! - [`loss`]: cross-entropy and squared hinge.
//! - [`params`]: seeded parameter store with roles and atomic checkpoints.
//!
//! The `cuda`, `cudnn`, `metal` and `mkl` features (all off by default) forward to Candle's. The
//! CPU path is the tested one; on other devices the quantizer and pooling ops run through a CPU
//! round trip or Candle's own ops.
//!
//! # Example
//!
//! A W1A1 convolution (sign inputs, sign weights, AQE) trained for one step, then run exactly
//! quantized at the end of the alpha schedule:
//!
//! ```
//! use aqe_candle::optim::{Algorithm, SgdConfig};
//! use aqe_candle::{quant_conv2d, Alphas, Optimizer, ParamStore, QuantConfig, QuantConv2dConfig};
//! use candle_core::{Device, ModuleT, Tensor};
//!
//! let store = ParamStore::new(0, &Device::Cpu);
//! let alphas = Alphas::default(); // 0.5 for weights and inputs
//! let quant = QuantConfig::minw(Some("sign".parse()?), Some("sign".parse()?), "aqe".parse()?)?;
//! let cfg = QuantConv2dConfig { padding: 1, quant, ..Default::default() };
//! let conv = quant_conv2d(4, 8, 3, cfg, &alphas, store.root().pp("conv"))?;
//! let mut opt = Optimizer::new(&store, Algorithm::Sgd(SgdConfig::default()))?;
//!
//! let x = Tensor::randn(0f32, 1., (2, 6, 6, 4), &Device::Cpu)?; // NHWC
//! let loss = conv.forward_t(&x, true)?.sqr()?.mean_all()?;
//! opt.backward_step(&loss)?; // SGD step, then latent weights clipped to [-1, 1]
//!
//! alphas.weight.set(1.0)?;
//! alphas.input.set(1.0)?;
//! let y = conv.forward_t(&x, false)?;
//! // Sign inputs times sign weights: every output is an integer in [-36, 36].
//! let v = y.flatten_all()?.to_vec1::<f32>()?;
//! assert!(v.iter().all(|a| a.fract() == 0.0 && a.abs() <= 36.0));
//! assert_eq!(y.dims(), &[2, 6, 6, 8]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![deny(missing_docs)]

// The README's example runs as a doctest too.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

mod alpha;
mod cpu;
mod error;
mod init;

pub mod conv;
pub mod layers;
pub mod loss;
pub mod norm;
pub mod optim;
pub mod params;
pub mod pool;
pub mod quant;

pub use alpha::{AlphaHandle, Alphas};
pub use error::{Error, Result};
pub use init::{Init, SeededRng};
pub use layers::{
    KernelConstraint, QuantConfig, QuantConv2d, QuantConv2dConfig, QuantLinear, QuantLinearConfig,
    quant_conv2d, quant_linear, weight_init,
};
pub use loss::Loss;
pub use norm::{Activation, BatchNorm, BatchNormConfig, batch_norm, hard_tanh};
pub use optim::{Algorithm, Optimizer};
pub use params::{Param, ParamKind, ParamStore, Scope};
pub use quant::{QuantSpec, quantize};

/// Tunes the process's allocator for training: keeps freed activation buffers in the heap
/// instead of returning them to the system after every op.
///
/// Every Candle op allocates its output; with glibc's defaults each multi-megabyte tensor is a
/// fresh `mmap` whose pages fault in one by one (about a third of a ResNet-20 step here). Raising
/// the mmap and trim thresholds lets those buffers be reused. Measured with `cargo xtask
/// bench-train`: the ResNet-20 batch-128 step drops by 25-35% at the same peak memory. Call it
/// once at start-up, before the first tensor; it does nothing off glibc Linux.
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        const MIB: libc::c_int = 1 << 20;
        // SAFETY: mallopt only changes allocator parameters; it is safe to call at any time
        // from any thread and has no memory-safety preconditions.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, 64 * MIB);
            libc::mallopt(libc::M_TRIM_THRESHOLD, libc::c_int::MAX);
        }
    }
}
