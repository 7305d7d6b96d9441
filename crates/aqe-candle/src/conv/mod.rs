//! Fast CPU 2-D convolution for training: NHWC activations, OHWI weights, im2col + AVX-512 gemm,
//! rayon across the batch, with an optional input quantizer fused into patch building.
//!
//! # Layout and algorithm
//!
//! Activations are `[batch, height, width, channels]` (NHWC) and weights
//! `[out_channels, kernel_h, kernel_w, in_channels]` (OHWI), so one patch row
//! `(kh, kw, ci)` of the im2col matrix has the same order as one weight row and every patch is a
//! few contiguous copies. With `K = kernel_h * kernel_w * in_c` and `M` output pixels:
//!
//! - forward: `out[M, out_c] = cols[M, K] * w[out_c, K]^T`;
//! - input gradient: `dcols[M, K] = dout[M, out_c] * w[out_c, K]`, then col2im scatter-adds
//!   `dcols` into `dx` (measured faster here than the gather form, a convolution of `dout` with
//!   the flipped, transposed weights, at every ResNet-20 shape);
//! - weight gradient: `dw[out_c, K] = sum dout^T * cols`, with `cols` recomputed, never kept.
//!
//! Work is split across the current rayon pool in groups of whole images (four per thread, or
//! one when the pool has one thread). Each group walks its images in blocks whose patch matrix is about 1 MiB (several
//! small images, or a band of output rows of a large one), builds them in a per-thread scratch
//! buffer that is reused across calls (it grows to the largest block seen and is kept for the
//! thread's lifetime), and runs one single-threaded gemm per block. A `1x1`, stride-1, unpadded
//! convolution skips im2col: the input already is the matrix. Nothing is kept between the
//! forward and the backward pass; the weight gradient rebuilds the patches. The forward pass and
//! the input gradient give bit-identical results for any pool size; the weight gradient sums
//! per-group partials, so it depends (by rounding only) on the pool size.
//!
//! # Fused input transform and the padding rule
//!
//! With an [`InputTransform`] the convolution sees `x_hat = estimator.forward_one(h, alpha, x)`
//! instead of `x` (applied once per input element of a block, before the patches are copied),
//! and the input gradient is multiplied by `estimator.grad_scale(alpha, x)`. **A padded position
//! contributes 0 after quantization**: padding is applied to `x_hat`, not to `x`, so even with a
//! quantizer that has no zero level the border sees zeros. The packed inference kernels
//! reproduce this rule exactly. Without a transform the same kernels compute the float
//! convolution, so float and quantized runs are compared on equal terms.
//!
//! # Example
//!
//! ```
//! use aqe_candle::conv::{conv2d_forward, Conv2dGeometry};
//!
//! // One 3x3 image with one channel, a 2x2 kernel of ones: each output sums a 2x2 window.
//! let g = Conv2dGeometry {
//!     batch: 1, in_h: 3, in_w: 3, in_c: 1, out_c: 1,
//!     kernel_h: 2, kernel_w: 2, stride: 1, padding: 0,
//! };
//! let x: Vec<f32> = (1..=9).map(|v| v as f32).collect();
//! let w = [1.0; 4];
//! let mut out = vec![0.0; g.output_len()];
//! conv2d_forward(&g, &x, &w, None, &mut out)?;
//! assert_eq!(out, [12.0, 16.0, 24.0, 28.0]);
//! # Ok::<(), aqe_candle::conv::ConvError>(())
//! ```

mod engine;
mod op;

pub use engine::{conv2d_backward_input, conv2d_backward_weight, conv2d_forward};
pub use op::{Conv2dOp, conv2d_nhwc};

use aqe_core::{Estimator, HardQuantizer};

/// What can go wrong in the convolution engine.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConvError {
    /// A geometry that describes no valid convolution (a zero size, a kernel larger than the
    /// padded input, ...).
    #[error("conv2d: invalid geometry {geometry:?}: {reason}")]
    Geometry {
        /// The rejected geometry.
        geometry: Conv2dGeometry,
        /// Why it is rejected.
        reason: &'static str,
    },
    /// A buffer or tensor whose shape does not match the geometry.
    #[error("{op}: `{arg}` has shape {got:?}, expected {expected:?}")]
    Shape {
        /// The operation (`conv2d forward`, `conv2d backward input`, ...).
        op: &'static str,
        /// The argument (`x`, `w`, `out`, `dout`, ...).
        arg: &'static str,
        /// The shape the geometry requires.
        expected: Vec<usize>,
        /// The shape received (for slices: `[len]`).
        got: Vec<usize>,
    },
    /// An input transform whose estimator, quantizer or alpha is invalid.
    #[error("conv2d input transform: {0}")]
    Transform(#[from] aqe_core::AqeError),
    /// A tensor argument Candle's CPU path cannot use (dtype, device, rank).
    #[error("{op}: {reason}")]
    Unsupported {
        /// The operation.
        op: &'static str,
        /// What is unsupported.
        reason: String,
    },
}

impl From<ConvError> for candle_core::Error {
    fn from(e: ConvError) -> Self {
        candle_core::Error::wrap(e)
    }
}

/// The shape of one 2-D convolution: NHWC input `[batch, in_h, in_w, in_c]`, OHWI weights
/// `[out_c, kernel_h, kernel_w, in_c]`, NHWC output `[batch, out_h, out_w, out_c]`, the same
/// `stride` and zero `padding` in both spatial dimensions, no dilation, no groups.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Conv2dGeometry {
    /// Number of images (may be 0).
    pub batch: usize,
    /// Input height.
    pub in_h: usize,
    /// Input width.
    pub in_w: usize,
    /// Input channels.
    pub in_c: usize,
    /// Output channels.
    pub out_c: usize,
    /// Kernel height.
    pub kernel_h: usize,
    /// Kernel width.
    pub kernel_w: usize,
    /// Stride in both dimensions (`>= 1`).
    pub stride: usize,
    /// Zero padding on each side, in both dimensions.
    pub padding: usize,
}

impl Conv2dGeometry {
    /// Output height `(in_h + 2 padding - kernel_h) / stride + 1` (0 if the kernel does not fit).
    pub fn out_h(&self) -> usize {
        out_size(self.in_h, self.kernel_h, self.stride, self.padding)
    }

    /// Output width `(in_w + 2 padding - kernel_w) / stride + 1` (0 if the kernel does not fit).
    pub fn out_w(&self) -> usize {
        out_size(self.in_w, self.kernel_w, self.stride, self.padding)
    }

    /// The length of one patch (one weight row): `kernel_h * kernel_w * in_c`.
    pub fn patch_len(&self) -> usize {
        self.kernel_h * self.kernel_w * self.in_c
    }

    /// `[batch, in_h, in_w, in_c]`.
    pub fn input_shape(&self) -> [usize; 4] {
        [self.batch, self.in_h, self.in_w, self.in_c]
    }

    /// `[out_c, kernel_h, kernel_w, in_c]`.
    pub fn weight_shape(&self) -> [usize; 4] {
        [self.out_c, self.kernel_h, self.kernel_w, self.in_c]
    }

    /// `[batch, out_h, out_w, out_c]`.
    pub fn output_shape(&self) -> [usize; 4] {
        [self.batch, self.out_h(), self.out_w(), self.out_c]
    }

    /// Number of input elements.
    pub fn input_len(&self) -> usize {
        self.input_shape().iter().product()
    }

    /// Number of weight elements.
    pub fn weight_len(&self) -> usize {
        self.weight_shape().iter().product()
    }

    /// Number of output elements.
    pub fn output_len(&self) -> usize {
        self.output_shape().iter().product()
    }

    /// Multiply-accumulates of the forward pass (each backward pass costs the same).
    pub fn macs(&self) -> u64 {
        (self.batch * self.out_h() * self.out_w()) as u64 * (self.out_c * self.patch_len()) as u64
    }

    /// Checks that the geometry describes a convolution with a non-empty output per image.
    ///
    /// # Errors
    ///
    /// [`ConvError::Geometry`] if an input size, channel count, kernel size or the stride is 0,
    /// or the kernel is larger than the padded input.
    pub fn validate(&self) -> Result<(), ConvError> {
        let reason = if self.in_h == 0 || self.in_w == 0 {
            Some("input height and width must be >= 1")
        } else if self.in_c == 0 || self.out_c == 0 {
            Some("channel counts must be >= 1")
        } else if self.kernel_h == 0 || self.kernel_w == 0 {
            Some("kernel sizes must be >= 1")
        } else if self.stride == 0 {
            Some("stride must be >= 1")
        } else if self.in_h + 2 * self.padding < self.kernel_h
            || self.in_w + 2 * self.padding < self.kernel_w
        {
            Some("the kernel is larger than the padded input")
        } else {
            None
        };
        match reason {
            Some(reason) => Err(ConvError::Geometry {
                geometry: *self,
                reason,
            }),
            None => Ok(()),
        }
    }

    /// Whether this is a `1x1`, stride-1, unpadded convolution (a plain matrix product).
    pub(crate) fn is_pointwise(&self) -> bool {
        self.kernel_h == 1 && self.kernel_w == 1 && self.stride == 1 && self.padding == 0
    }
}

fn out_size(input: usize, kernel: usize, stride: usize, padding: usize) -> usize {
    let padded = input + 2 * padding;
    if stride == 0 || padded < kernel {
        0
    } else {
        (padded - kernel) / stride + 1
    }
}

/// An element-wise quantizing transform applied to the convolution input: the convolution sees
/// `estimator.forward_one(&quantizer, alpha, x)` and the input gradient is scaled by
/// `estimator.grad_scale(alpha, x)`. Padded positions contribute 0 (see the
/// [module documentation](self)).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct InputTransform {
    /// The gradient estimator (AQE, STE, ...).
    pub estimator: Estimator,
    /// The resolved hard quantizer `h`.
    pub quantizer: HardQuantizer,
    /// The AQE blend factor in `[0, 1]` (ignored by estimators that do not use it).
    pub alpha: f32,
}

impl InputTransform {
    /// Checks `alpha` (finite, in `[0, 1]`) and that the estimator accepts the quantizer.
    ///
    /// # Errors
    ///
    /// [`ConvError::Transform`] with aqe-core's error.
    pub fn validate(&self) -> Result<(), ConvError> {
        self.estimator.validate()?;
        self.estimator
            .check_quantizer(&self.quantizer.to_quantizer())?;
        // The slice entry point validates alpha; an empty call does nothing else.
        self.estimator
            .forward(&self.quantizer, self.alpha, &[], &mut [])?;
        Ok(())
    }

    /// `dst[i] = estimator.forward_one(quantizer, alpha, src[i])`, bit for bit (through
    /// aqe-core's branch-free slice loop).
    ///
    /// # Panics
    ///
    /// If the transform was not validated or the lengths differ (broken engine invariants).
    pub(crate) fn forward_slice(&self, src: &[f32], dst: &mut [f32]) {
        if let Err(e) = self
            .estimator
            .forward(&self.quantizer, self.alpha, src, dst)
        {
            panic!("conv2d input transform: validated transform failed: {e}");
        }
    }

    /// `dx[i] *= estimator.grad_scale(alpha, x[i])`, bit for bit as `dy * grad_scale`.
    pub(crate) fn scale_grad_in_place(&self, x: &[f32], dx: &mut [f32]) {
        debug_assert_eq!(x.len(), dx.len());
        for (d, &x) in dx.iter_mut().zip(x) {
            *d *= self.estimator.grad_scale(self.alpha, x);
        }
    }
}
