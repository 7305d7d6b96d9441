//! The trainer: run directory contents, exact resume (after an epoch and mid-epoch), NaN stop.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use aqe_candle::SeededRng;
use minw_models::InputShape;
use minw_models::data::Dataset;
use minw_models::train::{Outcome, RunData, TrainConfig, Trainer, read_metrics};

/// 28x28 grey images whose class (0..10) sets the brightness of a band: learnable, cheap.
fn synthetic(n: usize, seed: u64) -> Dataset {
    let mut rng = SeededRng::new(seed);
    let mut images = vec![0u8; n * 784];
    let mut labels = vec![0u32; n];
    for i in 0..n {
        let class = rng.below(10);
        labels[i] = class as u32;
        for p in 0..784 {
            let row = p / 28;
            let on = row / 3 == class;
            images[i * 784 + p] = if on { 200 } else { 30 } + (rng.below(40) as u8);
        }
    }
    Dataset::new(images, labels, InputShape::MNIST, 10, vec![]).unwrap()
}

fn config(epochs: u32) -> TrainConfig {
    let mut cfg =
        TrainConfig::paper("resnet20", "1/1", "aqe".parse().unwrap(), "fashion-mnist").unwrap();
    cfg.epochs = epochs;
    cfg.batch_size = 16;
    cfg.validation = 16;
    cfg.seed = 3;
    cfg.lr = 0.05;
    cfg.lr_schedule = "cosine".parse().unwrap();
    cfg
}

fn data(cfg: &TrainConfig) -> RunData {
    RunData::prepare(cfg, &synthetic(80, 1), &synthetic(24, 2)).unwrap()
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("minw-train-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn info() -> serde_json::Value {
    serde_json::json!({ "test": true })
}

/// metrics.csv without the wall-time column.
fn metrics_wo_time(dir: &Path) -> Vec<String> {
    read_metrics(&dir.join("metrics.csv"))
        .unwrap()
        .iter()
        .map(|m| {
            format!(
                "{} {} {} {} {} {} {}",
                m.epoch, m.train_loss, m.train_acc, m.val_acc, m.test_acc, m.alpha, m.lr
            )
        })
        .collect()
}

fn final_model(dir: &Path) -> Vec<u8> {
    std::fs::read(
        dir.join("checkpoints")
            .join("epoch-0002")
            .join("model.safetensors"),
    )
    .unwrap()
}

#[test]
fn resume_after_an_epoch_and_mid_epoch_matches_an_uninterrupted_run() {
    let cfg = config(2);
    let run = |dir: &Path| {
        let mut t = Trainer::create(cfg.clone(), dir, info()).unwrap();
        assert_eq!(
            t.fit(&data(&cfg), &AtomicBool::new(false)).unwrap(),
            Outcome::Finished
        );
    };
    let a = tmp("a");
    run(&a);
    for f in [
        "config.toml",
        "run.json",
        "metrics.csv",
        "checkpoints/latest.json",
    ] {
        assert!(a.join(f).exists(), "{f}");
    }
    let text = std::fs::read_to_string(a.join("config.toml")).unwrap();
    assert_eq!(toml::from_str::<TrainConfig>(&text).unwrap(), cfg);
    assert_eq!(metrics_wo_time(&a).len(), 2);

    // Interrupted mid-epoch 0 (the flag is checked after each step: raised before the first,
    // it stops after step 0), then resumed to the end.
    let b = tmp("b");
    let mut t = Trainer::create(cfg.clone(), &b, info()).unwrap();
    assert_eq!(
        t.fit(&data(&cfg), &AtomicBool::new(true)).unwrap(),
        Outcome::Interrupted
    );
    let latest = std::fs::read_to_string(b.join("checkpoints/latest.json")).unwrap();
    assert!(latest.contains("\"step\": 1"), "{latest}");
    assert_eq!(metrics_wo_time(&b).len(), 0);
    let mut t = Trainer::resume(&b).unwrap();
    assert_eq!(
        t.fit(&data(&cfg), &AtomicBool::new(false)).unwrap(),
        Outcome::Finished
    );
    assert_eq!(metrics_wo_time(&a), metrics_wo_time(&b));
    assert_eq!(final_model(&a), final_model(&b));
    for d in [a, b] {
        std::fs::remove_dir_all(d).unwrap();
    }
}

#[test]
fn resume_at_epoch_boundaries_matches_an_uninterrupted_run() {
    // One step per epoch: a stop flag raised from the start ends each run at an epoch boundary.
    let mut cfg = config(3);
    cfg.batch_size = 64;
    let a = tmp("boundary-a");
    let mut t = Trainer::create(cfg.clone(), &a, info()).unwrap();
    assert_eq!(
        t.fit(&data(&cfg), &AtomicBool::new(false)).unwrap(),
        Outcome::Finished
    );
    let b = tmp("boundary-b");
    let mut t = Trainer::create(cfg.clone(), &b, info()).unwrap();
    let stop = AtomicBool::new(true);
    let mut rounds = 1;
    while t.fit(&data(&cfg), &stop).unwrap() == Outcome::Interrupted {
        assert_eq!(metrics_wo_time(&b).len(), rounds);
        t = Trainer::resume(&b).unwrap();
        rounds += 1;
    }
    assert_eq!(rounds, 3);
    assert_eq!(metrics_wo_time(&a), metrics_wo_time(&b));
    let last =
        |d: &Path| std::fs::read(d.join("checkpoints/epoch-0003/model.safetensors")).unwrap();
    assert_eq!(last(&a), last(&b));
    for d in [a, b] {
        std::fs::remove_dir_all(d).unwrap();
    }
}

#[test]
fn an_existing_run_is_not_overwritten_and_bad_configs_are_named() {
    let cfg = config(1);
    let dir = tmp("exists");
    Trainer::create(cfg.clone(), &dir, info()).unwrap();
    let err = Trainer::create(cfg.clone(), &dir, info())
        .unwrap_err()
        .to_string();
    assert!(err.contains("--resume"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
    let mut bad = cfg.clone();
    bad.optimizer = "rmsprop".into();
    assert!(bad.resolve().unwrap_err().to_string().contains("adam, sgd"));
    let mut bad = cfg;
    bad.bits = "4/4".into();
    assert!(bad.resolve().is_err());
}

#[test]
fn a_diverging_float_run_stops_with_a_message() {
    let mut cfg = config(1);
    cfg.bits = "32/32".into();
    cfg.lr = 1e30;
    cfg.lr_schedule = "constant".parse().unwrap();
    let dir = tmp("nan");
    let mut t = Trainer::create(cfg.clone(), &dir, info()).unwrap();
    let err = t
        .fit(&data(&cfg), &AtomicBool::new(false))
        .unwrap_err()
        .to_string();
    assert!(err.contains("loss became"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn one_epoch_on_real_fashion_mnist_is_clearly_above_chance() {
    let dir = Path::new(minw_models::data::FASHION_MNIST_DEFAULT_DIR);
    if !dir.exists() {
        eprintln!(
            "skipped: {} is absent (apt-get install -y dataset-fashion-mnist)",
            dir.display()
        );
        return;
    }
    let raw = minw_models::data::DatasetKind::FashionMnist
        .load(None)
        .unwrap();
    let mut cfg = TrainConfig::paper("D", "1/1", "aqe".parse().unwrap(), "fashion-mnist").unwrap();
    cfg.epochs = 1;
    cfg.batch_size = 50;
    cfg.validation = 0;
    cfg.train_subset = Some(2000);
    cfg.test_subset = Some(1000);
    let data = RunData::prepare(&cfg, &raw.train, &raw.test).unwrap();
    let out = tmp("fashion");
    let mut t = Trainer::create(cfg, &out, info()).unwrap();
    assert_eq!(
        t.fit(&data, &AtomicBool::new(false)).unwrap(),
        Outcome::Finished
    );
    let acc = t.metrics()[0].test_acc;
    // Ten classes: chance is 10%.
    assert!(
        acc > 0.4,
        "W1A1 ConvNet D after one epoch on 2000 images: test accuracy {acc}"
    );
    std::fs::remove_dir_all(&out).unwrap();
}
