//! Classify image files (PNG/JPEG) with a packed `.minw` model and print the top-3 classes.
//!
//! ```text
//! cargo run --release -p minw-models --example classify -- model.minw image.png [more images]
//! cargo run --release -p minw-models --example classify -- --resize stretch model.minw a.jpg
//! ```
//!
//! Each image is converted to the model's channels (grey or RGB), resized to its input size
//! (`--resize crop`, the default: shorter side then centre crop; `--resize stretch`), normalised
//! with the mean/std stored in the file, and run on the packed engine (ISA chosen at run time,
//! `XNOR_ISA` to force one). An unreadable image is reported with its path; the others are
//! still classified and the exit status is 1.

use std::path::PathBuf;
use std::process::ExitCode;

use minw_models::classify;
use minw_models::data::Resize;
use minw_models::packed::PackedModel;

const USAGE: &str = "usage: classify [--resize crop|stretch] MODEL.minw IMAGE [IMAGE...]";

fn main() -> ExitCode {
    let mut resize = Resize::ShorterSideCenterCrop;
    let mut paths: Vec<PathBuf> = Vec::new();
    let mut args = std::env::args_os().skip(1);
    while let Some(a) = args.next() {
        match a.to_str() {
            Some("-h" | "--help") => {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            Some("--resize") => {
                resize = match args.next().as_deref().and_then(|v| v.to_str()) {
                    Some("crop") => Resize::ShorterSideCenterCrop,
                    Some("stretch") => Resize::Stretch,
                    other => {
                        eprintln!("error: --resize takes crop or stretch, got {other:?}\n{USAGE}");
                        return ExitCode::from(2);
                    }
                }
            }
            _ => paths.push(a.into()),
        }
    }
    if paths.len() < 2 {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    }
    let model = match PackedModel::load_path(&paths[0]) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("error: loading model: {e}");
            return ExitCode::FAILURE;
        }
    };
    let meta = model.meta();
    let isa = xnor_kernels::selected_isa()
        .map(|i| i.to_string())
        .unwrap_or_else(|e| format!("unavailable ({e})"));
    println!(
        "{} {} on {:?} inputs, {} classes, ISA {isa}",
        meta.architecture,
        meta.bits,
        meta.input_shape,
        model.classes()
    );
    let mut failed = false;
    for path in &paths[1..] {
        let result =
            classify::open(path).and_then(|img| classify::classify(&model, &img, resize, 3));
        match result {
            Ok(top) => {
                let shown: Vec<String> = top
                    .iter()
                    .map(|p| format!("{} ({}) {:.3}", p.name, p.class, p.probability))
                    .collect();
                println!("{}: {}", path.display(), shown.join(", "));
            }
            Err(e) => {
                eprintln!("error: {e}");
                failed = true;
            }
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
