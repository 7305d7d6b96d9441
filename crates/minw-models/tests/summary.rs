//! Model summaries against stored snapshots (set `UPDATE_SNAPSHOTS=1` to rewrite them after an
//! intended change, then review the diff).

use aqe_candle::{Alphas, ParamStore};
use candle_core::Device;
use minw_models::summary::KernelKind;
use minw_models::{InputShape, ModelSpec, QuantPlan};

fn summary(arch: &str, bits: &str, first_last_float: bool) -> minw_models::summary::Summary {
    let mut plan = QuantPlan::new(bits.parse().unwrap(), "aqe".parse().unwrap());
    if first_last_float {
        plan.policy.first_layer = minw_models::LayerPrecision::Float;
        plan.policy.last_layer = minw_models::LayerPrecision::Float;
    }
    let spec = ModelSpec {
        arch: arch.parse().unwrap(),
        plan,
        input: InputShape::CIFAR,
        classes: 10,
    };
    let store = ParamStore::new(0, &Device::Cpu);
    spec.build(&Alphas::default(), &store)
        .unwrap()
        .summary(InputShape::CIFAR, &store)
}

fn check_snapshot(name: &str, text: &str) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/snapshots")
        .join(format!("{name}.txt"));
    if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
        std::fs::write(&path, text).unwrap();
    }
    let want = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (run with UPDATE_SNAPSHOTS=1)", path.display()));
    assert_eq!(
        text, want,
        "summary of {name} changed; review, then UPDATE_SNAPSHOTS=1"
    );
}

#[test]
fn summaries_match_their_snapshots() {
    for (name, arch, bits, fl) in [
        ("convnet_a_w1a1", "A", "1/1", false),
        ("convnet_d_w2a3", "D", "3/2", false),
        ("resnet20_w1a1_first_last_float", "resnet20", "1/1", true),
        ("resnet20_float", "resnet20", "32/32", false),
    ] {
        check_snapshot(name, &summary(arch, bits, fl).to_string());
    }
}

#[test]
fn summary_totals_are_consistent() {
    let s = summary("A", "1/1", false);
    // ConvNet A at 32x32: 0.6 GMAC per image, all but the first conv binary.
    let total: u64 = s.layers.iter().map(|l| l.macs).sum();
    assert_eq!(
        total,
        s.macs(KernelKind::XnorPopcount) + s.macs(KernelKind::FloatInputQuantizedWeights)
    );
    assert_eq!(s.layers[0].kernel, KernelKind::FloatInputQuantizedWeights);
    assert!(
        s.layers[1..]
            .iter()
            .all(|l| l.kernel == KernelKind::XnorPopcount)
    );
    // 1-bit weights pack 32x smaller than f32; BatchNorm and running statistics shrink the ratio a little.
    let ratio = s.latent_bytes() as f64 / s.packed_bytes() as f64;
    assert!(ratio > 25.0 && ratio < 32.0, "{ratio}");
    let r = summary("resnet20", "1/1", true);
    assert_eq!(r.layers.first().unwrap().kernel, KernelKind::Float);
    assert_eq!(r.layers.last().unwrap().kernel, KernelKind::Float);
    assert_eq!(r.layers.len(), 1 + 18 + 1);
    let int8 = summary("D", "3/2", false);
    assert!(int8.macs(KernelKind::Int8) > 0 && int8.macs(KernelKind::XnorPopcount) == 0);
}
