//! Scalar reference kernels: always compiled, the oracle every SIMD path must equal exactly.
//!
//! Binary: `+1 <-> bit 0`, `-1 <-> bit 1`, element `j` of a word is bit `j`, a row of `K`
//! elements is `ceil(K / 64)` words with zero pad bits, so
//! `dot(a, w) = K - 2 * popcount(a ^ w)` over the padded words is exact.
//! Int8: rows of `K` values stored with stride `K` rounded up to a multiple of 4, zero padded;
//! `dot = sum a[k] * w[k]` accumulated exactly in `i32`.

/// Words per packed row of `k` one-bit elements.
pub const fn words(k: usize) -> usize {
    k.div_ceil(64)
}

/// Bytes per int8 row of `k` values (padded to a multiple of 4 for the VNNI groups).
pub const fn int8_stride(k: usize) -> usize {
    k.div_ceil(4) * 4
}

/// `K - 2 * popcount(a ^ w)` of two packed rows of `k` elements (zero pad bits).
///
/// ```
/// // a = [+1, -1, +1], w = [+1, +1, -1]: dot = 1 - 1 - 1 = -1
/// assert_eq!(xnor_kernels::reference::binary_dot(&[0b010], &[0b100], 3), -1);
/// ```
pub fn binary_dot(a: &[u64], w: &[u64], k: usize) -> i32 {
    let pc: u32 = a.iter().zip(w).map(|(x, y)| (x ^ y).count_ones()).sum();
    k as i32 - 2 * pc as i32
}

/// Reference binary GEMM: `out[i * n + j] = binary_dot(a row i, w row j)`; `a` is `m` rows,
/// `w` is `n` rows, each `words(k)` words.
///
/// # Panics
/// When a buffer is shorter than the shape implies.
pub fn binary_gemm(a: &[u64], w: &[u64], m: usize, n: usize, k: usize, out: &mut [i32]) {
    let kw = words(k);
    for i in 0..m {
        for j in 0..n {
            out[i * n + j] = binary_dot(&a[i * kw..(i + 1) * kw], &w[j * kw..(j + 1) * kw], k);
        }
    }
}

/// Exact int8 dot product of the first `k` values.
pub fn int8_dot(a: &[i8], w: &[i8], k: usize) -> i32 {
    a[..k]
        .iter()
        .zip(&w[..k])
        .map(|(&x, &y)| i32::from(x) * i32::from(y))
        .sum()
}

/// Reference int8 GEMM: rows of stride [`int8_stride`]`(k)`; `out` is `m x n`.
///
/// # Panics
/// When a buffer is shorter than the shape implies.
pub fn int8_gemm(a: &[i8], w: &[i8], m: usize, n: usize, k: usize, out: &mut [i32]) {
    let s = int8_stride(k);
    for i in 0..m {
        for j in 0..n {
            out[i * n + j] = int8_dot(&a[i * s..], &w[j * s..], k);
        }
    }
}

/// Scalar block kernel used by the [`crate::Isa::Scalar`] path: `rows` rows of `a` (stride
/// `kw`) against all `n` rows of `w`, into `acc` with row stride `n_pad`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn binary_rows(
    a: &[u64],
    kw: usize,
    rows: usize,
    k: usize,
    w: &[u64],
    n: usize,
    acc: &mut [i32],
    n_pad: usize,
) {
    for r in 0..rows {
        let ar = &a[r * kw..(r + 1) * kw];
        for j in 0..n {
            acc[r * n_pad + j] = binary_dot(ar, &w[j * kw..(j + 1) * kw], k);
        }
    }
}

/// Scalar int8 block kernel (rows of stride `s`).
#[allow(clippy::too_many_arguments)]
pub(crate) fn int8_rows(
    a: &[i8],
    s: usize,
    rows: usize,
    w: &[i8],
    n: usize,
    acc: &mut [i32],
    n_pad: usize,
) {
    for r in 0..rows {
        let ar = &a[r * s..(r + 1) * s];
        for j in 0..n {
            acc[r * n_pad + j] = int8_dot(ar, &w[j * s..(j + 1) * s], s);
        }
    }
}
