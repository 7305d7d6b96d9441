//! Access to the `f32` data of CPU tensors without copies, for the hand-written ops.

use candle_core::{CpuStorage, DType, Layout, Result, Shape, Storage, Tensor};

/// Runs `f` on the contiguous `f32` data of `t` (a CPU tensor), copying only when `t` is not
/// contiguous.
pub(crate) fn with_slice<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> R) -> Result<R> {
    let t = t.contiguous()?;
    let (storage, layout) = t.storage_and_layout();
    match &*storage {
        Storage::Cpu(cpu) => Ok(f(contiguous(cpu, layout)?)),
        _ => candle_core::bail!(
            "expected a CPU tensor, got one on {:?}",
            t.device().location()
        ),
    }
}

/// The `f32` data of contiguous CPU storage described by `layout`.
pub(crate) fn contiguous<'a>(cpu: &'a CpuStorage, layout: &Layout) -> Result<&'a [f32]> {
    let data = cpu.as_slice::<f32>()?;
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => candle_core::bail!("internal: expected contiguous storage"),
    }
}

/// A new CPU tensor of `shape` holding `data` (no autograd history).
pub(crate) fn tensor(data: Vec<f32>, shape: impl Into<Shape>) -> Result<Tensor> {
    Tensor::from_vec(data, shape, &candle_core::Device::Cpu)
}

/// Fails unless `t` is an `f32` tensor.
pub(crate) fn expect_f32(op: &str, t: &Tensor) -> Result<()> {
    if t.dtype() == DType::F32 {
        Ok(())
    } else {
        candle_core::bail!("{op}: expected an f32 tensor, got {:?}", t.dtype())
    }
}
