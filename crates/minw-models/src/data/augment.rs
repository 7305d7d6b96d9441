//! Augmentation (zero-padded random crop, horizontal flip) on `u8` HWC images, and per-channel
//! normalisation to `f32`.
//!
//! The order is the usual one (torchvision's `RandomCrop(padding) -> RandomHorizontalFlip ->
//! ToTensor -> Normalize`): crop and flip act on pixels, the padding is pixel value 0, and the
//! normalisation comes last, so padded pixels become `-mean / std`.

use aqe_candle::SeededRng;

use super::Dataset;
use crate::InputShape;

/// Per-channel normalisation: `(pixel / 255 - mean[c]) / std[c]`, computed in `f32` in that
/// order (so with mean 0 and std 1 the values are exactly `pixel / 255`).
#[derive(Debug, Clone, PartialEq)]
pub struct Normalize {
    /// Per-channel mean, in units of `pixel / 255`.
    pub mean: Vec<f32>,
    /// Per-channel standard deviation, in units of `pixel / 255`.
    pub std: Vec<f32>,
}

impl Normalize {
    /// From per-channel means and standard deviations (in units of `pixel / 255`).
    ///
    /// # Panics
    /// If the lengths differ or a standard deviation is not positive.
    pub fn new(mean: Vec<f32>, std: Vec<f32>) -> Self {
        assert_eq!(mean.len(), std.len(), "one mean and one std per channel");
        assert!(
            std.iter().all(|&s| s > 0.0),
            "standard deviations must be positive"
        );
        Normalize { mean, std }
    }

    /// Only the scaling to `[0, 1]`: mean 0, std 1 on every channel.
    pub fn identity(channels: usize) -> Self {
        Normalize {
            mean: vec![0.0; channels],
            std: vec![1.0; channels],
        }
    }

    /// CIFAR-10's training-set statistics (mean 0.4914, 0.4822, 0.4465; std 0.2470, 0.2435,
    /// 0.2616).
    pub fn cifar10() -> Self {
        Normalize {
            mean: vec![0.4914, 0.4822, 0.4465],
            std: vec![0.2470, 0.2435, 0.2616],
        }
    }

    /// CIFAR-100's training-set statistics (mean 0.5071, 0.4865, 0.4409; std 0.2673, 0.2564,
    /// 0.2762).
    pub fn cifar100() -> Self {
        Normalize {
            mean: vec![0.5071, 0.4865, 0.4409],
            std: vec![0.2673, 0.2564, 0.2762],
        }
    }

    /// Fashion-MNIST's training-set statistics (mean 0.2860, std 0.3530).
    pub fn fashion_mnist() -> Self {
        Normalize {
            mean: vec![0.2860],
            std: vec![0.3530],
        }
    }

    /// MNIST's training-set statistics (mean 0.1307, std 0.3081).
    pub fn mnist() -> Self {
        Normalize {
            mean: vec![0.1307],
            std: vec![0.3081],
        }
    }

    /// The per-channel mean and (population) standard deviation of `data`'s pixels. A
    /// constant channel gets std 1.
    pub fn from_dataset(data: &Dataset) -> Self {
        let c = data.shape().channels;
        let mut sum = vec![0f64; c];
        let mut sq = vec![0f64; c];
        for px in data.images().chunks_exact(c) {
            for ch in 0..c {
                let v = f64::from(px[ch]) / 255.0;
                sum[ch] += v;
                sq[ch] += v * v;
            }
        }
        let n = (data.images().len() / c).max(1) as f64;
        let mean: Vec<f64> = sum.iter().map(|s| s / n).collect();
        let std = sq
            .iter()
            .zip(&mean)
            .map(|(s, m)| {
                let sd = (s / n - m * m).max(0.0).sqrt();
                if sd > 1e-12 { sd as f32 } else { 1.0 }
            })
            .collect();
        Normalize {
            mean: mean.into_iter().map(|m| m as f32).collect(),
            std,
        }
    }

    /// The number of channels.
    pub fn channels(&self) -> usize {
        self.mean.len()
    }

    /// Normalises HWC `u8` pixels into `dst` (same length).
    ///
    /// # Panics
    /// If the lengths differ or are not a multiple of the channel count.
    pub fn apply(&self, pixels: &[u8], dst: &mut [f32]) {
        self.table().apply(pixels, dst);
    }

    /// The per-channel lookup table `(p / 255 - mean) / std` for `p` in `0..256`.
    pub(crate) fn table(&self) -> NormTable {
        NormTable(
            (0..self.channels())
                .map(|ch| {
                    std::array::from_fn(|p| (p as f32 / 255.0 - self.mean[ch]) / self.std[ch])
                })
                .collect(),
        )
    }
}

/// [`Normalize`] as one 256-entry table per channel.
#[derive(Debug, Clone)]
pub(crate) struct NormTable(Vec<[f32; 256]>);

impl NormTable {
    pub(crate) fn apply(&self, pixels: &[u8], dst: &mut [f32]) {
        let c = self.0.len();
        assert_eq!(pixels.len(), dst.len(), "pixel and output lengths differ");
        assert_eq!(pixels.len() % c, 0, "not a whole number of pixels");
        for (src, out) in pixels.chunks_exact(c).zip(dst.chunks_exact_mut(c)) {
            for ((o, &p), lut) in out.iter_mut().zip(src).zip(&self.0) {
                *o = lut[usize::from(p)];
            }
        }
    }
}

/// Training-time augmentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Augment {
    /// None (evaluation).
    #[default]
    None,
    /// Random horizontal flip (probability 1/2).
    Flip,
    /// Zero-pad `pad` pixels on every side, take a random crop of the original size, then
    /// flip horizontally with probability 1/2.
    PadCropFlip {
        /// Padding on each side, in pixels.
        pad: usize,
    },
}

impl Augment {
    /// The CIFAR recipe: pad 4, random 32x32 crop, random horizontal flip.
    pub const CIFAR: Augment = Augment::PadCropFlip { pad: 4 };

    /// The padding this augmentation crops from.
    pub fn pad(self) -> usize {
        match self {
            Augment::PadCropFlip { pad } => pad,
            Augment::None | Augment::Flip => 0,
        }
    }

    /// Draws one image's transform from `rng`.
    pub fn sample(self, rng: &mut SeededRng) -> Transform {
        match self {
            Augment::None => Transform::identity(0),
            Augment::Flip => Transform {
                offset_y: 0,
                offset_x: 0,
                mirror: rng.below(2) == 1,
            },
            Augment::PadCropFlip { pad } => Transform {
                offset_y: rng.below(2 * pad + 1),
                offset_x: rng.below(2 * pad + 1),
                mirror: rng.below(2) == 1,
            },
        }
    }
}

/// One image's crop window and flip: the output pixel `(y, x)` is the zero-padded input's
/// pixel `(y + offset_y, x' + offset_x)` with `x' = width - 1 - x` when mirrored, else `x`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transform {
    /// Top of the crop window in the padded image (`0..=2*pad`; `pad` is centred).
    pub offset_y: usize,
    /// Left of the crop window in the padded image (`0..=2*pad`; `pad` is centred).
    pub offset_x: usize,
    /// Whether the crop is flipped horizontally.
    pub mirror: bool,
}

impl Transform {
    /// The centred, unflipped window for padding `pad` (leaves the image unchanged).
    pub fn identity(pad: usize) -> Self {
        Transform {
            offset_y: pad,
            offset_x: pad,
            mirror: false,
        }
    }

    /// Applies the transform to one HWC image `src` of `shape`, padded with zeros by `pad`,
    /// writing an image of the same shape to `dst`.
    ///
    /// # Panics
    /// If `src` or `dst` is not one image of `shape`, or an offset exceeds `2 * pad`.
    pub fn apply(&self, src: &[u8], shape: InputShape, pad: usize, dst: &mut [u8]) {
        let (h, w, c) = (shape.height, shape.width, shape.channels);
        assert_eq!(src.len(), h * w * c, "source is not one image of {shape:?}");
        assert_eq!(
            dst.len(),
            h * w * c,
            "destination is not one image of {shape:?}"
        );
        assert!(
            self.offset_y <= 2 * pad && self.offset_x <= 2 * pad,
            "crop offset beyond the padding"
        );
        for y in 0..h {
            let sy = (y + self.offset_y).checked_sub(pad).filter(|&sy| sy < h);
            let row = &mut dst[y * w * c..(y + 1) * w * c];
            let Some(sy) = sy else {
                row.fill(0);
                continue;
            };
            for x in 0..w {
                let xx = if self.mirror { w - 1 - x } else { x };
                let out = &mut row[x * c..(x + 1) * c];
                match (xx + self.offset_x).checked_sub(pad).filter(|&sx| sx < w) {
                    Some(sx) => out.copy_from_slice(&src[(sy * w + sx) * c..(sy * w + sx + 1) * c]),
                    None => out.fill(0),
                }
            }
        }
    }
}
