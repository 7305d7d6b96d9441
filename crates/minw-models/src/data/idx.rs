//! (Fashion-)MNIST in the idx format, gzipped or not.
//!
//! An idx file is a big-endian header — magic number (`2051` = unsigned bytes, 3 dimensions, for
//! images; `2049` = unsigned bytes, 1 dimension, for labels), then one `u32` per dimension —
//! followed by the data. Gzip is recognised by its magic bytes, whatever the file is called;
//! offsets in errors are then offsets in the decompressed data.

use std::io::Read;
use std::path::{Path, PathBuf};

use super::{Dataset, TrainTest, data_err, read_file};
use crate::{InputShape, Result};

/// Where Debian's `dataset-fashion-mnist` package installs Fashion-MNIST (gzipped idx files).
pub const FASHION_MNIST_DEFAULT_DIR: &str = "/usr/share/datasets/fashion-mnist";

/// Fashion-MNIST's class names.
pub const FASHION_MNIST_CLASSES: [&str; 10] = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
];

const IMAGES_MAGIC: u32 = 2051;
const LABELS_MAGIC: u32 = 2049;

/// Reads a file, decompressing it when it is gzipped. The flag says whether it was.
fn read_maybe_gz(path: &Path) -> Result<(Vec<u8>, bool)> {
    let raw = read_file(path)?;
    if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::MultiGzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .map_err(|e| {
                data_err(
                    path,
                    None,
                    format!(
                        "corrupt or truncated gzip data ({e}) after {} decompressed bytes",
                        out.len()
                    ),
                )
            })?;
        Ok((out, true))
    } else {
        Ok((raw, false))
    }
}

fn be_u32(bytes: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

/// Checks the magic and dimensions of an idx header; returns the dimensions.
fn header(bytes: &[u8], magic: u32, dims: usize, path: &Path, gz: bool) -> Result<Vec<usize>> {
    let what = if gz { " (decompressed)" } else { "" };
    let head = 4 + 4 * dims;
    if bytes.len() < 4 {
        return Err(data_err(
            path,
            Some(0),
            format!("{} bytes{what}: too short for an idx header", bytes.len()),
        ));
    }
    let found = be_u32(bytes, 0);
    if found != magic {
        return Err(data_err(
            path,
            Some(0),
            format!(
                "bad idx magic number {found} (0x{found:08x}); expected {magic} for {}",
                if magic == IMAGES_MAGIC {
                    "images (idx3-ubyte)"
                } else {
                    "labels (idx1-ubyte)"
                }
            ),
        ));
    }
    if bytes.len() < head {
        return Err(data_err(
            path,
            Some(bytes.len() as u64),
            format!(
                "truncated idx header{what}: {} bytes, the header has {head}",
                bytes.len()
            ),
        ));
    }
    Ok((0..dims)
        .map(|d| be_u32(bytes, 4 + 4 * d) as usize)
        .collect())
}

/// Checks that the data after a `head`-byte header is exactly `expected` bytes.
fn check_len(bytes: &[u8], head: usize, expected: usize, path: &Path, gz: bool) -> Result<()> {
    let what = if gz { " (decompressed)" } else { "" };
    let have = bytes.len() - head;
    if have < expected {
        return Err(data_err(
            path,
            Some(bytes.len() as u64),
            format!(
                "truncated{what}: the header promises {expected} data bytes, the file ends after {have}"
            ),
        ));
    }
    if have > expected {
        return Err(data_err(
            path,
            Some((head + expected) as u64),
            format!(
                "{} unexpected bytes{what} after the {expected} data bytes the header promises",
                have - expected
            ),
        ));
    }
    Ok(())
}

/// Reads an idx3-ubyte image file (gzipped or not). Returns the pixels (HW per image, one
/// channel) and the image shape.
pub fn read_idx_images(path: &Path) -> Result<(Vec<u8>, usize, InputShape)> {
    let (bytes, gz) = read_maybe_gz(path)?;
    let dims = header(&bytes, IMAGES_MAGIC, 3, path, gz)?;
    let (n, h, w) = (dims[0], dims[1], dims[2]);
    if h == 0 || w == 0 {
        return Err(data_err(
            path,
            Some(8),
            format!("image dimensions {h}x{w} are empty"),
        ));
    }
    let expected = n
        .checked_mul(h * w)
        .ok_or_else(|| data_err(path, Some(4), format!("absurd image count {n}")))?;
    check_len(&bytes, 16, expected, path, gz)?;
    let shape = InputShape {
        height: h,
        width: w,
        channels: 1,
    };
    Ok((bytes[16..].to_vec(), n, shape))
}

/// Reads an idx1-ubyte label file (gzipped or not), checking every label is below `classes`.
pub fn read_idx_labels(path: &Path, classes: usize) -> Result<Vec<u32>> {
    let (bytes, gz) = read_maybe_gz(path)?;
    let n = header(&bytes, LABELS_MAGIC, 1, path, gz)?[0];
    check_len(&bytes, 8, n, path, gz)?;
    let data = &bytes[8..];
    if let Some((i, &l)) = data
        .iter()
        .enumerate()
        .find(|&(_, &l)| usize::from(l) >= classes)
    {
        return Err(data_err(
            path,
            Some((8 + i) as u64),
            format!(
                "label {l} of item {i} out of range 0..{classes}{}",
                if gz {
                    " (offset in decompressed data)"
                } else {
                    ""
                }
            ),
        ));
    }
    Ok(data.iter().map(|&l| u32::from(l)).collect())
}

/// Loads an idx image file and its label file as one dataset, checking the counts match.
pub fn load_idx_pair(
    images: &Path,
    labels: &Path,
    classes: usize,
    class_names: Vec<String>,
) -> Result<Dataset> {
    let (pixels, n, shape) = read_idx_images(images)?;
    let lab = read_idx_labels(labels, classes)?;
    if lab.len() != n {
        return Err(data_err(
            labels,
            Some(4),
            format!(
                "{} labels but {} has {n} images",
                lab.len(),
                images.display()
            ),
        ));
    }
    Dataset::new(pixels, lab, shape, classes, class_names)
}

/// `dir/stem` or `dir/stem.gz`, whichever exists (the plain file first).
fn find(dir: &Path, stem: &str) -> Result<PathBuf> {
    let plain = dir.join(stem);
    if plain.is_file() {
        return Ok(plain);
    }
    let gz = dir.join(format!("{stem}.gz"));
    if gz.is_file() {
        return Ok(gz);
    }
    Err(data_err(
        &plain,
        None,
        format!(
            "missing (nor {stem}.gz); an idx directory holds train-images-idx3-ubyte, \
             train-labels-idx1-ubyte, t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte (each may \
             be gzipped); on Debian `apt-get install -y dataset-fashion-mnist` installs \
             Fashion-MNIST in {FASHION_MNIST_DEFAULT_DIR}"
        ),
    ))
}

fn load_idx_dir(dir: &Path, class_names: Vec<String>) -> Result<TrainTest> {
    let classes = class_names.len();
    let pair = |prefix: &str| -> Result<Dataset> {
        load_idx_pair(
            &find(dir, &format!("{prefix}-images-idx3-ubyte"))?,
            &find(dir, &format!("{prefix}-labels-idx1-ubyte"))?,
            classes,
            class_names.clone(),
        )
    };
    Ok(TrainTest {
        train: pair("train")?,
        test: pair("t10k")?,
    })
}

/// Loads Fashion-MNIST from `dir` (`None`: [`FASHION_MNIST_DEFAULT_DIR`]), the files named
/// `{train,t10k}-{images-idx3,labels-idx1}-ubyte`, each optionally with `.gz`.
pub fn load_fashion_mnist(dir: Option<&Path>) -> Result<TrainTest> {
    let dir = dir.unwrap_or(Path::new(FASHION_MNIST_DEFAULT_DIR));
    load_idx_dir(
        dir,
        FASHION_MNIST_CLASSES
            .iter()
            .map(|s| s.to_string())
            .collect(),
    )
}

/// Loads MNIST digits from `dir` (same file names as [`load_fashion_mnist`]).
pub fn load_mnist(dir: &Path) -> Result<TrainTest> {
    load_idx_dir(dir, (0..10).map(|d| d.to_string()).collect())
}
