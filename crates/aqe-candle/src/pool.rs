//! Max pooling over NHWC tensors, any kernel, stride and padding, with backward.
//!
//! Candle's pooling is NCHW and has a backward only when kernel == stride; the ImageNet models
//! need 3x3 windows with stride 2. The backward routes each output gradient to the first
//! maximal element of its window (row-major order), as PyTorch does; padded positions never win.

use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use crate::cpu;

/// Max-pool settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MaxPoolConfig {
    /// Window height and width.
    pub kernel: usize,
    /// Step between windows.
    pub stride: usize,
    /// Implicit padding on each side (never selected as the maximum).
    pub padding: usize,
}

impl Default for MaxPoolConfig {
    /// 2x2 windows with stride 2, the ConvNet's `MP2`.
    fn default() -> Self {
        MaxPoolConfig {
            kernel: 2,
            stride: 2,
            padding: 0,
        }
    }
}

impl MaxPoolConfig {
    /// Output size for an input of `n` pixels along one axis.
    pub fn out_size(&self, n: usize) -> usize {
        (n + 2 * self.padding).saturating_sub(self.kernel) / self.stride + 1
    }
}

/// Max pooling of an NHWC tensor.
///
/// ```
/// use aqe_candle::pool::{max_pool2d, MaxPoolConfig};
/// use candle_core::{Device, Tensor};
///
/// let x = Tensor::arange(0f32, 16.0, &Device::Cpu)?.reshape((1, 4, 4, 1))?;
/// let y = max_pool2d(&x, MaxPoolConfig::default())?;
/// assert_eq!(y.flatten_all()?.to_vec1::<f32>()?, vec![5.0, 7.0, 13.0, 15.0]);
/// # Ok::<(), candle_core::Error>(())
/// ```
pub fn max_pool2d(x: &Tensor, cfg: MaxPoolConfig) -> Result<Tensor> {
    let (_, h, w, _) = x.dims4()?;
    if cfg.kernel == 0
        || cfg.stride == 0
        || cfg.padding >= cfg.kernel
        || h + 2 * cfg.padding < cfg.kernel
        || w + 2 * cfg.padding < cfg.kernel
    {
        candle_core::bail!(
            "max_pool2d: {cfg:?} does not fit an input of {h}x{w} (NHWC {:?})",
            x.dims()
        );
    }
    if x.device().is_cpu() {
        cpu::expect_f32("max_pool2d", x)?;
        x.contiguous()?.apply_op1(MaxPoolOp(cfg))
    } else if cfg.kernel == cfg.stride && cfg.padding == 0 {
        x.permute((0, 3, 1, 2))?
            .max_pool2d_with_stride(cfg.kernel, cfg.stride)?
            .permute((0, 2, 3, 1))
    } else {
        // Off the CPU Candle has no backward for overlapping windows: pool on the CPU.
        let dev = x.device().clone();
        x.to_device(&candle_core::Device::Cpu)?
            .contiguous()?
            .apply_op1(MaxPoolOp(cfg))?
            .to_device(&dev)
    }
}

struct MaxPoolOp(MaxPoolConfig);

/// For every output element of the NHWC batch `x`, the index in `x` of its window's maximum
/// (the first in row-major order on ties; padded positions never win).
fn argmax_positions(
    x: &[f32],
    dims: (usize, usize, usize, usize),
    cfg: MaxPoolConfig,
) -> Vec<usize> {
    let (n, h, w, c) = dims;
    let (oh, ow) = (cfg.out_size(h), cfg.out_size(w));
    let mut positions = vec![0usize; n * oh * ow * c];
    if positions.is_empty() {
        return positions;
    }
    positions
        .par_chunks_mut(oh * ow * c)
        .enumerate()
        .for_each(|(img, out)| {
            let base = img * h * w * c;
            for oy in 0..oh {
                // Window rows clipped to the image (padding never wins).
                let y0 = (oy * cfg.stride).saturating_sub(cfg.padding);
                let y1 = (oy * cfg.stride + cfg.kernel - cfg.padding).min(h);
                for ox in 0..ow {
                    let x0 = (ox * cfg.stride).saturating_sub(cfg.padding);
                    let x1 = (ox * cfg.stride + cfg.kernel - cfg.padding).min(w);
                    let o = &mut out[(oy * ow + ox) * c..(oy * ow + ox + 1) * c];
                    for (ch, slot) in o.iter_mut().enumerate() {
                        let mut best = base + (y0 * w + x0) * c + ch;
                        for iy in y0..y1 {
                            for ix in x0..x1 {
                                let i = base + (iy * w + ix) * c + ch;
                                if x[i] > x[best] {
                                    best = i;
                                }
                            }
                        }
                        *slot = best;
                    }
                }
            }
        });
    positions
}

impl CustomOp1 for MaxPoolOp {
    fn name(&self) -> &'static str {
        "aqe-max-pool2d"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = cpu::contiguous(s, l)?;
        let dims = l.shape().dims4()?;
        let (n, h, w, c) = dims;
        let shape = Shape::from((n, self.0.out_size(h), self.0.out_size(w), c));
        let y = argmax_positions(x, dims, self.0)
            .into_iter()
            .map(|i| x[i])
            .collect();
        Ok((CpuStorage::F32(y), shape))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let dims = arg.dims4()?;
        let positions = cpu::with_slice(arg, |x| argmax_positions(x, dims, self.0))?;
        let dx = cpu::with_slice(grad, |g| {
            let mut dx = vec![0f32; arg.elem_count()];
            for (gv, &i) in g.iter().zip(&positions) {
                dx[i] += gv;
            }
            dx
        })?;
        Ok(Some(cpu::tensor(dx, arg.shape())?))
    }
}
