//! An in-memory labelled image dataset: `u8` pixels, HWC per image.

use aqe_candle::SeededRng;

use crate::{Error, InputShape, Result};

/// Labelled images held in memory: `u8` pixels, each image HWC (rows of pixels, channels
/// interleaved), images one after another; labels in `0..classes`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dataset {
    images: Vec<u8>,
    labels: Vec<u32>,
    shape: InputShape,
    classes: usize,
    class_names: Vec<String>,
}

impl Dataset {
    /// A dataset from its parts. `images` holds `labels.len()` HWC images of `shape`; every
    /// label is below `classes`; `class_names` is empty (names become `"0"`, `"1"`, ...) or has
    /// one name per class.
    pub fn new(
        images: Vec<u8>,
        labels: Vec<u32>,
        shape: InputShape,
        classes: usize,
        class_names: Vec<String>,
    ) -> Result<Self> {
        let bad = |reason: String| Error::Config {
            what: "dataset".into(),
            reason,
        };
        let per = shape.height * shape.width * shape.channels;
        if per == 0 {
            return Err(bad(format!("empty image shape {shape:?}")));
        }
        if images.len() != labels.len() * per {
            return Err(bad(format!(
                "{} pixel bytes for {} labels of {}x{}x{} images (expected {})",
                images.len(),
                labels.len(),
                shape.height,
                shape.width,
                shape.channels,
                labels.len() * per
            )));
        }
        if let Some((i, &l)) = labels
            .iter()
            .enumerate()
            .find(|&(_, &l)| l as usize >= classes)
        {
            return Err(bad(format!(
                "label {l} of image {i} is not below the {classes} classes"
            )));
        }
        let class_names = if class_names.is_empty() {
            (0..classes).map(|c| c.to_string()).collect()
        } else if class_names.len() == classes {
            class_names
        } else {
            return Err(bad(format!(
                "{} class names for {classes} classes",
                class_names.len()
            )));
        };
        Ok(Dataset {
            images,
            labels,
            shape,
            classes,
            class_names,
        })
    }

    /// The number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether there are no images.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// The shape of every image.
    pub fn shape(&self) -> InputShape {
        self.shape
    }

    /// Bytes per image (`height * width * channels`).
    pub fn image_len(&self) -> usize {
        self.shape.height * self.shape.width * self.shape.channels
    }

    /// The number of classes.
    pub fn classes(&self) -> usize {
        self.classes
    }

    /// One name per class.
    pub fn class_names(&self) -> &[String] {
        &self.class_names
    }

    /// All pixels: image after image, each HWC.
    pub fn images(&self) -> &[u8] {
        &self.images
    }

    /// All labels.
    pub fn labels(&self) -> &[u32] {
        &self.labels
    }

    /// The pixels of image `i` (HWC).
    ///
    /// # Panics
    /// If `i >= len()`.
    pub fn image(&self, i: usize) -> &[u8] {
        let n = self.image_len();
        &self.images[i * n..(i + 1) * n]
    }

    /// The label of image `i`.
    ///
    /// # Panics
    /// If `i >= len()`.
    pub fn label(&self, i: usize) -> u32 {
        self.labels[i]
    }

    /// The images at `indices`, in that order (repeats allowed).
    pub fn subset(&self, indices: &[usize]) -> Result<Dataset> {
        if let Some(&i) = indices.iter().find(|&&i| i >= self.len()) {
            return Err(Error::Config {
                what: "dataset subset".into(),
                reason: format!("index {i} out of range for {} images", self.len()),
            });
        }
        let mut images = Vec::with_capacity(indices.len() * self.image_len());
        for &i in indices {
            images.extend_from_slice(self.image(i));
        }
        Ok(Dataset {
            images,
            labels: indices.iter().map(|&i| self.labels[i]).collect(),
            shape: self.shape,
            classes: self.classes,
            class_names: self.class_names.clone(),
        })
    }

    /// The first `n` images (all of them when there are fewer), for quick runs.
    pub fn take(&self, n: usize) -> Dataset {
        let n = n.min(self.len());
        Dataset {
            images: self.images[..n * self.image_len()].to_vec(),
            labels: self.labels[..n].to_vec(),
            shape: self.shape,
            classes: self.classes,
            class_names: self.class_names.clone(),
        }
    }

    /// Splits off `n_val` images for validation, chosen by a shuffle seeded with `seed` (the
    /// paper's 45k/5k split of CIFAR's 50k training images is `split_validation(5000, seed)`).
    /// Returns `(train, validation)`, disjoint, each in the original order of its images; the
    /// same `seed` always gives the same split.
    pub fn split_validation(&self, n_val: usize, seed: u64) -> Result<(Dataset, Dataset)> {
        if n_val > self.len() {
            return Err(Error::Config {
                what: "validation split".into(),
                reason: format!(
                    "{n_val} validation images requested from {} images",
                    self.len()
                ),
            });
        }
        let mut order: Vec<usize> = (0..self.len()).collect();
        SeededRng::new(seed ^ SPLIT_TAG).shuffle(&mut order);
        let (val, train) = order.split_at_mut(n_val);
        val.sort_unstable();
        train.sort_unstable();
        Ok((self.subset(train)?, self.subset(val)?))
    }

    /// The number of images of each class.
    pub fn class_counts(&self) -> Vec<usize> {
        let mut counts = vec![0; self.classes];
        for &l in &self.labels {
            counts[l as usize] += 1;
        }
        counts
    }
}

/// Separates the split's random stream from other uses of the same seed.
const SPLIT_TAG: u64 = 0x5350_4c49_545f_5641; // "SPLIT_VA"
