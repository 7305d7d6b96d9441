//! BatchNorm over the channel (last) axis of NHWC or `[batch, features]` tensors, optionally fused
//! with HardTanh, and HardTanh alone.
//!
//! The paper's block is `QuantConv -> (MaxPool) -> BatchNorm -> HardTanh`; HardTanh keeps
//! activations in `[-1, 1]` and provides the `1{|x| <= 1}` gate. Fusing the two saves a pass and a
//! tensor. HardTanh's backward here is `dy * 1{|x| <= 1}` with the end points included (Candle's
//! `clamp` would give 0.5 at exactly +-1).
//!
//! Training mode normalises with the batch statistics (biased variance) and updates the running
//! statistics with `running = (1 - momentum) * running + momentum * batch` using the unbiased
//! variance, as PyTorch does; evaluation mode uses the running statistics.

use std::sync::{Arc, Mutex};

use candle_core::{
    CpuStorage, CustomOp1, CustomOp2, CustomOp3, D, Layout, ModuleT, Result, Shape, Tensor, Var,
};
use rayon::prelude::*;

use crate::cpu;
use crate::init::Init;
use crate::params::{ParamKind, Scope};

/// An element-wise function applied after normalisation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Activation {
    /// None.
    #[default]
    Identity,
    /// `clamp(x, -1, 1)` with backward `1{|x| <= 1}`.
    HardTanh,
    /// `max(x, 0)` with backward `1{x >= 0}` (Candle's convention at 0).
    Relu,
}

impl Activation {
    /// `(lo, hi)`: the output is `clamp(v, lo, hi)` and the gradient passes where
    /// `lo <= v <= hi`.
    fn range(self) -> (f32, f32) {
        match self {
            Activation::Identity => (f32::NEG_INFINITY, f32::INFINITY),
            Activation::HardTanh => (-1.0, 1.0),
            Activation::Relu => (0.0, f32::INFINITY),
        }
    }
}

/// BatchNorm settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BatchNormConfig {
    /// Added to the variance before the square root; default 1e-5.
    pub eps: f32,
    /// Weight of the batch statistics in the running averages; default 0.1.
    pub momentum: f32,
    /// What follows the normalisation; default none.
    pub activation: Activation,
}

impl Default for BatchNormConfig {
    fn default() -> Self {
        BatchNormConfig {
            eps: 1e-5,
            momentum: 0.1,
            activation: Activation::Identity,
        }
    }
}

/// BatchNorm over the last axis, with learnable scale and shift and running statistics.
#[derive(Debug, Clone)]
pub struct BatchNorm {
    gamma: Tensor,
    beta: Tensor,
    running_mean: Var,
    running_var: Var,
    cfg: BatchNormConfig,
    name: String,
}

/// A [`BatchNorm`] over `channels` features, with parameters `weight`, `bias`, `running_mean`
/// and `running_var` in `scope`.
pub fn batch_norm(channels: usize, cfg: BatchNormConfig, scope: Scope) -> crate::Result<BatchNorm> {
    let gamma = scope.get(channels, "weight", Init::Const(1.0), ParamKind::NormScale)?;
    let beta = scope.get(channels, "bias", Init::Const(0.0), ParamKind::NormShift)?;
    scope.get(
        channels,
        "running_mean",
        Init::Const(0.0),
        ParamKind::Buffer,
    )?;
    scope.get(channels, "running_var", Init::Const(1.0), ParamKind::Buffer)?;
    let var = |n: &str| {
        scope.var(n).ok_or_else(|| crate::Error::Config {
            what: scope.path(n),
            reason: "missing".into(),
        })
    };
    Ok(BatchNorm {
        gamma,
        beta,
        running_mean: var("running_mean")?,
        running_var: var("running_var")?,
        cfg,
        name: scope.prefix().to_string(),
    })
}

impl BatchNorm {
    /// Number of channels.
    pub fn channels(&self) -> usize {
        self.gamma.dim(0).unwrap_or(0)
    }

    /// `(gamma, beta, running_mean, running_var)`, for export.
    pub fn parameters(&self) -> (&Tensor, &Tensor, &Tensor, &Tensor) {
        (
            &self.gamma,
            &self.beta,
            self.running_mean.as_tensor(),
            self.running_var.as_tensor(),
        )
    }

    /// The configuration.
    pub fn config(&self) -> BatchNormConfig {
        self.cfg
    }

    fn check(&self, x: &Tensor) -> Result<()> {
        cpu::expect_f32(&self.name, x)?;
        if x.rank() < 2 || x.dim(D::Minus1)? != self.channels() {
            candle_core::bail!(
                "{}: batch norm over {} channels expects [..., {}] (channels last), got {:?}",
                self.name,
                self.channels(),
                self.channels(),
                x.dims()
            );
        }
        Ok(())
    }

    /// The reference implementation with Candle tensor ops (any device); used off the CPU and as
    /// the test oracle of the fused CPU op.
    pub fn forward_reference(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.check(x)?;
        let c = self.channels();
        let rows = x.elem_count() / c;
        let flat = x.reshape((rows, c))?;
        let (mean, var) = if train {
            let mean = flat.mean(0)?;
            let centred = flat.broadcast_sub(&mean)?;
            let var = centred.sqr()?.mean(0)?;
            self.update_running(&mean.detach(), &var.detach(), rows)?;
            (mean, var)
        } else {
            (
                self.running_mean.as_tensor().clone(),
                self.running_var.as_tensor().clone(),
            )
        };
        let inv = (var + f64::from(self.cfg.eps))?.sqrt()?.recip()?;
        let y = flat
            .broadcast_sub(&mean)?
            .broadcast_mul(&inv)?
            .broadcast_mul(&self.gamma)?
            .broadcast_add(&self.beta)?;
        let y = match self.cfg.activation {
            Activation::Identity => y,
            Activation::HardTanh => hard_tanh(&y)?,
            Activation::Relu => y.relu()?,
        };
        y.reshape(x.shape())
    }

    fn update_running(&self, mean: &Tensor, var: &Tensor, rows: usize) -> Result<()> {
        let m = f64::from(self.cfg.momentum);
        let unbiased = if rows > 1 {
            var.affine(rows as f64 / (rows - 1) as f64, 0.0)?
        } else {
            var.clone()
        };
        let rm = (self.running_mean.as_tensor().affine(1.0 - m, 0.0)? + mean.affine(m, 0.0)?)?;
        let rv = (self.running_var.as_tensor().affine(1.0 - m, 0.0)? + unbiased.affine(m, 0.0)?)?;
        self.running_mean.set(&rm)?;
        self.running_var.set(&rv)
    }
}

impl ModuleT for BatchNorm {
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        if !x.device().is_cpu() {
            return self.forward_reference(x, train);
        }
        self.check(x)?;
        let c = self.channels();
        let rows = x.elem_count() / c;
        let stats = if train {
            Stats::Batch(Arc::new(Mutex::new(None)))
        } else {
            let mean = self.running_mean.as_tensor().to_vec1::<f32>()?;
            let var = self.running_var.as_tensor().to_vec1::<f32>()?;
            let inv = var
                .iter()
                .map(|v| 1.0 / (v + self.cfg.eps).sqrt())
                .collect();
            Stats::Fixed { mean, inv }
        };
        let op = BatchNormOp {
            eps: self.cfg.eps,
            activation: self.cfg.activation,
            channels: c,
            stats: stats.clone(),
        };
        let y = x.contiguous()?.apply_op3(&self.gamma, &self.beta, op)?;
        if let Stats::Batch(saved) = stats {
            let guard = saved.lock().unwrap_or_else(|p| p.into_inner());
            let s = guard
                .as_ref()
                .ok_or_else(|| candle_core::Error::Msg("batch norm: statistics missing".into()))?;
            let mean = cpu::tensor(s.mean.clone(), c)?;
            let var = cpu::tensor(s.var.clone(), c)?;
            drop(guard);
            self.update_running(&mean, &var, rows)?;
        }
        Ok(y)
    }
}

#[derive(Debug)]
struct BatchStats {
    mean: Vec<f32>,
    /// Biased batch variance.
    var: Vec<f32>,
    inv: Vec<f32>,
}

#[derive(Debug, Clone)]
enum Stats {
    /// Computed in the forward pass, read by the backward pass.
    Batch(Arc<Mutex<Option<BatchStats>>>),
    /// Running statistics (evaluation).
    Fixed { mean: Vec<f32>, inv: Vec<f32> },
}

/// Rows per rayon task.
const ROW_CHUNK: usize = 1024;

struct BatchNormOp {
    eps: f32,
    activation: Activation,
    channels: usize,
    stats: Stats,
}

impl BatchNormOp {
    /// `(mean, inv)` for the backward, whichever mode ran.
    fn mean_inv(&self) -> Result<(Vec<f32>, Vec<f32>)> {
        match &self.stats {
            Stats::Fixed { mean, inv } => Ok((mean.clone(), inv.clone())),
            Stats::Batch(s) => {
                let g = s.lock().unwrap_or_else(|p| p.into_inner());
                let s = g.as_ref().ok_or_else(|| {
                    candle_core::Error::Msg("batch norm: backward before forward".into())
                })?;
                Ok((s.mean.clone(), s.inv.clone()))
            }
        }
    }
}

/// Per-channel sums over all rows, computed in parallel over chunks of [`ROW_CHUNK`] rows:
/// `f(rows, s, q)` adds its chunk's contributions into the two `c`-long `f32` accumulators
/// (contiguous per channel, so the inner loops vectorise); chunks are combined in `f64`.
fn channel_sums(
    rows: usize,
    c: usize,
    f: impl Fn(std::ops::Range<usize>, &mut [f32], &mut [f32]) + Sync,
) -> (Vec<f64>, Vec<f64>) {
    let chunks = rows.div_ceil(ROW_CHUNK);
    let partial: Vec<(Vec<f32>, Vec<f32>)> = (0..chunks)
        .into_par_iter()
        .map(|chunk| {
            let (mut s, mut q) = (vec![0f32; c], vec![0f32; c]);
            f(
                chunk * ROW_CHUNK..((chunk + 1) * ROW_CHUNK).min(rows),
                &mut s,
                &mut q,
            );
            (s, q)
        })
        .collect();
    let (mut s64, mut q64) = (vec![0f64; c], vec![0f64; c]);
    for (s, q) in &partial {
        for k in 0..c {
            s64[k] += f64::from(s[k]);
            q64[k] += f64::from(q[k]);
        }
    }
    (s64, q64)
}

/// `(scale, shift)` with `y = x * scale + shift` the normalised, affine output.
fn affine(gamma: &[f32], beta: &[f32], mean: &[f32], inv: &[f32]) -> (Vec<f32>, Vec<f32>) {
    let scale: Vec<f32> = gamma.iter().zip(inv).map(|(g, i)| g * i).collect();
    let shift = beta
        .iter()
        .zip(mean)
        .zip(&scale)
        .map(|((b, m), s)| b - m * s)
        .collect();
    (scale, shift)
}

impl CustomOp3 for BatchNormOp {
    fn name(&self) -> &'static str {
        "aqe-batch-norm"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = cpu::contiguous(s1, l1)?;
        let gamma = cpu::contiguous(s2, l2)?;
        let beta = cpu::contiguous(s3, l3)?;
        let c = self.channels;
        let rows = x.len() / c;
        let (mean, inv) = match &self.stats {
            Stats::Fixed { mean, inv } => (mean.clone(), inv.clone()),
            Stats::Batch(saved) => {
                // Sums of (x - x0) and its square, shifted by the first row to avoid cancellation.
                let x0: Vec<f32> = x.get(..c).map_or_else(|| vec![0.0; c], <[f32]>::to_vec);
                let (s, q) = channel_sums(rows, c, |range, s, q| {
                    for xr in x[range.start * c..range.end * c].chunks_exact(c) {
                        for (((s, q), &v), &o) in s.iter_mut().zip(q.iter_mut()).zip(xr).zip(&x0) {
                            let d = v - o;
                            *s += d;
                            *q += d * d;
                        }
                    }
                });
                let n = rows.max(1) as f64;
                let mean: Vec<f32> = s
                    .iter()
                    .zip(&x0)
                    .map(|(s, &o)| (s / n + f64::from(o)) as f32)
                    .collect();
                let var: Vec<f32> = s
                    .iter()
                    .zip(&q)
                    .map(|(s, q)| (q / n - (s / n).powi(2)).max(0.0) as f32)
                    .collect();
                let inv: Vec<f32> = var.iter().map(|v| 1.0 / (v + self.eps).sqrt()).collect();
                *saved.lock().unwrap_or_else(|p| p.into_inner()) = Some(BatchStats {
                    mean: mean.clone(),
                    var,
                    inv: inv.clone(),
                });
                (mean, inv)
            }
        };
        let (scale, shift) = affine(gamma, beta, &mean, &inv);
        let mut y = vec![0f32; x.len()];
        let (lo, hi) = self.activation.range();
        y.par_chunks_mut(ROW_CHUNK * c)
            .zip(x.par_chunks(ROW_CHUNK * c))
            .for_each(|(yc, xc)| {
                for (yr, xr) in yc.chunks_exact_mut(c).zip(xc.chunks_exact(c)) {
                    for (((y, &x), &a), &b) in yr.iter_mut().zip(xr).zip(&scale).zip(&shift) {
                        *y = (x * a + b).clamp(lo, hi);
                    }
                }
            });
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        gamma: &Tensor,
        beta: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let c = self.channels;
        let (mean, inv) = self.mean_inv()?;
        let gamma_v = gamma.to_vec1::<f32>()?;
        let (scale, shift) = affine(&gamma_v, &beta.to_vec1::<f32>()?, &mean, &inv);
        // The activation passes the gradient where the forward value lay in its range.
        let bound = self.activation.range();
        let batch = matches!(self.stats, Stats::Batch(_));
        let (dx, dgamma, dbeta) = cpu::with_slice(x, |x| {
            cpu::with_slice(grad, |dy| {
                let rows = x.len() / c;
                // Per element: the gated upstream gradient d and the normalised input xhat.
                let shifted_mean: Vec<f32> = mean.iter().zip(&inv).map(|(m, i)| -m * i).collect();
                let (sc, sh, im, nm) = (&scale[..c], &shift[..c], &inv[..c], &shifted_mean[..c]);
                // xhat = x * inv - mean * inv; the gate uses the forward's own expression.
                let (db, dg) = channel_sums(rows, c, |range, s, q| {
                    let span = range.start * c..range.end * c;
                    let (s, q) = (&mut s[..c], &mut q[..c]);
                    for (xr, gr) in x[span.clone()]
                        .chunks_exact(c)
                        .zip(dy[span].chunks_exact(c))
                    {
                        bwd_row_sums(xr, gr, [sc, sh, im, nm], bound, s, q);
                    }
                });
                let dbeta: Vec<f32> = db.iter().map(|v| *v as f32).collect();
                let dgamma: Vec<f32> = dg.iter().map(|v| *v as f32).collect();
                let n = rows.max(1) as f32;
                // dx = scale * (d - (dbeta + xhat * dgamma) / n) in training mode (scale =
                // gamma * inv), scale * d with fixed statistics: scale * d + a * xhat + b.
                let keep = if batch { 1.0 } else { 0.0 };
                let a: Vec<f32> = (0..c).map(|k| -keep * scale[k] * dgamma[k] / n).collect();
                let b: Vec<f32> = (0..c).map(|k| -keep * scale[k] * dbeta[k] / n).collect();
                let (a, b) = (&a[..c], &b[..c]);
                let mut dx = vec![0f32; x.len()];
                dx.par_chunks_mut(ROW_CHUNK * c)
                    .zip(x.par_chunks(ROW_CHUNK * c))
                    .zip(dy.par_chunks(ROW_CHUNK * c))
                    .for_each(|((out, xc), gc)| {
                        for ((row, xr), gr) in out
                            .chunks_exact_mut(c)
                            .zip(xc.chunks_exact(c))
                            .zip(gc.chunks_exact(c))
                        {
                            bwd_row_dx(row, xr, gr, [sc, sh, im, nm, a, b], bound);
                        }
                    });
                (dx, dgamma, dbeta)
            })
        })??;
        Ok((
            Some(cpu::tensor(dx, x.shape())?),
            Some(cpu::tensor(dgamma, c)?),
            Some(cpu::tensor(dbeta, c)?),
        ))
    }
}

/// The gated gradient: `g` where the forward value `x * scale + shift` lay in `[lo, hi]`.
#[inline(always)]
fn gated(x: f32, g: f32, scale: f32, shift: f32, (lo, hi): (f32, f32)) -> f32 {
    let v = x * scale + shift;
    if v >= lo && v <= hi { g } else { 0.0 }
}

/// Backward, first pass, one row: `s += d`, `q += d * xhat` per channel, with
/// `coef = [scale, shift, inv, -mean * inv]`. Plain slices of one length, so it vectorises.
#[inline(always)]
fn bwd_row_sums(
    x: &[f32],
    g: &[f32],
    coef: [&[f32]; 4],
    bound: (f32, f32),
    s: &mut [f32],
    q: &mut [f32],
) {
    let c = x.len();
    let (g, s, q) = (&g[..c], &mut s[..c], &mut q[..c]);
    let [sc, sh, im, nm] = coef.map(|v| &v[..c]);
    for k in 0..c {
        let d = gated(x[k], g[k], sc[k], sh[k], bound);
        s[k] += d;
        q[k] += d * (x[k] * im[k] + nm[k]);
    }
}

/// Backward, second pass, one row: `dx = scale * d + a * xhat + b`, with
/// `coef = [scale, shift, inv, -mean * inv, a, b]`.
#[inline(always)]
fn bwd_row_dx(dx: &mut [f32], x: &[f32], g: &[f32], coef: [&[f32]; 6], bound: (f32, f32)) {
    let c = dx.len();
    let (x, g) = (&x[..c], &g[..c]);
    let [sc, sh, im, nm, a, b] = coef.map(|v| &v[..c]);
    for k in 0..c {
        let d = gated(x[k], g[k], sc[k], sh[k], bound);
        dx[k] = sc[k] * d + a[k] * (x[k] * im[k] + nm[k]) + b[k];
    }
}

/// `clamp(x, -1, 1)` with backward `dy * 1{|x| <= 1}` (end points included).
pub fn hard_tanh(x: &Tensor) -> Result<Tensor> {
    if x.device().is_cpu() {
        cpu::expect_f32("hard_tanh", x)?;
        x.contiguous()?.apply_op1(HardTanhOp)
    } else {
        // Off the CPU: clamp, whose gradient at exactly +-1 is 0.5 instead of 1.
        x.clamp(-1f32, 1f32)
    }
}

struct HardTanhOp;

impl CustomOp1 for HardTanhOp {
    fn name(&self) -> &'static str {
        "aqe-hard-tanh"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = cpu::contiguous(s, l)?;
        Ok((
            CpuStorage::F32(x.iter().map(|v| v.clamp(-1.0, 1.0)).collect()),
            l.shape().clone(),
        ))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let dx = cpu::with_slice(arg, |x| {
            cpu::with_slice(grad, |g| {
                x.iter()
                    .zip(g)
                    .map(|(x, g)| if x.abs() <= 1.0 { *g } else { 0.0 })
                    .collect()
            })
        })??;
        Ok(Some(cpu::tensor(dx, arg.shape())?))
    }
}

/// `activation(a + b)` in one pass with its backward (the residual sum of a ResNet block):
/// both inputs receive `dy` where `a + b` lay in the activation's range.
///
/// ```
/// use aqe_candle::norm::{add_activation, Activation};
/// use candle_core::{Device, Tensor};
///
/// let a = Tensor::new(&[0.5f32, -2.0, 0.25], &Device::Cpu)?;
/// let b = Tensor::new(&[0.75f32, 0.5, -0.5], &Device::Cpu)?;
/// let y = add_activation(&a, &b, Activation::HardTanh)?;
/// assert_eq!(y.to_vec1::<f32>()?, vec![1.0, -1.0, -0.25]);
/// # Ok::<(), candle_core::Error>(())
/// ```
pub fn add_activation(a: &Tensor, b: &Tensor, activation: Activation) -> Result<Tensor> {
    if a.dims() != b.dims() {
        candle_core::bail!(
            "add_activation: shapes {:?} and {:?} differ",
            a.dims(),
            b.dims()
        );
    }
    if a.device().is_cpu() {
        cpu::expect_f32("add_activation", a)?;
        cpu::expect_f32("add_activation", b)?;
        a.contiguous()?
            .apply_op2(&b.contiguous()?, AddActivationOp(activation))
    } else {
        let s = (a + b)?;
        match activation {
            Activation::Identity => Ok(s),
            Activation::HardTanh => hard_tanh(&s),
            Activation::Relu => s.relu(),
        }
    }
}

struct AddActivationOp(Activation);

impl CustomOp2 for AddActivationOp {
    fn name(&self) -> &'static str {
        "aqe-add-activation"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (a, b) = (cpu::contiguous(s1, l1)?, cpu::contiguous(s2, l2)?);
        let (lo, hi) = self.0.range();
        let mut y = vec![0f32; a.len()];
        y.par_chunks_mut(1 << 16)
            .zip(a.par_chunks(1 << 16))
            .zip(b.par_chunks(1 << 16))
            .for_each(|((y, a), b)| {
                for ((y, a), b) in y.iter_mut().zip(a).zip(b) {
                    *y = (a + b).clamp(lo, hi);
                }
            });
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    fn bwd(
        &self,
        a: &Tensor,
        b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (lo, hi) = self.0.range();
        let dx = cpu::with_slice(a, |a| {
            cpu::with_slice(b, |b| {
                cpu::with_slice(grad, |g| {
                    let mut dx = vec![0f32; a.len()];
                    dx.par_chunks_mut(1 << 16)
                        .zip(a.par_chunks(1 << 16))
                        .zip(b.par_chunks(1 << 16))
                        .zip(g.par_chunks(1 << 16))
                        .for_each(|(((d, a), b), g)| {
                            for (((d, a), b), g) in d.iter_mut().zip(a).zip(b).zip(g) {
                                let s = a + b;
                                *d = if s >= lo && s <= hi { *g } else { 0.0 };
                            }
                        });
                    dx
                })
            })
        })???;
        let t = cpu::tensor(dx, a.shape())?;
        Ok((Some(t.clone()), Some(t)))
    }
}
