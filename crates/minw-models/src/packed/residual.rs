//! The residual blocks of packed ResNets: the `f32` stream `x`, its packed signs, two binary
//! 3x3 convs and the shortcut, computed as the training graph computes them in evaluation mode.

use bitpack::{BitTensor, Layout};
use xnor_kernels::{BinaryConv2d, Conv2dConfig, Output, PadMode, Thresholds};

use super::{ShortcutMeta, Step, affine_params};
use crate::error::{Error, Result};

/// What the file says about one block, validated by [`Block::build`].
pub(super) struct BlockSpec<'m> {
    pub(super) in_c: usize,
    pub(super) out_c: usize,
    pub(super) stride: usize,
    /// The input's spatial size and channels as the previous layer leaves them.
    pub(super) h: usize,
    pub(super) w: usize,
    pub(super) c: usize,
    pub(super) thresholds: Thresholds,
    pub(super) scale_bits: &'m [u32],
    pub(super) shift_bits: &'m [u32],
    pub(super) shortcut: &'m ShortcutMeta,
}

#[derive(Debug)]
enum Shortcut {
    Identity,
    PadA {
        before: usize,
    },
    Projection {
        conv: Box<BinaryConv2d>,
        scale: Vec<f32>,
        shift: Vec<f32>,
    },
}

/// A validated residual block ready to run.
#[derive(Debug)]
pub(super) struct Block {
    in_c: usize,
    out_c: usize,
    stride: usize,
    conv1: BinaryConv2d,
    thresholds: Thresholds,
    conv2: BinaryConv2d,
    scale: Vec<f32>,
    shift: Vec<f32>,
    shortcut: Shortcut,
}

/// The buffers a block works in (planned by the model for the largest block).
pub(super) struct Scratch<'b> {
    /// The input stream (`batch * h * w * in_c` values used).
    pub(super) x: &'b mut Vec<f32>,
    /// The output stream.
    pub(super) x_next: &'b mut Vec<f32>,
    /// `sign x`, packed.
    pub(super) bits_in: &'b mut Vec<u64>,
    /// `conv1`'s packed output.
    pub(super) bits_mid: &'b mut Vec<u64>,
    /// `conv2`'s BatchNorm output.
    pub(super) h: &'b mut Vec<f32>,
    /// The projection shortcut's output.
    pub(super) shortcut: &'b mut Vec<f32>,
}

fn check_weight(
    t: &BitTensor<'_>,
    name: &str,
    dims: [usize; 4],
    lerr: &dyn Fn(String) -> Error,
) -> Result<()> {
    if t.layout() != Layout::Ohwi || t.dims() != dims {
        return Err(lerr(format!(
            "`{name}` has layout {} dims {:?}, expected ohwi {dims:?}",
            t.layout().name(),
            t.dims()
        )));
    }
    Ok(())
}

impl Block {
    /// Validates `spec` against the stream it reads and the weight tensors (`names`: conv1,
    /// conv2, then the projection's), and prepares the convs. Returns the block and its shapes.
    pub(super) fn build<'f>(
        spec: BlockSpec<'_>,
        get: &dyn Fn(&str) -> Result<&'f BitTensor<'f>>,
        names: &[String],
        lerr: &dyn Fn(String) -> Error,
    ) -> Result<(Block, Step)> {
        let BlockSpec {
            in_c,
            out_c,
            stride,
            h,
            w,
            c,
            thresholds,
            scale_bits,
            shift_bits,
            shortcut,
        } = spec;
        if in_c != c {
            return Err(lerr(format!(
                "expects {in_c} input channels, the stream has {c}"
            )));
        }
        if out_c == 0 || out_c > 65536 || stride == 0 || stride > 4 {
            return Err(lerr(format!(
                "invalid block geometry: {out_c} output channels, stride {stride}"
            )));
        }
        // 3x3 with padding 1: any input of at least 1x1 gives (h - 1) / stride + 1 rows.
        let (ho, wo) = ((h - 1) / stride + 1, (w - 1) / stride + 1);
        let conv = |name: &str, cin: usize, k: usize, s: usize, p: usize| -> Result<BinaryConv2d> {
            let t = get(name)?;
            check_weight(t, name, [out_c, k, k, cin], lerr)?;
            let cfg = Conv2dConfig {
                stride: s,
                padding: p,
                pad_mode: PadMode::Zero,
            };
            BinaryConv2d::new(t.words(), out_c, cin, k, k, cfg)
                .map_err(|e| lerr(format!("`{name}`: {e}")))
        };
        let conv1 = conv(&names[0], in_c, 3, stride, 1)?;
        let conv2 = conv(&names[1], out_c, 3, 1, 1)?;
        let (scale, shift) = affine_params("conv2 ", scale_bits, shift_bits, out_c, lerr)?;
        let shortcut = match shortcut {
            ShortcutMeta::Identity => {
                if stride != 1 || in_c != out_c {
                    return Err(lerr(format!(
                        "an identity shortcut needs stride 1 and equal channels, not stride {stride}, {in_c} -> {out_c}"
                    )));
                }
                Shortcut::Identity
            }
            ShortcutMeta::PadA {
                pad_before,
                pad_after,
            } => {
                if pad_before
                    .checked_add(*pad_after)
                    .and_then(|p| p.checked_add(in_c))
                    != Some(out_c)
                {
                    return Err(lerr(format!(
                        "option-A padding {pad_before} + {in_c} + {pad_after} is not {out_c} channels"
                    )));
                }
                Shortcut::PadA {
                    before: *pad_before,
                }
            }
            ShortcutMeta::Projection {
                scale_bits,
                shift_bits,
            } => {
                let name = names
                    .get(2)
                    .ok_or_else(|| lerr("projection weight missing".into()))?;
                let conv = conv(name, in_c, 1, stride, 0)?;
                let (scale, shift) =
                    affine_params("shortcut ", scale_bits, shift_bits, out_c, lerr)?;
                Shortcut::Projection {
                    conv: Box::new(conv),
                    scale,
                    shift,
                }
            }
        };
        let block = Block {
            in_c,
            out_c,
            stride,
            conv1,
            thresholds,
            conv2,
            scale,
            shift,
            shortcut,
        };
        let step = Step {
            h,
            w,
            ho,
            wo,
            hp: ho,
            wp: wo,
        };
        Ok((block, step))
    }

    pub(super) fn in_c(&self) -> usize {
        self.in_c
    }

    pub(super) fn out_c(&self) -> usize {
        self.out_c
    }

    /// Runs the block on `batch` images of the step's input size: reads `sc.x`, writes
    /// `sc.x_next`.
    pub(super) fn run(
        &self,
        batch: usize,
        st: &Step,
        sc: Scratch<'_>,
    ) -> std::result::Result<(), Box<dyn std::fmt::Display>> {
        let (h, w, ho, wo) = (st.h, st.w, st.ho, st.wo);
        let (in_c, out_c) = (self.in_c, self.out_c);
        let x = &sc.x[..batch * h * w * in_c];
        let n_in = batch * h * w * in_c.div_ceil(64);
        pack_rows(x, in_c, &mut sc.bits_in[..n_in]).map_err(boxed)?;
        let bits_in = &sc.bits_in[..n_in];
        let n_mid = batch * ho * wo * out_c.div_ceil(64);
        self.conv1
            .forward(
                bits_in,
                batch,
                h,
                w,
                Output::Packed {
                    thresholds: &self.thresholds,
                    out: &mut sc.bits_mid[..n_mid],
                },
            )
            .map_err(boxed)?;
        let n_out = batch * ho * wo * out_c;
        let hv = &mut sc.h[..n_out];
        self.conv2
            .forward(
                &sc.bits_mid[..n_mid],
                batch,
                ho,
                wo,
                Output::Affine {
                    scale: &self.scale,
                    bias: &self.shift,
                    out: hv,
                },
            )
            .map_err(boxed)?;
        let out = &mut sc.x_next[..n_out];
        // `add_activation(h, shortcut, HardTanh)`: `clamp(h + s, -1, 1)`.
        match &self.shortcut {
            Shortcut::Identity => add_clamp(out, hv, x),
            Shortcut::PadA { before } => {
                let s = self.stride;
                for img in 0..batch {
                    for y in 0..ho {
                        for xx in 0..wo {
                            let src = ((img * h + y * s) * w + xx * s) * in_c;
                            let dst = ((img * ho + y) * wo + xx) * out_c;
                            let (o, a) = (&mut out[dst..dst + out_c], &hv[dst..dst + out_c]);
                            // The zero channels add +0.0, as `pad_with_zeros` does.
                            let (mid, hi) = (*before, before + in_c);
                            add_clamp_zero(&mut o[..mid], &a[..mid]);
                            add_clamp(&mut o[mid..hi], &a[mid..hi], &x[src..src + in_c]);
                            add_clamp_zero(&mut o[hi..], &a[hi..]);
                        }
                    }
                }
            }
            Shortcut::Projection { conv, scale, shift } => {
                let p = &mut sc.shortcut[..n_out];
                conv.forward(
                    bits_in,
                    batch,
                    h,
                    w,
                    Output::Affine {
                        scale,
                        bias: shift,
                        out: p,
                    },
                )
                .map_err(boxed)?;
                add_clamp(out, hv, p);
            }
        }
        Ok(())
    }
}

/// `out[i] = (a[i] + 0.0).clamp(-1.0, 1.0)`: the zero-padded channels of an option-A
/// shortcut (`+0.0` turns `-0.0` into `+0.0`, as the graph's padding does).
fn add_clamp_zero(out: &mut [f32], a: &[f32]) {
    static ZEROS: [f32; 256] = [0.0; 256];
    for (o, a) in out.chunks_mut(ZEROS.len()).zip(a.chunks(ZEROS.len())) {
        add_clamp(o, a, &ZEROS[..o.len()]);
    }
}

/// `out[i] = (a[i] + b[i]).clamp(-1.0, 1.0)`: the residual add with HardTanh. The same loop
/// compiled for AVX-512 when this CPU has it (16 lanes instead of the baseline's 4; the same
/// IEEE operations, so the same bits).
fn add_clamp(out: &mut [f32], a: &[f32], b: &[f32]) {
    assert!(a.len() == out.len() && b.len() == out.len());
    #[inline(always)]
    fn body(out: &mut [f32], a: &[f32], b: &[f32]) {
        for ((o, &a), &b) in out.iter_mut().zip(a).zip(b) {
            *o = (a + b).clamp(-1.0, 1.0);
        }
    }
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx512f")]
        fn wide(out: &mut [f32], a: &[f32], b: &[f32]) {
            body(out, a, b);
        }
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: AVX-512F is present (checked just above).
            return unsafe { wide(out, a, b) };
        }
    }
    body(out, a, b)
}

fn boxed(e: impl std::fmt::Display + 'static) -> Box<dyn std::fmt::Display> {
    Box::new(e)
}

/// Packs the signs of `rows` of `c` values each into rows of `ceil(c / 64)` words (`x < 0`
/// is -1, pad bits zero), the layout of NHWC activations and dense inputs.
pub(super) fn pack_rows(
    x: &[f32],
    c: usize,
    dst: &mut [u64],
) -> std::result::Result<(), bitpack::BitpackError> {
    bitpack::pack_sign_rows(x, c, dst)
}

/// Global average pooling of NHWC `x` with `c` channels into `out` (`batch * c`), summing the
/// pixels in order in `f32` and scaling by `1 / pixels`, as the training graph's `mean`.
pub(super) fn global_mean(x: &[f32], c: usize, out: &mut [f32]) {
    let batch = out.len() / c;
    let pixels = x.len() / (batch * c);
    let inv = (1.0 / pixels as f64) as f32;
    for (o, img) in out.chunks_exact_mut(c).zip(x.chunks_exact(pixels * c)) {
        o.fill(0.0);
        for px in img.chunks_exact(c) {
            for (s, &v) in o.iter_mut().zip(px) {
                *s += v;
            }
        }
        for s in o.iter_mut() {
            *s = *s * inv + 0.0;
        }
    }
}
