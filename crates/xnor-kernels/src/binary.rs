//! Binary GEMM: `out[i, j] = K - 2 * popcount(a_i ^ w_j)` with a fused output transform.
//!
//! Bit convention (shared with `bitpack`): `+1 <-> bit 0`, `-1 <-> bit 1`; element `j` of a
//! `u64` word is bit `j` (LSB first); a row of `K` elements is `ceil(K / 64)` words and pad
//! bits are zero in both operands, so the popcount over the padded words is exact with the
//! logical `K`. The activations `a` are `m` such rows (for a conv: one row per output pixel);
//! the weights are `n` rows, prepared once into [`BinaryWeights`] (8-channel panels, see
//! `x86/avx512.rs`). Work is split into blocks of output rows; above a work threshold the
//! blocks run on rayon.

use bitpack::Isa;

use crate::epilogue::{self, Output, valid_mask};
use crate::error::{KernelError, Result, check_len, mul};
#[cfg(target_arch = "x86_64")]
use crate::int8::Run;
use crate::reference;

/// Binary weights (`n` rows of `k` one-bit elements) prepared for every ISA's kernel.
#[derive(Debug, Clone)]
pub struct BinaryWeights {
    n: usize,
    k: usize,
    kw: usize,
    rows: Vec<u64>,
    /// 8-channel panels of the x86 kernels (empty elsewhere; NEON reads `rows`).
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    panels: Vec<u64>,
    /// Narrow layers (`n` in 9..=16 or 25..=32, `K` contiguous bits): *dword panels* of 16
    /// channels: panel `p`, dword `d`, lane `c` = dword `d` of channel `16p + c` (zero beyond
    /// `n`), for `ceil(K / 32)` dwords; empty otherwise.
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    panels_d: Vec<u32>,
}

/// Widest layer that uses the dword-panel kernel (`x86/avx512.rs`, `binary_tile_d`).
const NARROW_N: usize = 32;

/// Checks that the pad bits of every row of `k` elements (`kw` words each) are zero.
pub(crate) fn check_pad_bits(
    op: &'static str,
    buffer: &'static str,
    words: &[u64],
    rows: usize,
    k: usize,
) -> Result<()> {
    let kw = reference::words(k);
    if kw == 0 || k.is_multiple_of(64) {
        return Ok(());
    }
    let mask = !valid_mask(k, kw - 1);
    // Branch-free OR of the pad bits over all rows; the position is searched only on failure.
    let words = &words[..rows * kw];
    #[cfg(target_arch = "x86_64")]
    let any = if Isa::Avx512.is_available() {
        // SAFETY: AVX-512 is available; `words` holds exactly rows * kw words.
        unsafe { crate::x86::avx512::or_last_words(words, kw, mask) }
    } else {
        words.chunks_exact(kw).fold(0, |a, r| a | r[kw - 1]) & mask
    };
    #[cfg(not(target_arch = "x86_64"))]
    let any = words.chunks_exact(kw).fold(0, |a, r| a | r[kw - 1]) & mask;
    if any == 0 {
        return Ok(());
    }
    for r in 0..rows {
        let idx = r * kw + kw - 1;
        if words[idx] & mask != 0 {
            return Err(KernelError::Value {
                op,
                buffer,
                index: idx,
                value: words[idx] as i64,
                reason: "pad bits beyond K must be zero",
            });
        }
    }
    Ok(())
}

impl BinaryWeights {
    /// Prepares `n` packed rows of `k` elements (`n * ceil(k / 64)` words, zero pad bits).
    ///
    /// # Errors
    /// [`KernelError::Length`] for a wrong length, [`KernelError::Value`] for non-zero pad
    /// bits, [`KernelError::Shape`] for `k == 0`.
    ///
    /// ```
    /// use xnor_kernels::BinaryWeights;
    /// let w = BinaryWeights::new(&[0b1, 0b0], 2, 3).unwrap();
    /// assert_eq!((w.n(), w.k()), (2, 3));
    /// assert!(BinaryWeights::new(&[0b1000, 0], 2, 3).is_err()); // pad bit set
    /// ```
    pub fn new(w: &[u64], n: usize, k: usize) -> Result<Self> {
        const OP: &str = "BinaryWeights::new";
        if k == 0 {
            return Err(KernelError::Shape {
                op: OP,
                reason: "K must be at least 1".into(),
            });
        }
        let kw = reference::words(k);
        check_len(OP, "w", w.len(), mul(OP, n, kw)?)?;
        check_pad_bits(OP, "w", w, n, k)?;
        Ok(Self::with_row_words(w, n, k, kw))
    }

    /// Prepares rows of `kw` words whose set bits count `k` logical elements in total (the
    /// conv's per-tap layout has pad bits inside the row); the caller guarantees zero pads.
    pub(crate) fn with_row_words(w: &[u64], n: usize, k: usize, kw: usize) -> Self {
        // The panel layouts serve the x86 kernels only.
        let npanels = if cfg!(target_arch = "x86_64") {
            n.div_ceil(8)
        } else {
            0
        };
        let mut panels = vec![0u64; npanels * kw * 8];
        for j in 0..n.min(npanels * 8) {
            let (p, lane) = (j / 8, j % 8);
            for kk in 0..kw {
                panels[p * kw * 8 + kk * 8 + lane] = w[j * kw + kk];
            }
        }
        // Dword panels when the row is K contiguous bits (the GEMM layout, the conv's dense
        // layout): K = 144 takes 5 dwords instead of 3 words (6 dwords).
        let mut panels_d = Vec::new();
        if cfg!(target_arch = "x86_64")
            && n <= NARROW_N
            && n.div_ceil(8).is_multiple_of(2)
            && kw == reference::words(k)
        {
            let kd = k.div_ceil(32);
            panels_d = vec![0u32; n.div_ceil(16) * kd * 16];
            for j in 0..n {
                let (p, lane) = (j / 16, j % 16);
                for d in 0..kd {
                    let word = w[j * kw + d / 2];
                    panels_d[p * kd * 16 + d * 16 + lane] = (word >> (32 * (d % 2))) as u32;
                }
            }
        }
        BinaryWeights {
            n,
            k,
            kw,
            rows: w.to_vec(),
            panels,
            panels_d,
        }
    }

    /// Number of output channels (rows).
    pub fn n(&self) -> usize {
        self.n
    }

    /// Logical number of elements per row.
    pub fn k(&self) -> usize {
        self.k
    }

    /// Words per row, `ceil(k / 64)`.
    pub fn words_per_row(&self) -> usize {
        self.kw
    }

    /// The row-major packed weights as given.
    pub fn rows(&self) -> &[u64] {
        &self.rows
    }

    /// Accumulator row stride used by the kernels (`n` rounded up to 8).
    /// A copy of the 8-channel panels with every word of the channels `flip` selects
    /// complemented (pad bits included): for such a channel the kernels count
    /// `64 * kw - popcount` (see `FusedThresholds` in `conv.rs`).
    #[cfg(target_arch = "x86_64")]
    pub(crate) fn flipped_panels(&self, flip: impl Fn(usize) -> bool) -> Vec<u64> {
        let mut panels = self.panels.clone();
        for j in (0..self.n).filter(|&j| flip(j)) {
            let (p, lane) = (j / 8, j % 8);
            for kk in 0..self.kw {
                panels[p * self.kw * 8 + kk * 8 + lane] ^= !0;
            }
        }
        panels
    }

    pub(crate) fn n_pad(&self) -> usize {
        self.n.div_ceil(8) * 8
    }
}

/// Resolves an explicit ISA: it must be available on this CPU.
pub(crate) fn resolve(isa: Isa) -> Result<Isa> {
    Ok(isa.require("argument")?)
}

/// Computes `rows` rows of `a` (`kw` words each, contiguous) against all of `w` into `acc`
/// (row stride `w.n_pad()`), with the given (available) ISA.
pub(crate) fn binary_block(isa: Isa, a: &[u64], rows: usize, w: &BinaryWeights, acc: &mut [i32]) {
    let kw = w.kw;
    let n_pad = w.n_pad();
    assert!(a.len() >= rows * kw && acc.len() >= rows * n_pad);
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 if !w.panels_d.is_empty() => {
            // SAFETY: `isa` was checked available; the assert above bounds a (rows of kw words,
            // of which the first ceil(k / 32) dwords are read) and acc (rows * n_pad with
            // n_pad >= 16 * ceil(n / 16)); the dword panels hold ceil(n / 16) panels of
            // ceil(k / 32) * 16 dwords.
            unsafe {
                crate::x86::avx512::binary_rows_d(
                    a.as_ptr().cast(),
                    2 * kw,
                    w.k.div_ceil(32),
                    rows,
                    w.k as i32,
                    w.panels_d.as_ptr(),
                    w.n.div_ceil(16),
                    acc.as_mut_ptr(),
                    n_pad,
                )
            }
        }
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => {
            // SAFETY: `isa` was checked available; the assert above bounds a and acc (one
            // segment of kw words per row), and the panels hold n_pad / 8 panels of kw * 8
            // words.
            unsafe {
                crate::x86::avx512::binary_rows(
                    a.as_ptr(),
                    &[0],
                    kw,
                    kw,
                    1,
                    &[Run {
                        a_off: 0,
                        r0: 0,
                        len: rows,
                    }],
                    w.k as i32,
                    w.panels.as_ptr(),
                    n_pad / 8,
                    acc.as_mut_ptr(),
                    n_pad,
                )
            }
        }
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => {
            // SAFETY: as for the AVX-512 arm.
            unsafe {
                crate::x86::avx2::binary_rows(
                    a.as_ptr(),
                    kw,
                    rows,
                    kw,
                    w.k as i32,
                    w.panels.as_ptr(),
                    n_pad / 8,
                    acc.as_mut_ptr(),
                    n_pad,
                )
            }
        }
        #[cfg(target_arch = "aarch64")]
        Isa::Neon => {
            // SAFETY: `isa` was checked available; the assert above bounds a and acc, and the
            // weight rows hold n rows of kw words.
            unsafe {
                crate::neon::binary_rows(
                    a.as_ptr(),
                    kw,
                    rows,
                    w.k as i32,
                    w.rows.as_ptr(),
                    w.n,
                    acc.as_mut_ptr(),
                    n_pad,
                )
            }
        }
        _ => reference::binary_rows(a, kw, rows, w.k, &w.rows, w.n, acc, n_pad),
    }
}

/// Asserts that every segment of every run of an AVX-512 block read (rows
/// `run.a_off + r * a_stride`, `r < run.len`) lies inside `a`, and that the segments cover the
/// weights' row.
#[cfg(target_arch = "x86_64")]
fn check_runs(
    a: &[u64],
    offs: &[usize],
    (seg_len, a_stride, k_stride): (usize, usize, usize),
    runs: &[Run],
    w: &BinaryWeights,
) {
    assert!(Isa::Avx512.is_available() && offs.len() * seg_len == w.kw && seg_len > 0);
    for run in runs.iter().filter(|r| r.len > 0) {
        for &o in offs {
            let last = run.a_off + o + (run.len - 1) * a_stride + (seg_len - 1) * k_stride;
            assert!(last < a.len(), "binary segment read out of bounds");
        }
    }
}

/// AVX-512 block on runs of rows read in place as segments: word `kk` of segment `s` of row
/// `i` of a run is `a[run.a_off + offs[s] + i * a_stride + kk * k_stride]` (see
/// `x86/avx512.rs`) and goes to row `run.r0 + i` of `acc`.
///
/// # Panics
/// When a segment would read past `a` or a run past `acc`, or the segments do not cover the
/// weights' row.
#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
pub(crate) fn binary_block_segments_avx512(
    a: &[u64],
    offs: &[usize],
    seg_len: usize,
    a_stride: usize,
    k_stride: usize,
    runs: &[Run],
    w: &BinaryWeights,
    acc: &mut [i32],
) {
    let n_pad = w.n_pad();
    assert!(runs.iter().all(|r| (r.r0 + r.len) * n_pad <= acc.len()));
    check_runs(a, offs, (seg_len, a_stride, k_stride), runs, w);
    // SAFETY: AVX-512 is available; every segment read is bounded by the asserts above, the
    // panels hold n_pad / 8 panels of kw * 8 words, acc holds every run's rows.
    unsafe {
        crate::x86::avx512::binary_rows(
            a.as_ptr(),
            offs,
            seg_len,
            a_stride,
            k_stride,
            runs,
            w.k as i32,
            w.panels.as_ptr(),
            n_pad / 8,
            acc.as_mut_ptr(),
            n_pad,
        )
    }
}

/// [`binary_block_segments_avx512`] on runs of rows with the fused threshold epilogue: row `r`
/// of a run is read from `a[run.a_off + r * a_stride ..]` (plus the segment offsets) and is
/// block row `run.r0 + r`, which compares its popcounts with `thr[run.r0 + r]` (popcount
/// domain, see `conv.rs`) and writes its packed signs (`n_pad / 8` bytes) at
/// `out[(run.r0 + r) * out_stride ..]`.
///
/// # Safety
/// Every `thr[r]` must be valid for `w.n_pad()` `i32` reads. `panels` replaces the weights'
/// own panels when non-empty (the flipped copy of `FusedThresholds`; same length, asserted).
///
/// # Panics
/// When a segment would read past `a`, `thr` misses a row of the runs, `out_stride <
/// n_pad / 8` or `out` is too short for the runs' rows.
#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn binary_block_thr_avx512(
    a: &[u64],
    offs: &[usize],
    seg_len: usize,
    a_stride: usize,
    k_stride: usize,
    runs: &[Run],
    w: &BinaryWeights,
    thr: &[*const i32],
    (out, out_stride): (&mut [u8], usize),
    panels: &[u64],
) {
    let n_pad = w.n_pad();
    let rows = runs.iter().map(|r| r.r0 + r.len).max().unwrap_or(0);
    assert!(rows <= thr.len() && out_stride >= n_pad / 8);
    assert!(rows == 0 || (rows - 1) * out_stride + n_pad / 8 <= out.len());
    let panels = if panels.is_empty() {
        &w.panels[..]
    } else {
        assert_eq!(panels.len(), w.panels.len(), "flipped panels");
        panels
    };
    check_runs(a, offs, (seg_len, a_stride, k_stride), runs, w);
    // SAFETY: AVX-512 is available; activation reads and output writes are bounded by the
    // asserts above, the panels hold n_pad / 8 panels of kw * 8 words, and the caller
    // guarantees the threshold pointers.
    unsafe {
        crate::x86::avx512::binary_rows_thr(
            a.as_ptr(),
            offs,
            seg_len,
            a_stride,
            k_stride,
            runs,
            panels.as_ptr(),
            n_pad / 8,
            thr,
            (out.as_mut_ptr(), out_stride),
        )
    }
}

/// Binary GEMM with the ISA chosen by [`crate::selected_isa`]: `m` activation rows `a`
/// (`m * ceil(k / 64)` words, zero pad bits) against `w`, written to `out`.
///
/// # Errors
/// Wrong buffer lengths, non-zero pad bits, or an unusable `XNOR_ISA`.
///
/// ```
/// use xnor_kernels::{binary_gemm, BinaryWeights, Output};
/// // a = [+1, -1], w rows = [+1, -1] and [-1, -1]  (K = 2)
/// let w = BinaryWeights::new(&[0b10, 0b11], 2, 2).unwrap();
/// let mut out = [0i32; 2];
/// binary_gemm(&[0b10], &w, 1, Output::I32(&mut out)).unwrap();
/// assert_eq!(out, [2, 0]);
/// ```
pub fn binary_gemm(a: &[u64], w: &BinaryWeights, m: usize, out: Output<'_>) -> Result<()> {
    binary_gemm_with(crate::selected_isa()?, a, w, m, out)
}

/// [`binary_gemm`] with an explicit ISA (an error if this CPU lacks it).
///
/// # Errors
/// As [`binary_gemm`], plus [`KernelError::Isa`] for an unavailable ISA.
pub fn binary_gemm_with(
    isa: Isa,
    a: &[u64],
    w: &BinaryWeights,
    m: usize,
    out: Output<'_>,
) -> Result<()> {
    const OP: &str = "binary_gemm";
    let isa = resolve(isa)?;
    let kw = w.kw;
    check_len(OP, "a", a.len(), mul(OP, m, kw)?)?;
    check_pad_bits(OP, "a", a, m, w.k)?;
    out.check(OP, m, w.n)?;
    let parallel = epilogue::want_parallel(m, m * w.n * kw);
    epilogue::run(
        isa,
        out,
        m,
        w.n,
        w.n_pad(),
        parallel,
        epilogue::DIRECT_BLOCK,
        |r0, rows, acc| {
            binary_block(isa, &a[r0 * kw..(r0 + rows) * kw], rows, w, acc);
        },
    );
    Ok(())
}
