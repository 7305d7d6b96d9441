//! MINW-Net models: training graphs, packed inference graphs and export between them (planned;
//! see issues "minw-models and reproduce-cifar" and "Deploy").
//!
//! **Status: not implemented yet.** This crate currently exports nothing.
//!
//! # Planned public API
//! - ConvNet Models A-D (BNN's CIFAR ConvNet and its narrower variants), ResNet-20/32/44/56/110,
//!   AlexNet-BN and ResNet-18, each buildable at any MINW setting M/N with per-layer overrides.
//! - A model summary (bits, memory, MACs and kernel per layer).
//! - Export of a trained checkpoint to a packed model file and a packed inference engine whose
//!   predictions equal the training graph's at alpha = 1.

#![forbid(unsafe_code)]
