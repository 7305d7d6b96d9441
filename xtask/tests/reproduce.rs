//! `cargo xtask reproduce-cifar` end to end on a tiny data set in CIFAR-10's binary layout:
//! every row of Table I for Model D, the Markdown table with the paper's numbers, and a rerun
//! that reuses the finished runs.

use std::path::Path;
use std::process::Command;

/// Writes `records` CIFAR-10 records per file (1 label byte + 3072 bytes, R/G/B planes).
fn tiny_cifar10(dir: &Path, records: usize) {
    let d = dir.join("cifar-10-batches-bin");
    std::fs::create_dir_all(&d).unwrap();
    let mut state = 12345u32;
    let mut next = || {
        state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        (state >> 24) as u8
    };
    for name in [
        "data_batch_1.bin",
        "data_batch_2.bin",
        "data_batch_3.bin",
        "data_batch_4.bin",
        "data_batch_5.bin",
        "test_batch.bin",
    ] {
        let mut bytes = Vec::with_capacity(records * 3073);
        for r in 0..records {
            let label = (r % 10) as u8;
            bytes.push(label);
            // A class-dependent brightness so the task is learnable.
            bytes.extend((0..3072).map(|_| label * 20 + next() / 8));
        }
        std::fs::write(d.join(name), bytes).unwrap();
    }
}

fn xtask(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap()
}

#[test]
fn table_1_for_model_d_runs_every_row_and_reuses_finished_runs() {
    let root = std::env::temp_dir().join(format!("xtask-reproduce-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    tiny_cifar10(&root.join("data"), 12);
    let out = root.join("out");
    let data = root.join("data");
    let args = [
        "reproduce-cifar",
        "--table",
        "1",
        "--model",
        "D",
        "--epochs",
        "1",
        "--batch-size",
        "10",
        "--validation",
        "10",
        "--threads",
        "1",
        "--data-dir",
        data.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ];
    let run = xtask(&args);
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let table = std::fs::read_to_string(out.join("results.md")).unwrap();
    assert!(table.contains("Table 1, Model D on cifar10"), "{table}");
    // All twelve rows with the paper's Model D column beside ours.
    for (bits, paper) in [
        ("1/1", "84.4"),
        ("2/3", "88.1"),
        ("3/3", "89.3"),
        ("16/1", "88.7"),
        ("32/32", "91.0"),
    ] {
        let row = table
            .lines()
            .find(|l| l.starts_with(&format!("| {bits} ")))
            .unwrap_or_else(|| panic!("{bits} missing:\n{table}"));
        assert!(row.contains(&format!("| {paper} |")), "{row}");
        assert!(row.contains("| 1/1 |"), "one epoch done: {row}");
    }
    assert_eq!(
        table
            .lines()
            .filter(|l| l.contains(out.to_str().unwrap()))
            .count(),
        12,
        "{table}"
    );
    // Every run kept its directory with one row of metrics and a checkpoint.
    let dirs: Vec<_> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    assert_eq!(dirs.len(), 12);
    for d in &dirs {
        let metrics = std::fs::read_to_string(d.join("metrics.csv")).unwrap();
        assert_eq!(metrics.lines().count(), 2, "{}", d.display());
        assert!(d.join("checkpoints/epoch-0001/model.safetensors").exists());
    }
    // A second run reuses every finished run: same metrics, no new epochs.
    let before: Vec<String> = dirs
        .iter()
        .map(|d| std::fs::read_to_string(d.join("metrics.csv")).unwrap())
        .collect();
    let again = xtask(&args);
    assert!(again.status.success());
    let after: Vec<String> = dirs
        .iter()
        .map(|d| std::fs::read_to_string(d.join("metrics.csv")).unwrap())
        .collect();
    assert_eq!(before, after);
    std::fs::remove_dir_all(&root).unwrap();
}
