//! The packed inference engine: a W1A1 ConvNet loaded from a packed model file (see
//! `docs/packed-format.md`) and run on `xnor-kernels` with the run-time ISA.
//!
//! Layer by layer it computes exactly what the training graph computes in evaluation mode
//! (`model.forward_t(x, false)`), so its logits are bit-identical and its predictions equal:
//!
//! - the first conv (float image, binary weights) runs the training graph's own `f32`
//!   convolution ([`aqe_candle::conv::conv2d_forward`]) with the +-1 weights, then
//!   `(max-pool) -> v * scale + shift >= 0` in `f32` with the exported BatchNorm `scale`/`shift`;
//! - every binary conv and hidden FC layer compares its integer accumulator with a per-channel
//!   threshold folded from BatchNorm + HardTanh + the next layer's sign ([`fold_threshold`]);
//!   max-pooling happens on the packed signs (AND for increasing channels, OR for decreasing);
//! - the classifier computes `f32(acc) * scale + shift`, the training graph's BatchNorm.
//!
//! ```no_run
//! use minw_models::packed::PackedModel;
//! let model = PackedModel::load_path("model.minw".as_ref())?;
//! let images = vec![0f32; 4 * model.image_len()]; // normalised NHWC
//! let labels = model.predict(&images, 4)?;
//! assert_eq!(labels.len(), 4);
//! # Ok::<(), minw_models::Error>(())
//! ```

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Mutex;

use aqe_candle::conv::{Conv2dGeometry, conv2d_forward};
use bitpack::file::PackedTensor;
use bitpack::{BitTensor, Int8Tensor, Layout};
use serde::{Deserialize, Serialize};
use xnor_kernels::{
    BinaryConv2d, BinaryWeights, Conv2dConfig, Direction, Int8Conv2d, Int8Weights, LevelThresholds,
    Output, PadMode, Thresholds,
};

use crate::error::{Error, Result};

mod int8;
mod residual;

/// The packed model format version this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;
/// `__metadata__` key holding the model description (JSON, [`ModelMeta`]).
pub const MODEL_KEY: &str = "minw.model";
/// `__metadata__` key holding the FNV-1a 64 checksum (16 lower-case hex digits).
pub const CHECKSUM_KEY: &str = "minw.checksum";
/// Largest accumulator magnitude the `f32` folding is exact for (integers up to 2^24).
pub const MAX_EXACT_K: usize = 1 << 24;

/// The model description stored as JSON under [`MODEL_KEY`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelMeta {
    /// [`FORMAT_VERSION`].
    pub format_version: u32,
    /// The architecture, e.g. `convnet-D`.
    pub architecture: String,
    /// The MINW setting, `1/1`.
    pub bits: String,
    /// Input image `[height, width, channels]` (NHWC without the batch).
    pub input_shape: [usize; 3],
    /// Per-channel mean of the input normalisation `(p / 255 - mean) / std`.
    pub normalize_mean: Vec<f32>,
    /// Per-channel std of the input normalisation.
    pub normalize_std: Vec<f32>,
    /// Class names, one per logit.
    pub class_names: Vec<String>,
    /// The layers, in order.
    pub layers: Vec<LayerMeta>,
}

/// One layer of a packed model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum LayerMeta {
    /// A conv on a float input with binary weights (the first layer): `f32` conv, optional
    /// 2x2 max-pool, then the sign of `v * scale + shift` (f32) packed for the next layer.
    FloatConv {
        /// Layer name (its weight tensor is `<name>.weight`, OHWI sign plane).
        name: String,
        /// Input channels.
        in_channels: usize,
        /// Output channels.
        out_channels: usize,
        /// Square kernel size.
        kernel: usize,
        /// Stride.
        stride: usize,
        /// Zero padding (padded positions contribute 0).
        padding: usize,
        /// Whether a 2x2/2 max-pool follows the conv (before the BatchNorm).
        pool: bool,
        /// BatchNorm scale per channel, as `f32` bit patterns.
        scale_bits: Vec<u32>,
        /// BatchNorm shift per channel, as `f32` bit patterns.
        shift_bits: Vec<u32>,
    },
    /// A binary conv with zero padding, optional 2x2 max-pool and per-channel thresholds.
    BinaryConv {
        /// Layer name (weight tensor `<name>.weight`, OHWI sign plane).
        name: String,
        /// Input channels.
        in_channels: usize,
        /// Output channels.
        out_channels: usize,
        /// Square kernel size.
        kernel: usize,
        /// Stride.
        stride: usize,
        /// Zero padding.
        padding: usize,
        /// Whether a 2x2/2 max-pool follows (pooled on signs, see the format docs).
        pool: bool,
        /// Per-channel thresholds.
        thresholds: Vec<i32>,
        /// Per-channel directions.
        directions: Vec<Dir>,
    },
    /// A binary fully connected layer with thresholds (hidden FC).
    BinaryDense {
        /// Layer name (weight tensor `<name>.weight`, row-major sign plane `[out, in]`).
        name: String,
        /// Input features (NHWC flatten of the previous conv block).
        in_features: usize,
        /// Output features.
        out_features: usize,
        /// Per-channel thresholds.
        thresholds: Vec<i32>,
        /// Per-channel directions.
        directions: Vec<Dir>,
    },
    /// The classifier: binary FC, logits `f32(acc) * scale + shift`.
    BinaryDenseAffine {
        /// Layer name (weight tensor `<name>.weight`).
        name: String,
        /// Input features.
        in_features: usize,
        /// Output features (classes).
        out_features: usize,
        /// Per-class scale, `f32` bit patterns.
        scale_bits: Vec<u32>,
        /// Per-class shift, `f32` bit patterns.
        shift_bits: Vec<u32>,
    },
    /// A ResNet stem: `f32` conv of the float image with binary weights, then
    /// `clamp(v * scale + shift, -1, 1)` (BatchNorm + HardTanh): the `f32` residual stream.
    StemConv {
        /// Layer name (weight tensor `<name>.weight`, OHWI sign plane).
        name: String,
        /// Input channels.
        in_channels: usize,
        /// Output channels.
        out_channels: usize,
        /// Square kernel size.
        kernel: usize,
        /// Stride.
        stride: usize,
        /// Zero padding.
        padding: usize,
        /// BatchNorm scale per channel, `f32` bit patterns.
        scale_bits: Vec<u32>,
        /// BatchNorm shift per channel, `f32` bit patterns.
        shift_bits: Vec<u32>,
    },
    /// A residual basic block on the `f32` stream `x`:
    /// `x' = clamp(conv2(t(conv1(sign x))) * scale + shift + shortcut(x), -1, 1)`, where both
    /// convs are 3x3 with zero padding 1 (`conv1` has the block's stride), `conv1`'s output is
    /// thresholded to packed signs and `conv2`'s accumulator goes through its BatchNorm affine.
    ResidualBlock {
        /// Block name (weights `<name>.conv1.weight`, `<name>.conv2.weight` and, for a
        /// projection shortcut, `<name>.shortcut.weight`; OHWI sign planes).
        name: String,
        /// Input channels.
        in_channels: usize,
        /// Output channels.
        out_channels: usize,
        /// Stride of `conv1` (and of the shortcut).
        stride: usize,
        /// `conv1`'s per-channel thresholds (BatchNorm + HardTanh + `conv2`'s sign).
        thresholds: Vec<i32>,
        /// `conv1`'s per-channel directions.
        directions: Vec<Dir>,
        /// `conv2`'s BatchNorm scale, `f32` bit patterns.
        scale_bits: Vec<u32>,
        /// `conv2`'s BatchNorm shift, `f32` bit patterns.
        shift_bits: Vec<u32>,
        /// How `x` reaches the sum.
        shortcut: ShortcutMeta,
    },
    /// A ResNet head on the `f32` stream: global average pooling, the sign of the pooled
    /// features, a binary FC and `f32(acc) * scale + shift` logits.
    PoolClassifier {
        /// Layer name (weight tensor `<name>.weight`, row-major sign plane `[out, in]`).
        name: String,
        /// Input features (the stream's channels).
        in_features: usize,
        /// Output features (classes).
        out_features: usize,
        /// Per-class scale, `f32` bit patterns.
        scale_bits: Vec<u32>,
        /// Per-class shift, `f32` bit patterns.
        shift_bits: Vec<u32>,
    },
    /// The first layer of a 2-3 bit model: `f32` conv of the float image with the weight
    /// levels times their scale, optional 2x2/2 max-pool, `clamp(v * scale + shift, -1, 1)`
    /// (BatchNorm + HardTanh), then the next layer's input quantizer `activation` gives its
    /// int8 levels.
    Int8FloatConv {
        /// Layer name (weight tensor `<name>.weight`, OHWI int8 levels).
        name: String,
        /// Input channels.
        in_channels: usize,
        /// Output channels.
        out_channels: usize,
        /// Square kernel size.
        kernel: usize,
        /// Stride.
        stride: usize,
        /// Zero padding.
        padding: usize,
        /// Whether a 2x2/2 max-pool follows the conv (before the BatchNorm).
        pool: bool,
        /// BatchNorm scale per channel, `f32` bit patterns.
        scale_bits: Vec<u32>,
        /// BatchNorm shift per channel, `f32` bit patterns.
        shift_bits: Vec<u32>,
        /// The next layer's input quantizer (`sign`, `ternary[:delta]`, `pow2[:e1,e2,e3]`).
        activation: String,
    },
    /// An int8 conv on the previous layer's levels: exact `i32` accumulator, optional 2x2/2
    /// max-pool, `v = f32(acc) * s` (`s` = input level scale x weight level scale, a power of
    /// two), `clamp(v * scale + shift, -1, 1)`, then `activation`'s int8 levels.
    Int8Conv {
        /// Layer name (weight tensor `<name>.weight`, OHWI int8 levels).
        name: String,
        /// Input channels.
        in_channels: usize,
        /// Output channels.
        out_channels: usize,
        /// Square kernel size.
        kernel: usize,
        /// Stride.
        stride: usize,
        /// Zero padding.
        padding: usize,
        /// Whether a 2x2/2 max-pool follows (on the accumulators).
        pool: bool,
        /// BatchNorm scale per channel, `f32` bit patterns.
        scale_bits: Vec<u32>,
        /// BatchNorm shift per channel, `f32` bit patterns.
        shift_bits: Vec<u32>,
        /// The next layer's input quantizer.
        activation: String,
    },
    /// An int8 fully connected layer (hidden), as [`LayerMeta::Int8Conv`] without pooling.
    Int8Dense {
        /// Layer name (weight tensor `<name>.weight`, row-major int8 levels `[out, in]`).
        name: String,
        /// Input features (NHWC flatten of the previous activations).
        in_features: usize,
        /// Output features.
        out_features: usize,
        /// BatchNorm scale, `f32` bit patterns.
        scale_bits: Vec<u32>,
        /// BatchNorm shift, `f32` bit patterns.
        shift_bits: Vec<u32>,
        /// The next layer's input quantizer.
        activation: String,
    },
    /// The int8 classifier: logits `(f32(acc) * s) * scale + shift`.
    Int8DenseAffine {
        /// Layer name (weight tensor `<name>.weight`, row-major int8 levels).
        name: String,
        /// Input features.
        in_features: usize,
        /// Output features (classes).
        out_features: usize,
        /// Per-class scale, `f32` bit patterns.
        scale_bits: Vec<u32>,
        /// Per-class shift, `f32` bit patterns.
        shift_bits: Vec<u32>,
    },
}

/// The shortcut of a [`LayerMeta::ResidualBlock`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum ShortcutMeta {
    /// `x` itself (same shape).
    Identity,
    /// He et al.'s option A: `x` sub-sampled by the stride (pixels `0, s, 2s, ...`), with
    /// `pad_before` zero channels before and `pad_after` after.
    PadA {
        /// Zero channels before `x`'s.
        pad_before: usize,
        /// Zero channels after `x`'s.
        pad_after: usize,
    },
    /// Option B: a 1x1 binary conv of `sign x` with the block's stride, then
    /// `f32(acc) * scale + shift` (weight `<block>.shortcut.weight`).
    Projection {
        /// BatchNorm scale, `f32` bit patterns.
        scale_bits: Vec<u32>,
        /// BatchNorm shift, `f32` bit patterns.
        shift_bits: Vec<u32>,
    },
}

impl LayerMeta {
    /// The layer's name.
    pub fn name(&self) -> &str {
        match self {
            LayerMeta::FloatConv { name, .. }
            | LayerMeta::BinaryConv { name, .. }
            | LayerMeta::BinaryDense { name, .. }
            | LayerMeta::BinaryDenseAffine { name, .. }
            | LayerMeta::StemConv { name, .. }
            | LayerMeta::ResidualBlock { name, .. }
            | LayerMeta::PoolClassifier { name, .. }
            | LayerMeta::Int8FloatConv { name, .. }
            | LayerMeta::Int8Conv { name, .. }
            | LayerMeta::Int8Dense { name, .. }
            | LayerMeta::Int8DenseAffine { name, .. } => name,
        }
    }

    /// Names of the weight tensors the layer reads, in the order the file lists them.
    pub fn tensor_names(&self) -> Vec<String> {
        let name = self.name();
        match self {
            LayerMeta::ResidualBlock { shortcut, .. } => {
                let mut v = vec![
                    format!("{name}.conv1.weight"),
                    format!("{name}.conv2.weight"),
                ];
                if matches!(shortcut, ShortcutMeta::Projection { .. }) {
                    v.push(format!("{name}.shortcut.weight"));
                }
                v
            }
            _ => vec![format!("{name}.weight")],
        }
    }
}

/// A threshold's direction as stored in files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Dir {
    /// `acc >= t` gives +1.
    Increasing,
    /// `acc <= t` gives +1.
    Decreasing,
    /// Always +1.
    AlwaysPlus,
    /// Always -1.
    AlwaysMinus,
}

impl From<Dir> for Direction {
    fn from(d: Dir) -> Direction {
        match d {
            Dir::Increasing => Direction::Increasing,
            Dir::Decreasing => Direction::Decreasing,
            Dir::AlwaysPlus => Direction::AlwaysPlus,
            Dir::AlwaysMinus => Direction::AlwaysMinus,
        }
    }
}

/// BatchNorm's evaluation-mode `(scale, shift)` with exactly the training op's `f32` formulas:
/// `inv = 1 / sqrt(var + eps)`, `scale = gamma * inv`, `shift = beta - mean * scale`.
pub fn bn_scale_shift(
    gamma: &[f32],
    beta: &[f32],
    mean: &[f32],
    var: &[f32],
    eps: f32,
) -> (Vec<f32>, Vec<f32>) {
    let scale: Vec<f32> = gamma
        .iter()
        .zip(var)
        .map(|(g, v)| g * (1.0 / (v + eps).sqrt()))
        .collect();
    let shift = beta
        .iter()
        .zip(mean)
        .zip(&scale)
        .map(|((b, m), s)| b - m * s)
        .collect();
    (scale, shift)
}

/// Whether the next layer's sign of `BN(v)` is +1, evaluated exactly as the training graph does:
/// `f32(v * scale + shift) >= 0` (HardTanh's clamp keeps the sign; `-0.0` counts as +1).
#[inline]
pub fn bn_sign_plus(v: f32, scale: f32, shift: f32) -> bool {
    v * scale + shift >= 0.0
}

/// Folds `sign(BN(acc))` for integer accumulators `acc` in `[-max_abs, max_abs]` into a threshold
/// and direction with `xnor_kernels` semantics (`Increasing`: `acc >= t` is +1; `Decreasing`:
/// `acc <= t` is +1), agreeing with [`bn_sign_plus`] on every integer of the range.
///
/// `t * scale` and `+ shift` are each rounded monotonically, so the predicate is monotone in
/// `acc` and a binary search over the exact `f32` expression finds the boundary.
///
/// ```
/// use minw_models::packed::{Dir, fold_threshold};
/// assert_eq!(fold_threshold(0.5, -1.0, 100), Some((2, Dir::Increasing)));
/// assert_eq!(fold_threshold(-0.5, 1.0, 100), Some((2, Dir::Decreasing)));
/// assert_eq!(fold_threshold(0.0, -0.0, 100), Some((0, Dir::AlwaysPlus)));
/// assert_eq!(fold_threshold(f32::NAN, 0.0, 100), None);
/// ```
///
/// Returns `None` for a non-finite `scale` or `shift`, or `max_abs` above [`MAX_EXACT_K`].
pub fn fold_threshold(scale: f32, shift: f32, max_abs: usize) -> Option<(i32, Dir)> {
    if !scale.is_finite() || !shift.is_finite() || max_abs > MAX_EXACT_K {
        return None;
    }
    let k = max_abs as i32;
    let p = |t: i32| bn_sign_plus(t as f32, scale, shift);
    let (lo, hi) = (-k, k);
    if scale > 0.0 {
        if !p(hi) {
            return Some((0, Dir::AlwaysMinus));
        }
        if p(lo) {
            return Some((0, Dir::AlwaysPlus));
        }
        // p(lo) false, p(hi) true: smallest t with p(t).
        let (mut a, mut b) = (lo, hi);
        while b - a > 1 {
            let mid = a + (b - a) / 2;
            if p(mid) { b = mid } else { a = mid }
        }
        Some((b, Dir::Increasing))
    } else if scale < 0.0 {
        if !p(lo) {
            return Some((0, Dir::AlwaysMinus));
        }
        if p(hi) {
            return Some((0, Dir::AlwaysPlus));
        }
        // p(lo) true, p(hi) false: largest t with p(t).
        let (mut a, mut b) = (lo, hi);
        while b - a > 1 {
            let mid = a + (b - a) / 2;
            if p(mid) { a = mid } else { b = mid }
        }
        Some((a, Dir::Decreasing))
    } else if p(0) {
        Some((0, Dir::AlwaysPlus))
    } else {
        Some((0, Dir::AlwaysMinus))
    }
}

/// FNV-1a 64 over the model JSON and every tensor (name, dims, words; names in sorted order).
/// Any single changed byte changes the hash (each step is a bijection of the state).
fn checksum<'a, 'b: 'a>(
    model_json: &str,
    tensors: impl Iterator<Item = (&'a str, &'a PackedTensor<'b>)>,
) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut feed = |bytes: &[u8]| {
        for &b in bytes {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    };
    feed(model_json.as_bytes());
    for (name, t) in tensors {
        feed(&(name.len() as u64).to_le_bytes());
        feed(name.as_bytes());
        let dims = match t {
            PackedTensor::Bits(b) => b.dims(),
            PackedTensor::Int8(q) => q.dims(),
        };
        feed(&(dims.len() as u64).to_le_bytes());
        for &d in dims {
            feed(&(d as u64).to_le_bytes());
        }
        match t {
            PackedTensor::Bits(b) => {
                for &w in b.words() {
                    feed(&w.to_le_bytes());
                }
            }
            PackedTensor::Int8(q) => {
                // Level set and layout are in bitpack's own metadata, checked by its loader;
                // hashed here too so that an edited level set is caught.
                feed(q.level_set().to_string().as_bytes());
                for &b in q.data() {
                    feed(&b.to_le_bytes());
                }
            }
        }
    }
    format!("{h:016x}")
}

/// Writes a packed model file: `meta` as JSON under [`MODEL_KEY`], the checksum under
/// [`CHECKSUM_KEY`], and the weight sign planes (`<layer>.weight`) as bitpack tensors. The
/// result is not validated here; [`PackedModel::load_bytes`] does that.
///
/// # Errors
/// [`Error::Config`] when bitpack refuses a tensor (e.g. a zero dim).
pub fn to_bytes(meta: &ModelMeta, tensors: &BTreeMap<String, BitTensor<'_>>) -> Result<Vec<u8>> {
    let packed: BTreeMap<String, PackedTensor<'_>> = tensors
        .iter()
        .map(|(n, t)| (n.clone(), PackedTensor::from(t.clone())))
        .collect();
    to_bytes_mixed(meta, &packed)
}

/// [`to_bytes`] for files with int8-level tensors (2-3 bit layers) as well as sign planes.
///
/// # Errors
/// As [`to_bytes`].
pub fn to_bytes_mixed(
    meta: &ModelMeta,
    tensors: &BTreeMap<String, PackedTensor<'_>>,
) -> Result<Vec<u8>> {
    let refuse = |reason: String| Error::Config {
        what: "packed model file".into(),
        reason,
    };
    let json = serde_json::to_string(meta).map_err(|e| refuse(e.to_string()))?;
    let sum = checksum(&json, tensors.iter().map(|(n, t)| (n.as_str(), t)));
    let refs: Vec<(&str, &PackedTensor<'_>)> =
        tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let md = BTreeMap::from([
        (MODEL_KEY.to_string(), json),
        (CHECKSUM_KEY.to_string(), sum),
    ]);
    // 2-3 bit weights are stored as dense codes (2 or 3 bits each), decoded at load.
    let options = bitpack::file::SaveOptions {
        multibit: bitpack::file::MultiBitStorage::DenseCodes,
    };
    bitpack::file::to_bytes(&refs, &md, options).map_err(|e| refuse(e.to_string()))
}

fn bad(origin: &str, reason: impl Into<String>) -> Error {
    Error::Data {
        path: origin.to_string(),
        offset: None,
        reason: reason.into(),
    }
}

fn f32s(bits: &[u32]) -> Vec<f32> {
    bits.iter().map(|&b| f32::from_bits(b)).collect()
}

/// A per-channel affine (BatchNorm `scale`, `shift`) stored as `f32` bit patterns: checks that
/// both have `n` values and are finite; `what` prefixes the names in errors (`"conv2 "`).
fn affine_params(
    what: &str,
    scale_bits: &[u32],
    shift_bits: &[u32],
    n: usize,
    lerr: &dyn Fn(String) -> Error,
) -> Result<(Vec<f32>, Vec<f32>)> {
    for (name, bits) in [("scale", scale_bits), ("shift", shift_bits)] {
        if bits.len() != n {
            return Err(lerr(format!(
                "{what}{name} has {} values, expected {n}",
                bits.len()
            )));
        }
    }
    let (scale, shift) = (f32s(scale_bits), f32s(shift_bits));
    for (name, v) in [("scale", &scale), ("shift", &shift)] {
        if v.iter().any(|x| !x.is_finite()) {
            return Err(lerr(format!("{what}{name} has a non-finite value")));
        }
    }
    Ok((scale, shift))
}

#[derive(Debug)]
enum Layer {
    FloatConv {
        /// +-1 OHWI weights.
        w: Vec<f32>,
        in_c: usize,
        out_c: usize,
        kernel: usize,
        stride: usize,
        padding: usize,
        pool: bool,
        scale: Vec<f32>,
        shift: Vec<f32>,
    },
    BinaryConv {
        conv: BinaryConv2d,
        out_c: usize,
        pool: bool,
        thresholds: Thresholds,
        and_mask: Vec<u64>,
    },
    Dense {
        w: BinaryWeights,
        out: usize,
        thresholds: Thresholds,
    },
    Classifier {
        w: BinaryWeights,
        out: usize,
        scale: Vec<f32>,
        shift: Vec<f32>,
    },
    Stem {
        /// +-1 OHWI weights.
        w: Vec<f32>,
        in_c: usize,
        out_c: usize,
        kernel: usize,
        stride: usize,
        padding: usize,
        scale: Vec<f32>,
        shift: Vec<f32>,
    },
    Block(Box<residual::Block>),
    Int8First {
        /// OHWI weight levels times their scale.
        w: Vec<f32>,
        in_c: usize,
        out_c: usize,
        kernel: usize,
        stride: usize,
        padding: usize,
        pool: bool,
        scale: Vec<f32>,
        shift: Vec<f32>,
        act: int8::Act,
    },
    Int8Conv {
        conv: Box<Int8Conv2d>,
        out_c: usize,
        pool: bool,
        /// The epilogue as level steps: fused into the kernel, or applied to the pooled
        /// accumulators.
        levels: Option<LevelThresholds>,
        /// `f32(acc) * s` is the training graph's conv output.
        s: f32,
        scale: Vec<f32>,
        shift: Vec<f32>,
        act: int8::Act,
    },
    /// A hidden int8 FC (`act` given) or the classifier (`act` none).
    Int8Dense {
        w: Int8Weights,
        out: usize,
        s: f32,
        scale: Vec<f32>,
        shift: Vec<f32>,
        act: Option<int8::Act>,
    },
    PoolClassifier {
        w: BinaryWeights,
        out: usize,
        scale: Vec<f32>,
        shift: Vec<f32>,
    },
}

/// Shapes of one layer's input and output for a given model, computed at load.
#[derive(Debug, Clone, Copy)]
struct Step {
    /// Input spatial size (convs) or 1x1 (dense).
    h: usize,
    w: usize,
    /// Output spatial size after the conv (before pooling).
    ho: usize,
    wo: usize,
    /// Spatial size after pooling.
    hp: usize,
    wp: usize,
}

/// Per-batch-size buffers, planned once.
#[derive(Debug, Default)]
struct Buffers {
    batch: usize,
    conv_f32: Vec<f32>,
    pool_f32: Vec<f32>,
    bits_a: Vec<u64>,
    bits_b: Vec<u64>,
    acc: Vec<i32>,
    /// The `f32` residual stream of ResNets, current and next.
    stream_a: Vec<f32>,
    stream_b: Vec<f32>,
    /// Int8 levels of 2-3 bit models, current and next.
    i8_a: Vec<i8>,
    i8_b: Vec<i8>,
    /// Pooled accumulators.
    acc_b: Vec<i32>,
}

/// A loaded, validated packed model.
#[derive(Debug)]
pub struct PackedModel {
    meta: ModelMeta,
    layers: Vec<Layer>,
    steps: Vec<Step>,
    buffers: Mutex<Buffers>,
}

impl PackedModel {
    /// Reads and validates a packed model file.
    ///
    /// # Errors
    /// [`Error::Data`] for an unreadable, malformed, truncated or inconsistent file.
    pub fn load_path(path: &Path) -> Result<Self> {
        let shown = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|e| bad(&shown, e.to_string()))?;
        Self::load_bytes(&bytes, &shown)
    }

    /// Parses and validates a packed model held in memory; `origin` names it in errors.
    /// Never panics on malformed input.
    ///
    /// # Errors
    /// [`Error::Data`] naming what is wrong (container, version, checksum, layer, shape).
    pub fn load_bytes(bytes: &[u8], origin: &str) -> Result<Self> {
        let file =
            bitpack::load_tensors(bytes).map_err(|e| bad(origin, format!("bitpack: {e}")))?;
        let md = file.metadata();
        let json = md
            .get(MODEL_KEY)
            .ok_or_else(|| bad(origin, format!("missing metadata key `{MODEL_KEY}`")))?;
        let sum = md
            .get(CHECKSUM_KEY)
            .ok_or_else(|| bad(origin, format!("missing metadata key `{CHECKSUM_KEY}`")))?;
        if let Some(k) = md
            .keys()
            .find(|k| k.starts_with("minw.") && *k != MODEL_KEY && *k != CHECKSUM_KEY)
        {
            return Err(bad(origin, format!("unknown metadata key `{k}`")));
        }
        let tensors: Vec<(&str, &PackedTensor<'_>)> = file
            .tensors()
            .iter()
            .map(|(n, t)| (n.as_str(), t))
            .collect();
        let got = checksum(json, tensors.iter().copied());
        if &got != sum {
            return Err(bad(
                origin,
                format!("checksum mismatch (stored {sum}, computed {got}): the file is corrupt"),
            ));
        }
        let meta: ModelMeta = serde_json::from_str(json).map_err(|e| {
            bad(
                origin,
                format!("`{MODEL_KEY}` is not a valid model description: {e}"),
            )
        })?;
        let get = |name: &str| -> Result<&PackedTensor<'_>> {
            file.get(name)
                .map_err(|e| bad(origin, format!("tensor `{name}`: {e}")))
        };
        Self::build(meta, &get, tensors.len(), origin)
    }

    fn build<'f>(
        meta: ModelMeta,
        get_any: &dyn Fn(&str) -> Result<&'f PackedTensor<'f>>,
        n_tensors: usize,
        origin: &str,
    ) -> Result<Self> {
        let get = |name: &str| -> Result<&'f BitTensor<'f>> {
            get_any(name)?.as_bits().ok_or_else(|| {
                bad(
                    origin,
                    format!("tensor `{name}` is not a 1-bit sign plane (int8 levels)"),
                )
            })
        };
        let get8 = |name: &str| -> Result<&'f Int8Tensor<'f>> {
            get_any(name)?.as_int8().ok_or_else(|| {
                bad(
                    origin,
                    format!("tensor `{name}` holds 1-bit signs, the layer needs int8 levels"),
                )
            })
        };
        if meta.format_version != FORMAT_VERSION {
            return Err(bad(
                origin,
                format!(
                    "unsupported packed model format version {} (this build reads {FORMAT_VERSION})",
                    meta.format_version
                ),
            ));
        }
        if meta.bits.parse::<crate::MinwSetting>().is_err() {
            return Err(bad(
                origin,
                format!("`bits` is `{}`, not a MINW setting like 1/1", meta.bits),
            ));
        }
        let [h0, w0, c0] = meta.input_shape;
        if h0 == 0 || w0 == 0 || c0 == 0 || h0 > 4096 || w0 > 4096 || c0 > 4096 {
            return Err(bad(
                origin,
                format!("invalid input shape {:?}", meta.input_shape),
            ));
        }
        if meta.normalize_mean.len() != c0 || meta.normalize_std.len() != c0 {
            return Err(bad(
                origin,
                "normalisation mean/std must have one value per input channel",
            ));
        }
        let mut names: Vec<&str> = meta.layers.iter().map(LayerMeta::name).collect();
        names.sort_unstable();
        if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
            return Err(bad(origin, format!("duplicate layer name `{}`", w[0])));
        }
        let wanted: usize = meta.layers.iter().map(|l| l.tensor_names().len()).sum();
        if wanted != n_tensors {
            return Err(bad(
                origin,
                format!("the layers name {wanted} weight tensors but the file has {n_tensors}"),
            ));
        }
        let (mut h, mut w, mut c) = (h0, w0, c0);
        // `flat`: the layer input is a feature vector of `c` elements (after the first dense).
        let mut flat = false;
        // `stream`: the layer input is the `f32` residual stream (after a ResNet stem).
        let mut stream = false;
        // `int8`: the layer input is int8 levels worth this much each (2-3 bit models).
        let mut int8: Option<f32> = None;
        let mut layers = Vec::new();
        let mut steps = Vec::new();
        let nl = meta.layers.len();
        for (i, lm) in meta.layers.iter().enumerate() {
            let name = lm.name();
            let lerr = |reason: String| bad(origin, format!("layer `{name}`: {reason}"));
            let wname = lm.tensor_names()[0].clone();
            let is_int8 = matches!(
                lm,
                LayerMeta::Int8FloatConv { .. }
                    | LayerMeta::Int8Conv { .. }
                    | LayerMeta::Int8Dense { .. }
                    | LayerMeta::Int8DenseAffine { .. }
            );
            let (wlayout, wdims) = if is_int8 {
                let t = get8(&wname)?;
                (t.layout(), t.dims().to_vec())
            } else {
                let t = get(&wname)?;
                (t.layout(), t.dims().to_vec())
            };
            let weight = || get(&wname);
            let conv_geom = |in_c: usize,
                             out_c: usize,
                             kernel: usize,
                             stride: usize,
                             padding: usize,
                             pool: bool|
             -> Result<Step> {
                if in_c != c || flat || stream {
                    return Err(lerr(format!(
                        "expects {in_c} packed input channels, gets {c} (flat: {flat}, f32 stream: {stream})"
                    )));
                }
                if out_c == 0
                    || out_c > 65536
                    || kernel == 0
                    || kernel > 32
                    || stride == 0
                    || padding >= kernel
                {
                    return Err(lerr(format!(
                        "invalid conv geometry out {out_c}, kernel {kernel}, stride {stride}, padding {padding}"
                    )));
                }
                if wlayout != Layout::Ohwi || wdims != [out_c, kernel, kernel, in_c] {
                    return Err(lerr(format!(
                        "weight has layout {} dims {:?}, expected ohwi {:?}",
                        wlayout.name(),
                        wdims,
                        [out_c, kernel, kernel, in_c]
                    )));
                }
                if h + 2 * padding < kernel || w + 2 * padding < kernel {
                    return Err(lerr(format!(
                        "kernel {kernel} larger than the padded {h}x{w} input"
                    )));
                }
                let ho = (h + 2 * padding - kernel) / stride + 1;
                let wo = (w + 2 * padding - kernel) / stride + 1;
                let (hp, wp) = if pool { (ho / 2, wo / 2) } else { (ho, wo) };
                if hp == 0 || wp == 0 {
                    return Err(lerr(format!("output {ho}x{wo} too small to pool")));
                }
                Ok(Step {
                    h,
                    w,
                    ho,
                    wo,
                    hp,
                    wp,
                })
            };
            let check_vec = |what: &str, len: usize, want: usize| -> Result<()> {
                if len != want {
                    return Err(lerr(format!("{what} has {len} values, expected {want}")));
                }
                Ok(())
            };
            let thresholds = |t: &[i32], d: &[Dir], n: usize| -> Result<Thresholds> {
                check_vec("thresholds", t.len(), n)?;
                check_vec("directions", d.len(), n)?;
                let d: Vec<Direction> = d.iter().map(|&d| d.into()).collect();
                Thresholds::new(t, &d).map_err(|e| lerr(e.to_string()))
            };
            let position_ok = match lm {
                LayerMeta::FloatConv { .. }
                | LayerMeta::StemConv { .. }
                | LayerMeta::Int8FloatConv { .. } => i == 0,
                LayerMeta::BinaryDenseAffine { .. }
                | LayerMeta::PoolClassifier { .. }
                | LayerMeta::Int8DenseAffine { .. } => i + 1 == nl,
                _ => i > 0 && i + 1 < nl,
            };
            if i > 0 && is_int8 != int8.is_some() {
                return Err(lerr(format!(
                    "a {} layer cannot follow a {} layer",
                    kind_name(lm),
                    kind_name(&meta.layers[i - 1])
                )));
            }
            let wants_stream = matches!(
                lm,
                LayerMeta::ResidualBlock { .. } | LayerMeta::PoolClassifier { .. }
            );
            if i > 0 && wants_stream != stream {
                return Err(lerr(format!(
                    "a {} layer cannot follow a {} layer",
                    kind_name(lm),
                    kind_name(&meta.layers[i - 1])
                )));
            }
            if !position_ok {
                return Err(lerr(format!(
                    "a {} layer cannot be layer {i} of {nl}",
                    kind_name(lm)
                )));
            }
            match lm {
                LayerMeta::FloatConv {
                    in_channels,
                    out_channels,
                    kernel,
                    stride,
                    padding,
                    pool,
                    scale_bits,
                    shift_bits,
                    ..
                } => {
                    let st = conv_geom(
                        *in_channels,
                        *out_channels,
                        *kernel,
                        *stride,
                        *padding,
                        *pool,
                    )?;
                    let (scale, shift) =
                        affine_params("", scale_bits, shift_bits, *out_channels, &lerr)?;
                    let wv = weight()?.to_f32();
                    layers.push(Layer::FloatConv {
                        w: wv,
                        in_c: c,
                        out_c: *out_channels,
                        kernel: *kernel,
                        stride: *stride,
                        padding: *padding,
                        pool: *pool,
                        scale,
                        shift,
                    });
                    (h, w, c) = (st.hp, st.wp, *out_channels);
                    steps.push(st);
                }
                LayerMeta::BinaryConv {
                    in_channels,
                    out_channels,
                    kernel,
                    stride,
                    padding,
                    pool,
                    thresholds: t,
                    directions,
                    ..
                } => {
                    let st = conv_geom(
                        *in_channels,
                        *out_channels,
                        *kernel,
                        *stride,
                        *padding,
                        *pool,
                    )?;
                    let cfg = Conv2dConfig {
                        stride: *stride,
                        padding: *padding,
                        pad_mode: PadMode::Zero,
                    };
                    let conv = BinaryConv2d::new(
                        weight()?.words(),
                        *out_channels,
                        c,
                        *kernel,
                        *kernel,
                        cfg,
                    )
                    .map_err(|e| lerr(e.to_string()))?;
                    let thresholds = thresholds(t, directions, *out_channels)?;
                    let and_mask = thresholds.pool_and_mask();
                    layers.push(Layer::BinaryConv {
                        conv,
                        out_c: *out_channels,
                        pool: *pool,
                        thresholds,
                        and_mask,
                    });
                    (h, w, c) = (st.hp, st.wp, *out_channels);
                    steps.push(st);
                }
                LayerMeta::BinaryDense {
                    in_features,
                    out_features,
                    thresholds: t,
                    directions,
                    ..
                } => {
                    let k = dense_in(*in_features, h, w, c, &lerr)?;
                    let wts = dense_weights(weight()?, *out_features, k, &lerr)?;
                    let thresholds = thresholds(t, directions, *out_features)?;
                    layers.push(Layer::Dense {
                        w: wts,
                        out: *out_features,
                        thresholds,
                    });
                    steps.push(Step {
                        h,
                        w,
                        ho: 1,
                        wo: 1,
                        hp: 1,
                        wp: 1,
                    });
                    (h, w, c, flat) = (1, 1, *out_features, true);
                }
                LayerMeta::BinaryDenseAffine {
                    in_features,
                    out_features,
                    scale_bits,
                    shift_bits,
                    ..
                } => {
                    let k = dense_in(*in_features, h, w, c, &lerr)?;
                    let wts = dense_weights(weight()?, *out_features, k, &lerr)?;
                    let (scale, shift) =
                        affine_params("", scale_bits, shift_bits, *out_features, &lerr)?;
                    layers.push(Layer::Classifier {
                        w: wts,
                        out: *out_features,
                        scale,
                        shift,
                    });
                    steps.push(Step {
                        h,
                        w,
                        ho: 1,
                        wo: 1,
                        hp: 1,
                        wp: 1,
                    });
                    (h, w, c, flat) = (1, 1, *out_features, true);
                }
                LayerMeta::Int8FloatConv {
                    in_channels,
                    out_channels,
                    kernel,
                    stride,
                    padding,
                    pool,
                    scale_bits,
                    shift_bits,
                    activation,
                    ..
                }
                | LayerMeta::Int8Conv {
                    in_channels,
                    out_channels,
                    kernel,
                    stride,
                    padding,
                    pool,
                    scale_bits,
                    shift_bits,
                    activation,
                    ..
                } => {
                    let st = conv_geom(
                        *in_channels,
                        *out_channels,
                        *kernel,
                        *stride,
                        *padding,
                        *pool,
                    )?;
                    let (scale, shift) =
                        affine_params("", scale_bits, shift_bits, *out_channels, &lerr)?;
                    let t = get8(&wname)?;
                    let sw = int8::weight_scale(t, &lerr)?;
                    let act = int8::Act::parse(activation, &lerr)?;
                    let next = act.scale();
                    if let Some(sa) = int8 {
                        let cfg = Conv2dConfig {
                            stride: *stride,
                            padding: *padding,
                            pad_mode: PadMode::Zero,
                        };
                        let conv =
                            Int8Conv2d::new(t.data(), *out_channels, c, *kernel, *kernel, cfg)
                                .map_err(|e| lerr(e.to_string()))?;
                        let k = c * kernel * kernel;
                        let levels = int8::level_steps(k, sa * sw, &scale, &shift, &act);
                        layers.push(Layer::Int8Conv {
                            conv: Box::new(conv),
                            out_c: *out_channels,
                            pool: *pool,
                            levels,
                            s: sa * sw,
                            scale,
                            shift,
                            act,
                        });
                    } else {
                        layers.push(Layer::Int8First {
                            w: t.to_f32(),
                            in_c: c,
                            out_c: *out_channels,
                            kernel: *kernel,
                            stride: *stride,
                            padding: *padding,
                            pool: *pool,
                            scale,
                            shift,
                            act,
                        });
                    }
                    (h, w, c, int8) = (st.hp, st.wp, *out_channels, Some(next));
                    steps.push(st);
                }
                LayerMeta::Int8Dense {
                    in_features,
                    out_features,
                    scale_bits,
                    shift_bits,
                    ..
                }
                | LayerMeta::Int8DenseAffine {
                    in_features,
                    out_features,
                    scale_bits,
                    shift_bits,
                    ..
                } => {
                    let k = dense_in(*in_features, h, w, c, &lerr)?;
                    let t = get8(&wname)?;
                    if *out_features == 0
                        || wlayout != Layout::RowMajor
                        || wdims != [*out_features, k]
                    {
                        return Err(lerr(format!(
                            "weight has layout {} dims {wdims:?}, expected row-major {:?}",
                            wlayout.name(),
                            [*out_features, k]
                        )));
                    }
                    let sw = int8::weight_scale(t, &lerr)?;
                    let wts = Int8Weights::new(t.data(), *out_features, k)
                        .map_err(|e| lerr(e.to_string()))?;
                    let (scale, shift) =
                        affine_params("", scale_bits, shift_bits, *out_features, &lerr)?;
                    let act = match lm {
                        LayerMeta::Int8Dense { activation, .. } => {
                            Some(int8::Act::parse(activation, &lerr)?)
                        }
                        _ => None,
                    };
                    let next = act.as_ref().map(int8::Act::scale);
                    layers.push(Layer::Int8Dense {
                        w: wts,
                        out: *out_features,
                        s: int8.unwrap_or(1.0) * sw,
                        scale,
                        shift,
                        act,
                    });
                    steps.push(Step {
                        h,
                        w,
                        ho: 1,
                        wo: 1,
                        hp: 1,
                        wp: 1,
                    });
                    (h, w, c, flat, int8) = (1, 1, *out_features, true, next);
                }
                LayerMeta::StemConv {
                    in_channels,
                    out_channels,
                    kernel,
                    stride,
                    padding,
                    scale_bits,
                    shift_bits,
                    ..
                } => {
                    let st = conv_geom(
                        *in_channels,
                        *out_channels,
                        *kernel,
                        *stride,
                        *padding,
                        false,
                    )?;
                    let (scale, shift) =
                        affine_params("", scale_bits, shift_bits, *out_channels, &lerr)?;
                    layers.push(Layer::Stem {
                        w: weight()?.to_f32(),
                        in_c: c,
                        out_c: *out_channels,
                        kernel: *kernel,
                        stride: *stride,
                        padding: *padding,
                        scale,
                        shift,
                    });
                    (h, w, c, stream) = (st.ho, st.wo, *out_channels, true);
                    steps.push(st);
                }
                LayerMeta::ResidualBlock {
                    in_channels,
                    out_channels,
                    stride,
                    thresholds: t,
                    directions,
                    scale_bits,
                    shift_bits,
                    shortcut,
                    ..
                } => {
                    let (block, st) = residual::Block::build(
                        residual::BlockSpec {
                            in_c: *in_channels,
                            out_c: *out_channels,
                            stride: *stride,
                            h,
                            w,
                            c,
                            thresholds: thresholds(t, directions, *out_channels)?,
                            scale_bits,
                            shift_bits,
                            shortcut,
                        },
                        &|n: &str| get(n),
                        &lm.tensor_names(),
                        &lerr,
                    )?;
                    layers.push(Layer::Block(Box::new(block)));
                    (h, w, c) = (st.ho, st.wo, *out_channels);
                    steps.push(st);
                }
                LayerMeta::PoolClassifier {
                    in_features,
                    out_features,
                    scale_bits,
                    shift_bits,
                    ..
                } => {
                    if *in_features != c {
                        return Err(lerr(format!(
                            "expects {in_features} pooled features, the stream has {c} channels"
                        )));
                    }
                    let wts = dense_weights(weight()?, *out_features, c, &lerr)?;
                    let (scale, shift) =
                        affine_params("", scale_bits, shift_bits, *out_features, &lerr)?;
                    layers.push(Layer::PoolClassifier {
                        w: wts,
                        out: *out_features,
                        scale,
                        shift,
                    });
                    steps.push(Step {
                        h,
                        w,
                        ho: 1,
                        wo: 1,
                        hp: 1,
                        wp: 1,
                    });
                    (h, w, c, stream) = (1, 1, *out_features, false);
                    flat = true;
                }
            }
        }
        if nl < 2 {
            return Err(bad(
                origin,
                "a packed model needs at least a first conv and a classifier",
            ));
        }
        if meta.class_names.len() != c {
            return Err(bad(
                origin,
                format!("{} class names for {c} logits", meta.class_names.len()),
            ));
        }
        Ok(PackedModel {
            meta,
            layers,
            steps,
            buffers: Mutex::new(Buffers::default()),
        })
    }

    /// The model description.
    pub fn meta(&self) -> &ModelMeta {
        &self.meta
    }

    /// Number of `f32` values of one input image (`height * width * channels`).
    pub fn image_len(&self) -> usize {
        self.meta.input_shape.iter().product()
    }

    /// Number of classes (logits per image).
    pub fn classes(&self) -> usize {
        self.meta.class_names.len()
    }

    /// The logits of `images` (normalised NHWC `f32`, a whole number of images), computed in
    /// batches of `batch` images; `classes()` values per image.
    ///
    /// # Errors
    /// [`Error::Data`] for a wrong input length or `batch == 0`; kernel errors (an unusable
    /// `XNOR_ISA`).
    pub fn logits(&self, images: &[f32], batch: usize) -> Result<Vec<f32>> {
        let il = self.image_len();
        if batch == 0 || !images.len().is_multiple_of(il) {
            return Err(bad(
                "packed model input",
                format!(
                    "{} values is not a whole number of {il}-value images (batch {batch})",
                    images.len()
                ),
            ));
        }
        let n = images.len() / il;
        let mut out = vec![0f32; n * self.classes()];
        let mut buf = self.buffers.lock().unwrap_or_else(|p| p.into_inner());
        for (chunk, o) in images
            .chunks(batch * il)
            .zip(out.chunks_mut(batch * self.classes()))
        {
            self.run(chunk, chunk.len() / il, &mut buf, o)?;
        }
        Ok(out)
    }

    /// Top-1 predictions (first index among equal maxima) of `images`; see [`Self::logits`].
    ///
    /// # Errors
    /// As [`Self::logits`].
    pub fn predict(&self, images: &[f32], batch: usize) -> Result<Vec<u32>> {
        let logits = self.logits(images, batch)?;
        Ok(argmax_rows(&logits, self.classes()))
    }

    fn plan(&self, buf: &mut Buffers, batch: usize) {
        if buf.batch == batch && !buf.bits_a.is_empty() {
            return;
        }
        let (mut f, mut p, mut bits, mut acc, mut stream) = (0, 0, 0, 0, 0);
        let (mut bytes, mut acc_b) = (0, 0);
        let cs = |c: usize| c.div_ceil(4) * 4;
        for (l, s) in self.layers.iter().zip(&self.steps) {
            match l {
                Layer::FloatConv { out_c, .. } => {
                    f = f.max(batch * s.ho * s.wo * out_c);
                    p = p.max(batch * s.hp * s.wp * out_c);
                    bits = bits.max(batch * s.ho * s.wo * out_c.div_ceil(64));
                }
                Layer::BinaryConv { out_c, .. } => {
                    bits = bits.max(batch * s.ho * s.wo * out_c.div_ceil(64));
                }
                Layer::Dense { w, out, .. } | Layer::Classifier { w, out, .. } => {
                    bits = bits
                        .max(batch * w.k().div_ceil(64))
                        .max(batch * out.div_ceil(64));
                    acc = acc.max(batch * out);
                }
                Layer::Stem { out_c, .. } => {
                    f = f.max(batch * s.ho * s.wo * out_c);
                    stream = stream.max(batch * s.ho * s.wo * out_c);
                }
                Layer::Block(b) => {
                    let (i, o) = (b.in_c(), b.out_c());
                    bits = bits
                        .max(batch * s.h * s.w * i.div_ceil(64))
                        .max(batch * s.ho * s.wo * o.div_ceil(64));
                    f = f.max(batch * s.ho * s.wo * o);
                    p = p.max(batch * s.ho * s.wo * o);
                    stream = stream.max(batch * s.ho * s.wo * o);
                }
                Layer::PoolClassifier { w, out, .. } => {
                    bits = bits.max(batch * w.k().div_ceil(64));
                    p = p.max(batch * w.k());
                    acc = acc.max(batch * out);
                }
                Layer::Int8First { out_c, .. } => {
                    f = f.max(batch * s.ho * s.wo * out_c);
                    p = p.max(batch * s.hp * s.wp * out_c);
                    bytes = bytes.max(batch * s.hp * s.wp * cs(*out_c));
                }
                Layer::Int8Conv { out_c, .. } => {
                    acc = acc.max(batch * s.ho * s.wo * out_c);
                    acc_b = acc_b.max(batch * s.hp * s.wp * out_c);
                    bytes = bytes.max(batch * s.hp * s.wp * cs(*out_c));
                }
                Layer::Int8Dense { w, out, .. } => {
                    bytes = bytes.max(batch * cs(w.k())).max(batch * cs(*out));
                    acc = acc.max(batch * out);
                }
            }
        }
        *buf = Buffers {
            batch,
            conv_f32: vec![0.0; f],
            pool_f32: vec![0.0; p],
            bits_a: vec![0; bits],
            bits_b: vec![0; bits],
            acc: vec![0; acc],
            stream_a: vec![0.0; stream],
            stream_b: vec![0.0; stream],
            i8_a: vec![0; bytes],
            i8_b: vec![0; bytes],
            acc_b: vec![0; acc_b],
        };
    }

    fn run(&self, x: &[f32], batch: usize, buf: &mut Buffers, logits: &mut [f32]) -> Result<()> {
        self.plan(buf, batch);
        let kerr = |name: &str, e: &dyn std::fmt::Display| {
            bad("packed model", format!("layer `{name}`: {e}"))
        };
        let Buffers {
            conv_f32,
            pool_f32,
            bits_a,
            bits_b,
            acc,
            stream_a,
            stream_b,
            i8_a,
            i8_b,
            acc_b,
            ..
        } = buf;
        let cs = |c: usize| c.div_ceil(4) * 4;
        // `cur` holds the current packed activations in `bits_a`, `len` words.
        let mut len = 0usize;
        let mut c_cur = 0usize;
        for ((l, s), lm) in self.layers.iter().zip(&self.steps).zip(&self.meta.layers) {
            let name = lm.name();
            match l {
                Layer::FloatConv {
                    w,
                    in_c,
                    out_c,
                    kernel,
                    stride,
                    padding,
                    pool,
                    scale,
                    shift,
                } => {
                    let g = Conv2dGeometry {
                        batch,
                        in_h: s.h,
                        in_w: s.w,
                        in_c: *in_c,
                        out_c: *out_c,
                        kernel_h: *kernel,
                        kernel_w: *kernel,
                        stride: *stride,
                        padding: *padding,
                    };
                    let conv = &mut conv_f32[..g.output_len()];
                    conv2d_forward(&g, x, w, None, conv).map_err(|e| kerr(name, &e))?;
                    let v: &[f32] = if *pool {
                        let pooled = &mut pool_f32[..batch * s.hp * s.wp * out_c];
                        maxpool2x2_f32(conv, batch, s.ho, s.wo, *out_c, pooled);
                        pooled
                    } else {
                        conv
                    };
                    let cw = out_c.div_ceil(64);
                    len = batch * s.hp * s.wp * cw;
                    let dst = &mut bits_a[..len];
                    dst.fill(0);
                    for (px, row) in v.chunks_exact(*out_c).zip(dst.chunks_exact_mut(cw)) {
                        for (ch, ((&v, &a), &b)) in px.iter().zip(scale).zip(shift).enumerate() {
                            if !bn_sign_plus(v, a, b) {
                                row[ch / 64] |= 1 << (ch % 64);
                            }
                        }
                    }
                    c_cur = *out_c;
                }
                Layer::BinaryConv {
                    conv,
                    out_c,
                    pool,
                    thresholds,
                    and_mask,
                } => {
                    let cw = out_c.div_ceil(64);
                    let n_out = batch * s.ho * s.wo * cw;
                    conv.forward(
                        &bits_a[..len],
                        batch,
                        s.h,
                        s.w,
                        Output::Packed {
                            thresholds,
                            out: &mut bits_b[..n_out],
                        },
                    )
                    .map_err(|e| kerr(name, &e))?;
                    if *pool {
                        len = batch * s.hp * s.wp * cw;
                        xnor_kernels::maxpool2x2_packed(
                            &bits_b[..n_out],
                            batch,
                            s.ho,
                            s.wo,
                            *out_c,
                            and_mask,
                            &mut bits_a[..len],
                        )
                        .map_err(|e| kerr(name, &e))?;
                    } else {
                        len = n_out;
                        std::mem::swap(bits_a, bits_b);
                    }
                    c_cur = *out_c;
                }
                Layer::Dense {
                    w: wts,
                    out,
                    thresholds,
                } => {
                    let a = dense_input(bits_a, bits_b, &mut len, batch, s, c_cur, wts.k());
                    let n_out = batch * out.div_ceil(64);
                    let (src, dst) = if a {
                        (&bits_a[..len], &mut bits_b[..n_out])
                    } else {
                        (&bits_b[..len], &mut bits_a[..n_out])
                    };
                    xnor_kernels::binary_gemm(
                        src,
                        wts,
                        batch,
                        Output::Packed {
                            thresholds,
                            out: dst,
                        },
                    )
                    .map_err(|e| kerr(name, &e))?;
                    if a {
                        std::mem::swap(bits_a, bits_b);
                    }
                    len = n_out;
                    c_cur = *out;
                }
                Layer::Classifier {
                    w: wts,
                    out,
                    scale,
                    shift,
                } => {
                    let a = dense_input(bits_a, bits_b, &mut len, batch, s, c_cur, wts.k());
                    let src = if a { &bits_a[..len] } else { &bits_b[..len] };
                    let acc = &mut acc[..batch * out];
                    xnor_kernels::binary_gemm(src, wts, batch, Output::I32(acc))
                        .map_err(|e| kerr(name, &e))?;
                    affine_logits(acc, scale, shift, logits);
                }
                Layer::Stem {
                    w,
                    in_c,
                    out_c,
                    kernel,
                    stride,
                    padding,
                    scale,
                    shift,
                } => {
                    let g = Conv2dGeometry {
                        batch,
                        in_h: s.h,
                        in_w: s.w,
                        in_c: *in_c,
                        out_c: *out_c,
                        kernel_h: *kernel,
                        kernel_w: *kernel,
                        stride: *stride,
                        padding: *padding,
                    };
                    let conv = &mut conv_f32[..g.output_len()];
                    conv2d_forward(&g, x, w, None, conv).map_err(|e| kerr(name, &e))?;
                    let xs = &mut stream_a[..conv.len()];
                    for (xr, vr) in xs.chunks_exact_mut(*out_c).zip(conv.chunks_exact(*out_c)) {
                        for (((x, &v), &a), &b) in xr.iter_mut().zip(vr).zip(scale).zip(shift) {
                            *x = (v * a + b).clamp(-1.0, 1.0);
                        }
                    }
                }
                Layer::Block(b) => {
                    b.run(
                        batch,
                        s,
                        residual::Scratch {
                            x: stream_a,
                            x_next: stream_b,
                            bits_in: bits_a,
                            bits_mid: bits_b,
                            h: conv_f32,
                            shortcut: pool_f32,
                        },
                    )
                    .map_err(|e| kerr(name, &e))?;
                    std::mem::swap(stream_a, stream_b);
                }
                Layer::Int8First {
                    w,
                    in_c,
                    out_c,
                    kernel,
                    stride,
                    padding,
                    pool,
                    scale,
                    shift,
                    act,
                } => {
                    let g = Conv2dGeometry {
                        batch,
                        in_h: s.h,
                        in_w: s.w,
                        in_c: *in_c,
                        out_c: *out_c,
                        kernel_h: *kernel,
                        kernel_w: *kernel,
                        stride: *stride,
                        padding: *padding,
                    };
                    let conv = &mut conv_f32[..g.output_len()];
                    conv2d_forward(&g, x, w, None, conv).map_err(|e| kerr(name, &e))?;
                    let v: &[f32] = if *pool {
                        let pooled = &mut pool_f32[..batch * s.hp * s.wp * out_c];
                        maxpool2x2_f32(conv, batch, s.ho, s.wo, *out_c, pooled);
                        pooled
                    } else {
                        conv
                    };
                    let n = batch * s.hp * s.wp * cs(*out_c);
                    int8::epilogue_f32(v, *out_c, scale, shift, act, &mut i8_a[..n], cs(*out_c));
                    c_cur = *out_c;
                }
                Layer::Int8Conv {
                    conv,
                    out_c,
                    pool: false,
                    levels: Some(lt),
                    ..
                } => {
                    // BatchNorm and the next quantizer fused into the kernel as level steps.
                    let input = &i8_a[..batch * s.h * s.w * cs(c_cur)];
                    let n = batch * s.ho * s.wo * cs(*out_c);
                    let out = Output::Levels {
                        thresholds: lt,
                        out: &mut i8_b[..n],
                    };
                    conv.forward(input, batch, s.h, s.w, out)
                        .map_err(|e| kerr(name, &e))?;
                    std::mem::swap(i8_a, i8_b);
                    c_cur = *out_c;
                }
                Layer::Int8Conv {
                    conv,
                    out_c,
                    pool,
                    levels,
                    s: sa,
                    scale,
                    shift,
                    act,
                } => {
                    let input = &i8_a[..batch * s.h * s.w * cs(c_cur)];
                    let n_acc = batch * s.ho * s.wo * out_c;
                    conv.forward(input, batch, s.h, s.w, Output::I32(&mut acc[..n_acc]))
                        .map_err(|e| kerr(name, &e))?;
                    let a: &[i32] = if *pool {
                        let pooled = &mut acc_b[..batch * s.hp * s.wp * out_c];
                        xnor_kernels::maxpool2x2_i32(
                            &acc[..n_acc],
                            batch,
                            s.ho,
                            s.wo,
                            *out_c,
                            pooled,
                        )
                        .map_err(|e| kerr(name, &e))?;
                        pooled
                    } else {
                        &acc[..n_acc]
                    };
                    let n = batch * s.hp * s.wp * cs(*out_c);
                    match levels {
                        // The pooled accumulators through the same level steps.
                        Some(lt) => lt.apply(a, &mut i8_b[..n]).map_err(|e| kerr(name, &e))?,
                        None => int8::epilogue_i32(
                            a,
                            *out_c,
                            *sa,
                            scale,
                            shift,
                            act,
                            &mut i8_b[..n],
                            cs(*out_c),
                        ),
                    }
                    std::mem::swap(i8_a, i8_b);
                    c_cur = *out_c;
                }
                Layer::Int8Dense {
                    w: wts,
                    out,
                    s: sa,
                    scale,
                    shift,
                    act,
                } => {
                    let rows = int8::dense_rows(i8_a, i8_b, batch, s.h * s.w, c_cur);
                    let acc = &mut acc[..batch * out];
                    xnor_kernels::int8_gemm(rows, wts, batch, Output::I32(acc))
                        .map_err(|e| kerr(name, &e))?;
                    match act {
                        Some(act) => {
                            let n = batch * cs(*out);
                            int8::epilogue_i32(
                                acc,
                                *out,
                                *sa,
                                scale,
                                shift,
                                act,
                                &mut i8_a[..n],
                                cs(*out),
                            );
                        }
                        None => int8::logits_i32(acc, *sa, scale, shift, logits),
                    }
                    c_cur = *out;
                }
                Layer::PoolClassifier {
                    w: wts,
                    out,
                    scale,
                    shift,
                } => {
                    let c = wts.k();
                    let pooled = &mut pool_f32[..batch * c];
                    residual::global_mean(&stream_a[..batch * s.h * s.w * c], c, pooled);
                    let cw = c.div_ceil(64);
                    residual::pack_rows(pooled, c, &mut bits_a[..batch * cw])
                        .map_err(|e| kerr(name, &e))?;
                    let acc = &mut acc[..batch * out];
                    xnor_kernels::binary_gemm(&bits_a[..batch * cw], wts, batch, Output::I32(acc))
                        .map_err(|e| kerr(name, &e))?;
                    affine_logits(acc, scale, shift, logits);
                }
            }
        }
        Ok(())
    }
}

/// The classifier's logits, `f32(acc) * scale + shift` as the training graph's BatchNorm.
fn affine_logits(acc: &[i32], scale: &[f32], shift: &[f32], logits: &mut [f32]) {
    let out = scale.len();
    for (lrow, arow) in logits.chunks_exact_mut(out).zip(acc.chunks_exact(out)) {
        for (((l, &a), &sc), &sh) in lrow.iter_mut().zip(arow).zip(scale).zip(shift) {
            *l = a as f32 * sc + sh;
        }
    }
}

fn kind_name(lm: &LayerMeta) -> &'static str {
    match lm {
        LayerMeta::FloatConv { .. } => "float_conv",
        LayerMeta::BinaryConv { .. } => "binary_conv",
        LayerMeta::BinaryDense { .. } => "binary_dense",
        LayerMeta::BinaryDenseAffine { .. } => "binary_dense_affine",
        LayerMeta::StemConv { .. } => "stem_conv",
        LayerMeta::ResidualBlock { .. } => "residual_block",
        LayerMeta::PoolClassifier { .. } => "pool_classifier",
        LayerMeta::Int8FloatConv { .. } => "int8_float_conv",
        LayerMeta::Int8Conv { .. } => "int8_conv",
        LayerMeta::Int8Dense { .. } => "int8_dense",
        LayerMeta::Int8DenseAffine { .. } => "int8_dense_affine",
    }
}

fn dense_in(
    in_features: usize,
    h: usize,
    w: usize,
    c: usize,
    lerr: &dyn Fn(String) -> Error,
) -> Result<usize> {
    let k = h * w * c;
    if in_features != k || k == 0 {
        return Err(lerr(format!(
            "expects {in_features} input features, the previous layer gives {h}x{w}x{c} = {k}"
        )));
    }
    Ok(k)
}

fn dense_weights(
    weight: &BitTensor<'_>,
    out: usize,
    k: usize,
    lerr: &dyn Fn(String) -> Error,
) -> Result<BinaryWeights> {
    if out == 0 || weight.layout() != Layout::RowMajor || weight.dims() != [out, k] {
        return Err(lerr(format!(
            "weight has layout {} dims {:?}, expected row-major {:?}",
            weight.layout().name(),
            weight.dims(),
            [out, k]
        )));
    }
    BinaryWeights::new(weight.words(), out, k).map_err(|e| lerr(e.to_string()))
}

/// Makes the dense layer's input rows (`batch` rows of `ceil(k / 64)` words, NHWC flatten of
/// the previous activations) available; returns `true` when they are in `a`, `false` in `b`.
/// When the previous layer's per-pixel words have no pad bits (`c % 64 == 0`, or a single pixel)
/// the packed NHWC tensor already is the dense row; otherwise the bits are repacked densely.
fn dense_input(
    a: &mut [u64],
    b: &mut [u64],
    len: &mut usize,
    batch: usize,
    s: &Step,
    c: usize,
    k: usize,
) -> bool {
    let pixels = s.h * s.w;
    let kw = k.div_ceil(64);
    if c.is_multiple_of(64) || pixels == 1 {
        return true;
    }
    let cw = c.div_ceil(64);
    let dst = &mut b[..batch * kw];
    dst.fill(0);
    for img in 0..batch {
        for p in 0..pixels {
            let src = &a[(img * pixels + p) * cw..(img * pixels + p + 1) * cw];
            for ch in 0..c {
                if src[ch / 64] >> (ch % 64) & 1 == 1 {
                    let j = p * c + ch;
                    dst[img * kw + j / 64] |= 1 << (j % 64);
                }
            }
        }
    }
    *len = batch * kw;
    false
}

/// 2x2/2 max-pool of NHWC `f32` (floor), as the training graph's `max_pool2d`.
fn maxpool2x2_f32(x: &[f32], batch: usize, h: usize, w: usize, c: usize, out: &mut [f32]) {
    let (ho, wo) = (h / 2, w / 2);
    for b in 0..batch {
        for y in 0..ho {
            for xx in 0..wo {
                let o = ((b * ho + y) * wo + xx) * c;
                for ch in 0..c {
                    let at =
                        |dy: usize, dx: usize| x[((b * h + 2 * y + dy) * w + 2 * xx + dx) * c + ch];
                    let mut m = at(0, 0);
                    for v in [at(0, 1), at(1, 0), at(1, 1)] {
                        if v > m {
                            m = v;
                        }
                    }
                    out[o + ch] = m;
                }
            }
        }
    }
}

/// Index of the largest value of each `n`-long row (the first among equal maxima).
pub fn argmax_rows(values: &[f32], n: usize) -> Vec<u32> {
    if n == 0 {
        return Vec::new();
    }
    values
        .chunks_exact(n)
        .map(|r| {
            let mut best = 0;
            for (i, &v) in r.iter().enumerate() {
                if v > r[best] {
                    best = i;
                }
            }
            best as u32
        })
        .collect()
}
