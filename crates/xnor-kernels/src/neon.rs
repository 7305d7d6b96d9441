//! NEON kernels (aarch64): binary GEMM rows with `vcnt` popcounts and exact int8 GEMM rows
//! with widening multiplies.
//!
//! Both read the plain row layouts (`BinaryWeights` / `Int8Weights` rows: `n` rows of `kw`
//! words or `s` bytes) and compute micro-tiles of up to 4 activation rows x 4 weight rows, so
//! every loaded vector serves four dot products.
//!
//! - **Binary**: per 128 bits, `vcntq_u8(a ^ w)` gives 16 byte counts (at most 8 each) that
//!   `vpadalq_u8` adds pairwise into 8 `u16` lanes (at most 16 per lane per step); the lanes
//!   are folded into a `u32` total every [`FLUSH`] steps, so no lane overflows for any `K`. The
//!   result is `K - 2 * popcount`, exact with zero pad bits.
//! - **Int8**: per 16 bytes, `vmull_s8` / `vmull_high_s8` give 16 exact `i16` products (at most
//!   `64 * 128` in magnitude: activations lie in `[-64, 64]`), which `vpadalq_s16` adds
//!   pairwise into 4 `i32` lanes; an 8-byte step and a scalar 4-byte tail cover rows whose
//!   stride is not a multiple of 16. Exact `i32` dot products, no offsets.

use std::arch::aarch64::*;

/// Calls `f(r, mr, j, nr)` for the `4 x 4` tiles (with 1-3 row / column tails) of a
/// `rows x n` output.
#[inline(always)]
fn for_tiles(rows: usize, n: usize, mut f: impl FnMut(usize, usize, usize, usize)) {
    let mut r = 0;
    while r < rows {
        let mr = (rows - r).min(4);
        let mut j = 0;
        while j < n {
            let nr = (n - j).min(4);
            f(r, mr, j, nr);
            j += nr;
        }
        r += mr;
    }
}

/// `u16` steps (128 bits each) before the binary accumulators are folded into `u32`: each step
/// adds at most 16 to a lane, `4096 * 16 = 65536` would overflow, so fold before that.
const FLUSH: usize = 4000;

/// Binary micro-tile: `MR` rows of `a` (stride `kw` words) x `NR` rows of `w` (stride `kw`),
/// writing `k - 2 * popcount(a_i ^ w_j)` at `out[i * out_stride + j]`.
///
/// # Safety
/// NEON must be available (always on aarch64); `a` valid for `MR` rows and `w` for `NR` rows of
/// `kw` words, `out` for `MR` rows of `NR` values at stride `out_stride`.
#[target_feature(enable = "neon")]
unsafe fn binary_tile<const MR: usize, const NR: usize>(
    a: *const u64,
    w: *const u64,
    kw: usize,
    k: i32,
    out: *mut i32,
    out_stride: usize,
) {
    let mut total = [[0u32; NR]; MR];
    let mut acc = [[vdupq_n_u16(0); NR]; MR];
    let pairs = kw / 2;
    let mut steps = 0;
    for q in 0..pairs {
        // SAFETY: words 2q, 2q + 1 < kw of every row are in bounds (caller's contract).
        let av: [uint64x2_t; MR] =
            std::array::from_fn(|i| unsafe { vld1q_u64(a.add(i * kw + 2 * q)) });
        // SAFETY: the same words / bytes of the weight rows are in bounds.
        let wv: [uint64x2_t; NR] =
            std::array::from_fn(|j| unsafe { vld1q_u64(w.add(j * kw + 2 * q)) });
        for (acc_i, &ai) in acc.iter_mut().zip(&av) {
            for (acc_ij, &wj) in acc_i.iter_mut().zip(&wv) {
                let c = vcntq_u8(vreinterpretq_u8_u64(veorq_u64(ai, wj)));
                *acc_ij = vpadalq_u8(*acc_ij, c);
            }
        }
        steps += 1;
        if steps == FLUSH {
            fold(&mut total, &mut acc);
            steps = 0;
        }
    }
    if kw % 2 == 1 {
        // The last word alone: a 64-bit count widened into the same accumulators.
        let kk = kw - 1;
        // SAFETY: word kw - 1 of every row is in bounds (caller's contract).
        let av: [uint64x1_t; MR] = std::array::from_fn(|i| unsafe { vld1_u64(a.add(i * kw + kk)) });
        // SAFETY: the same words / bytes of the weight rows are in bounds.
        let wv: [uint64x1_t; NR] = std::array::from_fn(|j| unsafe { vld1_u64(w.add(j * kw + kk)) });
        for (acc_i, &ai) in acc.iter_mut().zip(&av) {
            for (acc_ij, &wj) in acc_i.iter_mut().zip(&wv) {
                let c = vcnt_u8(vreinterpret_u8_u64(veor_u64(ai, wj)));
                *acc_ij = vaddq_u16(*acc_ij, vmovl_u8(c));
            }
        }
    }
    fold(&mut total, &mut acc);
    for (i, t_i) in total.iter().enumerate() {
        for (j, &t) in t_i.iter().enumerate() {
            // SAFETY: out row i, column j is in bounds (caller's contract).
            unsafe { out.add(i * out_stride + j).write(k - 2 * t as i32) };
        }
    }
}

/// Adds every `u16` accumulator's lanes to its `u32` total and clears it.
#[inline(always)]
fn fold<const MR: usize, const NR: usize>(
    total: &mut [[u32; NR]; MR],
    acc: &mut [[uint16x8_t; NR]; MR],
) {
    for (t_i, acc_i) in total.iter_mut().zip(acc.iter_mut()) {
        for (t, a) in t_i.iter_mut().zip(acc_i.iter_mut()) {
            // SAFETY: NEON is always available on aarch64.
            unsafe {
                *t += vaddlvq_u16(*a);
                *a = vdupq_n_u16(0);
            }
        }
    }
}

/// Binary rows: `rows` rows of `a` (stride `kw`) against the `n` rows of `w`, into `acc`
/// (row stride `acc_stride >= n`), in 4 x 4 tiles with 1-3 row / column tails.
///
/// # Safety
/// NEON must be available; `a` valid for `rows * kw` words, `w` for `n * kw`, `acc` for
/// `rows * acc_stride` values.
#[target_feature(enable = "neon")]
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn binary_rows(
    a: *const u64,
    kw: usize,
    rows: usize,
    k: i32,
    w: *const u64,
    n: usize,
    acc: *mut i32,
    acc_stride: usize,
) {
    for_tiles(rows, n, |r, mr, j, nr| {
        // SAFETY: rows r .. r + mr and weight rows j .. j + nr are in bounds (caller's
        // contract).
        unsafe {
            let (ap, wp, op) = (a.add(r * kw), w.add(j * kw), acc.add(r * acc_stride + j));
            dispatch_tile!(binary_tile, mr, nr, ap, wp, kw, k, op, acc_stride);
        }
    });
}

/// Int8 micro-tile: exact `sum(a_i * w_j)` over `s` bytes (a multiple of 4) of `MR` rows of
/// `a` and `NR` rows of `w`, written at `out[i * out_stride + j]`.
///
/// # Safety
/// NEON must be available; `a` valid for `MR` rows and `w` for `NR` rows of `s` bytes; `out`
/// for `MR` rows of `NR` values at stride `out_stride`; activations in `[-64, 64]`.
#[target_feature(enable = "neon")]
unsafe fn int8_tile<const MR: usize, const NR: usize>(
    a: *const i8,
    w: *const i8,
    s: usize,
    out: *mut i32,
    out_stride: usize,
) {
    let mut acc = [[vdupq_n_s32(0); NR]; MR];
    let mut g = 0;
    while g + 16 <= s {
        // SAFETY: bytes g .. g + 16 of every row are in bounds (caller's contract).
        let av: [int8x16_t; MR] = std::array::from_fn(|i| unsafe { vld1q_s8(a.add(i * s + g)) });
        // SAFETY: the same words / bytes of the weight rows are in bounds.
        let wv: [int8x16_t; NR] = std::array::from_fn(|j| unsafe { vld1q_s8(w.add(j * s + g)) });
        for (acc_i, &ai) in acc.iter_mut().zip(&av) {
            for (acc_ij, &wj) in acc_i.iter_mut().zip(&wv) {
                let lo = vmull_s8(vget_low_s8(ai), vget_low_s8(wj));
                let hi = vmull_high_s8(ai, wj);
                *acc_ij = vpadalq_s16(vpadalq_s16(*acc_ij, lo), hi);
            }
        }
        g += 16;
    }
    if g + 8 <= s {
        // SAFETY: bytes g .. g + 8 of every row are in bounds.
        let av: [int8x8_t; MR] = std::array::from_fn(|i| unsafe { vld1_s8(a.add(i * s + g)) });
        // SAFETY: the same words / bytes of the weight rows are in bounds.
        let wv: [int8x8_t; NR] = std::array::from_fn(|j| unsafe { vld1_s8(w.add(j * s + g)) });
        for (acc_i, &ai) in acc.iter_mut().zip(&av) {
            for (acc_ij, &wj) in acc_i.iter_mut().zip(&wv) {
                *acc_ij = vpadalq_s16(*acc_ij, vmull_s8(ai, wj));
            }
        }
        g += 8;
    }
    for (i, acc_i) in acc.iter().enumerate() {
        for (j, &v) in acc_i.iter().enumerate() {
            let mut d = vaddvq_s32(v);
            // The last 4 bytes when s is not a multiple of 8.
            for t in g..s {
                // SAFETY: byte t < s of rows i and j is in bounds.
                d += unsafe { i32::from(*a.add(i * s + t)) * i32::from(*w.add(j * s + t)) };
            }
            // SAFETY: out row i, column j is in bounds (caller's contract).
            unsafe { out.add(i * out_stride + j).write(d) };
        }
    }
}

/// Int8 rows: `rows` rows of `a` (stride `s`) against the `n` rows of `w`, into `acc` (row
/// stride `acc_stride >= n`), in 4 x 4 tiles with tails.
///
/// # Safety
/// NEON must be available; `a` valid for `rows * s` bytes, `w` for `n * s`, `acc` for
/// `rows * acc_stride` values; activations in `[-64, 64]`.
#[target_feature(enable = "neon")]
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn int8_rows(
    a: *const i8,
    s: usize,
    rows: usize,
    w: *const i8,
    n: usize,
    acc: *mut i32,
    acc_stride: usize,
) {
    for_tiles(rows, n, |r, mr, j, nr| {
        // SAFETY: rows r .. r + mr and weight rows j .. j + nr are in bounds (caller's
        // contract).
        unsafe {
            let (ap, wp, op) = (a.add(r * s), w.add(j * s), acc.add(r * acc_stride + j));
            dispatch_tile!(int8_tile, mr, nr, ap, wp, s, op, acc_stride);
        }
    });
}
