//! Shapes and parameter counts of every model, and the layer policy as built.

use aqe_candle::{Alphas, ParamKind, ParamStore};
use candle_core::{DType, Device, ModuleT, Tensor};
use minw_models::{
    Arch, InputShape, LayerPolicy, LayerPrecision, MinwSetting, ModelSpec, QuantPlan,
};

const TRAINABLE: &[ParamKind] = &[
    ParamKind::Kernel,
    ParamKind::QuantizedKernel,
    ParamKind::Bias,
    ParamKind::NormScale,
    ParamKind::NormShift,
];

fn build(arch: &str, bits: &str, input: InputShape) -> (ParamStore, minw_models::Model) {
    let spec = ModelSpec {
        arch: arch.parse().unwrap(),
        plan: QuantPlan::new(bits.parse().unwrap(), "aqe".parse().unwrap()),
        input,
        classes: 10,
    };
    let store = ParamStore::new(0, &Device::Cpu);
    let model = spec.build(&Alphas::default(), &store).unwrap();
    (store, model)
}

fn conv3(i: usize, o: usize) -> usize {
    9 * i * o
}

#[test]
fn convnet_parameter_counts_follow_the_paper() {
    // Convs, FCs, and BatchNorm (scale + shift) after every layer.
    let expect = |c: [usize; 6], fc: usize| {
        let convs = conv3(3, c[0])
            + conv3(c[0], c[1])
            + conv3(c[1], c[2])
            + conv3(c[2], c[3])
            + conv3(c[3], c[4])
            + conv3(c[4], c[5]);
        let fcs = 16 * c[5] * fc + fc * fc + fc * 10;
        let bns = 2 * (c.iter().sum::<usize>() + 2 * fc + 10);
        convs + fcs + bns
    };
    for (arch, c, fc) in [
        ("A", [128, 128, 256, 256, 512, 512], 1024),
        ("B", [64, 64, 128, 128, 256, 256], 1024),
        ("C", [64, 64, 128, 128, 256, 256], 512),
        ("D", [64, 64, 128, 128, 256, 256], 256),
    ] {
        let (store, _) = build(arch, "1/1", InputShape::CIFAR);
        assert_eq!(store.count(TRAINABLE), expect(c, fc), "model {arch}");
    }
    let (store, _) = build("A", "1/1", InputShape::CIFAR);
    assert_eq!(store.count(TRAINABLE), 14_029_716);
}

#[test]
fn resnet_parameter_counts() {
    // ResNet-20 with option-A shortcuts: 0.27 M (269,722 in He et al. with an FC bias; ours has
    // BatchNorm after the classifier instead: +10).
    let (store, _) = build("resnet20", "1/1", InputShape::CIFAR);
    assert_eq!(store.count(TRAINABLE), 269_732);
    for (depth, millions) in [(32, 0.46), (44, 0.66), (56, 0.85), (110, 1.73)] {
        let (store, _) = build(&format!("resnet{depth}"), "1/1", InputShape::CIFAR);
        let m = store.count(TRAINABLE) as f64 / 1e6;
        assert!((m - millions).abs() < 0.02, "resnet{depth}: {m} M");
    }
    let (store_b, _) = build("resnet20-b", "1/1", InputShape::CIFAR);
    // Two projections: 16->32 and 32->64 1x1 convs with BatchNorm.
    assert_eq!(
        store_b.count(TRAINABLE),
        269_732 + 16 * 32 + 32 * 64 + 2 * (32 + 64)
    );
}

#[test]
fn every_model_maps_images_to_logits() {
    for arch in ["A", "B", "C", "D", "resnet20", "resnet20-b", "resnet32"] {
        for (input, n) in [(InputShape::CIFAR, 2), (InputShape::MNIST, 3)] {
            let (_, model) = build(arch, "2/3", input);
            let x = Tensor::zeros(
                (n, input.height, input.width, input.channels),
                DType::F32,
                &Device::Cpu,
            )
            .unwrap();
            assert_eq!(
                model.forward_t(&x, true).unwrap().dims(),
                &[n, 10],
                "{arch} {input:?}"
            );
            assert_eq!(
                model.forward_t(&x, false).unwrap().dims(),
                &[n, 10],
                "{arch} {input:?}"
            );
        }
    }
}

#[test]
fn the_first_layer_sees_the_raw_image_and_overrides_apply() {
    let (store, _) = build("D", "1/1", InputShape::CIFAR);
    // Default policy: every kernel quantized (first and last layer included).
    for (name, p) in store.params() {
        if name.ends_with(".weight") && !name.contains(".bn.") {
            assert_eq!(p.kind, ParamKind::QuantizedKernel, "{name}");
        }
    }
    let mut plan = QuantPlan::new(MinwSetting::W1A1, "aqe".parse().unwrap());
    plan.policy = LayerPolicy {
        first_layer: LayerPrecision::Float,
        last_layer: LayerPrecision::Float,
    };
    let spec = ModelSpec {
        arch: "D".parse().unwrap(),
        plan,
        input: InputShape::CIFAR,
        classes: 10,
    };
    let store = ParamStore::new(0, &Device::Cpu);
    spec.build(&Alphas::default(), &store).unwrap();
    assert_eq!(store.get("conv1.weight").unwrap().kind, ParamKind::Kernel);
    assert_eq!(store.get("fc3.weight").unwrap().kind, ParamKind::Kernel);
    assert_eq!(
        store.get("conv2.weight").unwrap().kind,
        ParamKind::QuantizedKernel
    );
    let (float, _) = build("resnet20", "32/32", InputShape::CIFAR);
    assert!(
        float
            .params()
            .iter()
            .all(|(_, p)| p.kind != ParamKind::QuantizedKernel)
    );
}

#[test]
fn bad_model_names_list_the_valid_ones() {
    for bad in ["E", "resnet21", "resnet", "vgg"] {
        let err = bad.parse::<Arch>().unwrap_err().to_string();
        assert!(
            err.contains("resnet20") && err.contains("A, B, C, D"),
            "{bad}: {err}"
        );
    }
    assert!(matches!(
        "resnet110".parse::<Arch>(),
        Ok(Arch::ResNet { depth: 110, .. })
    ));
}

#[test]
fn imagenet_models_have_the_usual_sizes_and_shapes() {
    let build_in = |arch: &str, bits: &str| {
        let spec = ModelSpec {
            arch: arch.parse().unwrap(),
            plan: QuantPlan::new(bits.parse().unwrap(), "aqe".parse().unwrap()),
            input: InputShape::IMAGENET,
            classes: 1000,
        };
        let store = ParamStore::new(0, &Device::Cpu);
        let model = spec.build(&Alphas::default(), &store).unwrap();
        (store, model)
    };
    // torchvision's counts (11,689,512 and 21,797,672) with the classifier's bias replaced by
    // BatchNorm (+1000); AlexNet's 62.37 M weights plus BatchNorm after every layer.
    for (arch, count) in [
        ("resnet18", 11_690_512),
        ("resnet34", 21_798_672),
        ("alexnet-bn", 62_388_912),
    ] {
        let (store, model) = build_in(arch, "1/1");
        assert_eq!(store.count(TRAINABLE), count, "{arch}");
        let x = Tensor::zeros((1, 224, 224, 3), DType::F32, &Device::Cpu).unwrap();
        assert_eq!(
            model.forward_t(&x, false).unwrap().dims(),
            &[1, 1000],
            "{arch}"
        );
        let summary = model.summary(InputShape::IMAGENET, &store);
        let macs: u64 = summary.layers.iter().map(|l| l.macs).sum();
        let expect = match arch {
            "resnet18" => 1.81e9,
            "resnet34" => 3.66e9,
            _ => 1.13e9,
        };
        assert!(
            (macs as f64 / expect - 1.0).abs() < 0.03,
            "{arch}: {macs} MACs"
        );
    }
    // ResNet-18 W1A2 with first and last layer float, as in the paper's Table V.
    let mut plan = QuantPlan::new("2/1".parse().unwrap(), "aqe".parse().unwrap());
    plan.policy = LayerPolicy {
        first_layer: LayerPrecision::Float,
        last_layer: LayerPrecision::Float,
    };
    let spec = ModelSpec {
        arch: "resnet18".parse().unwrap(),
        plan,
        input: InputShape::IMAGENET,
        classes: 1000,
    };
    let store = ParamStore::new(0, &Device::Cpu);
    spec.build(&Alphas::default(), &store).unwrap();
    assert_eq!(store.get("stem.weight").unwrap().kind, ParamKind::Kernel);
    assert_eq!(store.get("fc.weight").unwrap().kind, ParamKind::Kernel);
    assert_eq!(
        store.get("stage2.block1.shortcut.weight").unwrap().kind,
        ParamKind::QuantizedKernel
    );
    assert!("alexnet-bn".parse::<Arch>().is_ok() && "resnet51".parse::<Arch>().is_err());
}
