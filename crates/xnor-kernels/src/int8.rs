//! Exact int8 GEMM for 2-3 bit layers: `out[i, j] = sum_k a[i, k] * w[j, k]` in `i32`.
//!
//! 2-3 bit layers run on their *integer levels* as int8: ternary `{-1, 0, 1}`, 3-bit
//! power-of-two levels times 4 `{0, +-1, +-2, +-4}`, and 1-bit `+-1` when mixed with a multi-bit
//! side. Rows have `K` values stored with stride `ceil(K / 4) * 4` (zero pad bytes in the
//! weights), matching the 4-byte groups of `vpdpbusd`.
//!
//! Exactness: weights may be any `i8`; activations must lie in `[-64, 64]` (checked), which
//! keeps the AVX2 `vpmaddubsw` pairs below `i16` saturation (see `x86/avx2.rs`), and
//! `K <= MAX_INT8_K` keeps the offset `i32` accumulator below `2^31` (see `x86/avx512.rs`).

use std::sync::atomic::{AtomicBool, Ordering};

use bitpack::Isa;

use crate::epilogue::{self, Output, ROW_BLOCK};
use crate::error::{KernelError, Result, check_len, mul};
use crate::reference;

/// Largest supported `K` for the int8 kernels (`K * 255 * 128 < 2^31`).
pub const MAX_INT8_K: usize = 65_536;

/// Smallest and largest activation value the int8 kernels accept.
pub const INT8_ACT_RANGE: (i8, i8) = (-64, 64);

/// Int8 weights (`n` rows of `k` values, stride `ceil(k / 4) * 4`) prepared for the kernels.
#[derive(Debug, Clone)]
pub struct Int8Weights {
    n: usize,
    k: usize,
    s: usize,
    rows: Vec<i8>,
    /// 16-channel panels of `w + 128` as `u8`: panel, group of 4 `k`, channel, byte (the
    /// AVX2 kernel and the VNNI kernel on signed activations).
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    panels: Vec<u8>,
    /// The same panels of the signed weights (zero channels beyond `n`), for the VNNI kernel
    /// on `+128` offset activations.
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    panels_s: Vec<i8>,
    /// `128 * sum_k w[j, k]` per channel (`n_pad` values, zero beyond `n`): what the offset
    /// activations add to channel `j`.
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    wsum128: Vec<i32>,
    /// Narrow layers (`n <= NARROW_N`, stride a multiple of 8): *pair panels* of 8 channels,
    /// pair panel `h`, group pair `gp`, lane `2c + e`, byte `b` = `w[8h + c, 8gp + 4e + b]`
    /// (zero beyond `n`); empty otherwise.
    panels_pair: Vec<i8>,
}

/// Widest layer that uses the pair-panel VNNI kernel (one 8-byte broadcast per two groups).
const NARROW_N: usize = 16;

impl Int8Weights {
    /// Prepares `n` rows of `k` int8 weights (`n * ceil(k / 4) * 4` bytes, zero pad bytes).
    ///
    /// # Errors
    /// Wrong length, `k == 0` or `k > MAX_INT8_K`, non-zero pad bytes.
    ///
    /// ```
    /// use xnor_kernels::Int8Weights;
    /// let w = Int8Weights::new(&[1, -2, 4, 0], 1, 3).unwrap();
    /// assert_eq!(w.k(), 3);
    /// assert!(Int8Weights::new(&[1, -2, 4, 7], 1, 3).is_err()); // pad byte set
    /// ```
    pub fn new(w: &[i8], n: usize, k: usize) -> Result<Self> {
        const OP: &str = "Int8Weights::new";
        if k == 0 || k > MAX_INT8_K {
            return Err(KernelError::Shape {
                op: OP,
                reason: format!("K = {k} must be in 1..={MAX_INT8_K}"),
            });
        }
        let s = reference::int8_stride(k);
        check_len(OP, "w", w.len(), mul(OP, n, s)?)?;
        for j in 0..n {
            for kk in k..s {
                if w[j * s + kk] != 0 {
                    return Err(KernelError::Value {
                        op: OP,
                        buffer: "w",
                        index: j * s + kk,
                        value: i64::from(w[j * s + kk]),
                        reason: "pad bytes beyond K must be zero",
                    });
                }
            }
        }
        // The panel layouts serve the x86 kernels only (NEON reads `rows`).
        let npanels = if cfg!(target_arch = "x86_64") {
            n.div_ceil(16)
        } else {
            0
        };
        let mut panels = vec![128u8; npanels * s * 16];
        let mut panels_s = vec![0i8; npanels * s * 16];
        let mut wsum128 = vec![0i32; npanels * 16];
        for j in 0..n.min(npanels * 16) {
            let (p, lane) = (j / 16, j % 16);
            for kk in 0..s {
                let (g, b) = (kk / 4, kk % 4);
                let v = w[j * s + kk];
                panels[p * s * 16 + g * 64 + lane * 4 + b] = (i16::from(v) + 128) as u8;
                panels_s[p * s * 16 + g * 64 + lane * 4 + b] = v;
                wsum128[j] += 128 * i32::from(v);
            }
        }
        let mut panels_pair = Vec::new();
        if cfg!(target_arch = "x86_64") && n <= NARROW_N && s.is_multiple_of(8) {
            panels_pair = vec![0i8; n.div_ceil(8) * s * 8];
            for j in 0..n {
                let (h, c) = (j / 8, j % 8);
                for kk in 0..s {
                    let (gp, e, b) = (kk / 8, kk / 4 % 2, kk % 4);
                    panels_pair[h * s * 8 + gp * 64 + (2 * c + e) * 4 + b] = w[j * s + kk];
                }
            }
        }
        Ok(Int8Weights {
            n,
            k,
            s,
            rows: w.to_vec(),
            panels,
            panels_s,
            wsum128,
            panels_pair,
        })
    }

    /// Number of output channels.
    pub fn n(&self) -> usize {
        self.n
    }

    /// Logical number of values per row.
    pub fn k(&self) -> usize {
        self.k
    }

    /// Bytes per row, `ceil(k / 4) * 4`.
    pub fn stride(&self) -> usize {
        self.s
    }

    pub(crate) fn n_pad(&self) -> usize {
        self.n.div_ceil(16) * 16
    }
}

/// Checks that every activation lies in [`INT8_ACT_RANGE`].
pub(crate) fn check_act_range(op: &'static str, a: &[i8]) -> Result<()> {
    let (lo, hi) = INT8_ACT_RANGE;
    // `v` is in [-64, 64] iff `(v as u8) + 64` (wrapping) is at most 128: one unsigned max
    // pass that vectorises on every x86-64 (SSE2 `pmaxub`); the position is searched only on
    // failure.
    #[cfg(target_arch = "x86_64")]
    let ok = if Isa::Avx512.is_available() {
        // SAFETY: AVX-512 is available.
        unsafe { crate::x86::avx512::act_range_ok(a) }
    } else {
        a.iter()
            .fold(0u8, |mx, &v| mx.max((v as u8).wrapping_add(64)))
            <= 128
    };
    #[cfg(not(target_arch = "x86_64"))]
    let ok = a
        .iter()
        .fold(0u8, |mx, &v| mx.max((v as u8).wrapping_add(64)))
        <= 128;
    if ok {
        return Ok(());
    }
    if let Some(i) = a.iter().position(|&v| v < lo || v > hi) {
        return Err(KernelError::Value {
            op,
            buffer: "a",
            index: i,
            value: i64::from(a[i]),
            reason: "int8 activations must lie in [-64, 64]",
        });
    }
    Ok(())
}

/// Activations of at least this many bytes are prefetched a chunk ahead by the VNNI GEMM's
/// offset pass. Measured (`bench-kernels`, b64 int8 GEMMs): at 2.4-4.7 MB (ResNet-20 `s2`,
/// `s3`) the hints cost 3-10%, at 9.4 MB and above (ResNet-20 `s1`, ResNet-18) they gain
/// 0-30%.
const PREFETCH_BYTES: usize = 8 << 20;

thread_local! {
    static OFFSET_A: std::cell::Cell<Vec<u8>> = const { std::cell::Cell::new(Vec::new()) };
}

/// Whether `isa` runs the VNNI kernel on `+128` offset activations.
pub(crate) fn uses_offset_activations(isa: Isa) -> bool {
    cfg!(target_arch = "x86_64") && isa == Isa::Avx512 && bitpack::isa::has_avx512_vnni()
}

/// Computes `rows` rows of `a` (stride `w.stride()`) into `acc` (stride `w.n_pad()`), in
/// chunks of at most [`ROW_BLOCK`] rows. With VNNI each chunk is first offset by `+128`
/// (`a ^ 0x80`) into a per-thread buffer (see [`int8_block_offset`]), which also checks the
/// activation range, and with `prefetch` the next chunk is prefetched. Returns whether every
/// value of `a` lies in [`INT8_ACT_RANGE`] with VNNI, `true` on the other paths (whose
/// callers check the range first).
pub(crate) fn int8_block(
    isa: Isa,
    a: &[i8],
    rows: usize,
    w: &Int8Weights,
    acc: &mut [i32],
    prefetch: bool,
) -> bool {
    let (s, n_pad) = (w.s, w.n_pad());
    #[cfg(not(target_arch = "x86_64"))]
    let _ = prefetch;
    #[cfg(target_arch = "x86_64")]
    if uses_offset_activations(isa) {
        let mut buf = OFFSET_A.with(|c| c.take());
        if buf.len() < ROW_BLOCK * s {
            buf.resize(ROW_BLOCK * s, 0);
        }
        let mut in_range = true;
        let mut r = 0;
        while r < rows {
            let n = (rows - r).min(ROW_BLOCK);
            // SAFETY: AVX-512 is available (checked by uses_offset_activations).
            in_range &= unsafe { crate::x86::avx512::offset_i8(&a[r * s..(r + n) * s], &mut buf) };
            // Ask for the next chunk while the kernel runs on this one: for large
            // activations this keeps the batch-64 GEMMs streaming (measured: steadier and
            // up to 30% faster); for smaller ones the hints only cost load slots.
            let next = if prefetch {
                &a[((r + n) * s).min(a.len())..((r + 2 * n) * s).min(a.len())]
            } else {
                &[]
            };
            for line in next.chunks(64) {
                // SAFETY: a prefetch hint on a valid address; SSE is part of x86-64.
                unsafe {
                    std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
                        line.as_ptr(),
                    )
                };
            }
            int8_block_offset(
                isa,
                &buf[..n * s],
                n,
                w,
                &mut acc[r * n_pad..(r + n) * n_pad],
            );
            r += n;
        }
        OFFSET_A.with(|c| c.set(buf));
        return in_range;
    }
    let mut r = 0;
    while r < rows {
        let n = (rows - r).min(ROW_BLOCK);
        int8_chunk(
            isa,
            &a[r * s..(r + n) * s],
            n,
            w,
            &mut acc[r * n_pad..(r + n) * n_pad],
        );
        r += n;
    }
    true
}

/// The VNNI kernel on activations already offset to `au = a + 128` (`a ^ 0x80`, stride
/// `w.stride()`), for callers that write them that way (the conv's im2col).
///
/// # Panics
/// When `isa` does not use offset activations ([`uses_offset_activations`]) or a buffer is
/// short.
pub(crate) fn int8_block_offset(
    isa: Isa,
    au: &[u8],
    rows: usize,
    w: &Int8Weights,
    acc: &mut [i32],
) {
    let run = Run {
        a_off: 0,
        r0: 0,
        len: rows,
    };
    int8_block_offset_segments(isa, au, &[0], w.s, w.s, &[run], w, acc);
}

/// Whether [`int8_block_offset_segments`] takes segments of `len` bytes for these weights
/// (a multiple of 4, and of 8 when the narrow pair-panel kernel is used).
pub(crate) fn segments_fit(w: &Int8Weights, len: usize) -> bool {
    len > 0
        && w.s.is_multiple_of(len)
        && len.is_multiple_of(if w.panels_pair.is_empty() { 4 } else { 8 })
}

/// A run of activation rows for [`int8_block_offset_segments`] and the VNNI row drivers: row
/// `r` of the run (`r < len`) starts at byte `a_off + r * px` of the activations (plus each
/// segment's offset) and is output row `r0 + r`.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Run {
    pub(crate) a_off: usize,
    pub(crate) r0: usize,
    pub(crate) len: usize,
}

/// [`int8_block_offset`] on runs of rows: a row is the concatenation of `offs.len()` segments
/// of `len` bytes, segment `s` of row `r` of a run at `au[run.a_off + offs[s] + r * px ..]`
/// (a conv reading a pre-padded, offset input in place: one segment per kernel row, one run
/// per output row). All runs go through one panel group before the next (weight reuse).
///
/// # Panics
/// As [`int8_block_offset`]; when the segments do not make up a weight row
/// (`offs.len() * len != w.stride()`, see [`segments_fit`]), or a segment read or output row
/// is out of bounds.
#[allow(clippy::too_many_arguments)]
pub(crate) fn int8_block_offset_segments(
    isa: Isa,
    au: &[u8],
    offs: &[usize],
    len: usize,
    px: usize,
    runs: &[Run],
    w: &Int8Weights,
    acc: &mut [i32],
) {
    let n_pad = w.n_pad();
    assert!(uses_offset_activations(isa));
    assert!(offs.len() * len == w.s && segments_fit(w, len));
    for run in runs.iter().filter(|r| r.len > 0) {
        assert!(
            acc.len() >= (run.r0 + run.len) * n_pad,
            "int8 run output out of bounds"
        );
        for &o in offs {
            assert!(
                run.a_off + o + (run.len - 1) * px + len <= au.len(),
                "int8 segment read out of bounds"
            );
        }
    }
    #[cfg(target_arch = "x86_64")]
    {
        let sg = crate::x86::avx512::Segs {
            offs: offs.as_ptr(),
            nseg: offs.len(),
            len,
            px,
        };
        if !w.panels_pair.is_empty() {
            // SAFETY: AVX-512 + VNNI checked; the asserts bound every segment read and acc;
            // the pair panels hold ceil(n / 8) panels of s * 8 bytes (len a multiple of 8)
            // and wsum128 n_pad >= 8 * ceil(n / 8) values.
            unsafe {
                crate::x86::avx512::int8_rows_u2(
                    au.as_ptr(),
                    sg,
                    runs,
                    w.panels_pair.as_ptr(),
                    w.wsum128.as_ptr(),
                    w.n.div_ceil(8),
                    acc.as_mut_ptr(),
                    n_pad,
                )
            }
            return;
        }
        // SAFETY: AVX-512 + VNNI checked; the asserts bound every segment read and acc; the
        // signed panels hold n_pad / 16 panels of s * 16 bytes and wsum128 n_pad values.
        unsafe {
            crate::x86::avx512::int8_rows_u(
                au.as_ptr(),
                sg,
                runs,
                w.panels_s.as_ptr(),
                w.wsum128.as_ptr(),
                n_pad / 16,
                acc.as_mut_ptr(),
                n_pad,
            )
        }
    }
}

/// [`int8_block`] for `rows <= ROW_BLOCK` without VNNI: offset weights `w + 128`, signed
/// activations, minus `128 * sum(a)` per row.
fn int8_chunk(isa: Isa, a: &[i8], rows: usize, w: &Int8Weights, acc: &mut [i32]) {
    let s = w.s;
    let n_pad = w.n_pad();
    assert!(rows <= ROW_BLOCK && a.len() >= rows * s && acc.len() >= rows * n_pad);
    #[cfg(target_arch = "aarch64")]
    if isa == Isa::Neon {
        // SAFETY: `isa` was checked available; the assert above bounds a and acc, the weight
        // rows hold n rows of s bytes, and the activations were range-checked by the caller.
        unsafe {
            crate::neon::int8_rows(
                a.as_ptr(),
                s,
                rows,
                w.rows.as_ptr(),
                w.n,
                acc.as_mut_ptr(),
                n_pad,
            )
        };
        return;
    }
    let mut rowsum = [0i32; ROW_BLOCK];
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => {
            // SAFETY: AVX-512 (BW) is available; the assert above bounds a and rowsum.
            unsafe { crate::x86::avx512::row_sums_i8(a.as_ptr(), s, rows, rowsum.as_mut_ptr()) }
        }
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => {
            // SAFETY: AVX2 is available; the assert above bounds a and rowsum; s is a multiple
            // of 4 (Int8Weights).
            unsafe { crate::x86::avx2::row_sums_i8(a.as_ptr(), s, rows, rowsum.as_mut_ptr()) }
        }
        _ => {
            for (r, rs) in rowsum.iter_mut().enumerate().take(rows) {
                *rs = a[r * s..(r + 1) * s].iter().map(|&v| i32::from(v)).sum();
            }
        }
    }
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 | Isa::Avx2 => {
            // AVX-VNNI where the CPU has it, else vpmaddubsw: the same operands.
            let rows_fn = if bitpack::isa::has_avx_vnni() {
                crate::x86::avx2::int8_rows_vnni
            } else {
                crate::x86::avx2::int8_rows
            };
            // SAFETY: Avx512 implies the Avx2 set, and AVX-VNNI was checked for its kernel;
            // bounds as for the VNNI arm.
            unsafe {
                rows_fn(
                    a.as_ptr(),
                    s,
                    rows,
                    rowsum.as_ptr(),
                    w.panels.as_ptr(),
                    n_pad / 16,
                    acc.as_mut_ptr(),
                    n_pad,
                )
            }
        }
        _ => reference::int8_rows(a, s, rows, &w.rows, w.n, acc, n_pad),
    }
}

/// Int8 GEMM with the ISA chosen by [`crate::selected_isa`]: `m` rows of `a` (stride
/// `w.stride()`, values in `[-64, 64]`) against `w`, written to `out`.
///
/// # Errors
/// Wrong buffer lengths, activations out of range, or an unusable `XNOR_ISA`. Lengths and
/// the ISA are checked before anything is written; the activation range may be checked
/// during the computation (with VNNI by the `+128` offset pass the kernel makes anyway), so
/// after a [`KernelError::Value`] the contents of `out` are unspecified.
///
/// ```
/// use xnor_kernels::{int8_gemm, Int8Weights, Output};
/// let w = Int8Weights::new(&[1, -2, 4, 0, 0, 1, 1, 0], 2, 3).unwrap();
/// let mut out = [0i32; 2];
/// int8_gemm(&[2, 1, -1, 0], &w, 1, Output::I32(&mut out)).unwrap();
/// assert_eq!(out, [2 - 2 - 4, 0]);
/// ```
pub fn int8_gemm(a: &[i8], w: &Int8Weights, m: usize, out: Output<'_>) -> Result<()> {
    int8_gemm_with(crate::selected_isa()?, a, w, m, out)
}

/// [`int8_gemm`] with an explicit ISA (an error if this CPU lacks it).
///
/// # Errors
/// As [`int8_gemm`] (after a [`KernelError::Value`] the contents of `out` are
/// unspecified), plus [`KernelError::Isa`] for an unavailable ISA.
pub fn int8_gemm_with(
    isa: Isa,
    a: &[i8],
    w: &Int8Weights,
    m: usize,
    out: Output<'_>,
) -> Result<()> {
    const OP: &str = "int8_gemm";
    let isa = crate::binary::resolve(isa)?;
    let s = w.s;
    check_len(OP, "a", a.len(), mul(OP, m, s)?)?;
    out.check(OP, m, w.n)?;
    // With VNNI the range is checked by the `+128` offset pass the kernel makes anyway (the
    // position is searched only on failure); the other paths check it first.
    let fused = uses_offset_activations(isa);
    if !fused {
        check_act_range(OP, a)?;
    }
    let out_of_range = AtomicBool::new(false);
    let prefetch = a.len() >= PREFETCH_BYTES;
    let parallel = epilogue::want_parallel(m, m * w.n * s / 8);
    epilogue::run(
        isa,
        out,
        m,
        w.n,
        w.n_pad(),
        parallel,
        epilogue::DIRECT_BLOCK,
        |r0, rows, acc| {
            if !int8_block(isa, &a[r0 * s..(r0 + rows) * s], rows, w, acc, prefetch) {
                out_of_range.store(true, Ordering::Relaxed);
            }
        },
    );
    if out_of_range.into_inner() {
        check_act_range(OP, a)?;
    }
    Ok(())
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;

    /// Both AVX2 int8 tiles (`vpmaddubsw` and, where the CPU has it, AVX-VNNI) against the
    /// reference: the harness in `tests/` sees only the one the dispatcher picks.
    #[test]
    fn both_avx2_int8_tiles_match_the_reference() {
        if !Isa::Avx2.is_available() {
            return;
        }
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let shapes: [(usize, usize, usize); 5] = [
            (1, 1, 1),
            (6, 16, 4),
            (7, 17, 63),
            (13, 33, 144),
            (32, 48, 1000),
        ];
        for &(rows, n, k) in &shapes {
            let s = k.div_ceil(4) * 4;
            let mut wv = vec![0i8; n * s];
            for (i, v) in wv.iter_mut().enumerate() {
                // Extremes included: weights -128 / 127 against activations +-64.
                *v = if i % s < k { next() as i8 } else { 0 };
            }
            let mut a = vec![0i8; rows * s];
            for (i, v) in a.iter_mut().enumerate() {
                *v = if i % s < k {
                    [-64, 64, ((next() % 129) as i32 - 64) as i8][i % 3]
                } else {
                    0
                };
            }
            let w = Int8Weights::new(&wv, n, k).unwrap();
            let n_pad = w.n_pad();
            let mut want = vec![0i32; rows * n_pad];
            reference::int8_rows(&a, s, rows, &w.rows, n, &mut want, n_pad);
            let rowsum: Vec<i32> = (0..rows)
                .map(|r| a[r * s..(r + 1) * s].iter().map(|&v| i32::from(v)).sum())
                .collect();
            let mut tiles = vec![false];
            if bitpack::isa::has_avx_vnni() {
                tiles.push(true);
            }
            for vnni in tiles {
                let mut got = vec![0i32; rows * n_pad];
                let rows_fn = if vnni {
                    crate::x86::avx2::int8_rows_vnni
                } else {
                    crate::x86::avx2::int8_rows
                };
                // SAFETY: AVX2 (and AVX-VNNI for that tile) checked above; a holds rows rows
                // of s bytes, the panels n_pad / 16 panels of s * 16 bytes, got rows of n_pad.
                unsafe {
                    rows_fn(
                        a.as_ptr(),
                        s,
                        rows,
                        rowsum.as_ptr(),
                        w.panels.as_ptr(),
                        n_pad / 16,
                        got.as_mut_ptr(),
                        n_pad,
                    )
                };
                for r in 0..rows {
                    assert_eq!(
                        got[r * n_pad..r * n_pad + n],
                        want[r * n_pad..r * n_pad + n],
                        "rows {rows} n {n} k {k} vnni {vnni} row {r}"
                    );
                }
            }
        }
    }
}
