//! 1-bit sign planes: [`BitTensor`] and the SIMD sign packers behind it.
//!
//! # Bit convention
//! - A value `+1` is bit 0 and `-1` is bit 1 (bit = "is negative", as in Larq Compute Engine).
//! - Packing from `f32` tests `x < 0.0`: `+0.0`, `-0.0` and NaN pack as `+1` (matching
//!   aqe-core's `sign(0) = +1`); the raw float sign bit is never read.
//! - Element `j` of a word is bit `j` (LSB first); word `w` of a segment holds elements
//!   `64w .. 64w + 63`.
//! - Each segment (see [`crate::layout`]) starts on a fresh word; **pad bits are zero**, so
//!   `K - 2 * popcount(a ^ w)` over padded words is exact for logical length `K`.
//!
//! # Packing paths
//! AVX-512 (`vcmpps` into a mask register, 16 bits per instruction, masked tail loads) and AVX2
//! (`vcmpps` + `vmovmskps`, 8 bits per instruction) are chosen through [`selected_isa`] or an
//! explicit [`Isa`]; the scalar loop is the reference and every path must equal it bit for bit.
//! There is no NEON-specific packer yet: on aarch64 the portable loop runs for `Isa::Neon`.

use std::borrow::Cow;

use crate::error::{BitpackError, Result};
use crate::isa::{Isa, selected_isa};
use crate::layout::{Geometry, Layout, WORD_BITS};

/// A packed 1-bit tensor (sign plane); see the [module docs](self) for the bit convention.
///
/// The storage either owns its words or borrows them zero-copy from a loaded file (`'a`).
///
/// ```
/// use bitpack::{BitTensor, Layout};
/// let x = [0.5f32, -1.0, 0.0, -0.0, f32::NAN, -3.0];
/// let t = BitTensor::from_f32(Layout::RowMajor, &[2, 3], &x).unwrap();
/// assert_eq!(t.words(), &[0b010, 0b100]); // row 0: -1.0 at j=1; row 1: -3.0 at j=2
/// assert_eq!(t.to_f32(), vec![1.0, -1.0, 1.0, 1.0, 1.0, -1.0]);
/// assert_eq!(t.get(1), -1);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BitTensor<'a> {
    layout: Layout,
    dims: Vec<usize>,
    geometry: Geometry,
    words: Cow<'a, [u64]>,
}

impl BitTensor<'static> {
    /// An all-`+1` tensor (every bit zero).
    ///
    /// # Errors
    /// [`BitpackError::InvalidShape`] for a wrong rank or an overflowing size.
    pub fn zeros(layout: Layout, dims: &[usize]) -> Result<Self> {
        let geometry = layout.geometry("", dims)?;
        Ok(BitTensor {
            layout,
            dims: dims.to_vec(),
            geometry,
            words: Cow::Owned(vec![0; geometry.words()]),
        })
    }

    /// Packs `values` (logical row-major order over `dims`) with the ISA of [`selected_isa`].
    ///
    /// # Errors
    /// [`BitpackError::InvalidShape`], [`BitpackError::LengthMismatch`] when
    /// `values.len()` is not the product of `dims`, or the `XNOR_ISA` error.
    pub fn from_f32(layout: Layout, dims: &[usize], values: &[f32]) -> Result<Self> {
        Self::from_f32_with(selected_isa()?, layout, dims, values)
    }

    /// Like [`BitTensor::from_f32`] with an explicit ISA (for tests and benchmarks).
    ///
    /// # Errors
    /// As [`BitTensor::from_f32`], plus [`BitpackError::IsaUnavailable`].
    pub fn from_f32_with(isa: Isa, layout: Layout, dims: &[usize], values: &[f32]) -> Result<Self> {
        let mut t = Self::zeros(layout, dims)?;
        t.pack_f32_with(isa, values)?;
        Ok(t)
    }

    /// Packs signs given as `+1` / `-1` bytes (logical order).
    ///
    /// # Errors
    /// [`BitpackError::IllegalLevel`] for any other value (naming its index), or a shape error.
    pub fn from_signs_i8(layout: Layout, dims: &[usize], signs: &[i8]) -> Result<Self> {
        let mut t = Self::zeros(layout, dims)?;
        check_len("", "signs", t.geometry.len(), signs.len())?;
        if let Some((index, &v)) = signs.iter().enumerate().find(|&(_, &v)| v != 1 && v != -1) {
            return Err(BitpackError::IllegalLevel {
                tensor: String::new(),
                index,
                value: v.into(),
                encoding: "sign",
                legal: &[-1, 1],
            });
        }
        let g = t.geometry;
        let wps = g.words_per_segment();
        let words = t.words.to_mut();
        if g.segment_len > 0 {
            for (seg, dst) in signs
                .chunks_exact(g.segment_len)
                .zip(words.chunks_exact_mut(wps))
            {
                for (j, &s) in seg.iter().enumerate() {
                    dst[j / WORD_BITS] |= u64::from(s < 0) << (j % WORD_BITS);
                }
            }
        }
        Ok(t)
    }
}

impl<'a> BitTensor<'a> {
    /// Wraps existing storage words (owned `Vec<u64>` or a borrowed slice), validating the
    /// length and that every pad bit is zero.
    ///
    /// # Errors
    /// [`BitpackError::LengthMismatch`], [`BitpackError::NonZeroPadding`] or a shape error,
    /// each naming `tensor`.
    pub fn from_words(
        tensor: &str,
        layout: Layout,
        dims: &[usize],
        words: impl Into<Cow<'a, [u64]>>,
    ) -> Result<Self> {
        let geometry = layout.geometry(tensor, dims)?;
        let words = words.into();
        check_len(tensor, "words", geometry.words(), words.len())?;
        let t = BitTensor {
            layout,
            dims: dims.to_vec(),
            geometry,
            words,
        };
        t.check_padding(tensor)?;
        Ok(t)
    }

    /// Checks that every pad bit is zero (kernels rely on it).
    ///
    /// # Errors
    /// [`BitpackError::NonZeroPadding`] naming the first bad row and word.
    pub fn check_padding(&self, tensor: &str) -> Result<()> {
        let g = self.geometry;
        let wps = g.words_per_segment();
        let tail = g.segment_len % WORD_BITS;
        if wps == 0 || tail == 0 {
            return Ok(());
        }
        let pad_mask = !0u64 << tail;
        for (s, seg) in self.words.chunks_exact(wps).enumerate() {
            if seg[wps - 1] & pad_mask != 0 {
                let row = s / g.segments;
                let element = (s % g.segments) * wps + wps - 1;
                return Err(BitpackError::NonZeroPadding {
                    tensor: tensor.to_string(),
                    row,
                    element,
                });
            }
        }
        Ok(())
    }

    /// Re-packs `values` into this tensor's storage (no allocation when owned), using
    /// [`selected_isa`].
    ///
    /// # Errors
    /// [`BitpackError::LengthMismatch`] or the `XNOR_ISA` error.
    pub fn pack_f32(&mut self, values: &[f32]) -> Result<()> {
        self.pack_f32_with(selected_isa()?, values)
    }

    /// Like [`BitTensor::pack_f32`] with an explicit ISA.
    ///
    /// # Errors
    /// [`BitpackError::LengthMismatch`] or [`BitpackError::IsaUnavailable`].
    pub fn pack_f32_with(&mut self, isa: Isa, values: &[f32]) -> Result<()> {
        let isa = isa.require("argument")?;
        let g = self.geometry;
        check_len("", "values", g.len(), values.len())?;
        let wps = g.words_per_segment();
        let words = self.words.to_mut();
        if g.segment_len == 0 {
            return Ok(());
        }
        for (seg, dst) in values
            .chunks_exact(g.segment_len)
            .zip(words.chunks_exact_mut(wps))
        {
            pack_segment(isa, seg, dst);
        }
        Ok(())
    }

    /// Unpacks to `+1.0` / `-1.0` in logical order.
    pub fn to_f32(&self) -> Vec<f32> {
        let mut out = Vec::with_capacity(self.geometry.len());
        self.for_each(|neg| out.push(if neg { -1.0 } else { 1.0 }));
        out
    }

    /// Unpacks to `+1` / `-1` bytes in logical order.
    pub fn to_signs_i8(&self) -> Vec<i8> {
        let mut out = Vec::with_capacity(self.geometry.len());
        self.for_each(|neg| out.push(if neg { -1 } else { 1 }));
        out
    }

    fn for_each(&self, mut f: impl FnMut(bool)) {
        let g = self.geometry;
        let wps = g.words_per_segment();
        if wps == 0 {
            return;
        }
        for seg in self.words.chunks_exact(wps) {
            for j in 0..g.segment_len {
                f((seg[j / WORD_BITS] >> (j % WORD_BITS)) & 1 == 1);
            }
        }
    }

    /// The value (`+1` or `-1`) at logical flat index `index`.
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
        let w = self.words[seg * g.words_per_segment() + j / WORD_BITS];
        if (w >> (j % WORD_BITS)) & 1 == 1 {
            -1
        } else {
            1
        }
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

    /// Words per row.
    pub fn words_per_row(&self) -> usize {
        self.geometry.words_per_row()
    }

    /// Words per segment (per `Ohwi` tap / `Nhwc` pixel).
    pub fn words_per_segment(&self) -> usize {
        self.geometry.words_per_segment()
    }

    /// All storage words, row after row.
    pub fn words(&self) -> &[u64] {
        &self.words
    }

    /// Mutable storage words (copies borrowed storage first). Writers must keep every pad bit
    /// zero; [`BitTensor::check_padding`] verifies it.
    pub fn words_mut(&mut self) -> &mut [u64] {
        self.words.to_mut()
    }

    /// The words of row `i`.
    ///
    /// # Panics
    /// When `i >= self.rows()`.
    pub fn row(&self, i: usize) -> &[u64] {
        let wpr = self.words_per_row();
        &self.words[i * wpr..(i + 1) * wpr]
    }

    /// Whether the storage is borrowed from a file buffer (zero-copy).
    pub fn is_borrowed(&self) -> bool {
        matches!(self.words, Cow::Borrowed(_))
    }

    /// An owned copy (no-op for owned storage).
    pub fn into_owned(self) -> BitTensor<'static> {
        BitTensor {
            layout: self.layout,
            dims: self.dims,
            geometry: self.geometry,
            words: Cow::Owned(self.words.into_owned()),
        }
    }
}

pub(crate) fn check_len(
    tensor: &str,
    field: &'static str,
    expected: usize,
    got: usize,
) -> Result<()> {
    if expected == got {
        Ok(())
    } else {
        Err(BitpackError::LengthMismatch {
            tensor: tensor.to_string(),
            field,
            expected,
            got,
        })
    }
}

/// Packs the signs of `src` into `dst` (`dst.len() == ceil(src.len() / 64)`), overwriting
/// every word and zeroing pad bits, with the ISA of [`selected_isa`]. For callers that lay out
/// their own rows (e.g. an im2col buffer).
///
/// ```
/// let mut dst = [u64::MAX; 2];
/// bitpack::pack_signs(&[-1.0f32; 65], &mut dst).unwrap();
/// assert_eq!(dst, [u64::MAX, 1]);
/// ```
///
/// # Errors
/// [`BitpackError::LengthMismatch`] or the `XNOR_ISA` error.
pub fn pack_signs(src: &[f32], dst: &mut [u64]) -> Result<()> {
    pack_signs_with(selected_isa()?, src, dst)
}

/// [`pack_signs`] with an explicit ISA.
///
/// # Errors
/// [`BitpackError::LengthMismatch`] or [`BitpackError::IsaUnavailable`].
pub fn pack_signs_with(isa: Isa, src: &[f32], dst: &mut [u64]) -> Result<()> {
    let isa = isa.require("argument")?;
    check_len(
        "pack_signs",
        "dst",
        src.len().div_ceil(WORD_BITS),
        dst.len(),
    )?;
    pack_segment(isa, src, dst);
    Ok(())
}

/// Packs the signs of rows of `c` values each (`src.len()` a multiple of `c`) into rows of
/// `ceil(c / 64)` words, bit `j` of word `w` of a row being `row[64w + j] < 0.0` and the pad
/// bits beyond `c` zero: the NHWC activation layout of `c` channels. For `c` below 64 this
/// is one masked compare per row, where [`pack_signs`] per row would pay a call and an ISA
/// check for every pixel.
///
/// # Errors
/// [`BitpackError::LengthMismatch`] (`c == 0`, `src` not whole rows, `dst` not one row of
/// words per row) or [`BitpackError::IsaUnavailable`].
///
/// ```
/// // Two pixels of 3 channels: [+, -, -] and [-, +, +].
/// let mut dst = [0u64; 2];
/// bitpack::pack_sign_rows(&[1.0, -2.0, -0.5, -1.0, 0.0, 3.0], 3, &mut dst).unwrap();
/// assert_eq!(dst, [0b110, 0b001]);
/// ```
pub fn pack_sign_rows(src: &[f32], c: usize, dst: &mut [u64]) -> Result<()> {
    pack_sign_rows_with(selected_isa()?, src, c, dst)
}

/// [`pack_sign_rows`] with an explicit ISA.
///
/// # Errors
/// As [`pack_sign_rows`].
pub fn pack_sign_rows_with(isa: Isa, src: &[f32], c: usize, dst: &mut [u64]) -> Result<()> {
    let isa = isa.require("argument")?;
    if c == 0 || !src.len().is_multiple_of(c) {
        // `src` must be whole rows: report the next whole number of rows (at least one).
        return Err(BitpackError::LengthMismatch {
            tensor: format!("pack_sign_rows (rows of c = {c})"),
            field: "src",
            expected: src.len().div_ceil(c.max(1)).max(1) * c.max(1),
            got: src.len(),
        });
    }
    let cw = c.div_ceil(WORD_BITS);
    check_len("pack_sign_rows", "dst", src.len() / c * cw, dst.len())?;
    match isa {
        #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
        Isa::Avx512 if c < WORD_BITS => {
            // SAFETY: `require` checked AVX-512F; src holds whole rows of c values and dst one
            // word per row (checked above).
            unsafe { x86::pack_rows_avx512(src, c, dst) }
        }
        _ if c.is_multiple_of(WORD_BITS) => pack_segment(isa, src, dst),
        _ => {
            for (row, d) in src.chunks_exact(c).zip(dst.chunks_exact_mut(cw)) {
                pack_segment(isa, row, d);
            }
        }
    }
    Ok(())
}

/// `isa` must be available and `dst.len() == ceil(src.len() / 64)`.
fn pack_segment(isa: Isa, src: &[f32], dst: &mut [u64]) {
    debug_assert_eq!(dst.len(), src.len().div_ceil(WORD_BITS));
    match isa {
        #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
        Isa::Avx512 => {
            // SAFETY: callers pass an ISA checked by `Isa::require`, so AVX-512F is present.
            unsafe { x86::pack_avx512(src, dst) }
        }
        #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
        Isa::Avx2 => {
            // SAFETY: callers pass an ISA checked by `Isa::require`, so AVX2 is present.
            unsafe { x86::pack_avx2(src, dst) }
        }
        // NEON (and anything not compiled for this target) uses the portable loop, which the
        // compiler auto-vectorises well enough for a packing pass.
        _ => pack_scalar(src, dst),
    }
}

/// The reference packer: bit `j` of word `w` is `src[64w + j] < 0.0`.
fn pack_scalar(src: &[f32], dst: &mut [u64]) {
    for (chunk, d) in src.chunks(WORD_BITS).zip(dst.iter_mut()) {
        let mut w = 0u64;
        for (j, &x) in chunk.iter().enumerate() {
            w |= u64::from(x < 0.0) << j;
        }
        *d = w;
    }
}

#[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
mod x86 {
    #[cfg(target_arch = "x86")]
    use std::arch::x86::*;
    #[cfg(target_arch = "x86_64")]
    use std::arch::x86_64::*;

    use super::WORD_BITS;

    /// AVX-512: one `vcmpps` (`_CMP_LT_OQ`, false for NaN) gives 16 bits, four give a word;
    /// the tail uses masked loads, whose masked-off lanes read as 0.0 and so pack as zero pad
    /// bits.
    ///
    /// # Safety
    /// The CPU must support AVX-512F, and `dst.len() == ceil(src.len() / 64)`.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn pack_avx512(src: &[f32], dst: &mut [u64]) {
        let zero = _mm512_setzero_ps();
        let mut chunks = src.chunks_exact(WORD_BITS);
        for (chunk, d) in chunks.by_ref().zip(dst.iter_mut()) {
            let p = chunk.as_ptr();
            // SAFETY: `chunk` holds exactly 64 readable f32 values, read as four 16-lane loads.
            let (a, b, c, e) = unsafe {
                (
                    _mm512_loadu_ps(p),
                    _mm512_loadu_ps(p.add(16)),
                    _mm512_loadu_ps(p.add(32)),
                    _mm512_loadu_ps(p.add(48)),
                )
            };
            let m0 = u64::from(_mm512_cmp_ps_mask::<_CMP_LT_OQ>(a, zero));
            let m1 = u64::from(_mm512_cmp_ps_mask::<_CMP_LT_OQ>(b, zero));
            let m2 = u64::from(_mm512_cmp_ps_mask::<_CMP_LT_OQ>(c, zero));
            let m3 = u64::from(_mm512_cmp_ps_mask::<_CMP_LT_OQ>(e, zero));
            *d = m0 | m1 << 16 | m2 << 32 | m3 << 48;
        }
        let tail = chunks.remainder();
        if let Some(d) = dst.last_mut().filter(|_| !tail.is_empty()) {
            let mut word = 0u64;
            for (q, part) in tail.chunks(16).enumerate() {
                let k: __mmask16 = (((1u32 << part.len()) - 1) & 0xffff) as u16;
                // SAFETY: the mask enables only the `part.len()` lanes that lie inside `part`;
                // masked-off lanes are not accessed.
                let x = unsafe { _mm512_maskz_loadu_ps(k, part.as_ptr()) };
                let m = _mm512_mask_cmp_ps_mask::<_CMP_LT_OQ>(k, x, zero);
                word |= u64::from(m) << (16 * q);
            }
            *d = word;
        }
    }

    /// AVX-512, rows of `c < 64` values: per row up to four masked loads and compares
    /// (`_CMP_LT_OQ`) into one word; masked-off lanes pack as zero pad bits.
    ///
    /// # Safety
    /// The CPU must support AVX-512F; `0 < c < 64`, `src.len()` a multiple of `c` and
    /// `dst.len() == src.len() / c`.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn pack_rows_avx512(src: &[f32], c: usize, dst: &mut [u64]) {
        let zero = _mm512_setzero_ps();
        let parts = c.div_ceil(16);
        let last: __mmask16 = (((1u32 << (c - 16 * (parts - 1))) - 1) & 0xffff) as u16;
        for (row, d) in src.chunks_exact(c).zip(dst.iter_mut()) {
            let mut word = 0u64;
            for q in 0..parts {
                let k = if q + 1 == parts { last } else { 0xffff };
                // SAFETY: the mask enables only lanes inside the row (16q + 16 <= c for the
                // full parts, c - 16q lanes for the last); masked-off lanes are not accessed.
                let x = unsafe { _mm512_maskz_loadu_ps(k, row.as_ptr().add(16 * q)) };
                word |= u64::from(_mm512_mask_cmp_ps_mask::<_CMP_LT_OQ>(k, x, zero)) << (16 * q);
            }
            *d = word;
        }
    }

    /// AVX2: `vcmpps` (`_CMP_LT_OQ`) + `vmovmskps` gives 8 bits per step; the tail of fewer
    /// than 8 elements is packed by the scalar rule.
    ///
    /// # Safety
    /// The CPU must support AVX2, and `dst.len() == ceil(src.len() / 64)`.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn pack_avx2(src: &[f32], dst: &mut [u64]) {
        let zero = _mm256_setzero_ps();
        for (chunk, d) in src.chunks(WORD_BITS).zip(dst.iter_mut()) {
            let mut word = 0u64;
            let mut eights = chunk.chunks_exact(8);
            for (q, e) in eights.by_ref().enumerate() {
                // SAFETY: `e` has exactly 8 readable f32 values.
                let x = unsafe { _mm256_loadu_ps(e.as_ptr()) };
                let m = _mm256_movemask_ps(_mm256_cmp_ps::<_CMP_LT_OQ>(x, zero));
                word |= u64::from(m as u32 & 0xff) << (8 * q);
            }
            let done = chunk.len() - eights.remainder().len();
            for (j, &x) in eights.remainder().iter().enumerate() {
                word |= u64::from(x < 0.0) << (done + j);
            }
            *d = word;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scalar_packs_lsb_first() {
        let mut x = vec![1.0f32; 130];
        x[0] = -1.0;
        x[63] = -2.0;
        x[64] = -0.5;
        x[129] = f32::NEG_INFINITY;
        let mut dst = [0u64; 3];
        pack_scalar(&x, &mut dst);
        assert_eq!(dst, [1 | 1 << 63, 1, 1 << 1]);
    }

    #[test]
    fn every_isa_matches_scalar_on_special_values() {
        let specials = [
            0.0f32,
            -0.0,
            f32::NAN,
            -f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::MIN_POSITIVE,
            -f32::MIN_POSITIVE,
            -1e-45,
            1.0,
            -1.0,
        ];
        for len in [0usize, 1, 7, 8, 9, 15, 16, 17, 63, 64, 65, 127, 128, 1000] {
            let src: Vec<f32> = (0..len)
                .map(|i| specials[(i * 7 + len) % specials.len()])
                .collect();
            let mut want = vec![0u64; len.div_ceil(64)];
            pack_scalar(&src, &mut want);
            for isa in Isa::available() {
                let mut got = vec![u64::MAX; len.div_ceil(64)];
                pack_signs_with(isa, &src, &mut got).unwrap();
                assert_eq!(got, want, "isa {isa}, len {len}");
            }
        }
    }

    #[test]
    fn negative_zero_and_nan_are_plus_one() {
        let t = BitTensor::from_f32_with(
            Isa::Scalar,
            Layout::RowMajor,
            &[1, 4],
            &[-0.0, f32::NAN, -f32::NAN, -1.0],
        )
        .unwrap();
        assert_eq!(t.to_signs_i8(), vec![1, 1, 1, -1]);
    }
}
