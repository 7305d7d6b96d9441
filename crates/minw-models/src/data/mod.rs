//! The data pipeline: in-memory datasets, loaders for CIFAR-10/100 (binary), (Fashion-)MNIST
//! (idx, gzipped or not) and ImageNet-style folders, augmentation and a background batcher.
//!
//! Images are stored as `u8` pixels, HWC per image, and become NHWC `f32` tensors only in
//! [`Batcher`], which normalises, augments and shuffles deterministically from `(seed, epoch)`.
//!
//! ```
//! use candle_core::Device;
//! use minw_models::InputShape;
//! use minw_models::data::{Augment, BatchConfig, Batcher, Dataset, Normalize};
//!
//! // Eight 2x2 grey images with labels 0..8 % 2.
//! let images: Vec<u8> = (0..8 * 4).map(|i| i as u8).collect();
//! let labels: Vec<u32> = (0..8).map(|i| i % 2).collect();
//! let shape = InputShape { height: 2, width: 2, channels: 1 };
//! let data = Dataset::new(images, labels, shape, 2, vec!["even".into(), "odd".into()])?;
//! let (train, val) = data.split_validation(2, 42)?;
//! assert_eq!((train.len(), val.len()), (6, 2));
//!
//! let config = BatchConfig {
//!     normalize: Some(Normalize::from_dataset(&train)),
//!     augment: Augment::PadCropFlip { pad: 1 },
//!     ..BatchConfig::new(4, 7)
//! };
//! let batcher = Batcher::new(train, config, Device::Cpu)?;
//! let batches: Vec<_> = batcher.epoch(0).collect::<Result<_, _>>()?;
//! assert_eq!(batches.len(), 2);
//! assert_eq!(batches[0].images.dims(), &[4, 2, 2, 1]);
//! assert_eq!(batches[1].labels.dims(), &[2]);
//! # Ok::<(), minw_models::Error>(())
//! ```

mod augment;
mod batcher;
mod cifar;
mod dataset;
mod folder;
mod idx;

use std::fmt;
use std::path::Path;
use std::str::FromStr;

pub use augment::{Augment, Normalize, Transform};
pub use batcher::{Batch, BatchConfig, Batcher, EpochIter, LastBatch, Order};
pub use cifar::{
    CIFAR10_CLASSES, CIFAR100_CLASSES, CifarVariant, load_cifar, parse_cifar_records,
    resolve_cifar_dir,
};
pub use dataset::Dataset;
pub use folder::{FolderOptions, Resize, load_image_folder};
pub use idx::{
    FASHION_MNIST_CLASSES, FASHION_MNIST_DEFAULT_DIR, load_fashion_mnist, load_idx_pair,
    load_mnist, read_idx_images, read_idx_labels,
};

use crate::{Error, Result};

/// A training set and a test set.
#[derive(Debug, Clone)]
pub struct TrainTest {
    /// The training set (the paper splits a validation set off it with
    /// [`Dataset::split_validation`]).
    pub train: Dataset,
    /// The test set.
    pub test: Dataset,
}

/// The datasets with a built-in loader, by their command-line names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DatasetKind {
    /// CIFAR-10, binary version (`cifar10`).
    Cifar10,
    /// CIFAR-100, binary version, fine labels (`cifar100`).
    Cifar100,
    /// Fashion-MNIST, idx files (`fashion-mnist`).
    FashionMnist,
    /// MNIST digits, idx files (`mnist`).
    Mnist,
}

const DATASET_NAMES: &str = "cifar10, cifar100, fashion-mnist, mnist";

impl DatasetKind {
    /// The command-line name.
    pub fn name(self) -> &'static str {
        match self {
            DatasetKind::Cifar10 => "cifar10",
            DatasetKind::Cifar100 => "cifar100",
            DatasetKind::FashionMnist => "fashion-mnist",
            DatasetKind::Mnist => "mnist",
        }
    }

    /// The shape of its images.
    pub fn shape(self) -> crate::InputShape {
        match self {
            DatasetKind::Cifar10 | DatasetKind::Cifar100 => crate::InputShape::CIFAR,
            DatasetKind::FashionMnist | DatasetKind::Mnist => crate::InputShape::MNIST,
        }
    }

    /// The number of classes.
    pub fn classes(self) -> usize {
        match self {
            DatasetKind::Cifar100 => 100,
            _ => 10,
        }
    }

    /// The usual normalisation constants for this dataset.
    pub fn normalize(self) -> Normalize {
        match self {
            DatasetKind::Cifar10 => Normalize::cifar10(),
            DatasetKind::Cifar100 => Normalize::cifar100(),
            DatasetKind::FashionMnist => Normalize::fashion_mnist(),
            DatasetKind::Mnist => Normalize::mnist(),
        }
    }

    /// The usual training augmentation: pad-4 random crop and horizontal flip for CIFAR, none
    /// for the MNISTs (digits are not mirror-symmetric).
    pub fn train_augment(self) -> Augment {
        match self {
            DatasetKind::Cifar10 | DatasetKind::Cifar100 => Augment::CIFAR,
            DatasetKind::FashionMnist | DatasetKind::Mnist => Augment::None,
        }
    }

    /// Loads the training and test sets from `dir` (see [`load_cifar`],
    /// [`load_fashion_mnist`]); `None` means the default directory where there is one
    /// ([`FASHION_MNIST_DEFAULT_DIR`]).
    pub fn load(self, dir: Option<&Path>) -> Result<TrainTest> {
        let need_dir = || Error::Data {
            path: "<none>".into(),
            offset: None,
            reason: format!(
                "{} has no default directory; pass one (fetch it with `cargo xtask fetch-data {}`)",
                self.name(),
                self.name()
            ),
        };
        match self {
            DatasetKind::Cifar10 => load_cifar(dir.ok_or_else(need_dir)?, CifarVariant::Cifar10),
            DatasetKind::Cifar100 => load_cifar(dir.ok_or_else(need_dir)?, CifarVariant::Cifar100),
            DatasetKind::FashionMnist => load_fashion_mnist(dir),
            DatasetKind::Mnist => load_mnist(dir.ok_or_else(need_dir)?),
        }
    }
}

impl FromStr for DatasetKind {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().replace('_', "-").as_str() {
            "cifar10" | "cifar-10" => Ok(DatasetKind::Cifar10),
            "cifar100" | "cifar-100" => Ok(DatasetKind::Cifar100),
            "fashion-mnist" | "fashionmnist" => Ok(DatasetKind::FashionMnist),
            "mnist" => Ok(DatasetKind::Mnist),
            _ => Err(Error::Config {
                what: format!("dataset `{s}`"),
                reason: format!("unknown dataset; valid datasets are: {DATASET_NAMES}"),
            }),
        }
    }
}

impl fmt::Display for DatasetKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A [`Error::Data`] about `path`.
pub(crate) fn data_err(path: &Path, offset: Option<u64>, reason: impl Into<String>) -> Error {
    Error::Data {
        path: path.display().to_string(),
        offset,
        reason: reason.into(),
    }
}

/// Reads a whole file, naming it in the error.
pub(crate) fn read_file(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| data_err(path, None, format!("cannot read: {e}")))
}

/// Reads class names, one a line (blank lines ignored), expecting `classes` of them.
pub(crate) fn read_class_names(path: &Path, classes: usize) -> Result<Vec<String>> {
    let bytes = read_file(path)?;
    let text = String::from_utf8_lossy(&bytes);
    let names: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect();
    if names.len() != classes {
        return Err(data_err(
            path,
            None,
            format!(
                "expected {classes} class names, one a line, found {}",
                names.len()
            ),
        ));
    }
    Ok(names)
}
