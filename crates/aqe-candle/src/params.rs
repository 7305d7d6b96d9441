//! The parameter store: seeded creation of named variables with their roles, and checkpoints.
//!
//! Candle's `VarMap` cannot be seeded and does not know what a variable is for. The optimizer
//! needs both: quantized kernels are clipped to `[-1, 1]` after each step, biases and BatchNorm
//! parameters get no weight decay, running statistics are not trained at all. Layers therefore
//! create their variables through a [`Scope`] that records a [`ParamKind`] with each.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use candle_core::{DType, Device, Shape, Tensor, Var};

use crate::error::{Error, Result};
use crate::init::{Init, SeededRng};

/// What a parameter is, which decides how the optimizer treats it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ParamKind {
    /// A float convolution or linear weight (weight decay applies).
    Kernel,
    /// Latent weights of a quantized layer: trained, clipped to `[-1, 1]` after every step
    /// (the `kernel_constraint` of Algorithm 1).
    QuantizedKernel,
    /// A bias (no weight decay).
    Bias,
    /// BatchNorm scale gamma (no weight decay).
    NormScale,
    /// BatchNorm shift beta (no weight decay).
    NormShift,
    /// A running statistic (BatchNorm mean / variance): saved, never trained.
    Buffer,
}

impl ParamKind {
    /// Whether the optimizer updates it.
    pub fn is_trainable(self) -> bool {
        self != ParamKind::Buffer
    }

    /// Whether weight decay applies to it.
    pub fn takes_weight_decay(self) -> bool {
        matches!(self, ParamKind::Kernel | ParamKind::QuantizedKernel)
    }

    /// Whether it is clipped to `[-1, 1]` after every step.
    pub fn is_clipped(self) -> bool {
        self == ParamKind::QuantizedKernel
    }
}

/// One named variable and its role.
#[derive(Debug, Clone)]
pub struct Param {
    /// The variable (holds the value; gradients are taken with respect to it).
    pub var: Var,
    /// Its role.
    pub kind: ParamKind,
}

#[derive(Debug)]
struct Inner {
    params: BTreeMap<String, Param>,
    rng: SeededRng,
}

/// Every variable of a model, created from a seed so that a model is reproducible.
///
/// Clones share the same variables.
///
/// ```
/// use aqe_candle::{Init, ParamKind, ParamStore};
/// use candle_core::Device;
///
/// let store = ParamStore::new(42, &Device::Cpu);
/// let w = store.root().pp("fc").get((4, 3), "weight", Init::Uniform(0.1), ParamKind::Kernel)?;
/// assert_eq!(w.dims(), &[4, 3]);
/// assert_eq!(store.names(), vec!["fc.weight".to_string()]);
/// # Ok::<(), aqe_candle::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct ParamStore {
    inner: Arc<Mutex<Inner>>,
    device: Device,
}

impl ParamStore {
    /// An empty store whose initial values are drawn from `seed`, on `device`.
    pub fn new(seed: u64, device: &Device) -> Self {
        ParamStore {
            inner: Arc::new(Mutex::new(Inner {
                params: BTreeMap::new(),
                rng: SeededRng::new(seed),
            })),
            device: device.clone(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the map half-updated (every update is one
        // insert), so a poisoned lock is still consistent.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The root scope (no prefix).
    pub fn root(&self) -> Scope {
        Scope {
            store: self.clone(),
            prefix: String::new(),
        }
    }

    /// The device the variables live on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// All parameters, sorted by name.
    pub fn params(&self) -> Vec<(String, Param)> {
        self.lock()
            .params
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// All names, sorted.
    pub fn names(&self) -> Vec<String> {
        self.lock().params.keys().cloned().collect()
    }

    /// The parameter called `name`.
    pub fn get(&self, name: &str) -> Option<Param> {
        self.lock().params.get(name).cloned()
    }

    /// Number of scalar values in parameters of the given kinds.
    pub fn count(&self, kinds: &[ParamKind]) -> usize {
        self.lock()
            .params
            .values()
            .filter(|p| kinds.contains(&p.kind))
            .map(|p| p.var.elem_count())
            .sum()
    }

    /// Clips every [`ParamKind::QuantizedKernel`] to `[-1, 1]` (the kernel constraint).
    pub fn clip_quantized(&self) -> Result<()> {
        for (_, p) in self.params() {
            if p.kind.is_clipped() {
                p.var.set(&p.var.as_tensor().clamp(-1f32, 1f32)?)?;
            }
        }
        Ok(())
    }

    /// Every value as a map from name to (detached) tensor.
    pub fn tensors(&self) -> HashMap<String, Tensor> {
        self.lock()
            .params
            .iter()
            .map(|(k, p)| (k.clone(), p.var.as_tensor().detach()))
            .collect()
    }

    /// Serialises every parameter to safetensors bytes, with `metadata`.
    pub fn to_safetensors(&self, metadata: Option<HashMap<String, String>>) -> Result<Vec<u8>> {
        let tensors = self.tensors();
        let mut sorted: Vec<(&String, &Tensor)> = tensors.iter().collect();
        sorted.sort_by(|a, b| a.0.cmp(b.0));
        safetensors::serialize(sorted, metadata).map_err(|e| Error::State {
            path: "<parameters>".into(),
            reason: format!("cannot serialise: {e}"),
        })
    }

    /// Writes every parameter to `path` (safetensors) atomically: a crash leaves either the old
    /// file or the new one, never a torn one.
    pub fn save(&self, path: &Path) -> Result<()> {
        write_atomic(path, &self.to_safetensors(None)?)
    }

    /// Loads values saved by [`ParamStore::save`] into the existing variables.
    ///
    /// Every variable must be present in the file with the same shape, and the file must hold
    /// nothing else; otherwise nothing is changed and the error names the tensor.
    pub fn load(&self, path: &Path) -> Result<()> {
        let bytes = std::fs::read(path).map_err(|source| Error::Io {
            path: path.display().to_string(),
            source,
        })?;
        self.load_bytes(&bytes, &path.display().to_string())
    }

    /// Like [`ParamStore::load`] from bytes; `origin` names the source in errors.
    pub fn load_bytes(&self, bytes: &[u8], origin: &str) -> Result<()> {
        let loaded = candle_core::safetensors::load_buffer(bytes, &self.device).map_err(|e| {
            Error::State {
                path: origin.into(),
                reason: format!("not a safetensors file: {e}"),
            }
        })?;
        let params = self.params();
        for (name, p) in &params {
            let t = loaded.get(name).ok_or_else(|| Error::State {
                path: origin.into(),
                reason: format!("missing tensor `{name}`"),
            })?;
            if t.dims() != p.var.dims() || t.dtype() != p.var.dtype() {
                return Err(Error::State {
                    path: origin.into(),
                    reason: format!(
                        "tensor `{name}` has shape {:?} {:?}, the model expects {:?} {:?}",
                        t.dims(),
                        t.dtype(),
                        p.var.dims(),
                        p.var.dtype()
                    ),
                });
            }
        }
        if let Some(extra) = loaded.keys().find(|k| !params.iter().any(|(n, _)| n == *k)) {
            return Err(Error::State {
                path: origin.into(),
                reason: format!("unexpected tensor `{extra}`"),
            });
        }
        for (name, p) in params {
            p.var.set(&loaded[&name])?;
        }
        Ok(())
    }
}

/// Writes `bytes` to `path` through a temporary file in the same directory and a rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let io = |source| Error::Io {
        path: path.display().to_string(),
        source,
    };
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let file_name = path.file_name().ok_or_else(|| Error::Config {
        what: path.display().to_string(),
        reason: "not a file path".into(),
    })?;
    let tmp = dir.join(format!(
        ".{}.tmp{}",
        file_name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(io)
}

/// A name prefix inside a [`ParamStore`], in the manner of Candle's `VarBuilder`.
#[derive(Debug, Clone)]
pub struct Scope {
    store: ParamStore,
    prefix: String,
}

impl Scope {
    /// The scope `prefix.name`.
    pub fn pp(&self, name: impl std::fmt::Display) -> Scope {
        let prefix = if self.prefix.is_empty() {
            name.to_string()
        } else {
            format!("{}.{name}", self.prefix)
        };
        Scope {
            store: self.store.clone(),
            prefix,
        }
    }

    /// The full name of `name` in this scope.
    pub fn path(&self, name: &str) -> String {
        if self.prefix.is_empty() {
            name.to_string()
        } else {
            format!("{}.{name}", self.prefix)
        }
    }

    /// The scope's prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The store.
    pub fn store(&self) -> &ParamStore {
        &self.store
    }

    /// The device.
    pub fn device(&self) -> &Device {
        &self.store.device
    }

    /// Creates the variable `name` of `shape`, initialised from the store's seeded generator.
    ///
    /// Creating the same name twice is an error (two layers sharing a prefix by mistake).
    pub fn get(
        &self,
        shape: impl Into<Shape>,
        name: &str,
        init: Init,
        kind: ParamKind,
    ) -> Result<Tensor> {
        let shape = shape.into();
        let path = self.path(name);
        let mut inner = self.store.lock();
        if inner.params.contains_key(&path) {
            return Err(Error::Config {
                what: path,
                reason: "a parameter with this name already exists".into(),
            });
        }
        let values = init.sample(shape.elem_count(), &mut inner.rng);
        let t = Tensor::from_vec(values, shape, &Device::Cpu)?
            .to_device(&self.store.device)?
            .to_dtype(DType::F32)?;
        let var = Var::from_tensor(&t)?;
        let out = var.as_tensor().clone();
        inner.params.insert(path, Param { var, kind });
        Ok(out)
    }

    /// The variable `name` in this scope, created earlier.
    pub fn var(&self, name: &str) -> Option<Var> {
        self.store.get(&self.path(name)).map(|p| p.var)
    }
}
