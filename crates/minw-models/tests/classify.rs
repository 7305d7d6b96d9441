//! `minw_models::classify` (the `classify` example's core): PNG files through decoding, channel
//! conversion, resizing and normalisation give the packed engine's prediction on the same
//! preprocessed pixels, and the training graph's.

use std::path::PathBuf;

use aqe_candle::{Alphas, ParamStore};
use candle_core::{Device, ModuleT, Tensor};
use minw_models::classify::{self, top_k};
use minw_models::data::{DatasetKind, Resize};
use minw_models::export::{ExportInfo, export_model, randomize_batch_norm};
use minw_models::packed::{PackedModel, argmax_rows};
use minw_models::{Error, InputShape, Model, ModelSpec, QuantPlan};

/// xorshift64*: small deterministic generator for test data.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn uniform(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * ((self.next() >> 40) as f32 / (1u64 << 24) as f32)
    }
}

/// A random-init ConvNet D W1A1 for 28x28x1 (Fashion-MNIST normalisation and class names),
/// its training graph and the loaded packed model.
fn model() -> (Model, PackedModel) {
    let spec = ModelSpec {
        arch: "D".parse().unwrap(),
        plan: QuantPlan::new("1/1".parse().unwrap(), "aqe".parse().unwrap()),
        input: InputShape::MNIST,
        classes: 10,
    };
    let store = ParamStore::new(11, &Device::Cpu);
    let model = spec.build(&Alphas::default(), &store).unwrap();
    randomize_batch_norm(&store, 5).unwrap();
    let info = ExportInfo::for_dataset(DatasetKind::FashionMnist);
    let bytes = export_model(&spec, &model, &info).unwrap();
    (
        model,
        PackedModel::load_bytes(&bytes, "test model").unwrap(),
    )
}

fn tmp(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("classify-test");
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

/// A smooth-ish grey pattern with some texture, `w x h`.
fn pattern(w: u32, h: u32, seed: u64) -> image::GrayImage {
    let mut rng = Rng(seed | 1);
    image::GrayImage::from_fn(w, h, |x, y| {
        let v = (x * 7 + y * 3) as f32 + rng.uniform(0.0, 90.0);
        image::Luma([(v as u32 % 256) as u8])
    })
}

#[test]
fn png_prediction_equals_the_packed_engine_on_the_same_pixels() {
    let (float_model, packed) = model();
    let meta = packed.meta().clone();
    assert_eq!(meta.input_shape, [28, 28, 1]);
    let mut classes_seen = std::collections::BTreeSet::new();
    for seed in 0..12u64 {
        let img = pattern(28, 28, seed + 1);
        let path = tmp(&format!("digit{seed}.png"));
        img.save(&path).unwrap();

        // Independent preprocessing of the same pixels, straight from the format docs.
        let want_input: Vec<f32> = img
            .as_raw()
            .iter()
            .map(|&p| (p as f32 / 255.0 - meta.normalize_mean[0]) / meta.normalize_std[0])
            .collect();
        let want_logits = packed.logits(&want_input, 1).unwrap();
        let want = packed.predict(&want_input, 1).unwrap()[0] as usize;

        let decoded = classify::open(&path).unwrap();
        let pixels = classify::to_pixels(&decoded, meta.input_shape, Resize::default()).unwrap();
        assert_eq!(pixels, *img.as_raw(), "seed {seed}: PNG round trip");
        assert_eq!(classify::normalize(&packed, &pixels).unwrap(), want_input);

        let top = classify::classify(&packed, &decoded, Resize::default(), 3).unwrap();
        assert_eq!(top.len(), 3);
        assert_eq!(top[0].class, want, "seed {seed}");
        assert_eq!(top[0].name, meta.class_names[want]);
        assert!(top[0].probability >= top[1].probability);
        assert!(top[1].probability >= top[2].probability);
        // Softmax of the packed logits, in f64 for the check.
        let m = want_logits.iter().copied().fold(f32::MIN, f32::max) as f64;
        let z: f64 = want_logits.iter().map(|&l| (l as f64 - m).exp()).sum();
        for p in &top {
            let q = (want_logits[p.class] as f64 - m).exp() / z;
            assert!((p.probability as f64 - q).abs() < 1e-5, "{p:?} vs {q}");
        }

        // And the training graph (evaluation mode) agrees on these pixels.
        let x = Tensor::from_vec(want_input, (1, 28, 28, 1), &Device::Cpu).unwrap();
        let fl = float_model
            .forward_t(&x, false)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert_eq!(argmax_rows(&fl, 10)[0] as usize, want, "seed {seed}");
        classes_seen.insert(want);
    }
    // The random model is not constant, so the test compares real decisions.
    assert!(classes_seen.len() > 1, "always class {classes_seen:?}");
}

#[test]
fn colour_images_are_converted_and_resized() {
    let (_, packed) = model();
    // An RGB JPEG-free PNG, 40 wide x 28 high: shorter side already 28, so the centre crop
    // takes columns 6..34 of the grey conversion exactly.
    let rgb = image::RgbImage::from_fn(40, 28, |x, y| {
        image::Rgb([(x * 6) as u8, (y * 9) as u8, ((x + y) * 3) as u8])
    });
    let path = tmp("wide.png");
    rgb.save(&path).unwrap();
    let img = classify::open(&path).unwrap();
    let grey = image::DynamicImage::ImageRgb8(rgb.clone()).to_luma8();
    let got = classify::to_pixels(&img, [28, 28, 1], Resize::ShorterSideCenterCrop).unwrap();
    let want: Vec<u8> = (0..28)
        .flat_map(|y| (6..34).map(move |x| (x, y)))
        .map(|(x, y)| grey.get_pixel(x, y)[0])
        .collect();
    assert_eq!(got, want);
    // Stretch keeps the whole width: a 2x-upscaled constant image stays constant.
    let flat = image::DynamicImage::ImageRgb8(image::RgbImage::from_pixel(
        14,
        9,
        image::Rgb([200, 100, 50]),
    ));
    let s = classify::to_pixels(&flat, [28, 28, 3], Resize::Stretch).unwrap();
    assert_eq!(s.len(), 28 * 28 * 3);
    assert!(s.chunks(3).all(|p| p == [200, 100, 50]));
    // Any size classifies.
    let top = classify::classify(&packed, &img, Resize::Stretch, 3).unwrap();
    assert_eq!(top.len(), 3);
    assert!(classify::to_pixels(&img, [28, 28, 2], Resize::Stretch).is_err());
}

#[test]
fn unreadable_images_are_errors_naming_the_file() {
    let path = tmp("not-an-image.png");
    std::fs::write(&path, b"this is not a PNG").unwrap();
    let Err(Error::Data {
        path: p, reason, ..
    }) = classify::open(&path)
    else {
        panic!("expected a data error");
    };
    assert!(p.ends_with("not-an-image.png"), "{p}");
    assert!(reason.contains("image"), "{reason}");
    let missing = tmp("missing.png");
    let Err(Error::Data { path: p, .. }) = classify::open(&missing) else {
        panic!("expected a data error");
    };
    assert!(p.ends_with("missing.png"), "{p}");
}

#[test]
fn top_k_is_ordered_softmax() {
    let names: Vec<String> = ["a", "b", "c", "d"].map(String::from).to_vec();
    let top = top_k(&[1.0, 3.0, 3.0, -2.0], &names, 3);
    assert_eq!(
        top.iter().map(|p| p.class).collect::<Vec<_>>(),
        vec![1, 2, 0]
    );
    assert_eq!(top[0].probability, top[1].probability);
    let all: f32 = top_k(&[1.0, 3.0, 3.0, -2.0], &names, 10)
        .iter()
        .map(|p| p.probability)
        .sum();
    assert!((all - 1.0).abs() < 1e-6);
}
