//! CIFAR-10 and CIFAR-100 in the official binary layout.
//!
//! CIFAR-10 (`cifar-10-batches-bin/`): `data_batch_1.bin` .. `data_batch_5.bin` and
//! `test_batch.bin`, records of 1 label byte and 3072 pixel bytes; `batches.meta.txt` names the
//! classes. CIFAR-100 (`cifar-100-binary/`): `train.bin` and `test.bin`, records of 1 coarse
//! label byte, 1 fine label byte and 3072 pixel bytes (the fine label, 100 classes, is used);
//! `fine_label_names.txt` names the classes. The pixels of a record are three 32x32 planes
//! R, G, B (CHW), converted here to HWC.

use std::path::{Path, PathBuf};

use super::{Dataset, TrainTest, data_err, read_class_names, read_file};
use crate::{InputShape, Result};

const PIXELS: usize = 32 * 32 * 3;
const PLANE: usize = 32 * 32;

/// CIFAR-10's class names, used when `batches.meta.txt` is absent.
pub const CIFAR10_CLASSES: [&str; 10] = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
];

/// CIFAR-100's fine class names, used when `fine_label_names.txt` is absent.
pub const CIFAR100_CLASSES: [&str; 100] = [
    "apple",
    "aquarium_fish",
    "baby",
    "bear",
    "beaver",
    "bed",
    "bee",
    "beetle",
    "bicycle",
    "bottle",
    "bowl",
    "boy",
    "bridge",
    "bus",
    "butterfly",
    "camel",
    "can",
    "castle",
    "caterpillar",
    "cattle",
    "chair",
    "chimpanzee",
    "clock",
    "cloud",
    "cockroach",
    "couch",
    "crab",
    "crocodile",
    "cup",
    "dinosaur",
    "dolphin",
    "elephant",
    "flatfish",
    "forest",
    "fox",
    "girl",
    "hamster",
    "house",
    "kangaroo",
    "keyboard",
    "lamp",
    "lawn_mower",
    "leopard",
    "lion",
    "lizard",
    "lobster",
    "man",
    "maple_tree",
    "motorcycle",
    "mountain",
    "mouse",
    "mushroom",
    "oak_tree",
    "orange",
    "orchid",
    "otter",
    "palm_tree",
    "pear",
    "pickup_truck",
    "pine_tree",
    "plain",
    "plate",
    "poppy",
    "porcupine",
    "possum",
    "rabbit",
    "raccoon",
    "ray",
    "road",
    "rocket",
    "rose",
    "sea",
    "seal",
    "shark",
    "shrew",
    "skunk",
    "skyscraper",
    "snail",
    "snake",
    "spider",
    "squirrel",
    "streetcar",
    "sunflower",
    "sweet_pepper",
    "table",
    "tank",
    "telephone",
    "television",
    "tiger",
    "tractor",
    "train",
    "trout",
    "tulip",
    "turtle",
    "wardrobe",
    "whale",
    "willow_tree",
    "wolf",
    "woman",
    "worm",
];

/// Which CIFAR.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CifarVariant {
    /// 10 classes, one label byte per record.
    Cifar10,
    /// 100 fine classes (20 coarse), two label bytes per record.
    Cifar100,
}

impl CifarVariant {
    /// Bytes per record.
    pub fn record_len(self) -> usize {
        self.label_bytes() + PIXELS
    }

    fn label_bytes(self) -> usize {
        match self {
            CifarVariant::Cifar10 => 1,
            CifarVariant::Cifar100 => 2,
        }
    }

    /// The number of (fine) classes.
    pub fn classes(self) -> usize {
        match self {
            CifarVariant::Cifar10 => 10,
            CifarVariant::Cifar100 => 100,
        }
    }

    /// The name of the directory the official archive extracts to.
    pub fn dir_name(self) -> &'static str {
        match self {
            CifarVariant::Cifar10 => "cifar-10-batches-bin",
            CifarVariant::Cifar100 => "cifar-100-binary",
        }
    }

    fn train_files(self) -> Vec<&'static str> {
        match self {
            CifarVariant::Cifar10 => vec![
                "data_batch_1.bin",
                "data_batch_2.bin",
                "data_batch_3.bin",
                "data_batch_4.bin",
                "data_batch_5.bin",
            ],
            CifarVariant::Cifar100 => vec!["train.bin"],
        }
    }

    fn test_file(self) -> &'static str {
        match self {
            CifarVariant::Cifar10 => "test_batch.bin",
            CifarVariant::Cifar100 => "test.bin",
        }
    }

    fn names_file(self) -> &'static str {
        match self {
            CifarVariant::Cifar10 => "batches.meta.txt",
            CifarVariant::Cifar100 => "fine_label_names.txt",
        }
    }

    fn fetch_name(self) -> &'static str {
        match self {
            CifarVariant::Cifar10 => "cifar10",
            CifarVariant::Cifar100 => "cifar100",
        }
    }

    fn url(self) -> &'static str {
        match self {
            CifarVariant::Cifar10 => "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz",
            CifarVariant::Cifar100 => "https://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz",
        }
    }

    fn all_files(self) -> Vec<&'static str> {
        let mut files = self.train_files();
        files.push(self.test_file());
        files
    }

    fn fetch_hint(self) -> String {
        format!(
            "run `cargo xtask fetch-data {}` (downloads {})",
            self.fetch_name(),
            self.url()
        )
    }
}

/// The directory holding the CIFAR files: `dir` itself when it has them, else
/// `dir/cifar-10-batches-bin` (or `dir/cifar-100-binary`) when that has them.
pub fn resolve_cifar_dir(dir: &Path, variant: CifarVariant) -> Result<PathBuf> {
    let first = variant.test_file();
    if dir.join(first).is_file() {
        return Ok(dir.to_path_buf());
    }
    let nested = dir.join(variant.dir_name());
    if nested.join(first).is_file() {
        return Ok(nested);
    }
    Err(data_err(
        dir,
        None,
        format!(
            "no {variant:?} files here or in {}/ (expected {}); {}",
            variant.dir_name(),
            variant.all_files().join(", "),
            variant.fetch_hint()
        ),
    ))
}

/// Loads CIFAR-10 or CIFAR-100 from `dir` (the directory with the `.bin` files or its parent,
/// see [`resolve_cifar_dir`]).
pub fn load_cifar(dir: &Path, variant: CifarVariant) -> Result<TrainTest> {
    let dir = resolve_cifar_dir(dir, variant)?;
    for name in variant.all_files() {
        let p = dir.join(name);
        if !p.is_file() {
            return Err(data_err(
                &p,
                None,
                format!(
                    "missing; a {variant:?} directory holds {}; {}",
                    variant.all_files().join(", "),
                    variant.fetch_hint()
                ),
            ));
        }
    }
    let names_path = dir.join(variant.names_file());
    let class_names = if names_path.is_file() {
        read_class_names(&names_path, variant.classes())?
    } else {
        match variant {
            CifarVariant::Cifar10 => CIFAR10_CLASSES.iter().map(|s| s.to_string()).collect(),
            CifarVariant::Cifar100 => CIFAR100_CLASSES.iter().map(|s| s.to_string()).collect(),
        }
    };
    let load = |names: &[&str]| -> Result<Dataset> {
        let mut images = Vec::new();
        let mut labels = Vec::new();
        for name in names {
            let path = dir.join(name);
            let bytes = read_file(&path)?;
            let (im, lb) = parse_cifar_records(&bytes, variant, &path)?;
            images.extend_from_slice(&im);
            labels.extend_from_slice(&lb);
        }
        Dataset::new(
            images,
            labels,
            InputShape::CIFAR,
            variant.classes(),
            class_names.clone(),
        )
    };
    Ok(TrainTest {
        train: load(&variant.train_files())?,
        test: load(&[variant.test_file()])?,
    })
}

/// Parses the records of one CIFAR binary file (`path` only names it in errors). Returns the
/// pixels, HWC per image, and the (fine) labels.
///
/// Errors when the size is not a multiple of the record size or a label is out of range (the
/// error gives the byte offset of the record).
pub fn parse_cifar_records(
    bytes: &[u8],
    variant: CifarVariant,
    path: &Path,
) -> Result<(Vec<u8>, Vec<u32>)> {
    let rec = variant.record_len();
    if bytes.is_empty() || !bytes.len().is_multiple_of(rec) {
        return Err(data_err(
            path,
            Some((bytes.len() / rec * rec) as u64),
            format!(
                "size {} bytes is not a positive multiple of the {rec}-byte {variant:?} record \
                 (truncated or not a {variant:?} file?)",
                bytes.len()
            ),
        ));
    }
    let n = bytes.len() / rec;
    let mut images = vec![0u8; n * PIXELS];
    let mut labels = Vec::with_capacity(n);
    for (i, (record, out)) in bytes
        .chunks_exact(rec)
        .zip(images.chunks_exact_mut(PIXELS))
        .enumerate()
    {
        let offset = (i * rec) as u64;
        let label = match variant {
            CifarVariant::Cifar10 => record[0],
            CifarVariant::Cifar100 => {
                if record[0] >= 20 {
                    return Err(data_err(
                        path,
                        Some(offset),
                        format!("record {i}: coarse label {} out of range 0..20", record[0]),
                    ));
                }
                record[1]
            }
        };
        if usize::from(label) >= variant.classes() {
            return Err(data_err(
                path,
                Some(offset),
                format!(
                    "record {i}: label {label} out of range 0..{}",
                    variant.classes()
                ),
            ));
        }
        labels.push(u32::from(label));
        let planes = &record[variant.label_bytes()..];
        for (p, px) in out.chunks_exact_mut(3).enumerate() {
            px[0] = planes[p];
            px[1] = planes[PLANE + p];
            px[2] = planes[2 * PLANE + p];
        }
    }
    Ok((images, labels))
}
