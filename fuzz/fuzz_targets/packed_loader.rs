//! Feeds arbitrary bytes to the packed model loader: it must return `Ok` or `Err`, never panic,
//! read out of bounds or allocate without bound. A loaded model also runs one prediction.
#![no_main]

use libfuzzer_sys::fuzz_target;
use minw_models::packed::PackedModel;

fuzz_target!(|data: &[u8]| {
    if let Ok(model) = PackedModel::load_bytes(data, "fuzz input") {
        let n = model.image_len();
        if n <= 1 << 16 {
            let _ = model.predict(&vec![0.5f32; n], 1);
        }
    }
});
