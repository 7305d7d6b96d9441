//! Export + packed engine: threshold folding, bit-identical logits against the training graph in
//! evaluation mode, and rejection of corrupt files.

use aqe_candle::{Alphas, ParamStore};
use candle_core::{Device, ModuleT, Tensor};
use minw_models::export::{ExportInfo, export_model};
use minw_models::packed::{Dir, PackedModel, argmax_rows, bn_sign_plus, fold_threshold};
use minw_models::{Error, InputShape, LayerPrecision, Model, ModelSpec, QuantPlan};
use xnor_kernels::{Direction, Thresholds};

/// xorshift64*: small deterministic generator for test data.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    /// Uniform in `[lo, hi)`.
    fn uniform(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * ((self.next() >> 40) as f32 / (1u64 << 24) as f32)
    }
}

fn spec(arch: &str, bits: &str, input: InputShape) -> ModelSpec {
    ModelSpec {
        arch: arch.parse().unwrap(),
        plan: QuantPlan::new(bits.parse().unwrap(), "aqe".parse().unwrap()),
        input,
        classes: 10,
    }
}

/// Random BatchNorm statistics and affine parameters of both signs (some gammas exactly zero),
/// scaled to each layer's accumulator range so that most channels are informative.
fn randomise_bn(store: &ParamStore, seed: u64) {
    let mut rng = Rng(seed | 1);
    for (name, p) in store.params() {
        let Some(prefix) = name.strip_suffix(".bn.running_var") else {
            continue;
        };
        let c = p.var.dims()[0];
        // Fan-in of the layer before this BatchNorm.
        let w = store.get(&format!("{prefix}.weight")).unwrap().var;
        let k: usize = w.dims()[1..].iter().product();
        let sd = (k as f32).sqrt();
        let mut gamma = Vec::new();
        let mut beta = Vec::new();
        let mut mean = Vec::new();
        let mut var = Vec::new();
        for i in 0..c {
            let g = match i % 13 {
                0 => 0.0,
                1 => -0.0,
                _ => rng.uniform(-1.5, 1.5),
            };
            gamma.push(g);
            beta.push(if i % 17 == 0 {
                0.0
            } else {
                rng.uniform(-0.5, 0.5)
            });
            mean.push(sd * rng.uniform(-1.0, 1.0));
            var.push(k as f32 * rng.uniform(0.3, 1.5));
        }
        let set = |n: &str, v: Vec<f32>| {
            let t = Tensor::from_vec(v, c, &Device::Cpu).unwrap();
            store
                .get(&format!("{prefix}.bn.{n}"))
                .unwrap()
                .var
                .set(&t)
                .unwrap();
        };
        set("weight", gamma);
        set("bias", beta);
        set("running_mean", mean);
        set("running_var", var);
    }
}

fn random_images(n: usize, shape: InputShape, seed: u64) -> Vec<f32> {
    let mut rng = Rng(seed | 1);
    (0..n * shape.height * shape.width * shape.channels)
        .map(|i| {
            if i % 29 == 0 {
                0.0
            } else {
                rng.uniform(-1.2, 2.8)
            }
        })
        .collect()
}

fn float_logits(model: &Model, images: &[f32], shape: InputShape) -> Vec<f32> {
    let n = images.len() / (shape.height * shape.width * shape.channels);
    let x = Tensor::from_vec(
        images.to_vec(),
        (n, shape.height, shape.width, shape.channels),
        &Device::Cpu,
    )
    .unwrap();
    model
        .forward_t(&x, false)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
}

fn build_random(shape: InputShape, seed: u64) -> (ModelSpec, Model, Vec<u8>) {
    build_random_arch("D", shape, seed)
}

fn build_random_arch(arch: &str, shape: InputShape, seed: u64) -> (ModelSpec, Model, Vec<u8>) {
    build_random_bits(arch, "1/1", shape, seed)
}

fn build_random_bits(
    arch: &str,
    bits: &str,
    shape: InputShape,
    seed: u64,
) -> (ModelSpec, Model, Vec<u8>) {
    let spec = spec(arch, bits, shape);
    let store = ParamStore::new(seed, &Device::Cpu);
    let model = spec.build(&Alphas::default(), &store).unwrap();
    if bits != "1/1" {
        minw_models::export::randomize_weights(&store, seed + 5).unwrap();
    }
    randomise_bn(&store, seed + 7);
    let mut info = ExportInfo::for_dataset(minw_models::data::DatasetKind::FashionMnist);
    if shape.channels == 3 {
        info = ExportInfo::for_dataset(minw_models::data::DatasetKind::Cifar10);
    } else if shape.channels != 1 {
        info.mean = vec![0.0; shape.channels];
        info.std = vec![1.0; shape.channels];
    }
    let bytes = export_model(&spec, &model, &info).unwrap();
    (spec, model, bytes)
}

fn assert_bitwise_equal(got: &[f32], want: &[f32], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert_eq!(
            g.to_bits(),
            w.to_bits(),
            "{what}: logit {i}: packed {g}, float {w}"
        );
    }
}

#[test]
fn fold_threshold_matches_the_f32_expression() {
    let mut rng = Rng(99);
    let k = 700usize;
    let mut seen = [0usize; 4];
    for case in 0..3000 {
        let (scale, shift) = match case % 10 {
            // Exact boundaries: shift = -t0 * scale.
            0 => {
                let s = rng.uniform(-2.0, 2.0);
                let t0 = (rng.uniform(-600.0, 600.0)) as i32;
                (s, -(t0 as f32) * s)
            }
            1 => (0.0, rng.uniform(-1.0, 1.0)),
            2 => (-0.0, if case % 20 == 2 { -0.0 } else { 0.0 }),
            3 => (rng.uniform(-1e-6, 1e-6), rng.uniform(-1e-4, 1e-4)),
            4 => (rng.uniform(-1.0, 1.0), rng.uniform(-2000.0, 2000.0)),
            // Awkward magnitudes where `t * scale` rounds.
            5 => (rng.uniform(-1.0, 1.0) * 1e-3 / 3.0, rng.uniform(-0.3, 0.3)),
            _ => (rng.uniform(-3.0, 3.0), rng.uniform(-100.0, 100.0)),
        };
        let (t, d) = fold_threshold(scale, shift, k).unwrap();
        seen[d as usize] += 1;
        let th = Thresholds::new(&[t], &[d.into()]).unwrap();
        for acc in -(k as i32)..=(k as i32) {
            let want_plus = bn_sign_plus(acc as f32, scale, shift);
            let got_plus = th.sign_bits(&[acc])[0] == 0;
            assert_eq!(
                got_plus, want_plus,
                "scale {scale:e} shift {shift:e} acc {acc}: folded ({t}, {d:?})"
            );
        }
    }
    assert!(
        seen.iter().all(|&n| n > 0),
        "every direction exercised: {seen:?}"
    );
}

#[test]
fn fold_threshold_signs_and_zero_gamma() {
    // Positive scale: acc >= 2 is +1; negative scale: acc <= 2 is +1 (the boundary included).
    assert_eq!(fold_threshold(0.5, -1.0, 10), Some((2, Dir::Increasing)));
    assert_eq!(fold_threshold(-0.5, 1.0, 10), Some((2, Dir::Decreasing)));
    // Zero gamma: the sign of the shift (`-0.0 >= 0` holds).
    assert_eq!(fold_threshold(0.0, 0.25, 10), Some((0, Dir::AlwaysPlus)));
    assert_eq!(fold_threshold(0.0, -0.25, 10), Some((0, Dir::AlwaysMinus)));
    assert_eq!(fold_threshold(-0.0, -0.0, 10), Some((0, Dir::AlwaysPlus)));
    // The boundary outside the accumulator range: constant.
    assert_eq!(fold_threshold(1.0, 50.0, 10), Some((0, Dir::AlwaysPlus)));
    assert_eq!(fold_threshold(1.0, -50.0, 10), Some((0, Dir::AlwaysMinus)));
    assert_eq!(fold_threshold(-1.0, -50.0, 10), Some((0, Dir::AlwaysMinus)));
    assert_eq!(fold_threshold(f32::INFINITY, 0.0, 10), None);
    assert_eq!(fold_threshold(1.0, f32::NAN, 10), None);
    let _ = Direction::from(Dir::Increasing);
}

#[test]
fn packed_convnet_d_matches_the_training_graph_bit_for_bit() {
    for (shape, seed) in [(InputShape::MNIST, 1u64), (InputShape::CIFAR, 2)] {
        let (_, model, bytes) = build_random(shape, seed);
        let packed = PackedModel::load_bytes(&bytes, "test").unwrap();
        let meta = packed.meta();
        assert_eq!(meta.architecture, "convnet-D");
        assert_eq!(meta.bits, "1/1");
        // The random statistics give both directions and constant channels.
        let dirs: Vec<Dir> = meta
            .layers
            .iter()
            .flat_map(|l| match l {
                minw_models::packed::LayerMeta::BinaryConv { directions, .. }
                | minw_models::packed::LayerMeta::BinaryDense { directions, .. } => {
                    directions.clone()
                }
                _ => Vec::new(),
            })
            .collect();
        for d in [Dir::Increasing, Dir::Decreasing, Dir::AlwaysPlus] {
            assert!(dirs.contains(&d), "{d:?} exercised");
        }

        let n = 300;
        let images = random_images(n, shape, seed * 31);
        let want = float_logits(&model, &images, shape);
        for batch in [1, 7, 64, n] {
            let got = packed.logits(&images, batch).unwrap();
            assert_bitwise_equal(&got, &want, &format!("{shape:?} batch {batch}"));
        }
        let pred = packed.predict(&images, 64).unwrap();
        assert_eq!(pred, argmax_rows(&want, 10));
        // Predictions are not all the same class (the check could fail).
        assert!(pred.iter().any(|&p| p != pred[0]), "degenerate predictions");
    }
}

#[test]
fn packed_resnets_match_the_training_graph_bit_for_bit() {
    let odd = InputShape {
        height: 13,
        width: 10,
        channels: 2,
    };
    // ResNet-20 (option-A shortcuts) at both dataset sizes; ResNet-8 with projection
    // shortcuts on an odd input (strided convs over odd sizes, 2 input channels).
    for (arch, shape, seed) in [
        ("resnet20", InputShape::CIFAR, 3u64),
        ("resnet20", InputShape::MNIST, 4),
        ("resnet8-b", odd, 5),
    ] {
        let (_, model, bytes) = build_random_arch(arch, shape, seed);
        let packed = PackedModel::load_bytes(&bytes, "test").unwrap();
        let meta = packed.meta();
        assert_eq!(meta.architecture, arch);
        let kinds: Vec<&str> = meta
            .layers
            .iter()
            .map(|l| match l {
                minw_models::packed::LayerMeta::StemConv { .. } => "stem",
                minw_models::packed::LayerMeta::ResidualBlock { shortcut, .. } => match shortcut {
                    minw_models::packed::ShortcutMeta::Identity => "identity",
                    minw_models::packed::ShortcutMeta::PadA { .. } => "pad_a",
                    minw_models::packed::ShortcutMeta::Projection { .. } => "projection",
                },
                minw_models::packed::LayerMeta::PoolClassifier { .. } => "head",
                _ => "other",
            })
            .collect();
        let want_kinds: &[&str] = if arch == "resnet20" {
            &[
                "stem", "identity", "identity", "identity", "pad_a", "identity", "identity",
                "pad_a", "identity", "identity", "head",
            ]
        } else {
            &["stem", "identity", "projection", "projection", "head"]
        };
        assert_eq!(kinds, want_kinds, "{arch}");

        let n = 96;
        let images = random_images(n, shape, seed * 31);
        let want = float_logits(&model, &images, shape);
        for batch in [1, 5, n] {
            let got = packed.logits(&images, batch).unwrap();
            assert_bitwise_equal(&got, &want, &format!("{arch} {shape:?} batch {batch}"));
        }
        let pred = packed.predict(&images, 32).unwrap();
        assert_eq!(pred, argmax_rows(&want, 10));
        // The logits depend on the image (the comparison could fail).
        assert!(
            want.chunks(10).any(|r| r != &want[..10]),
            "{arch}: degenerate logits"
        );
    }
}

#[test]
fn packed_int8_convnets_match_the_training_graph_bit_for_bit() {
    use minw_models::packed::LayerMeta;
    // 2/2 (ternary), 3/3 (pow2) and the mixed 1/2 (sign weights, ternary activations).
    for (arch, bits, shape, seed) in [
        ("D", "2/2", InputShape::MNIST, 11u64),
        ("D", "3/3", InputShape::CIFAR, 12),
        ("C", "1/2", InputShape::MNIST, 13),
    ] {
        let (_, model, bytes) = build_random_bits(arch, bits, shape, seed);
        let packed = PackedModel::load_bytes(&bytes, "test").unwrap();
        let meta = packed.meta();
        assert_eq!(meta.bits, bits);
        assert!(matches!(meta.layers[0], LayerMeta::Int8FloatConv { .. }));
        assert!(matches!(meta.layers[1], LayerMeta::Int8Conv { .. }));
        assert!(matches!(
            meta.layers.last(),
            Some(LayerMeta::Int8DenseAffine { .. })
        ));
        let n = 96;
        let images = random_images(n, shape, seed * 31);
        let want = float_logits(&model, &images, shape);
        for batch in [1, 5, n] {
            let got = packed.logits(&images, batch).unwrap();
            assert_bitwise_equal(&got, &want, &format!("{arch} {bits} batch {batch}"));
        }
        assert_eq!(packed.predict(&images, 32).unwrap(), argmax_rows(&want, 10));
        assert!(
            want.chunks(10).any(|r| r != &want[..10]),
            "{arch} {bits}: degenerate logits"
        );
    }
}

/// Rewrites a random leaf of a JSON value (numbers, strings, booleans, array lengths).
fn mutate_json(v: &mut serde_json::Value, rng: &mut Rng) {
    use serde_json::Value;
    match v {
        Value::Object(m) => {
            let n = m.len();
            if n == 0 {
                return;
            }
            let k = m.keys().nth(rng.next() as usize % n).unwrap().clone();
            if rng.next().is_multiple_of(16) {
                m.remove(&k);
            } else {
                mutate_json(m.get_mut(&k).unwrap(), rng);
            }
        }
        Value::Array(a) => {
            if a.is_empty() || rng.next().is_multiple_of(8) {
                match rng.next() % 3 {
                    0 => {
                        a.pop();
                    }
                    1 if !a.is_empty() => {
                        let i = rng.next() as usize % a.len();
                        let j = rng.next() as usize % a.len();
                        a.swap(i, j);
                    }
                    _ => a.push(Value::from(0)),
                }
            } else {
                let i = rng.next() as usize % a.len();
                mutate_json(&mut a[i], rng);
            }
        }
        Value::Number(_) => {
            let choices = [
                0i64,
                1,
                2,
                3,
                4,
                7,
                16,
                63,
                64,
                65,
                -1,
                1 << 20,
                i64::from(i32::MAX),
                2_139_095_040,
            ];
            *v = Value::from(choices[rng.next() as usize % choices.len()]);
        }
        Value::String(_) => {
            let choices = [
                "identity",
                "pad_a",
                "projection",
                "ternary",
                "pow2",
                "sign",
                "uniform:4",
                "twn",
                "2/2",
                "1/1",
                "x",
            ];
            *v = Value::from(choices[rng.next() as usize % choices.len()]);
        }
        Value::Bool(b) => *b = !*b,
        Value::Null => {}
    }
}

#[test]
fn edited_model_descriptions_load_or_fail_cleanly() {
    // Every edit of the description is re-checksummed, so it reaches the loader's validation
    // (a random byte flip would stop at the checksum); loading must give Ok or Err, never
    // panic, and a model that loads must run.
    for (arch, bits, seed) in [
        ("resnet8-b", "1/1", 21u64),
        ("D", "2/2", 22),
        ("D", "1/1", 23),
    ] {
        let (_, _, bytes) = build_random_bits(arch, bits, InputShape::CIFAR, seed);
        let good = PackedModel::load_bytes(&bytes, "test").unwrap();
        let file = bitpack::load_tensors(&bytes).unwrap();
        let tensors: std::collections::BTreeMap<String, bitpack::PackedTensor<'static>> = file
            .tensors()
            .iter()
            .map(|(n, t)| {
                let owned = match t {
                    bitpack::PackedTensor::Bits(b) => b.clone().into_owned().into(),
                    bitpack::PackedTensor::Int8(q) => q.clone().into_owned().into(),
                };
                (n.clone(), owned)
            })
            .collect();
        let base = serde_json::to_value(good.meta()).unwrap();
        let mut rng = Rng(seed * 977);
        let (mut ok, mut err) = (0, 0);
        for _ in 0..400 {
            let mut v = base.clone();
            for _ in 0..1 + rng.next() % 3 {
                mutate_json(&mut v, &mut rng);
            }
            let Ok(meta) = serde_json::from_value::<minw_models::packed::ModelMeta>(v) else {
                continue;
            };
            let b = minw_models::packed::to_bytes_mixed(&meta, &tensors).unwrap();
            match PackedModel::load_bytes(&b, "edited") {
                Ok(m) => {
                    ok += 1;
                    if m.image_len() <= 1 << 16 {
                        let x = vec![0.25f32; m.image_len()];
                        let _ = m.predict(&x, 1);
                    }
                }
                Err(_) => err += 1,
            }
        }
        eprintln!("{arch} {bits}: {ok} edits loaded, {err} rejected");
        assert!(
            err > 100,
            "{arch} {bits}: only {err} edits rejected ({ok} loaded)"
        );
    }
}

#[test]
fn resnet_files_with_inconsistent_layers_are_rejected() {
    use minw_models::packed::{LayerMeta, ShortcutMeta};
    let (_, _, bytes) = build_random_arch("resnet8-b", InputShape::CIFAR, 9);
    let good = PackedModel::load_bytes(&bytes, "test").unwrap();
    let file = bitpack::load_tensors(&bytes).unwrap();
    let tensors: std::collections::BTreeMap<String, bitpack::BitTensor<'static>> = file
        .tensors()
        .iter()
        .map(|(n, t)| (n.clone(), t.as_bits().unwrap().clone().into_owned()))
        .collect();
    let reject = |meta: &minw_models::packed::ModelMeta, needle: &str| {
        let b = minw_models::packed::to_bytes(meta, &tensors).unwrap();
        let err = PackedModel::load_bytes(&b, "edited")
            .unwrap_err()
            .to_string();
        assert!(err.contains(needle), "expected `{needle}` in: {err}");
    };
    let mut no_projection = tensors.clone();
    no_projection.remove("stage2.block1.shortcut.weight");
    let reject_without = |meta: &minw_models::packed::ModelMeta, needle: &str| {
        let b = minw_models::packed::to_bytes(meta, &no_projection).unwrap();
        let err = PackedModel::load_bytes(&b, "edited")
            .unwrap_err()
            .to_string();
        assert!(err.contains(needle), "expected `{needle}` in: {err}");
    };
    // Option-A padding that does not add up to the block's channels (16 + 1 + 1 != 32).
    let mut m = good.meta().clone();
    if let LayerMeta::ResidualBlock { shortcut, .. } = &mut m.layers[2] {
        *shortcut = ShortcutMeta::PadA {
            pad_before: 1,
            pad_after: 1,
        };
    }
    reject_without(&m, "option-A padding 1 + 16 + 1 is not 32");
    // The same layers with the projection weight still in the file: one tensor too many.
    reject(&m, "the layers name 9 weight tensors but the file has 10");
    // An identity shortcut across a stride.
    let mut m = good.meta().clone();
    if let LayerMeta::ResidualBlock { shortcut, .. } = &mut m.layers[2] {
        *shortcut = ShortcutMeta::Identity;
    }
    reject_without(&m, "identity shortcut needs stride 1");
    // Blocks out of order: a residual block right after the stem's place.
    let mut m = good.meta().clone();
    m.layers.swap(0, 1);
    reject(&m, "cannot be layer 0");
    // Wrong channel count in a block.
    let mut m = good.meta().clone();
    if let LayerMeta::ResidualBlock { in_channels, .. } = &mut m.layers[1] {
        *in_channels = 8;
    }
    reject(&m, "expects 8 input channels");
    // A head that expects other features than the stream has.
    let mut m = good.meta().clone();
    if let LayerMeta::PoolClassifier { in_features, .. } = &mut m.layers[4] {
        *in_features = 32;
    }
    reject(&m, "pooled features");
}

#[test]
fn corrupt_or_truncated_files_are_rejected() {
    let (_, _, bytes) = build_random(InputShape::MNIST, 5);
    assert!(PackedModel::load_bytes(&bytes, "ok").is_ok());
    let header = 8 + u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    // Every 3rd header byte, and a spread of data bytes.
    let data_stride = ((bytes.len() - header) / 400).max(1);
    let positions = (0..header)
        .step_by(3)
        .chain((header..bytes.len()).step_by(data_stride))
        .chain([bytes.len() - 1]);
    let mut checked = 0;
    for pos in positions {
        for flip in [0x01u8, 0x80] {
            let mut b = bytes.clone();
            b[pos] ^= flip;
            let r = PackedModel::load_bytes(&b, "flipped");
            assert!(
                matches!(r, Err(Error::Data { .. })),
                "byte {pos} ^ {flip:#x} (header ends at {header}) accepted"
            );
            checked += 1;
        }
    }
    assert!(checked > 1000);
    for len in [
        0,
        1,
        7,
        8,
        100,
        header - 1,
        header,
        header + 1,
        bytes.len() / 2,
        bytes.len() - 1,
    ] {
        let r = PackedModel::load_bytes(&bytes[..len], "truncated");
        assert!(
            matches!(r, Err(Error::Data { .. })),
            "truncated to {len} accepted"
        );
    }
    let mut longer = bytes.clone();
    longer.push(0);
    assert!(PackedModel::load_bytes(&longer, "extended").is_err());
}

#[test]
fn export_refuses_what_it_cannot_represent() {
    let info = ExportInfo::for_dataset(minw_models::data::DatasetKind::Cifar10);
    let try_export = |spec: &ModelSpec| {
        let store = ParamStore::new(0, &Device::Cpu);
        let model = spec.build(&Alphas::default(), &store).unwrap();
        export_model(spec, &model, &info).unwrap_err().to_string()
    };
    let e = try_export(&spec("resnet18", "1/1", InputShape::CIFAR));
    assert!(e.contains("resnet18") && e.contains("not supported"), "{e}");
    let mut s = spec("resnet20", "1/1", InputShape::CIFAR);
    s.plan.policy.last_layer = LayerPrecision::Float;
    let e = try_export(&s);
    assert!(e.contains("layer `fc`") && e.contains("only sign"), "{e}");
    let e = try_export(&spec("resnet20", "2/2", InputShape::CIFAR));
    assert!(e.contains("2/2") && e.contains("ResNets"), "{e}");
    let e = try_export(&spec("D", "2/32", InputShape::CIFAR));
    assert!(e.contains("conv1") && e.contains("float"), "{e}");
    let mut s = spec("D", "1/1", InputShape::CIFAR);
    s.plan.policy.last_layer = LayerPrecision::Float;
    let e = try_export(&s);
    assert!(e.contains("fc3"), "{e}");
    let mut s = spec("D", "1/1", InputShape::CIFAR);
    s.plan.policy.first_layer = LayerPrecision::Float;
    let e = try_export(&s);
    assert!(e.contains("conv1"), "{e}");
}

/// The trained quick run, when present (it is not part of the repository): export, reload and
/// compare on the Fashion-MNIST test set when the Debian package is installed.
#[test]
fn trained_run_agrees_when_present() {
    let run = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../runs/quick/D-1-1-aqe-fashion-mnist");
    if !run.join("checkpoints/latest.json").exists() {
        eprintln!("skipped: {} absent", run.display());
        return;
    }
    let out = std::env::temp_dir().join(format!("minw-test-{}.minw", std::process::id()));
    let report = minw_models::export::export_run(&run, &out).unwrap();
    assert!(report.packed_bytes * 10 < report.float_bytes, "{report:?}");
    let packed = PackedModel::load_path(&out).unwrap();
    std::fs::remove_file(&out).unwrap();
    let loaded = minw_models::export::load_run(&run).unwrap();
    let shape = loaded.spec.input;
    let Ok(data) = loaded.dataset.load(None) else {
        eprintln!("skipped the data check: Fashion-MNIST absent");
        return;
    };
    let n = 1000.min(data.test.len());
    let il = shape.height * shape.width * shape.channels;
    let mut images = vec![0f32; n * il];
    loaded
        .dataset
        .normalize()
        .apply(&data.test.images()[..n * il], &mut images);
    let want = float_logits(&loaded.model, &images, shape);
    let got = packed.logits(&images, 64).unwrap();
    assert_bitwise_equal(&got, &want, "trained run");
}

/// A hand-made file with channel counts that are not multiples of 64 (per-pixel pad bits, so
/// the engine repacks the flatten densely), pooling after the float first layer and after a
/// binary conv, every threshold direction, and a dense layer wider than one word, against a
/// naive reference on unpacked values (inputs are multiples of 1/2, so every f32 sum is exact
/// in any order).
#[test]
fn handmade_file_with_odd_channel_counts_matches_a_naive_reference() {
    use minw_models::packed::{LayerMeta, ModelMeta, to_bytes};
    use std::collections::BTreeMap;

    let mut rng = Rng(12345);
    let mut pm1 = |n: usize| -> Vec<f32> {
        (0..n)
            .map(|_| if rng.next() & 1 == 0 { 1.0 } else { -1.0 })
            .collect()
    };
    let (h0, c0, c1, c2, f1, classes) = (8usize, 2usize, 3usize, 5usize, 70usize, 4usize);
    let w1 = pm1(c1 * 9 * c0);
    let w2 = pm1(c2 * 9 * c1);
    let k_fc1 = 2 * 2 * c2;
    let w3 = pm1(f1 * k_fc1);
    let w4 = pm1(classes * f1);
    let mut rng = Rng(777);
    let scale1: Vec<f32> = (0..c1)
        .map(|i| if i == 2 { -0.7 } else { rng.uniform(0.2, 1.0) })
        .collect();
    let shift1: Vec<f32> = (0..c1).map(|_| rng.uniform(-1.0, 1.0)).collect();
    let dirs = [
        Dir::Increasing,
        Dir::Decreasing,
        Dir::AlwaysPlus,
        Dir::AlwaysMinus,
    ];
    let t2: Vec<i32> = (0..c2).map(|_| (rng.next() % 11) as i32 - 5).collect();
    let d2: Vec<Dir> = (0..c2).map(|i| dirs[i % 4]).collect();
    let t3: Vec<i32> = (0..f1).map(|_| (rng.next() % 9) as i32 - 4).collect();
    let d3: Vec<Dir> = (0..f1).map(|i| dirs[(i * 7 / 3) % 4]).collect();
    let scale4: Vec<f32> = (0..classes).map(|_| rng.uniform(-1.0, 1.0)).collect();
    let shift4: Vec<f32> = (0..classes).map(|_| rng.uniform(-1.0, 1.0)).collect();
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<u32>>();
    let meta = ModelMeta {
        format_version: 1,
        architecture: "handmade".into(),
        bits: "1/1".into(),
        input_shape: [h0, h0, c0],
        normalize_mean: vec![0.5; c0],
        normalize_std: vec![0.25; c0],
        class_names: (0..classes).map(|i| format!("c{i}")).collect(),
        layers: vec![
            LayerMeta::FloatConv {
                name: "a".into(),
                in_channels: c0,
                out_channels: c1,
                kernel: 3,
                stride: 1,
                padding: 1,
                pool: true,
                scale_bits: bits(&scale1),
                shift_bits: bits(&shift1),
            },
            LayerMeta::BinaryConv {
                name: "b".into(),
                in_channels: c1,
                out_channels: c2,
                kernel: 3,
                stride: 1,
                padding: 1,
                pool: true,
                thresholds: t2.clone(),
                directions: d2.clone(),
            },
            LayerMeta::BinaryDense {
                name: "c".into(),
                in_features: k_fc1,
                out_features: f1,
                thresholds: t3.clone(),
                directions: d3.clone(),
            },
            LayerMeta::BinaryDenseAffine {
                name: "d".into(),
                in_features: f1,
                out_features: classes,
                scale_bits: bits(&scale4),
                shift_bits: bits(&shift4),
            },
        ],
    };
    use bitpack::{BitTensor, Layout};
    let tensors = BTreeMap::from([
        (
            "a.weight".to_string(),
            BitTensor::from_f32(Layout::Ohwi, &[c1, 3, 3, c0], &w1).unwrap(),
        ),
        (
            "b.weight".to_string(),
            BitTensor::from_f32(Layout::Ohwi, &[c2, 3, 3, c1], &w2).unwrap(),
        ),
        (
            "c.weight".to_string(),
            BitTensor::from_f32(Layout::RowMajor, &[f1, k_fc1], &w3).unwrap(),
        ),
        (
            "d.weight".to_string(),
            BitTensor::from_f32(Layout::RowMajor, &[classes, f1], &w4).unwrap(),
        ),
    ]);
    let bytes = to_bytes(&meta, &tensors).unwrap();
    let packed = PackedModel::load_bytes(&bytes, "handmade").unwrap();

    // Naive reference.
    let conv = |x: &[f32], h: usize, cin: usize, w: &[f32], cout: usize| -> Vec<f32> {
        let mut out = vec![0f32; h * h * cout];
        for y in 0..h {
            for xx in 0..h {
                for o in 0..cout {
                    let mut s = 0f32;
                    for ky in 0..3 {
                        for kx in 0..3 {
                            let (iy, ix) =
                                (y as isize + ky as isize - 1, xx as isize + kx as isize - 1);
                            if iy < 0 || ix < 0 || iy >= h as isize || ix >= h as isize {
                                continue;
                            }
                            for c in 0..cin {
                                s += x[(iy as usize * h + ix as usize) * cin + c]
                                    * w[((o * 3 + ky) * 3 + kx) * cin + c];
                            }
                        }
                    }
                    out[(y * h + xx) * cout + o] = s;
                }
            }
        }
        out
    };
    let pool = |x: &[f32], h: usize, c: usize| -> Vec<f32> {
        let ho = h / 2;
        let mut out = vec![f32::NEG_INFINITY; ho * ho * c];
        for y in 0..ho * 2 {
            for xx in 0..ho * 2 {
                for ch in 0..c {
                    let o = &mut out[((y / 2) * ho + xx / 2) * c + ch];
                    *o = o.max(x[(y * h + xx) * c + ch]);
                }
            }
        }
        out
    };
    let plus = |acc: f32, t: i32, d: Dir| match d {
        Dir::Increasing => acc >= t as f32,
        Dir::Decreasing => acc <= t as f32,
        Dir::AlwaysPlus => true,
        Dir::AlwaysMinus => false,
    };
    let sgn = |p: bool| if p { 1.0 } else { -1.0 };
    let n = 50;
    let images: Vec<f32> = (0..n * h0 * h0 * c0)
        .map(|_| ((rng.next() % 9) as f32 - 4.0) / 2.0)
        .collect();
    let mut want = Vec::new();
    for img in images.chunks_exact(h0 * h0 * c0) {
        let a = pool(&conv(img, h0, c0, &w1, c1), h0, c1);
        let a: Vec<f32> = a
            .iter()
            .enumerate()
            .map(|(i, &v)| sgn(bn_sign_plus(v, scale1[i % c1], shift1[i % c1])))
            .collect();
        let b = pool(&conv(&a, h0 / 2, c1, &w2, c2), h0 / 2, c2);
        let b: Vec<f32> = b
            .iter()
            .enumerate()
            .map(|(i, &v)| sgn(plus(v, t2[i % c2], d2[i % c2])))
            .collect();
        let c: Vec<f32> = (0..f1)
            .map(|o| {
                let s: f32 = (0..k_fc1).map(|k| b[k] * w3[o * k_fc1 + k]).sum();
                sgn(plus(s, t3[o], d3[o]))
            })
            .collect();
        for o in 0..classes {
            let s: f32 = (0..f1).map(|k| c[k] * w4[o * f1 + k]).sum();
            want.push(s * scale4[o] + shift4[o]);
        }
    }
    for batch in [1, 3, n] {
        let got = packed.logits(&images, batch).unwrap();
        assert_bitwise_equal(&got, &want, &format!("handmade, batch {batch}"));
    }
}
