//! Fused output transforms: what a GEMM or conv writes instead of a raw `i32` tensor.
//!
//! Every kernel computes exact `i32` dot products for a block of at most [`ROW_BLOCK`] output
//! rows into a small per-thread buffer, and the block is immediately turned into the requested
//! [`Output`]: copied as `i32`, mapped through a per-channel affine map to `f32`, or compared
//! with per-channel integer [`Thresholds`] and written as packed sign bits for the next binary
//! layer (bit = 1 means -1, pad bits zero), or mapped through per-channel level steps
//! ([`LevelThresholds`]) to the int8 levels of the next 2-3 bit layer. No full-size `i32`
//! tensor exists in the fused cases.

use bitpack::Isa;
use rayon::prelude::*;

use crate::error::{KernelError, Result, check_len};

/// Rows of output computed per block (and per rayon task at most).
pub const ROW_BLOCK: usize = 32;

/// How the per-channel threshold maps an accumulator to a sign.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Direction {
    /// `acc >= t` gives +1 (bit 0); BatchNorm with a positive scale.
    #[default]
    Increasing,
    /// `acc <= t` gives +1 (bit 0); BatchNorm with a negative scale.
    Decreasing,
    /// Always +1 (BatchNorm scale 0 with a non-negative shift).
    AlwaysPlus,
    /// Always -1 (BatchNorm scale 0 with a negative shift).
    AlwaysMinus,
}

/// Per-output-channel integer thresholds that turn `i32` accumulators into packed signs.
///
/// Internally channel `c` is negative (bit 1) exactly when `(acc < thr[c]) ^ flip[c]`, so that
/// a whole 64-channel word is one compare mask XOR one flip word.
///
/// ```
/// use xnor_kernels::{Direction, Thresholds};
/// let t = Thresholds::new(&[0, 5], &[Direction::Increasing, Direction::Decreasing]).unwrap();
/// // channel 0: acc = -1 < 0 -> -1 (bit 1); channel 1: acc = 7 > 5 -> -1 (bit 1)
/// assert_eq!(t.sign_bits(&[-1, 7]), vec![0b11]);
/// assert_eq!(t.sign_bits(&[0, 5]), vec![0b00]);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Thresholds {
    thr: Vec<i32>,
    flip: Vec<u64>,
}

impl Thresholds {
    /// Builds thresholds from `t[c]` and the direction of each channel (the value of `t` is
    /// ignored for the constant directions).
    ///
    /// # Errors
    /// [`KernelError::Length`] when the slices differ in length.
    pub fn new(t: &[i32], dir: &[Direction]) -> Result<Self> {
        check_len("Thresholds::new", "dir", dir.len(), t.len())?;
        let n = t.len();
        let mut thr = vec![0i32; n];
        let mut flip = vec![0u64; n.div_ceil(64)];
        for c in 0..n {
            let (th, f) = match dir[c] {
                Direction::Increasing => (t[c], false),
                // acc <= t  <=>  !(acc < t + 1); t = MAX means always +1.
                Direction::Decreasing => match t[c].checked_add(1) {
                    Some(t1) => (t1, true),
                    None => (i32::MIN, false),
                },
                Direction::AlwaysPlus => (i32::MIN, false),
                Direction::AlwaysMinus => (i32::MIN, true),
            };
            thr[c] = th;
            if f {
                flip[c / 64] |= 1 << (c % 64);
            }
        }
        Ok(Thresholds { thr, flip })
    }

    /// Number of channels.
    pub fn channels(&self) -> usize {
        self.thr.len()
    }

    /// The normalised thresholds (`negative <=> (acc < thr[c]) ^ flip[c]`).
    pub fn normalised(&self) -> &[i32] {
        &self.thr
    }

    /// One flip bit per channel, packed like activations (pad bits zero).
    pub fn flip_words(&self) -> &[u64] {
        &self.flip
    }

    /// The per-channel mask for [`crate::pool::maxpool2x2_packed`]: bit set (AND of signs) for
    /// channels whose sign is non-decreasing in the accumulator, clear (OR) for decreasing ones.
    /// Pad bits are zero. Constant channels pool correctly either way.
    pub fn pool_and_mask(&self) -> Vec<u64> {
        let n = self.channels();
        self.flip
            .iter()
            .enumerate()
            .map(|(w, f)| !f & valid_mask(n, w))
            .collect()
    }

    /// Reference: the packed sign bits of one row of accumulators (`acc.len() == channels()`).
    ///
    /// # Panics
    /// When `acc` is shorter than [`Thresholds::channels`].
    pub fn sign_bits(&self, acc: &[i32]) -> Vec<u64> {
        let mut out = vec![0u64; self.flip.len()];
        threshold_row(&acc[..self.channels()], &self.thr, &self.flip, &mut out);
        out
    }
}

/// Per-output-channel integer steps that turn `i32` accumulators into **int8 levels** for the
/// next 2-3 bit layer: BatchNorm followed by the next layer's activation quantizer, as one
/// step function per channel, so that no float tensor exists between int8 layers.
///
/// Channel `c` maps an accumulator `acc` to `base[c] + sum_j inc[c][j] * (acc >= t[c][j])`.
/// The steps are found from any **monotone** per-channel map (non-decreasing or
/// non-increasing in the accumulator) by [`LevelThresholds::from_monotone`], which evaluates
/// it only at the binary-search points; the result equals the map at every accumulator of
/// the range given there and is the map's value at the nearest end outside it.
///
/// ```
/// use xnor_kernels::LevelThresholds;
/// // Ternary levels of round(clamp(acc / 10)): -1 up to -5, 0 in -4..=4, 1 from 5.
/// let f = |_c: usize, acc: i32| ((acc as f32 / 10.0).clamp(-1.0, 1.0)).round() as i8;
/// let lt = LevelThresholds::from_monotone(1, (-100, 100), f).unwrap();
/// assert_eq!(lt.steps(), 2);
/// assert_eq!(lt.levels(&[-5]), vec![-1, 0, 0, 0]); // one row, padded to 4 bytes
/// assert_eq!(lt.levels(&[-4])[0], 0);
/// assert_eq!(lt.levels(&[4])[0], 0);
/// assert_eq!(lt.levels(&[5])[0], 1);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LevelThresholds {
    n: usize,
    steps: usize,
    /// Channels rounded up to 16 (the AVX-512 group); padding channels are all zero.
    width: usize,
    /// `width` levels at the lowest accumulator.
    base: Vec<i32>,
    /// `steps x width` thresholds, step-major (`i32::MAX`: never).
    thr: Vec<i32>,
    /// `steps x width` level increments (0 for unused steps).
    inc: Vec<i32>,
    /// The same tables in `i16` for two rows at a time (AVX-512), per 16-channel group
    /// `1 + 2 * steps` vectors of 32 lanes (base, then each step's thresholds and
    /// increments); empty when a threshold does not fit `-32767..=32767`.
    pairs: Vec<i16>,
}

impl LevelThresholds {
    /// Finds the steps of `f(c, acc)` for channels `c < n` over accumulators
    /// `range.0 ..= range.1` (every accumulator the layer can produce: `K * max|a| * max|w|`
    /// bounds it), by binary search between consecutive level changes (`O(levels * log
    /// range)` calls of `f` per channel).
    ///
    /// `f` must be monotone in `acc` for each channel; a BatchNorm (`acc * scale + shift` in
    /// `f32`, rounding included) followed by a clamp and a quantizer whose level does not
    /// decrease with its input is.
    ///
    /// # Errors
    /// [`KernelError::Shape`] for an empty range, and for a channel whose levels are found
    /// to go both up and down between the search points (a map that is not monotone may
    /// also go unnoticed: a bump between two equal values is never evaluated).
    pub fn from_monotone(
        n: usize,
        range: (i32, i32),
        f: impl Fn(usize, i32) -> i8,
    ) -> Result<Self> {
        const OP: &str = "LevelThresholds::from_monotone";
        let (lo, hi) = range;
        if lo > hi {
            return Err(KernelError::Shape {
                op: OP,
                reason: format!("empty accumulator range {lo}..={hi}"),
            });
        }
        let mut per: Vec<(i32, Vec<(i32, i32)>)> = Vec::with_capacity(n);
        for c in 0..n {
            let base = i32::from(f(c, lo));
            let (mut x, mut v) = (lo, base);
            let top = i32::from(f(c, hi));
            let mut steps = Vec::new();
            let mut dir = 0i32;
            while v != top {
                // f(x) == v != f(hi): the first change lies in (x, hi].
                let (mut a, mut b) = (i64::from(x), i64::from(hi));
                while b - a > 1 {
                    let mid = a + (b - a) / 2;
                    if i32::from(f(c, mid as i32)) == v {
                        a = mid;
                    } else {
                        b = mid;
                    }
                }
                let b = b as i32;
                let nv = i32::from(f(c, b));
                let d = (nv - v).signum();
                if dir != 0 && d != dir || steps.len() >= 255 {
                    return Err(KernelError::Shape {
                        op: OP,
                        reason: format!(
                            "channel {c}: the levels are not monotone in the accumulator (at {b})"
                        ),
                    });
                }
                dir = d;
                steps.push((b, nv - v));
                (x, v) = (b, nv);
            }
            per.push((base, steps));
        }
        let steps = per.iter().map(|(_, s)| s.len()).max().unwrap_or(0);
        let width = n.div_ceil(16) * 16;
        let mut base = vec![0i32; width];
        let mut thr = vec![i32::MAX; steps * width];
        let mut inc = vec![0i32; steps * width];
        for (c, (b, st)) in per.iter().enumerate() {
            base[c] = *b;
            for (j, &(t, d)) in st.iter().enumerate() {
                thr[j * width + c] = t;
                inc[j * width + c] = d;
            }
        }
        // Two rows per vector in `i16` when every threshold fits: lane `e` of group `g`'s
        // 32-lane vectors is channel `16 g + 4 (e / 8) + e % 4`, the order in which a
        // signed saturating pack of two 16-channel rows leaves them. Saturating the
        // accumulators to `i16` keeps `acc >= t` for every `t` in `-32767..=32767`.
        let fits = per
            .iter()
            .flat_map(|(_, st)| st)
            .all(|&(t, _)| (-32767..=32767).contains(&t));
        let mut pairs = Vec::new();
        if fits {
            let lane = |g: usize, e: usize| 16 * g + 4 * (e / 8) + e % 4;
            for g in 0..width / 16 {
                pairs.extend((0..32).map(|e| base[lane(g, e)] as i16));
                for j in 0..steps {
                    let at = |e: usize| j * width + lane(g, e);
                    pairs.extend((0..32).map(|e| {
                        let t = thr[at(e)];
                        if inc[at(e)] == 0 { i16::MAX } else { t as i16 }
                    }));
                    pairs.extend((0..32).map(|e| inc[at(e)] as i16));
                }
            }
        }
        Ok(LevelThresholds {
            n,
            steps,
            width,
            base,
            thr,
            inc,
            pairs,
        })
    }

    /// Number of channels.
    pub fn channels(&self) -> usize {
        self.n
    }

    /// Steps of the channel with the most level changes (the epilogue's compares per value).
    pub fn steps(&self) -> usize {
        self.steps
    }

    /// Reference: the levels of one row of accumulators (`acc.len() >= channels()`), as the
    /// next int8 layer reads them: [`crate::reference::int8_stride`]`(channels())` bytes,
    /// pad bytes zero.
    ///
    /// # Panics
    /// When `acc` is shorter than [`LevelThresholds::channels`].
    pub fn levels(&self, acc: &[i32]) -> Vec<i8> {
        let mut out = vec![0i8; crate::reference::int8_stride(self.n)];
        level_row(&acc[..self.n], self, 0, &mut out);
        out
    }

    /// The levels of `acc.len() / channels()` rows of accumulators (a pooled conv output,
    /// say) into `out`, rows of [`crate::reference::int8_stride`]`(channels())` bytes, with
    /// the ISA chosen by [`crate::selected_isa`] (the same code as [`Output::Levels`]).
    ///
    /// # Errors
    /// [`KernelError::Length`] when `acc` is not whole rows or `out` has another length; an
    /// unusable `XNOR_ISA`.
    ///
    /// ```
    /// use xnor_kernels::LevelThresholds;
    /// let lt = LevelThresholds::from_monotone(2, (-9, 9), |c, a| if c == 0 { a.signum() as i8 } else { 0 }).unwrap();
    /// let mut out = [7i8; 8];
    /// lt.apply(&[-3, 5, 4, 0], &mut out).unwrap();
    /// assert_eq!(out, [-1, 0, 0, 0, 1, 0, 0, 0]);
    /// ```
    pub fn apply(&self, acc: &[i32], out: &mut [i8]) -> Result<()> {
        self.apply_with(crate::selected_isa()?, acc, out)
    }

    /// [`LevelThresholds::apply`] with an explicit ISA (an error if this CPU lacks it).
    ///
    /// # Errors
    /// As [`LevelThresholds::apply`], plus [`KernelError::Isa`] for an unavailable ISA.
    pub fn apply_with(&self, isa: Isa, acc: &[i32], out: &mut [i8]) -> Result<()> {
        const OP: &str = "LevelThresholds::apply";
        let isa = crate::binary::resolve(isa)?;
        let n = self.n;
        let rows = acc.len().checked_div(n).unwrap_or(0);
        check_len(OP, "acc", acc.len(), rows * n)?;
        let stride = crate::reference::int8_stride(n);
        check_len(OP, "out", out.len(), rows * stride)?;
        level_rows(isa, acc, rows, n, n, self, out);
        Ok(())
    }

    pub(crate) fn parts(&self) -> (usize, usize, &[i32], &[i32], &[i32]) {
        (self.steps, self.width, &self.base, &self.thr, &self.inc)
    }

    /// Asserts what the SIMD level epilogues read and write for `rows` rows of `n` channels
    /// (accumulator row stride `n_pad`, output rows of `int8_stride(n)` bytes): the table
    /// widths and lengths, and the buffers. Returns the output row stride.
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    pub(crate) fn assert_rows(
        &self,
        acc: &[i32],
        rows: usize,
        (n, n_pad): (usize, usize),
        out: &[i8],
    ) -> usize {
        let stride = crate::reference::int8_stride(n);
        let (steps, width) = (self.steps, self.width);
        assert!(n_pad >= n && width >= stride && self.n == n);
        assert!(
            self.base.len() >= width
                && self.thr.len() >= steps * width
                && self.inc.len() >= steps * width
        );
        assert!(rows == 0 || (acc.len() >= (rows - 1) * n_pad + n && out.len() >= rows * stride));
        stride
    }

    /// The `i16` tables of the two-row path (empty when thresholds do not fit).
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    pub(crate) fn pairs(&self) -> &[i16] {
        &self.pairs
    }
}

/// Writes the int8 levels of channels `from .. n` of one row of accumulators (`n =
/// acc.len()` channels) into `out` (`int8_stride(n)` bytes; pad bytes zero; bytes before
/// `from` untouched, for a SIMD caller that did those). Steps outer, channels inner (64 at a
/// time), so that the channel loops vectorise.
pub(crate) fn level_row(acc: &[i32], lt: &LevelThresholds, from: usize, out: &mut [i8]) {
    let (steps, width, base, thr, inc) = lt.parts();
    let n = acc.len();
    for c0 in (from..n).step_by(64) {
        let c1 = (c0 + 64).min(n);
        let mut buf = [0i32; 64];
        let v = &mut buf[..c1 - c0];
        v.copy_from_slice(&base[c0..c1]);
        for j in 0..steps {
            let (t, d) = (&thr[j * width + c0..], &inc[j * width + c0..]);
            for (((v, &a), &t), &d) in v.iter_mut().zip(&acc[c0..c1]).zip(t).zip(d) {
                *v += d & -i32::from(a >= t);
            }
        }
        for (o, &v) in out[c0..c1].iter_mut().zip(v.iter()) {
            *o = v as i8;
        }
    }
    out[n..].fill(0);
}

/// The levels of `rows` rows of accumulators (row stride `n_pad`, `n` channels) into rows of
/// `int8_stride(n)` bytes, with the given (available) ISA's code.
fn level_rows(
    isa: Isa,
    acc: &[i32],
    rows: usize,
    n: usize,
    n_pad: usize,
    lt: &LevelThresholds,
    out: &mut [i8],
) {
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the ISA was checked available by the caller; the function asserts the
        // slice bounds it relies on.
        Isa::Avx512 => unsafe { crate::x86::avx512::level_rows(acc, rows, n, n_pad, lt, out) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the ISA was checked available by the caller; the function asserts the
        // slice bounds it relies on.
        Isa::Avx2 => unsafe { crate::x86::avx2::level_rows(acc, rows, n, n_pad, lt, out) },
        _ => {
            let stride = crate::reference::int8_stride(n);
            for r in 0..rows {
                level_row(
                    &acc[r * n_pad..r * n_pad + n],
                    lt,
                    0,
                    &mut out[r * stride..(r + 1) * stride],
                );
            }
        }
    }
}

/// Bits `0..n` of word `w` of a packed row of `n` channels.
pub(crate) fn valid_mask(n: usize, w: usize) -> u64 {
    let rem = n - w * 64;
    if rem >= 64 {
        u64::MAX
    } else {
        (1u64 << rem) - 1
    }
}

/// Where a GEMM or conv writes its `m x n` result (row-major; for conv, NHWC).
#[derive(Debug)]
pub enum Output<'a> {
    /// The exact `i32` dot products, `m * n` values.
    I32(&'a mut [i32]),
    /// `out[r * n + c] = scale[c] * acc + bias[c]`, `m * n` values.
    Affine {
        /// Per-channel scale (`n` values).
        scale: &'a [f32],
        /// Per-channel bias (`n` values).
        bias: &'a [f32],
        /// Destination, `m * n` values.
        out: &'a mut [f32],
    },
    /// Packed signs for the next binary layer, `m * ceil(n / 64)` words, pad bits zero.
    Packed {
        /// Per-channel thresholds (`n` channels).
        thresholds: &'a Thresholds,
        /// Destination words.
        out: &'a mut [u64],
    },
    /// Int8 levels for the next 2-3 bit layer, in its input layout: `m` rows of
    /// [`crate::reference::int8_stride`]`(n)` bytes (pad bytes zero).
    Levels {
        /// Per-channel level steps (`n` channels).
        thresholds: &'a LevelThresholds,
        /// Destination bytes, `m * int8_stride(n)`.
        out: &'a mut [i8],
    },
}

impl Output<'_> {
    pub(crate) fn check(&self, op: &'static str, m: usize, n: usize) -> Result<()> {
        match self {
            Output::I32(o) => check_len(op, "out", o.len(), m * n),
            Output::Affine { scale, bias, out } => {
                check_len(op, "scale", scale.len(), n)?;
                check_len(op, "bias", bias.len(), n)?;
                check_len(op, "out", out.len(), m * n)
            }
            Output::Packed { thresholds, out } => {
                check_channels(op, thresholds.channels(), n)?;
                check_len(op, "out", out.len(), m * n.div_ceil(64))
            }
            Output::Levels { thresholds, out } => {
                check_channels(op, thresholds.channels(), n)?;
                check_len(op, "out", out.len(), m * crate::reference::int8_stride(n))
            }
        }
    }
}

/// The error for per-channel thresholds of `got` channels given to an output of `n`.
fn check_channels(op: &'static str, got: usize, n: usize) -> Result<()> {
    if got == n {
        return Ok(());
    }
    Err(KernelError::Length {
        op,
        buffer: "thresholds",
        expected: n,
        got,
    })
}

/// Writes packed signs of one row: word `w` = `lt_mask ^ flip[w]`, pad bits zero.
pub(crate) fn threshold_row(acc: &[i32], thr: &[i32], flip: &[u64], out: &mut [u64]) {
    let n = acc.len();
    for (w, o) in out.iter_mut().enumerate() {
        let lo = w * 64;
        let hi = (lo + 64).min(n);
        let mut bits = 0u64;
        for (j, (a, t)) in acc[lo..hi].iter().zip(&thr[lo..hi]).enumerate() {
            bits |= u64::from(*a < *t) << j;
        }
        *o = (bits ^ flip[w]) & valid_mask(n, w);
    }
}

/// The bounds the SIMD threshold epilogues rely on: `rows` rows of `n` accumulators at
/// stride `n_pad >= n`, `n` thresholds, the flip words and `ceil(n / 64)` output words per
/// row. Returns the output words per row.
///
/// # Panics
/// When a buffer is too short.
#[cfg(target_arch = "x86_64")]
pub(crate) fn assert_threshold_rows(
    acc: &[i32],
    rows: usize,
    (n, n_pad): (usize, usize),
    (thr, flip): (&[i32], &[u64]),
    out: &[u64],
) -> usize {
    let nw = n.div_ceil(64);
    assert!(n_pad >= n && thr.len() >= n && flip.len() >= nw);
    assert!(rows == 0 || (acc.len() >= (rows - 1) * n_pad + n && out.len() >= rows * nw));
    nw
}

/// Packed signs of `rows` rows of accumulators (row stride `n_pad`, `n` channels) into
/// `out` (`ceil(n / 64)` words per row), with the SIMD compare of the (available) ISA.
fn threshold_rows(
    isa: Isa,
    acc: &[i32],
    rows: usize,
    n: usize,
    n_pad: usize,
    th: &Thresholds,
    out: &mut [u64],
) {
    let nw = n.div_ceil(64);
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => {
            // SAFETY: the ISA was checked available by the caller; the function asserts the
            // slice bounds it relies on.
            unsafe {
                crate::x86::avx512::threshold_rows(acc, rows, n, n_pad, &th.thr, &th.flip, out)
            }
        }
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => {
            // SAFETY: as for the AVX-512 arm.
            unsafe { crate::x86::avx2::threshold_rows(acc, rows, n, n_pad, &th.thr, &th.flip, out) }
        }
        _ => {
            for r in 0..rows {
                threshold_row(
                    &acc[r * n_pad..r * n_pad + n],
                    &th.thr,
                    &th.flip,
                    &mut out[r * nw..(r + 1) * nw],
                );
            }
        }
    }
}

thread_local! {
    static ACC: std::cell::Cell<Vec<i32>> = const { std::cell::Cell::new(Vec::new()) };
}

/// Runs `f` with a per-thread `i32` buffer of at least `len` values (reused across calls).
fn with_acc<R>(len: usize, f: impl FnOnce(&mut [i32]) -> R) -> R {
    let mut buf = ACC.with(|c| c.take());
    if buf.len() < len {
        buf.resize(len, 0);
    }
    let r = f(&mut buf[..len]);
    ACC.with(|c| c.set(buf));
    r
}

/// Whether a job of `work` word-operations over `m` rows should use rayon.
pub(crate) fn want_parallel(m: usize, work: usize) -> bool {
    rayon::current_num_threads() > 1 && m > 8 && work >= 1 << 16
}

pub(crate) fn row_block(m: usize, parallel: bool) -> usize {
    if !parallel {
        return ROW_BLOCK;
    }
    let tasks = 4 * rayon::current_num_threads();
    (m.div_ceil(tasks).div_ceil(4) * 4).clamp(4, ROW_BLOCK)
}

/// Splits `out` (`per_row` elements per output row) into row blocks, computes each block's
/// accumulators (`rows x n_pad`) with `compute(row0, rows, acc)` and emits them with `emit`.
///
/// On one thread the blocks hold up to [`BLOCK_VALUES`] accumulators (at most `direct_rows`
/// rows, at least [`ROW_BLOCK`]): narrow layers then make few kernel calls, as their `I32`
/// outputs written in place do.
#[allow(clippy::too_many_arguments)]
fn blocks<T: Send, C, E>(
    out: &mut [T],
    per_row: usize,
    m: usize,
    n_pad: usize,
    parallel: bool,
    direct_rows: usize,
    compute: &C,
    emit: E,
) where
    C: Fn(usize, usize, &mut [i32]) + Sync,
    E: Fn(&[i32], usize, &mut [T]) + Sync,
{
    if m == 0 || per_row == 0 {
        return;
    }
    let rb = if parallel {
        row_block(m, parallel)
    } else {
        rows_within(BLOCK_VALUES, n_pad, direct_rows)
    };
    let body = |(bi, chunk): (usize, &mut [T])| {
        let r0 = bi * rb;
        let rows = rb.min(m - r0);
        with_acc(rows * n_pad, |acc| {
            compute(r0, rows, acc);
            emit(acc, rows, chunk);
        });
    };
    if parallel {
        out.par_chunks_mut(rb * per_row).enumerate().for_each(body);
    } else {
        out.chunks_mut(rb * per_row).enumerate().for_each(body);
    }
}

/// Rows per block when a single-threaded GEMM writes `i32` rows of the kernel's width
/// straight into the output: no block buffer is involved, so large blocks only save per-call
/// overhead (which matters when `n` and `K` are small). A multiple of every tile height.
pub(crate) const DIRECT_BLOCK: usize = 384;

/// Accumulators per single-threaded block buffer (48 KiB; rows in multiples of 96, a
/// multiple of every tile height).
const BLOCK_VALUES: usize = 12 * 1024;

/// Rows of `per_row` units that fit a budget of `budget` units, rounded down to a multiple
/// of 96 (a multiple of every tile height) and kept within `ROW_BLOCK ..= max`: the
/// single-threaded block sizes (accumulator buffers, int8 im2col blocks).
pub(crate) fn rows_within(budget: usize, per_row: usize, max: usize) -> usize {
    (budget / per_row.max(1) / 96 * 96).clamp(ROW_BLOCK, max.max(ROW_BLOCK))
}

/// Drives a blocked computation of an `m x n` result into `out`.
///
/// `compute(row0, rows, acc)` must fill `acc[r * n_pad + c]` for `r < rows`, `c < n` with the
/// exact dot products of output rows `row0 + r`. `rows` is at most [`ROW_BLOCK`] on a thread
/// pool and at most `direct_rows` (and [`ROW_BLOCK`] or more) on one thread.
#[allow(clippy::too_many_arguments)]
pub(crate) fn run<C>(
    isa: Isa,
    out: Output<'_>,
    m: usize,
    n: usize,
    n_pad: usize,
    parallel: bool,
    direct_rows: usize,
    compute: C,
) where
    C: Fn(usize, usize, &mut [i32]) + Sync,
{
    if n == 0 {
        return;
    }
    match out {
        // Rows of the kernel's width: the kernel writes straight into the output.
        Output::I32(o) if n == n_pad => {
            if m == 0 {
                return;
            }
            let rb = if parallel {
                row_block(m, parallel)
            } else {
                direct_rows.max(ROW_BLOCK)
            };
            let body = |(bi, chunk): (usize, &mut [i32])| {
                let r0 = bi * rb;
                compute(r0, rb.min(m - r0), chunk);
            };
            if parallel {
                o.par_chunks_mut(rb * n).enumerate().for_each(body);
            } else {
                o.chunks_mut(rb * n).enumerate().for_each(body);
            }
        }
        Output::I32(o) => blocks(
            o,
            n,
            m,
            n_pad,
            parallel,
            direct_rows,
            &compute,
            |acc, rows, chunk| {
                for r in 0..rows {
                    chunk[r * n..(r + 1) * n].copy_from_slice(&acc[r * n_pad..r * n_pad + n]);
                }
            },
        ),
        Output::Affine { scale, bias, out } => {
            blocks(
                out,
                n,
                m,
                n_pad,
                parallel,
                direct_rows,
                &compute,
                |acc, rows, chunk| {
                    #[cfg(target_arch = "x86_64")]
                    if isa == Isa::Avx512 {
                        // SAFETY: the ISA was checked available by the caller; the function asserts
                        // the slice bounds it relies on.
                        unsafe {
                            crate::x86::avx512::affine_rows(acc, rows, n_pad, scale, bias, chunk)
                        };
                        return;
                    }
                    for r in 0..rows {
                        let a = &acc[r * n_pad..r * n_pad + n];
                        let o = &mut chunk[r * n..(r + 1) * n];
                        for c in 0..n {
                            o[c] = scale[c] * a[c] as f32 + bias[c];
                        }
                    }
                },
            )
        }
        Output::Packed { thresholds, out } => {
            let nw = n.div_ceil(64);
            blocks(
                out,
                nw,
                m,
                n_pad,
                parallel,
                direct_rows,
                &compute,
                |acc, rows, chunk| {
                    threshold_rows(isa, acc, rows, n, n_pad, thresholds, chunk);
                },
            )
        }
        Output::Levels { thresholds, out } => {
            let stride = crate::reference::int8_stride(n);
            blocks(
                out,
                stride,
                m,
                n_pad,
                parallel,
                direct_rows,
                &compute,
                |acc, rows, chunk| level_rows(isa, acc, rows, n, n_pad, thresholds, chunk),
            )
        }
    }
}
