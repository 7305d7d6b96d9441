//! File round trips, zero-copy loading, and rejection of malformed files.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};

use bitpack::file::{
    FORMAT_VERSION, MultiBitStorage, SaveOptions, VERSION_KEY, read_tensors, save_tensors_with,
    to_bytes, write_tensors,
};
use bitpack::{
    BitTensor, BitpackError, Int8Tensor, Layout, LevelSet, PackedTensor, load_tensors, save_tensors,
};
use proptest::prelude::*;
use safetensors::{Dtype, View};

fn weights() -> PackedTensor<'static> {
    let x: Vec<f32> = (0..4 * 3 * 3 * 65)
        .map(|i| if i % 7 < 3 { -1.0 } else { 1.0 })
        .collect();
    BitTensor::from_f32(Layout::Ohwi, &[4, 3, 3, 65], &x)
        .unwrap()
        .into()
}

fn acts() -> PackedTensor<'static> {
    let x: Vec<f32> = (0..2 * 5 * 5 * 3).map(|i| (i as f32) - 70.0).collect();
    BitTensor::from_f32(Layout::Nhwc, &[2, 5, 5, 3], &x)
        .unwrap()
        .into()
}

fn ternary() -> PackedTensor<'static> {
    let q: Vec<i8> = (0..3 * 10).map(|i| [-1, 0, 1][i % 3]).collect();
    Int8Tensor::from_levels(LevelSet::Ternary, Layout::RowMajor, &[3, 10], &q)
        .unwrap()
        .into()
}

fn pow2() -> PackedTensor<'static> {
    let q: Vec<i8> = (0..2 * 3 * 3 * 5)
        .map(|i| [-4, -2, -1, 0, 1, 2, 4][i % 7])
        .collect();
    Int8Tensor::from_levels(LevelSet::Pow2, Layout::Ohwi, &[2, 3, 3, 5], &q)
        .unwrap()
        .with_scale(0.125)
        .unwrap()
        .into()
}

fn uniform3() -> PackedTensor<'static> {
    let q: Vec<i8> = (0..2 * 2 * 2 * 5)
        .map(|i| [-7, -5, -3, -1, 1, 3, 5, 7][i % 8])
        .collect();
    let set = LevelSet::uniform(3).unwrap();
    Int8Tensor::from_levels(set, Layout::Nhwc, &[2, 2, 2, 5], &q)
        .unwrap()
        .into()
}

fn all() -> Vec<(&'static str, PackedTensor<'static>)> {
    vec![
        ("act2", uniform3()),
        ("conv.w", weights()),
        ("act", acts()),
        ("fc.w", ternary()),
        ("conv2.w", pow2()),
    ]
}

fn refs<'a>(
    v: &'a [(&'static str, PackedTensor<'static>)],
) -> Vec<(&'static str, &'a PackedTensor<'static>)> {
    v.iter().map(|(n, t)| (*n, t)).collect()
}

fn meta() -> BTreeMap<String, String> {
    BTreeMap::from([
        ("model".to_string(), "vgg-small".to_string()),
        ("seed".to_string(), "7".to_string()),
    ])
}

fn valid_bytes() -> Vec<u8> {
    to_bytes(&refs(&all()), &meta(), SaveOptions::default()).unwrap()
}

/// Copies bytes into 8-aligned storage (a `Vec<u64>`), optionally shifted by `shift` bytes.
fn aligned(bytes: &[u8], shift: usize) -> (Vec<u64>, usize) {
    let mut buf = vec![0u64; (bytes.len() + shift).div_ceil(8) + 1];
    let raw: &mut [u8] = bytemuck::cast_slice_mut(&mut buf);
    raw[shift..shift + bytes.len()].copy_from_slice(bytes);
    (buf, shift)
}

#[test]
fn round_trip_all_encodings() {
    let tensors = all();
    for multibit in [MultiBitStorage::Int8, MultiBitStorage::DenseCodes] {
        let bytes = to_bytes(&refs(&tensors), &meta(), SaveOptions { multibit }).unwrap();
        let file = load_tensors(&bytes).unwrap();
        assert_eq!(file.tensors().len(), tensors.len());
        for (name, t) in &tensors {
            assert_eq!(file.get(name).unwrap(), t, "{name} {multibit:?}");
        }
        assert_eq!(file.int8("conv2.w").unwrap().scale(), 0.125);
        assert_eq!(file.metadata(), &meta());
        assert!(matches!(
            file.get("nope"),
            Err(BitpackError::NoSuchTensor { .. })
        ));
        assert!(matches!(
            file.bits("fc.w"),
            Err(BitpackError::BadMetadata { .. })
        ));
        assert!(matches!(
            file.int8("act"),
            Err(BitpackError::BadMetadata { .. })
        ));
    }
    let dense = to_bytes(
        &[("fc.w", &ternary())],
        &BTreeMap::new(),
        SaveOptions {
            multibit: MultiBitStorage::DenseCodes,
        },
    )
    .unwrap();
    let plain = to_bytes(
        &[("fc.w", &ternary())],
        &BTreeMap::new(),
        SaveOptions::default(),
    )
    .unwrap();
    assert!(dense.len() < plain.len());
}

#[test]
fn zero_copy_when_aligned_copy_when_not() {
    let bytes = valid_bytes();
    let (buf, _) = aligned(&bytes, 0);
    let view: &[u8] = &bytemuck::cast_slice(&buf)[..bytes.len()];
    let file = load_tensors(view).unwrap();
    assert!(file.get("conv.w").unwrap().is_borrowed());
    assert!(file.get("act").unwrap().is_borrowed());
    assert!(file.get("fc.w").unwrap().is_borrowed());
    let (buf, shift) = aligned(&bytes, 1);
    let view: &[u8] = &bytemuck::cast_slice(&buf)[shift..shift + bytes.len()];
    let file = load_tensors(view).unwrap();
    assert!(!file.get("conv.w").unwrap().is_borrowed());
    assert_eq!(file.get("conv.w").unwrap(), &weights());
    let owned = file.into_owned();
    assert!(!owned.get("fc.w").unwrap().is_borrowed());
}

#[test]
fn save_is_atomic_and_reads_back() {
    let dir = std::env::temp_dir().join(format!("bitpack-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("model.bitpack.safetensors");
    let tensors = all();
    save_tensors(&path, &refs(&tensors), &meta()).unwrap();
    save_tensors_with(
        &path,
        &refs(&tensors[1..2]),
        &BTreeMap::new(),
        SaveOptions::default(),
    )
    .unwrap();
    let file = read_tensors(&path).unwrap();
    assert_eq!(file.tensors().len(), 1);
    assert_eq!(file.get("conv.w").unwrap(), &weights());
    let leftovers: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        leftovers.len(),
        1,
        "temporary files left behind: {leftovers:?}"
    );
    let mut out = Vec::new();
    write_tensors(&mut out, &refs(&tensors), &meta(), SaveOptions::default()).unwrap();
    assert_eq!(out, valid_bytes(), "output must be deterministic");
    assert_eq!(valid_bytes(), valid_bytes());
    assert!(matches!(
        read_tensors(dir.join("missing")),
        Err(BitpackError::Io { .. })
    ));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn save_rejects_bad_input() {
    let empty: PackedTensor<'_> = BitTensor::zeros(Layout::RowMajor, &[0, 3]).unwrap().into();
    assert!(matches!(
        to_bytes(&[("e", &empty)], &BTreeMap::new(), SaveOptions::default()),
        Err(BitpackError::InvalidShape { ref tensor, .. }) if tensor == "e"
    ));
    let t = weights();
    assert!(matches!(
        to_bytes(
            &[("a", &t), ("a", &t)],
            &BTreeMap::new(),
            SaveOptions::default()
        ),
        Err(BitpackError::BadMetadata { .. })
    ));
    let reserved = BTreeMap::from([("bitpack.x".to_string(), "1".to_string())]);
    assert!(matches!(
        to_bytes(&[("a", &t)], &reserved, SaveOptions::default()),
        Err(BitpackError::BadMetadata { .. })
    ));
}

// ---- Crafting malformed files -------------------------------------------------------------

struct Raw {
    dtype: Dtype,
    shape: Vec<usize>,
    data: Vec<u8>,
}

impl View for &Raw {
    fn dtype(&self) -> Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(&self.data)
    }
    fn data_len(&self) -> usize {
        self.data.len()
    }
}

/// A single-tensor file: a valid 1-bit `[2, 65]` row-major tensor `t`, with metadata edits
/// (`None` removes the key) and optionally replaced storage.
fn craft(edits: &[(&str, Option<&str>)], storage: Option<Raw>) -> Vec<u8> {
    let mut m: HashMap<String, String> = [
        (VERSION_KEY, FORMAT_VERSION),
        ("bitpack.t.encoding", "sign-plane"),
        ("bitpack.t.bits", "1"),
        ("bitpack.t.levels", "sign"),
        ("bitpack.t.layout", "row-major"),
        ("bitpack.t.shape", "2,65"),
        ("bitpack.t.words_per_row", "2"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    for (k, v) in edits {
        match v {
            Some(v) => m.insert(k.to_string(), v.to_string()),
            None => m.remove(*k),
        };
    }
    let raw = storage.unwrap_or_else(|| Raw {
        dtype: Dtype::U64,
        shape: vec![2, 2],
        data: [1u64, 1, 2, 0]
            .iter()
            .flat_map(|w| w.to_le_bytes())
            .collect(),
    });
    safetensors::serialize([("t", &raw)], Some(m)).unwrap()
}

fn int8_raw(values: &[i8], shape: Vec<usize>) -> Raw {
    Raw {
        dtype: Dtype::I8,
        shape,
        data: bytemuck::cast_slice(values).to_vec(),
    }
}

const INT8_META: [(&str, Option<&str>); 5] = [
    ("bitpack.t.encoding", Some("int8")),
    ("bitpack.t.bits", Some("2")),
    ("bitpack.t.levels", Some("ternary")),
    ("bitpack.t.row_stride", Some("68")),
    ("bitpack.t.scale", Some("1.0")),
];

#[test]
fn crafted_baseline_is_valid() {
    let bytes = craft(&[], None);
    let file = load_tensors(&bytes).unwrap();
    assert_eq!(file.bits("t").unwrap().words(), &[1, 1, 2, 0]);
    let q = vec![0i8; 2 * 68];
    let bytes = craft(&INT8_META, Some(int8_raw(&q, vec![2, 68])));
    let file = load_tensors(&bytes).unwrap();
    assert_eq!(file.int8("t").unwrap().to_levels(), vec![0; 130]);
}

#[test]
fn truncated_and_garbage_containers() {
    let bytes = valid_bytes();
    for cut in [0, 4, 8, 20, bytes.len() / 2, bytes.len() - 1] {
        assert!(
            matches!(load_tensors(&bytes[..cut]), Err(BitpackError::Container(_))),
            "cut {cut}"
        );
    }
    let mut garbage = bytes.clone();
    garbage[10] = b'#';
    assert!(matches!(
        load_tensors(&garbage),
        Err(BitpackError::Container(_))
    ));
    let mut huge_header = bytes.clone();
    huge_header[..8].copy_from_slice(&u64::MAX.to_le_bytes());
    assert!(matches!(
        load_tensors(&huge_header),
        Err(BitpackError::Container(_))
    ));
    assert!(matches!(
        load_tensors(b"hello, world, not a file"),
        Err(BitpackError::Container(_))
    ));
}

#[test]
fn version_errors() {
    let err = load_tensors(&craft(&[(VERSION_KEY, Some("2"))], None)).unwrap_err();
    assert!(matches!(&err, BitpackError::UnsupportedVersion { found, .. } if found == "2"));
    assert!(err.to_string().contains("`2`"), "{err}");
    assert!(matches!(
        load_tensors(&craft(&[(VERSION_KEY, None)], None)),
        Err(BitpackError::MissingMetadata { key, .. }) if key == VERSION_KEY
    ));
    let plain = safetensors::serialize(
        [(
            "t",
            &Raw {
                dtype: Dtype::U8,
                shape: vec![1],
                data: vec![0],
            },
        )],
        None,
    )
    .unwrap();
    assert!(matches!(
        load_tensors(&plain),
        Err(BitpackError::MissingMetadata { .. })
    ));
}

#[test]
fn missing_and_bad_metadata() {
    for field in [
        "encoding",
        "bits",
        "levels",
        "layout",
        "shape",
        "words_per_row",
    ] {
        let k = format!("bitpack.t.{field}");
        let err = load_tensors(&craft(&[(&k, None)], None)).unwrap_err();
        assert!(
            matches!(&err, BitpackError::MissingMetadata { tensor, key } if tensor == "t" && *key == k),
            "{field}: {err}"
        );
    }
    let bad = |k: &str, v: &str| load_tensors(&craft(&[(k, Some(v))], None)).unwrap_err();
    for (k, v) in [
        ("bitpack.t.encoding", "sign-planes"),
        ("bitpack.t.bits", "2"),
        ("bitpack.t.levels", "ternary"),
        ("bitpack.t.layout", "nchw"),
        ("bitpack.t.shape", "2,x"),
        ("bitpack.t.words_per_row", "3"),
        ("bitpack.t.words_per_row", "-1"),
    ] {
        let err = bad(k, v);
        assert!(
            matches!(&err, BitpackError::BadMetadata { tensor, key, .. } if tensor == "t" && key == k),
            "{k}={v}: {err}"
        );
    }
    let err = bad("bitpack.t.layout", "nhwc");
    assert!(matches!(err, BitpackError::InvalidShape { .. }), "{err}");
    let err = load_tensors(&craft(
        &INT8_META
            .iter()
            .copied()
            .chain([("bitpack.t.scale", Some("-1"))])
            .collect::<Vec<_>>(),
        Some(int8_raw(&[0; 136], vec![2, 68])),
    ))
    .unwrap_err();
    assert!(
        matches!(&err, BitpackError::BadMetadata { key, .. } if key == "bitpack.t.scale"),
        "{err}"
    );
}

#[test]
fn nonsensical_shapes() {
    for shape in [
        "0,65",
        "2,0",
        &format!("{},2", usize::MAX),
        &format!("{},{}", 1usize << 40, 1usize << 40),
    ] {
        let err = load_tensors(&craft(&[("bitpack.t.shape", Some(shape))], None)).unwrap_err();
        assert!(
            matches!(&err, BitpackError::InvalidShape { tensor, .. } if tensor == "t"),
            "{shape}: {err}"
        );
    }
}

#[test]
fn data_length_and_storage_mismatch() {
    // Metadata says [2, 130] (3 words per row = 6 words) but the storage has 4 words.
    let err = load_tensors(&craft(
        &[
            ("bitpack.t.shape", Some("2,130")),
            ("bitpack.t.words_per_row", Some("3")),
        ],
        None,
    ))
    .unwrap_err();
    assert!(
        matches!(
            err,
            BitpackError::LengthMismatch {
                expected: 48,
                got: 32,
                ..
            }
        ),
        "{err}"
    );
    let err = load_tensors(&craft(&[("bitpack.t.shape", Some("3,65"))], None)).unwrap_err();
    assert!(
        matches!(&err, BitpackError::LengthMismatch { tensor, field: "data", expected: 48, got: 32 } if tensor == "t"),
        "{err}"
    );
    // Right length, wrong factorisation.
    let raw = Raw {
        dtype: Dtype::U64,
        shape: vec![4, 1],
        data: vec![0; 32],
    };
    assert!(matches!(
        load_tensors(&craft(&[], Some(raw))),
        Err(BitpackError::BadMetadata { .. })
    ));
    // Wrong dtype.
    let raw = Raw {
        dtype: Dtype::U8,
        shape: vec![32],
        data: vec![0; 32],
    };
    let err = load_tensors(&craft(&[], Some(raw))).unwrap_err();
    assert!(
        matches!(&err, BitpackError::BadMetadata { key, .. } if key == "bitpack.t.encoding"),
        "{err}"
    );
}

#[test]
fn nonzero_pad_bits_rejected() {
    let words = [1u64, 1, 2, 2]; // row 1, word 1 has bit 1 set: element 65 does not exist
    let raw = Raw {
        dtype: Dtype::U64,
        shape: vec![2, 2],
        data: words.iter().flat_map(|w| w.to_le_bytes()).collect(),
    };
    let err = load_tensors(&craft(&[], Some(raw))).unwrap_err();
    assert!(
        matches!(&err, BitpackError::NonZeroPadding { tensor, row: 1, element: 1 } if tensor == "t"),
        "{err}"
    );
    let mut q = vec![0i8; 136];
    q[66] = 1; // pad byte of row 0 (65 values, stride 68)
    let err = load_tensors(&craft(&INT8_META, Some(int8_raw(&q, vec![2, 68])))).unwrap_err();
    assert!(
        matches!(
            err,
            BitpackError::NonZeroPadding {
                row: 0,
                element: 66,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn illegal_int8_levels_rejected() {
    let mut q = vec![0i8; 136];
    q[70] = 2; // not ternary
    let err = load_tensors(&craft(&INT8_META, Some(int8_raw(&q, vec![2, 68])))).unwrap_err();
    assert!(
        matches!(&err, BitpackError::IllegalLevel { tensor, index: 70, value: 2, .. } if tensor == "t"),
        "{err}"
    );
    // Pow2 codes: code 7 is illegal.
    let codes_meta = [
        ("bitpack.t.encoding", Some("codes")),
        ("bitpack.t.bits", Some("3")),
        ("bitpack.t.levels", Some("pow2")),
        ("bitpack.t.scale", Some("0.25")),
        ("bitpack.t.shape", Some("1,2")),
    ];
    let raw = Raw {
        dtype: Dtype::U8,
        shape: vec![1],
        data: vec![0b111_011],
    };
    let err = load_tensors(&craft(&codes_meta, Some(raw))).unwrap_err();
    assert!(
        matches!(
            &err,
            BitpackError::IllegalLevel {
                index: 1,
                value: 7,
                ..
            }
        ),
        "{err}"
    );
    let raw = Raw {
        dtype: Dtype::U8,
        shape: vec![1],
        data: vec![0b010_011],
    };
    let bytes = craft(&codes_meta, Some(raw));
    let file = load_tensors(&bytes).unwrap();
    assert_eq!(file.int8("t").unwrap().to_levels(), vec![0, -1]);
}

fn packed_strategy() -> impl Strategy<Value = PackedTensor<'static>> {
    let layout = prop_oneof![
        Just(Layout::RowMajor),
        Just(Layout::Nhwc),
        Just(Layout::Ohwi)
    ];
    (layout, 1usize..4, 1usize..140, 0u8..9, any::<u64>()).prop_map(
        |(layout, outer, c, kind, seed)| {
            let dims = match layout {
                Layout::RowMajor => vec![outer, c],
                Layout::Nhwc => vec![1, outer, 2, c],
                Layout::Ohwi => vec![outer, 3, 1, c],
            };
            let n: usize = dims.iter().product();
            let pick = |i: usize| (seed.rotate_left((i % 64) as u32) ^ i as u64) as usize;
            match kind {
                0 | 1 => {
                    let x: Vec<f32> = (0..n)
                        .map(|i| if pick(i) % 2 == 0 { -1.0 } else { 0.5 })
                        .collect();
                    BitTensor::from_f32(layout, &dims, &x).unwrap().into()
                }
                k => {
                    let set = match k {
                        2 => LevelSet::Ternary,
                        3 => LevelSet::Pow2,
                        bits => LevelSet::uniform(bits - 2).unwrap(),
                    };
                    let legal = set.levels();
                    let q: Vec<i8> = (0..n).map(|i| legal[pick(i) % legal.len()]).collect();
                    Int8Tensor::from_levels(set, layout, &dims, &q)
                        .unwrap()
                        .into()
                }
            }
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn random_tensors_round_trip(tensors in proptest::collection::vec(packed_strategy(), 0..5), dense in any::<bool>()) {
        let names: Vec<String> = (0..tensors.len()).map(|i| format!("layer{i}.weight")).collect();
        let list: Vec<(&str, &PackedTensor<'_>)> = names.iter().map(String::as_str).zip(&tensors).collect();
        let multibit = if dense { MultiBitStorage::DenseCodes } else { MultiBitStorage::Int8 };
        let bytes = to_bytes(&list, &BTreeMap::new(), SaveOptions { multibit }).unwrap();
        let file = load_tensors(&bytes).unwrap();
        prop_assert_eq!(file.tensors().len(), tensors.len());
        for (name, t) in list {
            prop_assert_eq!(file.get(name).unwrap(), t);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn mutated_bytes_never_panic(
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in any::<prop::sample::Index>(),
        truncate in any::<bool>(),
    ) {
        let mut bytes = valid_bytes();
        for (i, b) in edits {
            let i = i.index(bytes.len());
            bytes[i] = b;
        }
        if truncate {
            bytes.truncate(cut.index(bytes.len()));
        }
        if let Ok(file) = load_tensors(&bytes) {
            for (name, t) in file.tensors() {
                if let PackedTensor::Bits(b) = t {
                    prop_assert!(b.check_padding(name).is_ok());
                }
            }
        }
    }

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = load_tensors(&bytes);
    }

    #[test]
    fn random_metadata_values_never_panic(
        field in proptest::sample::select(vec!["encoding", "bits", "levels", "layout", "shape", "words_per_row", "row_stride", "scale"]),
        value in prop_oneof![
            "[0-9,]{0,24}".boxed(),
            proptest::sample::select(vec!["sign-plane", "int8", "codes", "nhwc", "ohwi", "row-major", "ternary", "pow2", "NaN", "inf", "0", "18446744073709551615"]).prop_map(String::from).boxed(),
            any::<String>().boxed(),
        ],
        int8 in any::<bool>(),
    ) {
        let k = format!("bitpack.t.{field}");
        let mut edits: Vec<(&str, Option<&str>)> = if int8 { INT8_META.to_vec() } else { vec![] };
        edits.push((&k, Some(&value)));
        let storage = int8.then(|| int8_raw(&[0; 136], vec![2, 68]));
        let _ = load_tensors(&craft(&edits, storage));
    }
}
