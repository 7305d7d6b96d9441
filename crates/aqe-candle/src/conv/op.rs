//! Candle custom ops around the engine, with a backward pass that calls the engine again.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp2, CustomOp3, DType, Layout, Shape, Tensor};

use super::{
    Conv2dGeometry, ConvError, InputTransform, conv2d_backward_input, conv2d_backward_weight,
    conv2d_forward,
};

/// The contiguous `f32` data of a CPU storage, or an error naming the op and argument.
fn f32_slice<'a>(
    op: &'static str,
    arg: &str,
    s: &'a CpuStorage,
    l: &Layout,
) -> Result<&'a [f32], ConvError> {
    let unsupported = |reason: String| ConvError::Unsupported { op, reason };
    let data = match s {
        CpuStorage::F32(v) => v.as_slice(),
        other => {
            return Err(unsupported(format!(
                "`{arg}` must be f32, got {:?}",
                other.dtype()
            )));
        }
    };
    match l.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => Err(unsupported(format!(
            "`{arg}` must be contiguous (call `.contiguous()` first)"
        ))),
    }
}

/// The dims of a rank-4 argument.
fn dims4(op: &'static str, arg: &str, l: &Layout) -> Result<[usize; 4], ConvError> {
    <[usize; 4]>::try_from(l.dims()).map_err(|_| ConvError::Unsupported {
        op,
        reason: format!("`{arg}` must have rank 4, got shape {:?}", l.dims()),
    })
}

/// The output storage and shape of an engine call that fills `len` elements.
fn run(
    shape: [usize; 4],
    f: impl FnOnce(&mut [f32]) -> Result<(), ConvError>,
) -> candle_core::Result<(CpuStorage, Shape)> {
    let mut out = vec![0.0f32; shape.iter().product()];
    f(&mut out)?;
    Ok((CpuStorage::F32(out), Shape::from_dims(&shape)))
}

/// The NHWC/OHWI convolution as a Candle [`CustomOp2`] over `(x, w)`: forward through
/// [`conv2d_forward`], backward through [`conv2d_backward_input`] and
/// [`conv2d_backward_weight`] (as detached tensors). Both arguments must be contiguous `f32` CPU
/// tensors; [`conv2d_nhwc`] takes care of that.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Conv2dOp {
    stride: usize,
    padding: usize,
    transform: Option<InputTransform>,
}

impl Conv2dOp {
    /// A convolution with this stride, zero padding and optional input transform.
    pub fn new(stride: usize, padding: usize, transform: Option<InputTransform>) -> Self {
        Conv2dOp {
            stride,
            padding,
            transform,
        }
    }

    /// The geometry for input dims `[n, h, w, c]` and weight dims `[o, kh, kw, c]`.
    fn geometry(
        &self,
        op: &'static str,
        x: [usize; 4],
        w: [usize; 4],
    ) -> Result<Conv2dGeometry, ConvError> {
        if x[3] != w[3] {
            return Err(ConvError::Shape {
                op,
                arg: "w",
                expected: vec![w[0], w[1], w[2], x[3]],
                got: w.to_vec(),
            });
        }
        let g = Conv2dGeometry {
            batch: x[0],
            in_h: x[1],
            in_w: x[2],
            in_c: x[3],
            out_c: w[0],
            kernel_h: w[1],
            kernel_w: w[2],
            stride: self.stride,
            padding: self.padding,
        };
        g.validate()?;
        Ok(g)
    }
}

impl CustomOp2 for Conv2dOp {
    fn name(&self) -> &'static str {
        "aqe-conv2d-nhwc"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        const OP: &str = "conv2d forward";
        let g = self.geometry(OP, dims4(OP, "x", l1)?, dims4(OP, "w", l2)?)?;
        let x = f32_slice(OP, "x", s1, l1)?;
        let w = f32_slice(OP, "w", s2, l2)?;
        run(g.output_shape(), |out| {
            conv2d_forward(&g, x, w, self.transform.as_ref(), out)
        })
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let grad = grad.contiguous()?;
        let x = x.contiguous()?;
        let w = w.contiguous()?;
        let dx = if x.track_op() {
            Some(grad.apply_op3_no_bwd(&w, &x, &Conv2dBackwardInput { op: *self })?)
        } else {
            None
        };
        let dw = if w.track_op() {
            let (_, kernel_h, kernel_w, _) = w.dims4()?;
            Some(grad.apply_op2_no_bwd(
                &x,
                &Conv2dBackwardWeight {
                    op: *self,
                    kernel_h,
                    kernel_w,
                },
            )?)
        } else {
            None
        };
        Ok((dx, dw))
    }
}

/// Input gradient over `(dout, w, x)`; forward only (its result is detached).
struct Conv2dBackwardInput {
    op: Conv2dOp,
}

impl CustomOp3 for Conv2dBackwardInput {
    fn name(&self) -> &'static str {
        "aqe-conv2d-nhwc-backward-input"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        const OP: &str = "conv2d backward input";
        let g = self
            .op
            .geometry(OP, dims4(OP, "x", l3)?, dims4(OP, "w", l2)?)?;
        check_dout(OP, &g, l1)?;
        let dout = f32_slice(OP, "dout", s1, l1)?;
        let w = f32_slice(OP, "w", s2, l2)?;
        let x = f32_slice(OP, "x", s3, l3)?;
        run(g.input_shape(), |dx| {
            conv2d_backward_input(&g, dout, w, x, self.op.transform.as_ref(), dx)
        })
    }
}

/// Weight gradient over `(dout, x)`; forward only (its result is detached).
struct Conv2dBackwardWeight {
    op: Conv2dOp,
    kernel_h: usize,
    kernel_w: usize,
}

impl CustomOp2 for Conv2dBackwardWeight {
    fn name(&self) -> &'static str {
        "aqe-conv2d-nhwc-backward-weight"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        const OP: &str = "conv2d backward weight";
        let d = dims4(OP, "dout", l1)?;
        let x = dims4(OP, "x", l2)?;
        let g = self
            .op
            .geometry(OP, x, [d[3], self.kernel_h, self.kernel_w, x[3]])?;
        check_dout(OP, &g, l1)?;
        let dout = f32_slice(OP, "dout", s1, l1)?;
        let x = f32_slice(OP, "x", s2, l2)?;
        run(g.weight_shape(), |dw| {
            conv2d_backward_weight(&g, dout, x, self.op.transform.as_ref(), dw)
        })
    }
}

fn check_dout(op: &'static str, g: &Conv2dGeometry, l: &Layout) -> Result<(), ConvError> {
    if l.dims() == g.output_shape() {
        Ok(())
    } else {
        Err(ConvError::Shape {
            op,
            arg: "dout",
            expected: g.output_shape().to_vec(),
            got: l.dims().to_vec(),
        })
    }
}

/// 2-D convolution of NHWC `x` (`[n, h, w, c_in]`) with OHWI `w` (`[c_out, kh, kw, c_in]`):
/// the same `stride` and zero `padding` in both dimensions, output `[n, out_h, out_w, c_out]`,
/// differentiable in both arguments. With `transform`, the convolution sees the quantized input
/// `x_hat` and padded positions contribute 0 (see the [module documentation](super)).
///
/// On the CPU this runs our engine ([`Conv2dOp`]); both tensors must be `f32`. On another
/// device it falls back to Candle's NCHW `conv2d` between permutes, without a transform.
///
/// ```
/// use aqe_candle::conv::conv2d_nhwc;
/// use candle_core::{Device, Tensor};
///
/// let x = Tensor::ones((2, 5, 5, 3), candle_core::DType::F32, &Device::Cpu)?;
/// let w = Tensor::ones((4, 3, 3, 3), candle_core::DType::F32, &Device::Cpu)?;
/// let y = conv2d_nhwc(&x, &w, 2, 1, None)?;
/// assert_eq!(y.dims(), &[2, 3, 3, 4]);
/// // The centre output sees a full 3x3x3 window of ones.
/// assert_eq!(y.get(0)?.get(1)?.get(1)?.get(0)?.to_scalar::<f32>()?, 27.0);
/// # Ok::<(), candle_core::Error>(())
/// ```
///
/// # Errors
///
/// Shape, dtype and geometry errors ([`ConvError`] wrapped in a Candle error); on a non-CPU
/// device, any `transform` (not supported there yet).
pub fn conv2d_nhwc(
    x: &Tensor,
    w: &Tensor,
    stride: usize,
    padding: usize,
    transform: Option<InputTransform>,
) -> candle_core::Result<Tensor> {
    const OP: &str = "conv2d_nhwc";
    if x.device().is_cpu() {
        for (arg, t) in [("x", x), ("w", w)] {
            if t.dtype() != DType::F32 {
                let reason = format!("`{arg}` must be f32, got {:?}", t.dtype());
                return Err(ConvError::Unsupported { op: OP, reason }.into());
            }
        }
        if let Some(t) = &transform {
            t.validate()?;
        }
        let x = x.contiguous()?;
        let w = w.contiguous()?;
        x.apply_op2(&w, Conv2dOp::new(stride, padding, transform))
    } else {
        if transform.is_some() {
            let reason = format!(
                "the fused input transform runs on the CPU only; on {:?} quantize the input with tensor ops",
                x.device().location()
            );
            return Err(ConvError::Unsupported { op: OP, reason }.into());
        }
        let xn = x.permute((0, 3, 1, 2))?.contiguous()?;
        let wn = w.permute((0, 3, 1, 2))?.contiguous()?;
        xn.conv2d(&wn, padding, stride, 1, 1)?
            .permute((0, 2, 3, 1))?
            .contiguous()
    }
}
