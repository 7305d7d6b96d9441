//! XNOR/AND-popcount and int8 kernels for packed MINW-Nets (planned; see issue "bitpack and
//! xnor-kernels").
//!
//! **Status: not implemented yet.** This crate currently exports nothing.
//!
//! # Role
//! Arithmetic on [`bitpack`] tensors: binary GEMM (`K - 2 * popcount(a ^ w)`), binary conv2d,
//! exact int8 paths for 2-3 bit layers, fused output transforms (BatchNorm + next sign as an
//! integer threshold writing packed bits), packed max-pool.
//!
//! # Planned public API
//! - `selected_isa()`: the instruction set chosen once at run time (AVX-512 VPOPCNTDQ, AVX2,
//!   scalar, NEON), overridable with `XNOR_ISA=scalar|avx2|avx512` (an error when the CPU lacks it).
//! - Kernels per ISA beside an always-compiled scalar reference that is the test oracle.
