//! Packed 1-3 bit tensor storage for MINW-Nets (planned; see issue "bitpack and xnor-kernels").
//!
//! **Status: not implemented yet.** This crate currently exports nothing.
//!
//! # Role
//! Storage only: packing from `f32`, unpacking, layouts and the file format. No arithmetic
//! beyond pack/unpack.
//!
//! # Planned public API
//! - 1-bit sign planes (bit = 1 means -1), ternary as sign + non-zero planes or int8 codes,
//!   3-bit power-of-two codes and M-bit activations, channel-innermost and padded to the SIMD
//!   word with zeroed pad bits.
//! - SIMD packing from `f32` with run-time dispatch, and unpacking.
//! - Serialisation inside safetensors with a `__metadata__` block (format version, bit widths,
//!   logical shape, layout) and zero-copy, validating loads.
