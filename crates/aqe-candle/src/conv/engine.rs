//! The slice-level kernels: blocking, im2col / col2im, per-thread scratch, gemm calls, rayon.

use std::cell::RefCell;

use rayon::prelude::*;

use super::{Conv2dGeometry, ConvError, InputTransform};

/// Target size of one block's patch matrix, in `f32` elements (1 MiB): large enough for an
/// efficient gemm, small enough to stay in L2 between im2col and the gemm.
const BLOCK_ELEMS: usize = 1 << 18;

/// Per-thread buffers reused across calls; they grow to the largest block seen and stay.
#[derive(Default)]
struct Scratch {
    /// The patch matrix (forward, weight gradient) or its gradient (input gradient).
    cols: Vec<f32>,
    /// The transformed input rows of the current block.
    xt: Vec<f32>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// Runs `f` with this thread's scratch buffers.
fn with_scratch<R>(f: impl FnOnce(&mut Scratch) -> R) -> R {
    SCRATCH.with(|s| f(&mut s.borrow_mut()))
}

/// The first `len` elements of `v`, growing it (with zeros) if it is shorter.
fn grow(v: &mut Vec<f32>, len: usize) -> &mut [f32] {
    if v.len() < len {
        v.resize(len, 0.0);
    }
    &mut v[..len]
}

/// How the batch is cut: parallel groups of `group` images (rayon tasks), each walked in blocks.
#[derive(Debug, Clone, Copy)]
struct Plan {
    /// Images per parallel task (the last group may be smaller).
    group: usize,
    /// Whole images per block, when one image's patch matrix fits [`BLOCK_ELEMS`].
    images_per_block: usize,
    /// Output rows per block; `< out_h` only when one image is split (then one image per block).
    rows_per_block: usize,
}

impl Plan {
    fn new(g: &Conv2dGeometry) -> Self {
        let (oh, ow, k) = (g.out_h(), g.out_w(), g.patch_len());
        let per_image = oh * ow * k;
        // One group per thread would be enough on an idle machine; four per thread let rayon's
        // work stealing even out threads slowed down by other load. One thread: one group.
        let threads = rayon::current_num_threads();
        let groups = if threads <= 1 { 1 } else { 4 * threads };
        let groups = groups.clamp(1, g.batch.max(1));
        let group = g.batch.div_ceil(groups).max(1);
        if per_image <= BLOCK_ELEMS {
            let images_per_block = (BLOCK_ELEMS / per_image.max(1)).clamp(1, group);
            Plan {
                group,
                images_per_block,
                rows_per_block: oh,
            }
        } else {
            let rows_per_block = (BLOCK_ELEMS / (ow * k).max(1)).clamp(1, oh.max(1));
            Plan {
                group,
                images_per_block: 1,
                rows_per_block,
            }
        }
    }

    /// Calls `f` for each block of a group of `images` images, in output order.
    fn for_each_block(&self, oh: usize, images: usize, mut f: impl FnMut(Block)) {
        if self.rows_per_block >= oh {
            let mut img0 = 0;
            while img0 < images {
                let imgs = self.images_per_block.min(images - img0);
                f(Block {
                    img0,
                    imgs,
                    oh0: 0,
                    oh1: oh,
                });
                img0 += imgs;
            }
        } else {
            for img0 in 0..images {
                let mut oh0 = 0;
                while oh0 < oh {
                    let oh1 = (oh0 + self.rows_per_block).min(oh);
                    f(Block {
                        img0,
                        imgs: 1,
                        oh0,
                        oh1,
                    });
                    oh0 = oh1;
                }
            }
        }
    }
}

/// Output rows `oh0..oh1` of images `img0..img0 + imgs` (relative to a group). A block spanning
/// several images always covers whole images, so its output rows are contiguous.
#[derive(Debug, Clone, Copy)]
struct Block {
    img0: usize,
    imgs: usize,
    oh0: usize,
    oh1: usize,
}

impl Block {
    /// Number of output pixels (gemm rows).
    fn pixels(&self, ow: usize) -> usize {
        self.imgs * (self.oh1 - self.oh0) * ow
    }

    /// Offset of the block's first output pixel within its group.
    fn first_pixel(&self, oh: usize, ow: usize) -> usize {
        (self.img0 * oh + self.oh0) * ow
    }
}

/// The input rows `lo..hi` (clamped to the image) that output rows `oh0..oh1` read.
fn input_rows(g: &Conv2dGeometry, oh0: usize, oh1: usize) -> (usize, usize) {
    let lo = (oh0 * g.stride).saturating_sub(g.padding).min(g.in_h);
    let hi = ((oh1 - 1) * g.stride + g.kernel_h)
        .saturating_sub(g.padding)
        .min(g.in_h)
        .max(lo);
    (lo, hi)
}

/// Input data of a block as im2col reads it: image `i` row `ih` starts at
/// `data[i * img_stride + (ih - row_base) * in_w * in_c]`.
struct Src<'a> {
    data: &'a [f32],
    img_stride: usize,
    row_base: usize,
}

/// The block's input: `xg` itself, or its needed rows passed through the transform into `xt`.
fn source<'a>(
    g: &Conv2dGeometry,
    xg: &'a [f32],
    transform: Option<&InputTransform>,
    b: &Block,
    xt: &'a mut Vec<f32>,
) -> Src<'a> {
    let in_img = g.in_h * g.in_w * g.in_c;
    match transform {
        None => Src {
            data: &xg[b.img0 * in_img..(b.img0 + b.imgs) * in_img],
            img_stride: in_img,
            row_base: 0,
        },
        Some(t) => {
            let row = g.in_w * g.in_c;
            let (lo, hi) = input_rows(g, b.oh0, b.oh1);
            let stride = (hi - lo) * row;
            let buf = grow(xt, b.imgs * stride);
            for (i, dst) in buf.chunks_exact_mut(stride.max(1)).enumerate().take(b.imgs) {
                let img = &xg[(b.img0 + i) * in_img..][..in_img];
                t.forward_slice(&img[lo * row..hi * row], dst);
            }
            Src {
                data: buf,
                img_stride: stride,
                row_base: lo,
            }
        }
    }
}

/// Writes the patch matrix of a block into `cols` (`pixels x patch_len`, row-major, patch order
/// `(kh, kw, ci)`); padded positions are 0.
fn im2col(g: &Conv2dGeometry, src: &Src<'_>, b: &Block, cols: &mut [f32]) {
    let (h, w, c) = (g.in_h, g.in_w, g.in_c);
    let (kw, s, p) = (g.kernel_w, g.stride, g.padding);
    let ow_n = g.out_w();
    let seg = kw * c;
    let mut rows = cols.chunks_exact_mut(g.patch_len());
    for i in 0..b.imgs {
        let img = &src.data[i * src.img_stride..];
        for oh in b.oh0..b.oh1 {
            for ow in 0..ow_n {
                let Some(row) = rows.next() else { return };
                let iw0 = (ow * s) as isize - p as isize;
                let inside = iw0 >= 0 && iw0 as usize + kw <= w;
                for (ki, dst) in row.chunks_exact_mut(seg).enumerate() {
                    let ih = (oh * s + ki) as isize - p as isize;
                    if ih < 0 || ih >= h as isize {
                        dst.fill(0.0);
                        continue;
                    }
                    let line = &img[(ih as usize - src.row_base) * w * c..][..w * c];
                    if inside {
                        copy_short(dst, &line[iw0 as usize * c..][..seg]);
                    } else {
                        for (kj, d) in dst.chunks_exact_mut(c).enumerate() {
                            let iw = iw0 + kj as isize;
                            if iw < 0 || iw >= w as isize {
                                d.fill(0.0);
                            } else {
                                copy_short(d, &line[iw as usize * c..][..c]);
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Adds the patch-matrix gradient of a block into the gradient of its whole images
/// `dx` (`imgs x in_h x in_w x in_c`); padded positions are dropped.
fn col2im(g: &Conv2dGeometry, dcols: &[f32], b: &Block, dx: &mut [f32]) {
    let (h, w, c) = (g.in_h, g.in_w, g.in_c);
    let (kw, s, p) = (g.kernel_w, g.stride, g.padding);
    let in_img = h * w * c;
    let ow_n = g.out_w();
    let seg = kw * c;
    let mut rows = dcols.chunks_exact(g.patch_len());
    for i in 0..b.imgs {
        let img = &mut dx[i * in_img..][..in_img];
        for oh in b.oh0..b.oh1 {
            for ow in 0..ow_n {
                let Some(row) = rows.next() else { return };
                let iw0 = (ow * s) as isize - p as isize;
                let inside = iw0 >= 0 && iw0 as usize + kw <= w;
                for (ki, src) in row.chunks_exact(seg).enumerate() {
                    let ih = (oh * s + ki) as isize - p as isize;
                    if ih < 0 || ih >= h as isize {
                        continue;
                    }
                    let line = &mut img[ih as usize * w * c..][..w * c];
                    if inside {
                        add_into(&mut line[iw0 as usize * c..][..seg], src);
                    } else {
                        for (kj, s) in src.chunks_exact(c).enumerate() {
                            let iw = iw0 + kj as isize;
                            if iw >= 0 && iw < w as isize {
                                add_into(&mut line[iw as usize * c..][..c], s);
                            }
                        }
                    }
                }
            }
        }
    }
}

/// `dst.copy_from_slice(src)` for the short runs of im2col (a few hundred bytes), in inlined
/// 16-float moves rather than a call into the C library's `memmove` for each run.
#[inline(always)]
fn copy_short(dst: &mut [f32], src: &[f32]) {
    let mut d = dst.chunks_exact_mut(16);
    let mut s = src.chunks_exact(16);
    for (d, s) in (&mut d).zip(&mut s) {
        let s: &[f32; 16] = s.try_into().expect("chunks_exact gives 16 elements");
        d.copy_from_slice(s);
    }
    for (d, &s) in d.into_remainder().iter_mut().zip(s.remainder()) {
        *d = s;
    }
}

/// `dst[i] += src[i]`.
#[inline]
fn add_into(dst: &mut [f32], src: &[f32]) {
    for (d, &s) in dst.iter_mut().zip(src) {
        *d += s;
    }
}

/// A strided read-only matrix operand: element `(i, j)` is `data[i * rs + j * cs]`.
#[derive(Clone, Copy)]
struct Mat<'a> {
    data: &'a [f32],
    rs: usize,
    cs: usize,
}

/// Whether the gemm overwrites or adds to its destination.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Dst {
    Overwrite,
    Accumulate,
}

/// Fails unless every element `(i, j)`, `i < rows`, `j < cols` of a strided matrix is in bounds.
fn check_bounds(len: usize, rows: usize, cols: usize, rs: usize, cs: usize) {
    if rows > 0 && cols > 0 {
        let last = (rows - 1) * rs + (cols - 1) * cs;
        assert!(
            last < len,
            "conv2d gemm operand out of bounds: element {last} of {len}"
        );
    }
}

/// `dst[m x n] (= or +=) lhs[m x k] * rhs[k x n]`, single-threaded (the caller parallelises).
///
/// # Panics
///
/// If an operand is too short for its shape and strides (a broken engine invariant).
#[allow(clippy::too_many_arguments)]
fn gemm(
    m: usize,
    n: usize,
    k: usize,
    dst: &mut [f32],
    dst_rs: usize,
    dst_cs: usize,
    mode: Dst,
    lhs: Mat<'_>,
    rhs: Mat<'_>,
) {
    if m == 0 || n == 0 {
        return;
    }
    check_bounds(dst.len(), m, n, dst_rs, dst_cs);
    if k == 0 {
        if mode == Dst::Overwrite {
            for i in 0..m {
                for j in 0..n {
                    dst[i * dst_rs + j * dst_cs] = 0.0;
                }
            }
        }
        return;
    }
    check_bounds(lhs.data.len(), m, k, lhs.rs, lhs.cs);
    check_bounds(rhs.data.len(), k, n, rhs.rs, rhs.cs);
    let read_dst = mode == Dst::Accumulate;
    // SAFETY: the three checks above prove that every element the gemm reads or writes,
    // `dst[i * dst_rs + j * dst_cs]`, `lhs[i * rs + l * cs]` and `rhs[l * rs + j * cs]` for `i < m`,
    // `j < n`, `l < k`, lies inside its slice; `dst` is a unique borrow, so it does not alias
    // `lhs` or `rhs`; `f32` is a type the gemm crate supports; strides fit in `isize` because
    // they index allocated slices.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            dst_cs as isize,
            dst_rs as isize,
            read_dst,
            lhs.data.as_ptr(),
            lhs.cs as isize,
            lhs.rs as isize,
            rhs.data.as_ptr(),
            rhs.cs as isize,
            rhs.rs as isize,
            if read_dst { 1.0 } else { 0.0 },
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

fn check_len(
    op: &'static str,
    arg: &'static str,
    expected: &[usize],
    got: usize,
) -> Result<(), ConvError> {
    if expected.iter().product::<usize>() == got {
        Ok(())
    } else {
        Err(ConvError::Shape {
            op,
            arg,
            expected: expected.to_vec(),
            got: vec![got],
        })
    }
}

fn check_transform(t: Option<&InputTransform>) -> Result<(), ConvError> {
    t.map_or(Ok(()), InputTransform::validate)
}

/// Forward convolution `out[n, oh, ow, co] = sum x_hat[n, ih, iw, ci] * w[co, kh, kw, ci]`,
/// where `x_hat` is `x` passed through `transform` (or `x` itself) and padding contributes 0.
/// Overwrites `out`. Uses the current rayon pool.
///
/// ```
/// use aqe_candle::conv::{conv2d_forward, Conv2dGeometry};
///
/// let g = Conv2dGeometry { batch: 1, in_h: 2, in_w: 2, in_c: 1, out_c: 1,
///                          kernel_h: 3, kernel_w: 3, stride: 1, padding: 1 };
/// let mut out = vec![0.0; 4];
/// conv2d_forward(&g, &[1.0, 2.0, 3.0, 4.0], &[1.0; 9], None, &mut out)?;
/// assert_eq!(out, [10.0; 4]); // every 3x3 window covers the whole padded 2x2 image
/// # Ok::<(), aqe_candle::conv::ConvError>(())
/// ```
///
/// # Errors
///
/// [`ConvError::Geometry`] for an invalid geometry, [`ConvError::Shape`] if a slice length
/// does not match it, [`ConvError::Transform`] for an invalid transform.
pub fn conv2d_forward(
    g: &Conv2dGeometry,
    x: &[f32],
    w: &[f32],
    transform: Option<&InputTransform>,
    out: &mut [f32],
) -> Result<(), ConvError> {
    const OP: &str = "conv2d forward";
    g.validate()?;
    check_len(OP, "x", &g.input_shape(), x.len())?;
    check_len(OP, "w", &g.weight_shape(), w.len())?;
    check_len(OP, "out", &g.output_shape(), out.len())?;
    check_transform(transform)?;
    if g.batch == 0 {
        return Ok(());
    }
    let plan = Plan::new(g);
    let in_img = g.in_h * g.in_w * g.in_c;
    let out_img = g.out_h() * g.out_w() * g.out_c;
    x.par_chunks(plan.group * in_img)
        .zip(out.par_chunks_mut(plan.group * out_img))
        .for_each(|(xg, og)| with_scratch(|s| forward_group(g, &plan, xg, w, transform, og, s)));
    Ok(())
}

fn forward_group(
    g: &Conv2dGeometry,
    plan: &Plan,
    xg: &[f32],
    w: &[f32],
    transform: Option<&InputTransform>,
    og: &mut [f32],
    scratch: &mut Scratch,
) {
    let Scratch { cols, xt } = scratch;
    let (oh, ow, co, k) = (g.out_h(), g.out_w(), g.out_c, g.patch_len());
    let images = xg.len() / (g.in_h * g.in_w * g.in_c);
    let wt = Mat {
        data: w,
        rs: 1,
        cs: k,
    };
    plan.for_each_block(oh, images, |b| {
        let m = b.pixels(ow);
        let src = source(g, xg, transform, &b, xt);
        let lhs = if g.is_pointwise() {
            &src.data[(b.oh0 - src.row_base) * g.in_w * g.in_c..][..m * k]
        } else {
            let c = grow(cols, m * k);
            im2col(g, &src, &b, c);
            c
        };
        let dst = &mut og[b.first_pixel(oh, ow) * co..][..m * co];
        gemm(
            m,
            co,
            k,
            dst,
            co,
            1,
            Dst::Overwrite,
            Mat {
                data: lhs,
                rs: k,
                cs: 1,
            },
            wt,
        );
    });
}

/// Gradient of [`conv2d_forward`] with respect to its input `x`:
/// `dx = col2im(dout * w) * grad_scale(alpha, x)` (the scale only with a `transform`).
/// Overwrites `dx`; `x` is read only with a transform. Uses the current rayon pool.
///
/// # Errors
///
/// As [`conv2d_forward`].
pub fn conv2d_backward_input(
    g: &Conv2dGeometry,
    dout: &[f32],
    w: &[f32],
    x: &[f32],
    transform: Option<&InputTransform>,
    dx: &mut [f32],
) -> Result<(), ConvError> {
    const OP: &str = "conv2d backward input";
    g.validate()?;
    check_len(OP, "dout", &g.output_shape(), dout.len())?;
    check_len(OP, "w", &g.weight_shape(), w.len())?;
    check_len(OP, "x", &g.input_shape(), x.len())?;
    check_len(OP, "dx", &g.input_shape(), dx.len())?;
    check_transform(transform)?;
    if g.batch == 0 {
        return Ok(());
    }
    let in_img = g.in_h * g.in_w * g.in_c;
    let plan = Plan::new(g);
    let out_img = g.out_h() * g.out_w() * g.out_c;
    dx.par_chunks_mut(plan.group * in_img)
        .zip(dout.par_chunks(plan.group * out_img))
        .zip(x.par_chunks(plan.group * in_img))
        .for_each(|((dxg, dg), xg)| {
            with_scratch(|s| backward_input_group(g, &plan, dg, w, xg, transform, dxg, s));
        });
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn backward_input_group(
    g: &Conv2dGeometry,
    plan: &Plan,
    dg: &[f32],
    w: &[f32],
    xg: &[f32],
    transform: Option<&InputTransform>,
    dxg: &mut [f32],
    scratch: &mut Scratch,
) {
    let (oh, ow, co, k) = (g.out_h(), g.out_w(), g.out_c, g.patch_len());
    let in_img = g.in_h * g.in_w * g.in_c;
    let images = dxg.len() / in_img;
    let wm = Mat {
        data: w,
        rs: k,
        cs: 1,
    };
    plan.for_each_block(oh, images, |b| {
        let m = b.pixels(ow);
        let lhs = Mat {
            data: &dg[b.first_pixel(oh, ow) * co..][..m * co],
            rs: co,
            cs: 1,
        };
        let dxb = &mut dxg[b.img0 * in_img..][..b.imgs * in_img];
        if g.is_pointwise() {
            let dst = &mut dxb[b.oh0 * g.in_w * g.in_c..][..m * k];
            gemm(m, k, co, dst, k, 1, Dst::Overwrite, lhs, wm);
        } else {
            if b.oh0 == 0 {
                dxb.fill(0.0);
            }
            let dcols = grow(&mut scratch.cols, m * k);
            gemm(m, k, co, dcols, k, 1, Dst::Overwrite, lhs, wm);
            col2im(g, dcols, &b, dxb);
        }
        if let (Some(t), true) = (transform, b.oh1 == oh) {
            t.scale_grad_in_place(&xg[b.img0 * in_img..][..b.imgs * in_img], dxb);
        }
    });
}

/// Gradient of [`conv2d_forward`] with respect to the weights:
/// `dw[co, kh, kw, ci] = sum dout[n, oh, ow, co] * x_hat[n, ih, iw, ci]`, with the patches
/// recomputed from `x` (and the transform) rather than kept from the forward pass.
/// Overwrites `dw`. Each parallel group accumulates its own partial sum; they are added in
/// group order, so the result does not depend on scheduling (only on the pool size).
///
/// # Errors
///
/// As [`conv2d_forward`].
pub fn conv2d_backward_weight(
    g: &Conv2dGeometry,
    dout: &[f32],
    x: &[f32],
    transform: Option<&InputTransform>,
    dw: &mut [f32],
) -> Result<(), ConvError> {
    const OP: &str = "conv2d backward weight";
    g.validate()?;
    check_len(OP, "dout", &g.output_shape(), dout.len())?;
    check_len(OP, "x", &g.input_shape(), x.len())?;
    check_len(OP, "dw", &g.weight_shape(), dw.len())?;
    check_transform(transform)?;
    if g.batch == 0 {
        dw.fill(0.0);
        return Ok(());
    }
    let plan = Plan::new(g);
    let in_img = g.in_h * g.in_w * g.in_c;
    let out_img = g.out_h() * g.out_w() * g.out_c;
    if plan.group >= g.batch {
        with_scratch(|s| backward_weight_group(g, &plan, dout, x, transform, dw, s));
        return Ok(());
    }
    let partials: Vec<Vec<f32>> = x
        .par_chunks(plan.group * in_img)
        .zip(dout.par_chunks(plan.group * out_img))
        .map(|(xg, dg)| {
            let mut acc = vec![0.0; dw.len()];
            with_scratch(|s| backward_weight_group(g, &plan, dg, xg, transform, &mut acc, s));
            acc
        })
        .collect();
    dw.copy_from_slice(&partials[0]);
    for p in &partials[1..] {
        add_into(dw, p);
    }
    Ok(())
}

fn backward_weight_group(
    g: &Conv2dGeometry,
    plan: &Plan,
    dg: &[f32],
    xg: &[f32],
    transform: Option<&InputTransform>,
    dw: &mut [f32],
    scratch: &mut Scratch,
) {
    let Scratch { cols, xt } = scratch;
    let (oh, ow, co, k) = (g.out_h(), g.out_w(), g.out_c, g.patch_len());
    let images = xg.len() / (g.in_h * g.in_w * g.in_c);
    let mut mode = Dst::Overwrite;
    plan.for_each_block(oh, images, |b| {
        let m = b.pixels(ow);
        let src = source(g, xg, transform, &b, xt);
        let rhs = if g.is_pointwise() {
            &src.data[(b.oh0 - src.row_base) * g.in_w * g.in_c..][..m * k]
        } else {
            let c = grow(cols, m * k);
            im2col(g, &src, &b, c);
            c
        };
        let lhs = Mat {
            data: &dg[b.first_pixel(oh, ow) * co..][..m * co],
            rs: 1,
            cs: co,
        };
        gemm(
            co,
            k,
            m,
            dw,
            k,
            1,
            mode,
            lhs,
            Mat {
                data: rhs,
                rs: k,
                cs: 1,
            },
        );
        mode = Dst::Accumulate;
    });
}
