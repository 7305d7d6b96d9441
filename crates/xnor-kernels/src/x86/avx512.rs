//! AVX-512 kernels: binary GEMM with VPOPCNTQ and int8 GEMM with VNNI `vpdpbusd`.
//!
//! # Binary micro-kernel
//! Weights are stored in *panels* of 8 output channels: panel `p`, word `kk` holds the `kk`-th
//! packed word of channels `8p .. 8p + 8` in one 512-bit vector (channel = 64-bit lane). A
//! micro-tile of `MR` activation rows x `NV` panels keeps `MR * NV` zmm accumulators; for each
//! word `kk` it loads `NV` weight vectors, broadcasts each row's word and does
//! `acc += popcnt(broadcast(a) ^ w)`. Lanes are already per-channel popcounts, so there is no
//! horizontal reduction: the tile ends with `K - 2 * popcount` in `i32` (two panels narrowed by
//! one permute) or, fused, with a compare against popcount-domain thresholds. Pad bits are
//! zero in both operands, so the count is exact with the logical `K`. Every instruction of the
//! inner loop is useful work (XOR, VPOPCNTQ, ADD per 512 bit-MACs), which is the register
//! peak's instruction mix. Narrow GEMMs (`n <= 32`) use dword panels instead: 16 channels per
//! vector, `vpopcntd` over `ceil(K / 32)` dwords (`binary_tile_d`).
//!
//! The conv helpers here are the vectorised im2col of the dense binary layout (word-major
//! output) and of the int8 layout (`+128` offset bytes).
//!
//! # Int8 micro-kernel (VNNI)
//! `vpdpbusd` multiplies unsigned by signed bytes. The activations are offset to unsigned,
//! `au = a + 128` (`a ^ 0x80`, in `[64, 192]` for `a` in `[-64, 64]`), the weights stay
//! signed, so a lane holds `sum(w * a) + 128 * sum(w)`; the per-channel `128 * sum(w)` is
//! computed once with the weights and subtracted at the end (no per-row sums). Panels hold 16
//! channels x 4 bytes per group of 4 `k` (channel = 32-bit lane); for `n <= 16`, pair panels
//! of 8 channels x 2 groups serve two groups per activation broadcast. Bounds: each 4-product group
//! is at most `4 * 192 * 128 < 2^17` in magnitude and the `i32` sum at most `K * 192 * 128`,
//! below `2^31` for `K <= MAX_INT8_K`.

use std::arch::x86_64::*;

use super::dispatch_binary_tile;
use crate::int8::Run;

/// Independent chains in the popcount peak loop (2 * 12 + 2 zmm registers live).
pub(crate) const PEAK_CHAINS: usize = 12;

/// Accumulates the popcounts of one micro-tile: `MR` rows x `NV` panels, 64-bit lanes (one
/// per channel), evaluating to `[[__m512i; NV]; MR]`. Row `i` of the (virtual) activation
/// matrix is the concatenation of `nseg` segments of `seg_len` words; word `kk` of segment `s`
/// of row `i` is at `a + seg_offs[s] + i * a_stride + kk * k_stride` (a plain row-major matrix
/// is one segment at offset 0 with `k_stride = 1`; a conv reads its input in place with one
/// segment per kernel row, or a word-major im2col buffer with `a_stride = 1`). The first word
/// initialises the accumulators (no add of zero), which matters when `K` is a few words.
/// A macro rather than a function so that the accumulators stay in registers.
///
/// Safety (of the expansion, inside an `unsafe fn` with AVX-512 enabled): `nseg, seg_len >= 1`;
/// every segment word read must be in bounds; `seg_offs` valid for `nseg` values; `w` for
/// `NV` panels of `nseg * seg_len * 8` words.
macro_rules! binary_acc {
    ($mr:ident, $nv:ident, $a:expr, $seg_offs:expr, $nseg:expr, $seg_len:expr,
     $a_stride:expr, $k_stride:expr, $w:expr) => {{
        let (a, seg_offs, nseg, seg_len, a_stride, k_stride, w) =
            ($a, $seg_offs, $nseg, $seg_len, $a_stride, $k_stride, $w);
        let pstride = nseg * seg_len * 8;
        let mut acc = [[_mm512_setzero_si512(); $nv]; $mr];
        // SAFETY: segment 0, word 0 of every row and panel is in bounds (caller's contract).
        unsafe {
            let a0 = a.add(seg_offs.read());
            let mut wv = [_mm512_setzero_si512(); $nv];
            for (j, v) in wv.iter_mut().enumerate() {
                *v = _mm512_loadu_si512(w.add(j * pstride).cast());
            }
            for (i, acc_i) in acc.iter_mut().enumerate() {
                let av = _mm512_set1_epi64(a0.add(i * a_stride).read_unaligned() as i64);
                for j in 0..$nv {
                    acc_i[j] = _mm512_popcnt_epi64(_mm512_xor_si512(av, wv[j]));
                }
            }
        }
        for sg in 0..nseg {
            // SAFETY: seg_offs holds nseg offsets; the segment and its weights are in bounds
            // by the caller's contract.
            let (a, w) = unsafe { (a.add(seg_offs.add(sg).read()), w.add(sg * seg_len * 8)) };
            for kk in usize::from(sg == 0)..seg_len {
                let mut wv = [_mm512_setzero_si512(); $nv];
                for (j, v) in wv.iter_mut().enumerate() {
                    // SAFETY: panel j word kk of this segment is in bounds (caller's contract).
                    *v = unsafe { _mm512_loadu_si512(w.add(j * pstride + kk * 8).cast()) };
                }
                for (i, acc_i) in acc.iter_mut().enumerate() {
                    // SAFETY: row i word kk of this segment is in bounds (caller's contract).
                    let av = _mm512_set1_epi64(unsafe {
                        a.add(i * a_stride + kk * k_stride).read_unaligned()
                    } as i64);
                    for j in 0..$nv {
                        acc_i[j] = _mm512_add_epi64(
                            acc_i[j],
                            _mm512_popcnt_epi64(_mm512_xor_si512(av, wv[j])),
                        );
                    }
                }
            }
        }
        acc
    }};
}

/// Binary micro-tile: `MR` rows x `NV` panels (see [`binary_acc!`] for the activation
/// addressing; `NS > 0` means `NS` segments of `SL` words, unrolled at compile time), storing `K - 2 * popcount` as `i32`. Two panels' 64-bit counts are narrowed
/// into one vector with a single two-source permute.
///
/// # Safety
/// As [`binary_acc!`]; `out` valid for `MR` rows (stride `out_stride`) of `NV * 8` `i32`.
#[target_feature(enable = "avx2,fma,bmi1,bmi2,popcnt,avx512f,avx512bw,avx512vl,avx512vpopcntdq")]
#[allow(clippy::too_many_arguments)]
unsafe fn binary_tile<const MR: usize, const NV: usize, const NS: usize, const SL: usize>(
    a: *const u64,
    seg_offs: *const usize,
    nseg: usize,
    seg_len: usize,
    a_stride: usize,
    k_stride: usize,
    k: i32,
    w: *const u64,
    out: *mut i32,
    out_stride: usize,
) {
    // NS > 0: exactly NS segments of SL words, known at compile time (fully unrolled).
    let (nseg, seg_len) = if NS > 0 { (NS, SL) } else { (nseg, seg_len) };
    let acc = binary_acc!(MR, NV, a, seg_offs, nseg, seg_len, a_stride, k_stride, w);
    // Epilogue: the low dwords of two panels' counts, then `K - 2 * popcount`.
    let kv = _mm512_set1_epi32(k);
    let even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    for (i, acc_i) in acc.iter().enumerate() {
        let mut j = 0;
        while j + 1 < NV {
            let pc = _mm512_permutex2var_epi32(acc_i[j], even, acc_i[j + 1]);
            let d = _mm512_sub_epi32(kv, _mm512_add_epi32(pc, pc));
            // SAFETY: out row i, columns j*8..j*8+16 are in bounds by the caller's contract.
            unsafe { _mm512_storeu_si512(out.add(i * out_stride + j * 8).cast(), d) };
            j += 2;
        }
        if j < NV {
            let pc = _mm512_cvtepi64_epi32(acc_i[j]);
            let d = _mm256_sub_epi32(_mm512_castsi512_si256(kv), _mm256_add_epi32(pc, pc));
            // SAFETY: out row i, columns j*8..j*8+8 are in bounds by the caller's contract.
            unsafe { _mm256_storeu_si256(out.add(i * out_stride + j * 8).cast(), d) };
        }
    }
}

/// Panels per group for `runs`: 4 (`6 x 4` tiles), or 3 when every run is 8 rows long (the
/// output rows of an 8-pixel-wide image), which `8 x 3` tiles cover with no tail.
fn group_panels(runs: &[Run]) -> usize {
    if !runs.is_empty() && runs.iter().all(|r| r.len == 8) {
        3
    } else {
        4
    }
}

/// Rows of a full binary tile with `nv` panels: 24 accumulators (of 32 zmm registers) for
/// 2-4 panels, so that few panels (narrow layers) still get many independent chains and
/// every weight load serves many rows.
fn full_tile_rows(nv: usize) -> usize {
    match nv {
        1 | 2 => 12,
        3 => 8,
        _ => 6,
    }
}

/// Whether a tile's segments have a compile-time shape: ResNet-20's dense `K = 144` and `288`
/// (one segment of 3 or 5 words) are unrolled. (Unrolling the 3 x 3-word segments of
/// `Cin = 64` convs read in place was measured slower.)
fn tile_shape(nseg: usize, seg_len: usize) -> (usize, usize) {
    match (nseg, seg_len) {
        (1, 3) | (1, 5) => (nseg, seg_len),
        _ => (0, 0),
    }
}

/// Binary block on runs of rows (segments as in [`binary_acc!`]; row `r` of a run read from
/// `a + run.a_off + r * a_stride` and written to row `run.r0 + r` of `acc`) against
/// `npanels` weight panels into `acc` (row stride `acc_stride >= npanels * 8`). A plain block
/// is one run.
///
/// # Safety
/// The CPU must support [`bitpack::Isa::Avx512`]; `seg_offs` and `seg_len` non-empty; for
/// every run and segment `s`, `a + run.a_off + seg_offs[s]` must be valid for
/// `(run.len - 1) * a_stride + (seg_len - 1) * k_stride + 1` words; `w` for `npanels` panels
/// of `seg_offs.len() * seg_len * 8` words; `acc` for the runs' rows of `acc_stride` values.
#[target_feature(enable = "avx2,fma,bmi1,bmi2,popcnt,avx512f,avx512bw,avx512vl,avx512vpopcntdq")]
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn binary_rows(
    a: *const u64,
    seg_offs: &[usize],
    seg_len: usize,
    a_stride: usize,
    k_stride: usize,
    runs: &[Run],
    k: i32,
    w: *const u64,
    npanels: usize,
    acc: *mut i32,
    acc_stride: usize,
) {
    let nseg = seg_offs.len();
    let so = seg_offs.as_ptr();
    let kw = nseg * seg_len;
    let mut p = 0;
    let gp = group_panels(runs);
    while p < npanels {
        let nv = (npanels - p).min(gp);
        let mr_full = full_tile_rows(nv);
        for run in runs {
            let mut r = 0;
            while r < run.len {
                // Full tiles take the tall shape; the tail uses the small shapes.
                let left = run.len - r;
                let mr = if left >= mr_full {
                    mr_full
                } else {
                    left.min(if nv <= 2 { 8 } else { 4 })
                };
                // SAFETY: the offsets stay inside the buffers described by the caller's contract;
                // the tile reads mr rows and nv panels and writes mr x nv*8 outputs.
                unsafe {
                    let ap = a.add(run.a_off + r * a_stride);
                    let wp = w.add(p * kw * 8);
                    let op = acc.add((run.r0 + r) * acc_stride + p * 8);
                    dispatch_binary_tile!(
                        binary_tile,
                        mr == full_tile_rows(nv),
                        tile_shape(nseg, seg_len),
                        mr,
                        nv,
                        ap,
                        so,
                        nseg,
                        seg_len,
                        a_stride,
                        k_stride,
                        k,
                        wp,
                        op,
                        acc_stride
                    );
                }
                r += mr;
            }
        }
        p += nv;
    }
}

/// Binary micro-tile on **dword panels** for narrow GEMMs (`n <= 32`): `MR` rows x `NV`
/// panels of 16 channels, one 32-bit lane per channel, over `kd = ceil(K / 32)` dwords
/// (`KD > 0`: known at compile time). Per dword: `acc += vpopcntd(broadcast(a_dword) ^ w)`,
/// the same 512 binary MACs per XOR + POPCNT + ADD as the 64-bit kernel, but `K = 144` takes 5
/// dwords instead of 3 words (6 dwords), 16 channels share one broadcast, and the counts are
/// already `i32`: the epilogue is `K - 2 * pc` and one store per 16 channels.
///
/// # Safety
/// The CPU must support [`bitpack::Isa::Avx512`]; `a` valid for `MR` rows of `a_stride`
/// dwords (at least `kd` each), `w` for `NV` panels of `kd * 16` dwords, `out` for `MR` rows
/// (stride `out_stride`) of `NV * 16` values.
#[target_feature(enable = "avx2,fma,bmi1,bmi2,popcnt,avx512f,avx512bw,avx512vl,avx512vpopcntdq")]
#[allow(clippy::too_many_arguments)]
unsafe fn binary_tile_d<const MR: usize, const NV: usize, const KD: usize, const AS: usize>(
    a: *const u32,
    a_stride: usize,
    kd: usize,
    k: i32,
    w: *const u32,
    out: *mut i32,
    out_stride: usize,
) {
    // KD, AS > 0: the dword count and the row stride known at compile time (the unrolled
    // ResNet-20 shapes): every row's dword is then a constant displacement from `a`; with a
    // run-time stride the row offsets did not fit in registers and were reloaded from the
    // stack for every broadcast.
    let kd = if KD > 0 { KD } else { kd };
    let a_stride = if AS > 0 { AS } else { a_stride };
    let pstride = kd * 16;
    let mut acc = [[_mm512_setzero_si512(); NV]; MR];
    for d in 0..kd {
        let mut wv = [_mm512_setzero_si512(); NV];
        for (j, v) in wv.iter_mut().enumerate() {
            // SAFETY: panel j dword d is in bounds (caller's contract).
            *v = unsafe { _mm512_loadu_si512(w.add(j * pstride + d * 16).cast()) };
        }
        for (i, acc_i) in acc.iter_mut().enumerate() {
            // SAFETY: dword d of row i is in bounds (caller's contract).
            let av = _mm512_set1_epi32(unsafe { a.add(i * a_stride + d).read_unaligned() } as i32);
            for j in 0..NV {
                let pc = _mm512_popcnt_epi32(_mm512_xor_si512(av, wv[j]));
                acc_i[j] = if d == 0 {
                    pc
                } else {
                    _mm512_add_epi32(acc_i[j], pc)
                };
            }
        }
    }
    let kv = _mm512_set1_epi32(k);
    // Row pointers advanced one stride at a time: with `i * out_stride` the compiler kept
    // the MR row offsets on the stack and reloaded one per store (about a fifth of the
    // `n = 16`, `K = 144` GEMM's time).
    let mut o = out;
    for acc_i in &acc {
        for (j, &v) in acc_i.iter().enumerate() {
            let dv = _mm512_sub_epi32(kv, _mm512_add_epi32(v, v));
            // SAFETY: out row i, columns 16j..16j+16 are in bounds (caller's contract).
            unsafe { _mm512_storeu_si512(o.add(j * 16).cast(), dv) };
        }
        o = o.wrapping_add(out_stride);
    }
}

/// Binary block on dword panels (see [`binary_tile_d`]): `rows` rows of `a` (`a_stride`
/// dwords each, the first `kd` read) against `npanels` 16-channel panels into `acc` (row
/// stride `acc_stride >= npanels * 16`). Full tiles `16 x 1` and `12 x 2` (16 and 24
/// accumulators; a `24 x 1` tile measured about 10% slower at `K = 144`);
/// `kd = 5` and `9` (ResNet-20's `K = 144` and `288`) unrolled.
///
/// # Safety
/// As [`binary_tile_d`] for `rows` rows and `npanels` panels; `acc` valid for
/// `rows * acc_stride` values.
#[target_feature(enable = "avx2,fma,bmi1,bmi2,popcnt,avx512f,avx512bw,avx512vl,avx512vpopcntdq")]
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn binary_rows_d(
    a: *const u32,
    a_stride: usize,
    kd: usize,
    rows: usize,
    k: i32,
    w: *const u32,
    npanels: usize,
    acc: *mut i32,
    acc_stride: usize,
) {
    let mut p = 0;
    while p < npanels {
        let nv = (npanels - p).min(2);
        let mr_full = if nv == 1 { 16 } else { 12 };
        let mut r = 0;
        while r < rows {
            let full = rows - r >= mr_full;
            let mr = if full { mr_full } else { (rows - r).min(8) };
            // SAFETY: offsets stay inside the buffers described by the caller's contract.
            unsafe {
                let ap = a.add(r * a_stride);
                let wp = w.add(p * kd * 16);
                let op = acc.add(r * acc_stride + p * 16);
                let args = (ap, a_stride, kd, k, wp, op, acc_stride);
                macro_rules! call {
                    ($mr:literal, $nv:literal, $kd:literal, $as:literal) => {
                        binary_tile_d::<$mr, $nv, $kd, $as>(
                            args.0, args.1, args.2, args.3, args.4, args.5, args.6,
                        )
                    };
                }
                // The GEMM layout's row strides for K = 144 and 288: 3 and 5 words.
                match (full, nv, kd, a_stride) {
                    (true, 1, 5, 6) => call!(16, 1, 5, 6),
                    (true, 1, 9, 10) => call!(16, 1, 9, 10),
                    (true, 1, 5, _) => call!(16, 1, 5, 0),
                    (true, 1, 9, _) => call!(16, 1, 9, 0),
                    (true, 1, _, _) => call!(16, 1, 0, 0),
                    (true, _, 5, 6) => call!(12, 2, 5, 6),
                    (true, _, 9, 10) => call!(12, 2, 9, 10),
                    (true, _, 5, _) => call!(12, 2, 5, 0),
                    (true, _, 9, _) => call!(12, 2, 9, 0),
                    (true, _, _, _) => call!(12, 2, 0, 0),
                    (false, _, _, _) => {
                        dispatch_tile!(
                            binary_tile_d_small,
                            mr,
                            nv,
                            ap,
                            a_stride,
                            kd,
                            k,
                            wp,
                            op,
                            acc_stride
                        )
                    }
                }
            }
            r += mr;
        }
        p += nv;
    }
}

/// [`binary_tile_d`] with a run-time dword count (tail tiles).
///
/// # Safety
/// As [`binary_tile_d`].
#[target_feature(enable = "avx2,fma,bmi1,bmi2,popcnt,avx512f,avx512bw,avx512vl,avx512vpopcntdq")]
#[allow(clippy::too_many_arguments)]
unsafe fn binary_tile_d_small<const MR: usize, const NV: usize>(
    a: *const u32,
    a_stride: usize,
    kd: usize,
    k: i32,
    w: *const u32,
    out: *mut i32,
    out_stride: usize,
) {
    // SAFETY: forwarded caller's contract.
    unsafe { binary_tile_d::<MR, NV, 0, 0>(a, a_stride, kd, k, w, out, out_stride) }
}

/// Binary micro-tile with the threshold epilogue fused: like [`binary_tile`], but instead of
/// storing `i32` results it compares the popcounts with the row's thresholds, given in the
/// popcount domain with the flip and the valid channels folded into the thresholds and the
/// weights (see `FusedThresholds` in `conv.rs`): two panels' counts are narrowed into one
/// vector (one permute), compared (`vpcmpd`), and the 16 bits `pc >= thr` go to bytes
/// `j, j + 1` of the row's output (channels are multiples of 8 apart, so every panel owns one
/// output byte). No `K - 2 * pc`, no flip or valid masks.
///
/// # Safety
/// As [`binary_acc!`] for `a`, `seg_offs` and `w`; `thr[i] + toff` valid for `NV * 8` `i32`,
/// `out + i * out_stride` for `NV` bytes (`i < MR`).
#[target_feature(enable = "avx2,fma,bmi1,bmi2,popcnt,avx512f,avx512bw,avx512vl,avx512vpopcntdq")]
#[allow(clippy::too_many_arguments)]
unsafe fn binary_tile_thr<const MR: usize, const NV: usize, const NS: usize, const SL: usize>(
    a: *const u64,
    seg_offs: *const usize,
    nseg: usize,
    seg_len: usize,
    a_stride: usize,
    k_stride: usize,
    w: *const u64,
    (thr, toff): (*const *const i32, usize),
    (out, out_stride): (*mut u8, usize),
) {
    // NS > 0: exactly NS segments of SL words, known at compile time (fully unrolled).
    let (nseg, seg_len) = if NS > 0 { (NS, SL) } else { (nseg, seg_len) };
    let acc = binary_acc!(MR, NV, a, seg_offs, nseg, seg_len, a_stride, k_stride, w);
    let even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    for (i, acc_i) in acc.iter().enumerate() {
        // SAFETY: thr and out hold MR row pointers; thresholds j*8..j*8+16 and out bytes
        // j, j+1 are in bounds for j < NV (caller's contract).
        unsafe {
            let (t, o) = (thr.add(i).read().add(toff), out.add(i * out_stride));
            // Two panels' counts narrowed into one vector, one compare per 16 channels.
            let mut j = 0;
            while j + 1 < NV {
                let pc = _mm512_permutex2var_epi32(acc_i[j], even, acc_i[j + 1]);
                let m = _mm512_cmpge_epi32_mask(pc, _mm512_loadu_si512(t.add(j * 8).cast()));
                o.add(j).cast::<u16>().write_unaligned(m);
                j += 2;
            }
            if j < NV {
                let pc = _mm512_cvtepi64_epi32(acc_i[j]);
                let m = _mm256_cmpge_epi32_mask(pc, _mm256_loadu_si256(t.add(j * 8).cast()));
                o.add(j).write(m);
            }
        }
    }
}

/// Binary block with the fused threshold epilogue on runs of rows: row `r` of a run (`r <
/// run.len`) is read as in [`binary_rows`] from `a + run.a_off + r * a_stride` (words) and is
/// block row `run.r0 + r`, whose popcount-domain thresholds are at `thr[run.r0 + r]`
/// (`npanels * 8` values) and packed output bytes at `out + (run.r0 + r) * out_stride`.
/// Panel groups are outermost, so every run of the block reuses a group's weights.
///
/// # Safety
/// As [`binary_rows`] for `a` (for every row of every run), `seg_offs`, `w`; `thr` holds a
/// pointer for every block row of the runs, valid for `npanels * 8` `i32`, and `out` is
/// valid for `npanels` bytes at every block row's `out_stride` step.
#[target_feature(enable = "avx2,fma,bmi1,bmi2,popcnt,avx512f,avx512bw,avx512vl,avx512vpopcntdq")]
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn binary_rows_thr(
    a: *const u64,
    seg_offs: &[usize],
    seg_len: usize,
    a_stride: usize,
    k_stride: usize,
    runs: &[Run],
    w: *const u64,
    npanels: usize,
    thr: &[*const i32],
    (out, out_stride): (*mut u8, usize),
) {
    let nseg = seg_offs.len();
    let so = seg_offs.as_ptr();
    let kw = nseg * seg_len;
    assert!(runs.iter().all(|run| run.r0 + run.len <= thr.len()));
    let mut p = 0;
    let gp = group_panels(runs);
    while p < npanels {
        let nv = (npanels - p).min(gp);
        let mr_full = full_tile_rows(nv);
        for run in runs {
            let mut r = 0;
            while r < run.len {
                let left = run.len - r;
                let mr = if left >= mr_full {
                    mr_full
                } else {
                    left.min(if nv <= 2 { 8 } else { 4 })
                };
                // SAFETY: the offsets stay inside the buffers described by the caller's contract.
                unsafe {
                    let ap = a.add(run.a_off + r * a_stride);
                    let wp = w.add(p * kw * 8);
                    dispatch_binary_tile!(
                        binary_tile_thr,
                        mr == full_tile_rows(nv),
                        tile_shape(nseg, seg_len),
                        mr,
                        nv,
                        ap,
                        so,
                        nseg,
                        seg_len,
                        a_stride,
                        k_stride,
                        wp,
                        (thr.as_ptr().add(run.r0 + r), p * 8),
                        (out.add((run.r0 + r) * out_stride + p), out_stride)
                    );
                }
                r += mr;
            }
        }
        p += nv;
    }
}

/// Where the int8 tiles read row `i` of the activations: the concatenation of `nseg`
/// segments of `len` bytes, segment `s` of row `i` at `a + offs[s] + i * px`. A GEMM is one
/// segment at offset 0 with `px = len =` the row stride; a conv reading a pre-padded input in
/// place has one segment per kernel row (`kw` pixels of `cs` bytes) and `px = stride * cs`.
#[derive(Clone, Copy)]
pub(crate) struct Segs {
    pub(crate) offs: *const usize,
    pub(crate) nseg: usize,
    pub(crate) len: usize,
    pub(crate) px: usize,
}

/// Int8 VNNI micro-tile on **offset activations**: `MR` rows of `au = a + 128` (stride `s`
/// bytes, unsigned, the first operand of `vpdpbusd`) x `NV` panels of 16 channels of signed
/// weights, so a lane accumulates `sum(w * a) + 128 * sum(w)`; the per-channel
/// `128 * sum(w)` (`wsum128`, computed once with the weights) is subtracted at the end. No
/// per-row activation sums are needed. Bounds: `au <= 192`, so a 4-product group is at most
/// `4 * 192 * 128 < 2^17` and the lane sum at most `K * 192 * 128 < 2^31` for
/// `K <= 65536`.
///
/// # Safety
/// The CPU must support [`bitpack::Isa::Avx512`] and AVX-512 VNNI; `a` valid for `MR` rows of
/// `s` bytes (`s` a multiple of 4), `w` for `NV` panels of `s * 16` bytes, `wsum128` for
/// `NV * 16` values, `out` for `MR` rows (stride `out_stride`) of `NV * 16` values.
#[target_feature(
    enable = "avx2,fma,bmi1,bmi2,popcnt,avx512f,avx512bw,avx512vl,avx512vpopcntdq,avx512vnni"
)]
unsafe fn int8_tile_u<const MR: usize, const NV: usize>(
    a: *const u8,
    sg: Segs,
    w: *const i8,
    wsum128: *const i32,
    out: *mut i32,
    out_stride: usize,
) {
    let pstride = sg.nseg * sg.len * 16;
    let mut acc = [[_mm512_setzero_si512(); NV]; MR];
    let mut kb = 0;
    for seg in 0..sg.nseg {
        // SAFETY: sg.offs holds nseg offsets (caller's contract).
        let base = a.wrapping_add(unsafe { sg.offs.add(seg).read() });
        let rows: [*const u8; MR] = std::array::from_fn(|i| base.wrapping_add(i * sg.px));
        let mut g = 0;
        while g < sg.len {
            let mut wv = [_mm512_setzero_si512(); NV];
            for (j, v) in wv.iter_mut().enumerate() {
                // SAFETY: panel j group (kb + g)/4 (64 bytes) is in bounds (caller's contract).
                *v = unsafe { _mm512_loadu_si512(w.add(j * pstride + (kb + g) * 16).cast()) };
            }
            for (acc_i, &row) in acc.iter_mut().zip(&rows) {
                // SAFETY: bytes g..g+4 of the segment of row i are in bounds (len is a
                // multiple of 4).
                let av = _mm512_set1_epi32(unsafe { row.add(g).cast::<i32>().read_unaligned() });
                for j in 0..NV {
                    acc_i[j] = _mm512_dpbusd_epi32(acc_i[j], av, wv[j]);
                }
            }
            g += 4;
        }
        kb += sg.len;
    }
    let mut corr = [_mm512_setzero_si512(); NV];
    for (j, c) in corr.iter_mut().enumerate() {
        // SAFETY: wsum128 holds NV * 16 values by the caller's contract.
        *c = unsafe { _mm512_loadu_si512(wsum128.add(j * 16).cast()) };
    }
    for (i, acc_i) in acc.iter().enumerate() {
        for (j, v) in acc_i.iter().enumerate() {
            // SAFETY: out row i, columns j*16..j*16+16 are in bounds by the caller's contract.
            unsafe {
                _mm512_storeu_si512(
                    out.add(i * out_stride + j * 16).cast(),
                    _mm512_sub_epi32(*v, corr[j]),
                )
            };
        }
    }
}

/// Int8 VNNI block on offset activations (see [`int8_tile_u`]): `rows` rows of `au` (stride
/// `s`) against `npanels` signed 16-channel panels. Full tiles are `12 x 1`, `8 x 2`, `6 x 3`
/// or `4 x 4` panels (12-18 accumulators: narrow layers keep enough `vpdpbusd` chains in
/// flight); the tail uses smaller tiles.
///
/// # Safety
/// As [`int8_tile_u`] for `rows` rows and `npanels` panels; `wsum128` holds `npanels * 16`
/// values and `acc` `rows * acc_stride` values with `acc_stride >= npanels * 16`.
#[target_feature(
    enable = "avx2,fma,bmi1,bmi2,popcnt,avx512f,avx512bw,avx512vl,avx512vpopcntdq,avx512vnni"
)]
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn int8_rows_u(
    a: *const u8,
    sg: Segs,
    runs: &[Run],
    w: *const i8,
    wsum128: *const i32,
    npanels: usize,
    acc: *mut i32,
    acc_stride: usize,
) {
    let mut p = 0;
    while p < npanels {
        let nv = (npanels - p).min(4);
        let mr_full = match nv {
            1 => 12,
            2 => 8,
            3 => 6,
            _ => 4,
        };
        // Panel groups outermost: every run of the block reuses the group's weights.
        for run in runs {
            let rows = run.len;
            let mut r = 0;
            while r < rows {
                let full = rows - r >= mr_full;
                let mr = if full {
                    mr_full
                } else {
                    (rows - r).min(if nv <= 2 { 8 } else { 4 })
                };
                // SAFETY: offsets stay inside the buffers described by the caller's contract.
                unsafe {
                    let ap = a.wrapping_add(run.a_off + r * sg.px);
                    let wp = w.add(p * sg.nseg * sg.len * 16);
                    let ws = wsum128.add(p * 16);
                    let op = acc.add((run.r0 + r) * acc_stride + p * 16);
                    match (full, nv) {
                        (true, 1) => int8_tile_u::<12, 1>(ap, sg, wp, ws, op, acc_stride),
                        (true, 2) => int8_tile_u::<8, 2>(ap, sg, wp, ws, op, acc_stride),
                        (true, 3) => int8_tile_u::<6, 3>(ap, sg, wp, ws, op, acc_stride),
                        _ => dispatch_tile!(int8_tile_u, mr, nv, ap, sg, wp, ws, op, acc_stride),
                    }
                }
                r += mr;
            }
        }
        p += nv;
    }
}

/// Int8 VNNI micro-tile for **narrow layers** (`n <= 32`): like [`int8_tile_u`], but one
/// 8-byte broadcast serves two groups of 4 `k`. Weights are in *pair panels* of 8 channels:
/// lane `2c + e` holds channel `c`'s group `2gp + e` (see `Int8Weights`), so
/// `vpdpbusd(broadcast_u64(au[8gp..8gp+8]), pair panel)` accumulates the even groups of each
/// channel in lane `2c` and the odd groups in lane `2c + 1`. That halves the activation
/// broadcasts per `vpdpbusd`, which bound the loop when a row meets only 1-2 weight
/// vectors. The epilogue adds each lane pair (two permutes and an add per 16 channels) and
/// subtracts `128 * sum(w)`.
///
/// # Safety
/// The CPU must support [`bitpack::Isa::Avx512`] and AVX-512 VNNI; `a` valid for `MR` rows of
/// `s` bytes (`s` a multiple of 8), `w` for `NH` pair panels of `s * 8` bytes, `wsum128` for
/// `NH * 8` values, `out` for `MR` rows (stride `out_stride`) of `NH * 8` values.
#[target_feature(
    enable = "avx2,fma,bmi1,bmi2,popcnt,avx512f,avx512bw,avx512vl,avx512vpopcntdq,avx512vnni"
)]
unsafe fn int8_tile_u2<const MR: usize, const NH: usize>(
    a: *const u8,
    sg: Segs,
    w: *const i8,
    wsum128: *const i32,
    out: *mut i32,
    out_stride: usize,
) {
    let pstride = sg.nseg * sg.len * 8;
    let mut acc = [[_mm512_setzero_si512(); NH]; MR];
    let mut kb = 0;
    for seg in 0..sg.nseg {
        // SAFETY: sg.offs holds nseg offsets (caller's contract).
        let base = a.wrapping_add(unsafe { sg.offs.add(seg).read() });
        let rows: [*const u8; MR] = std::array::from_fn(|i| base.wrapping_add(i * sg.px));
        let mut g = 0;
        while g < sg.len {
            let mut wv = [_mm512_setzero_si512(); NH];
            for (j, v) in wv.iter_mut().enumerate() {
                // SAFETY: pair panel j, group pair (kb + g)/8 (64 bytes) is in bounds
                // (caller's contract).
                *v = unsafe { _mm512_loadu_si512(w.add(j * pstride + (kb + g) * 8).cast()) };
            }
            for (acc_i, &row) in acc.iter_mut().zip(&rows) {
                // SAFETY: bytes g..g+8 of the segment of row i are in bounds (len is a
                // multiple of 8).
                let av = _mm512_set1_epi64(unsafe { row.add(g).cast::<i64>().read_unaligned() });
                for j in 0..NH {
                    acc_i[j] = _mm512_dpbusd_epi32(acc_i[j], av, wv[j]);
                }
            }
            g += 8;
        }
        kb += sg.len;
    }
    let even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    let odd = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
    for (i, acc_i) in acc.iter().enumerate() {
        let mut j = 0;
        while j < NH {
            // Channels 8j .. 8j + 16 (the second half is garbage-free zero work when
            // j + 1 == NH: lanes of a zero vector).
            let hi = if j + 1 < NH {
                acc_i[j + 1]
            } else {
                _mm512_setzero_si512()
            };
            let sum = _mm512_add_epi32(
                _mm512_permutex2var_epi32(acc_i[j], even, hi),
                _mm512_permutex2var_epi32(acc_i[j], odd, hi),
            );
            // SAFETY: wsum128 holds NH * 8 values and out row i NH * 8 values from column
            // 8j (caller's contract); the 8-channel tail uses 256-bit accesses.
            unsafe {
                if j + 1 < NH {
                    let c = _mm512_loadu_si512(wsum128.add(j * 8).cast());
                    _mm512_storeu_si512(
                        out.add(i * out_stride + j * 8).cast(),
                        _mm512_sub_epi32(sum, c),
                    );
                } else {
                    let c = _mm256_loadu_si256(wsum128.add(j * 8).cast());
                    _mm256_storeu_si256(
                        out.add(i * out_stride + j * 8).cast(),
                        _mm256_sub_epi32(_mm512_castsi512_si256(sum), c),
                    );
                }
            }
            j += 2;
        }
    }
}

/// Int8 VNNI block for narrow layers on offset activations (see [`int8_tile_u2`]): `rows`
/// rows of `au` (stride `s`, a multiple of 8) against `nhalf` pair panels of 8 channels, in
/// groups of up to 4 (full tiles `12 x 1..2`, `6 x 3..4`).
///
/// # Safety
/// As [`int8_tile_u2`] for `rows` rows and `nhalf` pair panels; `wsum128` holds
/// `nhalf * 8` values and `acc` `rows * acc_stride` values with `acc_stride >= nhalf * 8`.
#[target_feature(
    enable = "avx2,fma,bmi1,bmi2,popcnt,avx512f,avx512bw,avx512vl,avx512vpopcntdq,avx512vnni"
)]
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn int8_rows_u2(
    a: *const u8,
    sg: Segs,
    runs: &[Run],
    w: *const i8,
    wsum128: *const i32,
    nhalf: usize,
    acc: *mut i32,
    acc_stride: usize,
) {
    let mut p = 0;
    while p < nhalf {
        let nh = (nhalf - p).min(4);
        let mr_full = if nh <= 2 { 12 } else { 6 };
        // Panel groups outermost: every run of the block reuses the group's weights.
        for run in runs {
            let rows = run.len;
            let mut r = 0;
            while r < rows {
                let full = rows - r >= mr_full;
                let mr = if full {
                    mr_full
                } else {
                    (rows - r).min(if nh <= 2 { 8 } else { 4 })
                };
                // SAFETY: offsets stay inside the buffers described by the caller's contract.
                unsafe {
                    let ap = a.wrapping_add(run.a_off + r * sg.px);
                    let wp = w.add(p * sg.nseg * sg.len * 8);
                    let ws = wsum128.add(p * 8);
                    let op = acc.add((run.r0 + r) * acc_stride + p * 8);
                    match (full, nh) {
                        (true, 1) => int8_tile_u2::<12, 1>(ap, sg, wp, ws, op, acc_stride),
                        (true, 2) => int8_tile_u2::<12, 2>(ap, sg, wp, ws, op, acc_stride),
                        (true, 3) => int8_tile_u2::<6, 3>(ap, sg, wp, ws, op, acc_stride),
                        (true, _) => int8_tile_u2::<6, 4>(ap, sg, wp, ws, op, acc_stride),
                        _ => dispatch_tile!(int8_tile_u2, mr, nh, ap, sg, wp, ws, op, acc_stride),
                    }
                }
                r += mr;
            }
        }
        p += nh;
    }
}

/// `dst[i] = src[i] ^ 0x80` (signed int8 to `+128` offset unsigned), 64 bytes per step;
/// returns whether every `src[i]` lies in `[-64, 64]` (the activation range check rides on
/// this pass: an unsigned max of `src + 64`, see [`act_range_ok`]).
///
/// # Safety
/// The CPU must support [`bitpack::Isa::Avx512`].
#[target_feature(enable = "avx2,fma,bmi1,bmi2,popcnt,avx512f,avx512bw,avx512vl,avx512vpopcntdq")]
pub(crate) unsafe fn offset_i8(src: &[i8], dst: &mut [u8]) -> bool {
    assert!(dst.len() >= src.len());
    let bias = _mm512_set1_epi8(-128);
    let off = _mm512_set1_epi8(64);
    let mut mx = _mm512_setzero_si512();
    let mut i = 0;
    while i < src.len() {
        let rem = (src.len() - i).min(64);
        let k: __mmask64 = if rem == 64 {
            u64::MAX
        } else {
            (1u64 << rem) - 1
        };
        // SAFETY: the masked load and store touch bytes i..i + rem of src and dst (asserted).
        unsafe {
            let v = _mm512_maskz_loadu_epi8(k, src.as_ptr().add(i));
            _mm512_mask_storeu_epi8(dst.as_mut_ptr().add(i).cast(), k, _mm512_xor_si512(v, bias));
            // Masked-off lanes load 0, which is in range.
            mx = _mm512_max_epu8(mx, _mm512_add_epi8(v, off));
        }
        i += 64;
    }
    _mm512_cmpgt_epu8_mask(mx, _mm512_set1_epi8(-128)) == 0
}

/// The in-register XOR + VPOPCNTQ + ADD peak loop: `iters` iterations of [`PEAK_CHAINS`]
/// independent chains (few enough that every operand stays in a register); returns a value
/// that depends on every chain. Performs `iters * PEAK_CHAINS * 512` binary MACs.
///
/// # Safety
/// The CPU must support [`bitpack::Isa::Avx512`].
#[target_feature(enable = "avx2,fma,bmi1,bmi2,popcnt,avx512f,avx512bw,avx512vl,avx512vpopcntdq")]
pub(crate) unsafe fn popcount_peak_loop(iters: u64, seed: u64) -> u64 {
    // Lane-distinct operands (opaque to the optimiser), so no work can be done in scalar.
    let mut lanes = [0u64; PEAK_CHAINS * 8];
    for (i, l) in lanes.iter_mut().enumerate() {
        *l = seed.wrapping_mul(2 * i as u64 + 1).rotate_left(i as u32);
    }
    let lanes = std::hint::black_box(lanes);
    let mut x = [_mm512_setzero_si512(); PEAK_CHAINS];
    for (i, v) in x.iter_mut().enumerate() {
        // SAFETY: lanes holds PEAK_CHAINS * 8 words.
        *v = unsafe { _mm512_loadu_si512(lanes.as_ptr().add(i * 8).cast()) };
    }
    // The varying operand is broadcast from a small L1-resident table, as the GEMM's
    // activation words are, so the loop issues nothing but XOR, VPOPCNTQ and ADD.
    let mut table = [0u64; 64];
    for (i, t) in table.iter_mut().enumerate() {
        *t = seed.rotate_left(i as u32) ^ i as u64;
    }
    let table = std::hint::black_box(table);
    let mut acc = [_mm512_setzero_si512(); PEAK_CHAINS];
    for it in 0..iters {
        let b = _mm512_set1_epi64(table[(it % 64) as usize] as i64);
        for i in 0..PEAK_CHAINS {
            acc[i] = _mm512_add_epi64(acc[i], _mm512_popcnt_epi64(_mm512_xor_si512(x[i], b)));
        }
    }
    let mut s = _mm512_setzero_si512();
    for v in acc {
        s = _mm512_add_epi64(s, v);
    }
    _mm512_reduce_add_epi64(s) as u64
}

/// The in-register VNNI peak loop: `iters` iterations of 16 independent `vpdpbusd` chains
/// (`iters * 16 * 64` int8 MACs).
///
/// # Safety
/// The CPU must support [`bitpack::Isa::Avx512`] and AVX-512 VNNI.
#[target_feature(
    enable = "avx2,fma,bmi1,bmi2,popcnt,avx512f,avx512bw,avx512vl,avx512vpopcntdq,avx512vnni"
)]
pub(crate) unsafe fn vnni_peak_loop(iters: u64, seed: u32) -> u64 {
    let mut acc = [_mm512_setzero_si512(); 16];
    let x = _mm512_set1_epi32(seed as i32);
    let mut b = _mm512_set1_epi32(0x0102_0304);
    let one = _mm512_set1_epi32(1);
    for _ in 0..iters {
        b = _mm512_add_epi32(b, one);
        for v in acc.iter_mut() {
            *v = _mm512_dpbusd_epi32(*v, x, b);
        }
    }
    let mut s = _mm512_setzero_si512();
    for v in acc {
        s = _mm512_add_epi32(s, v);
    }
    _mm512_reduce_add_epi32(s) as u32 as u64
}

/// `out[r * n + c] = scale[c] * (acc[r * n_pad + c] as f32) + bias[c]` for `rows` rows of
/// `n = scale.len()` channels, 16 channels per step (masked tail): a multiply and an add with
/// their own roundings, exactly as the scalar expression (no fused multiply-add), so every
/// ISA writes the same bits.
///
/// # Safety
/// The CPU must support [`bitpack::Isa::Avx512`].
///
/// # Panics
/// When `bias` or the buffers are shorter than `rows` rows need.
#[target_feature(enable = "avx2,fma,bmi1,bmi2,popcnt,avx512f,avx512bw,avx512vl,avx512vpopcntdq")]
pub(crate) unsafe fn affine_rows(
    acc: &[i32],
    rows: usize,
    n_pad: usize,
    scale: &[f32],
    bias: &[f32],
    out: &mut [f32],
) {
    let n = scale.len();
    assert!(bias.len() >= n && n_pad >= n);
    assert!(rows == 0 || (acc.len() >= (rows - 1) * n_pad + n && out.len() >= rows * n));
    for r in 0..rows {
        let (a, o) = (acc[r * n_pad..].as_ptr(), out[r * n..].as_mut_ptr());
        let mut c = 0;
        while c < n {
            let k: __mmask16 = if n - c >= 16 {
                0xffff
            } else {
                ((1u32 << (n - c)) - 1) as u16
            };
            // SAFETY: lanes c .. c + 16 masked to n: inside row r of acc and out (asserted) and
            // inside scale and bias; masked-off lanes are not accessed.
            unsafe {
                let x = _mm512_cvtepi32_ps(_mm512_maskz_loadu_epi32(k, a.add(c).cast()));
                let sv = _mm512_maskz_loadu_ps(k, scale.as_ptr().add(c));
                let bv = _mm512_maskz_loadu_ps(k, bias.as_ptr().add(c));
                let y = _mm512_add_ps(_mm512_mul_ps(sv, x), bv);
                _mm512_mask_storeu_ps(o.add(c), k, y);
            }
            c += 16;
        }
    }
}

/// Int8 levels of `rows` rows of accumulators (row stride `n_pad`, `n` channels) into rows
/// of `int8_stride(n)` bytes: per 16 channels the base levels plus each step's increment
/// where `acc >= t` (one compare and one masked add per step), narrowed to bytes; lanes
/// beyond `n` load no accumulator and hold the zero base, so the pad bytes are written zero.
/// Channel groups are the outer loop, so that a group's tables stay in registers.
///
/// # Safety
/// The CPU must support [`bitpack::Isa::Avx512`]. The slice bounds used are asserted.
#[target_feature(enable = "avx2,fma,bmi1,bmi2,popcnt,avx512f,avx512bw,avx512vl,avx512vpopcntdq")]
pub(crate) unsafe fn level_rows(
    acc: &[i32],
    rows: usize,
    n: usize,
    n_pad: usize,
    lt: &crate::epilogue::LevelThresholds,
    out: &mut [i8],
) {
    let steps = lt.steps();
    let stride = lt.assert_rows(acc, rows, (n, n_pad), out);
    if !lt.pairs().is_empty() && steps <= 8 {
        // SAFETY: AVX-512 is available; the bounds are asserted above.
        unsafe {
            match steps {
                0 => level_pairs_k::<0>(acc, rows, n, n_pad, stride, lt, out),
                1 => level_pairs_k::<1>(acc, rows, n, n_pad, stride, lt, out),
                2 => level_pairs_k::<2>(acc, rows, n, n_pad, stride, lt, out),
                3 | 4 => level_pairs_k::<4>(acc, rows, n, n_pad, stride, lt, out),
                5 | 6 => level_pairs_k::<6>(acc, rows, n, n_pad, stride, lt, out),
                _ => level_pairs_k::<8>(acc, rows, n, n_pad, stride, lt, out),
            }
        }
        return;
    }
    // SAFETY: as above.
    unsafe {
        match steps {
            0 => level_rows_k::<0>(acc, rows, n, n_pad, stride, lt, out),
            1 => level_rows_k::<1>(acc, rows, n, n_pad, stride, lt, out),
            2 => level_rows_k::<2>(acc, rows, n, n_pad, stride, lt, out),
            3 => level_rows_k::<3>(acc, rows, n, n_pad, stride, lt, out),
            4 => level_rows_k::<4>(acc, rows, n, n_pad, stride, lt, out),
            5 | 6 => level_rows_k::<6>(acc, rows, n, n_pad, stride, lt, out),
            7 | 8 => level_rows_k::<8>(acc, rows, n, n_pad, stride, lt, out),
            _ => level_rows_k::<{ usize::MAX }>(acc, rows, n, n_pad, stride, lt, out),
        }
    }
}

/// Lanes `c .. m` of 16 from `c` (all when `m >= c + 16`, none when `m <= c`).
#[inline]
fn lanes16(m: usize, c: usize) -> __mmask16 {
    lane_bits(0, m as isize - c as isize) as __mmask16
}

/// [`level_rows`] two rows at a time in `i16` (`S <= 8` steps at least the table's; the
/// `i16` tables of [`crate::epilogue::LevelThresholds`] present): the rows' accumulators are
/// packed with signed saturation (lane order: 4 channels of the first row, 4 of the second,
/// per 128 bits; the tables follow it), stepped, narrowed to bytes and put back in channel
/// order by one dword permute.
///
/// # Safety
/// As [`level_rows`], whose asserts this relies on.
#[target_feature(enable = "avx2,fma,bmi1,bmi2,popcnt,avx512f,avx512bw,avx512vl,avx512vpopcntdq")]
unsafe fn level_pairs_k<const S: usize>(
    acc: &[i32],
    rows: usize,
    n: usize,
    n_pad: usize,
    stride: usize,
    lt: &crate::epilogue::LevelThresholds,
    out: &mut [i8],
) {
    let (steps, width, ..) = lt.parts();
    let pairs = lt.pairs();
    let per = 1 + 2 * steps;
    assert!(S <= 8 && steps <= S && pairs.len() >= width / 16 * per * 32);
    let perm = _mm256_setr_epi32(0, 2, 4, 6, 1, 3, 5, 7);
    let mut c = 0;
    while c < stride {
        let (kn, ks) = (lanes16(n, c), lanes16(stride, c));
        // SAFETY: group c / 16 < width / 16 holds `per` vectors of 32 lanes (asserted).
        let tab = unsafe { pairs.as_ptr().add(c / 16 * per * 32) };
        // SAFETY: as above.
        let b = unsafe { _mm512_loadu_si512(tab.cast()) };
        let mut t = [_mm512_set1_epi16(i16::MAX); 8];
        let mut d = [_mm512_setzero_si512(); 8];
        for j in 0..steps {
            // SAFETY: as above (j < steps).
            unsafe {
                t[j] = _mm512_loadu_si512(tab.add((1 + 2 * j) * 32).cast());
                d[j] = _mm512_loadu_si512(tab.add((2 + 2 * j) * 32).cast());
            }
        }
        let mut r = 0;
        while r < rows {
            let two = r + 1 < rows;
            // SAFETY: accumulator lanes masked to n inside rows r and r + 1 (when present),
            // store lanes masked to the rows' stride (asserted by the caller).
            unsafe {
                let a = acc.as_ptr().add(r * n_pad + c);
                let x0 = _mm512_maskz_loadu_epi32(kn, a.cast());
                let x1 = if two {
                    _mm512_maskz_loadu_epi32(kn, a.add(n_pad).cast())
                } else {
                    _mm512_setzero_si512()
                };
                let x = _mm512_packs_epi32(x0, x1);
                let mut v = b;
                for j in 0..S {
                    v = _mm512_mask_add_epi16(v, _mm512_cmpge_epi16_mask(x, t[j]), v, d[j]);
                }
                let y = _mm256_permutevar8x32_epi32(_mm512_cvtepi16_epi8(v), perm);
                let o = out.as_mut_ptr().add(r * stride + c);
                _mm_mask_storeu_epi8(o.cast(), ks, _mm256_castsi256_si128(y));
                if two {
                    _mm_mask_storeu_epi8(
                        o.add(stride).cast(),
                        ks,
                        _mm256_extracti128_si256::<1>(y),
                    );
                }
            }
            r += 2;
        }
        c += 16;
    }
}

/// [`level_rows`] with the step count known (`S` at least the table's steps, the steps
/// beyond it compare with the zero increment of an absent step), or any count for
/// `S = usize::MAX`.
///
/// # Safety
/// As [`level_rows`], whose asserts this relies on.
#[target_feature(enable = "avx2,fma,bmi1,bmi2,popcnt,avx512f,avx512bw,avx512vl,avx512vpopcntdq")]
unsafe fn level_rows_k<const S: usize>(
    acc: &[i32],
    rows: usize,
    n: usize,
    n_pad: usize,
    stride: usize,
    lt: &crate::epilogue::LevelThresholds,
    out: &mut [i8],
) {
    let (steps, width, base, thr, inc) = lt.parts();
    let fixed = S != usize::MAX;
    let ns = if fixed { S } else { steps };
    let mut c = 0;
    while c < stride {
        let (kn, ks) = (lanes16(n, c), lanes16(stride, c));
        // Step j of a fixed count beyond the table's steps: never taken (zero increment).
        // SAFETY: c + 16 <= width and j < steps for the table loads (asserted by the caller).
        let load = |j: usize| unsafe {
            if j < steps {
                (
                    _mm512_loadu_si512(thr.as_ptr().add(j * width + c).cast()),
                    _mm512_loadu_si512(inc.as_ptr().add(j * width + c).cast()),
                )
            } else {
                (_mm512_set1_epi32(i32::MAX), _mm512_setzero_si512())
            }
        };
        // SAFETY: as above.
        let b = unsafe { _mm512_loadu_si512(base.as_ptr().add(c).cast()) };
        if fixed {
            let mut t = [_mm512_setzero_si512(); 8];
            let mut d = [_mm512_setzero_si512(); 8];
            for j in 0..S.min(8) {
                (t[j], d[j]) = load(j);
            }
            for r in 0..rows {
                // SAFETY: accumulator lanes masked to n inside row r, store lanes masked to
                // the row's stride (asserted by the caller).
                unsafe {
                    let x = _mm512_maskz_loadu_epi32(kn, acc.as_ptr().add(r * n_pad + c).cast());
                    let mut v = b;
                    for j in 0..S.min(8) {
                        v = _mm512_mask_add_epi32(v, _mm512_cmpge_epi32_mask(x, t[j]), v, d[j]);
                    }
                    let o = out.as_mut_ptr().add(r * stride + c);
                    _mm_mask_storeu_epi8(o.cast(), ks, _mm512_cvtepi32_epi8(v));
                }
            }
        } else {
            for r in 0..rows {
                // SAFETY: as above.
                unsafe {
                    let x = _mm512_maskz_loadu_epi32(kn, acc.as_ptr().add(r * n_pad + c).cast());
                    let mut v = b;
                    for j in 0..ns {
                        let (t, d) = load(j);
                        v = _mm512_mask_add_epi32(v, _mm512_cmpge_epi32_mask(x, t), v, d);
                    }
                    let o = out.as_mut_ptr().add(r * stride + c);
                    _mm_mask_storeu_epi8(o.cast(), ks, _mm512_cvtepi32_epi8(v));
                }
            }
        }
        c += 16;
    }
}

/// Packed signs of `rows` rows of accumulators (row stride `n_pad`, `n` channels): word `w`
/// of a row is `(acc < thr) ^ flip[w]` over its 64 channels, 16 compares per instruction,
/// masked loads for the tail, pad bits zero.
///
/// # Safety
/// The CPU must support [`bitpack::Isa::Avx512`]. The slice bounds used are asserted.
#[target_feature(enable = "avx2,fma,bmi1,bmi2,popcnt,avx512f,avx512bw,avx512vl,avx512vpopcntdq")]
pub(crate) unsafe fn threshold_rows(
    acc: &[i32],
    rows: usize,
    n: usize,
    n_pad: usize,
    thr: &[i32],
    flip: &[u64],
    out: &mut [u64],
) {
    let nw = crate::epilogue::assert_threshold_rows(acc, rows, (n, n_pad), (thr, flip), out);
    let full = n / 64;
    let (ap, tp, op) = (acc.as_ptr(), thr.as_ptr(), out.as_mut_ptr());
    for r in 0..rows {
        // SAFETY: row r holds n values at r * n_pad (asserted); out row r holds nw words.
        let (a_row, o_row) = unsafe { (ap.add(r * n_pad), op.add(r * nw)) };
        for (wi, &f) in flip.iter().enumerate().take(full) {
            // SAFETY: lanes 64 wi .. 64 wi + 64 <= n of the row and of thr.
            unsafe {
                let c = |q: usize| {
                    let x = _mm512_loadu_si512(a_row.add(wi * 64 + q * 16).cast());
                    let t = _mm512_loadu_si512(tp.add(wi * 64 + q * 16).cast());
                    u64::from(_mm512_cmplt_epi32_mask(x, t))
                };
                let bits = c(0) | (c(1) << 16) | (c(2) << 32) | (c(3) << 48);
                o_row.add(wi).write(bits ^ f);
            }
        }
        if full < nw {
            let lo = full * 64;
            let mut bits = 0u64;
            let mut i = lo;
            while i < n {
                let rem = (n - i).min(16);
                let k: __mmask16 = ((1u32 << rem) - 1) as u16;
                // SAFETY: the masked loads touch only lanes i..i + rem <= n of the row and thr.
                let m = unsafe {
                    let x = _mm512_maskz_loadu_epi32(k, a_row.add(i));
                    let t = _mm512_maskz_loadu_epi32(k, tp.add(i));
                    _mm512_mask_cmplt_epi32_mask(k, x, t)
                };
                bits |= u64::from(m) << (i - lo);
                i += 16;
            }
            let valid = (1u64 << (n - lo)) - 1;
            // SAFETY: word `full` < nw of out row r.
            unsafe { o_row.add(full).write((bits ^ flip[full]) & valid) };
        }
    }
}

/// Sums of `rows` rows of `s` signed bytes each: `sum(a) = sum_u8(a ^ 0x80) - 128 * s`, with
/// `vpsadbw` adding 8 unsigned bytes per 64-bit lane (masked load for the row tail).
///
/// # Safety
/// The CPU must support [`bitpack::Isa::Avx512`]; `a` valid for `rows * s` bytes, `out` for
/// `rows` values.
#[target_feature(enable = "avx2,fma,bmi1,bmi2,popcnt,avx512f,avx512bw,avx512vl,avx512vpopcntdq")]
pub(crate) unsafe fn row_sums_i8(a: *const i8, s: usize, rows: usize, out: *mut i32) {
    let bias = _mm512_set1_epi8(-128);
    let zero = _mm512_setzero_si512();
    for r in 0..rows {
        let mut acc = _mm512_setzero_si512();
        let mut i = 0;
        while i < s {
            let rem = (s - i).min(64);
            let k: __mmask64 = if rem == 64 {
                u64::MAX
            } else {
                (1u64 << rem) - 1
            };
            // SAFETY: the masked load touches only bytes i..i + rem of row r.
            let v = unsafe { _mm512_maskz_loadu_epi8(k, a.add(r * s + i)) };
            let u = _mm512_maskz_mov_epi8(k, _mm512_xor_si512(v, bias));
            acc = _mm512_add_epi64(acc, _mm512_sad_epu8(u, zero));
            i += 64;
        }
        let total = _mm512_reduce_add_epi64(acc) - 128 * s as i64;
        // SAFETY: out holds rows values.
        unsafe { out.add(r).write(total as i32) };
    }
}

/// Bits `lo .. hi` of a lane mask (empty when `hi <= lo`).
#[inline]
fn lane_bits(lo: isize, hi: isize) -> u32 {
    let (lo, hi) = (lo.max(0) as u32, hi.clamp(0, 31) as u32);
    if hi <= lo {
        0
    } else {
        ((1u32 << hi) - 1) & !((1u32 << lo) - 1)
    }
}

/// Dense-layout im2col of `len` consecutive output pixels `(oy, ox0 ..)` of one output row,
/// 8 pixels per vector, written **word-major**: word `j` of pixel `q` goes to
/// `dst[j * dst_stride + q]`. Pixels have one word holding `cin` channels (`cin` divides 64);
/// tap `t` (row-major over the `kh x kw` kernel) occupies bits `t * cin ..` of the im2col row,
/// so word `j` is the OR of its taps' pixel words shifted into place. Each tap is one masked
/// load of 8 pixels (stride 1), two loads and a permute (stride 2) or a gather; lanes outside
/// the image read as 0 (+1, the padding value before correction), lanes beyond `len` too.
/// The last vector of the run stores all 8 lanes (up to 7 words past the run).
///
/// # Safety
/// The CPU must support [`bitpack::Isa::Avx512`]; `img` valid for `h * w` words;
/// `dst + j * dst_stride` valid for `len.div_ceil(8) * 8` words for every word `j` of the row
/// (`ceil(kh * kw * cin / 64)` words); `kw <= 32`.
#[target_feature(enable = "avx2,fma,bmi1,bmi2,popcnt,avx512f,avx512bw,avx512vl,avx512vpopcntdq")]
pub(crate) unsafe fn im2col_dense_row(
    img: *const u64,
    hw: (usize, usize),
    geom: (usize, usize, usize, usize),
    cin: usize,
    run: (usize, usize, usize),
    dst: *mut u64,
    dst_stride: usize,
) {
    // SAFETY: forwarded caller's contract.
    unsafe {
        match geom.2 {
            1 => im2col_dense_row_s::<1>(img, hw, geom, cin, run, dst, dst_stride),
            2 => im2col_dense_row_s::<2>(img, hw, geom, cin, run, dst, dst_stride),
            _ => im2col_dense_row_s::<0>(img, hw, geom, cin, run, dst, dst_stride),
        }
    }
}

/// [`im2col_dense_row`] for stride `S` (1, 2; 0 = any stride, by gathers).
///
/// # Safety
/// As [`im2col_dense_row`].
#[target_feature(enable = "avx2,fma,bmi1,bmi2,popcnt,avx512f,avx512bw,avx512vl,avx512vpopcntdq")]
unsafe fn im2col_dense_row_s<const S: usize>(
    img: *const u64,
    (h, w): (usize, usize),
    (kh, kw, stride, pad): (usize, usize, usize, usize),
    cin: usize,
    (oy, ox0, len): (usize, usize, usize),
    dst: *mut u64,
    dst_stride: usize,
) {
    let taps = kh * kw;
    let even = _mm512_setr_epi64(0, 2, 4, 6, 8, 10, 12, 14);
    let (wi, si, pi) = (w as isize, stride as isize, pad as isize);
    let mut c0 = 0;
    while c0 < len {
        let rem = (len - c0).min(8) as isize;
        // Column c of the kernel reads words x0 + c (+ l * stride for lane l) of a row.
        let x0 = (ox0 + c0) as isize * si - pi;
        // Per kernel column: the lane (stride 1) or word (stride 2) mask of in-image reads,
        // or the gather indices and lane mask (other strides).
        let mut masks = [0u32; 32];
        let mut gidx = [_mm512_setzero_si512(); 32];
        for (c, m) in masks.iter_mut().enumerate().take(kw) {
            let xc = x0 + c as isize;
            *m = match S {
                1 => lane_bits(-xc, rem.min(wi - xc)),
                2 => lane_bits(-xc, (2 * rem - 1).min(wi - xc)),
                _ => {
                    let mut ix = [0i64; 8];
                    let mut m = 0;
                    for (l, v) in ix.iter_mut().enumerate() {
                        let x = xc + l as isize * si;
                        if (l as isize) < rem && (0..wi).contains(&x) {
                            *v = x as i64;
                            m |= 1 << l;
                        }
                    }
                    // SAFETY: ix holds 8 values.
                    gidx[c] = unsafe { _mm512_loadu_si512(ix.as_ptr().cast()) };
                    m
                }
            };
        }
        let mut word = _mm512_setzero_si512();
        let mut bit = 0;
        for r in 0..kh {
            let iy = (oy * stride + r) as isize - pi;
            let inside = (0..h as isize).contains(&iy);
            let row = img.wrapping_add((iy.max(0) as usize) * w);
            for c in 0..kw {
                if inside {
                    let p = row.wrapping_offset(x0 + c as isize);
                    // SAFETY: (all arms) the masks admit only words 0..w of image row iy (in
                    // bounds of img); masked-off lanes are not accessed (AVX-512 fault
                    // suppression), so the pointer itself may lie outside the row.
                    let v = unsafe {
                        match S {
                            1 => _mm512_maskz_loadu_epi64(masks[c] as u8, p.cast()),
                            2 => {
                                let lo = _mm512_maskz_loadu_epi64(masks[c] as u8, p.cast());
                                let hi = _mm512_maskz_loadu_epi64(
                                    (masks[c] >> 8) as u8,
                                    p.wrapping_add(8).cast(),
                                );
                                _mm512_permutex2var_epi64(lo, even, hi)
                            }
                            _ => _mm512_mask_i64gather_epi64::<8>(
                                _mm512_setzero_si512(),
                                masks[c] as u8,
                                gidx[c],
                                row.cast(),
                            ),
                        }
                    };
                    let sh = _mm_cvtsi64_si128((bit % 64) as i64);
                    word = _mm512_or_si512(word, _mm512_sll_epi64(v, sh));
                }
                let t = r * kw + c;
                if t + 1 == taps || (bit + cin).is_multiple_of(64) {
                    // SAFETY: word bit / 64 of pixels c0 .. c0 + 8 is in dst (caller's
                    // contract).
                    unsafe {
                        _mm512_storeu_si512(dst.add(bit / 64 * dst_stride + c0).cast(), word)
                    };
                    word = _mm512_setzero_si512();
                }
                bit += cin;
            }
        }
        c0 += 8;
    }
}

/// OR of `last & mask` over the last word of every `kw`-word row of `words`
/// (`words.len()` a multiple of `kw`): 8 rows per step with a periodic mask for `kw <= 8`,
/// `kw` known at compile time so that the masks and one accumulator per vector stay in
/// registers (independent chains: the step is bound by its loads, not by one OR chain).
///
/// # Safety
/// The CPU must support [`bitpack::Isa::Avx512`].
#[target_feature(enable = "avx2,fma,bmi1,bmi2,popcnt,avx512f,avx512bw,avx512vl,avx512vpopcntdq")]
pub(crate) unsafe fn or_last_words(words: &[u64], kw: usize, mask: u64) -> u64 {
    // SAFETY: AVX-512 is available (caller's contract).
    unsafe {
        match kw {
            1 => or_last_words_k::<1>(words, mask),
            2 => or_last_words_k::<2>(words, mask),
            3 => or_last_words_k::<3>(words, mask),
            4 => or_last_words_k::<4>(words, mask),
            5 => or_last_words_k::<5>(words, mask),
            6 => or_last_words_k::<6>(words, mask),
            7 => or_last_words_k::<7>(words, mask),
            8 => or_last_words_k::<8>(words, mask),
            _ => {
                words
                    .chunks_exact(kw.max(1))
                    .fold(0, |a, r| a | r[r.len() - 1])
                    & mask
            }
        }
    }
}

/// [`or_last_words`] for `KW` words per row (`1..=8`).
///
/// # Safety
/// The CPU must support [`bitpack::Isa::Avx512`].
#[target_feature(enable = "avx2,fma,bmi1,bmi2,popcnt,avx512f,avx512bw,avx512vl,avx512vpopcntdq")]
unsafe fn or_last_words_k<const KW: usize>(words: &[u64], mask: u64) -> u64 {
    let mut pattern = [0u64; 64];
    for r in 0..8 {
        pattern[r * KW + KW - 1] = mask;
    }
    let mut pat = [_mm512_setzero_si512(); KW];
    for (v, p) in pat.iter_mut().enumerate() {
        // SAFETY: pattern holds 64 >= 8 * KW words.
        *p = unsafe { _mm512_loadu_si512(pattern.as_ptr().add(8 * v).cast()) };
    }
    let mut acc = [_mm512_setzero_si512(); KW];
    let mut chunks = words.chunks_exact(8 * KW);
    for c in &mut chunks {
        for v in 0..KW {
            // SAFETY: c holds 8 * KW words.
            let x = unsafe { _mm512_loadu_si512(c.as_ptr().add(8 * v).cast()) };
            // acc | (x & p)
            acc[v] = _mm512_ternarylogic_epi64::<0xf8>(acc[v], x, pat[v]);
        }
    }
    let all = acc
        .iter()
        .fold(_mm512_setzero_si512(), |a, &v| _mm512_or_si512(a, v));
    let tail = chunks
        .remainder()
        .iter()
        .zip(&pattern)
        .fold(0, |a, (x, p)| a | (x & p));
    tail | _mm512_reduce_or_epi64(all) as u64
}

/// Bits `lo .. hi` of a 64-lane mask (empty when `hi <= lo`).
#[inline]
fn lane_bits64(lo: isize, hi: isize) -> u64 {
    let (lo, hi) = (lo.clamp(0, 64) as u32, hi.clamp(0, 64) as u32);
    if hi <= lo {
        0
    } else {
        let upto = |b: u32| if b >= 64 { u64::MAX } else { (1u64 << b) - 1 };
        upto(hi) & !upto(lo)
    }
}

/// Int8 im2col with the `+128` offset of the VNNI kernel: output rows `r0 .. r0 + rows`
/// (pixels in NHWC order of a `batch x ho x wo` output) into `dst` (row stride `s`), each byte
/// `a ^ 0x80`, padded positions `0x80` (`a = 0`). Pixels are `cs` bytes; a kernel row of a
/// pixel is `kw * cs` contiguous input bytes, copied 64 at a time: a masked load (columns
/// outside the image and bytes beyond the kernel row masked off) and a full 64-byte store.
/// Stores go in increasing address order, so a store's overhang is overwritten by the next
/// one; the last may write up to 63 bytes past row `rows - 1`.
///
/// # Safety
/// The CPU must support [`bitpack::Isa::Avx512`] (BW); `input` holds `batch * h * w * cs`
/// bytes; `dst` `rows * s + 64` bytes with `s >= kh * kw * cs`; the rows lie inside the
/// output.
#[target_feature(enable = "avx2,fma,bmi1,bmi2,popcnt,avx512f,avx512bw,avx512vl,avx512vpopcntdq")]
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn im2col_i8_offset(
    input: *const i8,
    (h, w, ho, wo): (usize, usize, usize, usize),
    (kh, kw, stride, pad): (usize, usize, usize, usize),
    cs: usize,
    (r0, rows, s): (usize, usize, usize),
    dst: *mut i8,
) {
    let bias = _mm512_set1_epi8(-128);
    let span = kw * cs;
    let (mut b, mut oy, mut ox) = (r0 / (ho * wo), r0 / wo % ho, r0 % wo);
    if kh == 1 && kw == 1 && pad == 0 && s == cs {
        // 1x1 without padding (a strided gather of whole pixels, e.g. a stride-2 shortcut):
        // every pixel is inside and a row is one pixel (`s == cs`), so no masks per row.
        let tail = lane_bits64(0, (cs % 64) as isize);
        for r in 0..rows {
            let src = input.wrapping_add(((b * h + oy * stride) * w + ox * stride) * cs);
            let d = dst.wrapping_add(r * s);
            let mut o = 0;
            while o + 64 <= cs {
                // SAFETY: bytes o .. o + 64 of the pixel (in bounds of input) and of row r.
                unsafe {
                    let v = _mm512_loadu_si512(src.wrapping_add(o).cast());
                    _mm512_storeu_si512(d.wrapping_add(o).cast(), _mm512_xor_si512(v, bias));
                }
                o += 64;
            }
            if tail != 0 {
                // SAFETY: the mask admits the pixel's last cs % 64 bytes; the store writes
                // bytes o .. o + 64 of row r, inside dst's rows * s + 64 bytes.
                unsafe {
                    let v = _mm512_maskz_loadu_epi8(tail, src.wrapping_add(o));
                    _mm512_storeu_si512(d.wrapping_add(o).cast(), _mm512_xor_si512(v, bias));
                }
            }
            ox += 1;
            if ox == wo {
                ox = 0;
                oy += 1;
                if oy == ho {
                    oy = 0;
                    b += 1;
                }
            }
        }
        return;
    }
    for r in 0..rows {
        let d = dst.wrapping_add(r * s);
        let ix0 = (ox * stride) as isize - pad as isize;
        let interior_x = ix0 >= 0 && ix0 + kw as isize <= w as isize;
        // Valid bytes of a kernel row: the columns inside the image.
        let (vlo, vhi) = (-ix0 * cs as isize, (w as isize - ix0) * cs as isize);
        for kr in 0..kh {
            let iy = (oy * stride + kr) as isize - pad as isize;
            let inside = (0..h as isize).contains(&iy);
            let src = input
                .wrapping_add((b * h + iy.max(0) as usize) * w * cs)
                .wrapping_offset(ix0 * cs as isize);
            let mut o = 0;
            while o < span {
                let n = (span - o).min(64) as isize;
                let oi = o as isize;
                let load = if !inside {
                    0
                } else if interior_x {
                    lane_bits64(0, n)
                } else {
                    lane_bits64(vlo - oi, (vhi - oi).min(n))
                };
                // SAFETY: the load mask admits only bytes of columns inside image row iy (in
                // bounds of input; masked-off lanes are not accessed); the store writes bytes
                // kr * span + o .. + 64 of row r, inside dst's rows * s + 64 bytes.
                unsafe {
                    let v = _mm512_maskz_loadu_epi8(load, src.wrapping_add(o));
                    _mm512_storeu_si512(
                        d.wrapping_add(kr * span + o).cast(),
                        _mm512_xor_si512(v, bias),
                    );
                }
                o += 64;
            }
        }
        // Row tail beyond the taps (weights are zero there): +128 offset zeros.
        let mut o = kh * span;
        while o < s {
            // SAFETY: bytes o .. o + 64 of row r, inside dst's rows * s + 64 bytes.
            unsafe { _mm512_storeu_si512(d.wrapping_add(o).cast(), bias) };
            o += 64;
        }
        ox += 1;
        if ox == wo {
            ox = 0;
            oy += 1;
            if oy == ho {
                oy = 0;
                b += 1;
            }
        }
    }
}

/// Whether every byte of `a` lies in `[-64, 64]`: `(v + 64) as u8 <= 128`, an unsigned max
/// over 256 bytes per step (four independent vectors).
///
/// # Safety
/// The CPU must support [`bitpack::Isa::Avx512`] (BW).
#[target_feature(enable = "avx2,fma,bmi1,bmi2,popcnt,avx512f,avx512bw,avx512vl,avx512vpopcntdq")]
pub(crate) unsafe fn act_range_ok(a: &[i8]) -> bool {
    let off = _mm512_set1_epi8(64);
    let mut mx = [_mm512_setzero_si512(); 4];
    let mut chunks = a.chunks_exact(256);
    for c in &mut chunks {
        for (q, m) in mx.iter_mut().enumerate() {
            // SAFETY: c holds 256 bytes.
            let v = unsafe { _mm512_loadu_si512(c.as_ptr().add(q * 64).cast()) };
            *m = _mm512_max_epu8(*m, _mm512_add_epi8(v, off));
        }
    }
    let m = _mm512_max_epu8(_mm512_max_epu8(mx[0], mx[1]), _mm512_max_epu8(mx[2], mx[3]));
    let over = _mm512_cmpgt_epu8_mask(m, _mm512_set1_epi8(-128));
    over == 0
        && chunks
            .remainder()
            .iter()
            .all(|&v| (v as u8).wrapping_add(64) <= 128)
}

/// Where a direct dense conv tile ([`binary_tile_dd`]) writes, for the pixels of one run
/// (pixel `r` of the run): `I32` rows of `K - 2 * popcount` (`acc + r * acc_stride`), or, when
/// fused, packed signs (bytes at `out + r * out_stride`) compared with the popcount-domain
/// thresholds at `thr + xoff[r]` (the run's threshold rows share the output row's
/// border case; `xoff` picks the column's; flip and valid channels folded in as for
/// [`binary_tile_thr`]), 16 channels per dword panel, i.e. two output bytes per panel.
#[derive(Clone, Copy)]
pub(crate) struct DdOut {
    pub(crate) acc: *mut i32,
    pub(crate) acc_stride: usize,
    pub(crate) thr: *const i32,
    pub(crate) xoff: *const usize,
    pub(crate) out: *mut u8,
    pub(crate) out_stride: usize,
}

/// Dwords per output pixel of the direct dense 3x3 conv: `Cin = 32`: one per tap; `Cin = 16`:
/// three dwords of vertically paired pixels (kernel rows 0 and 1 of columns 0, 1, 2), one
/// horizontal pair (kernel row 2, columns 0 and 1) and one single pixel (row 2, column 2;
/// upper half zero): 144 bits in 5 dwords.
pub(crate) const fn dd_dwords(cin: usize) -> usize {
    if cin == 16 { 5 } else { 9 }
}

/// Byte step between consecutive output pixels of dword `d` of the direct dense conv with
/// stride `s`: the `Cin = 16` horizontal pair (`d = 3`) reads 16-bit pixels, every other
/// dword one 32-bit pixel slot.
pub(crate) const fn dd_step(cin: usize, s: usize, d: usize) -> usize {
    if cin == 16 && d == 3 { 2 * s } else { 4 * s }
}

/// Direct dense binary 3x3 conv micro-tile (`Cin = 16` or `32`, stride `S`): `MR` consecutive
/// output pixels of one output row (`r0 ..`) x `NV` dword panels (`p ..`, 16 channels each),
/// with no im2col. The activations are pre-padded copies of the input (see `conv.rs`,
/// `dd_input`): dword `d` of pixel `r` is the `u32` at byte `a + offs[d] + r * dd_step(d)`.
/// Weights are dword panels in the same order (zero where the activation dword's upper half
/// is zero), so `popcount(a ^ w)` over the dwords counts exactly the mismatches of the
/// `9 * Cin` bits.
///
/// # Safety
/// The CPU must support [`bitpack::Isa::Avx512`]; every dword read (`offs` holds
/// `dd_dwords(CIN)` offsets; pixels `r0 .. r0 + MR`) in bounds; `w` valid for panels
/// `p .. p + NV` of `pstride` dwords; the outputs of `o` valid for those rows and channels.
#[target_feature(enable = "avx2,fma,bmi1,bmi2,popcnt,avx512f,avx512bw,avx512vl,avx512vpopcntdq")]
#[allow(clippy::too_many_arguments)]
unsafe fn binary_tile_dd<
    const MR: usize,
    const NV: usize,
    const CIN: usize,
    const S: usize,
    const FUSED: bool,
>(
    a: *const u8,
    offs: *const usize,
    r0: usize,
    w: *const u32,
    p: usize,
    pstride: usize,
    k: i32,
    o: DdOut,
) {
    let kd = dd_dwords(CIN);
    let mut acc = [[_mm512_setzero_si512(); NV]; MR];
    // `Cin = 16`: the five dwords are unrolled by hand (the compiler kept a loop over them,
    // with each row's address computed from a run-time step), so that every activation
    // address is the dword's base plus a constant: the `s1 16-16` layer 7-11% faster.
    macro_rules! dword {
        ($d:expr) => {
            if $d < kd {
                let d: usize = $d;
                let step = dd_step(CIN, S, d);
                // SAFETY: (this block) dword d of pixels r0 .. r0 + MR and panels p .. p + NV
                // are in bounds (caller's contract).
                unsafe {
                    let ad = a.add(offs.add(d).read() + r0 * step);
                    let mut wv = [_mm512_setzero_si512(); NV];
                    for (j, v) in wv.iter_mut().enumerate() {
                        *v = _mm512_loadu_si512(w.add((p + j) * pstride + d * 16).cast());
                    }
                    for (i, acc_i) in acc.iter_mut().enumerate() {
                        let av = _mm512_set1_epi32(
                            ad.add(i * step).cast::<u32>().read_unaligned() as i32
                        );
                        for j in 0..NV {
                            let pc = _mm512_popcnt_epi32(_mm512_xor_si512(av, wv[j]));
                            acc_i[j] = if d == 0 {
                                pc
                            } else {
                                _mm512_add_epi32(acc_i[j], pc)
                            };
                        }
                    }
                }
            }
        };
    }
    if CIN == 16 {
        dword!(0);
        dword!(1);
        dword!(2);
        dword!(3);
        dword!(4);
    } else {
        // Nine dwords unrolled measured 6% slower at `Cin = 32` (batch 64).
        for d in 0..kd {
            dword!(d);
        }
    }
    if FUSED {
        for (i, acc_i) in acc.iter().enumerate() {
            // SAFETY: pixel r0 + i's threshold offset, the thresholds of channels
            // 16c .. 16c + 16 and bytes 2c, 2c + 1 of its output (c < p + NV) are valid
            // (caller's contract).
            unsafe {
                let t = o.thr.add(o.xoff.add(r0 + i).read());
                let out = o.out.add((r0 + i) * o.out_stride);
                for (j, &pc) in acc_i.iter().enumerate() {
                    let c = p + j;
                    let m = _mm512_cmpge_epi32_mask(pc, _mm512_loadu_si512(t.add(c * 16).cast()));
                    out.add(2 * c).cast::<u16>().write_unaligned(m);
                }
            }
        }
    } else {
        let kv = _mm512_set1_epi32(k);
        for (i, acc_i) in acc.iter().enumerate() {
            for (j, &pc) in acc_i.iter().enumerate() {
                let dv = _mm512_sub_epi32(kv, _mm512_add_epi32(pc, pc));
                // SAFETY: acc row r0 + i, channels 16(p + j) .. + 16 are in bounds (caller's
                // contract).
                unsafe {
                    _mm512_storeu_si512(
                        o.acc.add((r0 + i) * o.acc_stride + (p + j) * 16).cast(),
                        dv,
                    )
                };
            }
        }
    }
}

/// A run of `len` consecutive output pixels of one output row through [`binary_tile_dd`]:
/// panels in pairs (`16 x 1` and `8 x 2` full tiles, 16 accumulators: `24 x 1` and `12 x 2`
/// spilled registers here and were up to 2x slower), row tails in tiles of 8 (one panel), 4, 2
/// and 1. Pixel `r` of the run is row `r` of `o`.
///
/// # Safety
/// As [`binary_tile_dd`] for pixels `0 .. len` and panels `0 .. npanels`.
#[target_feature(enable = "avx2,fma,bmi1,bmi2,popcnt,avx512f,avx512bw,avx512vl,avx512vpopcntdq")]
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn binary_run_dd<const CIN: usize, const S: usize, const FUSED: bool>(
    a: *const u8,
    offs: &[usize],
    len: usize,
    w: *const u32,
    npanels: usize,
    k: i32,
    o: DdOut,
) {
    assert!(offs.len() >= dd_dwords(CIN));
    let pstride = dd_dwords(CIN) * 16;
    let offs = offs.as_ptr();
    let mut p = 0;
    while p < npanels {
        let nv = (npanels - p).min(2);
        let mut r = 0;
        while r < len {
            let left = len - r;
            // SAFETY: forwarded caller's contract (pixels r .. r + MR <= len, panels p .. p +
            // nv <= npanels).
            unsafe {
                macro_rules! tile {
                    ($mr:literal, $nv:literal) => {{
                        binary_tile_dd::<$mr, $nv, CIN, S, FUSED>(a, offs, r, w, p, pstride, k, o);
                        $mr
                    }};
                }
                r += match (nv, left) {
                    (1, 16..) => tile!(16, 1),
                    (1, 8..) => tile!(8, 1),
                    (_, 8..) => tile!(8, 2),
                    (1, 4..) => tile!(4, 1),
                    (_, 4..) => tile!(4, 2),
                    (1, 2..) => tile!(2, 1),
                    (_, 2..) => tile!(2, 2),
                    (1, _) => tile!(1, 1),
                    _ => tile!(1, 2),
                };
            }
        }
        p += nv;
    }
}

/// Narrows `n` one-word pixels (`Cin <= 32` channels in the low bits, the rest pad bits) to
/// `u32` at `dst32` and to `u16` at `dst16` (each when non-null); when `pairs` is non-null,
/// also writes the vertical pairs of the row above, `pairs[i] = above[i] | pixel[i] << 16`
/// (`Cin = 16`); returns the OR of the source words (the caller checks its pad bits).
///
/// # Safety
/// The CPU must support [`bitpack::Isa::Avx512`]; `src` valid for `n` reads, `dst32` and
/// `dst16` (when non-null) for `n` writes; `above` for `n` reads and `pairs` for `n` writes
/// when `pairs` is non-null.
#[target_feature(enable = "avx2,fma,bmi1,bmi2,popcnt,avx512f,avx512bw,avx512vl,avx512vpopcntdq")]
pub(crate) unsafe fn narrow_pixels(
    src: *const u64,
    n: usize,
    dst32: *mut u32,
    dst16: *mut u16,
    (above, pairs): (*const u32, *mut u32),
) -> u64 {
    let mut any = _mm512_setzero_si512();
    let mut i = 0;
    while i < n {
        let m = if n - i >= 8 {
            0xff
        } else {
            (1u8 << (n - i)) - 1
        };
        // SAFETY: lanes i .. i + 8 masked to n; fault suppression covers the rest.
        unsafe {
            let v = _mm512_maskz_loadu_epi64(m, src.add(i).cast());
            any = _mm512_or_si512(any, v);
            if !dst32.is_null() {
                _mm512_mask_cvtepi64_storeu_epi32(dst32.add(i).cast(), m, v);
            }
            if !dst16.is_null() {
                _mm512_mask_cvtepi64_storeu_epi16(dst16.add(i).cast(), m, v);
            }
            if !pairs.is_null() {
                let up = _mm256_maskz_loadu_epi32(m, above.add(i).cast());
                let lo = _mm512_cvtepi64_epi32(v);
                let pv = _mm256_or_si256(up, _mm256_slli_epi32::<16>(lo));
                _mm256_mask_storeu_epi32(pairs.add(i).cast(), m, pv);
            }
        }
        i += 8;
    }
    _mm512_reduce_or_epi64(any) as u64
}
