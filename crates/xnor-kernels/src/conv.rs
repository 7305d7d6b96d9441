//! Binary and int8 conv2d on NHWC activations and OHWI weights, via per-block im2col + GEMM.
//!
//! # Algorithm
//! Output pixels are the GEMM rows (`M = batch * Ho * Wo`), output channels its columns. Blocks
//! of output pixels (see `epilogue::run`; up to 128 for the fused `Packed` output on one
//! thread) are computed by the micro-kernels of [`crate::binary_gemm`]:
//! - with AVX-512 and the per-tap layout, runs of pixels (one per output row) are read in
//!   place, one kernel-row segment of `kw * ceil(Cin / 64)` words each; with padding the input
//!   is first copied once with zero (+1) borders, so every window lies inside the copy;
//! - with AVX-512 and the dense layout, a vectorised im2col (8 pixels per vector) writes a
//!   word-major buffer the kernel reads with a k stride;
//! - otherwise (other ISAs) pixels are gathered ("packed im2col") into a per-thread buffer
//!   reused across blocks and calls; int8 with VNNI gathers `+128` offset bytes with masked
//!   vector loads;
//! - a 1x1, stride-1, unpadded conv reads the input in place.
//!
//! The result goes through the fused [`Output`] transform. With AVX-512 and
//! [`Output::Packed`] the threshold comparison happens inside the micro-kernel (zero-padding
//! correction folded into per-border-case thresholds), so only packed bits are written.
//!
//! # Binary layout
//! Activations: each pixel's `Cin` channels in `ceil(Cin / 64)` words (bit = 1 means -1, pad
//! bits zero). Weights OHWI: per output channel, taps `(kh, kw)` row-major, each tap
//! `ceil(Cin / 64)` words. When `Cin < 64` divides 64 (16, 32 as in ResNet-20) the taps are
//! concatenated densely (`64 / Cin` taps per word) in both operands, so the GEMM does no work on
//! pad bits; otherwise each tap keeps its own words. Either way pad bits are zero, so
//! `dot = K - 2 * popcount` with the logical `K = kh * kw * Cin`.
//!
//! # Padding rule
//! [`PadMode::Zero`] (the training layers' rule): a padded position contributes exactly 0.
//! im2col writes padded taps as +1 (all bits 0), which adds `S(o, t) = sum_c w[o, t, c]` for
//! each padded tap `t`; the kernel subtracts `sum over padded taps of S(o, t)`, taken from a
//! table of per-(border case, output channel) corrections built once per input size and kept
//! by the layer (interior pixels need none). [`PadMode::One`] treats a padded position as +1 and skips the correction.
//! Int8 convs pad with the integer 0, which is exact with no correction.

use std::cell::Cell;
use std::sync::{Arc, Mutex};

use bitpack::Isa;

use crate::binary::{BinaryWeights, binary_block, check_pad_bits, resolve};
#[cfg(target_arch = "x86_64")]
use crate::epilogue::Thresholds;
use crate::epilogue::{self, Output, ROW_BLOCK};
use crate::error::{KernelError, Result, check_len, mul};
use crate::int8::{
    Int8Weights, check_act_range, int8_block, int8_block_offset, uses_offset_activations,
};
#[cfg(target_arch = "x86_64")]
use crate::int8::{Run, int8_block_offset_segments, segments_fit};
use crate::reference;
#[cfg(target_arch = "x86_64")]
use rayon::prelude::*;

/// Value a spatially padded position takes in a binary conv.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PadMode {
    /// Padded positions contribute 0 (exact, as the training layers define it).
    #[default]
    Zero,
    /// Padded positions are +1 (cheaper: no correction).
    One,
}

/// Stride, padding and padding mode of a conv2d.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conv2dConfig {
    /// Stride in both spatial dimensions.
    pub stride: usize,
    /// Padding on each side in both spatial dimensions.
    pub padding: usize,
    /// What a padded position contributes (binary convs only).
    pub pad_mode: PadMode,
}

impl Default for Conv2dConfig {
    fn default() -> Self {
        Conv2dConfig {
            stride: 1,
            padding: 0,
            pad_mode: PadMode::Zero,
        }
    }
}

/// Spatial geometry shared by the binary and int8 convs.
#[derive(Debug, Clone, Copy)]
struct Geom {
    kh: usize,
    kw: usize,
    stride: usize,
    pad: usize,
}

impl Geom {
    fn out_hw(&self, op: &'static str, h: usize, w: usize) -> Result<(usize, usize)> {
        let (hp, wp) = (h + 2 * self.pad, w + 2 * self.pad);
        if hp < self.kh || wp < self.kw {
            return Err(KernelError::Shape {
                op,
                reason: format!(
                    "input {h}x{w} with padding {} is smaller than the {}x{} kernel",
                    self.pad, self.kh, self.kw
                ),
            });
        }
        Ok((
            (hp - self.kh) / self.stride + 1,
            (wp - self.kw) / self.stride + 1,
        ))
    }

    fn taps(&self) -> usize {
        self.kh * self.kw
    }

    /// Whether this conv reads its input rows in place (1x1, stride 1, no padding).
    fn in_place(&self) -> bool {
        self.kh == 1 && self.kw == 1 && self.stride == 1 && self.pad == 0
    }

    /// Bit mask of valid kernel offsets along one axis for output coordinate `o`.
    fn valid_mask(&self, o: usize, size: usize, k: usize) -> u32 {
        let mut m = 0;
        for r in 0..k {
            let i = (o * self.stride + r).wrapping_sub(self.pad);
            if i < size {
                m |= 1 << r;
            }
        }
        m
    }
}

/// Most output rows per block of the fused threshold path on one thread (whole output rows
/// when they fit): few blocks, and runs of one output row seldom cut by a block's end (for
/// ResNet-18's 1x1 stride-2 shortcut, 28-pixel output rows, 32-row blocks cost 10%).
#[cfg(target_arch = "x86_64")]
const FUSED_ROWS: usize = 128;
#[cfg(target_arch = "x86_64")]
const _: () = assert!(FUSED_ROWS >= ROW_BLOCK && FUSED_ROWS <= 256);

/// Rows per block of the fused path on one thread for outputs `wo` pixels wide.
#[cfg(target_arch = "x86_64")]
fn fused_rows(wo: usize) -> usize {
    if wo == 0 || wo > FUSED_ROWS {
        FUSED_ROWS
    } else {
        FUSED_ROWS / wo * wo
    }
}

thread_local! {
    static COLS64: Cell<Vec<u64>> = const { Cell::new(Vec::new()) };
    static COLS8: Cell<Vec<i8>> = const { Cell::new(Vec::new()) };
    static PADDED: Cell<Vec<u64>> = const { Cell::new(Vec::new()) };
    static DD_BUF: Cell<Vec<u32>> = const { Cell::new(Vec::new()) };
    /// The layout `(batch, h, w, padding, cin)` whose zero padding `DD_BUF` holds.
    static DD_LAYOUT: Cell<[usize; 5]> = const { Cell::new([0; 5]) };
    static PADDED8: Cell<Vec<u8>> = const { Cell::new(Vec::new()) };
    /// The layout `(batch, h, w, padding, pixel bytes)` whose `0x80` padding `PADDED8` holds.
    static PADDED8_LAYOUT: Cell<[usize; 5]> = const { Cell::new([0; 5]) };
}

/// Sizes `buf`, this thread's padded-copy buffer for `layout` (keyed by `key`), to `len`
/// values. Every call of one layout writes the same interior positions and never the padding,
/// so a buffer last used for the same layout already holds its padding and is kept; any other
/// layout (or a buffer of another length) is refilled with `fill` first.
#[cfg(target_arch = "x86_64")]
fn padded_buffer<T: Copy>(
    key: &'static std::thread::LocalKey<Cell<[usize; 5]>>,
    layout: [usize; 5],
    buf: &mut Vec<T>,
    len: usize,
    fill: T,
) {
    if key.with(|c| c.replace(layout)) != layout || buf.len() != len {
        buf.clear();
        buf.resize(len, fill);
    }
}

fn with_cols<T: Default + Clone, R>(
    key: &'static std::thread::LocalKey<Cell<Vec<T>>>,
    len: usize,
    f: impl FnOnce(&mut [T]) -> R,
) -> R {
    let mut buf = key.with(|c| c.take());
    if buf.len() < len {
        buf.resize(len, T::default());
    }
    let r = f(&mut buf[..len]);
    key.with(|c| c.set(buf));
    r
}

/// Per-input-size tables of a [`BinaryConv2d`], built on the first call with a given `(h, w)`
/// (and thresholds) and reused by later calls.
#[derive(Debug, Default)]
struct ConvCache {
    /// Zero-padding corrections for `(h, w)`.
    corr: Option<(usize, usize, Arc<Corrections>)>,
    /// Fused thresholds for `(h, w)` and the thresholds they were built from.
    #[cfg(target_arch = "x86_64")]
    fused: Option<(usize, usize, Thresholds, Arc<FusedThresholds>)>,
}

/// Binary conv2d layer: prepared OHWI weights plus geometry.
#[derive(Debug)]
pub struct BinaryConv2d {
    cin: usize,
    cout: usize,
    geom: Geom,
    pad_mode: PadMode,
    /// Words per input pixel.
    cw: usize,
    /// Taps per word in the dense layout (`0` = one tap per `cw` words).
    dense: usize,
    weights: BinaryWeights,
    /// Dword panels of the direct dense kernel (3x3, `Cin` 16 or 32, stride 1 or 2, `Cout` a
    /// multiple of 16), used with AVX-512; `None` for other shapes.
    dd: Option<DirectDense>,
    /// `S(o, t) = sum_c w[o, t, c]`, `cout x taps`.
    tap_sums: Vec<i32>,
    /// Tables of the last input size (and thresholds), shared by later calls.
    cache: Mutex<ConvCache>,
}

/// Weights of the direct dense 3x3 conv (`x86/avx512.rs`, `binary_tile_dd`): `cout / 16`
/// dword panels of `dd_dwords(cin)` dwords x 16 channels. `Cin = 32`: dword `d` is tap `d`;
/// `Cin = 16`: dwords 0-2 hold taps `(0, kx)` (bits 0-15) and `(1, kx)` (bits 16-31) of
/// column `kx`, dword 3 taps `(2, 0)` and `(2, 1)`, dword 4 tap `(2, 2)` (bits 16-31 zero).
#[derive(Debug, Clone)]
struct DirectDense {
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    panels: Vec<u32>,
}

#[cfg(target_arch = "x86_64")]
impl DirectDense {
    /// The panels for OHWI weights of one word per tap, when the shape qualifies.
    fn new(weights: &[u64], cout: usize, cin: usize, geom: &Geom) -> Option<Self> {
        let shape_ok = geom.kh == 3 && geom.kw == 3 && (cin == 16 || cin == 32);
        if !shape_ok || !(1..=2).contains(&geom.stride) || cout == 0 || !cout.is_multiple_of(16) {
            return None;
        }
        let kd = crate::x86::avx512::dd_dwords(cin);
        let mut panels = vec![0u32; cout * kd];
        for o in 0..cout {
            let tap = |ky: usize, kx: usize| weights[o * 9 + ky * 3 + kx];
            for d in 0..kd {
                let v = match (cin, d) {
                    (32, _) => tap(d / 3, d % 3),
                    (_, 0..=2) => tap(0, d) | tap(1, d) << 16,
                    (_, 3) => tap(2, 0) | tap(2, 1) << 16,
                    _ => tap(2, 2),
                };
                panels[(o / 16) * kd * 16 + d * 16 + o % 16] = v as u32;
            }
        }
        Some(DirectDense { panels })
    }

    /// A copy of the panels with every dword of the channels `flip` selects complemented
    /// (pad halves included): for such a channel the kernel counts `32 * kd - popcount`.
    fn flipped(&self, cin: usize, flip: &dyn Fn(usize) -> bool) -> Vec<u32> {
        let kd = crate::x86::avx512::dd_dwords(cin);
        let mut panels = self.panels.clone();
        for o in (0..panels.len() / kd).filter(|&o| flip(o)) {
            for d in 0..kd {
                panels[(o / 16) * kd * 16 + d * 16 + o % 16] ^= !0;
            }
        }
        panels
    }
}

impl Clone for BinaryConv2d {
    fn clone(&self) -> Self {
        BinaryConv2d {
            cin: self.cin,
            cout: self.cout,
            geom: self.geom,
            pad_mode: self.pad_mode,
            cw: self.cw,
            dense: self.dense,
            weights: self.weights.clone(),
            dd: self.dd.clone(),
            tap_sums: self.tap_sums.clone(),
            cache: Mutex::default(),
        }
    }
}

impl BinaryConv2d {
    /// Prepares a binary conv from OHWI packed weights: `cout * kh * kw * ceil(cin / 64)` words
    /// with zero pad bits.
    ///
    /// # Errors
    /// Zero sizes or stride, wrong weight length, non-zero pad bits.
    ///
    /// ```
    /// use xnor_kernels::{BinaryConv2d, Conv2dConfig, Output, PadMode};
    /// // 1 input channel, 1 output channel, 3x3 all +1 weights, zero padding 1.
    /// let cfg = Conv2dConfig { stride: 1, padding: 1, pad_mode: PadMode::Zero };
    /// let conv = BinaryConv2d::new(&[0; 9], 1, 1, 3, 3, cfg).unwrap();
    /// let input = [0u64; 4]; // 2x2 image of +1
    /// let mut out = [0i32; 4];
    /// conv.forward(&input, 1, 2, 2, Output::I32(&mut out)).unwrap();
    /// assert_eq!(out, [4, 4, 4, 4]); // every output sees 4 valid +1 pixels
    /// ```
    pub fn new(
        weights: &[u64],
        cout: usize,
        cin: usize,
        kh: usize,
        kw: usize,
        cfg: Conv2dConfig,
    ) -> Result<Self> {
        const OP: &str = "BinaryConv2d::new";
        if cin == 0 || kh == 0 || kw == 0 || cfg.stride == 0 || kh > 32 || kw > 32 {
            return Err(KernelError::Shape {
                op: OP,
                reason: format!(
                    "cin={cin}, kernel {kh}x{kw}, stride {} must be non-zero (kernel <= 32)",
                    cfg.stride
                ),
            });
        }
        let geom = Geom {
            kh,
            kw,
            stride: cfg.stride,
            pad: cfg.padding,
        };
        let taps = geom.taps();
        let cw = reference::words(cin);
        let tap_words = mul(OP, cout, taps * cw)?;
        check_len(OP, "weights", weights.len(), tap_words)?;
        check_pad_bits(OP, "weights", weights, cout * taps, cin)?;
        let dense = if cin < 64 && 64usize.is_multiple_of(cin) && taps > 1 {
            64 / cin
        } else {
            0
        };
        let k = taps * cin;
        let kwords = if dense > 0 {
            reference::words(k)
        } else {
            taps * cw
        };
        let mut rows = vec![0u64; cout * kwords];
        let mut tap_sums = vec![0i32; cout * taps];
        for o in 0..cout {
            for t in 0..taps {
                let src = &weights[(o * taps + t) * cw..(o * taps + t + 1) * cw];
                let pc: u32 = src.iter().map(|v| v.count_ones()).sum();
                tap_sums[o * taps + t] = cin as i32 - 2 * pc as i32;
                if dense > 0 {
                    let bit = t * cin;
                    rows[o * kwords + bit / 64] |= src[0] << (bit % 64);
                } else {
                    rows[o * kwords + t * cw..o * kwords + (t + 1) * cw].copy_from_slice(src);
                }
            }
        }
        Ok(BinaryConv2d {
            cin,
            cout,
            geom,
            pad_mode: cfg.pad_mode,
            cw,
            dense,
            weights: BinaryWeights::with_row_words(&rows, cout, k, kwords),
            #[cfg(target_arch = "x86_64")]
            dd: DirectDense::new(weights, cout, cin, &geom),
            #[cfg(not(target_arch = "x86_64"))]
            dd: None,
            tap_sums,
            cache: Mutex::default(),
        })
    }

    /// Output channels.
    pub fn cout(&self) -> usize {
        self.cout
    }

    /// Input channels.
    pub fn cin(&self) -> usize {
        self.cin
    }

    /// The GEMM this conv runs per image: `K` (logical) and words per im2col row.
    pub fn gemm_k(&self) -> (usize, usize) {
        (self.weights.k(), self.weights.words_per_row())
    }

    /// The prepared GEMM weights (in the conv's im2col K layout).
    pub fn gemm_weights(&self) -> &BinaryWeights {
        &self.weights
    }

    /// Output spatial size for an `h x w` input.
    ///
    /// # Errors
    /// When the padded input is smaller than the kernel.
    pub fn output_hw(&self, h: usize, w: usize) -> Result<(usize, usize)> {
        self.geom.out_hw("BinaryConv2d", h, w)
    }

    /// Writes the packed im2col rows `r0 .. r0 + rows` into `dst` (`rows * kwords` words).
    ///
    /// The `kw` taps of one kernel row are consecutive input pixels, so an interior kernel row
    /// is one contiguous copy of `kw * cw` words (per-tap layout) or `kw` shifted ORs (dense).
    fn im2col(
        &self,
        input: &[u64],
        dims: (usize, usize, usize, usize),
        r0: usize,
        rows: usize,
        dst: &mut [u64],
    ) {
        let k3 = self.geom.kh == 3 && self.geom.kw == 3;
        match (self.dense, self.cin) {
            (0, _) => match self.geom.kw * self.cw {
                3 => self.im2col_taps::<3>(input, dims, r0, rows, dst),
                6 => self.im2col_taps::<6>(input, dims, r0, rows, dst),
                12 => self.im2col_taps::<12>(input, dims, r0, rows, dst),
                24 => self.im2col_taps::<24>(input, dims, r0, rows, dst),
                _ => self.im2col_taps::<0>(input, dims, r0, rows, dst),
            },
            (_, 32) if k3 => self.im2col_dense3::<32>(input, dims, r0, rows, dst),
            (_, 16) if k3 => self.im2col_dense3::<16>(input, dims, r0, rows, dst),
            (_, 32) => self.im2col_dense::<32>(input, dims, r0, rows, dst),
            (_, 16) => self.im2col_dense::<16>(input, dims, r0, rows, dst),
            (_, 8) => self.im2col_dense::<8>(input, dims, r0, rows, dst),
            (_, 4) => self.im2col_dense::<4>(input, dims, r0, rows, dst),
            (_, 2) => self.im2col_dense::<2>(input, dims, r0, rows, dst),
            _ => self.im2col_dense::<1>(input, dims, r0, rows, dst),
        }
    }

    /// Per-tap layout; `N` is `kw * cw` when known at compile time (fixed-size copies that
    /// inline), else 0.
    fn im2col_taps<const N: usize>(
        &self,
        input: &[u64],
        (h, w, ho, wo): (usize, usize, usize, usize),
        r0: usize,
        rows: usize,
        dst: &mut [u64],
    ) {
        let kwords = self.weights.words_per_row();
        let cw = self.cw;
        let Geom {
            kw, stride, pad, ..
        } = self.geom;
        let mut pos = PixelIter::new(r0, ho, wo);
        for d in dst.chunks_exact_mut(kwords).take(rows) {
            let (b, oy, ox) = pos.next();
            let ix0 = (ox * stride).wrapping_sub(pad);
            let interior_x = ox * stride >= pad && ix0 + kw <= w;
            for (kr, dr) in d.chunks_exact_mut(kw * cw).enumerate() {
                let iy = (oy * stride + kr).wrapping_sub(pad);
                if iy >= h {
                    dr.fill(0);
                    continue;
                }
                let base = (b * h + iy) * w;
                if interior_x {
                    let src = &input[(base + ix0) * cw..(base + ix0 + kw) * cw];
                    if N > 0 {
                        let d: &mut [u64; N] = dr.try_into().expect("N = kw * cw");
                        *d = src.try_into().expect("N = kw * cw");
                    } else {
                        dr.copy_from_slice(src);
                    }
                } else {
                    for (c, dt) in dr.chunks_exact_mut(cw).enumerate() {
                        let ix = ix0.wrapping_add(c);
                        if ix < w {
                            dt.copy_from_slice(&input[(base + ix) * cw..(base + ix + 1) * cw]);
                        } else {
                            dt.fill(0);
                        }
                    }
                }
            }
        }
    }

    /// [`Self::im2col_dense`] specialised to 3x3 kernels (fixed-size, fully unrolled).
    fn im2col_dense3<const CIN: usize>(
        &self,
        input: &[u64],
        (h, w, ho, wo): (usize, usize, usize, usize),
        r0: usize,
        rows: usize,
        dst: &mut [u64],
    ) {
        let kwords = self.weights.words_per_row();
        let Geom { stride, pad, .. } = self.geom;
        let per_word = 64 / CIN;
        let mut pos = PixelIter::new(r0, ho, wo);
        for d in dst.chunks_exact_mut(kwords).take(rows) {
            let (b, oy, ox) = pos.next();
            let ix0 = (ox * stride).wrapping_sub(pad);
            let interior_x = ox * stride >= pad && ix0 + 3 <= w;
            let mut vals = [0u64; 9];
            for kr in 0..3 {
                let iy = (oy * stride + kr).wrapping_sub(pad);
                if iy >= h {
                    continue;
                }
                let base = (b * h + iy) * w;
                if interior_x {
                    let src: &[u64; 3] = input[base + ix0..base + ix0 + 3]
                        .try_into()
                        .expect("three taps");
                    vals[kr * 3..kr * 3 + 3].copy_from_slice(src);
                } else {
                    for c in 0..3 {
                        let ix = ix0.wrapping_add(c);
                        if ix < w {
                            vals[kr * 3 + c] = input[base + ix];
                        }
                    }
                }
            }
            for (j, dw) in d.iter_mut().enumerate() {
                let mut word = 0u64;
                for q in 0..per_word {
                    let t = j * per_word + q;
                    if t < 9 {
                        word |= vals[t] << (q * CIN);
                    }
                }
                *dw = word;
            }
        }
    }

    /// Dense layout for `CIN` dividing 64: tap `t` occupies bits `t * CIN ..` of the row.
    fn im2col_dense<const CIN: usize>(
        &self,
        input: &[u64],
        (h, w, ho, wo): (usize, usize, usize, usize),
        r0: usize,
        rows: usize,
        dst: &mut [u64],
    ) {
        let kwords = self.weights.words_per_row();
        let Geom {
            kh,
            kw,
            stride,
            pad,
        } = self.geom;
        let per_word = 64 / CIN;
        let mut pos = PixelIter::new(r0, ho, wo);
        let mut vals = [0u64; 32 * 32];
        let vals = &mut vals[..kh * kw];
        for d in dst.chunks_exact_mut(kwords).take(rows) {
            let (b, oy, ox) = pos.next();
            let ix0 = (ox * stride).wrapping_sub(pad);
            let interior_x = ox * stride >= pad && ix0 + kw <= w;
            for (kr, vr) in vals.chunks_exact_mut(kw).enumerate() {
                let iy = (oy * stride + kr).wrapping_sub(pad);
                if iy >= h {
                    vr.fill(0);
                } else if interior_x {
                    let base = (b * h + iy) * w + ix0;
                    vr.copy_from_slice(&input[base..base + kw]);
                } else {
                    let base = (b * h + iy) * w;
                    for (c, v) in vr.iter_mut().enumerate() {
                        let ix = ix0.wrapping_add(c);
                        *v = if ix < w { input[base + ix] } else { 0 };
                    }
                }
            }
            for (j, dw) in d.iter_mut().enumerate() {
                let mut word = 0u64;
                for (q, v) in vals.iter().skip(j * per_word).take(per_word).enumerate() {
                    word |= v << (q * CIN);
                }
                *dw = word;
            }
        }
    }

    /// Writes the input with `pad` zero words (+1) around every image into `dst`:
    /// `batch x (h + 2 pad) x (w + 2 pad)` pixels of `cw` words.
    fn pad_input(&self, input: &[u64], batch: usize, h: usize, w: usize, dst: &mut Vec<u64>) {
        let (p, cw) = (self.geom.pad, self.cw);
        let (hp, wp) = (h + 2 * p, w + 2 * p);
        dst.clear();
        dst.resize(batch * hp * wp * cw, 0);
        for (s, d) in padded_rows(batch, h, w, p) {
            dst[d * cw..(d + w) * cw].copy_from_slice(&input[s * cw..(s + w) * cw]);
        }
    }

    /// Dense-layout im2col of rows `r0 .. r0 + rows` with AVX-512, **word-major**: word `j`
    /// of row `i` at `dst[j * stride_k + i]` (`stride_k >= rows + 8`, the vector stores of a
    /// run may write up to 7 words past it; later runs overwrite them).
    ///
    /// # Panics
    /// When `dst` is shorter than `kwords * stride_k` or `stride_k < rows + 8`.
    #[cfg(target_arch = "x86_64")]
    fn im2col_dense_avx512(
        &self,
        input: &[u64],
        (h, w, ho, wo): (usize, usize, usize, usize),
        r0: usize,
        rows: usize,
        dst: &mut [u64],
        stride_k: usize,
    ) {
        let kwords = self.weights.words_per_row();
        assert!(self.dense > 0 && self.cw == 1 && Isa::Avx512.is_available());
        assert!(stride_k >= rows + 8 && dst.len() >= kwords * stride_k);
        let Geom {
            kh,
            kw,
            stride,
            pad,
        } = self.geom;
        let mut pos = PixelIter::new(r0, ho, wo);
        let mut i = 0;
        while i < rows {
            let (b, oy, ox) = pos.peek();
            let len = (rows - i).min(wo - ox);
            let img = &input[b * h * w..(b + 1) * h * w];
            // SAFETY: AVX-512 is available; img holds the h * w one-word pixels of image b;
            // for every word j, dst[j * stride_k + i ..] holds at least
            // stride_k - rows + len >= len + 8 words (asserted above).
            unsafe {
                crate::x86::avx512::im2col_dense_row(
                    img.as_ptr(),
                    (h, w),
                    (kh, kw, stride, pad),
                    self.cin,
                    (oy, ox, len),
                    dst.as_mut_ptr().add(i),
                    stride_k,
                )
            }
            pos.advance(len);
            i += len;
        }
    }

    /// Splits output rows `r0 .. r0 + rows` of the per-tap layout into runs read in place,
    /// one per output row (segment `kr` of a run's first pixel at `run.a_off + offs[kr]`
    /// words), and hands them to `f(offs, runs)` up to 32 runs at a time. `dims` is an
    /// unpadded input (the pre-padded copy, or the input of an unpadded conv), so every output
    /// pixel's window lies inside it.
    #[cfg(target_arch = "x86_64")]
    fn block_runs(
        &self,
        (h, w, ho, wo): (usize, usize, usize, usize),
        r0: usize,
        rows: usize,
        mut f: impl FnMut(&[usize], &[Run]),
    ) {
        let Geom { kh, stride, .. } = self.geom;
        let cw = self.cw;
        assert!(kh <= 32);
        let mut offs = [0; 32];
        for (kr, o) in offs.iter_mut().enumerate().take(kh) {
            *o = kr * w * cw;
        }
        let mut runs = [Run::default(); 32];
        let mut n = 0;
        let mut pos = PixelIter::new(r0, ho, wo);
        let mut r = 0;
        while r < rows {
            let (b, oy, ox) = pos.peek();
            let len = (rows - r).min(wo - ox);
            runs[n] = Run {
                a_off: ((b * h + oy * stride) * w + ox * stride) * cw,
                r0: r,
                len,
            };
            n += 1;
            pos.advance(len);
            r += len;
            if n == runs.len() || r == rows {
                f(&offs[..kh], &runs[..n]);
                n = 0;
            }
        }
    }

    /// Computes rows `r0 .. r0 + rows` with the AVX-512 kernel reading the input in place: a
    /// run of consecutive output pixels of one output row is one segment list (one segment
    /// per kernel row, `kw * cw` words each, consecutive pixels `stride * cw` words apart),
    /// and all runs of the block are one kernel call. `input` and `dims` are the pre-padded
    /// copy or the input of an unpadded conv.
    #[cfg(target_arch = "x86_64")]
    fn direct_block(
        &self,
        input: &[u64],
        dims: (usize, usize, usize, usize),
        r0: usize,
        rows: usize,
        acc: &mut [i32],
    ) {
        let (g, cw) = (self.geom, self.cw);
        self.block_runs(dims, r0, rows, |offs, runs| {
            crate::binary::binary_block_segments_avx512(
                input,
                offs,
                g.kw * cw,
                g.stride * cw,
                1,
                runs,
                &self.weights,
                acc,
            );
        });
    }

    /// Fused-threshold block (AVX-512): computes output rows `r0 .. r0 + rows` (at most
    /// [`FUSED_ROWS`]) and writes their packed signs into `chunk` (`rows * ceil(cout / 64)`
    /// words). The per-tap layout is read in place, one run per output row, from the
    /// pre-padded copy or the unpadded input (`pad = 0`: every pixel is interior); the dense
    /// layout goes through im2col. Each row compares with the thresholds of its border case
    /// (zero-padding correction folded in).
    #[cfg(target_arch = "x86_64")]
    #[allow(clippy::too_many_arguments)]
    fn packed_block(
        &self,
        input: &[u64],
        dims: (usize, usize, usize, usize),
        r0: usize,
        rows: usize,
        in_place: bool,
        fused: &FusedThresholds,
        chunk: &mut [u64],
    ) {
        let (_, _, ho, wo) = dims;
        let Geom { kw, stride, .. } = self.geom;
        let (cw, kwords) = (self.cw, self.weights.words_per_row());
        let nw = self.cout.div_ceil(64);
        assert!(rows <= FUSED_ROWS && chunk.len() >= rows * nw);
        chunk.fill(0);
        let bytes: &mut [u8] = bytemuck::cast_slice_mut(chunk);
        let ostride = nw * 8;
        let mut thr = [std::ptr::null::<i32>(); FUSED_ROWS];
        let mut pos = PixelIter::new(r0, ho, wo);
        for t in &mut thr[..rows] {
            let (_, oy, ox) = pos.next();
            *t = fused.row_ptr(oy, ox);
        }
        let panels = match &fused.panels {
            Panels::Words(p) => &p[..],
            _ => &[],
        };
        let call = |a: &[u64],
                    offs: &[usize],
                    geom: (usize, usize, usize),
                    runs: &[Run],
                    t: &[*const i32],
                    o: &mut [u8]| {
            // SAFETY: the threshold rows hold n_pad values; binary_block_thr_avx512 checks
            // the activation and output bounds.
            unsafe {
                crate::binary::binary_block_thr_avx512(
                    a,
                    offs,
                    geom.0,
                    geom.1,
                    geom.2,
                    runs,
                    &self.weights,
                    t,
                    (o, ostride),
                    panels,
                )
            }
        };
        let all = [Run {
            a_off: 0,
            r0: 0,
            len: rows,
        }];
        if in_place {
            call(
                &input[r0 * kwords..(r0 + rows) * kwords],
                &[0],
                (kwords, kwords, 1),
                &all,
                &thr[..rows],
                bytes,
            );
            return;
        }
        if self.dense > 0 {
            let stride_k = rows + 8;
            with_cols(&COLS64, kwords * stride_k, |cols| {
                self.im2col_dense_avx512(input, dims, r0, rows, cols, stride_k);
                call(cols, &[0], (kwords, 1, stride_k), &all, &thr[..rows], bytes);
            });
            return;
        }
        // Runs of one output row each, read in place. The input is pre-padded or the conv
        // unpadded, so every pixel is interior.
        self.block_runs(dims, r0, rows, |offs, runs| {
            call(
                input,
                offs,
                (kw * cw, stride * cw, 1),
                runs,
                &thr[..rows],
                bytes,
            );
        });
    }

    /// Builds the pre-padded inputs of the direct dense kernel in `buf`: `batch` images of
    /// `(h + 2p) x (w + 2p)` pixels, one `u32` per pixel (padded positions 0, i.e. +1,
    /// corrected like im2col's) followed, for `Cin = 16`, by the same pixels as `u16` and by
    /// the vertical pairs `pixel(y, x) | pixel(y + 1, x) << 16` (one `u32` per pixel; those
    /// of an image's last row pair it with the next image and are never read); 16 bytes of
    /// slack after each. Returns the byte offsets of the `u16` copy and of the pairs (0 for
    /// `Cin = 32`), or `None` when a pad bit of the input is set.
    #[cfg(target_arch = "x86_64")]
    fn dd_input(
        &self,
        input: &[u64],
        batch: usize,
        h: usize,
        w: usize,
        buf: &mut Vec<u32>,
    ) -> Option<(usize, usize)> {
        let p = self.geom.pad;
        let (hp, wp) = (h + 2 * p, w + 2 * p);
        let np = batch * hp * wp;
        let len32 = np + 4;
        let (len16, lenv) = if self.cin == 16 {
            (np.div_ceil(2) + 4, np + 4)
        } else {
            (0, 0)
        };
        // Zero padding and slack are written only on a layout change (stride 2 writes and
        // reads only a subset of the pixels stride 1 writes, see below).
        padded_buffer(
            &DD_LAYOUT,
            [batch, h, w, p, self.cin],
            buf,
            len32 + len16 + lenv,
            0,
        );
        let (b32, rest) = buf.split_at_mut(len32);
        let (b16, bv) = rest.split_at_mut(len16);
        let mut any = 0;
        // Stride 2 reads only the even padded rows of every copy (kernel rows 0-1 as pairs at
        // row 2 oy, row 2 as u16 pairs and singles at row 2 oy + 2): odd rows are not stored,
        // only paired into the even row above while they are narrowed (Cin = 16).
        let s2 = self.geom.stride == 2 && lenv > 0;
        for (row, (s, d)) in padded_rows(batch, h, w, p).enumerate() {
            let odd = s2 && (row % h + p) % 2 == 1;
            let pairs = if odd {
                (
                    b32[d - wp..d - wp + w].as_ptr(),
                    bv[d - wp..d - wp + w].as_mut_ptr(),
                )
            } else {
                (std::ptr::null(), std::ptr::null_mut())
            };
            let (d32, d16) = if odd {
                (std::ptr::null_mut(), std::ptr::null_mut())
            } else if len16 > 0 {
                (
                    b32[d..d + w].as_mut_ptr(),
                    b16[..np.div_ceil(2)]
                        .as_mut_ptr()
                        .cast::<u16>()
                        .wrapping_add(d),
                )
            } else {
                (b32[d..d + w].as_mut_ptr(), std::ptr::null_mut())
            };
            // SAFETY: AVX-512 is available (callers use this path only then); the source row
            // holds w words, the destinations w values from pixel d (d + w <= np; the u16
            // copy holds np values), the pairs and the row above w values from pixel d - wp
            // (an odd row has an even row above it; sliced above).
            any |= unsafe {
                crate::x86::avx512::narrow_pixels(input[s..s + w].as_ptr(), w, d32, d16, pairs)
            };
            // An even row whose next row is padding pairs with zeros.
            if s2 && !odd && row % h == h - 1 {
                bv[d..d + w].copy_from_slice(&b32[d..d + w]);
            }
        }
        if lenv > 0 && !s2 {
            for (i, v) in bv[..np - wp].iter_mut().enumerate() {
                *v = b32[i] | b32[i + wp] << 16;
            }
        }
        (any >> self.cin == 0).then_some((len32 * 4, (len32 + len16) * 4))
    }

    /// Output rows `r0 .. r0 + rows` with the direct dense kernel on the pre-padded input
    /// `buf` (see [`BinaryConv2d::dd_input`]; `(b16, bv)` the byte offsets of its `u16` copy
    /// and vertical pairs),
    /// `dims = (hp, wp, ho, wo)`: `I32` rows into `acc` (row stride `cout`), or, with `fused`,
    /// packed signs into `chunk` (`rows * ceil(cout / 64)` words).
    #[cfg(target_arch = "x86_64")]
    #[allow(clippy::too_many_arguments)]
    fn dd_block(
        &self,
        buf: &[u32],
        (b16, bv): (usize, usize),
        (hp, wp, ho, wo): (usize, usize, usize, usize),
        r0: usize,
        rows: usize,
        fused: Option<&FusedThresholds>,
        acc: &mut [i32],
        chunk: &mut [u64],
    ) {
        use crate::x86::avx512::{DdOut, binary_run_dd};
        let dd = self.dd.as_ref().expect("direct dense weights");
        let (cin, s, cout) = (self.cin, self.geom.stride, self.cout);
        let kd = crate::x86::avx512::dd_dwords(cin);
        let bytes = buf.len() * 4;
        let nw = cout.div_ceil(64);
        let o = DdOut {
            acc: acc.as_mut_ptr(),
            acc_stride: cout,
            thr: std::ptr::null(),
            xoff: std::ptr::null(),
            out: chunk.as_mut_ptr().cast(),
            out_stride: nw * 8,
        };
        match fused {
            Some(f) => {
                assert!(chunk.len() >= rows * nw);
                assert!(f.rows.len() >= cout && f.x_off.len() == wo && f.y_off.len() == ho);
                chunk.fill(0);
            }
            None => assert!(acc.len() >= rows * cout),
        }
        // Dword d of the pixel whose window starts at padded pixel `base` is read at byte
        // `rel[d] + base * unit[d]` (unit 2 for the u16 copy, 4 otherwise).
        let (mut rel, mut unit) = ([0usize; 9], [4usize; 9]);
        if cin == 32 {
            for (d, o) in rel.iter_mut().enumerate() {
                *o = ((d / 3) * wp + d % 3) * 4;
            }
        } else {
            for (kx, o) in rel.iter_mut().enumerate().take(3) {
                *o = bv + kx * 4;
            }
            (rel[3], unit[3]) = (b16 + 4 * wp, 2);
            rel[4] = (2 * wp + 2) * 4;
        }
        let window = |b: usize, oy: usize, ox: usize| (b * hp + oy * s) * wp + ox * s;
        if rows > 0 {
            // Windows advance with the output pixel, so the block's last pixel reads furthest.
            let q = r0 + rows - 1;
            let last = window(q / (ho * wo), q / wo % ho, q % wo);
            for d in 0..kd {
                assert!(
                    rel[d] + last * unit[d] + 4 <= bytes,
                    "direct dense read out of bounds"
                );
            }
        }
        for (r, (b, oy, ox), len) in row_runs(r0, rows, ho, wo) {
            let base = window(b, oy, ox);
            let offs: [usize; 9] = std::array::from_fn(|d| rel[d] + base * unit[d]);
            let mut or = DdOut {
                acc: o.acc.wrapping_add(r * cout),
                out: o.out.wrapping_add(r * nw * 8),
                ..o
            };
            if let Some(f) = fused {
                // The thresholds of output row oy's border case; x_off picks the column's
                // (offsets within f.rows, each row cout values: checked when f was built).
                or.thr = f.rows[f.y_off[oy]..].as_ptr();
                or.xoff = f.x_off[ox..ox + len].as_ptr();
            }
            let args = (buf.as_ptr().cast::<u8>(), &offs[..], len);
            let w = match fused.map(|f| &f.panels) {
                Some(Panels::Dwords(p)) => p.as_ptr(),
                _ => dd.panels.as_ptr(),
            };
            let (np, k) = (cout / 16, self.weights.k() as i32);
            // SAFETY: AVX-512 is available; every activation read is in bounds (asserted);
            // the panels hold cout / 16 panels of kd * 16 dwords; acc / chunk hold the rows of
            // the run (asserted), every threshold row cout values (FusedThresholds).
            unsafe {
                macro_rules! run {
                    ($cin:literal, $s:literal, $fused:literal) => {
                        binary_run_dd::<$cin, $s, $fused>(args.0, args.1, args.2, w, np, k, or)
                    };
                }
                match (cin, s, fused.is_some()) {
                    (16, 1, false) => run!(16, 1, false),
                    (16, 1, true) => run!(16, 1, true),
                    (16, _, false) => run!(16, 2, false),
                    (16, _, true) => run!(16, 2, true),
                    (_, 1, false) => run!(32, 1, false),
                    (_, 1, true) => run!(32, 1, true),
                    (_, _, false) => run!(32, 2, false),
                    (_, _, true) => run!(32, 2, true),
                }
            }
        }
    }

    /// The zero-padding corrections for an `h x w` input, from the cache when the last call
    /// had the same size.
    fn cached_corrections(&self, h: usize, w: usize, ho: usize, wo: usize) -> Arc<Corrections> {
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((ch, cw, c)) = &cache.corr
            && (*ch, *cw) == (h, w)
        {
            return Arc::clone(c);
        }
        let c = Arc::new(self.corrections(h, w, ho, wo));
        cache.corr = Some((h, w, Arc::clone(&c)));
        c
    }

    /// The fused thresholds for `thresholds` and an `h x w` input, from the cache when the
    /// last fused call had the same size and equal thresholds.
    #[cfg(target_arch = "x86_64")]
    fn cached_fused(
        &self,
        thresholds: &Thresholds,
        corr: Option<&Corrections>,
        h: usize,
        w: usize,
    ) -> Arc<FusedThresholds> {
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((ch, cw, t, f)) = &cache.fused
            && (*ch, *cw) == (h, w)
            && t == thresholds
        {
            return Arc::clone(f);
        }
        // The conv runs the direct dense dword panels when it has them (AVX-512 is the only
        // fused ISA), else the 8-channel word panels.
        let bits = match &self.dd {
            Some(_) => 32 * crate::x86::avx512::dd_dwords(self.cin),
            None => 64 * self.weights.words_per_row(),
        };
        let dims = (self.cout, self.weights.n_pad(), self.weights.k(), bits);
        let hw_out = self.output_hw(h, w).expect("checked by the caller");
        let f = Arc::new(FusedThresholds::new(
            thresholds,
            corr,
            hw_out,
            dims,
            |flip| match &self.dd {
                Some(dd) => Panels::Dwords(dd.flipped(self.cin, flip)),
                None => Panels::Words(self.weights.flipped_panels(flip)),
            },
        ));
        cache.fused = Some((h, w, thresholds.clone(), Arc::clone(&f)));
        f
    }

    /// Per-(border case, channel) corrections for zero padding: `(row class per oy, col class
    /// per ox, number of col classes, table)`, `table[(yc * ncols + xc) * cout + o]`.
    fn corrections(&self, h: usize, w: usize, ho: usize, wo: usize) -> Corrections {
        let g = &self.geom;
        let (ys, yi) = classes(ho, |o| g.valid_mask(o, h, g.kh));
        let (xs, xi) = classes(wo, |o| g.valid_mask(o, w, g.kw));
        let taps = g.taps();
        let mut table = vec![0i32; ys.len() * xs.len() * self.cout];
        for (a, &ym) in ys.iter().enumerate() {
            for (b, &xm) in xs.iter().enumerate() {
                let t = &mut table[(a * xs.len() + b) * self.cout..][..self.cout];
                for r in 0..g.kh {
                    for c in 0..g.kw {
                        if (ym >> r) & 1 == 1 && (xm >> c) & 1 == 1 {
                            continue;
                        }
                        for (o, v) in t.iter_mut().enumerate() {
                            *v += self.tap_sums[o * taps + r * g.kw + c];
                        }
                    }
                }
            }
        }
        let interior_y = ys.iter().position(|&m| m == (1u32 << g.kh) - 1);
        let interior_x = xs.iter().position(|&m| m == (1u32 << g.kw) - 1);
        let border_cols = (0..wo)
            .filter(|&ox| interior_x != Some(usize::from(xi[ox])))
            .collect();
        Corrections {
            yi,
            xi,
            ncols: xs.len(),
            interior: interior_y.zip(interior_x),
            border_cols,
            table,
        }
    }

    /// Runs the conv with the ISA chosen by [`crate::selected_isa`]. `input` is NHWC packed,
    /// `batch * h * w * ceil(cin / 64)` words; the output has `batch * ho * wo` rows of `cout`.
    ///
    /// # Errors
    /// Wrong lengths, non-zero pad bits, a kernel larger than the padded input, an unusable
    /// `XNOR_ISA`.
    pub fn forward(
        &self,
        input: &[u64],
        batch: usize,
        h: usize,
        w: usize,
        out: Output<'_>,
    ) -> Result<()> {
        self.forward_with(crate::selected_isa()?, input, batch, h, w, out)
    }

    /// [`BinaryConv2d::forward`] with an explicit ISA.
    ///
    /// # Errors
    /// As [`BinaryConv2d::forward`], plus an unavailable ISA.
    pub fn forward_with(
        &self,
        isa: Isa,
        input: &[u64],
        batch: usize,
        h: usize,
        w: usize,
        out: Output<'_>,
    ) -> Result<()> {
        const OP: &str = "BinaryConv2d::forward";
        let isa = resolve(isa)?;
        let (ho, wo) = self.output_hw(h, w)?;
        let pixels = mul(OP, mul(OP, batch, h)?, w)?;
        check_len(OP, "input", input.len(), mul(OP, pixels, self.cw)?)?;
        let m = batch * ho * wo;
        out.check(OP, m, self.cout)?;
        // AVX-512, 3x3, Cin 16 or 32: the direct dense kernel on pre-padded narrow copies of
        // the input (built here, which also checks the pad bits), no im2col.
        #[cfg(target_arch = "x86_64")]
        if isa == Isa::Avx512 && self.dd.is_some() && m > 0 {
            let mut buf = DD_BUF.with(|c| c.take());
            let offs16 = self.dd_input(input, batch, h, w, &mut buf);
            let r = match offs16 {
                Some(offs16) => self.forward_dd(&buf, offs16, batch, (h, w, ho, wo), out),
                None => check_pad_bits(OP, "input", input, pixels, self.cin),
            };
            DD_BUF.with(|c| c.set(buf));
            r?;
            assert!(
                offs16.is_some(),
                "dd_input reported a pad bit the check did not find"
            );
            return Ok(());
        }
        check_pad_bits(OP, "input", input, pixels, self.cin)?;
        let kwords = self.weights.words_per_row();
        let n_pad = self.weights.n_pad();
        let dims = (h, w, ho, wo);
        let corr = (self.pad_mode == PadMode::Zero && self.geom.pad > 0)
            .then(|| self.cached_corrections(h, w, ho, wo));
        let parallel = epilogue::want_parallel(m, m * self.cout * kwords);
        let in_place = self.geom.in_place();
        // AVX-512 and the per-tap layout: interior pixels are read in place (no im2col).
        let direct = cfg!(target_arch = "x86_64") && isa == Isa::Avx512 && self.dense == 0;
        // With padding, one padded copy of the input (padded positions +1, i.e. zero words,
        // corrected exactly like im2col's) makes every output pixel interior: no border
        // im2col, and runs span whole output rows.
        let prepad = direct && self.geom.pad > 0 && m > 0;
        let mut padded = Vec::new();
        if prepad {
            padded = PADDED.with(|c| c.take());
            self.pad_input(input, batch, h, w, &mut padded);
        }
        // What the in-place paths read: the padded copy, or the input of an unpadded conv.
        #[cfg(target_arch = "x86_64")]
        let (src, sdims) = if prepad {
            let p = self.geom.pad;
            (&padded[..], (h + 2 * p, w + 2 * p, ho, wo))
        } else {
            (input, dims)
        };
        #[cfg(target_arch = "x86_64")]
        let out = match (isa, out) {
            (Isa::Avx512, Output::Packed { thresholds, out }) => {
                // Fused path: the kernel compares with the thresholds and writes packed bits.
                let fused = self.cached_fused(thresholds, corr.as_deref(), h, w);
                let nw = self.cout.div_ceil(64);
                let rb = if parallel {
                    epilogue::row_block(m, parallel)
                } else {
                    fused_rows(wo)
                };
                let body = |(bi, chunk): (usize, &mut [u64])| {
                    let r0 = bi * rb;
                    let rows = rb.min(m - r0);
                    self.packed_block(src, sdims, r0, rows, in_place, &fused, chunk);
                };
                if m > 0 && nw > 0 {
                    if parallel {
                        out.par_chunks_mut(rb * nw).enumerate().for_each(body);
                    } else {
                        out.chunks_mut(rb * nw).enumerate().for_each(body);
                    }
                }
                if prepad {
                    PADDED.with(|c| c.set(padded));
                }
                return Ok(());
            }
            (_, out) => out,
        };
        epilogue::run(
            isa,
            out,
            m,
            self.cout,
            n_pad,
            parallel,
            ROW_BLOCK,
            |r0, rows, acc| {
                if in_place {
                    binary_block(
                        isa,
                        &input[r0 * kwords..(r0 + rows) * kwords],
                        rows,
                        &self.weights,
                        acc,
                    );
                } else if direct {
                    #[cfg(target_arch = "x86_64")]
                    self.direct_block(src, sdims, r0, rows, acc);
                } else if cfg!(target_arch = "x86_64") && isa == Isa::Avx512 {
                    // Dense layout: vectorised word-major im2col.
                    #[cfg(target_arch = "x86_64")]
                    {
                        let stride_k = rows + 8;
                        with_cols(&COLS64, kwords * stride_k, |cols| {
                            self.im2col_dense_avx512(input, dims, r0, rows, cols, stride_k);
                            crate::binary::binary_block_segments_avx512(
                                cols,
                                &[0],
                                kwords,
                                1,
                                stride_k,
                                &[Run {
                                    a_off: 0,
                                    r0: 0,
                                    len: rows,
                                }],
                                &self.weights,
                                acc,
                            );
                        });
                    }
                } else {
                    with_cols(&COLS64, rows * kwords, |cols| {
                        self.im2col(input, dims, r0, rows, cols);
                        binary_block(isa, cols, rows, &self.weights, acc);
                    });
                }
                if let Some(c) = &corr {
                    c.apply(r0, rows, ho, wo, self.cout, acc, n_pad);
                }
            },
        );
        if prepad {
            PADDED.with(|c| c.set(padded));
        }
        Ok(())
    }
}

#[cfg(target_arch = "x86_64")]
impl BinaryConv2d {
    /// The forward pass on the direct dense kernel: `buf` is the pre-padded input from
    /// [`BinaryConv2d::dd_input`] (`offs16` the byte offsets of its `u16` copy and vertical
    /// pairs).
    fn forward_dd(
        &self,
        buf: &[u32],
        offs16: (usize, usize),
        batch: usize,
        (h, w, ho, wo): (usize, usize, usize, usize),
        out: Output<'_>,
    ) -> Result<()> {
        let p = self.geom.pad;
        let m = batch * ho * wo;
        let dims = (h + 2 * p, w + 2 * p, ho, wo);
        let corr = (self.pad_mode == PadMode::Zero && p > 0)
            .then(|| self.cached_corrections(h, w, ho, wo));
        let work = m * self.cout * crate::x86::avx512::dd_dwords(self.cin) / 2;
        let parallel = epilogue::want_parallel(m, work);
        let n_pad = self.weights.n_pad();
        if let Output::Packed { thresholds, out } = out {
            let fused = self.cached_fused(thresholds, corr.as_deref(), h, w);
            let nw = self.cout.div_ceil(64);
            // No per-block buffers here: one block per task (about 4 per thread), or the
            // whole output on one thread.
            let rb = if parallel {
                m.div_ceil(4 * rayon::current_num_threads()).max(ROW_BLOCK)
            } else {
                m
            };
            let body = |(bi, chunk): (usize, &mut [u64])| {
                let r0 = bi * rb;
                let rows = rb.min(m - r0);
                self.dd_block(buf, offs16, dims, r0, rows, Some(&fused), &mut [], chunk);
            };
            if parallel {
                out.par_chunks_mut(rb * nw).enumerate().for_each(body);
            } else {
                out.chunks_mut(rb * nw).enumerate().for_each(body);
            }
            return Ok(());
        }
        epilogue::run(
            Isa::Avx512,
            out,
            m,
            self.cout,
            n_pad,
            parallel,
            // I32 rows are written in place (no block buffer): large blocks.
            1024,
            |r0, rows, acc| {
                assert_eq!(n_pad, self.cout);
                self.dd_block(buf, offs16, dims, r0, rows, None, acc, &mut []);
                if let Some(c) = &corr {
                    c.apply(r0, rows, ho, wo, self.cout, acc, n_pad);
                }
            },
        );
        Ok(())
    }
}

/// Thresholds for the fused AVX-512 path, in the **popcount domain**: one row of `n_pad`
/// `i32` per border case. Channel `c` of a pixel is negative (bit 1) exactly when
/// `(acc - corr < t) ^ flip`, with `acc = K - 2 * pc`; that is `K - corr - t < 2 * pc`, i.e.
/// `pc >= floor((K - corr - t) / 2) + 1` (computed in `i64`, exact), so the kernel compares
/// popcounts directly. As `0 <= pc <= K`, the threshold is clamped to `0 ..= K + 1` without
/// changing any comparison (`K + 1`: never; constant channels, `t = i32::MIN`, get `K + 1`).
///
/// The flip and the valid channels are folded in, so that the kernels' epilogue is one
/// compare and a mask store per 16 channels (measured 12-13% faster on ResNet-20's 16-channel
/// layers than XORing flip bytes and ANDing valid bytes; an XOR of the counts with a flip
/// mask gained nothing): a flipped channel's weight lanes are complemented in a copy of the
/// panels (`panels`), pad bits included, so the kernel counts `pc' = B - pc` with `B` the
/// bits per row of the panels (`64 * words` or `32 * dwords`), and its bit
/// `!(pc >= thr) <=> pc < thr <=> pc' >= B - thr + 1` becomes a plain compare with the
/// threshold `B - thr + 1`. Channels beyond `cout` get `i32::MAX` (never), so their bits stay
/// zero.
#[cfg(target_arch = "x86_64")]
#[derive(Debug)]
struct FusedThresholds {
    /// `cases x n_pad` popcount thresholds (a single row without corrections).
    rows: Vec<i32>,
    /// Offsets into `rows` of the case row of output row `oy` and column `ox` (their sum is
    /// the row of pixel `(oy, ox)`; zeros without corrections).
    y_off: Vec<usize>,
    x_off: Vec<usize>,
    /// The conv's weight panels with the flipped channels complemented (the direct dense
    /// dword panels or the 8-channel word panels, whichever the conv runs); empty when no
    /// channel is flipped (the conv's own panels are used).
    panels: Panels,
}

/// Weight panels of [`FusedThresholds`].
#[cfg(target_arch = "x86_64")]
#[derive(Debug)]
enum Panels {
    /// No channel flipped.
    Own,
    /// Flipped copy of the 8-channel word panels.
    Words(Vec<u64>),
    /// Flipped copy of the direct dense dword panels.
    Dwords(Vec<u32>),
}

#[cfg(target_arch = "x86_64")]
impl FusedThresholds {
    /// `bits` is `B`, the bits per row of the panels the conv runs; `flipped_panels` makes
    /// their copy with the channels it is given complemented.
    fn new(
        th: &Thresholds,
        corr: Option<&Corrections>,
        (ho, wo): (usize, usize),
        (cout, n_pad, k, bits): (usize, usize, usize, usize),
        flipped_panels: impl FnOnce(&dyn Fn(usize) -> bool) -> Panels,
    ) -> Self {
        let t = th.normalised();
        let never = k as i64 + 1;
        let flips = th.flip_words();
        let flipped = |ch: usize| ch < cout && flips[ch / 64] >> (ch % 64) & 1 == 1;
        let pc_thr = |ch: usize, corr: i32| -> i32 {
            if ch >= cout {
                return i32::MAX;
            }
            let t = if t[ch] == i32::MIN {
                never
            } else {
                (k as i64 - i64::from(corr) - i64::from(t[ch])).div_euclid(2) + 1
            };
            let t = t.clamp(0, never);
            (if flipped(ch) { bits as i64 - t + 1 } else { t }) as i32
        };
        let (rows, (y_off, x_off)) = match corr {
            None => (
                (0..n_pad).map(|ch| pc_thr(ch, 0)).collect(),
                (vec![0; ho], vec![0; wo]),
            ),
            Some(c) => {
                let ncases = c.table.len() / cout.max(1);
                let mut rows = Vec::with_capacity(ncases * n_pad);
                for ci in 0..ncases {
                    let tc = &c.table[ci * cout..(ci + 1) * cout];
                    rows.extend((0..n_pad).map(|ch| pc_thr(ch, tc.get(ch).copied().unwrap_or(0))));
                }
                let y_off = c.yi.iter().map(|&y| usize::from(y) * c.ncols * n_pad);
                let x_off = c.xi.iter().map(|&x| usize::from(x) * n_pad);
                (rows, (y_off.collect(), x_off.collect()))
            }
        };
        let panels = if (0..cout).any(flipped) {
            flipped_panels(&flipped)
        } else {
            Panels::Own
        };
        FusedThresholds {
            rows,
            y_off,
            x_off,
            panels,
        }
    }

    /// The popcount thresholds of output pixel `(oy, ox)`: a pointer to `n_pad` values of
    /// `rows` (`oy`, `ox` inside the output it was built for).
    #[inline]
    fn row_ptr(&self, oy: usize, ox: usize) -> *const i32 {
        let off = self.y_off[oy] + self.x_off[ox];
        self.rows.as_ptr().wrapping_add(off)
    }
}

/// Distinct values of `f(o)` for `o < n`, and the class index of each `o`.
fn classes(n: usize, f: impl Fn(usize) -> u32) -> (Vec<u32>, Vec<u16>) {
    let mut vals = Vec::new();
    let mut idx = Vec::with_capacity(n);
    for o in 0..n {
        let v = f(o);
        let i = vals.iter().position(|&x| x == v).unwrap_or_else(|| {
            vals.push(v);
            vals.len() - 1
        });
        idx.push(i as u16);
    }
    (vals, idx)
}

/// Walks output pixels `(batch, oy, ox)` in row order without divisions.
struct PixelIter {
    b: usize,
    oy: usize,
    ox: usize,
    ho: usize,
    wo: usize,
}

impl PixelIter {
    fn new(row: usize, ho: usize, wo: usize) -> Self {
        PixelIter {
            b: row / (ho * wo),
            oy: row / wo % ho,
            ox: row % wo,
            ho,
            wo,
        }
    }

    /// The current pixel.
    fn peek(&self) -> (usize, usize, usize) {
        (self.b, self.oy, self.ox)
    }

    /// Skips `n` pixels.
    fn advance(&mut self, n: usize) {
        self.ox += n;
        while self.ox >= self.wo {
            self.ox -= self.wo;
            self.oy += 1;
            if self.oy == self.ho {
                self.oy = 0;
                self.b += 1;
            }
        }
    }

    /// The current pixel; advances to the next.
    #[inline]
    fn next(&mut self) -> (usize, usize, usize) {
        let cur = (self.b, self.oy, self.ox);
        self.ox += 1;
        if self.ox == self.wo {
            self.ox = 0;
            self.oy += 1;
            if self.oy == self.ho {
                self.oy = 0;
                self.b += 1;
            }
        }
        cur
    }
}

/// The stretches of consecutive pixels of one output row among output rows
/// `r0 .. r0 + rows` (`ho x wo` per image): `(r, (b, oy, ox), len)`, `r` the index of the
/// stretch's first pixel within the block.
fn row_runs(
    r0: usize,
    rows: usize,
    ho: usize,
    wo: usize,
) -> impl Iterator<Item = (usize, (usize, usize, usize), usize)> {
    let mut pos = PixelIter::new(r0, ho, wo);
    let mut r = 0;
    std::iter::from_fn(move || {
        (r < rows).then(|| {
            let (b, oy, ox) = pos.peek();
            let len = (rows - r).min(wo - ox);
            let run = (r, (b, oy, ox), len);
            pos.advance(len);
            r += len;
            run
        })
    })
}

/// The rows of `batch` images of `h x w` pixels copied into the same images padded by `p`
/// pixels on every side: `(source pixel, destination pixel)` of each row's first pixel.
fn padded_rows(batch: usize, h: usize, w: usize, p: usize) -> impl Iterator<Item = (usize, usize)> {
    let (hp, wp) = (h + 2 * p, w + 2 * p);
    (0..batch * h).map(move |row| (row * w, ((row / h) * hp + row % h + p) * wp + p))
}

/// Zero-padding corrections for one input size.
#[derive(Debug)]
struct Corrections {
    yi: Vec<u16>,
    xi: Vec<u16>,
    ncols: usize,
    interior: Option<(usize, usize)>,
    /// Output columns outside the interior column class, ascending (all when there is no
    /// interior class).
    border_cols: Vec<usize>,
    table: Vec<i32>,
}

impl Corrections {
    #[allow(clippy::too_many_arguments)]
    fn apply(
        &self,
        r0: usize,
        rows: usize,
        ho: usize,
        wo: usize,
        cout: usize,
        acc: &mut [i32],
        n_pad: usize,
    ) {
        // Run by run (one output row's pixels each); rows of the interior row class visit
        // only their border columns.
        for (r, (_, oy, ox), len) in row_runs(r0, rows, ho, wo) {
            let yc = self.yi[oy] as usize;
            let mut sub = |x: usize| {
                let xc = self.xi[x] as usize;
                let t = &self.table[(yc * self.ncols + xc) * cout..][..cout];
                let row = (r + x - ox) * n_pad;
                for (a, c) in acc[row..row + cout].iter_mut().zip(t) {
                    *a -= c;
                }
            };
            if self.interior.is_some_and(|(iy, _)| iy == yc) {
                let from = self.border_cols.partition_point(|&x| x < ox);
                for &x in self.border_cols[from..]
                    .iter()
                    .take_while(|&&x| x < ox + len)
                {
                    sub(x);
                }
            } else {
                (ox..ox + len).for_each(sub);
            }
        }
    }
}

/// Int8 conv2d layer (2-3 bit levels as int8), zero padding exact.
#[derive(Debug, Clone)]
pub struct Int8Conv2d {
    /// Bytes per activation pixel and per weight tap: `cin` rounded up to a multiple of 4.
    cs: usize,
    cout: usize,
    geom: Geom,
    weights: Int8Weights,
}

impl Int8Conv2d {
    /// Prepares an int8 conv from OHWI weights in `bitpack`'s int8 layout: per output channel
    /// `kh * kw` taps (row-major), each tap `cin` values followed by zero pad bytes up to
    /// `ceil(cin / 4) * 4` (so a tap lines up with one padded activation pixel).
    ///
    /// # Errors
    /// Zero sizes or stride, wrong length, non-zero pad bytes, `K` too large.
    ///
    /// ```
    /// use xnor_kernels::{Conv2dConfig, Int8Conv2d, Output};
    /// // 1x1 conv, 2 input channels, 1 output channel, weights [2, -1] (+2 pad bytes).
    /// let conv = Int8Conv2d::new(&[2, -1, 0, 0], 1, 2, 1, 1, Conv2dConfig::default()).unwrap();
    /// let mut out = [0i32; 1];
    /// // One pixel with channels [3, 4] (+2 pad bytes).
    /// conv.forward(&[3, 4, 0, 0], 1, 1, 1, Output::I32(&mut out)).unwrap();
    /// assert_eq!(out, [2]);
    /// ```
    pub fn new(
        weights: &[i8],
        cout: usize,
        cin: usize,
        kh: usize,
        kw: usize,
        cfg: Conv2dConfig,
    ) -> Result<Self> {
        const OP: &str = "Int8Conv2d::new";
        if cin == 0 || kh == 0 || kw == 0 || cfg.stride == 0 {
            return Err(KernelError::Shape {
                op: OP,
                reason: format!(
                    "cin={cin}, kernel {kh}x{kw}, stride {} must be non-zero",
                    cfg.stride
                ),
            });
        }
        let geom = Geom {
            kh,
            kw,
            stride: cfg.stride,
            pad: cfg.padding,
        };
        let cs = reference::int8_stride(cin);
        let taps = geom.taps();
        check_len(OP, "weights", weights.len(), mul(OP, cout, taps * cs)?)?;
        for (t, tap) in weights.chunks_exact(cs).enumerate() {
            if let Some(j) = tap[cin..].iter().position(|&v| v != 0) {
                return Err(KernelError::Value {
                    op: OP,
                    buffer: "weights",
                    index: t * cs + cin + j,
                    value: i64::from(tap[cin + j]),
                    reason: "pad bytes of each tap beyond cin must be zero",
                });
            }
        }
        Ok(Int8Conv2d {
            cs,
            cout,
            geom,
            weights: Int8Weights::new(weights, cout, taps * cs)?,
        })
    }

    /// The prepared GEMM weights (K = `kh * kw * ceil(cin / 4) * 4`, tap pad bytes zero).
    pub fn gemm_weights(&self) -> &Int8Weights {
        &self.weights
    }

    /// Output spatial size for an `h x w` input.
    ///
    /// # Errors
    /// When the padded input is smaller than the kernel.
    pub fn output_hw(&self, h: usize, w: usize) -> Result<(usize, usize)> {
        self.geom.out_hw("Int8Conv2d", h, w)
    }

    /// Runs the conv with [`crate::selected_isa`]. `input` is NHWC int8 in `bitpack`'s layout:
    /// `batch * h * w` pixels of `ceil(cin / 4) * 4` bytes (channels, then pad bytes), values in
    /// `[-64, 64]`.
    ///
    /// # Errors
    /// Wrong lengths, values out of range, an unusable `XNOR_ISA`.
    pub fn forward(
        &self,
        input: &[i8],
        batch: usize,
        h: usize,
        w: usize,
        out: Output<'_>,
    ) -> Result<()> {
        self.forward_with(crate::selected_isa()?, input, batch, h, w, out)
    }

    /// [`Int8Conv2d::forward`] with an explicit ISA.
    ///
    /// # Errors
    /// As [`Int8Conv2d::forward`], plus an unavailable ISA.
    pub fn forward_with(
        &self,
        isa: Isa,
        input: &[i8],
        batch: usize,
        h: usize,
        w: usize,
        out: Output<'_>,
    ) -> Result<()> {
        const OP: &str = "Int8Conv2d::forward";
        let isa = resolve(isa)?;
        let (ho, wo) = self.output_hw(h, w)?;
        let pixels = mul(OP, mul(OP, batch, h)?, w)?;
        check_len(OP, "input", input.len(), mul(OP, pixels, self.cs)?)?;
        let m = batch * ho * wo;
        out.check(OP, m, self.cout)?;
        let s = self.weights.stride();
        let cin = self.cs;
        let dims = (h, w, ho, wo);
        let in_place = self.geom.in_place() && s == cin;
        // VNNI: a pre-padded, +128 offset copy of the input (built here, which also checks the
        // activation range) read in place, one segment per kernel row: no im2col.
        #[cfg(target_arch = "x86_64")]
        if uses_offset_activations(isa)
            && !in_place
            && m > 0
            && self.geom.kh <= 32
            // Every input pixel is read (a 1x1 stride-2 conv reads a quarter of them: the
            // im2col, which copies only those, is faster).
            && self.geom.kh >= self.geom.stride
            && self.geom.kw >= self.geom.stride
            // The im2col costs about 1/cout of the layer; from 256 channels on, the shorter
            // runs (one output row) measured 3-9% slower than 32-row im2col blocks.
            && self.cout <= 128
            && s == self.geom.taps() * cin
            && segments_fit(&self.weights, self.geom.kw * cin)
        {
            let mut buf = PADDED8.with(|c| c.take());
            let ok = self.offset_padded(input, batch, h, w, &mut buf);
            let r = if ok {
                self.forward_padded(isa, &buf, batch, dims, out);
                Ok(())
            } else {
                check_act_range(OP, input)
            };
            PADDED8.with(|c| c.set(buf));
            r?;
            assert!(
                ok,
                "offset pass reported a value the range check did not find"
            );
            return Ok(());
        }
        check_act_range(OP, input)?;
        let parallel = epilogue::want_parallel(m, m * self.cout * s / 8);
        epilogue::run(
            isa,
            out,
            m,
            self.cout,
            self.weights.n_pad(),
            parallel,
            // Blocks of about 32 KiB of gathered rows (short rows, e.g. a 1x1 conv's, make
            // many small blocks otherwise).
            epilogue::rows_within(IM2COL_BYTES, s, epilogue::DIRECT_BLOCK),
            |r0, rows, acc| {
                if in_place {
                    int8_block(
                        isa,
                        &input[r0 * s..(r0 + rows) * s],
                        rows,
                        &self.weights,
                        acc,
                        false,
                    );
                } else if uses_offset_activations(isa) {
                    // VNNI: im2col writes the +128 offset activations the kernel reads (64
                    // bytes of slack for its full-vector stores).
                    with_cols(&COLS8, rows * s + 64, |cols| {
                        #[cfg(target_arch = "x86_64")]
                        {
                            let Geom {
                                kh,
                                kw,
                                stride,
                                pad,
                            } = self.geom;
                            // SAFETY: AVX-512 is available (VNNI path); the input length was
                            // checked above, cols holds rows * s + 64 bytes with
                            // s >= kh * kw * cin, and the rows lie inside the output.
                            unsafe {
                                crate::x86::avx512::im2col_i8_offset(
                                    input.as_ptr(),
                                    dims,
                                    (kh, kw, stride, pad),
                                    cin,
                                    (r0, rows, s),
                                    cols.as_mut_ptr(),
                                )
                            }
                        }
                        #[cfg(not(target_arch = "x86_64"))]
                        im2col_i8(input, self.geom, cin, dims, (r0, rows, s), 0x80, cols);
                        // Same bytes, read as unsigned.
                        let au = i8_as_u8(cols);
                        int8_block_offset(isa, au, rows, &self.weights, acc);
                    });
                } else {
                    with_cols(&COLS8, rows * s, |cols| {
                        im2col_i8(input, self.geom, cin, dims, (r0, rows, s), 0, cols);
                        int8_block(isa, cols, rows, &self.weights, acc, false);
                    });
                }
            },
        );
        Ok(())
    }
}

/// Bytes of gathered int8 rows per single-threaded im2col block.
const IM2COL_BYTES: usize = 32 * 1024;

#[cfg(target_arch = "x86_64")]
impl Int8Conv2d {
    /// Writes `batch` images of `(h + 2p) x (w + 2p)` pixels of `cs` bytes into `buf`, the
    /// input's bytes offset by `+128` (`^ 0x80`) and padded positions `0x80` (the integer 0),
    /// plus 64 bytes of slack. Returns whether every input value lies in `[-64, 64]`.
    fn offset_padded(
        &self,
        input: &[i8],
        batch: usize,
        h: usize,
        w: usize,
        buf: &mut Vec<u8>,
    ) -> bool {
        let (p, cs) = (self.geom.pad, self.cs);
        let (hp, wp) = (h + 2 * p, w + 2 * p);
        // The padding (offset zeros, 0x80) is written only on a layout change.
        let len = batch * hp * wp * cs + 64;
        padded_buffer(&PADDED8_LAYOUT, [batch, h, w, p, cs], buf, len, 0x80);
        let mut ok = true;
        for (s, d) in padded_rows(batch, h, w, p) {
            let (s, d) = (s * cs, d * cs);
            // SAFETY: AVX-512 is available (the VNNI path); both slices hold a row of bytes.
            ok &= unsafe {
                crate::x86::avx512::offset_i8(&input[s..s + w * cs], &mut buf[d..d + w * cs])
            };
        }
        ok
    }

    /// The forward pass reading the pre-padded offset input `buf` (see
    /// [`Int8Conv2d::offset_padded`]) in place: each run of output pixels of one output row is
    /// one kernel call with one segment of `kw * cs` bytes per kernel row.
    fn forward_padded(
        &self,
        isa: Isa,
        buf: &[u8],
        batch: usize,
        (h, w, ho, wo): (usize, usize, usize, usize),
        out: Output<'_>,
    ) {
        let Geom {
            kh,
            kw,
            stride,
            pad,
        } = self.geom;
        let (cs, s) = (self.cs, self.weights.stride());
        let (hp, wp) = (h + 2 * pad, w + 2 * pad);
        let m = batch * ho * wo;
        let n_pad = self.weights.n_pad();
        let parallel = epilogue::want_parallel(m, m * self.cout * s / 8);
        epilogue::run(
            isa,
            out,
            m,
            self.cout,
            n_pad,
            parallel,
            // I32 rows of the kernel's width are written in place: large blocks (fewer calls),
            // their runs passed to the kernel up to RUNS at a time.
            epilogue::DIRECT_BLOCK,
            |r0, rows, acc| {
                // One run per output row of the block; segment s of a run's pixel 0 is at
                // run.a_off + offs[s].
                const RUNS: usize = 32;
                let mut offs = [0usize; 32];
                for (ky, o) in offs.iter_mut().enumerate().take(kh) {
                    *o = ky * wp * cs;
                }
                let mut runs = [Run::default(); RUNS];
                let mut nruns = 0;
                let flush = |runs: &[Run], acc: &mut [i32]| {
                    int8_block_offset_segments(
                        isa,
                        buf,
                        &offs[..kh],
                        kw * cs,
                        stride * cs,
                        runs,
                        &self.weights,
                        acc,
                    );
                };
                for (r, (b, oy, ox), len) in row_runs(r0, rows, ho, wo) {
                    runs[nruns] = Run {
                        a_off: ((b * hp + oy * stride) * wp + ox * stride) * cs,
                        r0: r,
                        len,
                    };
                    nruns += 1;
                    if nruns == RUNS {
                        flush(&runs, acc);
                        nruns = 0;
                    }
                }
                flush(&runs[..nruns], acc);
            },
        );
    }
}

/// The bytes of `v` as `u8` (same size and alignment).
fn i8_as_u8(v: &[i8]) -> &[u8] {
    // SAFETY: i8 and u8 have the same size and alignment and every bit pattern is valid.
    unsafe { std::slice::from_raw_parts(v.as_ptr().cast::<u8>(), v.len()) }
}

/// Int8 im2col of output rows `r0 .. r0 + rows` into `dst` (row stride `s`, zero padding),
/// every byte XORed with `flip` (`0x80` writes the `+128` offset activations of the VNNI
/// kernel, padded positions included). `cin` is the padded pixel stride; an interior kernel
/// row is one contiguous copy of `kw * cin` bytes.
#[allow(clippy::too_many_arguments)]
fn im2col_i8(
    input: &[i8],
    geom: Geom,
    cin: usize,
    (h, w, ho, wo): (usize, usize, usize, usize),
    (r0, rows, s): (usize, usize, usize),
    flip: u8,
    dst: &mut [i8],
) {
    let Geom {
        kh,
        kw,
        stride,
        pad,
    } = geom;
    let f = flip as i8;
    let copy = |d: &mut [i8], src: &[i8]| {
        if f == 0 {
            d.copy_from_slice(src);
        } else {
            for (d, s) in d.iter_mut().zip(src) {
                *d = s ^ f;
            }
        }
    };
    let span = kw * cin;
    let mut pos = PixelIter::new(r0, ho, wo);
    for d in dst.chunks_exact_mut(s).take(rows) {
        let (b, oy, ox) = pos.next();
        let ix0 = (ox * stride).wrapping_sub(pad);
        let interior_x = ox * stride >= pad && ix0 + kw <= w;
        d[kh * span..].fill(f);
        for (kr, dr) in d[..kh * span].chunks_exact_mut(span).enumerate() {
            let iy = (oy * stride + kr).wrapping_sub(pad);
            if iy >= h {
                dr.fill(f);
                continue;
            }
            let base = (b * h + iy) * w;
            if interior_x {
                copy(dr, &input[(base + ix0) * cin..(base + ix0 + kw) * cin]);
            } else {
                for (c, dt) in dr.chunks_exact_mut(cin).enumerate() {
                    let ix = ix0.wrapping_add(c);
                    if ix < w {
                        copy(dt, &input[(base + ix) * cin..(base + ix + 1) * cin]);
                    } else {
                        dt.fill(f);
                    }
                }
            }
        }
    }
}
