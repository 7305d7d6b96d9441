//! ImageNet-style folders: `root/<class>/*.{png,jpg,jpeg}`, one subfolder per class.

use std::path::{Path, PathBuf};

use image::imageops::FilterType;
use rayon::prelude::*;

use super::{Dataset, data_err};
use crate::{InputShape, Result};

/// How images are brought to the target size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Resize {
    /// Scale (bilinear) so the shorter side matches the target, then crop the centre: keeps
    /// the aspect ratio, loses the edges of the longer side.
    #[default]
    ShorterSideCenterCrop,
    /// Scale (bilinear) width and height independently to the target: keeps everything,
    /// distorts the aspect ratio.
    Stretch,
}

/// Options of [`load_image_folder`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FolderOptions {
    /// Target height in pixels.
    pub height: usize,
    /// Target width in pixels.
    pub width: usize,
    /// How images are resized.
    pub resize: Resize,
}

impl FolderOptions {
    /// `height` x `width` with [`Resize::ShorterSideCenterCrop`].
    pub fn new(height: usize, width: usize) -> Self {
        FolderOptions {
            height,
            width,
            resize: Resize::default(),
        }
    }
}

fn is_image(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| matches!(e.to_ascii_lowercase().as_str(), "png" | "jpg" | "jpeg"))
}

fn sorted_entries(dir: &Path) -> Result<Vec<PathBuf>> {
    let rd = std::fs::read_dir(dir)
        .map_err(|e| data_err(dir, None, format!("cannot list directory: {e}")))?;
    let mut out = Vec::new();
    for entry in rd {
        let entry =
            entry.map_err(|e| data_err(dir, None, format!("cannot list directory: {e}")))?;
        out.push(entry.path());
    }
    out.sort();
    Ok(out)
}

/// Loads every PNG/JPEG under `root/<class>/` as RGB, resized to the options' size. Classes
/// are the subfolders sorted by name (label = position); images within a class are sorted by
/// file name; other files are ignored. Decoding runs in parallel; the result does not depend
/// on the thread count.
pub fn load_image_folder(root: &Path, options: FolderOptions) -> Result<Dataset> {
    if options.height == 0 || options.width == 0 {
        return Err(data_err(
            root,
            None,
            format!("target size {}x{} is empty", options.height, options.width),
        ));
    }
    let class_dirs: Vec<PathBuf> = sorted_entries(root)?
        .into_iter()
        .filter(|p| p.is_dir())
        .collect();
    if class_dirs.is_empty() {
        return Err(data_err(
            root,
            None,
            "no class subfolders (expected root/<class>/*.png|jpg|jpeg)",
        ));
    }
    let mut files = Vec::new();
    let mut class_names = Vec::new();
    for (label, dir) in class_dirs.iter().enumerate() {
        class_names.push(
            dir.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
        );
        for f in sorted_entries(dir)? {
            if f.is_file() && is_image(&f) {
                files.push((f, label as u32));
            }
        }
    }
    if files.is_empty() {
        return Err(data_err(
            root,
            None,
            "no .png/.jpg/.jpeg images in any class subfolder",
        ));
    }
    let decoded: Vec<Vec<u8>> = files
        .par_iter()
        .map(|(path, _)| load_one(path, options))
        .collect::<Result<_>>()?;
    let shape = InputShape {
        height: options.height,
        width: options.width,
        channels: 3,
    };
    Dataset::new(
        decoded.concat(),
        files.iter().map(|&(_, l)| l).collect(),
        shape,
        class_names.len(),
        class_names,
    )
}

fn load_one(path: &Path, options: FolderOptions) -> Result<Vec<u8>> {
    let img = image::ImageReader::open(path)
        .map_err(|e| data_err(path, None, format!("cannot open image: {e}")))?
        .with_guessed_format()
        .map_err(|e| data_err(path, None, format!("cannot read image: {e}")))?
        .decode()
        .map_err(|e| data_err(path, None, format!("cannot decode image: {e}")))?
        .into_rgb8();
    let (th, tw) = (options.height as u32, options.width as u32);
    let (w, h) = img.dimensions();
    let out = if (w, h) == (tw, th) {
        img
    } else {
        match options.resize {
            Resize::Stretch => image::imageops::resize(&img, tw, th, FilterType::Triangle),
            Resize::ShorterSideCenterCrop => {
                // Scale so both sides cover the target, then crop the centre.
                let scale = f64::max(f64::from(tw) / f64::from(w), f64::from(th) / f64::from(h));
                let sw = ((f64::from(w) * scale).round() as u32).max(tw);
                let sh = ((f64::from(h) * scale).round() as u32).max(th);
                let scaled = if (sw, sh) == (w, h) {
                    img
                } else {
                    image::imageops::resize(&img, sw, sh, FilterType::Triangle)
                };
                image::imageops::crop_imm(&scaled, (sw - tw) / 2, (sh - th) / 2, tw, th).to_image()
            }
        }
    };
    Ok(out.into_raw())
}
