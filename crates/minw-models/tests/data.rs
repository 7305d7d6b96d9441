//! The data pipeline: loaders on generated files in the real formats (and their errors),
//! augmentation, splits and deterministic batching.

use std::io::Write;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use minw_models::data::{
    Augment, BatchConfig, Batcher, CIFAR10_CLASSES, CIFAR100_CLASSES, CifarVariant, Dataset,
    DatasetKind, FASHION_MNIST_CLASSES, FASHION_MNIST_DEFAULT_DIR, FolderOptions, LastBatch,
    Normalize, Order, Resize, Transform, load_cifar, load_fashion_mnist, load_idx_pair,
    load_image_folder, load_mnist,
};
use minw_models::{Error, InputShape};

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// A fresh, empty directory for one test.
fn tmpdir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("minw-data-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

// ---------------------------------------------------------------------------------------------
// CIFAR

/// Pixel values of generated CIFAR image `k`: each channel distinct, so a wrong CHW -> HWC
/// conversion shows.
fn cifar_px(k: usize, p: usize, c: usize) -> u8 {
    ((k * 7 + p * 3 + c * 101) % 256) as u8
}

/// One CIFAR record (labels first, then R, G, B planes).
fn cifar_record(label_bytes: &[u8], k: usize) -> Vec<u8> {
    let mut r = label_bytes.to_vec();
    for c in 0..3 {
        for p in 0..1024 {
            r.push(cifar_px(k, p, c));
        }
    }
    r
}

fn write(path: &Path, bytes: &[u8]) {
    std::fs::write(path, bytes).unwrap();
}

/// Writes CIFAR-10 files with `per_file` records each; image `k` overall has label `k % 10`.
fn write_cifar10(dir: &Path, per_file: usize) {
    let files = [
        "data_batch_1.bin",
        "data_batch_2.bin",
        "data_batch_3.bin",
        "data_batch_4.bin",
        "data_batch_5.bin",
        "test_batch.bin",
    ];
    let mut k = 0;
    for f in files {
        let mut bytes = Vec::new();
        for _ in 0..per_file {
            bytes.extend(cifar_record(&[(k % 10) as u8], k));
            k += 1;
        }
        write(&dir.join(f), &bytes);
    }
}

fn check_cifar_image(data: &Dataset, i: usize, k: usize) {
    let img = data.image(i);
    for p in 0..1024 {
        for c in 0..3 {
            assert_eq!(
                img[p * 3 + c],
                cifar_px(k, p, c),
                "image {i} pixel {p} channel {c}"
            );
        }
    }
}

#[test]
fn cifar10_round_trips_pixels_and_labels_hwc() -> TestResult {
    let root = tmpdir("cifar10");
    let dir = root.join("cifar-10-batches-bin");
    std::fs::create_dir(&dir)?;
    write_cifar10(&dir, 2);
    // The parent directory is accepted as well as the directory itself.
    for d in [&root, &dir] {
        let tt = load_cifar(d, CifarVariant::Cifar10)?;
        assert_eq!(tt.train.len(), 10);
        assert_eq!(tt.test.len(), 2);
        assert_eq!(tt.train.shape(), InputShape::CIFAR);
        assert_eq!(tt.train.classes(), 10);
        assert_eq!(tt.train.labels(), &[0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
        assert_eq!(tt.test.labels(), &[0, 1]);
        for i in 0..10 {
            check_cifar_image(&tt.train, i, i);
        }
        check_cifar_image(&tt.test, 1, 11);
        assert_eq!(tt.train.class_names()[9], CIFAR10_CLASSES[9]);
    }
    // Pixel (row 0, col 1) of image 0: R plane byte 1, G byte 1025, B byte 2049.
    let tt = load_cifar(&dir, CifarVariant::Cifar10)?;
    assert_eq!(&tt.train.image(0)[3..6], &[3, 104, 205]);

    let names: String = (0..10).map(|i| format!("class{i}\n")).collect();
    write(
        &dir.join("batches.meta.txt"),
        format!("{names}\n").as_bytes(),
    );
    let tt = load_cifar(&dir, CifarVariant::Cifar10)?;
    assert_eq!(tt.test.class_names()[3], "class3");
    Ok(())
}

#[test]
fn cifar100_uses_fine_labels() -> TestResult {
    let root = tmpdir("cifar100");
    let dir = root.join("cifar-100-binary");
    std::fs::create_dir(&dir)?;
    let mut train = Vec::new();
    for k in 0..3 {
        train.extend(cifar_record(&[(k * 5) as u8, (k * 33 + 1) as u8], k));
    }
    write(&dir.join("train.bin"), &train);
    write(&dir.join("test.bin"), &cifar_record(&[19, 99], 7));
    let tt = load_cifar(&root, CifarVariant::Cifar100)?;
    assert_eq!(tt.train.labels(), &[1, 34, 67]);
    assert_eq!(tt.test.labels(), &[99]);
    assert_eq!(tt.train.classes(), 100);
    assert_eq!(tt.train.class_names()[99], "worm");
    assert_eq!(CIFAR100_CLASSES.len(), 100);
    check_cifar_image(&tt.train, 2, 2);
    check_cifar_image(&tt.test, 0, 7);
    Ok(())
}

fn data_error(e: Error) -> (String, Option<u64>, String) {
    match e {
        Error::Data {
            path,
            offset,
            reason,
        } => (path, offset, reason),
        other => panic!("expected a data error, got {other}"),
    }
}

#[test]
fn cifar_wrong_size_names_file_and_size() {
    let dir = tmpdir("cifar-size");
    write_cifar10(&dir, 2);
    let mut bytes = std::fs::read(dir.join("data_batch_3.bin")).unwrap();
    bytes.truncate(3073 + 100);
    write(&dir.join("data_batch_3.bin"), &bytes);
    let err = load_cifar(&dir, CifarVariant::Cifar10).unwrap_err();
    let msg = err.to_string();
    let (path, offset, reason) = data_error(err);
    assert!(path.ends_with("data_batch_3.bin"), "{path}");
    assert_eq!(offset, Some(3073));
    assert!(reason.contains("3173"), "{reason}");
    assert!(
        msg.contains("data_batch_3.bin") && msg.contains("3073-byte"),
        "{msg}"
    );
}

#[test]
fn cifar_label_out_of_range_names_file_and_offset() {
    let dir = tmpdir("cifar-label");
    write_cifar10(&dir, 3);
    let mut bytes = std::fs::read(dir.join("test_batch.bin")).unwrap();
    bytes[2 * 3073] = 10;
    write(&dir.join("test_batch.bin"), &bytes);
    let err = load_cifar(&dir, CifarVariant::Cifar10).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("test_batch.bin"), "{msg}");
    assert!(msg.contains("at byte offset 6146"), "{msg}");
    assert!(msg.contains("label 10"), "{msg}");

    // CIFAR-100: fine label 100 in the second record.
    let dir = tmpdir("cifar100-label");
    let mut train = cifar_record(&[0, 0], 0);
    train.extend(cifar_record(&[3, 100], 1));
    write(&dir.join("train.bin"), &train);
    write(&dir.join("test.bin"), &cifar_record(&[0, 0], 0));
    let (path, offset, _) = data_error(load_cifar(&dir, CifarVariant::Cifar100).unwrap_err());
    assert!(path.ends_with("train.bin"));
    assert_eq!(offset, Some(3074));
}

#[test]
fn cifar_missing_files_say_what_and_how_to_fetch() {
    let dir = tmpdir("cifar-missing");
    let msg = load_cifar(&dir, CifarVariant::Cifar10)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("data_batch_1.bin"), "{msg}");
    assert!(msg.contains("cargo xtask fetch-data cifar10"), "{msg}");
    write_cifar10(&dir, 1);
    std::fs::remove_file(dir.join("data_batch_4.bin")).unwrap();
    let (path, _, reason) = data_error(load_cifar(&dir, CifarVariant::Cifar10).unwrap_err());
    assert!(path.ends_with("data_batch_4.bin"), "{path}");
    assert!(reason.contains("fetch-data cifar10"), "{reason}");
    let msg = load_cifar(&dir, CifarVariant::Cifar100)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("fetch-data cifar100"), "{msg}");
}

// ---------------------------------------------------------------------------------------------
// idx

fn idx_images(n: usize, h: usize, w: usize, pixels: &[u8]) -> Vec<u8> {
    let mut b = Vec::new();
    for v in [2051u32, n as u32, h as u32, w as u32] {
        b.extend(v.to_be_bytes());
    }
    b.extend_from_slice(pixels);
    b
}

fn idx_labels(labels: &[u8]) -> Vec<u8> {
    let mut b = Vec::new();
    for v in [2049u32, labels.len() as u32] {
        b.extend(v.to_be_bytes());
    }
    b.extend_from_slice(labels);
    b
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

fn pixels(n: usize, len: usize, salt: usize) -> Vec<u8> {
    (0..n * len)
        .map(|i| ((i * 13 + salt) % 256) as u8)
        .collect()
}

#[test]
fn idx_round_trips_plain_and_gzipped() -> TestResult {
    let dir = tmpdir("idx");
    let (h, w) = (4, 5);
    let train_px = pixels(3, h * w, 1);
    let test_px = pixels(2, h * w, 2);
    write(
        &dir.join("train-images-idx3-ubyte"),
        &idx_images(3, h, w, &train_px),
    );
    write(
        &dir.join("train-labels-idx1-ubyte"),
        &idx_labels(&[9, 0, 4]),
    );
    write(
        &dir.join("t10k-images-idx3-ubyte.gz"),
        &gzip(&idx_images(2, h, w, &test_px)),
    );
    write(
        &dir.join("t10k-labels-idx1-ubyte.gz"),
        &gzip(&idx_labels(&[1, 8])),
    );
    let tt = load_fashion_mnist(Some(&dir))?;
    let shape = InputShape {
        height: 4,
        width: 5,
        channels: 1,
    };
    assert_eq!(tt.train.shape(), shape);
    assert_eq!(tt.train.images(), &train_px[..]);
    assert_eq!(tt.test.images(), &test_px[..]);
    assert_eq!(tt.train.labels(), &[9, 0, 4]);
    assert_eq!(tt.test.labels(), &[1, 8]);
    assert_eq!(tt.train.class_names()[9], "Ankle boot");
    assert_eq!(
        tt.train.class_names(),
        FASHION_MNIST_CLASSES.map(String::from)
    );
    let mnist = load_mnist(&dir)?;
    assert_eq!(mnist.test.class_names()[8], "8");
    assert_eq!(mnist.test.images(), &test_px[..]);
    Ok(())
}

#[test]
fn idx_bad_magic_is_reported_at_offset_zero() {
    let dir = tmpdir("idx-magic");
    let img = dir.join("img");
    let lab = dir.join("lab");
    // A label file where an image file is expected.
    write(&img, &idx_labels(&[1, 2]));
    write(&lab, &idx_labels(&[1, 2]));
    let err = load_idx_pair(&img, &lab, 10, vec![]).unwrap_err();
    let msg = err.to_string();
    let (path, offset, reason) = data_error(err);
    assert!(path.ends_with("img"));
    assert_eq!(offset, Some(0));
    assert!(
        reason.contains("magic") && reason.contains("2049"),
        "{reason}"
    );
    assert!(msg.contains("2051"), "{msg}");
    // And gzipped.
    write(&img, &gzip(&idx_images(2, 2, 2, &[0; 8])));
    write(&lab, &gzip(&idx_images(2, 2, 2, &[0; 8])));
    let (path, offset, _) = data_error(load_idx_pair(&img, &lab, 10, vec![]).unwrap_err());
    assert!(path.ends_with("lab"));
    assert_eq!(offset, Some(0));
}

#[test]
fn idx_truncated_files_are_reported() {
    let dir = tmpdir("idx-trunc");
    let img = dir.join("img");
    let lab = dir.join("lab");
    write(&lab, &idx_labels(&[1, 2, 3]));
    let mut bytes = idx_images(3, 4, 4, &pixels(3, 16, 0));
    bytes.truncate(16 + 40);
    write(&img, &bytes);
    let (path, offset, reason) = data_error(load_idx_pair(&img, &lab, 10, vec![]).unwrap_err());
    assert!(path.ends_with("img"));
    assert_eq!(offset, Some(56));
    assert!(
        reason.contains("truncated") && reason.contains("48"),
        "{reason}"
    );

    // A truncated gzip stream.
    let gz = gzip(&idx_images(3, 4, 4, &pixels(3, 16, 0)));
    write(&img, &gz[..gz.len() - 12]);
    let (path, _, reason) = data_error(load_idx_pair(&img, &lab, 10, vec![]).unwrap_err());
    assert!(path.ends_with("img"));
    assert!(reason.contains("gzip"), "{reason}");

    // A header cut short.
    write(&img, &idx_images(3, 4, 4, &[])[..10]);
    let (_, offset, reason) = data_error(load_idx_pair(&img, &lab, 10, vec![]).unwrap_err());
    assert_eq!(offset, Some(10));
    assert!(reason.contains("header"), "{reason}");

    // Trailing bytes.
    let mut bytes = idx_labels(&[1, 2, 3]);
    bytes.push(0);
    write(&lab, &bytes);
    write(&img, &idx_images(3, 4, 4, &pixels(3, 16, 0)));
    let (path, offset, _) = data_error(load_idx_pair(&img, &lab, 10, vec![]).unwrap_err());
    assert!(path.ends_with("lab"));
    assert_eq!(offset, Some(11));
}

#[test]
fn idx_mismatched_counts_and_bad_labels_are_reported() {
    let dir = tmpdir("idx-count");
    let img = dir.join("img.gz");
    let lab = dir.join("lab.gz");
    write(&img, &gzip(&idx_images(3, 2, 2, &pixels(3, 4, 0))));
    write(&lab, &gzip(&idx_labels(&[1, 2])));
    let msg = load_idx_pair(&img, &lab, 10, vec![])
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("lab.gz") && msg.contains("2 labels") && msg.contains("3 images"),
        "{msg}"
    );

    write(&lab, &idx_labels(&[1, 2, 12]));
    let (path, offset, reason) = data_error(load_idx_pair(&img, &lab, 10, vec![]).unwrap_err());
    assert!(path.ends_with("lab.gz"));
    assert_eq!(offset, Some(10));
    assert!(reason.contains("label 12"), "{reason}");

    let missing = load_fashion_mnist(Some(&dir)).unwrap_err().to_string();
    assert!(
        missing.contains("train-images-idx3-ubyte") && missing.contains("dataset-fashion-mnist"),
        "{missing}"
    );
}

#[test]
fn debian_fashion_mnist_loads_when_installed() -> TestResult {
    let dir = Path::new(FASHION_MNIST_DEFAULT_DIR);
    if !dir.join("train-images-idx3-ubyte.gz").exists() {
        println!(
            "note: {FASHION_MNIST_DEFAULT_DIR} absent (apt-get install -y dataset-fashion-mnist); skipped"
        );
        return Ok(());
    }
    let tt = DatasetKind::FashionMnist.load(None)?;
    assert_eq!(tt.train.len(), 60_000);
    assert_eq!(tt.test.len(), 10_000);
    assert_eq!(tt.train.shape(), InputShape::MNIST);
    assert!(tt.train.labels().iter().all(|&l| l < 10));
    assert!(tt.test.labels().iter().all(|&l| l < 10));
    // Balanced classes: 6000 / 1000 each.
    assert!(tt.train.class_counts().iter().all(|&c| c == 6000));
    assert!(tt.test.class_counts().iter().all(|&c| c == 1000));
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Image folders

fn save(img: &image::RgbImage, path: &Path) {
    img.save(path).unwrap();
}

#[test]
fn image_folder_loads_sorted_classes_and_resizes() -> TestResult {
    let root = tmpdir("folder");
    for class in ["dog", "cat"] {
        std::fs::create_dir(root.join(class))?;
    }
    // cat: a solid PNG 10x6 and a gradient 8x4 PNG; dog: a solid JPEG; plus an ignored file.
    save(
        &image::RgbImage::from_pixel(10, 6, image::Rgb([10, 200, 30])),
        &root.join("cat/b.png"),
    );
    let gradient = image::RgbImage::from_fn(8, 4, |x, y| image::Rgb([x as u8 * 30, y as u8, 7]));
    save(&gradient, &root.join("cat/a.PNG"));
    save(
        &image::RgbImage::from_pixel(5, 5, image::Rgb([128, 64, 32])),
        &root.join("dog/x.jpg"),
    );
    write(&root.join("dog/notes.txt"), b"not an image");

    let data = load_image_folder(&root, FolderOptions::new(4, 4))?;
    assert_eq!(data.class_names(), &["cat".to_string(), "dog".to_string()]);
    assert_eq!(data.labels(), &[0, 0, 1]);
    assert_eq!(
        data.shape(),
        InputShape {
            height: 4,
            width: 4,
            channels: 3
        }
    );
    // a.PNG (8x4): the shorter side already fits, so columns 2..6 are cropped unchanged.
    let a = data.image(0);
    for y in 0..4 {
        for x in 0..4 {
            let px = &a[(y * 4 + x) * 3..(y * 4 + x + 1) * 3];
            assert_eq!(px, &[(x as u8 + 2) * 30, y as u8, 7], "({y}, {x})");
        }
    }
    // A solid image stays solid through resizing.
    assert!(data.image(1).chunks(3).all(|p| p == [10, 200, 30]));
    // JPEG is lossy: close to the colour.
    assert!(data.image(2).chunks(3).all(|p| {
        p.iter()
            .zip([128u8, 64, 32])
            .all(|(&a, b)| a.abs_diff(b) <= 6)
    }));

    let stretched = load_image_folder(
        &root,
        FolderOptions {
            height: 2,
            width: 3,
            resize: Resize::Stretch,
        },
    )?;
    assert_eq!(stretched.image(0).len(), 2 * 3 * 3);
    // Stretching keeps the left edge dark and the right edge bright.
    let s = stretched.image(0);
    assert!(s[0] < 60 && s[2 * 3] > 150, "{s:?}");
    Ok(())
}

#[test]
fn image_folder_reports_unreadable_images() {
    let root = tmpdir("folder-bad");
    std::fs::create_dir(root.join("a")).unwrap();
    save(
        &image::RgbImage::from_pixel(3, 3, image::Rgb([1, 2, 3])),
        &root.join("a/good.png"),
    );
    write(&root.join("a/broken.png"), b"\x89PNG\r\n\x1a\n garbage");
    let (path, _, reason) =
        data_error(load_image_folder(&root, FolderOptions::new(3, 3)).unwrap_err());
    assert!(path.ends_with("broken.png"), "{path}");
    assert!(
        reason.contains("decode") || reason.contains("read"),
        "{reason}"
    );

    let empty = tmpdir("folder-empty");
    let msg = load_image_folder(&empty, FolderOptions::new(3, 3))
        .unwrap_err()
        .to_string();
    assert!(msg.contains("class subfolders"), "{msg}");
}

// ---------------------------------------------------------------------------------------------
// Augmentation

fn shape(h: usize, w: usize, c: usize) -> InputShape {
    InputShape {
        height: h,
        width: w,
        channels: c,
    }
}

#[test]
fn crop_and_flip_keep_shape_and_flip_is_its_own_inverse() {
    let s = shape(5, 6, 3);
    let src: Vec<u8> = (0..5 * 6 * 3).map(|i| (i * 7 % 251) as u8 + 1).collect();
    let mut once = vec![0u8; src.len()];
    let mut twice = vec![0u8; src.len()];
    let flip = Transform {
        mirror: true,
        ..Transform::identity(4)
    };
    flip.apply(&src, s, 4, &mut once);
    assert_ne!(once, src);
    // Row 0, column 0 of the flip is row 0, column 5 of the source.
    assert_eq!(&once[..3], &src[5 * 3..6 * 3]);
    flip.apply(&once, s, 4, &mut twice);
    assert_eq!(twice, src);

    let mut same = vec![0u8; src.len()];
    Transform::identity(4).apply(&src, s, 4, &mut same);
    assert_eq!(same, src);

    // Every augmentation the sampler draws keeps the shape and stays inside the padding.
    let mut rng = aqe_candle::SeededRng::new(3);
    for _ in 0..200 {
        let t = Augment::CIFAR.sample(&mut rng);
        assert!(t.offset_x <= 8 && t.offset_y <= 8);
        let mut out = vec![0u8; src.len()];
        t.apply(&src, s, 4, &mut out);
        assert_eq!(out.len(), src.len());
    }
}

#[test]
fn padding_is_zero_before_normalisation() {
    let s = shape(6, 6, 2);
    let src = vec![200u8; 6 * 6 * 2];
    let mut out = vec![9u8; src.len()];
    // Window at the top-left corner of the 4-padded image: 4 rows and 4 columns of padding.
    Transform {
        offset_y: 0,
        offset_x: 0,
        mirror: false,
    }
    .apply(&src, s, 4, &mut out);
    for y in 0..6 {
        for x in 0..6 {
            let expect = if y < 4 || x < 4 { 0 } else { 200 };
            assert_eq!(
                &out[(y * 6 + x) * 2..(y * 6 + x + 1) * 2],
                &[expect, expect]
            );
        }
    }
    // Normalised, the padding becomes -mean/std.
    let n = Normalize::new(vec![0.5, 0.25], vec![0.5, 0.25]);
    let mut f = vec![0f32; out.len()];
    n.apply(&out, &mut f);
    assert_eq!(&f[..2], &[-1.0, -1.0]);
    let last = &f[f.len() - 2..];
    assert!((last[0] - (200.0 / 255.0 - 0.5) / 0.5).abs() < 1e-6);
}

fn small_dataset(n: usize) -> Dataset {
    // 3x3x2 images; image i's first two bytes encode i, so batches can be traced back.
    let s = shape(3, 3, 2);
    let mut images = Vec::new();
    for i in 0..n {
        let mut img: Vec<u8> = (0..18)
            .map(|j| ((i * 31 + j * 17) % 200) as u8 + 20)
            .collect();
        img[0] = (i % 256) as u8;
        img[1] = (i / 256) as u8;
        images.extend(img);
    }
    let labels = (0..n).map(|i| (i % 5) as u32).collect();
    Dataset::new(images, labels, s, 5, vec![]).unwrap()
}

#[test]
fn normalisation_from_the_training_set_centres_and_scales() -> TestResult {
    let data = small_dataset(40);
    let norm = Normalize::from_dataset(&data);
    let cfg = BatchConfig {
        normalize: Some(norm),
        order: Order::Sequential,
        ..BatchConfig::new(40, 0)
    };
    let b = Batcher::new(data, cfg, Device::Cpu)?.batch(0, 0)?;
    let x = b.images.reshape(((), 2))?;
    let mean = x.mean(0)?.to_vec1::<f32>()?;
    let var = x.sqr()?.mean(0)?.to_vec1::<f32>()?;
    for c in 0..2 {
        assert!(mean[c].abs() < 1e-4, "{mean:?}");
        assert!((var[c] - 1.0).abs() < 1e-3, "{var:?}");
    }
    assert_eq!(Normalize::cifar10().channels(), 3);
    assert_eq!(DatasetKind::Cifar100.normalize(), Normalize::cifar100());
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Dataset and split

#[test]
fn split_is_sized_disjoint_and_deterministic() -> TestResult {
    let data = small_dataset(500);
    let (train, val) = data.split_validation(50, 7)?;
    assert_eq!((train.len(), val.len()), (450, 50));
    let ids = |d: &Dataset| -> Vec<usize> {
        (0..d.len())
            .map(|i| d.image(i)[0] as usize + 256 * d.image(i)[1] as usize)
            .collect()
    };
    let (t, v) = (ids(&train), ids(&val));
    let mut all: Vec<usize> = t.iter().chain(&v).copied().collect();
    all.sort_unstable();
    assert_eq!(all, (0..500).collect::<Vec<_>>());
    // Labels follow their images.
    assert!(
        t.iter()
            .enumerate()
            .all(|(k, &i)| train.label(k) == (i % 5) as u32)
    );
    let (train2, val2) = data.split_validation(50, 7)?;
    assert_eq!((&train2, &val2), (&train, &val));
    let (_, val3) = data.split_validation(50, 8)?;
    assert_ne!(val3, val);
    // The validation images are a spread, not the first or last 50.
    assert!(v.iter().any(|&i| i < 250) && v.iter().any(|&i| i >= 250));
    assert!(data.split_validation(501, 7).is_err());
    Ok(())
}

#[test]
fn dataset_checks_its_parts_and_subsets() -> TestResult {
    let s = shape(2, 2, 1);
    assert!(Dataset::new(vec![0; 7], vec![0, 1], s, 2, vec![]).is_err());
    assert!(Dataset::new(vec![0; 8], vec![0, 2], s, 2, vec![]).is_err());
    assert!(Dataset::new(vec![0; 8], vec![0, 1], s, 2, vec!["a".into()]).is_err());
    let d = Dataset::new((0..12).collect(), vec![0, 1, 1], s, 2, vec![])?;
    assert_eq!(d.class_names(), &["0".to_string(), "1".to_string()]);
    let sub = d.subset(&[2, 0])?;
    assert_eq!(sub.images(), &[8, 9, 10, 11, 0, 1, 2, 3]);
    assert_eq!(sub.labels(), &[1, 0]);
    assert!(d.subset(&[3]).is_err());
    assert_eq!(d.take(2).labels(), &[0, 1]);
    assert_eq!(d.take(10).len(), 3);
    assert_eq!(d.class_counts(), vec![1, 2]);
    assert_eq!(
        "Fashion-MNIST".parse::<DatasetKind>()?,
        DatasetKind::FashionMnist
    );
    let bad = "svhn".parse::<DatasetKind>().unwrap_err().to_string();
    assert!(
        bad.contains("cifar10") && bad.contains("fashion-mnist"),
        "{bad}"
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Batching

fn flat(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1().unwrap()
}

/// Every batch of epochs `epochs`, as (images, labels) vectors.
fn run(batcher: &Batcher, epochs: std::ops::Range<u64>) -> Vec<(Vec<f32>, Vec<u32>)> {
    let mut out = Vec::new();
    for e in epochs {
        for b in batcher.epoch(e) {
            let b = b.unwrap();
            out.push((flat(&b.images), b.labels.to_vec1().unwrap()));
        }
    }
    out
}

fn train_config(batch: usize, seed: u64) -> BatchConfig {
    BatchConfig {
        augment: Augment::PadCropFlip { pad: 1 },
        ..BatchConfig::new(batch, seed)
    }
}

#[test]
fn batches_have_the_right_shapes_and_cover_the_epoch() -> TestResult {
    let data = small_dataset(10);
    let batcher = Batcher::new(data.clone(), BatchConfig::new(4, 1), Device::Cpu)?;
    assert_eq!(batcher.batches_per_epoch(), 3);
    let batches: Vec<_> = batcher.epoch(0).collect::<Result<_, _>>()?;
    let dims: Vec<_> = batches.iter().map(|b| b.images.dims().to_vec()).collect();
    assert_eq!(
        dims,
        vec![vec![4, 3, 3, 2], vec![4, 3, 3, 2], vec![2, 3, 3, 2]]
    );
    assert_eq!(batches[2].labels.dims(), &[2]);
    assert_eq!(batches[2].labels.dtype(), candle_core::DType::U32);
    assert_eq!(batches[1].index, 1);
    // Unaugmented images are exactly pixel / 255, and every image appears once.
    let mut seen = Vec::new();
    for b in &batches {
        let x = flat(&b.images);
        for img in x.chunks(18) {
            let id = (img[0] * 255.0).round() as usize + 256 * (img[1] * 255.0).round() as usize;
            let expect: Vec<f32> = data
                .image(id)
                .iter()
                .map(|&p| f32::from(p) / 255.0)
                .collect();
            assert_eq!(img, &expect[..]);
            seen.push(id);
        }
    }
    seen.sort_unstable();
    assert_eq!(seen, (0..10).collect::<Vec<_>>());

    let drop = BatchConfig {
        last: LastBatch::Drop,
        ..BatchConfig::new(4, 1)
    };
    let batcher = Batcher::new(data.clone(), drop, Device::Cpu)?;
    assert_eq!(batcher.batches_per_epoch(), 2);
    assert_eq!(batcher.epoch(3).count(), 2);

    let eval = Batcher::new(data.clone(), BatchConfig::eval(3, None), Device::Cpu)?;
    let labels: Vec<u32> = eval
        .epoch(5)
        .flat_map(|b| b.unwrap().labels.to_vec1::<u32>().unwrap())
        .collect();
    assert_eq!(labels, data.labels());
    assert!(Batcher::new(data.clone(), BatchConfig::new(0, 1), Device::Cpu).is_err());
    let wrong = BatchConfig {
        normalize: Some(Normalize::cifar10()),
        ..BatchConfig::new(2, 1)
    };
    assert!(Batcher::new(data, wrong, Device::Cpu).is_err());
    Ok(())
}

#[test]
fn batch_order_depends_only_on_seed_and_epoch() -> TestResult {
    let data = small_dataset(64);
    let a = Batcher::new(data.clone(), train_config(8, 11), Device::Cpu)?;
    let b = Batcher::new(data.clone(), train_config(8, 11), Device::Cpu)?;
    assert_eq!(a.order(3), b.order(3));
    assert_eq!(run(&a, 3..4), run(&b, 3..4));
    assert_ne!(a.order(3), a.order(4));
    assert_ne!(run(&a, 3..4), run(&a, 4..5));
    let other_seed = Batcher::new(data.clone(), train_config(8, 12), Device::Cpu)?;
    assert_ne!(a.order(3), other_seed.order(3));
    let mut order = a.order(4);
    order.sort_unstable();
    assert_eq!(order, (0..64).collect::<Vec<_>>());

    // Augmentation changes some images; without it the same order gives other pixels.
    let plain = Batcher::new(data, BatchConfig::new(8, 11), Device::Cpu)?;
    let (aug, raw) = (run(&a, 0..1), run(&plain, 0..1));
    assert_eq!(
        aug.iter().map(|b| &b.1).collect::<Vec<_>>(),
        raw.iter().map(|b| &b.1).collect::<Vec<_>>()
    );
    assert_ne!(aug, raw);
    Ok(())
}

#[test]
fn a_restarted_run_sees_the_same_batches() -> TestResult {
    let data = small_dataset(50);
    let full = run(
        &Batcher::new(data.clone(), train_config(8, 5), Device::Cpu)?,
        0..4,
    );
    assert_eq!(full.len(), 4 * 7);
    // A new batcher (as after a restart) starting at epoch 2.
    let resumed = Batcher::new(data.clone(), train_config(8, 5), Device::Cpu)?;
    assert_eq!(run(&resumed, 2..4), full[14..]);
    // Resuming inside an epoch, and random access, give the same batches.
    let tail: Vec<_> = resumed
        .epoch_from(1, 3)
        .map(|b| flat(&b.unwrap().images))
        .collect();
    let expect: Vec<_> = full[10..14].iter().map(|b| b.0.clone()).collect();
    assert_eq!(tail, expect);
    assert_eq!(flat(&resumed.batch(3, 6)?.images), full[27].0);
    assert!(resumed.batch(3, 7).is_err());

    // Threading does not matter: inline preparation on a one-thread pool gives the same.
    let inline = BatchConfig {
        prefetch: 0,
        ..train_config(8, 5)
    };
    let inline = Batcher::new(data, inline, Device::Cpu)?;
    let pool = rayon::ThreadPoolBuilder::new().num_threads(1).build()?;
    assert_eq!(pool.install(|| run(&inline, 0..4)), full);
    Ok(())
}

#[test]
fn dropping_an_epoch_early_stops_its_thread() -> TestResult {
    let data = small_dataset(100);
    let batcher = Batcher::new(data, train_config(2, 0), Device::Cpu)?;
    let mut it = batcher.epoch(0);
    assert_eq!(it.size_hint(), (50, Some(50)));
    let first = it.next().unwrap()?;
    assert_eq!(it.size_hint(), (49, Some(49)));
    drop(it);
    assert_eq!(flat(&first.images), flat(&batcher.batch(0, 0)?.images));
    Ok(())
}
