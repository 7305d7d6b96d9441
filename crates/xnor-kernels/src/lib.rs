//! XNOR-popcount and int8 kernels (GEMM, conv2d, fused output transforms, max-pool) for packed
//! low-bit networks, with run-time ISA dispatch.
//!
//! # Conventions (shared with [`bitpack`])
//! - 1-bit: `+1 <-> bit 0`, `-1 <-> bit 1`; element `j` of a `u64` word is bit `j`; a row of
//!   `K` elements is `ceil(K / 64)` words with **zero pad bits**, so
//!   `dot(a, w) = K - 2 * popcount(a ^ w)` over the padded words is exact.
//! - Activations NHWC (each pixel's channels packed), conv weights OHWI (taps row-major, each
//!   tap `ceil(Cin / 64)` words).
//! - 2-3 bit layers run on int8 integer levels with exact `i32` accumulation; int8 rows are
//!   padded with zero bytes to a multiple of 4.
//! - Zero padding in convs contributes exactly 0 ([`PadMode::Zero`]); [`PadMode::One`] pads
//!   with +1 and is cheaper.
//!
//! # Dispatch
//! Every entry point has a `*_with(isa, ...)` variant taking an explicit [`Isa`] (an error if
//! the CPU lacks it); the plain variant uses [`selected_isa`], decided once per process and
//! overridable with `XNOR_ISA=scalar|avx2|avx512`. [`Isa::Avx512`] uses VPOPCNTQ for binary
//! kernels and VNNI for int8 when the CPU has it (else the AVX2 int8 kernel); [`Isa::Neon`]
//! (aarch64) runs NEON GEMM kernels (`vcnt` popcounts, widening int8 multiplies) under the same
//! convs and output transforms.
//!
//! ```
//! use xnor_kernels::{binary_gemm_with, reference, BinaryWeights, Isa, Output};
//! let (m, n, k) = (3, 5, 100);
//! let a: Vec<u64> = (0..m * 2).map(|i| if i % 2 == 1 { i as u64 & 0xf } else { !0 }).collect();
//! let w_rows: Vec<u64> = (0..n * 2).map(|i| if i % 2 == 1 { 0x5 } else { i as u64 * 77 }).collect();
//! let w = BinaryWeights::new(&w_rows, n, k).unwrap();
//! let mut want = vec![0; m * n];
//! reference::binary_gemm(&a, &w_rows, m, n, k, &mut want);
//! for isa in Isa::available() {
//!     let mut got = vec![0; m * n];
//!     binary_gemm_with(isa, &a, &w, m, Output::I32(&mut got)).unwrap();
//!     assert_eq!(got, want);
//! }
//! ```

#![deny(missing_docs)]

// The README's example runs as a doctest too.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

// The micro-tile dispatch shared by the x86 and NEON kernels (defined before the modules that
// use it).
/// Calls `$f::<MR, NV>($args)` for run-time `mr` in 1..=4 and `nv` in 1..=4, or `mr` in
/// 5..=8 with `nv` in 1..=2.
#[allow(unused_macros)]
macro_rules! dispatch_tile {
    ($f:ident, $mr:expr, $nv:expr, $($arg:expr),* $(,)?) => {
        match ($mr, $nv) {
            (8, 2) => $f::<8, 2>($($arg),*),
            (8, 1) => $f::<8, 1>($($arg),*),
            (7, 2) => $f::<7, 2>($($arg),*),
            (7, 1) => $f::<7, 1>($($arg),*),
            (6, 2) => $f::<6, 2>($($arg),*),
            (6, 1) => $f::<6, 1>($($arg),*),
            (5, 2) => $f::<5, 2>($($arg),*),
            (5, 1) => $f::<5, 1>($($arg),*),
            (4, 4) => $f::<4, 4>($($arg),*),
            (4, 3) => $f::<4, 3>($($arg),*),
            (4, 2) => $f::<4, 2>($($arg),*),
            (4, 1) => $f::<4, 1>($($arg),*),
            (3, 4) => $f::<3, 4>($($arg),*),
            (3, 3) => $f::<3, 3>($($arg),*),
            (3, 2) => $f::<3, 2>($($arg),*),
            (3, 1) => $f::<3, 1>($($arg),*),
            (2, 4) => $f::<2, 4>($($arg),*),
            (2, 3) => $f::<2, 3>($($arg),*),
            (2, 2) => $f::<2, 2>($($arg),*),
            (2, 1) => $f::<2, 1>($($arg),*),
            (1, 4) => $f::<1, 4>($($arg),*),
            (1, 3) => $f::<1, 3>($($arg),*),
            (1, 2) => $f::<1, 2>($($arg),*),
            (1, 1) => $f::<1, 1>($($arg),*),
            _ => unreachable!("unsupported tile size"),
        }
    };
}

mod binary;
mod conv;
pub mod epilogue;
pub mod error;
mod int8;
#[cfg(target_arch = "aarch64")]
mod neon;
pub mod pool;
pub mod reference;
#[cfg(target_arch = "x86_64")]
mod x86;

pub use binary::{BinaryWeights, binary_gemm, binary_gemm_with};
pub use bitpack::isa::{Isa, has_avx_vnni, has_avx512_vnni, selected_isa};
pub use conv::{BinaryConv2d, Conv2dConfig, Int8Conv2d, PadMode};
pub use epilogue::{Direction, LevelThresholds, Output, ROW_BLOCK, Thresholds};
pub use error::{KernelError, Result};
pub use int8::{INT8_ACT_RANGE, Int8Weights, MAX_INT8_K, int8_gemm, int8_gemm_with};
pub use pool::{maxpool2x2_i32, maxpool2x2_packed};

/// Peak-measurement loops for benchmarks (not kernels).
pub mod peak {
    /// Binary MACs per second of the in-register XOR + VPOPCNTQ + ADD loop on this thread, or
    /// `None` without AVX-512 VPOPCNTDQ. Runs `iters * 12` XOR + VPOPCNTQ + ADD triples.
    pub fn popcount_macs_per_sec(iters: u64) -> Option<f64> {
        #[cfg(target_arch = "x86_64")]
        if crate::Isa::Avx512.is_available() {
            let t = std::time::Instant::now();
            // SAFETY: AVX-512 with VPOPCNTDQ was checked just above.
            let r = unsafe { crate::x86::avx512::popcount_peak_loop(iters, 0x9e37_79b9) };
            let s = t.elapsed().as_secs_f64();
            std::hint::black_box(r);
            return Some((iters * crate::x86::avx512::PEAK_CHAINS as u64 * 512) as f64 / s);
        }
        let _ = iters;
        None
    }

    /// Int8 MACs per second of the in-register VNNI `vpdpbusd` loop, or `None` without
    /// AVX-512 VNNI.
    pub fn vnni_macs_per_sec(iters: u64) -> Option<f64> {
        #[cfg(target_arch = "x86_64")]
        if crate::has_avx512_vnni() {
            let t = std::time::Instant::now();
            // SAFETY: AVX-512 with VNNI was checked just above.
            let r = unsafe { crate::x86::avx512::vnni_peak_loop(iters, 0x0102_0304) };
            let s = t.elapsed().as_secs_f64();
            std::hint::black_box(r);
            return Some((iters * 16 * 64) as f64 / s);
        }
        let _ = iters;
        None
    }
}
