//! The trainer: one directory per run, checkpoints that survive crashes and Ctrl-C, exact
//! resume, per-epoch metrics with the hard quantizer.
//!
//! A run directory holds:
//! - `config.toml`: the resolved [`TrainConfig`] (everything needed to rerun or resume);
//! - `run.json`: git commit, seed, kernel ISA, crate versions, start time;
//! - `metrics.csv`: one row per epoch (`epoch, train_loss, train_acc, val_acc, test_acc, alpha,
//!   lr, seconds`), accuracies on the validation and test sets measured with the hard quantizer
//!   (alpha = 1);
//! - `checkpoints/<tag>/{model,optim}.safetensors` and `checkpoints/latest.json`, the pointer
//!   to the newest complete checkpoint, written last and atomically (temp file + rename). A
//!   checkpoint is taken after every epoch and when the stop flag is raised (Ctrl-C) mid-epoch.
//!
//! Resume reloads parameters, BatchNorm statistics and optimizer state, and continues at the
//! saved epoch and step: batches are a pure function of `(seed, epoch)` and alpha and the
//! learning rate a pure function of the position, so the resumed run computes exactly what the
//! uninterrupted one would have.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use aqe_candle::optim::{AdamConfig, Algorithm, Optimizer, SgdConfig};
use aqe_candle::params::write_atomic;
use aqe_candle::{AlphaHandle, Alphas, Loss, ParamStore};
use aqe_core::{AlphaSchedule, Estimator, LrSchedule, Progress};
use candle_core::{DType, Device, ModuleT, Tensor};
use serde::{Deserialize, Serialize};

use crate::data::{BatchConfig, Batcher, Dataset, DatasetKind, LastBatch};
use crate::error::{Error, Result};
use crate::setting::{LayerPolicy, LayerPrecision};
use crate::{Arch, MinwSetting, Model, ModelSpec, QuantPlan};

/// Everything that defines a training run. Saved as `config.toml` in the run directory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    /// Architecture: `A`..`D`, `resnet20`, ...
    pub model: String,
    /// MINW setting `M/N` (activation bits / weight bits).
    pub bits: String,
    /// Estimator of every quantized tensor.
    pub estimator: Estimator,
    /// Alpha schedule of the weights (and of the activations unless `alpha_activations` is set).
    pub alpha: AlphaSchedule,
    /// Separate alpha schedule for the activations.
    pub alpha_activations: Option<AlphaSchedule>,
    /// Keep the first layer float (`true`) or quantize its weights as the setting says.
    pub first_layer_float: bool,
    /// Keep the last layer float.
    pub last_layer_float: bool,
    /// Dataset name: `cifar10`, `cifar100`, `fashion-mnist`, `mnist`.
    pub dataset: String,
    /// Epochs.
    pub epochs: u32,
    /// Images per training batch.
    pub batch_size: usize,
    /// `adam` or `sgd`.
    pub optimizer: String,
    /// Base learning rate.
    pub lr: f64,
    /// Learning-rate schedule (a multiplier of `lr`).
    pub lr_schedule: LrSchedule,
    /// Weight decay on kernels.
    pub weight_decay: f64,
    /// SGD momentum.
    pub momentum: f64,
    /// `cross_entropy` or `squared_hinge`.
    pub loss: String,
    /// Seed of initialisation, split, shuffles and augmentation.
    pub seed: u64,
    /// Images split off the training set for validation (the paper: 5000 of CIFAR's 50000).
    pub validation: usize,
    /// Use only this many training images (after the validation split).
    pub train_subset: Option<usize>,
    /// Use only this many test images.
    pub test_subset: Option<usize>,
    /// Random crop and flip where the dataset uses them.
    pub augment: bool,
}

impl TrainConfig {
    /// The paper's recipe for `model` on `dataset` at `bits` with `estimator`: Adam 0.01 with
    /// exponential decay, batch 256, 200 epochs for the ConvNets; SGD 0.1 with momentum 0.9,
    /// weight decay 1e-4, batch 128, /10 at 32k and 38k iterations, 182 epochs (64k
    /// iterations) for the ResNets.
    pub fn paper(model: &str, bits: &str, estimator: Estimator, dataset: &str) -> Result<Self> {
        let arch: Arch = model.parse()?;
        let base = TrainConfig {
            model: arch.to_string(),
            bits: bits.parse::<MinwSetting>()?.to_string(),
            estimator,
            alpha: AlphaSchedule::default(),
            alpha_activations: None,
            first_layer_float: false,
            last_layer_float: false,
            dataset: dataset.parse::<DatasetKind>()?.name().to_string(),
            epochs: 200,
            batch_size: 256,
            optimizer: "adam".into(),
            lr: 0.01,
            lr_schedule: "exp_to:0.001".parse()?,
            weight_decay: 0.0,
            momentum: 0.9,
            loss: Loss::CrossEntropy.name().into(),
            seed: 0,
            validation: 5000,
            train_subset: None,
            test_subset: None,
            augment: true,
        };
        Ok(match arch {
            Arch::ConvNet(_) => base,
            // The paper's AlexNet-BN recipe: Adam 1e-4, batch 128, 50 epochs.
            Arch::AlexNetBn => TrainConfig {
                epochs: 50,
                batch_size: 128,
                lr: 1e-4,
                lr_schedule: LrSchedule::default(),
                ..base
            },
            Arch::ResNet { .. } | Arch::ResNetImageNet { .. } => TrainConfig {
                epochs: 182,
                batch_size: 128,
                optimizer: "sgd".into(),
                lr: 0.1,
                lr_schedule: "multistep:32000,38000:0.1@iter".parse()?,
                weight_decay: 1e-4,
                ..base
            },
        })
    }

    fn bad(&self, what: &str, reason: impl Into<String>) -> Error {
        Error::Config {
            what: format!("config `{what}`"),
            reason: reason.into(),
        }
    }

    /// Checks every field and builds the typed pieces.
    pub fn resolve(&self) -> Result<Resolved> {
        let dataset: DatasetKind = self.dataset.parse()?;
        let setting: MinwSetting = self.bits.parse()?;
        let mut plan = QuantPlan::new(setting, self.estimator);
        let layer = |float: bool| {
            if float {
                LayerPrecision::Float
            } else {
                LayerPrecision::Quantized
            }
        };
        plan.policy = LayerPolicy {
            first_layer: layer(self.first_layer_float),
            last_layer: layer(self.last_layer_float),
        };
        let spec = ModelSpec {
            arch: self.model.parse()?,
            plan,
            input: dataset.shape(),
            classes: dataset.classes(),
        };
        let loss: Loss = self.loss.parse().map_err(|e: String| self.bad("loss", e))?;
        if self.epochs == 0 {
            return Err(self.bad("epochs", "must be at least 1"));
        }
        if self.batch_size == 0 {
            return Err(self.bad("batch_size", "must be at least 1"));
        }
        let algorithm = match self.optimizer.as_str() {
            "adam" => Algorithm::Adam(AdamConfig {
                lr: self.lr,
                weight_decay: self.weight_decay,
                ..Default::default()
            }),
            "sgd" => Algorithm::Sgd(SgdConfig {
                lr: self.lr,
                momentum: self.momentum,
                weight_decay: self.weight_decay,
                ..Default::default()
            }),
            other => {
                return Err(self.bad(
                    "optimizer",
                    format!("unknown optimizer `{other}`; valid: adam, sgd"),
                ));
            }
        };
        Ok(Resolved {
            dataset,
            spec,
            loss,
            algorithm,
        })
    }
}

/// The typed form of a [`TrainConfig`].
#[derive(Debug, Clone)]
pub struct Resolved {
    /// The dataset.
    pub dataset: DatasetKind,
    /// The model.
    pub spec: ModelSpec,
    /// The loss.
    pub loss: Loss,
    /// The optimizer.
    pub algorithm: Algorithm,
}

/// The data of a run: training batches and the evaluation sets.
#[derive(Debug, Clone)]
pub struct RunData {
    /// Training set (after the validation split and subset).
    pub train: Dataset,
    /// Validation set (may be empty).
    pub val: Dataset,
    /// Test set.
    pub test: Dataset,
}

impl RunData {
    /// Splits and subsets `train`/`test` as `cfg` says.
    pub fn prepare(cfg: &TrainConfig, train: &Dataset, test: &Dataset) -> Result<Self> {
        let (mut tr, val) = if cfg.validation > 0 {
            train.split_validation(cfg.validation, cfg.seed)?
        } else {
            (train.clone(), train.take(0))
        };
        if let Some(n) = cfg.train_subset {
            tr = tr.take(n);
        }
        let test = match cfg.test_subset {
            Some(n) => test.take(n),
            None => test.clone(),
        };
        if tr.is_empty() {
            return Err(Error::Config {
                what: "training set".into(),
                reason: "no training images left".into(),
            });
        }
        Ok(RunData {
            train: tr,
            val,
            test,
        })
    }
}

/// One row of `metrics.csv`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochMetrics {
    /// Epoch, from 0.
    pub epoch: u32,
    /// Mean training loss over the epoch's batches.
    pub train_loss: f64,
    /// Training accuracy of the training-mode forward (current alpha).
    pub train_acc: f64,
    /// Validation accuracy with the hard quantizer (NaN without a validation set).
    pub val_acc: f64,
    /// Test accuracy with the hard quantizer.
    pub test_acc: f64,
    /// Alpha at the epoch's last step.
    pub alpha: f32,
    /// Learning rate at the epoch's first step.
    pub lr: f64,
    /// Wall time of the epoch (training and evaluation).
    pub seconds: f64,
}

const METRICS_HEADER: &str = "epoch,train_loss,train_acc,val_acc,test_acc,alpha,lr,seconds";

impl EpochMetrics {
    fn csv(&self) -> String {
        format!(
            "{},{:.6},{:.6},{:.6},{:.6},{:.6},{:.6e},{:.2}",
            self.epoch,
            self.train_loss,
            self.train_acc,
            self.val_acc,
            self.test_acc,
            self.alpha,
            self.lr,
            self.seconds
        )
    }
}

/// Where a checkpoint stands, saved in `checkpoints/latest.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct CheckpointState {
    /// The epoch to continue with.
    epoch: u32,
    /// The step inside it to continue with (0 at an epoch boundary).
    step: u32,
    /// Directory under `checkpoints/`.
    dir: String,
    /// Running sums of the unfinished epoch: loss, correct, seen.
    partial: (f64, u64, u64),
    /// Seconds already spent in the unfinished epoch.
    seconds: f64,
}

/// Why [`Trainer::fit`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Every epoch ran.
    Finished,
    /// The stop flag was raised; a checkpoint was written and `--resume` continues.
    Interrupted,
}

/// A training run in a directory.
pub struct Trainer {
    cfg: TrainConfig,
    resolved: Resolved,
    dir: PathBuf,
    store: ParamStore,
    model: Model,
    opt: Optimizer,
    alpha_w: AlphaHandle,
    alpha_a: AlphaHandle,
    start: CheckpointState,
    metrics: Vec<EpochMetrics>,
}

impl std::fmt::Debug for Trainer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Trainer")
            .field("dir", &self.dir)
            .field("cfg", &self.cfg)
            .finish_non_exhaustive()
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |e| Error::Data {
        path: path.display().to_string(),
        offset: None,
        reason: e.to_string(),
    }
}

impl Trainer {
    /// Starts a new run in `dir` (created; must not already hold a run).
    pub fn create(cfg: TrainConfig, dir: &Path, run_info: serde_json::Value) -> Result<Self> {
        if dir.join("config.toml").exists() {
            return Err(Error::Config {
                what: dir.display().to_string(),
                reason: "already holds a run; continue it with --resume or choose another --out"
                    .into(),
            });
        }
        std::fs::create_dir_all(dir.join("checkpoints")).map_err(io(dir))?;
        let text = toml::to_string(&cfg).map_err(|e| Error::Config {
            what: "config".into(),
            reason: e.to_string(),
        })?;
        write_atomic(&dir.join("config.toml"), text.as_bytes())?;
        let info = serde_json::to_string_pretty(&run_info).unwrap_or_default();
        write_atomic(&dir.join("run.json"), info.as_bytes())?;
        write_atomic(
            &dir.join("metrics.csv"),
            format!("{METRICS_HEADER}\n").as_bytes(),
        )?;
        Self::build(cfg, dir, None)
    }

    /// Continues the run in `dir` from its latest checkpoint (or from scratch if it has none).
    pub fn resume(dir: &Path) -> Result<Self> {
        let path = dir.join("config.toml");
        let text = std::fs::read_to_string(&path).map_err(io(&path))?;
        let cfg: TrainConfig = toml::from_str(&text).map_err(|e| Error::Config {
            what: path.display().to_string(),
            reason: e.to_string(),
        })?;
        let latest = dir.join("checkpoints").join("latest.json");
        let state = if latest.exists() {
            let text = std::fs::read_to_string(&latest).map_err(io(&latest))?;
            Some(
                serde_json::from_str::<CheckpointState>(&text).map_err(|e| Error::Data {
                    path: latest.display().to_string(),
                    offset: None,
                    reason: format!("corrupt checkpoint pointer: {e}"),
                })?,
            )
        } else {
            None
        };
        Self::build(cfg, dir, state)
    }

    fn build(cfg: TrainConfig, dir: &Path, state: Option<CheckpointState>) -> Result<Self> {
        let resolved = cfg.resolve()?;
        let store = ParamStore::new(cfg.seed, &Device::Cpu);
        let alpha_w = AlphaHandle::new(cfg.alpha.start())?;
        let a_sched = cfg.alpha_activations.unwrap_or(cfg.alpha);
        let alpha_a = AlphaHandle::new(a_sched.start())?;
        let alphas = Alphas {
            weight: alpha_w.clone(),
            input: alpha_a.clone(),
        };
        let model = resolved.spec.build(&alphas, &store)?;
        let mut opt = Optimizer::new(&store, resolved.algorithm)?;
        let mut metrics = read_metrics(&dir.join("metrics.csv"))?;
        let start = match state {
            Some(s) => {
                let ck = dir.join("checkpoints").join(&s.dir);
                store.load(&ck.join("model.safetensors"))?;
                opt.load(&ck.join("optim.safetensors"))?;
                tracing::info!(
                    epoch = s.epoch,
                    step = s.step,
                    "resuming from {}",
                    ck.display()
                );
                s
            }
            None => CheckpointState {
                epoch: 0,
                step: 0,
                dir: String::new(),
                partial: (0.0, 0, 0),
                seconds: 0.0,
            },
        };
        // Rows written after the checkpoint are recomputed.
        metrics.retain(|m| m.epoch < start.epoch);
        let mut text = format!("{METRICS_HEADER}\n");
        for m in &metrics {
            text.push_str(&m.csv());
            text.push('\n');
        }
        write_atomic(&dir.join("metrics.csv"), text.as_bytes())?;
        Ok(Trainer {
            cfg,
            resolved,
            dir: dir.to_path_buf(),
            store,
            model,
            opt,
            alpha_w,
            alpha_a,
            start,
            metrics,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &TrainConfig {
        &self.cfg
    }

    /// The model.
    pub fn model(&self) -> &Model {
        &self.model
    }

    /// The parameters.
    pub fn store(&self) -> &ParamStore {
        &self.store
    }

    /// Metrics of the finished epochs.
    pub fn metrics(&self) -> &[EpochMetrics] {
        &self.metrics
    }

    /// The run directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Trains until the last epoch or until `stop` is raised (checked after every step).
    pub fn fit(&mut self, data: &RunData, stop: &AtomicBool) -> Result<Outcome> {
        let kind = self.resolved.dataset;
        let normalize = Some(kind.normalize());
        let mut train_cfg = BatchConfig::new(self.cfg.batch_size, self.cfg.seed);
        train_cfg.last = LastBatch::Drop;
        train_cfg.normalize = normalize.clone();
        if self.cfg.augment {
            train_cfg.augment = kind.train_augment();
        }
        let train = Batcher::new(data.train.clone(), train_cfg, Device::Cpu)?;
        let steps = train.batches_per_epoch();
        if steps == 0 {
            return Err(Error::Config {
                what: "batch_size".into(),
                reason: format!(
                    "{} training images make no batch of {}",
                    data.train.len(),
                    self.cfg.batch_size
                ),
            });
        }
        let steps = u32::try_from(steps).map_err(|_| Error::Config {
            what: "batch_size".into(),
            reason: "too many steps".into(),
        })?;
        let eval_cfg = BatchConfig::eval(self.cfg.batch_size.max(256), normalize);
        let a_sched = self.cfg.alpha_activations.unwrap_or(self.cfg.alpha);
        let mut state = self.start.clone();
        while state.epoch < self.cfg.epochs {
            let epoch = state.epoch;
            let t0 = Instant::now();
            let (mut loss_sum, mut correct, mut seen) = state.partial;
            let lr_start = self.cfg.lr_schedule.lr_at(
                self.cfg.lr,
                &Progress::new(epoch, self.cfg.epochs, 0, steps)?,
            );
            let bar = progress_bar(
                u64::from(steps),
                &format!("epoch {}/{}", epoch + 1, self.cfg.epochs),
            );
            bar.set_position(u64::from(state.step));
            let mut last_alpha = self.alpha_w.get();
            for batch in train.epoch_from(u64::from(epoch), state.step as usize) {
                let batch = batch?;
                let step = batch.index as u32;
                let p = Progress::new(epoch, self.cfg.epochs, step, steps)?;
                last_alpha = self.alpha_w.advance(&self.cfg.alpha, &p);
                self.alpha_a.advance(&a_sched, &p);
                self.opt
                    .set_learning_rate(self.cfg.lr_schedule.lr_at(self.cfg.lr, &p));
                let logits = self.model.forward_t(&batch.images, true)?;
                let loss = self.resolved.loss.compute(&logits, &batch.labels)?;
                let loss_v = f64::from(loss.to_scalar::<f32>()?);
                if !loss_v.is_finite() {
                    bar.abandon();
                    return Err(Error::Config {
                        what: format!("training at epoch {epoch}, step {step}"),
                        reason: format!(
                            "the loss became {loss_v}; stopped without saving. The last good checkpoint is {} \
                             (try a lower --lr, or a smoother --alpha-schedule)",
                            self.dir.join("checkpoints").join(&state.dir).display()
                        ),
                    });
                }
                self.opt.backward_step(&loss)?;
                let n = batch.labels.dim(0)? as u64;
                loss_sum += loss_v * n as f64;
                correct += count_correct(&logits, &batch.labels)?;
                seen += n;
                bar.inc(1);
                bar.set_message(format!(
                    "loss {:.4} acc {:.2}%",
                    loss_sum / seen as f64,
                    100.0 * correct as f64 / seen as f64
                ));
                if stop.load(Ordering::Relaxed) && step + 1 < steps {
                    bar.abandon();
                    let next = CheckpointState {
                        epoch,
                        step: step + 1,
                        dir: format!("epoch-{epoch:04}-step-{:06}", step + 1),
                        partial: (loss_sum, correct, seen),
                        seconds: state.seconds + t0.elapsed().as_secs_f64(),
                    };
                    self.checkpoint(&next)?;
                    tracing::info!(
                        "interrupted: checkpoint written; continue with --resume {}",
                        self.dir.display()
                    );
                    return Ok(Outcome::Interrupted);
                }
            }
            bar.finish_and_clear();
            let val_acc = if data.val.is_empty() {
                f64::NAN
            } else {
                self.evaluate(&data.val, &eval_cfg)?
            };
            let test_acc = self.evaluate(&data.test, &eval_cfg)?;
            let m = EpochMetrics {
                epoch,
                train_loss: loss_sum / seen.max(1) as f64,
                train_acc: correct as f64 / seen.max(1) as f64,
                val_acc,
                test_acc,
                alpha: last_alpha,
                lr: lr_start,
                seconds: state.seconds + t0.elapsed().as_secs_f64(),
            };
            let val = if m.val_acc.is_nan() {
                "-".to_string()
            } else {
                format!("{:.2}%", 100.0 * m.val_acc)
            };
            let alpha = if self.cfg.estimator.uses_alpha() {
                format!("alpha {:.3}, ", m.alpha)
            } else {
                String::new()
            };
            tracing::info!(
                "epoch {}/{}: loss {:.4}, train {:.2}%, val {}, test {:.2}% ({}lr {:.2e}, {:.1}s)",
                epoch + 1,
                self.cfg.epochs,
                m.train_loss,
                100.0 * m.train_acc,
                val,
                100.0 * m.test_acc,
                alpha,
                m.lr,
                m.seconds
            );
            self.append_metrics(&m)?;
            self.metrics.push(m);
            state = CheckpointState {
                epoch: epoch + 1,
                step: 0,
                dir: format!("epoch-{:04}", epoch + 1),
                partial: (0.0, 0, 0),
                seconds: 0.0,
            };
            self.checkpoint(&state)?;
            if stop.load(Ordering::Relaxed) && state.epoch < self.cfg.epochs {
                return Ok(Outcome::Interrupted);
            }
        }
        Ok(Outcome::Finished)
    }

    /// Accuracy of the model with the hard quantizer (evaluation mode) on `data`.
    pub fn evaluate(&self, data: &Dataset, cfg: &BatchConfig) -> Result<f64> {
        evaluate(&self.model, data, cfg)
    }

    fn append_metrics(&self, m: &EpochMetrics) -> Result<()> {
        let path = self.dir.join("metrics.csv");
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .map_err(io(&path))?;
        writeln!(f, "{}", m.csv()).map_err(io(&path))?;
        f.sync_all().map_err(io(&path))
    }

    /// Writes the parameters and optimizer state, then points `latest.json` at them; the
    /// previous checkpoint is removed only afterwards.
    fn checkpoint(&self, state: &CheckpointState) -> Result<()> {
        let root = self.dir.join("checkpoints");
        let ck = root.join(&state.dir);
        std::fs::create_dir_all(&ck).map_err(io(&ck))?;
        self.store.save(&ck.join("model.safetensors"))?;
        self.opt.save(&ck.join("optim.safetensors"))?;
        let previous = std::fs::read_to_string(root.join("latest.json"))
            .ok()
            .and_then(|t| serde_json::from_str::<CheckpointState>(&t).ok());
        let text = serde_json::to_string_pretty(state).unwrap_or_default();
        write_atomic(&root.join("latest.json"), text.as_bytes())?;
        if let Some(p) = previous
            && p.dir != state.dir
            && !p.dir.is_empty()
        {
            let _ = std::fs::remove_dir_all(root.join(p.dir));
        }
        Ok(())
    }
}

/// Accuracy of `model` in evaluation mode (alpha = 1, running BatchNorm statistics) on `data`.
pub fn evaluate(model: &Model, data: &Dataset, cfg: &BatchConfig) -> Result<f64> {
    if data.is_empty() {
        return Ok(f64::NAN);
    }
    let batcher = Batcher::new(data.clone(), cfg.clone(), Device::Cpu)?;
    let (mut correct, mut seen) = (0u64, 0u64);
    for batch in batcher.epoch(0) {
        let batch = batch?;
        let logits = model.forward_t(&batch.images, false)?;
        correct += count_correct(&logits, &batch.labels)?;
        seen += batch.labels.dim(0)? as u64;
    }
    Ok(correct as f64 / seen.max(1) as f64)
}

fn count_correct(logits: &Tensor, labels: &Tensor) -> Result<u64> {
    let pred = logits.argmax(1)?;
    Ok(pred
        .eq(labels)?
        .to_dtype(DType::U32)?
        .sum_all()?
        .to_scalar::<u32>()? as u64)
}

fn progress_bar(len: u64, prefix: &str) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::with_draw_target(
        Some(len),
        indicatif::ProgressDrawTarget::stderr(),
    );
    if let Ok(style) =
        indicatif::ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {msg} ({eta})")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_prefix(prefix.to_string());
    bar
}

/// Reads `metrics.csv` (missing file: no rows).
pub fn read_metrics(path: &Path) -> Result<Vec<EpochMetrics>> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Ok(Vec::new());
    };
    let mut rows = Vec::new();
    for (i, line) in text.lines().enumerate().skip(1) {
        if line.trim().is_empty() {
            continue;
        }
        let f: Vec<&str> = line.split(',').collect();
        let bad = || Error::Data {
            path: path.display().to_string(),
            offset: None,
            reason: format!("line {}: malformed row `{line}`", i + 1),
        };
        if f.len() != 8 {
            return Err(bad());
        }
        let num = |j: usize| f[j].trim().parse::<f64>().map_err(|_| bad());
        rows.push(EpochMetrics {
            epoch: f[0].trim().parse().map_err(|_| bad())?,
            train_loss: num(1)?,
            train_acc: num(2)?,
            val_acc: num(3)?,
            test_acc: num(4)?,
            alpha: num(5)? as f32,
            lr: num(6)?,
            seconds: num(7)?,
        });
    }
    Ok(rows)
}
