//! Teacher-student demo of AQE on plain slices: learn a binary-weight linear classifier.
//!
//! A teacher with weights in {-1, +1} labels random inputs. A student with latent weights in
//! [-1, 1] learns the labels with logistic loss, quantizing its weights with `sign` through an
//! estimator; we report the test accuracy of the *hard-quantized* student (alpha = 1), which is
//! what would be deployed. Compare:
//!
//! ```sh
//! cargo run --release -p aqe-core --example teacher_student
//! cargo run --release -p aqe-core --example teacher_student -- --alpha cosine:0.5:1 --epochs 30
//! ```

use aqe_core::{AlphaSchedule, Estimator, LrSchedule, Progress, Quantizer};

const DIM: usize = 512;
const TRAIN: usize = 2048;
const TEST: usize = 4096;
const BATCH: usize = 64;

/// A small deterministic generator (xorshift64*), so the demo needs no dependency.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    /// Uniform in [-1, 1).
    fn uniform(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
}

struct Task {
    x: Vec<f32>,
    y: Vec<f32>,
}

fn make_task(teacher: &[f32], n: usize, rng: &mut Rng, label_noise: f32) -> Task {
    let x: Vec<f32> = (0..n * DIM).map(|_| rng.uniform()).collect();
    let y = x
        .chunks(DIM)
        .map(|row| {
            let z: f32 = row.iter().zip(teacher).map(|(a, b)| a * b).sum();
            let flip = (rng.uniform() + 1.0) / 2.0 < label_noise;
            if (z >= 0.0) != flip { 1.0 } else { -1.0 }
        })
        .collect();
    Task { x, y }
}

fn accuracy(w: &[f32], task: &Task) -> f32 {
    let correct = task
        .x
        .chunks(DIM)
        .zip(&task.y)
        .filter(|(row, y)| {
            let z: f32 = row.iter().zip(w).map(|(a, b)| a * b).sum();
            (z >= 0.0) == (**y > 0.0)
        })
        .count();
    correct as f32 / task.y.len() as f32
}

struct Run {
    name: String,
    estimator: Estimator,
    latent: Vec<f32>,
    accuracies: Vec<f32>,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut alpha_spec = "linear:0.5:1".to_string();
    let mut epochs: u32 = 20;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--alpha" => alpha_spec = args.next().ok_or("--alpha needs a schedule")?,
            "--epochs" => epochs = args.next().ok_or("--epochs needs a number")?.parse()?,
            other => {
                return Err(
                    format!("unknown argument `{other}` (use --alpha SPEC, --epochs N)").into(),
                );
            }
        }
    }
    let alpha: AlphaSchedule = alpha_spec.parse()?;
    let lr: LrSchedule = "exp_to:0.01".parse()?;
    let quantizer: Quantizer = "sign".parse()?;

    let mut rng = Rng(0x5eed_1234_abcd_0001);
    let teacher: Vec<f32> = (0..DIM)
        .map(|_| if rng.uniform() >= 0.0 { 1.0 } else { -1.0 })
        .collect();
    let train = make_task(&teacher, TRAIN, &mut rng, 0.05);
    let test = make_task(&teacher, TEST, &mut rng, 0.0);
    let init: Vec<f32> = (0..DIM).map(|_| 0.1 * rng.uniform()).collect();

    let mut runs: Vec<Run> = ["identity", "ste", "aqe"]
        .iter()
        .map(|e| {
            Ok(Run {
                name: e.to_string(),
                estimator: e.parse()?,
                latent: init.clone(),
                accuracies: vec![],
            })
        })
        .collect::<Result<_, aqe_core::AqeError>>()?;

    println!(
        "teacher-student, {DIM} binary weights, {TRAIN} train / {TEST} test samples, 5% label noise"
    );
    println!("alpha schedule {alpha}; accuracy of the sign-quantized student on the test set");
    let steps = (TRAIN / BATCH) as u32;
    let mut w_hat = vec![0.0f32; DIM];
    let mut grad_hat = vec![0.0f32; DIM];
    let mut grad = vec![0.0f32; DIM];
    let scale = 4.0 / (DIM as f32).sqrt();
    for epoch in 0..epochs {
        for run in &mut runs {
            for step in 0..steps {
                let p = Progress::new(epoch, epochs, step, steps)?;
                let a = alpha.alpha_at(&p);
                let h = quantizer.resolve(&run.latent);
                run.estimator.forward(&h, a, &run.latent, &mut w_hat)?;
                grad_hat.fill(0.0);
                let rows = step as usize * BATCH..(step as usize + 1) * BATCH;
                for i in rows {
                    let x = &train.x[i * DIM..(i + 1) * DIM];
                    let z: f32 = scale * x.iter().zip(&w_hat).map(|(a, b)| a * b).sum::<f32>();
                    // d/dz of log(1 + exp(-y z)).
                    let dz = -train.y[i] / (1.0 + (train.y[i] * z).exp());
                    for (g, xi) in grad_hat.iter_mut().zip(x) {
                        *g += dz * scale * xi / BATCH as f32;
                    }
                }
                run.estimator
                    .backward(a, &run.latent, &grad_hat, &mut grad)?;
                let step_lr = lr.lr_at(0.5, &p) as f32;
                for (w, g) in run.latent.iter_mut().zip(&grad) {
                    // SGD, then the kernel constraint: clip latent weights to [-1, 1].
                    *w = (*w - step_lr * g).clamp(-1.0, 1.0);
                }
            }
            let h = quantizer.resolve(&run.latent);
            let hard: Vec<f32> = run.latent.iter().map(|w| h.apply(*w)).collect();
            run.accuracies.push(accuracy(&hard, &test));
        }
    }
    print!("{:>6} {:>6}", "epoch", "alpha");
    for run in &runs {
        print!(" {:>9}", run.name);
    }
    println!();
    for epoch in 0..epochs {
        print!(
            "{epoch:>6} {:>6.3}",
            alpha.alpha_at(&Progress::at_epoch(epoch, epochs)?)
        );
        for run in &runs {
            print!(" {:>8.2}%", 100.0 * run.accuracies[epoch as usize]);
        }
        println!();
    }
    Ok(())
}
