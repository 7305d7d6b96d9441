//! Optimizers for AQE training: Adam (the ConvNet recipe) and SGD with momentum and weight decay
//! (the ResNet recipe), with parameter groups taken from [`ParamKind`]s, the kernel constraint
//! after every step, and state saved to and loaded from safetensors.
//!
//! Groups: weight decay applies to kernels only (not to biases or BatchNorm parameters);
//! running statistics are never updated; quantized kernels are clipped to `[-1, 1]` after each
//! step (Algorithm 1).
//!
//! State (moments, step count, learning rate) is kept as detached tensors, so no step keeps
//! another step's graph alive, and is saved bit for bit: a run resumed from saved parameters and
//! state takes exactly the next step an uninterrupted run would have taken.

use std::collections::HashMap;
use std::path::Path;

use candle_core::backprop::GradStore;
use candle_core::{Tensor, Var};

use crate::error::{Error, Result};
use crate::params::{ParamKind, ParamStore, write_atomic};

/// How weight decay enters the update.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WeightDecay {
    /// Added to the gradient (`g + wd * p`), as in PyTorch's `Adam` and `SGD`.
    #[default]
    L2,
    /// Applied to the weights directly (`p -= lr * wd * p`), as in AdamW.
    Decoupled,
}

/// Adam settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamConfig {
    /// Base learning rate; default 0.01 (the paper's ConvNet recipe).
    pub lr: f64,
    /// First-moment decay; default 0.9.
    pub beta1: f64,
    /// Second-moment decay; default 0.999.
    pub beta2: f64,
    /// Added to the denominator; default 1e-8.
    pub eps: f64,
    /// Weight decay on kernels; default 0.
    pub weight_decay: f64,
    /// How weight decay is applied.
    pub decay_mode: WeightDecay,
}

impl Default for AdamConfig {
    fn default() -> Self {
        AdamConfig {
            lr: 0.01,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
            decay_mode: WeightDecay::L2,
        }
    }
}

/// SGD settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SgdConfig {
    /// Base learning rate; default 0.1 (the paper's ResNet recipe).
    pub lr: f64,
    /// Momentum; default 0.9.
    pub momentum: f64,
    /// Weight decay on kernels; default 1e-4.
    pub weight_decay: f64,
    /// Nesterov momentum; default off.
    pub nesterov: Nesterov,
}

/// Whether SGD uses Nesterov momentum.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Nesterov {
    /// Classical momentum.
    #[default]
    Off,
    /// Nesterov's look-ahead.
    On,
}

impl Default for SgdConfig {
    fn default() -> Self {
        SgdConfig {
            lr: 0.1,
            momentum: 0.9,
            weight_decay: 1e-4,
            nesterov: Nesterov::Off,
        }
    }
}

/// Which algorithm an [`Optimizer`] runs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Algorithm {
    /// Adam / AdamW.
    Adam(AdamConfig),
    /// SGD with momentum.
    Sgd(SgdConfig),
}

impl Algorithm {
    fn name(&self) -> &'static str {
        match self {
            Algorithm::Adam(_) => "adam",
            Algorithm::Sgd(_) => "sgd",
        }
    }

    fn base_lr(&self) -> f64 {
        match self {
            Algorithm::Adam(c) => c.lr,
            Algorithm::Sgd(c) => c.lr,
        }
    }
}

#[derive(Debug)]
struct Slot {
    name: String,
    var: Var,
    kind: ParamKind,
    /// Adam: first moment; SGD: momentum buffer.
    m: Option<Tensor>,
    /// Adam: second moment.
    v: Option<Tensor>,
}

/// An optimizer over every trainable parameter of a [`ParamStore`].
///
/// ```
/// use aqe_candle::optim::{AdamConfig, Algorithm, Optimizer};
/// use aqe_candle::{Init, ParamKind, ParamStore};
/// use candle_core::Device;
///
/// let store = ParamStore::new(1, &Device::Cpu);
/// let w = store.root().get(3, "w", Init::Const(0.9), ParamKind::QuantizedKernel)?;
/// let mut opt = Optimizer::new(&store, Algorithm::Adam(AdamConfig { lr: 0.5, ..Default::default() }))?;
/// let loss = (w.sum_all()? * -1.0)?; // pushes w up
/// opt.backward_step(&loss)?;
/// // Adam moves by about lr, then the kernel constraint clips to 1.
/// assert_eq!(w.to_vec1::<f32>()?, vec![1.0, 1.0, 1.0]);
/// # Ok::<(), aqe_candle::Error>(())
/// ```
#[derive(Debug)]
pub struct Optimizer {
    algorithm: Algorithm,
    lr: f64,
    step: u64,
    slots: Vec<Slot>,
}

impl Optimizer {
    /// An optimizer over `store`'s trainable parameters (sorted by name).
    pub fn new(store: &ParamStore, algorithm: Algorithm) -> Result<Self> {
        let bad = |reason: &str| {
            Err(Error::Config {
                what: format!("{} optimizer", algorithm.name()),
                reason: reason.into(),
            })
        };
        match algorithm {
            Algorithm::Adam(c) => {
                if !(c.lr > 0.0
                    && (0.0..1.0).contains(&c.beta1)
                    && (0.0..1.0).contains(&c.beta2)
                    && c.eps > 0.0
                    && c.weight_decay >= 0.0)
                {
                    return bad("needs lr > 0, betas in [0, 1), eps > 0 and weight_decay >= 0");
                }
            }
            Algorithm::Sgd(c) => {
                if !(c.lr > 0.0 && (0.0..1.0).contains(&c.momentum) && c.weight_decay >= 0.0) {
                    return bad("needs lr > 0, momentum in [0, 1) and weight_decay >= 0");
                }
            }
        }
        let slots = store
            .params()
            .into_iter()
            .filter(|(_, p)| p.kind.is_trainable())
            .map(|(name, p)| Slot {
                name,
                var: p.var,
                kind: p.kind,
                m: None,
                v: None,
            })
            .collect();
        Ok(Optimizer {
            algorithm,
            lr: algorithm.base_lr(),
            step: 0,
            slots,
        })
    }

    /// The current learning rate.
    pub fn learning_rate(&self) -> f64 {
        self.lr
    }

    /// Sets the learning rate (the trainer applies its schedule with this).
    pub fn set_learning_rate(&mut self, lr: f64) {
        self.lr = lr;
    }

    /// Number of steps taken.
    pub fn steps(&self) -> u64 {
        self.step
    }

    /// The algorithm and its settings.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// Back-propagates `loss` and takes a step.
    pub fn backward_step(&mut self, loss: &Tensor) -> Result<()> {
        let grads = loss.backward()?;
        self.step(&grads)
    }

    /// One update with the gradients in `grads`, then the kernel constraint. Parameters without
    /// a gradient are left alone (their state too).
    pub fn step(&mut self, grads: &GradStore) -> Result<()> {
        self.step += 1;
        let t = self.step as i32;
        let lr = self.lr;
        for slot in &mut self.slots {
            let Some(g) = grads.get(slot.var.as_tensor()) else {
                continue;
            };
            let p = slot.var.as_tensor().detach();
            let decays = slot.kind.takes_weight_decay();
            let new_p = match self.algorithm {
                Algorithm::Adam(c) => {
                    let g = if decays && c.weight_decay > 0.0 && c.decay_mode == WeightDecay::L2 {
                        (g + p.affine(c.weight_decay, 0.0)?)?
                    } else {
                        g.detach()
                    };
                    let m = match &slot.m {
                        Some(m) => (m.affine(c.beta1, 0.0)? + g.affine(1.0 - c.beta1, 0.0)?)?,
                        None => g.affine(1.0 - c.beta1, 0.0)?,
                    };
                    let v = match &slot.v {
                        Some(v) => {
                            (v.affine(c.beta2, 0.0)? + g.sqr()?.affine(1.0 - c.beta2, 0.0)?)?
                        }
                        None => g.sqr()?.affine(1.0 - c.beta2, 0.0)?,
                    };
                    let m_hat = m.affine(1.0 / (1.0 - c.beta1.powi(t)), 0.0)?;
                    let v_hat = v.affine(1.0 / (1.0 - c.beta2.powi(t)), 0.0)?;
                    let update = (m_hat / (v_hat.sqrt()? + c.eps)?)?;
                    let p =
                        if decays && c.weight_decay > 0.0 && c.decay_mode == WeightDecay::Decoupled
                        {
                            p.affine(1.0 - lr * c.weight_decay, 0.0)?
                        } else {
                            p
                        };
                    slot.m = Some(m);
                    slot.v = Some(v);
                    (p - update.affine(lr, 0.0)?)?
                }
                Algorithm::Sgd(c) => {
                    let g = if decays && c.weight_decay > 0.0 {
                        (g + p.affine(c.weight_decay, 0.0)?)?
                    } else {
                        g.detach()
                    };
                    let buf = match &slot.m {
                        Some(b) if c.momentum > 0.0 => (b.affine(c.momentum, 0.0)? + &g)?,
                        _ => g.clone(),
                    };
                    let dir = if c.nesterov == Nesterov::On {
                        (&g + buf.affine(c.momentum, 0.0)?)?
                    } else {
                        buf.clone()
                    };
                    slot.m = Some(buf);
                    (p - dir.affine(lr, 0.0)?)?
                }
            };
            let new_p = if slot.kind.is_clipped() {
                new_p.clamp(-1f32, 1f32)?
            } else {
                new_p
            };
            slot.var.set(&new_p)?;
        }
        Ok(())
    }

    /// The state as named tensors plus metadata (algorithm, step, learning rate).
    pub fn state(&self) -> (HashMap<String, Tensor>, HashMap<String, String>) {
        let mut tensors = HashMap::new();
        for s in &self.slots {
            if let Some(m) = &s.m {
                tensors.insert(format!("m.{}", s.name), m.clone());
            }
            if let Some(v) = &s.v {
                tensors.insert(format!("v.{}", s.name), v.clone());
            }
        }
        let mut meta = HashMap::new();
        meta.insert("optimizer".into(), self.algorithm.name().into());
        meta.insert("step".into(), self.step.to_string());
        meta.insert("lr".into(), format!("{:e}", self.lr));
        (tensors, meta)
    }

    /// Writes the state to `path` atomically (safetensors with metadata).
    pub fn save(&self, path: &Path) -> Result<()> {
        let (tensors, meta) = self.state();
        let mut sorted: Vec<(&String, &Tensor)> = tensors.iter().collect();
        sorted.sort_by(|a, b| a.0.cmp(b.0));
        let bytes = safetensors::serialize(sorted, Some(meta)).map_err(|e| Error::State {
            path: path.display().to_string(),
            reason: format!("cannot serialise: {e}"),
        })?;
        write_atomic(path, &bytes)
    }

    /// Restores state saved by [`Optimizer::save`] for the same parameters and algorithm.
    pub fn load(&mut self, path: &Path) -> Result<()> {
        let origin = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|source| Error::Io {
            path: origin.clone(),
            source,
        })?;
        let bad = |reason: String| Error::State {
            path: origin.clone(),
            reason,
        };
        let (_, header) = safetensors::SafeTensors::read_metadata(&bytes)
            .map_err(|e| bad(format!("not a safetensors file: {e}")))?;
        let meta = header.metadata().clone().unwrap_or_default();
        let field = |k: &str| {
            meta.get(k)
                .cloned()
                .ok_or_else(|| bad(format!("missing metadata `{k}`")))
        };
        if field("optimizer")? != self.algorithm.name() {
            return Err(bad(format!(
                "state is for `{}`, this optimizer is `{}`",
                field("optimizer")?,
                self.algorithm.name()
            )));
        }
        let step: u64 = field("step")?
            .parse()
            .map_err(|_| bad("bad `step`".into()))?;
        let lr: f64 = field("lr")?.parse().map_err(|_| bad("bad `lr`".into()))?;
        let device = self
            .slots
            .first()
            .map(|s| s.var.device().clone())
            .unwrap_or(candle_core::Device::Cpu);
        let tensors = candle_core::safetensors::load_buffer(&bytes, &device)
            .map_err(|e| bad(e.to_string()))?;
        let mut restored = Vec::with_capacity(self.slots.len());
        let mut used = 0;
        for s in &self.slots {
            let take = |prefix: &str| -> Result<Option<Tensor>> {
                match tensors.get(&format!("{prefix}.{}", s.name)) {
                    None => Ok(None),
                    Some(t) if t.dims() == s.var.dims() => Ok(Some(t.clone())),
                    Some(t) => Err(bad(format!(
                        "`{prefix}.{}` has shape {:?}, parameter has {:?}",
                        s.name,
                        t.dims(),
                        s.var.dims()
                    ))),
                }
            };
            let (m, v) = (take("m")?, take("v")?);
            used += usize::from(m.is_some()) + usize::from(v.is_some());
            restored.push((m, v));
        }
        if used != tensors.len() {
            let known: Vec<String> = self
                .slots
                .iter()
                .flat_map(|s| [format!("m.{}", s.name), format!("v.{}", s.name)])
                .collect();
            let extra = tensors
                .keys()
                .find(|k| !known.contains(k))
                .cloned()
                .unwrap_or_default();
            return Err(bad(format!(
                "unexpected tensor `{extra}` (state of another model?)"
            )));
        }
        for (s, (m, v)) in self.slots.iter_mut().zip(restored) {
            s.m = m;
            s.v = v;
        }
        self.step = step;
        self.lr = lr;
        Ok(())
    }
}
