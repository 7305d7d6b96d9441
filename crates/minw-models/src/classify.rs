//! Classifying image files with a packed model: decode, convert, resize, normalise, top-k.
//!
//! The preprocessing is what the model's file says: images are converted to its channel count
//! (grey for 1, RGB for 3), brought to its input size with a [`Resize`] rule, and normalised
//! with the file's `normalize_mean` / `normalize_std` as `(p / 255 - mean) / std`.
//!
//! ```
//! use minw_models::classify::top_k;
//!
//! let names = ["cat".to_string(), "dog".to_string(), "owl".to_string()];
//! let top = top_k(&[0.0, 2.0, 1.0], &names, 2);
//! assert_eq!(top[0].name, "dog");
//! assert_eq!(top[1].class, 2);
//! assert!((top.iter().map(|p| p.probability).sum::<f32>() - 0.9).abs() < 0.01);
//! ```

use std::path::Path;

use image::DynamicImage;
use image::imageops::FilterType;

use crate::data::{Normalize, Resize};
use crate::packed::PackedModel;
use crate::{Error, Result};

/// One of the top classes of an image.
#[derive(Debug, Clone, PartialEq)]
pub struct Prediction {
    /// Class index (logit position).
    pub class: usize,
    /// Class name from the model file.
    pub name: String,
    /// Softmax probability over all classes.
    pub probability: f32,
}

fn img_err(origin: &str, reason: impl Into<String>) -> Error {
    Error::Data {
        path: origin.to_string(),
        offset: None,
        reason: reason.into(),
    }
}

/// Decodes a PNG or JPEG held in memory; `origin` names it in errors.
///
/// # Errors
/// [`Error::Data`] naming `origin` when the bytes are not a decodable PNG/JPEG.
pub fn decode(bytes: &[u8], origin: &str) -> Result<DynamicImage> {
    image::ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| img_err(origin, format!("cannot read image: {e}")))?
        .decode()
        .map_err(|e| img_err(origin, format!("cannot decode image: {e}")))
}

/// Reads and decodes a PNG or JPEG file.
///
/// # Errors
/// [`Error::Data`] naming the file when it cannot be read or decoded.
pub fn open(path: &Path) -> Result<DynamicImage> {
    let shown = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|e| img_err(&shown, format!("cannot read: {e}")))?;
    decode(&bytes, &shown)
}

/// Converts `img` to `channels` (1: grey, 3: RGB) and resizes it to `height x width` with
/// `resize` (bilinear, as [`crate::data::load_image_folder`] does). Returns HWC `u8` pixels.
///
/// # Errors
/// [`Error::Config`] for a channel count other than 1 or 3 or an empty target size.
pub fn to_pixels(
    img: &DynamicImage,
    [height, width, channels]: [usize; 3],
    resize: Resize,
) -> Result<Vec<u8>> {
    if height == 0 || width == 0 {
        return Err(Error::Config {
            what: "image target size".into(),
            reason: format!("{height}x{width} is empty"),
        });
    }
    let (th, tw) = (height as u32, width as u32);
    let sized = |img: DynamicImage| -> DynamicImage {
        let (w, h) = (img.width(), img.height());
        if (w, h) == (tw, th) {
            return img;
        }
        match resize {
            Resize::Stretch => img.resize_exact(tw, th, FilterType::Triangle),
            Resize::ShorterSideCenterCrop => {
                // Scale so both sides cover the target, then crop the centre.
                let scale = f64::max(f64::from(tw) / f64::from(w), f64::from(th) / f64::from(h));
                let sw = ((f64::from(w) * scale).round() as u32).max(tw);
                let sh = ((f64::from(h) * scale).round() as u32).max(th);
                let scaled = if (sw, sh) == (w, h) {
                    img
                } else {
                    img.resize_exact(sw, sh, FilterType::Triangle)
                };
                scaled.crop_imm((sw - tw) / 2, (sh - th) / 2, tw, th)
            }
        }
    };
    match channels {
        1 => Ok(sized(DynamicImage::ImageLuma8(img.to_luma8()))
            .into_luma8()
            .into_raw()),
        3 => Ok(sized(DynamicImage::ImageRgb8(img.to_rgb8()))
            .into_rgb8()
            .into_raw()),
        c => Err(Error::Config {
            what: "image channels".into(),
            reason: format!("{c} channels; only 1 (grey) and 3 (RGB) are supported"),
        }),
    }
}

/// Normalises HWC `u8` pixels with the mean/std stored in `model`'s file, giving the `f32`
/// input [`PackedModel::logits`] expects.
///
/// # Errors
/// [`Error::Data`] when `pixels` is not one image of the model's input size.
pub fn normalize(model: &PackedModel, pixels: &[u8]) -> Result<Vec<f32>> {
    if pixels.len() != model.image_len() {
        return Err(img_err(
            "classify input",
            format!(
                "{} pixels values, the model expects {:?} = {}",
                pixels.len(),
                model.meta().input_shape,
                model.image_len()
            ),
        ));
    }
    let meta = model.meta();
    let norm = Normalize::new(meta.normalize_mean.clone(), meta.normalize_std.clone());
    let mut out = vec![0f32; pixels.len()];
    norm.apply(pixels, &mut out);
    Ok(out)
}

/// The `k` most probable classes of one image's `logits` (softmax over all of them), most
/// probable first; equal logits keep index order.
///
/// # Panics
/// If `names` is shorter than `logits`.
pub fn top_k(logits: &[f32], names: &[String], k: usize) -> Vec<Prediction> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exp: Vec<f32> = logits.iter().map(|&l| (l - max).exp()).collect();
    let sum: f32 = exp.iter().sum();
    let mut order: Vec<usize> = (0..logits.len()).collect();
    order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]).then(a.cmp(&b)));
    order
        .into_iter()
        .take(k)
        .map(|c| Prediction {
            class: c,
            name: names[c].clone(),
            probability: exp[c] / sum,
        })
        .collect()
}

/// Preprocesses `img` for `model` (channels, size, normalisation) and returns its top `k`
/// classes.
///
/// # Errors
/// As [`to_pixels`], [`normalize`] and [`PackedModel::logits`].
pub fn classify(
    model: &PackedModel,
    img: &DynamicImage,
    resize: Resize,
    k: usize,
) -> Result<Vec<Prediction>> {
    let pixels = to_pixels(img, model.meta().input_shape, resize)?;
    let input = normalize(model, &pixels)?;
    let logits = model.logits(&input, 1)?;
    Ok(top_k(&logits, &model.meta().class_names, k))
}
