//! Candle adapters for AQE training of MINW-Nets (planned; see issue "aqe-candle").
//!
//! **Status: not implemented yet.** This crate currently exports nothing. It exists so the
//! workspace has its final shape; its public API lands with its own issue.
//!
//! # Role
//! Adapts [`aqe_core`]'s slice maths to Candle tensors. Nothing here knows about packed bits.
//!
//! # Planned public API
//! - Quantizer ops: one Candle custom op per `aqe_core` estimator, with a backward whose values
//!   equal `aqe_core`'s exactly; alpha read from a shared schedule handle the trainer advances.
//! - Layers (Larq's vocabulary, Candle's shape): `QuantConv2d` / `quant_conv2d(in, out, k, cfg, vb)`
//!   and `QuantLinear` / `quant_linear(..)` with `input_quantizer`, `kernel_quantizer` and
//!   `kernel_constraint`; `BatchNorm`, `HardTanh`, `MaxPool2d` with backward.
//! - A fused CPU convolution (forward, d-input, d-weight) used by both the float and the
//!   quantized paths.
//! - Optimizers: Adam with exponential LR decay, SGD with momentum / weight decay / multistep LR,
//!   parameter groups, latent-weight clipping, and optimizer state saved to safetensors.
//! - Losses: cross-entropy and squared hinge.
//! - A `cuda` feature forwarded to Candle.

#![forbid(unsafe_code)]
