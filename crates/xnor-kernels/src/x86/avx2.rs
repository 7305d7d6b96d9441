//! AVX2 kernels: binary GEMM with a nibble-LUT popcount and int8 GEMM with `vpmaddubsw`.
//!
//! Same panel layouts as the AVX-512 kernels (binary: 8 channels per panel, one 64-bit lane per
//! channel, handled as two 256-bit halves; int8: 16 channels x 4 bytes per group).
//!
//! # Binary popcount
//! `popcnt8(x) = lut[x & 15] + lut[x >> 4]` with `vpshufb`; the byte counts of up to 31 words
//! add up in bytes, then `vpsadbw` against zero sums the 8 bytes of each 64-bit lane, which is
//! exactly one channel's count.
//!
//! # Int8 saturation bound
//! `vpmaddubsw` adds two `u8 x i8` products into a *saturating* `i16`. Weights are offset to
//! `wu = w + 128` in `[0, 255]` and activations are limited by the public API to `[-64, 64]`, so
//! a pair is at most `2 * 255 * 64 = 32640 <= 32767` in magnitude: it never saturates. The
//! `i16` pairs are widened with `vpmaddwd` against ones into `i32` and accumulated exactly.

use std::arch::x86_64::*;

/// Binary micro-tile: `MR` rows x `NV` panels (8 channels each).
///
/// # Safety
/// The CPU must support [`bitpack::Isa::Avx2`]; pointers as for the AVX-512 binary tile.
#[target_feature(enable = "avx2,fma,bmi1,bmi2,popcnt")]
#[allow(clippy::too_many_arguments)]
unsafe fn binary_tile<const MR: usize, const NV: usize>(
    a: *const u64,
    a_stride: usize,
    kw: usize,
    k: i32,
    w: *const u64,
    out: *mut i32,
    out_stride: usize,
) {
    let pstride = kw * 8;
    let lut = _mm256_setr_epi8(
        0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4, 0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3,
        3, 4,
    );
    let low = _mm256_set1_epi8(0x0f);
    let zero = _mm256_setzero_si256();
    let mut acc = [[[_mm256_setzero_si256(); 2]; NV]; MR];
    // Byte counts add up over at most 31 words (8 per byte and word, 248 <= 255) before one
    // vpsadbw folds them into the 64-bit lanes.
    let mut k0 = 0;
    while k0 < kw {
        let k1 = kw.min(k0 + 31);
        let mut bytes = [[[_mm256_setzero_si256(); 2]; NV]; MR];
        for kk in k0..k1 {
            let mut wv = [[_mm256_setzero_si256(); 2]; NV];
            for (j, v) in wv.iter_mut().enumerate() {
                for (h, vh) in v.iter_mut().enumerate() {
                    // SAFETY: panel j word kk lanes 4h..4h+4 are in bounds (caller's contract).
                    *vh = unsafe { _mm256_loadu_si256(w.add(j * pstride + kk * 8 + h * 4).cast()) };
                }
            }
            for (i, b_i) in bytes.iter_mut().enumerate() {
                // SAFETY: row i word kk is in bounds (caller's contract).
                let av =
                    _mm256_set1_epi64x(unsafe { a.add(i * a_stride + kk).read_unaligned() } as i64);
                for j in 0..NV {
                    for h in 0..2 {
                        let x = _mm256_xor_si256(av, wv[j][h]);
                        let lo = _mm256_and_si256(x, low);
                        let hi = _mm256_and_si256(_mm256_srli_epi16::<4>(x), low);
                        let c8 = _mm256_add_epi8(
                            _mm256_shuffle_epi8(lut, lo),
                            _mm256_shuffle_epi8(lut, hi),
                        );
                        b_i[j][h] = _mm256_add_epi8(b_i[j][h], c8);
                    }
                }
            }
        }
        for (acc_i, b_i) in acc.iter_mut().zip(&bytes) {
            for j in 0..NV {
                for h in 0..2 {
                    acc_i[j][h] = _mm256_add_epi64(acc_i[j][h], _mm256_sad_epu8(b_i[j][h], zero));
                }
            }
        }
        k0 = k1;
    }
    let kv = _mm_set1_epi32(k);
    let idx = _mm256_setr_epi32(0, 2, 4, 6, 0, 2, 4, 6);
    for (i, acc_i) in acc.iter().enumerate() {
        for (j, v) in acc_i.iter().enumerate() {
            for (h, vh) in v.iter().enumerate() {
                let pc = _mm256_castsi256_si128(_mm256_permutevar8x32_epi32(*vh, idx));
                let d = _mm_sub_epi32(kv, _mm_slli_epi32::<1>(pc));
                // SAFETY: out row i, columns j*8+h*4 .. +4 are in bounds (caller's contract).
                unsafe { _mm_storeu_si128(out.add(i * out_stride + j * 8 + h * 4).cast(), d) };
            }
        }
    }
}

/// Binary block (see the AVX-512 `binary_rows`).
///
/// # Safety
/// The CPU must support [`bitpack::Isa::Avx2`]; buffers as for the AVX-512 `binary_rows`.
#[target_feature(enable = "avx2,fma,bmi1,bmi2,popcnt")]
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn binary_rows(
    a: *const u64,
    a_stride: usize,
    rows: usize,
    kw: usize,
    k: i32,
    w: *const u64,
    npanels: usize,
    acc: *mut i32,
    acc_stride: usize,
) {
    for p in 0..npanels {
        let mut r = 0;
        while r < rows {
            let mr = (rows - r).min(3);
            // SAFETY: offsets stay inside the buffers described by the caller's contract.
            unsafe {
                let ap = a.add(r * a_stride);
                let wp = w.add(p * kw * 8);
                let op = acc.add(r * acc_stride + p * 8);
                dispatch_tile!(binary_tile, mr, 1, ap, a_stride, kw, k, wp, op, acc_stride);
            }
            r += mr;
        }
    }
}

/// The AVX2 int8 micro-tiles and their row drivers: `MR` rows x `NV` panels of 16 channels,
/// offset weights `wu = w + 128` (unsigned bytes) against signed activations,
/// `$madd(acc, wu, a)` adding each 32-bit lane's 4-product group to its accumulator, minus
/// `128 * sum(a)` per row at the end.
/// One body for both instruction sets, which need separate functions: a function compiled
/// with AVX-VNNI must not run on a CPU without it.
macro_rules! int8_tile_avx2 {
    (
        $(#[$doc:meta])* $name:ident,
        $(#[$rdoc:meta])* $rows:ident (up to $mr_max:literal rows),
        $features:literal,
        |$acc:ident, $wu:ident, $a:ident| $madd:expr
    ) => {
        $(#[$rdoc])*
        #[target_feature(enable = $features)]
        #[allow(clippy::too_many_arguments)]
        pub(crate) unsafe fn $rows(
            a: *const i8,
            s: usize,
            rows: usize,
            rowsum: *const i32,
            w: *const u8,
            npanels: usize,
            acc: *mut i32,
            acc_stride: usize,
        ) {
            for p in 0..npanels {
                let mut r = 0;
                while r < rows {
                    let mr = (rows - r).min($mr_max);
                    // SAFETY: offsets stay inside the buffers described by the caller's
                    // contract.
                    unsafe {
                        let ap = a.add(r * s);
                        let rs = rowsum.add(r);
                        let wp = w.add(p * s * 16);
                        let op = acc.add(r * acc_stride + p * 16);
                        dispatch_tile!($name, mr, 1, ap, s, rs, wp, op, acc_stride);
                    }
                    r += mr;
                }
            }
        }

        $(#[$doc])*
        #[target_feature(enable = $features)]
        unsafe fn $name<const MR: usize, const NV: usize>(
            a: *const i8,
            s: usize,
            rowsum: *const i32,
            w: *const u8,
            out: *mut i32,
            out_stride: usize,
        ) {
            let pstride = s * 16;
            let mut acc = [[[_mm256_setzero_si256(); 2]; NV]; MR];
            let mut g = 0;
            while g < s {
                let mut wv = [[_mm256_setzero_si256(); 2]; NV];
                for (j, v) in wv.iter_mut().enumerate() {
                    for (h, vh) in v.iter_mut().enumerate() {
                        // SAFETY: panel j group g/4, half h (32 bytes) is in bounds (caller's
                        // contract).
                        *vh = unsafe {
                            _mm256_loadu_si256(w.add(j * pstride + g * 16 + h * 32).cast())
                        };
                    }
                }
                for (i, acc_i) in acc.iter_mut().enumerate() {
                    // SAFETY: bytes g..g+4 of row i are in bounds (s is a multiple of 4).
                    let av = _mm256_set1_epi32(unsafe {
                        a.add(i * s + g).cast::<i32>().read_unaligned()
                    });
                    for j in 0..NV {
                        for h in 0..2 {
                            let ($acc, $wu, $a) = (acc_i[j][h], wv[j][h], av);
                            acc_i[j][h] = $madd;
                        }
                    }
                }
                g += 4;
            }
            for (i, acc_i) in acc.iter().enumerate() {
                // SAFETY: rowsum holds MR values (caller's contract).
                let corr = _mm256_set1_epi32(unsafe { rowsum.add(i).read() } << 7);
                for (j, v) in acc_i.iter().enumerate() {
                    for (h, vh) in v.iter().enumerate() {
                        // SAFETY: out row i, columns j*16+h*8 .. +8 are in bounds (caller's
                        // contract).
                        unsafe {
                            _mm256_storeu_si256(
                                out.add(i * out_stride + j * 16 + h * 8).cast(),
                                _mm256_sub_epi32(*vh, corr),
                            )
                        };
                    }
                }
            }
        }
    };
}

int8_tile_avx2!(
    /// Int8 micro-tile with `vpmaddubsw` + `vpmaddwd` (pairs of products in a saturating
    /// `i16`, then widened against ones and added).
    ///
    /// # Safety
    /// The CPU must support [`bitpack::Isa::Avx2`]; pointers as for the AVX-512 int8 tile;
    /// activations in `[-64, 64]` (else the result may be wrong, never unsafe).
    int8_tile,
    /// Int8 block on [`int8_tile`] (see the AVX-512 `int8_rows`): tiles of up to 3 rows x 1
    /// panel.
    ///
    /// # Safety
    /// The CPU must support [`bitpack::Isa::Avx2`]; buffers as for the AVX-512 `int8_rows`.
    int8_rows (up to 3 rows),
    "avx2,fma,bmi1,bmi2,popcnt",
    |acc, wu, a| _mm256_add_epi32(
        acc,
        _mm256_madd_epi16(_mm256_maddubs_epi16(wu, a), _mm256_set1_epi16(1))
    )
);

int8_tile_avx2!(
    /// Int8 micro-tile with AVX-VNNI (`vpdpbusd` on ymm, VEX-encoded): one instruction per
    /// 4-product group instead of `vpmaddubsw` + `vpmaddwd` + add, and no `i16`
    /// intermediate.
    ///
    /// # Safety
    /// As [`int8_tile`], and the CPU must have AVX-VNNI ([`bitpack::isa::has_avx_vnni`]).
    int8_tile_vnni,
    /// [`int8_rows`] on the AVX-VNNI tile: tiles of up to 6 rows x 1 panel (12
    /// accumulators, two weight halves and the broadcast in the 16 ymm registers).
    ///
    /// # Safety
    /// As [`int8_rows`], and the CPU must have AVX-VNNI ([`bitpack::isa::has_avx_vnni`]).
    int8_rows_vnni (up to 6 rows),
    "avx2,fma,bmi1,bmi2,popcnt,avxvnni",
    |acc, wu, a| _mm256_dpbusd_avx_epi32(acc, wu, a)
);

/// Packed signs of `rows` rows of accumulators (row stride `n_pad`, `n` channels): word `w`
/// of a row is `(acc < thr) ^ flip[w]` over its 64 channels, 8 compares per `vpcmpgtd` and
/// their sign bits by `vmovmskps`; the last group of 8 loads only its valid lanes (the others
/// compare `0 < 0`, false), pad bits zero.
///
/// # Safety
/// The CPU must support [`bitpack::Isa::Avx2`]. The slice bounds used are asserted.
#[target_feature(enable = "avx2,fma,bmi1,bmi2,popcnt")]
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
    let (ap, tp, op) = (acc.as_ptr(), thr.as_ptr(), out.as_mut_ptr());
    let lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    // Lanes of the last, partial group of 8 (all 8 when n is a multiple of 8).
    let last = n.div_ceil(8).saturating_sub(1) * 8;
    let tmask = _mm256_cmpgt_epi32(_mm256_set1_epi32((n - last) as i32), lanes);
    for r in 0..rows {
        // SAFETY: row r holds n values at r * n_pad (asserted); out row r holds nw words.
        let (a_row, o_row) = unsafe { (ap.add(r * n_pad), op.add(r * nw)) };
        for (wi, &f) in flip.iter().enumerate().take(nw) {
            let mut bits = 0u64;
            let mut i = wi * 64;
            while i < n.min(wi * 64 + 64) {
                // SAFETY: lanes i .. i + 8 <= n of the row and of thr, or the masked last
                // group, which touches only lanes below n.
                let lt = unsafe {
                    let (x, t) = if i == last {
                        (
                            _mm256_maskload_epi32(a_row.add(i), tmask),
                            _mm256_maskload_epi32(tp.add(i), tmask),
                        )
                    } else {
                        (
                            _mm256_loadu_si256(a_row.add(i).cast()),
                            _mm256_loadu_si256(tp.add(i).cast()),
                        )
                    };
                    _mm256_movemask_ps(_mm256_castsi256_ps(_mm256_cmpgt_epi32(t, x)))
                };
                bits |= u64::from(lt as u8) << (i - wi * 64);
                i += 8;
            }
            let valid = crate::epilogue::valid_mask(n, wi);
            // SAFETY: word wi < nw of out row r.
            unsafe { o_row.add(wi).write((bits ^ f) & valid) };
        }
    }
}

/// Sums of `rows` rows of `s` signed bytes each (`s` a multiple of 4): `sum(a) =
/// sum_u8(a ^ 0x80) - 128 * bytes`, with `vpsadbw` adding 8 unsigned bytes per 64-bit lane,
/// 32 bytes per step; the row's last step loads only its remaining dwords (the others are
/// zero and count as `0x80` after the XOR, so `bytes` is every step's 32).
///
/// # Safety
/// The CPU must support [`bitpack::Isa::Avx2`]; `a` valid for `rows * s` bytes, `out` for
/// `rows` values; `s` a multiple of 4.
#[target_feature(enable = "avx2,fma,bmi1,bmi2,popcnt")]
pub(crate) unsafe fn row_sums_i8(a: *const i8, s: usize, rows: usize, out: *mut i32) {
    let bias = _mm256_set1_epi8(-128);
    let zero = _mm256_setzero_si256();
    let steps = s.div_ceil(32);
    let tail = (s + 32 - steps * 32) / 4;
    let lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    let tmask = _mm256_cmpgt_epi32(_mm256_set1_epi32(tail as i32), lanes);
    for r in 0..rows {
        let row = a.wrapping_add(r * s);
        let mut acc = zero;
        for st in 0..steps {
            let p = row.wrapping_add(st * 32);
            // SAFETY: full steps lie inside row r; the last one loads only its `tail` dwords.
            let v = unsafe {
                if st + 1 < steps {
                    _mm256_loadu_si256(p.cast())
                } else {
                    _mm256_maskload_epi32(p.cast(), tmask)
                }
            };
            acc = _mm256_add_epi64(acc, _mm256_sad_epu8(_mm256_xor_si256(v, bias), zero));
        }
        let h = _mm_add_epi64(
            _mm256_castsi256_si128(acc),
            _mm256_extracti128_si256::<1>(acc),
        );
        let total = _mm_cvtsi128_si64(h) + _mm_extract_epi64::<1>(h) - 128 * 32 * steps as i64;
        // SAFETY: out holds rows values.
        unsafe { out.add(r).write(total as i32) };
    }
}

/// Int8 levels of `rows` rows of accumulators (row stride `n_pad`, `n` channels) into rows of
/// `int8_stride(n)` bytes: per 8 channels the base levels plus each step's increment where
/// `acc >= t` (`!(t > acc)`: one compare, one and-not, one add per step), narrowed to 8 bytes;
/// the channels after the last full group of 8 and the zero pad bytes go through the scalar
/// reference.
///
/// # Safety
/// The CPU must support [`bitpack::Isa::Avx2`]. The slice bounds used are asserted.
#[target_feature(enable = "avx2,fma,bmi1,bmi2,popcnt")]
pub(crate) unsafe fn level_rows(
    acc: &[i32],
    rows: usize,
    n: usize,
    n_pad: usize,
    lt: &crate::epilogue::LevelThresholds,
    out: &mut [i8],
) {
    let (steps, width, base, thr, inc) = lt.parts();
    let stride = lt.assert_rows(acc, rows, (n, n_pad), out);
    let full = n / 8 * 8;
    for r in 0..rows {
        let (a, o) = (
            &acc[r * n_pad..r * n_pad + n],
            &mut out[r * stride..(r + 1) * stride],
        );
        for c in (0..full).step_by(8) {
            // SAFETY: channels c .. c + 8 <= n of the row, of base (width >= n) and of every
            // step's thresholds and increments; bytes c .. c + 8 of the output row.
            unsafe {
                let x = _mm256_loadu_si256(a.as_ptr().add(c).cast());
                let mut v = _mm256_loadu_si256(base.as_ptr().add(c).cast());
                for j in 0..steps {
                    let t = _mm256_loadu_si256(thr.as_ptr().add(j * width + c).cast());
                    let d = _mm256_loadu_si256(inc.as_ptr().add(j * width + c).cast());
                    let below = _mm256_cmpgt_epi32(t, x);
                    v = _mm256_add_epi32(v, _mm256_andnot_si256(below, d));
                }
                // Levels fit i8, so the saturating packs are exact: bytes 0-3 of each lane.
                let p = _mm256_packs_epi16(_mm256_packs_epi32(v, v), _mm256_packs_epi32(v, v));
                let b =
                    _mm_unpacklo_epi32(_mm256_castsi256_si128(p), _mm256_extracti128_si256::<1>(p));
                _mm_storel_epi64(o.as_mut_ptr().add(c).cast(), b);
            }
        }
        // The last n % 8 channels and the pad bytes: the scalar reference.
        crate::epilogue::level_row(a, lt, full, o);
    }
}
