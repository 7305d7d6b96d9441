//! One generic harness: every kernel on every ISA this host has, against the scalar reference
//! and a naive unpacked conv, with exact equality.

use proptest::prelude::*;
use xnor_kernels::{
    BinaryConv2d, BinaryWeights, Conv2dConfig, Direction, Int8Conv2d, Int8Weights, Isa,
    KernelError, LevelThresholds, Output, PadMode, Thresholds, binary_gemm_with, int8_gemm_with,
    maxpool2x2_i32, maxpool2x2_packed, reference,
};

/// Deterministic xorshift generator (no external RNG needed).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn signs(&mut self, n: usize) -> Vec<i8> {
        (0..n)
            .map(|_| if self.next() & 1 == 1 { -1 } else { 1 })
            .collect()
    }
    fn levels(&mut self, n: usize, lo: i8, hi: i8) -> Vec<i8> {
        let span = (i16::from(hi) - i16::from(lo) + 1) as u64;
        (0..n)
            .map(|_| (i16::from(lo) + (self.next() % span) as i16) as i8)
            .collect()
    }
}

/// Packs `rows` rows of `k` +-1 values (bit = 1 for -1, zero pad bits).
fn pack(vals: &[i8], rows: usize, k: usize) -> Vec<u64> {
    let kw = k.div_ceil(64);
    let mut out = vec![0u64; rows * kw];
    for r in 0..rows {
        for j in 0..k {
            if vals[r * k + j] < 0 {
                out[r * kw + j / 64] |= 1 << (j % 64);
            }
        }
    }
    out
}

/// Pads int8 rows of `k` to the int8 stride with zeros.
fn pad_rows(vals: &[i8], rows: usize, k: usize) -> Vec<i8> {
    let s = reference::int8_stride(k);
    let mut out = vec![0i8; rows * s];
    for r in 0..rows {
        out[r * s..r * s + k].copy_from_slice(&vals[r * k..(r + 1) * k]);
    }
    out
}

fn naive_dot(a: &[i8], w: &[i8]) -> i32 {
    a.iter()
        .zip(w)
        .map(|(&x, &y)| i32::from(x) * i32::from(y))
        .sum()
}

/// A threshold for channel `c` of `acc` (`n` channels per row): mostly an accumulator of that
/// channel +-1 (so that `acc == t` is common), otherwise anywhere in `-K - 1 ..= K + 1`.
fn threshold_near(rng: &mut Rng, n: usize, k: usize, acc: &[i32], c: usize) -> i32 {
    let rows = acc.len() / n.max(1);
    if rows > 0 && !rng.next().is_multiple_of(4) {
        let r = (rng.next() % rows as u64) as usize;
        acc[r * n + c] + (rng.next() % 3) as i32 - 1
    } else {
        (rng.next() % (2 * k as u64 + 3)) as i32 - k as i32 - 1
    }
}

/// Random thresholds and directions (including the constant ones). Most thresholds are taken
/// from the accumulators themselves (+-1), so that `acc == t` boundary cases are common.
fn thresholds(rng: &mut Rng, n: usize, k: usize, acc: &[i32]) -> Thresholds {
    let dirs = [
        Direction::Increasing,
        Direction::Decreasing,
        Direction::AlwaysPlus,
        Direction::AlwaysMinus,
    ];
    let t: Vec<i32> = (0..n).map(|c| threshold_near(rng, n, k, acc, c)).collect();
    let d: Vec<Direction> = (0..n)
        .map(|_| dirs[(rng.next() % 8).min(3) as usize])
        .collect();
    Thresholds::new(&t, &d).unwrap()
}

/// A per-channel map from accumulators to int8 levels.
type LevelMap<'a> = dyn Fn(usize, i32) -> i8 + 'a;

/// A random monotone map from accumulators to int8 levels per channel, as a list of
/// `(threshold, level from there on)` steps over a base level: sign, ternary or pow2-like
/// level sets, rising or falling, with most thresholds taken from the accumulators (+-1) so
/// that `acc == t` is common; some channels constant. Returns `f(c, acc)`.
fn level_map(rng: &mut Rng, n: usize, k: usize, acc: &[i32]) -> impl Fn(usize, i32) -> i8 {
    let sets: [&[i8]; 4] = [&[-1, 1], &[-1, 0, 1], &[-4, -2, -1, 0, 1, 2, 4], &[3]];
    let chans: Vec<(i8, Vec<(i32, i8)>)> = (0..n)
        .map(|c| {
            let set = sets[(rng.next() % 4) as usize];
            let rising = !rng.next().is_multiple_of(3);
            let levels: Vec<i8> = if rising {
                set.to_vec()
            } else {
                set.iter().rev().copied().collect()
            };
            let mut t: Vec<i32> = (1..levels.len())
                .map(|_| threshold_near(rng, n, k, acc, c))
                .collect();
            t.sort_unstable();
            (
                levels[0],
                t.into_iter().zip(levels[1..].iter().copied()).collect(),
            )
        })
        .collect();
    move |c: usize, a: i32| {
        let (base, steps) = &chans[c];
        steps
            .iter()
            .take_while(|(t, _)| a >= *t)
            .last()
            .map_or(*base, |&(_, v)| v)
    }
}

/// `f` with one more step per channel at accumulator `at`, in the direction of `f`'s levels
/// (at 35000 or 40000: beyond `i16`, the `i32` path of the level epilogues).
fn with_step_at<'a>(f: &'a LevelMap<'a>, at: i32) -> impl Fn(usize, i32) -> i8 + 'a {
    move |c, a| {
        let up = f(c, i32::MAX) >= f(c, i32::MIN);
        f(c, a)
            + if a < at {
                0
            } else if up {
                1
            } else {
                -1
            }
    }
}

/// The levels `f` gives `rows x n` accumulators, in rows of `int8_stride(n)` bytes with zero
/// pad bytes: what the level epilogues must write.
fn expected_levels(f: &LevelMap<'_>, acc: &[i32], rows: usize, n: usize) -> Vec<i8> {
    let stride = reference::int8_stride(n);
    (0..rows * stride)
        .map(|j| {
            let (r, c) = (j / stride, j % stride);
            if c < n { f(c, acc[r * n + c]) } else { 0 }
        })
        .collect()
}

/// `LevelThresholds::apply_with` (levels of a ready `i32` buffer, e.g. a pooled conv output)
/// equals the map on every ISA: channel counts around the 16-lane groups and the 4-byte row
/// padding, odd row counts (the two-row path's single last row), thresholds inside and
/// beyond `i16`.
#[test]
fn level_steps_of_a_buffer_equal_the_map() {
    let mut rng = Rng(0x1e7e1);
    for n in [1usize, 3, 4, 15, 16, 17, 33, 64, 130] {
        for rows in [0usize, 1, 2, 7, 40] {
            let acc: Vec<i32> = (0..rows * n)
                .map(|_| (rng.next() % 4001) as i32 - 2000)
                .collect();
            let f = level_map(&mut rng, n, 2000, &acc);
            // One more step at 35000 (beyond i16: the i32 path).
            let far = with_step_at(&f, 35_000);
            for (i, map) in [&f as &LevelMap<'_>, &far].into_iter().enumerate() {
                let lt = LevelThresholds::from_monotone(n, (-40_000, 40_000), map).unwrap();
                let want = expected_levels(map, &acc, rows, n);
                for isa in Isa::available() {
                    let mut got = vec![i8::MIN; want.len()];
                    lt.apply_with(isa, &acc, &mut got).unwrap();
                    assert_eq!(got, want, "n {n} rows {rows} map {i} isa {isa}");
                }
            }
        }
    }
    let lt = LevelThresholds::from_monotone(3, (-5, 5), |_, a| a.signum() as i8).unwrap();
    assert!(lt.apply(&[1, 2], &mut [0; 4]).is_err());
    assert!(lt.apply(&[1, 2, 3], &mut [0; 3]).is_err());
}

/// Checks every output kind of a computation `run(isa, out)` against `want` (`m x n` i32).
fn check_outputs(
    what: &str,
    m: usize,
    n: usize,
    k: usize,
    want: &[i32],
    rng: &mut Rng,
    run: &dyn Fn(Isa, Output<'_>),
) {
    let scale: Vec<f32> = (0..n).map(|c| 0.25 * c as f32 - 1.0).collect();
    let bias: Vec<f32> = (0..n).map(|c| c as f32 * 0.5).collect();
    let th = thresholds(rng, n, k, want);
    let nw = n.div_ceil(64);
    let want_bits: Vec<u64> = (0..m)
        .flat_map(|r| th.sign_bits(&want[r * n..(r + 1) * n]))
        .collect();
    // Level steps twice: thresholds near the accumulators (the AVX-512 two-row `i16` path),
    // and with one more step per channel at 40000 (beyond `i16`: the `i32` path).
    let f = level_map(rng, n, k, want);
    let far = with_step_at(&f, 40_000);
    let range = (i32::MIN, i32::MAX);
    let maps: [(&LevelMap<'_>, LevelThresholds); 2] = [
        (&f, LevelThresholds::from_monotone(n, range, &f).unwrap()),
        (
            &far,
            LevelThresholds::from_monotone(n, range, &far).unwrap(),
        ),
    ];
    let want_levels: Vec<Vec<i8>> = maps
        .iter()
        .map(|(f, _)| expected_levels(*f, want, m, n))
        .collect();
    for isa in Isa::available() {
        let mut got = vec![i32::MIN; m * n];
        run(isa, Output::I32(&mut got));
        assert_eq!(got, want, "{what} i32 isa={isa}");
        let mut f = vec![f32::NAN; m * n];
        run(
            isa,
            Output::Affine {
                scale: &scale,
                bias: &bias,
                out: &mut f,
            },
        );
        for (i, v) in f.iter().enumerate() {
            assert_eq!(
                *v,
                scale[i % n] * want[i] as f32 + bias[i % n],
                "{what} affine isa={isa}"
            );
        }
        let mut bits = vec![!0u64; m * nw];
        run(
            isa,
            Output::Packed {
                thresholds: &th,
                out: &mut bits,
            },
        );
        assert_eq!(bits, want_bits, "{what} packed isa={isa}");
        for (i, ((_, lt), want_lv)) in maps.iter().zip(&want_levels).enumerate() {
            let mut lv = vec![i8::MIN; want_lv.len()];
            run(
                isa,
                Output::Levels {
                    thresholds: lt,
                    out: &mut lv,
                },
            );
            assert_eq!(&lv, want_lv, "{what} levels {i} isa={isa}");
        }
    }
}

fn check_binary_gemm(m: usize, n: usize, k: usize, seed: u64) {
    let mut rng = Rng(seed | 1);
    let av = rng.signs(m * k);
    let wv = rng.signs(n * k);
    let (a, w) = (pack(&av, m, k), pack(&wv, n, k));
    let mut want = vec![0i32; m * n];
    reference::binary_gemm(&a, &w, m, n, k, &mut want);
    for i in 0..m {
        for j in 0..n {
            assert_eq!(
                want[i * n + j],
                naive_dot(&av[i * k..(i + 1) * k], &wv[j * k..(j + 1) * k])
            );
        }
    }
    let wts = BinaryWeights::new(&w, n, k).unwrap();
    check_outputs(
        &format!("binary gemm {m}x{n}x{k}"),
        m,
        n,
        k,
        &want,
        &mut rng,
        &|isa, out| binary_gemm_with(isa, &a, &wts, m, out).unwrap(),
    );
}

fn check_int8_gemm(m: usize, n: usize, k: usize, seed: u64, act: (i8, i8)) {
    let mut rng = Rng(seed | 1);
    let av = rng.levels(m * k, act.0, act.1);
    let wv = rng.levels(n * k, -128, 127);
    let (a, w) = (pad_rows(&av, m, k), pad_rows(&wv, n, k));
    let mut want = vec![0i32; m * n];
    reference::int8_gemm(&a, &w, m, n, k, &mut want);
    for i in 0..m {
        for j in 0..n {
            assert_eq!(
                want[i * n + j],
                naive_dot(&av[i * k..(i + 1) * k], &wv[j * k..(j + 1) * k])
            );
        }
    }
    let wts = Int8Weights::new(&w, n, k).unwrap();
    check_outputs(
        &format!("int8 gemm {m}x{n}x{k}"),
        m,
        n,
        k,
        &want,
        &mut rng,
        &|isa, out| int8_gemm_with(isa, &a, &wts, m, out).unwrap(),
    );
}

const KS: [usize; 6] = [1, 63, 64, 65, 127, 1000];
const MNS: [(usize, usize); 8] = [
    (0, 3),
    (3, 0),
    (1, 1),
    (1, 17),
    (5, 1),
    (7, 9),
    (33, 24),
    (37, 70),
];

#[test]
fn binary_gemm_very_long_rows() {
    // K past 512k bits: the NEON kernel folds its u16 lane counts into u32 every 4000
    // 128-bit steps (8000 words), so rows of 9000+ words cross that point; every other kernel
    // sees an unusually long row too. Random rows, and rows that differ in every bit (each
    // step then adds the maximum, 16, to every NEON lane: 4096 unfolded steps would wrap; the
    // AVX2 kernel's byte counts, 8 per word, would wrap after 32 words).
    check_binary_gemm(5, 6, 600_001, 99);
    let (m, n, k) = (3usize, 2usize, 600_001usize);
    let kw = k.div_ceil(64);
    let row = |neg: bool| pack(&vec![if neg { -1 } else { 1 }; k], 1, k);
    let a: Vec<u64> = [row(true), row(false), row(true)].concat();
    let w: Vec<u64> = [row(false), row(true)].concat();
    assert_eq!(a.len(), m * kw);
    let wts = BinaryWeights::new(&w, n, k).unwrap();
    let k = k as i32;
    for isa in Isa::available() {
        let mut got = vec![0i32; m * n];
        binary_gemm_with(isa, &a, &wts, m, Output::I32(&mut got)).unwrap();
        assert_eq!(got, [-k, k, k, -k, -k, k], "isa={isa}");
    }
}

#[test]
fn binary_gemm_awkward_shapes() {
    for (i, &k) in KS.iter().enumerate() {
        for (j, &(m, n)) in MNS.iter().enumerate() {
            check_binary_gemm(m, n, k, (i * 31 + j) as u64 + 7);
        }
    }
}

#[test]
fn int8_gemm_awkward_shapes() {
    for (i, &k) in KS.iter().enumerate() {
        for (j, &(m, n)) in MNS.iter().enumerate() {
            check_int8_gemm(m, n, k, (i * 31 + j) as u64 + 11, (-4, 4));
        }
    }
}

#[test]
fn narrow_gemms_every_n_and_tile_shape() {
    // Every n in 1..=64 (1-8 eight-channel panels, 1-4 sixteen-channel int8 panels) at the
    // dense ResNet-20 word counts (K = 144: 3 words, 288: 5 words, both unrolled tiles).
    for n in 1..=64 {
        for &k in &[144, 288] {
            check_binary_gemm(37, n, k, (n * 7 + k) as u64);
            check_int8_gemm(13, n, k, (n * 5 + k) as u64, (-64, 64));
        }
    }
    // Row counts around the tile heights (12, 8, 6), the 32-row blocks and the 384-row direct
    // blocks, with K tails in the 3- and 5-word ranges and beyond.
    for &m in &[1, 6, 11, 12, 13, 16, 17, 24, 25, 385, 400] {
        for &n in &[8, 16, 24, 32, 64] {
            for &k in &[129, 144, 192, 257, 288, 320, 576] {
                check_binary_gemm(m, n, k, (m * 131 + n * 7 + k) as u64);
            }
            check_int8_gemm(m, n, 144, (m * 3 + n) as u64, (-64, 64));
        }
    }
}

#[test]
fn int8_gemm_extreme_values_are_exact() {
    // Largest legal activations against the full weight range: the AVX2 i16 pairs peak here.
    for &k in &[4, 64, 1000] {
        let (m, n) = (5, 20);
        let a = pad_rows(&vec![64i8; m * k], m, k);
        let an = pad_rows(&vec![-64i8; m * k], m, k);
        let mut wv = vec![-128i8; n * k];
        for (i, v) in wv.iter_mut().enumerate() {
            if i % 3 == 0 {
                *v = 127;
            }
        }
        let w = pad_rows(&wv, n, k);
        let wts = Int8Weights::new(&w, n, k).unwrap();
        for a in [&a, &an] {
            let mut want = vec![0; m * n];
            reference::int8_gemm(a, &w, m, n, k, &mut want);
            for isa in Isa::available() {
                let mut got = vec![0; m * n];
                int8_gemm_with(isa, a, &wts, m, Output::I32(&mut got)).unwrap();
                assert_eq!(got, want, "isa={isa} k={k}");
            }
        }
    }
}

/// Naive direct conv on unpacked values (NHWC input, OHWI weights); padded positions take
/// `pad_value`.
#[allow(clippy::too_many_arguments)]
fn naive_conv(
    x: &[i8],
    wts: &[i8],
    (b, h, w, cin): (usize, usize, usize, usize),
    (cout, kh, kw): (usize, usize, usize),
    stride: usize,
    pad: usize,
    pad_value: i32,
) -> (Vec<i32>, usize, usize) {
    let ho = (h + 2 * pad - kh) / stride + 1;
    let wo = (w + 2 * pad - kw) / stride + 1;
    let mut out = vec![0i32; b * ho * wo * cout];
    for n in 0..b {
        for oy in 0..ho {
            for ox in 0..wo {
                for o in 0..cout {
                    let mut s = 0;
                    for r in 0..kh {
                        for c in 0..kw {
                            let iy = (oy * stride + r) as isize - pad as isize;
                            let ix = (ox * stride + c) as isize - pad as isize;
                            for ch in 0..cin {
                                let wv = i32::from(wts[((o * kh + r) * kw + c) * cin + ch]);
                                let xv = if iy < 0 || ix < 0 || iy >= h as isize || ix >= w as isize
                                {
                                    pad_value
                                } else {
                                    i32::from(
                                        x[((n * h + iy as usize) * w + ix as usize) * cin + ch],
                                    )
                                };
                                s += wv * xv;
                            }
                        }
                    }
                    out[((n * ho + oy) * wo + ox) * cout + o] = s;
                }
            }
        }
    }
    (out, ho, wo)
}

#[allow(clippy::too_many_arguments)]
fn check_binary_conv(
    b: usize,
    h: usize,
    w: usize,
    cin: usize,
    cout: usize,
    k: usize,
    stride: usize,
    pad: usize,
    seed: u64,
) {
    let mut rng = Rng(seed | 1);
    let xv = rng.signs(b * h * w * cin);
    let wv = rng.signs(cout * k * k * cin);
    let x = pack(&xv, b * h * w, cin);
    let wp = pack(&wv, cout * k * k, cin);
    for (mode, pv) in [(PadMode::Zero, 0), (PadMode::One, 1)] {
        if pad == 0 && mode == PadMode::One {
            continue;
        }
        let cfg = Conv2dConfig {
            stride,
            padding: pad,
            pad_mode: mode,
        };
        let conv = BinaryConv2d::new(&wp, cout, cin, k, k, cfg).unwrap();
        let (want, ho, wo) = naive_conv(&xv, &wv, (b, h, w, cin), (cout, k, k), stride, pad, pv);
        let m = b * ho * wo;
        let what = format!("binary conv b{b} {h}x{w}x{cin}->{cout} k{k} s{stride} p{pad} {mode:?}");
        check_outputs(&what, m, cout, k * k * cin, &want, &mut rng, &|isa, out| {
            conv.forward_with(isa, &x, b, h, w, out).unwrap()
        });
    }
}

#[allow(clippy::too_many_arguments)]
fn check_int8_conv(
    b: usize,
    h: usize,
    w: usize,
    cin: usize,
    cout: usize,
    k: usize,
    stride: usize,
    pad: usize,
    seed: u64,
) {
    let mut rng = Rng(seed | 1);
    let xv = rng.levels(b * h * w * cin, -4, 4);
    let wv = rng.levels(cout * k * k * cin, -4, 4);
    // bitpack's int8 layout: every pixel and every weight tap padded to a multiple of 4 bytes.
    let wp = pad_rows(&wv, cout * k * k, cin);
    let xp = pad_rows(&xv, b * h * w, cin);
    let cfg = Conv2dConfig {
        stride,
        padding: pad,
        pad_mode: PadMode::Zero,
    };
    let conv = Int8Conv2d::new(&wp, cout, cin, k, k, cfg).unwrap();
    let (want, ho, wo) = naive_conv(&xv, &wv, (b, h, w, cin), (cout, k, k), stride, pad, 0);
    let what = format!("int8 conv b{b} {h}x{w}x{cin}->{cout} k{k} s{stride} p{pad}");
    check_outputs(
        &what,
        b * ho * wo,
        cout,
        k * k * cin * 16,
        &want,
        &mut rng,
        &|isa, out| conv.forward_with(isa, &xp, b, h, w, out).unwrap(),
    );
}

#[test]
fn binary_conv_matches_naive_conv() {
    let mut seed = 1;
    for &cin in &[1, 16, 32, 64, 65, 130] {
        for &cout in &[1, 9, 20] {
            for &(k, stride, pad) in &[
                (3, 1, 1),
                (3, 2, 1),
                (3, 1, 0),
                (1, 1, 0),
                (1, 2, 0),
                (3, 2, 0),
            ] {
                seed += 1;
                check_binary_conv(2, 5, 7, cin, cout, k, stride, pad, seed);
            }
        }
    }
    // Inputs as small as the kernel, and a single pixel with padding.
    check_binary_conv(1, 1, 1, 16, 8, 3, 1, 1, 99);
    check_binary_conv(1, 3, 3, 70, 8, 3, 2, 0, 98);
    // Output rows 8 pixels wide (runs of 8 rows, which take 8 x 3 tiles): 3, 5, 8 and 9
    // panels, strides 1 and 2.
    for &cout in &[24, 40, 64, 72] {
        for &(cin, h, stride) in &[(64, 8, 1), (130, 16, 2)] {
            seed += 1;
            check_binary_conv(2, h, h, cin, cout, 3, stride, 1, seed);
        }
    }
    // Outputs 1-2 pixels wide: blocks of many one-row runs (handed to the kernel 32 at a
    // time), a block ending inside an image.
    check_binary_conv(2, 40, 2, 65, 20, 3, 1, 1, 97);
    check_binary_conv(2, 130, 1, 64, 9, 3, 1, 1, 96);
    check_binary_conv(1, 77, 3, 64, 16, 3, 2, 0, 95);
}

#[test]
fn dense_layout_convs_match_naive_conv() {
    // Cin dividing 64 takes the dense layout (vectorised word-major im2col with AVX-512):
    // rows longer than one 8-pixel vector, strides 1 (masked loads), 2 (loads + permute) and
    // 3 (gathers), paddings 0-2, kernels 2, 3 and 5, narrow and wide outputs.
    let mut seed = 5000;
    for &cin in &[1, 4, 8, 16, 32] {
        for &cout in &[16, 33, 64] {
            for &(k, stride, pad) in &[
                (3, 1, 1),
                (3, 2, 1),
                (3, 3, 1),
                (3, 1, 0),
                (5, 1, 2),
                (5, 2, 2),
                (2, 1, 0),
                (3, 3, 2),
            ] {
                seed += 1;
                check_binary_conv(2, 9, 29, cin, cout, k, stride, pad, seed);
            }
        }
    }
}

#[test]
fn direct_dense_convs_match_naive_conv() {
    // 3x3 convs with Cin 16 or 32, stride 1 or 2 and Cout a multiple of 16 take the direct
    // dense kernel with AVX-512 (pre-padded narrow input copies, no im2col): every tile shape
    // (24 x 1, 12 x 2 and the 8/4/2/1 tails) through rows of 1 to 32 output pixels, one to
    // four panels, paddings 0-2, batch 2, tiny and ResNet-20-sized images.
    let mut seed = 9000;
    for &cin in &[16, 32] {
        for &cout in &[16, 32, 48, 64] {
            for &(h, w) in &[(1, 1), (2, 3), (5, 31), (9, 29), (32, 32)] {
                for &(stride, pad) in &[(1, 1), (2, 1), (1, 0), (2, 0), (1, 2), (2, 2)] {
                    if h + 2 * pad < 3 || w + 2 * pad < 3 || (h == 32 && cout % 32 != 0) {
                        continue;
                    }
                    seed += 1;
                    check_binary_conv(2, h, w, cin, cout, 3, stride, pad, seed);
                }
            }
        }
    }
}

#[test]
fn direct_dense_copies_follow_padding_and_shape() {
    // The direct dense kernel's padded input copy is reused by the next call of the same
    // layout on the thread without clearing; layouts with equal padded sizes but other
    // paddings (32x32 pad 1 and 30x30 pad 2 are both 34x34), other channel counts or batch
    // sizes must not see its stale pixels. Stride 2 writes only the even padded rows of a
    // Cin = 16 copy, so strides alternate on one layout too. Alternate them on one thread.
    let mut seed = 4242;
    for _ in 0..2 {
        for &(b, h, w, cin, pad, stride) in &[
            (1, 32, 32, 16, 1, 1),
            (1, 30, 30, 16, 2, 1),
            (1, 32, 32, 16, 1, 2),
            (1, 32, 32, 16, 1, 1),
            (2, 32, 32, 16, 1, 1),
            (2, 32, 32, 16, 1, 2),
            (1, 32, 32, 32, 1, 1),
            (1, 30, 30, 32, 2, 1),
            (1, 33, 31, 16, 0, 1),
            (1, 33, 31, 16, 0, 2),
            (1, 31, 29, 16, 1, 1),
            (2, 31, 29, 16, 2, 2),
            (2, 30, 28, 16, 1, 2),
        ] {
            seed += 1;
            check_binary_conv(b, h, w, cin, 16, 3, stride, pad, seed);
        }
    }
}

#[test]
fn conv_tables_follow_input_size_and_thresholds() {
    // One layer called with alternating input sizes and thresholds: the per-size tables it
    // keeps between calls must never be reused for another size or other thresholds.
    let mut rng = Rng(777);
    for &(cin, cout) in &[(16, 20), (16, 32), (32, 16), (64, 20), (130, 20)] {
        let cfg = Conv2dConfig {
            stride: 1,
            padding: 1,
            pad_mode: PadMode::Zero,
        };
        let conv = BinaryConv2d::new(
            &pack(&rng.signs(cout * 9 * cin), cout * 9, cin),
            cout,
            cin,
            3,
            3,
            cfg,
        )
        .unwrap();
        let th_a = Thresholds::new(&vec![0; cout], &vec![Direction::Increasing; cout]).unwrap();
        let th_b = Thresholds::new(&vec![3; cout], &vec![Direction::Decreasing; cout]).unwrap();
        for &(h, w, th) in &[
            (5, 7, &th_a),
            (6, 6, &th_a),
            (6, 6, &th_b),
            (5, 7, &th_b),
            (5, 7, &th_a),
        ] {
            let x = pack(&rng.signs(h * w * cin), h * w, cin);
            let mut acc = vec![0; h * w * cout];
            conv.forward_with(Isa::Scalar, &x, 1, h, w, Output::I32(&mut acc))
                .unwrap();
            let want: Vec<u64> = acc.chunks(cout).flat_map(|r| th.sign_bits(r)).collect();
            for isa in Isa::available() {
                let mut got_acc = vec![0; h * w * cout];
                conv.forward_with(isa, &x, 1, h, w, Output::I32(&mut got_acc))
                    .unwrap();
                assert_eq!(got_acc, acc, "isa={isa} {h}x{w} cin={cin}");
                let mut bits = vec![0u64; h * w];
                conv.forward_with(
                    isa,
                    &x,
                    1,
                    h,
                    w,
                    Output::Packed {
                        thresholds: th,
                        out: &mut bits,
                    },
                )
                .unwrap();
                assert_eq!(bits, want, "isa={isa} {h}x{w} cin={cin}");
            }
        }
    }
}

#[test]
fn int8_conv_matches_naive_conv() {
    // With VNNI, convs read a pre-padded offset copy in place (one segment per kernel row),
    // except 1x1 stride 2 (kernel smaller than the stride), Cout > 128 and segments the
    // pair-panel kernel cannot take (cin <= 4 with Cout <= 16): those go through the im2col.
    let mut seed = 1000;
    for &cin in &[1, 3, 16, 33] {
        for &cout in &[1, 17, 40, 130] {
            for &(k, stride, pad) in &[(3, 1, 1), (3, 2, 1), (1, 1, 0), (1, 2, 0)] {
                seed += 1;
                check_int8_conv(2, 5, 7, cin, cout, k, stride, pad, seed);
            }
        }
    }
}

#[test]
fn int8_pointwise_convs_with_wide_pixels() {
    // 1x1 convs without padding gather whole pixels (64 bytes at a time, the rest masked):
    // pixels of exactly 64 bytes and of two chunks plus a tail.
    let mut seed = 6060;
    for &cin in &[64, 130] {
        for &stride in &[1, 2] {
            seed += 1;
            check_int8_conv(2, 7, 5, cin, 17, 1, stride, 0, seed);
        }
    }
}

#[test]
fn int8_padded_copies_follow_layout_and_many_runs() {
    // With VNNI, the in-place int8 convs reuse this thread's offset copy of the input without
    // rewriting its padding when the layout (batch, size, padding, pixel bytes) repeats:
    // layouts of equal padded size (32x32 pad 1 and 30x30 pad 2) or other channel counts must
    // not see stale pixels. Narrow images give blocks of more runs (one per output row) than
    // the kernel takes per call (30x3 and 40x2: 60-80 runs).
    let mut seed = 5151;
    for _ in 0..2 {
        for &(b, h, w, cin, cout, pad) in &[
            (1, 32, 32, 16, 16, 1),
            (1, 30, 30, 16, 16, 2),
            (1, 32, 32, 16, 16, 1),
            (1, 32, 32, 32, 40, 1),
            (1, 30, 30, 32, 40, 2),
            (2, 30, 3, 16, 16, 1),
            (1, 40, 2, 16, 40, 1),
        ] {
            seed += 1;
            check_int8_conv(b, h, w, cin, cout, 3, 1, pad, seed);
        }
    }
}

#[test]
fn int8_conv_extreme_values_are_exact() {
    // Activations at +-64 against weights -128 / 127 through im2col (padded positions and the
    // +128 offset of the VNNI path), a 3x3 and a 5x5 kernel.
    for &(cin, k, stride, pad) in &[(16, 3, 1, 1), (5, 5, 2, 2), (64, 3, 2, 1)] {
        let (b, h, w, cout) = (1, 6, 9, 17);
        let xv: Vec<i8> = (0..b * h * w * cin)
            .map(|i| if i % 3 == 0 { -64 } else { 64 })
            .collect();
        let wv: Vec<i8> = (0..cout * k * k * cin)
            .map(|i| if i % 5 == 0 { 127 } else { -128 })
            .collect();
        let cfg = Conv2dConfig {
            stride,
            padding: pad,
            pad_mode: PadMode::Zero,
        };
        let conv =
            Int8Conv2d::new(&pad_rows(&wv, cout * k * k, cin), cout, cin, k, k, cfg).unwrap();
        let (want, ho, wo) = naive_conv(&xv, &wv, (b, h, w, cin), (cout, k, k), stride, pad, 0);
        let xp = pad_rows(&xv, b * h * w, cin);
        for isa in Isa::available() {
            let mut got = vec![0; b * ho * wo * cout];
            conv.forward_with(isa, &xp, b, h, w, Output::I32(&mut got))
                .unwrap();
            assert_eq!(got, want, "isa={isa} cin={cin} k={k}");
        }
    }
}

#[test]
fn packed_maxpool_equals_pool_then_threshold() {
    let mut rng = Rng(12345);
    let (b, h, w, cin, cout) = (2, 7, 6, 32, 70);
    let xv = rng.signs(b * h * w * cin);
    let wv = rng.signs(cout * 9 * cin);
    let x = pack(&xv, b * h * w, cin);
    let cfg = Conv2dConfig {
        stride: 1,
        padding: 1,
        pad_mode: PadMode::Zero,
    };
    let conv = BinaryConv2d::new(&pack(&wv, cout * 9, cin), cout, cin, 3, 3, cfg).unwrap();
    let (ho, wo) = conv.output_hw(h, w).unwrap();
    // Reference: i32 conv, i32 max-pool, then threshold.
    let mut acc = vec![0; b * ho * wo * cout];
    conv.forward_with(Isa::Scalar, &x, b, h, w, Output::I32(&mut acc))
        .unwrap();
    let th = thresholds(&mut rng, cout, 9 * cin, &acc);
    let mut pooled = vec![0; b * (ho / 2) * (wo / 2) * cout];
    maxpool2x2_i32(&acc, b, ho, wo, cout, &mut pooled).unwrap();
    let want: Vec<u64> = pooled.chunks(cout).flat_map(|r| th.sign_bits(r)).collect();
    for isa in Isa::available() {
        let cw = cout.div_ceil(64);
        let mut bits = vec![0u64; b * ho * wo * cw];
        conv.forward_with(
            isa,
            &x,
            b,
            h,
            w,
            Output::Packed {
                thresholds: &th,
                out: &mut bits,
            },
        )
        .unwrap();
        let mut got = vec![0u64; b * (ho / 2) * (wo / 2) * cw];
        maxpool2x2_packed(&bits, b, ho, wo, cout, &th.pool_and_mask(), &mut got).unwrap();
        assert_eq!(got, want, "isa={isa}");
    }
}

#[test]
fn errors_are_reported() {
    // Pad bits set in activations.
    let w = BinaryWeights::new(&[0, 0], 2, 10).unwrap();
    let mut out = [0; 2];
    let err = binary_gemm_with(Isa::Scalar, &[1 << 20], &w, 1, Output::I32(&mut out)).unwrap_err();
    assert!(
        matches!(err, KernelError::Value { buffer: "a", .. }),
        "{err}"
    );
    // Wrong output length.
    let err = binary_gemm_with(Isa::Scalar, &[0], &w, 1, Output::I32(&mut out[..1])).unwrap_err();
    assert!(
        matches!(
            err,
            KernelError::Length {
                buffer: "out",
                expected: 2,
                ..
            }
        ),
        "{err}"
    );
    // Int8 activation out of range.
    let w8 = Int8Weights::new(&[1, 0, 0, 0], 1, 1).unwrap();
    let err = int8_gemm_with(
        Isa::Scalar,
        &[65, 0, 0, 0],
        &w8,
        1,
        Output::I32(&mut out[..1]),
    )
    .unwrap_err();
    assert!(matches!(err, KernelError::Value { value: 65, .. }), "{err}");
    // A non-zero pad byte in an int8 conv weight tap (cin = 2, taps padded to 4 bytes).
    let err = Int8Conv2d::new(&[1, 0, 5, 0], 1, 2, 1, 1, Conv2dConfig::default()).unwrap_err();
    assert!(
        matches!(
            err,
            KernelError::Value {
                index: 2,
                value: 5,
                ..
            }
        ),
        "{err}"
    );
    // An ISA this host lacks is an error, never a fallback.
    for isa in Isa::ALL.into_iter().filter(|i| !i.is_available()) {
        let err = binary_gemm_with(isa, &[0], &w, 1, Output::I32(&mut out)).unwrap_err();
        assert!(matches!(err, KernelError::Isa(_)), "{err}");
    }
    // Level steps: a map that goes up and down, an empty range, a wrong channel count, an
    // output without the pad bytes of the int8 layout (3 channels -> 4 bytes per row).
    let bump = |_: usize, a: i32| match a {
        ..0 => 0,
        0 => 2,
        _ => 1,
    };
    let err = LevelThresholds::from_monotone(1, (-5, 5), bump).unwrap_err();
    assert!(
        matches!(&err, KernelError::Shape { reason, .. } if reason.contains("channel 0")),
        "{err}"
    );
    assert!(LevelThresholds::from_monotone(1, (1, 0), bump).is_err());
    let lt = LevelThresholds::from_monotone(3, (-5, 5), |_, a| a.signum() as i8).unwrap();
    let mut o8 = [0i8; 4];
    let err = binary_gemm_with(
        Isa::Scalar,
        &[0],
        &w,
        1,
        Output::Levels {
            thresholds: &lt,
            out: &mut o8,
        },
    )
    .unwrap_err();
    assert!(
        matches!(
            err,
            KernelError::Length {
                buffer: "thresholds",
                expected: 2,
                got: 3,
                ..
            }
        ),
        "{err}"
    );
    let w3 = BinaryWeights::new(&[0, 0, 0], 3, 10).unwrap();
    let err = binary_gemm_with(
        Isa::Scalar,
        &[0],
        &w3,
        1,
        Output::Levels {
            thresholds: &lt,
            out: &mut o8[..3],
        },
    )
    .unwrap_err();
    assert!(
        matches!(
            err,
            KernelError::Length {
                buffer: "out",
                expected: 4,
                ..
            }
        ),
        "{err}"
    );
    // Kernel larger than the padded input.
    let conv = BinaryConv2d::new(&[0; 9], 1, 1, 3, 3, Conv2dConfig::default()).unwrap();
    assert!(matches!(
        conv.output_hw(2, 5),
        Err(KernelError::Shape { .. })
    ));
}

/// Calls `f` once per output kind (`I32`, `Affine`, `Packed`, `Levels`) for an `m x n` result and
/// asserts that each call fails with `KernelError::Value` on `buffer` at `index` (`value`
/// when given).
fn expect_value_error(
    what: &str,
    m: usize,
    n: usize,
    (buffer, index, value): (&str, usize, Option<i64>),
    f: &dyn Fn(Output<'_>) -> Result<(), KernelError>,
) {
    let (scale, bias) = (vec![1.0f32; n], vec![0.0f32; n]);
    let th = Thresholds::new(&vec![0; n], &vec![Direction::Increasing; n]).unwrap();
    let lt = LevelThresholds::from_monotone(n, (-1, 1), |_, a| a.signum() as i8).unwrap();
    let (mut o32, mut of, mut ob, mut o8) = (
        vec![0; m * n],
        vec![0.0; m * n],
        vec![0; m * n.div_ceil(64)],
        vec![0; m * reference::int8_stride(n)],
    );
    let outs = [
        Output::I32(&mut o32),
        Output::Affine {
            scale: &scale,
            bias: &bias,
            out: &mut of,
        },
        Output::Packed {
            thresholds: &th,
            out: &mut ob,
        },
        Output::Levels {
            thresholds: &lt,
            out: &mut o8,
        },
    ];
    for out in outs {
        let kind = match out {
            Output::I32(_) => "I32",
            Output::Affine { .. } => "Affine",
            Output::Packed { .. } => "Packed",
            Output::Levels { .. } => "Levels",
        };
        match f(out) {
            Err(KernelError::Value {
                buffer: b,
                index: i,
                value: v,
                ..
            }) if b == buffer && i == index && value.is_none_or(|x| x == v) => {}
            r => panic!(
                "{what} {kind}: expected Value {{ {buffer}, {index}, {value:?} }}, got {r:?}"
            ),
        }
    }
}

/// Bad activations (a set pad bit, an out-of-range int8 value) at the first, a middle and the
/// last row, in every word / byte position that holds pad bits or values, are rejected by every
/// entry point on every ISA and through every output kind, also where the check rides on the
/// kernel's own pass (the AVX-512 dword-panel binary kernel, the VNNI offset pass) and on a
/// thread pool. On error the output contents are unspecified, so only the error is checked.
#[test]
fn bad_inputs_are_rejected_everywhere() {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(3)
        .build()
        .unwrap();
    for threads in [1, 3] {
        let run = |f: &mut (dyn FnMut() + Send)| {
            if threads == 1 {
                f()
            } else {
                pool.install(&mut *f)
            }
        };
        let ms: &[usize] = if threads == 1 { &[1, 25, 400] } else { &[1200] };
        // Binary GEMM: every K with pad bits, the dword-panel widths and others.
        for k in [1usize, 31, 63, 65, 127, 144, 161, 200, 288, 300] {
            let kw = k.div_ceil(64);
            let w = BinaryWeights::new(&vec![0; 32 * kw], 32, k).unwrap();
            for n in [1, 8, 9, 16, 24, 32] {
                let w = BinaryWeights::new(&w.rows()[..n * kw], n, k).unwrap();
                for &m in ms {
                    for r in [0, 23, m / 2, m.saturating_sub(2), m - 1]
                        .into_iter()
                        .filter(|&r| r < m)
                    {
                        let pads = [k % 64, 63, 32.max(k % 64), (k % 64 + 40).min(63)];
                        for bit in pads {
                            let mut a = vec![0u64; m * kw];
                            let idx = r * kw + kw - 1;
                            a[idx] = 1 << bit;
                            for isa in Isa::available() {
                                let what = format!(
                                    "binary gemm {isa} m{m} n{n} k{k} row {r} bit {bit} t{threads}"
                                );
                                run(&mut || {
                                    expect_value_error(&what, m, n, ("a", idx, None), &|out| {
                                        binary_gemm_with(isa, &a, &w, m, out)
                                    })
                                });
                            }
                        }
                    }
                }
            }
        }
        // Int8 GEMM: a value outside [-64, 64] in the first / last column or a pad byte.
        for k in [1usize, 3, 4, 5, 16, 63, 64, 65, 144, 288] {
            let s = reference::int8_stride(k);
            for n in [1, 8, 16, 17, 32, 64] {
                let w = Int8Weights::new(&pad_rows(&vec![1; n * k], n, k), n, k).unwrap();
                for &m in ms {
                    for r in [0, 23, m / 2, m.saturating_sub(2), m - 1]
                        .into_iter()
                        .filter(|&r| r < m)
                    {
                        for c in [0, k - 1, s - 1] {
                            for v in [65i8, -65, 127, -128] {
                                let mut a = vec![1i8; m * s];
                                let idx = r * s + c;
                                a[idx] = v;
                                for isa in Isa::available() {
                                    let what = format!(
                                        "int8 gemm {isa} m{m} n{n} k{k} at ({r}, {c}) = {v} t{threads}"
                                    );
                                    run(&mut || {
                                        expect_value_error(
                                            &what,
                                            m,
                                            n,
                                            ("a", idx, Some(i64::from(v))),
                                            &|out| int8_gemm_with(isa, &a, &w, m, out),
                                        )
                                    });
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    // Convs: the direct dense kernel (3x3, cin 16, 32), the dense layout, per-tap (64, 65), in
    // place and im2col, padded and not, strides 1-3 (stride 3 with a 2x2 kernel leaves input
    // pixels that no tap reads).
    for (cin, cout, k, stride, pad) in [
        (16usize, 16, 3, 1, 1),
        (32, 32, 3, 2, 1),
        (16, 64, 3, 2, 0),
        (16, 32, 2, 3, 0),
        (64, 16, 3, 1, 1),
        (65, 24, 1, 1, 0),
        (33, 8, 3, 1, 0),
    ] {
        let (b, h, wd) = (2, 7, 9);
        let cfg = Conv2dConfig {
            stride,
            padding: pad,
            pad_mode: PadMode::Zero,
        };
        let cw = cin.div_ceil(64);
        let conv = BinaryConv2d::new(&vec![0; cout * k * k * cw], cout, cin, k, k, cfg).unwrap();
        let conv8 = Int8Conv2d::new(
            &vec![0; cout * k * k * reference::int8_stride(cin)],
            cout,
            cin,
            k,
            k,
            cfg,
        )
        .unwrap();
        let (ho, wo) = conv.output_hw(h, wd).unwrap();
        let m = b * ho * wo;
        let pixels = b * h * wd;
        if cin % 64 != 0 {
            for p in [0, pixels / 2, pixels - 2, pixels - 1] {
                for bit in [cin % 64, 63] {
                    let mut x = vec![0u64; pixels * cw];
                    let idx = p * cw + cw - 1;
                    x[idx] = 1 << bit;
                    for isa in Isa::available() {
                        let what = format!(
                            "binary conv {isa} cin{cin} k{k} s{stride} pixel {p} bit {bit}"
                        );
                        expect_value_error(&what, m, cout, ("input", idx, None), &|out| {
                            conv.forward_with(isa, &x, b, h, wd, out)
                        });
                    }
                }
            }
        }
        let s = reference::int8_stride(cin);
        for p in [0, pixels / 2, pixels - 2, pixels - 1] {
            for c in [0, cin - 1, s - 1] {
                for v in [65i8, -128] {
                    let mut x = vec![0i8; pixels * s];
                    let idx = p * s + c;
                    x[idx] = v;
                    for isa in Isa::available() {
                        let what =
                            format!("int8 conv {isa} cin{cin} k{k} s{stride} at ({p}, {c}) = {v}");
                        expect_value_error(
                            &what,
                            m,
                            cout,
                            ("a", idx, Some(i64::from(v))),
                            &|out| conv8.forward_with(isa, &x, b, h, wd, out),
                        );
                    }
                }
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn binary_gemm_random_shapes(m in 0usize..40, n in 0usize..40, k in 1usize..700, seed: u64) {
        check_binary_gemm(m, n, k, seed);
    }

    #[test]
    fn int8_gemm_random_shapes(m in 0usize..40, n in 0usize..40, k in 1usize..700, seed: u64) {
        check_int8_gemm(m, n, k, seed, (-64, 64));
    }

    #[test]
    fn binary_conv_random_shapes(
        h in 1usize..13, w in 1usize..21, cin in 1usize..140, cout in 1usize..70,
        k in prop::sample::select(vec![1usize, 2, 3, 5]), stride in 1usize..4, pad in 0usize..3,
        seed: u64,
    ) {
        prop_assume!(h + 2 * pad >= k && w + 2 * pad >= k);
        check_binary_conv(1, h, w, cin, cout, k, stride, pad, seed);
    }

    #[test]
    fn int8_conv_random_shapes(
        h in 1usize..8, w in 1usize..8, cin in 1usize..40, cout in 1usize..40,
        k in prop::sample::select(vec![1usize, 3]), stride in 1usize..3, pad in 0usize..2, seed: u64,
    ) {
        prop_assume!(h + 2 * pad >= k && w + 2 * pad >= k);
        check_int8_conv(1, h, w, cin, cout, k, stride, pad, seed);
    }
}

#[test]
fn large_shapes_on_a_thread_pool_match() {
    // Big enough to take the rayon path (work above the threshold, several row blocks), run on
    // an explicit multi-thread pool so the split into tasks is exercised on any host.
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(3)
        .build()
        .unwrap();
    pool.install(|| {
        check_binary_gemm(301, 72, 1000, 5);
        check_int8_gemm(301, 72, 1000, 6, (-64, 64));
        check_binary_conv(2, 16, 15, 128, 70, 3, 1, 1, 7);
        check_binary_conv(2, 16, 16, 32, 64, 3, 2, 1, 8);
        check_binary_conv(2, 32, 32, 16, 32, 3, 1, 1, 10);
        check_int8_conv(2, 16, 15, 64, 40, 3, 1, 1, 9);
    });
}
