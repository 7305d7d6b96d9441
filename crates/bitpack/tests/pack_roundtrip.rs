//! Pack/unpack round trips for 1-bit and int8-level tensors, on every ISA the host has.

use bitpack::levels::{decode_codes, encode_codes};
use bitpack::{
    BitTensor, BitpackError, Int8Tensor, Isa, Layout, LevelSet, pack_sign_rows_with,
    pack_signs_with,
};
use proptest::prelude::*;

const CHANNELS: [usize; 6] = [1, 63, 64, 65, 127, 1000];

const SPECIALS: [f32; 10] = [
    0.0,
    -0.0,
    f32::NAN,
    -f32::NAN,
    f32::INFINITY,
    f32::NEG_INFINITY,
    -1e-45,
    1e-45,
    -2.5,
    3.0,
];

fn sign_of(x: f32) -> i8 {
    if x < 0.0 { -1 } else { 1 }
}

/// Deterministic pseudo-random values, a third of them special.
fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            if s.is_multiple_of(3) {
                SPECIALS[(s >> 8) as usize % SPECIALS.len()]
            } else {
                ((s >> 11) as f32 / (1u64 << 53) as f32) - 0.5
            }
        })
        .collect()
}

fn dims_for(layout: Layout, outer: usize, c: usize) -> Vec<usize> {
    match layout {
        Layout::RowMajor => vec![outer, c],
        Layout::Nhwc => vec![1, outer, 2, c],
        Layout::Ohwi => vec![outer, 3, 3, c],
    }
}

/// Checks one tensor against the scalar rule bit by bit, including zero pad bits.
fn check_bits(t: &BitTensor<'_>, x: &[f32]) {
    let g = t.geometry();
    let wps = g.words_per_segment();
    assert_eq!(t.words().len(), g.rows * g.segments * wps);
    for (s, seg) in x.chunks(g.segment_len).enumerate() {
        let words = &t.words()[s * wps..(s + 1) * wps];
        for bit in 0..wps * 64 {
            let got = (words[bit / 64] >> (bit % 64)) & 1;
            let want = seg.get(bit).map_or(0, |&v| u64::from(v < 0.0));
            assert_eq!(got, want, "segment {s}, bit {bit}");
        }
    }
    let want: Vec<i8> = x.iter().map(|&v| sign_of(v)).collect();
    assert_eq!(t.to_signs_i8(), want);
    let want_f: Vec<f32> = want.iter().map(|&v| f32::from(v)).collect();
    assert_eq!(t.to_f32(), want_f);
    for (i, &w) in want.iter().enumerate() {
        assert_eq!(t.get(i), w, "get({i})");
    }
    t.check_padding("t").unwrap();
}

#[test]
fn awkward_channel_counts_on_every_isa() {
    for layout in [Layout::RowMajor, Layout::Nhwc, Layout::Ohwi] {
        for c in CHANNELS {
            let dims = dims_for(layout, 3, c);
            let n: usize = dims.iter().product();
            let x = values(n, c as u64);
            let reference = BitTensor::from_f32_with(Isa::Scalar, layout, &dims, &x).unwrap();
            check_bits(&reference, &x);
            for isa in Isa::available() {
                let t = BitTensor::from_f32_with(isa, layout, &dims, &x).unwrap();
                assert_eq!(t, reference, "{isa} {layout} c={c}");
            }
            let signs = reference.to_signs_i8();
            assert_eq!(
                BitTensor::from_signs_i8(layout, &dims, &signs).unwrap(),
                reference
            );
        }
    }
}

#[test]
fn ohwi_taps_align_with_nhwc_pixels() {
    // A 1x1x1 weight tap and one pixel with the same channels pack to identical words.
    for c in CHANNELS {
        let x = values(c, 7);
        let w = BitTensor::from_f32(Layout::Ohwi, &[1, 1, 1, c], &x).unwrap();
        let a = BitTensor::from_f32(Layout::Nhwc, &[1, 1, 1, c], &x).unwrap();
        assert_eq!(w.words(), a.words());
        let w3 = BitTensor::from_f32(Layout::Ohwi, &[1, 3, 3, c], &values(9 * c, 8)).unwrap();
        assert_eq!(w3.words_per_row(), 9 * c.div_ceil(64));
    }
}

#[test]
fn repacking_reuses_storage_and_overwrites_every_word() {
    let mut t = BitTensor::from_f32(Layout::RowMajor, &[2, 65], &[-1.0; 130]).unwrap();
    for isa in Isa::available() {
        t.pack_f32_with(isa, &[1.0; 130]).unwrap();
        assert!(t.words().iter().all(|&w| w == 0), "{isa}");
        t.pack_f32_with(isa, &[-1.0; 130]).unwrap();
        assert_eq!(t.words(), &[u64::MAX, 1, u64::MAX, 1]);
    }
}

#[test]
fn empty_tensors_are_allowed_in_memory() {
    let t = BitTensor::from_f32(Layout::RowMajor, &[0, 65], &[]).unwrap();
    assert_eq!((t.rows(), t.words_per_row(), t.words().len()), (0, 2, 0));
    let t = BitTensor::from_f32(Layout::RowMajor, &[3, 0], &[]).unwrap();
    assert!(t.is_empty() && t.words().is_empty());
    assert!(t.to_f32().is_empty());
}

#[test]
fn shape_and_length_errors() {
    assert!(matches!(
        BitTensor::from_f32(Layout::Nhwc, &[1, 2, 3], &[0.0; 6]),
        Err(BitpackError::InvalidShape { .. })
    ));
    assert!(matches!(
        BitTensor::from_f32(Layout::RowMajor, &[2, 3], &[0.0; 5]),
        Err(BitpackError::LengthMismatch {
            expected: 6,
            got: 5,
            ..
        })
    ));
    assert!(matches!(
        BitTensor::zeros(Layout::Nhwc, &[usize::MAX, 2, 1, 1]),
        Err(BitpackError::InvalidShape { .. })
    ));
    assert!(matches!(
        BitTensor::from_signs_i8(Layout::RowMajor, &[1, 3], &[1, 0, -1]),
        Err(BitpackError::IllegalLevel {
            index: 1,
            value: 0,
            ..
        })
    ));
    let mut dst = [0u64; 1];
    assert!(matches!(
        pack_signs_with(Isa::Scalar, &[0.0; 65], &mut dst),
        Err(BitpackError::LengthMismatch {
            expected: 2,
            got: 1,
            ..
        })
    ));
}

#[test]
fn unavailable_isa_is_an_error_not_a_fallback() {
    for isa in [Isa::Avx512, Isa::Avx2, Isa::Neon] {
        let got = BitTensor::from_f32_with(isa, Layout::RowMajor, &[1, 1], &[1.0]);
        if isa.is_available() {
            assert!(got.is_ok());
        } else {
            assert!(matches!(got, Err(BitpackError::IsaUnavailable { isa: i, .. }) if i == isa));
        }
    }
}

#[test]
fn from_words_rejects_nonzero_pad_bits() {
    let ok = BitTensor::from_words(
        "w",
        Layout::Ohwi,
        &[2, 1, 2, 65],
        vec![0, 1, 0, 1, 0, 1, 0, 1],
    );
    assert!(ok.is_ok());
    let bad = BitTensor::from_words(
        "w",
        Layout::Ohwi,
        &[2, 1, 2, 65],
        vec![0, 1, 0, 1, 0, 1, 0, 2],
    );
    assert!(matches!(
        bad,
        Err(BitpackError::NonZeroPadding { ref tensor, row: 1, element: 3 }) if tensor == "w"
    ));
    let short = BitTensor::from_words("w", Layout::RowMajor, &[1, 65], vec![0]);
    assert!(matches!(
        short,
        Err(BitpackError::LengthMismatch {
            expected: 2,
            got: 1,
            ..
        })
    ));
}

#[test]
fn int8_levels_round_trip_with_zero_padding() {
    for levels in [
        LevelSet::Ternary,
        LevelSet::Pow2,
        LevelSet::uniform(2).unwrap(),
        LevelSet::uniform(3).unwrap(),
        LevelSet::uniform(7).unwrap(),
    ] {
        let legal = levels.levels();
        for layout in [Layout::RowMajor, Layout::Nhwc, Layout::Ohwi] {
            for c in CHANNELS {
                let dims = dims_for(layout, 2, c);
                let n: usize = dims.iter().product();
                let q: Vec<i8> = (0..n).map(|i| legal[(i * 5 + c) % legal.len()]).collect();
                let t = Int8Tensor::from_levels(levels, layout, &dims, &q).unwrap();
                assert_eq!(t.to_levels(), q);
                assert_eq!(t.segment_stride() % 4, 0);
                assert_eq!(t.segment_stride(), c.next_multiple_of(4));
                for (s, seg) in t.data().chunks(t.segment_stride()).enumerate() {
                    assert!(seg[c..].iter().all(|&b| b == 0), "pad of segment {s}");
                }
                let f = t.to_f32();
                for (i, (&v, &l)) in f.iter().zip(&q).enumerate() {
                    assert_eq!(v, f32::from(l) * levels.default_scale());
                    assert_eq!(t.get(i), l);
                }
                let back = Int8Tensor::from_quantized_f32(levels, layout, &dims, &f).unwrap();
                assert_eq!(back, t);
                let stored =
                    Int8Tensor::from_storage("q", levels, layout, &dims, t.data().to_vec())
                        .unwrap();
                assert_eq!(stored, t);
                let codes = t.to_codes().unwrap();
                assert_eq!(codes.len(), (n * levels.bits() as usize).div_ceil(8));
                let decoded = Int8Tensor::from_codes("q", levels, layout, &dims, &codes).unwrap();
                assert_eq!(decoded, t);
            }
        }
    }
}

#[test]
fn illegal_levels_name_index_and_value() {
    let err = Int8Tensor::from_levels(LevelSet::Ternary, Layout::RowMajor, &[1, 4], &[1, 0, 2, -1]);
    assert!(matches!(
        err,
        Err(BitpackError::IllegalLevel {
            index: 2,
            value: 2,
            encoding: "ternary",
            ..
        })
    ));
    let err = Int8Tensor::from_levels(LevelSet::Pow2, Layout::RowMajor, &[1, 3], &[4, -3, 0]);
    assert!(matches!(
        err,
        Err(BitpackError::IllegalLevel {
            index: 1,
            value: -3,
            encoding: "pow2",
            ..
        })
    ));
    let err =
        Int8Tensor::from_quantized_f32(LevelSet::Pow2, Layout::RowMajor, &[1, 2], &[0.25, 0.3]);
    assert!(matches!(err, Err(BitpackError::OffGrid { index: 1, .. })));
    let err =
        Int8Tensor::from_quantized_f32(LevelSet::Ternary, Layout::RowMajor, &[1, 1], &[f32::NAN]);
    assert!(matches!(err, Err(BitpackError::OffGrid { index: 0, .. })));
    // Non-zero pad byte in padded storage: segment of 3 values + 1 pad byte.
    let err = Int8Tensor::from_storage(
        "q",
        LevelSet::Ternary,
        Layout::RowMajor,
        &[2, 3],
        vec![1, 0, -1, 0, 1, 1, 1, 1],
    );
    assert!(matches!(
        err,
        Err(BitpackError::NonZeroPadding {
            row: 1,
            element: 3,
            ..
        })
    ));
    let err = Int8Tensor::from_storage(
        "q",
        LevelSet::Ternary,
        Layout::RowMajor,
        &[2, 3],
        vec![1, 0, -1, 0, 1, 5, 1, 0],
    );
    assert!(matches!(
        err,
        Err(BitpackError::IllegalLevel {
            index: 5,
            value: 5,
            ..
        })
    ));
}

#[test]
fn level_sets_match_aqe_core_tables() {
    assert_eq!(LevelSet::Ternary.levels(), &[-1, 0, 1]);
    assert_eq!(LevelSet::Pow2.levels(), &[-4, -2, -1, 0, 1, 2, 4]);
    assert_eq!(LevelSet::uniform(2).unwrap().levels(), &[-3, -1, 1, 3]);
    for bits in 2..=7u8 {
        let set = LevelSet::uniform(bits).unwrap();
        let l = (1i32 << bits) - 1;
        let levels = set.levels();
        assert_eq!(levels.len(), 1 << bits);
        assert_eq!(
            (i32::from(levels[0]), i32::from(*levels.last().unwrap())),
            (-l, l)
        );
        assert_eq!(set.default_scale(), 1.0 / l as f32);
        for (code, &q) in levels.iter().enumerate() {
            assert_eq!(set.code(q), Some(code as u8));
        }
        assert!(!set.contains(0) && !set.contains(2));
        assert_eq!(set.to_string().parse::<LevelSet>().unwrap(), set);
    }
    for name in ["uniform:1", "uniform:8", "uniform:", "uniform", "binary"] {
        assert!(
            matches!(
                name.parse::<LevelSet>(),
                Err(BitpackError::BadMetadata { .. })
            ),
            "{name}"
        );
    }
    assert!(LevelSet::Uniform { bits: 9 }.levels().is_empty());
    assert!(
        Int8Tensor::from_levels(
            LevelSet::Uniform { bits: 9 },
            Layout::RowMajor,
            &[1, 1],
            &[1]
        )
        .is_err()
    );
}

#[test]
fn quantized_floats_must_lie_exactly_on_the_grid() {
    let u3 = LevelSet::uniform(3).unwrap();
    let s = u3.default_scale();
    let x: Vec<f32> = [-7i8, -5, -3, -1, 1, 3, 5, 7]
        .iter()
        .map(|&q| f32::from(q) * s)
        .collect();
    let t = Int8Tensor::from_quantized_f32(u3, Layout::RowMajor, &[1, 8], &x).unwrap();
    assert_eq!(t.to_levels(), vec![-7, -5, -3, -1, 1, 3, 5, 7]);
    assert_eq!(t.to_f32(), x);
    for bad in [0.0f32, 0.3, f32::NAN, f32::INFINITY, 1.5] {
        assert!(
            matches!(
                Int8Tensor::from_quantized_f32(u3, Layout::RowMajor, &[1, 2], &[x[0], bad]),
                Err(BitpackError::OffGrid { index: 1, .. })
            ),
            "{bad}"
        );
    }
    assert!(matches!(
        Int8Tensor::from_quantized_f32(LevelSet::Pow2, Layout::RowMajor, &[1, 1], &[0.75]),
        Err(BitpackError::OffGrid { index: 0, .. })
    ));
    assert!(matches!(
        encode_codes(LevelSet::Pow2, &[1, 3]),
        Err(BitpackError::IllegalLevel {
            index: 1,
            value: 3,
            ..
        })
    ));
}

#[test]
fn codes_reject_bad_codes_and_pad_bits() {
    // Ternary code 3 has no level.
    assert!(matches!(
        decode_codes("c", LevelSet::Ternary, 2, &[0b11_01]),
        Err(BitpackError::IllegalLevel {
            index: 1,
            value: 3,
            ..
        })
    ));
    // Pow2 code 7 has no level.
    assert!(matches!(
        decode_codes("c", LevelSet::Pow2, 1, &[0b111]),
        Err(BitpackError::IllegalLevel {
            index: 0,
            value: 7,
            ..
        })
    ));
    // Bits past the last code must be zero.
    assert!(matches!(
        decode_codes("c", LevelSet::Ternary, 1, &[0b01 | 0b100]),
        Err(BitpackError::NonZeroPadding { .. })
    ));
    assert!(matches!(
        decode_codes("c", LevelSet::Pow2, 3, &[0]),
        Err(BitpackError::LengthMismatch {
            expected: 2,
            got: 1,
            ..
        })
    ));
}

#[test]
fn ternary_planes_round_trip_and_reject_signed_zero() {
    let q: Vec<i8> = (0..2 * 3 * 3 * 65)
        .map(|i| [-1, 0, 1, 1, 0][i % 5])
        .collect();
    let t = Int8Tensor::from_levels(LevelSet::Ternary, Layout::Ohwi, &[2, 3, 3, 65], &q).unwrap();
    let (sign, nz) = t.to_ternary_planes().unwrap();
    for (i, &v) in q.iter().enumerate() {
        assert_eq!(sign.get(i), if v < 0 { -1 } else { 1 });
        assert_eq!(nz.get(i), if v != 0 { -1 } else { 1 });
    }
    for (s, n) in sign.words().iter().zip(nz.words()) {
        assert_eq!(s & !n, 0, "sign bit set on a zero");
    }
    assert_eq!(Int8Tensor::from_ternary_planes(&sign, &nz).unwrap(), t);
    let zero_nz = BitTensor::zeros(Layout::Ohwi, &[2, 3, 3, 65]).unwrap();
    assert!(matches!(
        Int8Tensor::from_ternary_planes(&sign, &zero_nz),
        Err(BitpackError::IllegalLevel { index: 0, .. })
    ));
    let p = Int8Tensor::from_levels(LevelSet::Pow2, Layout::RowMajor, &[1, 1], &[4]).unwrap();
    assert!(p.to_ternary_planes().is_err());
}

fn layout_strategy() -> impl Strategy<Value = Layout> {
    prop_oneof![
        Just(Layout::RowMajor),
        Just(Layout::Nhwc),
        Just(Layout::Ohwi)
    ]
}

fn channel_strategy() -> impl Strategy<Value = usize> {
    prop_oneof![proptest::sample::select(CHANNELS.to_vec()), 1usize..200]
}

fn float_strategy() -> impl Strategy<Value = f32> {
    prop_oneof![
        proptest::sample::select(SPECIALS.to_vec()),
        any::<f32>(),
        -2.0f32..2.0
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn random_shapes_pack_exactly_on_every_isa(
        layout in layout_strategy(),
        outer in 0usize..4,
        c in channel_strategy(),
        seed in any::<u64>(),
        floats in proptest::collection::vec(float_strategy(), 64),
    ) {
        let dims = dims_for(layout, outer, c);
        let n: usize = dims.iter().product();
        let x: Vec<f32> = (0..n).map(|i| floats[(i ^ seed as usize) % floats.len()]).collect();
        let reference = BitTensor::from_f32_with(Isa::Scalar, layout, &dims, &x).unwrap();
        check_bits(&reference, &x);
        for isa in Isa::available() {
            let t = BitTensor::from_f32_with(isa, layout, &dims, &x).unwrap();
            prop_assert_eq!(t.words(), reference.words(), "isa {}", isa);
        }
    }

    #[test]
    fn codes_round_trip(which in 0u8..8, idx in proptest::collection::vec(0usize..128, 0..300)) {
        let levels = match which {
            0 => LevelSet::Ternary,
            1 => LevelSet::Pow2,
            bits => LevelSet::uniform(bits).unwrap(),
        };
        let legal = levels.levels();
        let q: Vec<i8> = idx.iter().map(|&i| legal[i % legal.len()]).collect();
        let codes = encode_codes(levels, &q).unwrap();
        prop_assert_eq!(decode_codes("c", levels, q.len(), &codes).unwrap(), q);
    }
}

#[test]
fn sign_rows_match_packing_each_row() {
    // Rows of c values (NHWC pixels of c channels) packed at once equal each row packed on
    // its own with the scalar reference, for narrow rows (one masked compare per row with
    // AVX-512), whole words and rows with a partial last word.
    for &c in &[1, 3, 15, 16, 17, 31, 32, 33, 48, 63, 64, 65, 100, 128, 130] {
        for rows in [0, 1, 2, 7, 33] {
            let src = values(rows * c, (c * 131 + rows) as u64);
            let cw = c.div_ceil(64);
            let mut want = vec![0u64; rows * cw];
            for (row, d) in src.chunks_exact(c).zip(want.chunks_exact_mut(cw)) {
                pack_signs_with(Isa::Scalar, row, d).unwrap();
            }
            for isa in Isa::available() {
                let mut got = vec![u64::MAX; rows * cw];
                pack_sign_rows_with(isa, &src, c, &mut got).unwrap();
                assert_eq!(got, want, "isa={isa} c={c} rows={rows}");
            }
        }
    }
    let mut dst = [0u64; 2];
    for (src, c) in [(&[0.0f32; 5][..], 2), (&[0.0; 4][..], 0)] {
        assert!(matches!(
            pack_sign_rows_with(Isa::Scalar, src, c, &mut dst),
            Err(BitpackError::LengthMismatch { field: "src", .. })
        ));
    }
    assert!(matches!(
        pack_sign_rows_with(Isa::Scalar, &[0.0; 6], 2, &mut dst),
        Err(BitpackError::LengthMismatch {
            field: "dst",
            expected: 3,
            got: 2,
            ..
        })
    ));
}
