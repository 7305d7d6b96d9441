//! Packed 1-3 bit tensor storage for MINW-Nets: packing, layouts and a versioned safetensors format.
//!
//! Storage only: packing from `f32`, unpacking, layouts, run-time ISA choice and the file
//! format. No arithmetic beyond pack/unpack; the kernels live in `xnor-kernels`.
//!
//! # Conventions (fixed project-wide)
//! - **1-bit values** ([`BitTensor`]): `+1` is bit 0, `-1` is bit 1 (bit = "is negative", Larq
//!   Compute Engine's convention). Packing from `f32` tests `x < 0.0`, so `+0.0`, `-0.0` and NaN
//!   pack as `+1` (matching aqe-core's `sign(0) = +1`); the raw float sign bit is never read.
//! - **Words**: element `j` of a `u64` word is bit `j` (LSB first); word `w` of a segment holds
//!   elements `64w .. 64w + 63`.
//! - **Rows and segments** ([`layout`]): `RowMajor [rows, k]` has one segment of `k` per row;
//!   `Nhwc [n, h, w, c]` has one row (one segment) per pixel; `Ohwi [o, kh, kw, i]` has one row
//!   per output channel and one segment per `(kh, kw)` tap. Each segment starts on a fresh
//!   word (1-bit: `ceil(len / 64)` words) or a fresh 4-byte group (int8), so a weight tap lines
//!   up with an activation pixel.
//! - **Pad bits and pad bytes are zero** in every packed tensor, so `K - 2 * popcount(a ^ w)`
//!   over padded words (and int8 dot products over padded segments) are exact for the logical
//!   length `K`. Constructors and the file loader enforce it.
//! - **2-3 bit values** ([`Int8Tensor`]) are int8 levels `q` with real value `q * scale`:
//!   ternary `{-1, 0, 1}` (scale 1), pow2 `{0, ±1, ±2, ±4}` (pow2 levels times 4, scale 1/4),
//!   and, for M-bit activations, aqe-core's `uniform:K` (odd integers up to `2^K - 1`, `K` in
//!   2..=7). Int8 segments are zero-padded to a multiple of 4 bytes (one VNNI group). Files may
//!   store them as dense K-bit codes ([`file::MultiBitStorage`]); ternary also converts to a
//!   sign plane plus a non-zero plane.
//! - **ISA**: [`selected_isa`] decides once per process (override: `XNOR_ISA`); forcing an ISA
//!   the CPU lacks is an error, never a silent fallback.
//!
//! ```
//! use bitpack::{BitTensor, Layout, file::{load_tensors, to_bytes, PackedTensor, SaveOptions}};
//! // One 3x3 conv weight with 65 input channels: each tap takes 2 words.
//! let values: Vec<f32> = (0..2 * 9 * 65).map(|i| if i % 3 == 0 { -1.0 } else { 0.5 }).collect();
//! let w = BitTensor::from_f32(Layout::Ohwi, &[2, 3, 3, 65], &values).unwrap();
//! assert_eq!((w.words_per_segment(), w.words_per_row()), (2, 18));
//! assert_eq!(w.row(0)[1] >> 1, 0); // element 64 of tap 0 is the last; pad bits are zero
//! let bytes = to_bytes(&[("conv", &PackedTensor::from(w.clone()))], &Default::default(), SaveOptions::default()).unwrap();
//! assert_eq!(load_tensors(&bytes).unwrap().bits("conv").unwrap(), &w);
//! ```

#![deny(missing_docs)]

// The README's example runs as a doctest too.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

pub mod bits;
pub mod error;
pub mod file;
pub mod isa;
pub mod layout;
pub mod levels;

pub use bits::{BitTensor, pack_sign_rows, pack_sign_rows_with, pack_signs, pack_signs_with};
pub use error::{BitpackError, Result};
pub use file::{PackedFile, PackedTensor, load_tensors, save_tensors};
pub use isa::{Isa, selected_isa};
pub use layout::{Geometry, INT8_SEGMENT_ALIGN, Layout, WORD_BITS};
pub use levels::{Int8Tensor, LevelSet};
