//! The 2-3 bit path of packed models: layers whose inputs and weights are integer levels
//! (ternary `{-1, 0, 1}`, pow2 x 4 `{0, +-1, +-2, +-4}`, sign `+-1`) run on the exact int8
//! kernels, and each layer's `f32` epilogue repeats the training graph's operations in order.
//! Int8 convs hand that epilogue to the kernels as per-channel level steps found from the same
//! `f32` expression ([`level_steps`]), so it runs fused into the conv (or over the pooled
//! accumulators) with the same result, bit for bit.

use aqe_core::{HardQuantizer, Quantizer};
use bitpack::{Int8Tensor, LevelSet};
use xnor_kernels::LevelThresholds;

use crate::error::{Error, Result};

/// The quantizer that turns a layer's output into the next layer's int8 levels.
#[derive(Debug, Clone)]
pub(super) struct Act {
    q: HardQuantizer,
}

impl Act {
    /// Parses a quantizer name as written by the export (`sign`, `ternary`, `ternary:0.4`,
    /// `pow2`, `pow2:e1,e2,e3`); refuses data-dependent (TWN) and uniform quantizers, whose
    /// levels are not exact powers of two times integers.
    pub(super) fn parse(spec: &str, lerr: &dyn Fn(String) -> Error) -> Result<Act> {
        let q: Quantizer = spec
            .parse()
            .map_err(|e| lerr(format!("activation quantizer `{spec}`: {e}")))?;
        if q.is_data_dependent() || matches!(q, Quantizer::Uniform { .. }) {
            return Err(lerr(format!(
                "activation quantizer `{spec}` is not supported by the int8 path (sign, ternary with a fixed delta, pow2)"
            )));
        }
        Ok(Act { q: q.resolve(&[]) })
    }

    /// The real value of one integer level.
    pub(super) fn scale(&self) -> f32 {
        self.q.int_scale()
    }

    /// The int8 level of `h(x)`: the integer of `h(x)` (sign, ternary and pow2 levels lie in
    /// `-4..=4`), computed without a code table so that the epilogue loops vectorise.
    #[inline]
    pub(super) fn level(&self, x: f32) -> i8 {
        self.q.int_of(x) as i8
    }
}

/// Checks a weight tensor's level set and returns the real value of one level. Sign weights
/// are stored as ternary levels that never use 0.
pub(super) fn weight_scale(t: &Int8Tensor<'_>, lerr: &dyn Fn(String) -> Error) -> Result<f32> {
    let ls = t.level_set();
    if matches!(ls, LevelSet::Uniform { .. }) {
        return Err(lerr(format!(
            "weight levels `{ls}` are not supported (ternary or pow2)"
        )));
    }
    if t.scale() != ls.default_scale() {
        return Err(lerr(format!(
            "weight scale {} differs from the `{ls}` levels' {}",
            t.scale(),
            ls.default_scale()
        )));
    }
    Ok(ls.default_scale())
}

/// `out` (rows of `stride` bytes) gets, per row of `c` values `v` (after `f32(acc) * s` for
/// integer rows), the level of `clamp(v * scale + shift, -1, 1)`; row pad bytes are zeroed.
pub(super) fn epilogue_f32(
    v: &[f32],
    c: usize,
    scale: &[f32],
    shift: &[f32],
    act: &Act,
    out: &mut [i8],
    stride: usize,
) {
    for (row, o) in v.chunks_exact(c).zip(out.chunks_exact_mut(stride)) {
        for (((o, &v), &a), &b) in o.iter_mut().zip(row).zip(scale).zip(shift) {
            *o = act.level((v * a + b).clamp(-1.0, 1.0));
        }
        o[c..].fill(0);
    }
}

/// The level of one exact accumulator: `v = f32(acc) * s`, then as [`epilogue_f32`].
#[inline]
fn level_i32(acc: i32, s: f32, a: f32, b: f32, act: &Act) -> i8 {
    let v = acc as f32 * s;
    act.level((v * a + b).clamp(-1.0, 1.0))
}

/// [`epilogue_i32`] as per-channel level steps for the kernels' fused `Levels` output: the
/// same `f32` operations, evaluated at the binary-search points of every accumulator a layer
/// of `k` products can give (activations within the kernels' `+-64`, weights within `+-127`).
/// `None` when a channel's map is found not to be monotone (it always is for the supported
/// quantizers: `f32` products, sums and the clamp are monotone, and so is the level), so
/// that the caller keeps the `f32` epilogue.
pub(super) fn level_steps(
    k: usize,
    s: f32,
    scale: &[f32],
    shift: &[f32],
    act: &Act,
) -> Option<LevelThresholds> {
    let bound = (k as i64 * 64 * 127).min(i64::from(i32::MAX)) as i32;
    LevelThresholds::from_monotone(scale.len(), (-bound, bound), |c, acc| {
        level_i32(acc, s, scale[c], shift[c], act)
    })
    .ok()
}

/// [`epilogue_f32`] for exact accumulators, `v = f32(acc) * s`.
#[allow(clippy::too_many_arguments, reason = "one flat epilogue")]
pub(super) fn epilogue_i32(
    acc: &[i32],
    c: usize,
    s: f32,
    scale: &[f32],
    shift: &[f32],
    act: &Act,
    out: &mut [i8],
    stride: usize,
) {
    for (row, o) in acc.chunks_exact(c).zip(out.chunks_exact_mut(stride)) {
        for (((o, &acc), &a), &b) in o.iter_mut().zip(row).zip(scale).zip(shift) {
            *o = level_i32(acc, s, a, b, act);
        }
        o[c..].fill(0);
    }
}

/// The classifier's logits `(f32(acc) * s) * scale + shift`.
pub(super) fn logits_i32(acc: &[i32], s: f32, scale: &[f32], shift: &[f32], logits: &mut [f32]) {
    let n = scale.len();
    for (l, a) in logits.chunks_exact_mut(n).zip(acc.chunks_exact(n)) {
        for (((l, &a), &sc), &sh) in l.iter_mut().zip(a).zip(scale).zip(shift) {
            *l = (a as f32 * s) * sc + sh;
        }
    }
}

/// Makes the dense input rows (`batch` rows of `ceil(k / 4) * 4` bytes, the NHWC flatten of
/// `pixels` pixels of `c` channels stored `ceil(c / 4) * 4` bytes apart) available: returns
/// `src` itself when the layouts coincide, otherwise repacks into `tmp`.
pub(super) fn dense_rows<'a>(
    src: &'a [i8],
    tmp: &'a mut [i8],
    batch: usize,
    pixels: usize,
    c: usize,
) -> &'a [i8] {
    let cs = c.div_ceil(4) * 4;
    let k = pixels * c;
    let ks = k.div_ceil(4) * 4;
    if c == cs || pixels == 1 {
        return &src[..batch * ks];
    }
    let dst = &mut tmp[..batch * ks];
    for (img, row) in dst.chunks_exact_mut(ks).enumerate() {
        for p in 0..pixels {
            let from = (img * pixels + p) * cs;
            row[p * c..(p + 1) * c].copy_from_slice(&src[from..from + c]);
        }
        row[k..].fill(0);
    }
    dst
}
