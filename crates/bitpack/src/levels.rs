//! 2-3 bit values as int8 integer levels ([`Int8Tensor`]), dense code packing and ternary planes.
//!
//! # Convention
//! A multi-bit value is stored as an int8 *level* `q`; the real value is `q * scale`:
//!
//! | [`LevelSet`] | bits | levels (ascending) | default scale |
//! |---|---|---|---|
//! | `Ternary` | 2 | `-1, 0, 1` | 1.0 |
//! | `Pow2` | 3 | `-4, -2, -1, 0, 1, 2, 4` (i.e. `{0, ±0.25, ±0.5, ±1}` times 4) | 0.25 |
//! | `Uniform { bits: K }`, `K` in 2..=7 | `K` | odd `-L ..= L`, `L = 2^K - 1` | `1/L` |
//!
//! Int8 rows follow the segment geometry of [`crate::layout`]: each segment is zero-padded to a
//! multiple of [`INT8_SEGMENT_ALIGN`](crate::INT8_SEGMENT_ALIGN) bytes, and **pad bytes are
//! zero**, so an int8 dot product over padded segments is exact.
//!
//! For compact files, [`encode_codes`] packs the logical (unpadded) values densely as codes
//! (code = index into the ascending level list; 2 bits for ternary, 3 for pow2, `K` for
//! uniform), element `i`
//! occupying bits `i*b .. i*b + b` of a little-endian bit stream, unused final bits zero.
//! Ternary can also be split into a sign plane and a non-zero plane
//! ([`Int8Tensor::to_ternary_planes`]).

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use crate::bits::{BitTensor, check_len};
use crate::error::{BitpackError, Result};
use crate::layout::{Geometry, Layout};

/// A legal set of integer levels with its bit width and default scale; see the
/// [module docs](self). The integers and scales are those of aqe-core's hard quantizers, and
/// codes are aqe-core's codes (index into the ascending level list).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum LevelSet {
    /// 2-bit ternary `{-1, 0, 1}`, scale 1.
    Ternary,
    /// 3-bit powers of two `{0, ±1, ±2, ±4}`, scale 1/4.
    Pow2,
    /// `bits`-bit uniform levels (aqe-core's `uniform:K`, e.g. M-bit activations): the odd
    /// integers `-L, -L + 2, ..., L` with `L = 2^bits - 1`, scale `1/L` (rounded to `f32`).
    /// `bits` must lie in `2..=7` (so levels fit in int8); other values have no legal levels.
    Uniform {
        /// Bit width, `2..=7`.
        bits: u8,
    },
}

/// The names accepted by [`LevelSet::from_str`] (`uniform` takes `:BITS`, e.g. `uniform:3`).
pub const LEVEL_SET_NAMES: &[&str] = &["ternary", "pow2", "uniform:BITS"];

const fn odd_levels<const N: usize>() -> [i8; N] {
    let mut out = [0i8; N];
    let mut i = 0;
    while i < N {
        out[i] = (2 * i as i32 - (N as i32 - 1)) as i8;
        i += 1;
    }
    out
}

static UNIFORM2: [i8; 4] = odd_levels::<4>();
static UNIFORM3: [i8; 8] = odd_levels::<8>();
static UNIFORM4: [i8; 16] = odd_levels::<16>();
static UNIFORM5: [i8; 32] = odd_levels::<32>();
static UNIFORM6: [i8; 64] = odd_levels::<64>();
static UNIFORM7: [i8; 128] = odd_levels::<128>();

impl LevelSet {
    /// `uniform:bits`, checked.
    ///
    /// # Errors
    /// [`BitpackError::BadMetadata`] (key `levels`) unless `bits` lies in `2..=7`.
    pub fn uniform(bits: u8) -> Result<LevelSet> {
        let set = LevelSet::Uniform { bits };
        if set.levels().is_empty() {
            return Err(BitpackError::BadMetadata {
                tensor: String::new(),
                key: "levels".to_string(),
                value: format!("uniform:{bits}"),
                reason: "uniform bit width must lie in 2..=7 (int8 levels)".to_string(),
            });
        }
        Ok(set)
    }

    /// The short name, matching aqe-core's quantizer names: `"ternary"`, `"pow2"` or
    /// `"uniform"` (see [`Display`](fmt::Display) for the full `uniform:K` form).
    pub fn name(self) -> &'static str {
        match self {
            LevelSet::Ternary => "ternary",
            LevelSet::Pow2 => "pow2",
            LevelSet::Uniform { .. } => "uniform",
        }
    }

    /// Bits per value in dense code packing.
    pub fn bits(self) -> u32 {
        match self {
            LevelSet::Ternary => 2,
            LevelSet::Pow2 => 3,
            LevelSet::Uniform { bits } => u32::from(bits),
        }
    }

    /// The legal levels, ascending (empty for an out-of-range uniform width).
    pub fn levels(self) -> &'static [i8] {
        match self {
            LevelSet::Ternary => &[-1, 0, 1],
            LevelSet::Pow2 => &[-4, -2, -1, 0, 1, 2, 4],
            LevelSet::Uniform { bits: 2 } => &UNIFORM2,
            LevelSet::Uniform { bits: 3 } => &UNIFORM3,
            LevelSet::Uniform { bits: 4 } => &UNIFORM4,
            LevelSet::Uniform { bits: 5 } => &UNIFORM5,
            LevelSet::Uniform { bits: 6 } => &UNIFORM6,
            LevelSet::Uniform { bits: 7 } => &UNIFORM7,
            LevelSet::Uniform { .. } => &[],
        }
    }

    /// The scale mapping a level to its real value: 1, 1/4, or `1/L` for uniform.
    pub fn default_scale(self) -> f32 {
        match self {
            LevelSet::Ternary => 1.0,
            LevelSet::Pow2 => 0.25,
            LevelSet::Uniform { bits } => 1.0 / (((1u32 << bits.min(31)) - 1) as f32),
        }
    }

    /// Whether `q` is a legal level.
    pub fn contains(self, q: i8) -> bool {
        self.code(q).is_some()
    }

    /// The code (index into [`LevelSet::levels`]) of level `q`.
    pub fn code(self, q: i8) -> Option<u8> {
        let levels = self.levels();
        match self {
            LevelSet::Ternary => matches!(q, -1..=1).then(|| (q + 1) as u8),
            LevelSet::Uniform { .. } if !levels.is_empty() => {
                let l = levels.len() as i32 - 1;
                let q = i32::from(q);
                (q % 2 != 0 && q.abs() <= l).then(|| ((q + l) / 2) as u8)
            }
            _ => levels.iter().position(|&l| l == q).map(|i| i as u8),
        }
    }

    fn illegal(self, tensor: &str, index: usize, value: i64) -> BitpackError {
        BitpackError::IllegalLevel {
            tensor: tensor.to_string(),
            index,
            value,
            encoding: self.name(),
            legal: self.levels(),
        }
    }
}

impl fmt::Display for LevelSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LevelSet::Uniform { bits } => write!(f, "uniform:{bits}"),
            other => f.write_str(other.name()),
        }
    }
}

impl FromStr for LevelSet {
    type Err = BitpackError;

    /// Parses `ternary`, `pow2` or `uniform:K` (`K` in `2..=7`).
    fn from_str(s: &str) -> Result<LevelSet> {
        let bad = || BitpackError::BadMetadata {
            tensor: String::new(),
            key: "levels".to_string(),
            value: s.to_string(),
            reason: format!("valid level sets are: {}", LEVEL_SET_NAMES.join(", ")),
        };
        match s {
            "ternary" => Ok(LevelSet::Ternary),
            "pow2" => Ok(LevelSet::Pow2),
            _ => {
                let bits = s.strip_prefix("uniform:").ok_or_else(bad)?;
                LevelSet::uniform(bits.parse().map_err(|_| bad())?)
            }
        }
    }
}

/// A 2-3 bit tensor stored as int8 levels with zero-padded segments; see the
/// [module docs](self).
///
/// ```
/// use bitpack::{Int8Tensor, Layout, LevelSet};
/// let t = Int8Tensor::from_levels(LevelSet::Pow2, Layout::RowMajor, &[2, 3], &[4, -1, 0, 2, 0, -4])
///     .unwrap();
/// assert_eq!(t.row_stride(), 4); // 3 values + 1 zero pad byte
/// assert_eq!(t.data(), &[4, -1, 0, 0, 2, 0, -4, 0]);
/// assert_eq!(t.to_f32(), vec![1.0, -0.25, 0.0, 0.5, 0.0, -1.0]);
/// assert!(Int8Tensor::from_levels(LevelSet::Pow2, Layout::RowMajor, &[1, 1], &[3]).is_err());
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Int8Tensor<'a> {
    levels: LevelSet,
    scale: f32,
    layout: Layout,
    dims: Vec<usize>,
    geometry: Geometry,
    data: Cow<'a, [i8]>,
}

impl Int8Tensor<'static> {
    /// An all-zero tensor with the level set's default scale.
    ///
    /// # Errors
    /// [`BitpackError::InvalidShape`] for a wrong rank or an overflowing size.
    pub fn zeros(levels: LevelSet, layout: Layout, dims: &[usize]) -> Result<Self> {
        let geometry = layout.geometry("", dims)?;
        Ok(Int8Tensor {
            levels,
            scale: levels.default_scale(),
            layout,
            dims: dims.to_vec(),
            geometry,
            data: Cow::Owned(vec![0; geometry.int8_len()]),
        })
    }

    /// Builds from levels in logical order, checking each is legal for `levels`.
    ///
    /// # Errors
    /// [`BitpackError::IllegalLevel`] naming the first bad logical index and value;
    /// [`BitpackError::LengthMismatch`]; shape errors.
    pub fn from_levels(
        levels: LevelSet,
        layout: Layout,
        dims: &[usize],
        values: &[i8],
    ) -> Result<Self> {
        let mut t = Self::zeros(levels, layout, dims)?;
        let g = t.geometry;
        check_len("", "values", g.len(), values.len())?;
        if let Some((index, &v)) = values
            .iter()
            .enumerate()
            .find(|&(_, &v)| !levels.contains(v))
        {
            return Err(levels.illegal("", index, v.into()));
        }
        if g.segment_len > 0 {
            let stride = g.int8_segment_stride();
            let data = t.data.to_mut();
            for (src, dst) in values
                .chunks_exact(g.segment_len)
                .zip(data.chunks_exact_mut(stride))
            {
                dst[..src.len()].copy_from_slice(src);
            }
        }
        Ok(t)
    }

    /// Builds from values that are already quantized reals, `level as f32 * scale` exactly with
    /// the level set's default scale (as aqe-core's hard quantizers produce them), e.g. a
    /// trained layer's quantized weights.
    ///
    /// # Errors
    /// [`BitpackError::OffGrid`] naming the first value that is not exactly a legal level times
    /// the scale; shape errors.
    pub fn from_quantized_f32(
        levels: LevelSet,
        layout: Layout,
        dims: &[usize],
        values: &[f32],
    ) -> Result<Self> {
        let scale = levels.default_scale();
        let mut q = Vec::with_capacity(values.len());
        for (index, &x) in values.iter().enumerate() {
            let r = (x / scale).round();
            let level = (-128.0..=127.0).contains(&r).then_some(r as i8);
            match level {
                Some(l) if levels.contains(l) && f32::from(l) * scale == x => q.push(l),
                _ => {
                    return Err(BitpackError::OffGrid {
                        tensor: String::new(),
                        index,
                        value: x,
                        levels: levels.to_string(),
                    });
                }
            }
        }
        Self::from_levels(levels, layout, dims, &q)
    }

    /// Decodes dense codes (see [`encode_codes`]) into an int8 tensor.
    ///
    /// # Errors
    /// [`BitpackError::LengthMismatch`] when `codes` is not exactly `ceil(len * bits / 8)`
    /// bytes, [`BitpackError::IllegalLevel`] for a code past the level list (the reported
    /// value is the code), [`BitpackError::NonZeroPadding`] for non-zero unused final bits.
    pub fn from_codes(
        tensor: &str,
        levels: LevelSet,
        layout: Layout,
        dims: &[usize],
        codes: &[u8],
    ) -> Result<Self> {
        let geometry = layout.geometry(tensor, dims)?;
        let values = decode_codes(tensor, levels, geometry.len(), codes)?;
        Self::from_levels(levels, layout, dims, &values).map_err(|e| name_tensor(e, tensor))
    }
}

impl<'a> Int8Tensor<'a> {
    /// Wraps padded storage (owned or borrowed), validating length, levels and zero padding.
    ///
    /// # Errors
    /// [`BitpackError::LengthMismatch`], [`BitpackError::IllegalLevel`] (index into the padded
    /// storage), [`BitpackError::NonZeroPadding`], shape errors; each naming `tensor`.
    pub fn from_storage(
        tensor: &str,
        levels: LevelSet,
        layout: Layout,
        dims: &[usize],
        data: impl Into<Cow<'a, [i8]>>,
    ) -> Result<Self> {
        let geometry = layout.geometry(tensor, dims)?;
        let data = data.into();
        check_len(tensor, "data", geometry.int8_len(), data.len())?;
        let stride = geometry.int8_segment_stride();
        if stride > 0 {
            for (s, seg) in data.chunks_exact(stride).enumerate() {
                let (vals, pad) = seg.split_at(geometry.segment_len);
                if let Some(j) = vals.iter().position(|&v| !levels.contains(v)) {
                    return Err(levels.illegal(tensor, s * stride + j, vals[j].into()));
                }
                if let Some(j) = pad.iter().position(|&v| v != 0) {
                    return Err(BitpackError::NonZeroPadding {
                        tensor: tensor.to_string(),
                        row: s / geometry.segments,
                        element: (s % geometry.segments) * stride + geometry.segment_len + j,
                    });
                }
            }
        }
        Ok(Int8Tensor {
            levels,
            scale: levels.default_scale(),
            layout,
            dims: dims.to_vec(),
            geometry,
            data,
        })
    }

    /// Replaces the scale (e.g. a learned per-layer scale).
    ///
    /// # Errors
    /// [`BitpackError::BadMetadata`] unless `scale` is finite and positive.
    pub fn with_scale(mut self, scale: f32) -> Result<Self> {
        if !(scale.is_finite() && scale > 0.0) {
            return Err(BitpackError::BadMetadata {
                tensor: String::new(),
                key: "scale".to_string(),
                value: format!("{scale:?}"),
                reason: "scale must be finite and positive".to_string(),
            });
        }
        self.scale = scale;
        Ok(self)
    }

    /// Levels in logical order (padding dropped).
    pub fn to_levels(&self) -> Vec<i8> {
        let g = self.geometry;
        let mut out = Vec::with_capacity(g.len());
        let stride = g.int8_segment_stride();
        if stride > 0 {
            for seg in self.data.chunks_exact(stride) {
                out.extend_from_slice(&seg[..g.segment_len]);
            }
        }
        out
    }

    /// Real values `level * scale` in logical order.
    pub fn to_f32(&self) -> Vec<f32> {
        self.to_levels()
            .into_iter()
            .map(|q| f32::from(q) * self.scale)
            .collect()
    }

    /// Dense codes of the logical values (see [`encode_codes`]).
    ///
    /// # Errors
    /// [`BitpackError::IllegalLevel`] if the storage was corrupted through
    /// [`Int8Tensor::data_mut`].
    pub fn to_codes(&self) -> Result<Vec<u8>> {
        encode_codes(self.levels, &self.to_levels())
    }

    /// The level at logical flat index `index`.
    ///
    /// # Panics
    /// When `index >= self.len()`.
    pub fn get(&self, index: usize) -> i8 {
        let g = self.geometry;
        assert!(
            index < g.len(),
            "index {index} out of range for {} elements",
            g.len()
        );
        let (seg, j) = (index / g.segment_len, index % g.segment_len);
        self.data[seg * g.int8_segment_stride() + j]
    }

    /// The level set.
    pub fn level_set(&self) -> LevelSet {
        self.levels
    }

    /// The scale: real value = level * scale.
    pub fn scale(&self) -> f32 {
        self.scale
    }

    /// Bits per value (2 or 3).
    pub fn bits(&self) -> u32 {
        self.levels.bits()
    }

    /// The layout.
    pub fn layout(&self) -> Layout {
        self.layout
    }

    /// The logical dims.
    pub fn dims(&self) -> &[usize] {
        &self.dims
    }

    /// The row/segment geometry.
    pub fn geometry(&self) -> Geometry {
        self.geometry
    }

    /// Logical element count.
    pub fn len(&self) -> usize {
        self.geometry.len()
    }

    /// Whether there are no elements.
    pub fn is_empty(&self) -> bool {
        self.geometry.is_empty()
    }

    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.geometry.rows
    }

    /// Bytes per row (segments each padded to a multiple of 4).
    pub fn row_stride(&self) -> usize {
        self.geometry.int8_row_stride()
    }

    /// Bytes per segment (per `Ohwi` tap / `Nhwc` pixel).
    pub fn segment_stride(&self) -> usize {
        self.geometry.int8_segment_stride()
    }

    /// The padded storage, row after row.
    pub fn data(&self) -> &[i8] {
        &self.data
    }

    /// Mutable padded storage (copies borrowed storage first). Writers must keep values legal
    /// and pad bytes zero.
    pub fn data_mut(&mut self) -> &mut [i8] {
        self.data.to_mut()
    }

    /// Row `i` of the padded storage.
    ///
    /// # Panics
    /// When `i >= self.rows()`.
    pub fn row(&self, i: usize) -> &[i8] {
        let s = self.row_stride();
        &self.data[i * s..(i + 1) * s]
    }

    /// Whether the storage is borrowed from a file buffer (zero-copy).
    pub fn is_borrowed(&self) -> bool {
        matches!(self.data, Cow::Borrowed(_))
    }

    /// An owned copy (no-op for owned storage).
    pub fn into_owned(self) -> Int8Tensor<'static> {
        Int8Tensor {
            levels: self.levels,
            scale: self.scale,
            layout: self.layout,
            dims: self.dims,
            geometry: self.geometry,
            data: Cow::Owned(self.data.into_owned()),
        }
    }

    /// Splits a ternary tensor into a sign plane (bit 1 = `-1`) and a non-zero plane
    /// (bit 1 = value is not 0), both with this tensor's layout and zero pad bits. Zeros have
    /// sign bit 0, so `sign & !nonzero == 0` always holds.
    ///
    /// ```
    /// use bitpack::{Int8Tensor, Layout, LevelSet};
    /// let t = Int8Tensor::from_levels(LevelSet::Ternary, Layout::RowMajor, &[1, 3], &[-1, 0, 1]).unwrap();
    /// let (sign, nonzero) = t.to_ternary_planes().unwrap();
    /// assert_eq!((sign.words(), nonzero.words()), (&[0b001][..], &[0b101][..]));
    /// assert_eq!(Int8Tensor::from_ternary_planes(&sign, &nonzero).unwrap(), t);
    /// ```
    ///
    /// # Errors
    /// [`BitpackError::BadMetadata`] when the level set is not ternary.
    pub fn to_ternary_planes(&self) -> Result<(BitTensor<'static>, BitTensor<'static>)> {
        if self.levels != LevelSet::Ternary {
            return Err(BitpackError::BadMetadata {
                tensor: String::new(),
                key: "levels".to_string(),
                value: self.levels.name().to_string(),
                reason: "only ternary tensors split into sign and non-zero planes".to_string(),
            });
        }
        let q = self.to_levels();
        let sign: Vec<i8> = q.iter().map(|&v| if v < 0 { -1 } else { 1 }).collect();
        let nz: Vec<i8> = q.iter().map(|&v| if v != 0 { -1 } else { 1 }).collect();
        Ok((
            BitTensor::from_signs_i8(self.layout, &self.dims, &sign)?,
            BitTensor::from_signs_i8(self.layout, &self.dims, &nz)?,
        ))
    }

    /// Rebuilds a ternary tensor from a sign plane and a non-zero plane (see
    /// [`Int8Tensor::to_ternary_planes`]).
    ///
    /// # Errors
    /// [`BitpackError::InvalidShape`] when the planes' layouts or dims differ;
    /// [`BitpackError::IllegalLevel`] (value `-0`, reported as 0) when a sign bit is set on a
    /// zero element.
    pub fn from_ternary_planes(
        sign: &BitTensor<'_>,
        nonzero: &BitTensor<'_>,
    ) -> Result<Int8Tensor<'static>> {
        if sign.layout() != nonzero.layout() || sign.dims() != nonzero.dims() {
            return Err(BitpackError::InvalidShape {
                tensor: "ternary planes".to_string(),
                shape: nonzero.dims().to_vec(),
                reason: "sign and non-zero planes differ in layout or dims",
            });
        }
        let s = sign.to_signs_i8();
        let nz = nonzero.to_signs_i8();
        let mut q = Vec::with_capacity(s.len());
        for (index, (&s, &n)) in s.iter().zip(&nz).enumerate() {
            q.push(match (s < 0, n < 0) {
                (neg, true) => {
                    if neg {
                        -1
                    } else {
                        1
                    }
                }
                (false, false) => 0,
                (true, false) => return Err(LevelSet::Ternary.illegal("ternary planes", index, 0)),
            });
        }
        Int8Tensor::from_levels(LevelSet::Ternary, sign.layout(), sign.dims(), &q)
    }
}

/// Puts `name` into the `tensor` field of a level error (raised before the name was known).
pub(crate) fn name_tensor(e: BitpackError, name: &str) -> BitpackError {
    match e {
        BitpackError::IllegalLevel {
            index,
            value,
            encoding,
            legal,
            ..
        } => BitpackError::IllegalLevel {
            tensor: name.to_string(),
            index,
            value,
            encoding,
            legal,
        },
        BitpackError::OffGrid {
            index,
            value,
            levels,
            ..
        } => BitpackError::OffGrid {
            tensor: name.to_string(),
            index,
            value,
            levels,
        },
        other => other,
    }
}

/// Packs levels densely as codes (index into [`LevelSet::levels`]), `bits()` bits each, LSB
/// first; the unused bits of the last byte are zero.
///
/// ```
/// use bitpack::{LevelSet, levels::{decode_codes, encode_codes}};
/// let codes = encode_codes(LevelSet::Pow2, &[-4, 4, 0]).unwrap(); // codes 0, 6, 3
/// assert_eq!(codes, vec![0b11_110_000, 0b0]); // 000, 110, 011 packed LSB first
/// assert_eq!(decode_codes("t", LevelSet::Pow2, 3, &codes).unwrap(), vec![-4, 4, 0]);
/// ```
///
/// # Errors
/// [`BitpackError::IllegalLevel`] (logical index and value) for a value not in the set.
pub fn encode_codes(levels: LevelSet, values: &[i8]) -> Result<Vec<u8>> {
    let b = levels.bits() as usize;
    let mut out = vec![0u8; (values.len() * b).div_ceil(8)];
    for (i, &v) in values.iter().enumerate() {
        let code = levels
            .code(v)
            .ok_or_else(|| levels.illegal("", i, v.into()))?;
        let bit = i * b;
        let (byte, shift) = (bit / 8, bit % 8);
        let wide = u16::from(code) << shift;
        out[byte] |= wide as u8;
        if shift + b > 8 {
            out[byte + 1] |= (wide >> 8) as u8;
        }
    }
    Ok(out)
}

/// Decodes `len` dense codes (see [`encode_codes`]) back to levels.
///
/// # Errors
/// [`BitpackError::LengthMismatch`] unless `codes.len() == ceil(len * bits / 8)`;
/// [`BitpackError::IllegalLevel`] for a code with no level (value = the code, index = element);
/// [`BitpackError::NonZeroPadding`] for set bits after the last code.
pub fn decode_codes(tensor: &str, levels: LevelSet, len: usize, codes: &[u8]) -> Result<Vec<i8>> {
    let b = levels.bits() as usize;
    let bits = len
        .checked_mul(b)
        .ok_or_else(|| BitpackError::InvalidShape {
            tensor: tensor.to_string(),
            shape: vec![len],
            reason: "code bit count overflows usize",
        })?;
    check_len(tensor, "codes", bits.div_ceil(8), codes.len())?;
    let table = levels.levels();
    let mask = (1u16 << b) - 1;
    let mut out = Vec::with_capacity(len);
    for i in 0..len {
        let bit = i * b;
        let (byte, shift) = (bit / 8, bit % 8);
        let lo = u16::from(codes[byte]);
        let hi = codes.get(byte + 1).map_or(0, |&h| u16::from(h));
        let code = ((lo | hi << 8) >> shift) & mask;
        match table.get(usize::from(code)) {
            Some(&q) => out.push(q),
            None => return Err(levels.illegal(tensor, i, code.into())),
        }
    }
    let used = bits % 8;
    if used != 0 && codes.last().is_some_and(|&l| l >> used != 0) {
        return Err(BitpackError::NonZeroPadding {
            tensor: tensor.to_string(),
            row: 0,
            element: codes.len() - 1,
        });
    }
    Ok(out)
}
