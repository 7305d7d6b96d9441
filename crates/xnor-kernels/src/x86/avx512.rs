//! AVX-512 kernels: binary GEMM with VPOPCNTQ and int8 GEMM with VNNI `vpdpbusd`.
//!
//! # Binary micro-kernel
//! Weights are stored in *panels* of 8 output channels: panel `p`, word `kk` holds the `kk`-th
//! packed word of channels `8p .. 8p + 8` in one 512-bit vector (channel = 64-bit lane). A
//! micro-tile of `MR` activation rows x `NV` panels keeps `MR * NV` zmm accumulators; for each
//! word `kk` it loads `NV` weight vectors, broadcasts each row's word and does
//! `acc += popcnt(broadcast(a) ^ w)`. Lanes are already per-channel popcounts, so there is no
//! horizontal reduction: the tile ends with `K - 2 * popcount` in `i32` and one store per panel.
//! Pad bits are zero in both operands, so the count is exact with the logical `K`. Every
//! instruction of the inner loop is useful work (XOR, VPOPCNTQ, ADD per 512 bit-MACs), which is
//! the register peak's instruction mix.
//!
//! # Int8 micro-kernel (VNNI)
//! `vpdpbusd` multiplies unsigned by signed bytes. Weights are stored offset to unsigned,
//! `wu = w + 128` (in `[0, 255]`), activations stay signed, so the accumulator holds
//! `sum(w * a) + 128 * sum(a)`; the row sum of the activations is subtracted at the end. Panels
//! hold 16 channels x 4 bytes per group of 4 `k` (channel = 32-bit lane). Bounds: each 4-product
//! group is at most `4 * 255 * 128 < 2^18` in magnitude and the `i32` sum is at most
//! `K * 255 * 128`, which the public API limits to `K <= MAX_INT8_K` (no wrap-around).

use std::arch::x86_64::*;

use super::dispatch_tile;

/// Independent chains in the popcount peak loop (2 * 12 + 2 zmm registers live).
pub(crate) const PEAK_CHAINS: usize = 12;

/// Binary micro-tile: `MR` rows x `NV` panels. Row `i` of the (virtual) activation matrix is
/// the concatenation of `nseg` segments of `seg_len` words, segment `s` starting at
/// `a + seg_offs[s] + i * a_stride` (a plain row-major matrix is one segment at offset 0;
/// a conv reads its input in place with one segment per kernel row).
///
/// # Safety
/// The CPU must support [`bitpack::Isa::Avx512`]; every segment word read must be in bounds;
/// `seg_offs` valid for `nseg` values; `w` for `NV` panels of `nseg * seg_len * 8` words;
/// `out` for `MR` rows (stride `out_stride`) of `NV * 8` `i32`.
#[target_feature(enable = "avx2,fma,bmi1,bmi2,popcnt,avx512f,avx512bw,avx512vl,avx512vpopcntdq")]
#[allow(clippy::too_many_arguments)]
unsafe fn binary_tile<const MR: usize, const NV: usize>(
    a: *const u64,
    seg_offs: *const usize,
    nseg: usize,
    seg_len: usize,
    a_stride: usize,
    k: i32,
    w: *const u64,
    out: *mut i32,
    out_stride: usize,
) {
    let pstride = nseg * seg_len * 8;
    let mut acc = [[_mm512_setzero_si512(); NV]; MR];
    for sg in 0..nseg {
        // SAFETY: seg_offs holds nseg offsets; the segment and its weights are in bounds by the
        // caller's contract.
        let (a, w) = unsafe { (a.add(seg_offs.add(sg).read()), w.add(sg * seg_len * 8)) };
        for kk in 0..seg_len {
            let mut wv = [_mm512_setzero_si512(); NV];
            for (j, v) in wv.iter_mut().enumerate() {
                // SAFETY: panel j word kk of this segment is in bounds (caller's contract).
                *v = unsafe { _mm512_loadu_si512(w.add(j * pstride + kk * 8).cast()) };
            }
            for (i, acc_i) in acc.iter_mut().enumerate() {
                // SAFETY: row i word kk of this segment is in bounds (caller's contract).
                let av =
                    _mm512_set1_epi64(unsafe { a.add(i * a_stride + kk).read_unaligned() } as i64);
                for j in 0..NV {
                    acc_i[j] = _mm512_add_epi64(
                        acc_i[j],
                        _mm512_popcnt_epi64(_mm512_xor_si512(av, wv[j])),
                    );
                }
            }
        }
    }
    // Epilogue: narrow the 64-bit counts to i32, two panels per 512-bit vector, and store
    // `K - 2 * popcount`.
    let kv = _mm512_set1_epi32(k);
    for (i, acc_i) in acc.iter().enumerate() {
        let mut j = 0;
        while j + 1 < NV {
            let lo = _mm512_cvtepi64_epi32(acc_i[j]);
            let hi = _mm512_cvtepi64_epi32(acc_i[j + 1]);
            let pc = _mm512_inserti64x4::<1>(_mm512_castsi256_si512(lo), hi);
            let d = _mm512_sub_epi32(kv, _mm512_slli_epi32::<1>(pc));
            // SAFETY: out row i, columns j*8..j*8+16 are in bounds by the caller's contract.
            unsafe { _mm512_storeu_si512(out.add(i * out_stride + j * 8).cast(), d) };
            j += 2;
        }
        if j < NV {
            let pc = _mm512_cvtepi64_epi32(acc_i[j]);
            let d = _mm256_sub_epi32(_mm512_castsi512_si256(kv), _mm256_slli_epi32::<1>(pc));
            // SAFETY: out row i, columns j*8..j*8+8 are in bounds by the caller's contract.
            unsafe { _mm256_storeu_si256(out.add(i * out_stride + j * 8).cast(), d) };
        }
    }
}

/// Binary block: `rows` rows (segments as in [`binary_tile`]) against `npanels` weight panels
/// into `acc` (row stride `acc_stride >= npanels * 8`).
///
/// # Safety
/// The CPU must support [`bitpack::Isa::Avx512`]; for every segment `s`, `a + seg_offs[s]`
/// must be valid for `(rows - 1) * a_stride + seg_len` words; `w` for `npanels` panels of
/// `seg_offs.len() * seg_len * 8` words; `acc` for `rows * acc_stride` values.
#[target_feature(enable = "avx2,fma,bmi1,bmi2,popcnt,avx512f,avx512bw,avx512vl,avx512vpopcntdq")]
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn binary_rows(
    a: *const u64,
    seg_offs: &[usize],
    seg_len: usize,
    a_stride: usize,
    rows: usize,
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
    while p < npanels {
        let nv = (npanels - p).min(4);
        // Few panels: taller tiles keep enough independent accumulators in flight.
        let mr_max = if nv <= 2 { 8 } else { 4 };
        let mut r = 0;
        while r < rows {
            let mr = (rows - r).min(mr_max);
            // SAFETY: the offsets stay inside the buffers described by the caller's contract;
            // the tile reads mr rows and nv panels and writes mr x nv*8 outputs.
            unsafe {
                let ap = a.add(r * a_stride);
                let wp = w.add(p * kw * 8);
                let op = acc.add(r * acc_stride + p * 8);
                dispatch_tile!(
                    binary_tile,
                    mr,
                    nv,
                    ap,
                    so,
                    nseg,
                    seg_len,
                    a_stride,
                    k,
                    wp,
                    op,
                    acc_stride
                );
            }
            r += mr;
        }
        p += nv;
    }
}

/// Binary micro-tile with the threshold epilogue fused: like [`binary_tile`], but instead of
/// storing `i32` results it compares `K - 2 * popcount` with the row's thresholds and stores
/// packed signs: for each pair of panels (16 channels) the 16-bit mask
/// `((acc < thr) ^ flip) & valid` goes to bytes `2j, 2j + 1` of the row's output (channels are
/// multiples of 8 apart, so every panel owns one output byte).
///
/// # Safety
/// As [`binary_tile`] for `a`, `seg_offs` and `w`; `thr[i]` valid for `NV * 8` `i32`,
/// `out[i]` for `NV` bytes (`i < MR`), `flip` and `valid` for `NV` bytes.
#[target_feature(enable = "avx2,fma,bmi1,bmi2,popcnt,avx512f,avx512bw,avx512vl,avx512vpopcntdq")]
#[allow(clippy::too_many_arguments)]
unsafe fn binary_tile_thr<const MR: usize, const NV: usize>(
    a: *const u64,
    seg_offs: *const usize,
    nseg: usize,
    seg_len: usize,
    a_stride: usize,
    k: i32,
    w: *const u64,
    thr: *const *const i32,
    out: *const *mut u8,
    flip: *const u8,
    valid: *const u8,
) {
    let pstride = nseg * seg_len * 8;
    let mut acc = [[_mm512_setzero_si512(); NV]; MR];
    for sg in 0..nseg {
        // SAFETY: as in `binary_tile`.
        let (a, w) = unsafe { (a.add(seg_offs.add(sg).read()), w.add(sg * seg_len * 8)) };
        for kk in 0..seg_len {
            let mut wv = [_mm512_setzero_si512(); NV];
            for (j, v) in wv.iter_mut().enumerate() {
                // SAFETY: panel j word kk of this segment is in bounds (caller's contract).
                *v = unsafe { _mm512_loadu_si512(w.add(j * pstride + kk * 8).cast()) };
            }
            for (i, acc_i) in acc.iter_mut().enumerate() {
                // SAFETY: row i word kk of this segment is in bounds (caller's contract).
                let av =
                    _mm512_set1_epi64(unsafe { a.add(i * a_stride + kk).read_unaligned() } as i64);
                for j in 0..NV {
                    acc_i[j] = _mm512_add_epi64(
                        acc_i[j],
                        _mm512_popcnt_epi64(_mm512_xor_si512(av, wv[j])),
                    );
                }
            }
        }
    }
    let kv = _mm512_set1_epi32(k);
    for (i, acc_i) in acc.iter().enumerate() {
        // SAFETY: thr and out hold MR row pointers (caller's contract).
        let (t, o) = unsafe { (thr.add(i).read(), out.add(i).read()) };
        let mut j = 0;
        while j + 1 < NV {
            let lo = _mm512_cvtepi64_epi32(acc_i[j]);
            let hi = _mm512_cvtepi64_epi32(acc_i[j + 1]);
            let pc = _mm512_inserti64x4::<1>(_mm512_castsi256_si512(lo), hi);
            let d = _mm512_sub_epi32(kv, _mm512_slli_epi32::<1>(pc));
            // SAFETY: thresholds j*8..j*8+16, flip/valid/out bytes j, j+1 are in bounds.
            unsafe {
                let m = _mm512_cmplt_epi32_mask(d, _mm512_loadu_si512(t.add(j * 8).cast()));
                let f = flip.add(j).cast::<u16>().read_unaligned();
                let v = valid.add(j).cast::<u16>().read_unaligned();
                o.add(j).cast::<u16>().write_unaligned((m ^ f) & v);
            }
            j += 2;
        }
        if j < NV {
            let pc = _mm512_cvtepi64_epi32(acc_i[j]);
            let d = _mm256_sub_epi32(_mm512_castsi512_si256(kv), _mm256_slli_epi32::<1>(pc));
            // SAFETY: thresholds j*8..j*8+8, flip/valid/out byte j are in bounds.
            unsafe {
                let m = _mm256_cmplt_epi32_mask(d, _mm256_loadu_si256(t.add(j * 8).cast()));
                o.add(j)
                    .write((m ^ flip.add(j).read()) & valid.add(j).read());
            }
        }
    }
}

/// Binary block with the fused threshold epilogue: rows as in [`binary_rows`], row `r`'s
/// thresholds at `thr[r]` (`npanels * 8` values) and its packed output bytes at `out[r]`.
///
/// # Safety
/// As [`binary_rows`] for `a`, `seg_offs`, `w`; `thr` and `out` hold `rows` pointers, each
/// valid for `npanels * 8` `i32` / `npanels` bytes; `flip` and `valid` for `npanels` bytes.
#[target_feature(enable = "avx2,fma,bmi1,bmi2,popcnt,avx512f,avx512bw,avx512vl,avx512vpopcntdq")]
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn binary_rows_thr(
    a: *const u64,
    seg_offs: &[usize],
    seg_len: usize,
    a_stride: usize,
    rows: usize,
    k: i32,
    w: *const u64,
    npanels: usize,
    thr: &[*const i32],
    out: &[*mut u8],
    flip: *const u8,
    valid: *const u8,
) {
    let nseg = seg_offs.len();
    let so = seg_offs.as_ptr();
    let kw = nseg * seg_len;
    assert!(thr.len() >= rows && out.len() >= rows && rows <= 32);
    let mut p = 0;
    while p < npanels {
        let nv = (npanels - p).min(4);
        let mr_max = if nv <= 2 { 8 } else { 4 };
        // Row pointers shifted to this panel group.
        let mut tp = [std::ptr::null::<i32>(); 32];
        let mut op = [std::ptr::null_mut::<u8>(); 32];
        for r in 0..rows {
            // SAFETY: panel p starts at channel 8p / byte p of every row (caller's contract).
            unsafe {
                tp[r] = thr[r].add(p * 8);
                op[r] = out[r].add(p);
            }
        }
        let mut r = 0;
        while r < rows {
            let mr = (rows - r).min(mr_max);
            // SAFETY: the offsets stay inside the buffers described by the caller's contract.
            unsafe {
                let ap = a.add(r * a_stride);
                let wp = w.add(p * kw * 8);
                dispatch_tile!(
                    binary_tile_thr,
                    mr,
                    nv,
                    ap,
                    so,
                    nseg,
                    seg_len,
                    a_stride,
                    k,
                    wp,
                    tp.as_ptr().add(r),
                    op.as_ptr().add(r),
                    flip.add(p),
                    valid.add(p)
                );
            }
            r += mr;
        }
        p += nv;
    }
}

/// Int8 VNNI micro-tile: `MR` rows of `a` (stride `s` bytes, signed) x `NV` panels of 16
/// channels (offset weights), minus `128 * rowsum[i]`.
///
/// # Safety
/// The CPU must support [`bitpack::Isa::Avx512`] and AVX-512 VNNI; `a` valid for `MR` rows of
/// `s` bytes (`s` a multiple of 4), `w` for `NV` panels of `s * 16` bytes, `rowsum` for `MR`
/// values, `out` for `MR` rows (stride `out_stride`) of `NV * 16` values.
#[target_feature(
    enable = "avx2,fma,bmi1,bmi2,popcnt,avx512f,avx512bw,avx512vl,avx512vpopcntdq,avx512vnni"
)]
#[allow(clippy::too_many_arguments)]
unsafe fn int8_tile<const MR: usize, const NV: usize>(
    a: *const i8,
    s: usize,
    rowsum: *const i32,
    w: *const u8,
    out: *mut i32,
    out_stride: usize,
) {
    let pstride = s * 16;
    let mut acc = [[_mm512_setzero_si512(); NV]; MR];
    let mut g = 0;
    while g < s {
        let mut wv = [_mm512_setzero_si512(); NV];
        for (j, v) in wv.iter_mut().enumerate() {
            // SAFETY: panel j group g/4 (64 bytes) is in bounds by the caller's contract.
            *v = unsafe { _mm512_loadu_si512(w.add(j * pstride + g * 16).cast()) };
        }
        for (i, acc_i) in acc.iter_mut().enumerate() {
            // SAFETY: bytes g..g+4 of row i are in bounds (s is a multiple of 4).
            let av = _mm512_set1_epi32(unsafe { a.add(i * s + g).cast::<i32>().read_unaligned() });
            for j in 0..NV {
                acc_i[j] = _mm512_dpbusd_epi32(acc_i[j], wv[j], av);
            }
        }
        g += 4;
    }
    for (i, acc_i) in acc.iter().enumerate() {
        // SAFETY: rowsum holds MR values by the caller's contract.
        let corr = _mm512_set1_epi32(unsafe { rowsum.add(i).read() } << 7);
        for (j, v) in acc_i.iter().enumerate() {
            // SAFETY: out row i, columns j*16..j*16+16 are in bounds by the caller's contract.
            unsafe {
                _mm512_storeu_si512(
                    out.add(i * out_stride + j * 16).cast(),
                    _mm512_sub_epi32(*v, corr),
                )
            };
        }
    }
}

/// Int8 VNNI block: `rows` rows of `a` (stride `s`) against `npanels` 16-channel panels.
///
/// # Safety
/// As [`int8_tile`] for `rows` rows and `npanels` panels; `rowsum` holds `rows` values and
/// `acc` `rows * acc_stride` values with `acc_stride >= npanels * 16`.
#[target_feature(
    enable = "avx2,fma,bmi1,bmi2,popcnt,avx512f,avx512bw,avx512vl,avx512vpopcntdq,avx512vnni"
)]
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn int8_rows(
    a: *const i8,
    s: usize,
    rows: usize,
    rowsum: *const i32,
    w: *const u8,
    npanels: usize,
    acc: *mut i32,
    acc_stride: usize,
) {
    let mut p = 0;
    while p < npanels {
        let nv = (npanels - p).min(4);
        // Few panels: taller tiles keep enough independent accumulators in flight.
        let mr_max = if nv <= 2 { 8 } else { 4 };
        let mut r = 0;
        while r < rows {
            let mr = (rows - r).min(mr_max);
            // SAFETY: offsets stay inside the buffers described by the caller's contract.
            unsafe {
                let ap = a.add(r * s);
                let rs = rowsum.add(r);
                let wp = w.add(p * s * 16);
                let op = acc.add(r * acc_stride + p * 16);
                dispatch_tile!(int8_tile, mr, nv, ap, s, rs, wp, op, acc_stride);
            }
            r += mr;
        }
        p += nv;
    }
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
    let nw = n.div_ceil(64);
    let full = n / 64;
    assert!(n_pad >= n && thr.len() >= n && flip.len() >= nw);
    assert!(rows == 0 || (acc.len() >= (rows - 1) * n_pad + n && out.len() >= rows * nw));
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
