//! Logical layouts (`Nhwc`, `Ohwi`, `RowMajor`) and the row/segment geometry they imply.
//!
//! Every packed tensor is a sequence of *rows*; each row is a sequence of *segments*; each
//! segment holds `segment_len` logical elements and is padded on its own (to whole `u64` words
//! for 1-bit data, to a multiple of [`INT8_SEGMENT_ALIGN`] bytes for int8 levels):
//!
//! | [`Layout`] | logical dims | rows | segments per row | segment_len |
//! |---|---|---|---|---|
//! | `RowMajor` | `[rows, k]` | `rows` | 1 | `k` |
//! | `Nhwc` (activations) | `[n, h, w, c]` | `n*h*w` (one pixel each) | 1 | `c` |
//! | `Ohwi` (conv weights) | `[o, kh, kw, i]` | `o` (one output channel each) | `kh*kw` (one tap each) | `i` |
//!
//! Padding each `Ohwi` tap separately makes a weight tap line up word for word with one
//! activation pixel of the same channel count, so a direct convolution can XOR a tap against a
//! pixel without shifting bits. The logical (unpadded) element order is plain row-major over
//! the logical dims, so logical flat index `((row * segments) + s) * segment_len + e` is element
//! `e` of segment `s` of row `row`.

use std::fmt;
use std::str::FromStr;

use crate::error::{BitpackError, Result};

/// Bits per storage word of a 1-bit tensor.
pub const WORD_BITS: usize = 64;

/// Int8 segments are zero-padded to a multiple of this many bytes: VNNI (`vpdpbusd`) consumes
/// int8 values in groups of 4 per 32-bit lane, so a kernel may always read whole groups of 4.
/// Four (rather than a full 64-byte vector) keeps small channel counts compact (3 input
/// channels take 4 bytes, not 64); kernels handle the tail of a segment with masked loads.
pub const INT8_SEGMENT_ALIGN: usize = 4;

/// How a tensor's logical dims map to rows and segments; see the [module docs](self).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Layout {
    /// 2-D `[rows, k]`: each row is one segment of `k` elements (GEMM operands).
    RowMajor,
    /// 4-D activations `[n, h, w, c]`: one row (and one segment) per pixel, channels innermost.
    Nhwc,
    /// 4-D conv weights `[o, kh, kw, i]`: one row per output channel, one segment per tap.
    Ohwi,
}

/// The names accepted by [`Layout::from_str`].
pub const LAYOUT_NAMES: &[&str] = &["row-major", "nhwc", "ohwi"];

impl Layout {
    /// The short name used in files: `"row-major"`, `"nhwc"` or `"ohwi"`.
    pub fn name(self) -> &'static str {
        match self {
            Layout::RowMajor => "row-major",
            Layout::Nhwc => "nhwc",
            Layout::Ohwi => "ohwi",
        }
    }

    /// The number of logical dims this layout takes (2 or 4).
    pub fn rank(self) -> usize {
        match self {
            Layout::RowMajor => 2,
            Layout::Nhwc | Layout::Ohwi => 4,
        }
    }

    /// The row/segment geometry of `dims` in this layout.
    ///
    /// # Errors
    /// [`BitpackError::InvalidShape`] (naming `tensor`) when `dims` has the wrong rank or its
    /// element count overflows `usize` (including the padded storage size).
    ///
    /// ```
    /// use bitpack::{Geometry, Layout};
    /// let g = Layout::Ohwi.geometry("w", &[16, 3, 3, 65]).unwrap();
    /// assert_eq!(g, Geometry { rows: 16, segments: 9, segment_len: 65 });
    /// assert_eq!(g.words_per_segment(), 2);
    /// assert_eq!(g.words_per_row(), 18);
    /// ```
    pub fn geometry(self, tensor: &str, dims: &[usize]) -> Result<Geometry> {
        let bad = |reason| BitpackError::InvalidShape {
            tensor: tensor.to_string(),
            shape: dims.to_vec(),
            reason,
        };
        if dims.len() != self.rank() {
            return Err(bad(match self {
                Layout::RowMajor => "layout row-major needs 2 dims [rows, k]",
                Layout::Nhwc => "layout nhwc needs 4 dims [n, h, w, c]",
                Layout::Ohwi => "layout ohwi needs 4 dims [o, kh, kw, i]",
            }));
        }
        let product = |d: &[usize]| d.iter().try_fold(1usize, |a, &b| a.checked_mul(b));
        let overflow = || bad("element count overflows usize");
        let g = match self {
            Layout::RowMajor => Geometry {
                rows: dims[0],
                segments: 1,
                segment_len: dims[1],
            },
            Layout::Nhwc => Geometry {
                rows: product(&dims[..3]).ok_or_else(overflow)?,
                segments: 1,
                segment_len: dims[3],
            },
            Layout::Ohwi => Geometry {
                rows: dims[0],
                segments: product(&dims[1..3]).ok_or_else(overflow)?,
                segment_len: dims[3],
            },
        };
        // Every size derived later must be representable, in elements and in bytes.
        let storage_bytes = g
            .checked_words_per_row()
            .and_then(|w| w.checked_mul(g.rows))
            .and_then(|w| w.checked_mul(8));
        let int8_bytes = g
            .checked_int8_row_stride()
            .and_then(|s| s.checked_mul(g.rows));
        let len = product(dims);
        if storage_bytes.is_none() || int8_bytes.is_none() || len.is_none() {
            return Err(overflow());
        }
        Ok(g)
    }
}

impl fmt::Display for Layout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Layout {
    type Err = BitpackError;

    fn from_str(s: &str) -> Result<Layout> {
        [Layout::RowMajor, Layout::Nhwc, Layout::Ohwi]
            .into_iter()
            .find(|l| l.name() == s)
            .ok_or_else(|| BitpackError::BadMetadata {
                tensor: String::new(),
                key: "layout".to_string(),
                value: s.to_string(),
                reason: format!("valid layouts are: {}", LAYOUT_NAMES.join(", ")),
            })
    }
}

/// Rows, segments per row and logical elements per segment; see the [module docs](self).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Geometry {
    /// Number of rows (pixels for `Nhwc`, output channels for `Ohwi`).
    pub rows: usize,
    /// Segments per row (taps for `Ohwi`, else 1).
    pub segments: usize,
    /// Logical elements per segment (channels, or `k` for `RowMajor`).
    pub segment_len: usize,
}

impl Geometry {
    /// Logical elements per row: `segments * segment_len`.
    pub fn row_len(&self) -> usize {
        self.segments * self.segment_len
    }

    /// Logical elements in the whole tensor.
    pub fn len(&self) -> usize {
        self.rows * self.row_len()
    }

    /// Whether the tensor has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `u64` words per segment of a 1-bit tensor: `ceil(segment_len / 64)`.
    pub fn words_per_segment(&self) -> usize {
        self.segment_len.div_ceil(WORD_BITS)
    }

    /// `u64` words per row of a 1-bit tensor: `segments * words_per_segment`.
    pub fn words_per_row(&self) -> usize {
        self.segments * self.words_per_segment()
    }

    /// Total `u64` words of a 1-bit tensor.
    pub fn words(&self) -> usize {
        self.rows * self.words_per_row()
    }

    /// Bytes per segment of an int8 tensor: `segment_len` rounded up to
    /// [`INT8_SEGMENT_ALIGN`].
    pub fn int8_segment_stride(&self) -> usize {
        self.segment_len.next_multiple_of(INT8_SEGMENT_ALIGN)
    }

    /// Bytes per row of an int8 tensor: `segments * int8_segment_stride`.
    pub fn int8_row_stride(&self) -> usize {
        self.segments * self.int8_segment_stride()
    }

    /// Total bytes of an int8 tensor.
    pub fn int8_len(&self) -> usize {
        self.rows * self.int8_row_stride()
    }

    fn checked_words_per_row(&self) -> Option<usize> {
        self.segments
            .checked_mul(self.segment_len.div_ceil(WORD_BITS))
    }

    fn checked_int8_row_stride(&self) -> Option<usize> {
        self.segment_len
            .checked_next_multiple_of(INT8_SEGMENT_ALIGN)?
            .checked_mul(self.segments)
    }
}
