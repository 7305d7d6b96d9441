//! Export of a trained W1A1 ConvNet A-D to a packed model file (format: `docs/packed-format.md`),
//! refusing, with the layer's name and the reason, anything it cannot represent exactly.
//!
//! ```
//! use aqe_candle::{Alphas, ParamStore};
//! use candle_core::Device;
//! use minw_models::export::{ExportInfo, export_model};
//! use minw_models::packed::PackedModel;
//! use minw_models::{InputShape, ModelSpec, QuantPlan};
//!
//! let spec = ModelSpec {
//!     arch: "D".parse()?,
//!     plan: QuantPlan::new("1/1".parse()?, "aqe".parse()?),
//!     input: InputShape::MNIST,
//!     classes: 10,
//! };
//! let store = ParamStore::new(0, &Device::Cpu);
//! let model = spec.build(&Alphas::default(), &store)?;
//! let info = ExportInfo::for_dataset(minw_models::data::DatasetKind::FashionMnist);
//! let bytes = export_model(&spec, &model, &info)?;
//! let packed = PackedModel::load_bytes(&bytes, "in memory")?;
//! assert_eq!(packed.classes(), 10);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use aqe_candle::norm::Activation;
use aqe_candle::{Alphas, BatchNorm, ParamStore, QuantConfig};
use aqe_core::Quantizer;
use bitpack::{BitTensor, Int8Tensor, Layout, LevelSet, PackedTensor};
use candle_core::{Device, Tensor};
use serde::Serialize;

use crate::data::DatasetKind;
use crate::error::{Error, Result};
use crate::packed::{
    Dir, FORMAT_VERSION, LayerMeta, ModelMeta, ShortcutMeta, bn_scale_shift, fold_threshold,
};
use crate::train::TrainConfig;
use crate::{Arch, MinwSetting, Model, ModelSpec};

/// What the file records besides the network: input normalisation and class names.
#[derive(Debug, Clone, PartialEq)]
pub struct ExportInfo {
    /// Per-channel mean of `(p / 255 - mean) / std`.
    pub mean: Vec<f32>,
    /// Per-channel std.
    pub std: Vec<f32>,
    /// One name per class.
    pub class_names: Vec<String>,
}

impl ExportInfo {
    /// The normalisation ([`DatasetKind::normalize`]) and class names of a built-in dataset.
    pub fn for_dataset(kind: DatasetKind) -> Self {
        let n = kind.normalize();
        let names: Vec<String> = match kind {
            DatasetKind::FashionMnist => crate::data::FASHION_MNIST_CLASSES
                .iter()
                .map(|s| s.to_string())
                .collect(),
            DatasetKind::Cifar10 => crate::data::CIFAR10_CLASSES
                .iter()
                .map(|s| s.to_string())
                .collect(),
            DatasetKind::Cifar100 => crate::data::CIFAR100_CLASSES
                .iter()
                .map(|s| s.to_string())
                .collect(),
            DatasetKind::Mnist => (0..10).map(|d| d.to_string()).collect(),
        };
        ExportInfo {
            mean: n.mean,
            std: n.std,
            class_names: names,
        }
    }
}

/// What an export wrote.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ExportReport {
    /// The architecture, e.g. `convnet-D`.
    pub architecture: String,
    /// The MINW setting.
    pub bits: String,
    /// Where the packed file was written.
    pub path: PathBuf,
    /// Packed file size in bytes.
    pub packed_bytes: u64,
    /// The float checkpoint (`model.safetensors`) size in bytes.
    pub float_bytes: u64,
    /// Per layer: name, kind, and the number of constant (always +1 / always -1) channels.
    pub layers: Vec<(String, String, usize)>,
}

impl ExportReport {
    /// `float_bytes / packed_bytes`.
    pub fn compression(&self) -> f64 {
        self.float_bytes as f64 / self.packed_bytes.max(1) as f64
    }
}

/// A trained run loaded for evaluation: its configuration, model and parameters.
#[derive(Debug)]
pub struct LoadedRun {
    /// The run's `config.toml`.
    pub config: TrainConfig,
    /// The dataset it was trained on.
    pub dataset: DatasetKind,
    /// The model's spec.
    pub spec: ModelSpec,
    /// The model (training graph).
    pub model: Model,
    /// Its parameters, loaded from the latest checkpoint.
    pub store: ParamStore,
    /// The checkpoint file that was loaded.
    pub checkpoint: PathBuf,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |e| Error::Data {
        path: path.display().to_string(),
        offset: None,
        reason: e.to_string(),
    }
}

/// Loads a run directory's `config.toml` and latest checkpoint (read only: nothing in the run
/// directory is written).
///
/// # Errors
/// [`Error::Data`] for missing or malformed files, [`Error::Config`] for a bad configuration.
pub fn load_run(run_dir: &Path) -> Result<LoadedRun> {
    let path = run_dir.join("config.toml");
    let text = std::fs::read_to_string(&path).map_err(io(&path))?;
    let config: TrainConfig = toml::from_str(&text).map_err(|e| Error::Config {
        what: path.display().to_string(),
        reason: e.to_string(),
    })?;
    let resolved = config.resolve()?;
    let latest = run_dir.join("checkpoints").join("latest.json");
    let text = std::fs::read_to_string(&latest).map_err(io(&latest))?;
    let dir = serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| v.get("dir").and_then(|d| d.as_str()).map(str::to_string))
        .filter(|d| !d.is_empty() && !d.contains(['/', '\\']) && d != "..")
        .ok_or_else(|| Error::Data {
            path: latest.display().to_string(),
            offset: None,
            reason: "no valid `dir` in the checkpoint pointer".into(),
        })?;
    let checkpoint = run_dir
        .join("checkpoints")
        .join(dir)
        .join("model.safetensors");
    let store = ParamStore::new(config.seed, &Device::Cpu);
    let model = resolved.spec.build(&Alphas::default(), &store)?;
    store.load(&checkpoint)?;
    Ok(LoadedRun {
        config,
        dataset: resolved.dataset,
        spec: resolved.spec,
        model,
        store,
        checkpoint,
    })
}

/// Exports the latest checkpoint of `run_dir` to `out` (written atomically).
///
/// # Errors
/// As [`load_run`] and [`export_model`], plus I/O errors writing `out`.
pub fn export_run(run_dir: &Path, out: &Path) -> Result<ExportReport> {
    let run = load_run(run_dir)?;
    let info = ExportInfo::for_dataset(run.dataset);
    let (bytes, layers) = export_bytes(&run.spec, &run.model, &info)?;
    aqe_candle::params::write_atomic(out, &bytes)?;
    let float_bytes = std::fs::metadata(&run.checkpoint)
        .map_err(io(&run.checkpoint))?
        .len();
    Ok(ExportReport {
        architecture: arch_name(&run.spec.arch),
        bits: run.spec.plan.setting.to_string(),
        path: out.to_path_buf(),
        packed_bytes: bytes.len() as u64,
        float_bytes,
        layers,
    })
}

/// Exports a built model (parameters as currently held by its tensors) to packed-file bytes.
///
/// # Errors
/// [`Error::Config`] naming the model or layer and the reason for anything that is not a W1A1
/// ConvNet A-D with the default layer policy, or non-finite parameters.
pub fn export_model(spec: &ModelSpec, model: &Model, info: &ExportInfo) -> Result<Vec<u8>> {
    export_bytes(spec, model, info).map(|(b, _)| b)
}

fn arch_name(arch: &Arch) -> String {
    match arch {
        Arch::ConvNet(v) => format!("convnet-{}", v.name()),
        other => other.to_string(),
    }
}

fn refuse(what: impl Into<String>, reason: impl Into<String>) -> Error {
    Error::Config {
        what: what.into(),
        reason: reason.into(),
    }
}

fn vec1(name: &str, t: &Tensor) -> Result<Vec<f32>> {
    let v = t.flatten_all()?.to_vec1::<f32>()?;
    if v.iter().any(|x| !x.is_finite()) {
        return Err(refuse(
            format!("layer `{name}`"),
            "has a non-finite parameter",
        ));
    }
    Ok(v)
}

/// Checks a layer's quantization: input sign (or float for the first layer), weights sign.
fn check_quant(name: &str, q: &QuantConfig, float_input: bool) -> Result<()> {
    let is_sign = |s: Option<aqe_candle::quant::QuantSpec>| matches!(s, Some(spec) if spec.quantizer == Quantizer::Sign);
    if !is_sign(q.kernel_quantizer) {
        return Err(refuse(
            format!("layer `{name}`"),
            format!(
                "weights are {:?}; only sign (1-bit) weights can be packed",
                q.kernel_quantizer.map(|s| s.quantizer)
            ),
        ));
    }
    let input_ok = if float_input {
        q.input_quantizer.is_none()
    } else {
        is_sign(q.input_quantizer)
    };
    if !input_ok {
        return Err(refuse(
            format!("layer `{name}`"),
            format!(
                "input quantizer is {:?}; expected {}",
                q.input_quantizer.map(|s| s.quantizer),
                if float_input {
                    "none (float image)"
                } else {
                    "sign"
                }
            ),
        ));
    }
    Ok(())
}

fn bn_affine(name: &str, bn: &BatchNorm, want: Activation) -> Result<(Vec<f32>, Vec<f32>)> {
    if bn.config().activation != want {
        return Err(refuse(
            format!("layer `{name}.bn`"),
            format!(
                "activation is {:?}, expected {want:?}",
                bn.config().activation
            ),
        ));
    }
    let (g, b, m, v) = bn.parameters();
    let (g, b, m, v) = (
        vec1(name, g)?,
        vec1(name, b)?,
        vec1(name, m)?,
        vec1(name, v)?,
    );
    let (scale, shift) = bn_scale_shift(&g, &b, &m, &v, bn.config().eps);
    if scale.iter().chain(&shift).any(|x| !x.is_finite()) {
        return Err(refuse(
            format!("layer `{name}.bn`"),
            "BatchNorm scale or shift is not finite (negative running variance?)",
        ));
    }
    Ok((scale, shift))
}

fn fold_all(
    name: &str,
    scale: &[f32],
    shift: &[f32],
    k: usize,
) -> Result<(Vec<i32>, Vec<Dir>, usize)> {
    let mut t = Vec::with_capacity(scale.len());
    let mut d = Vec::with_capacity(scale.len());
    let mut constant = 0;
    for (c, (&a, &b)) in scale.iter().zip(shift).enumerate() {
        let (ti, di) = fold_threshold(a, b, k).ok_or_else(|| {
            refuse(
                format!("layer `{name}` channel {c}"),
                format!("cannot fold BatchNorm (scale {a}, shift {b}, K {k}) into a threshold"),
            )
        })?;
        if matches!(di, Dir::AlwaysPlus | Dir::AlwaysMinus) {
            constant += 1;
        }
        t.push(ti);
        d.push(di);
    }
    Ok((t, d, constant))
}

type LayerRows = Vec<(String, String, usize)>;

fn export_bytes(
    spec: &ModelSpec,
    model: &Model,
    info: &ExportInfo,
) -> Result<(Vec<u8>, LayerRows)> {
    let binary = spec.plan.setting == MinwSetting::W1A1;
    let input = spec.input;
    if info.mean.len() != input.channels || info.std.len() != input.channels {
        return Err(refuse(
            "export info",
            "normalisation must have one mean/std per input channel",
        ));
    }
    let mut out = Exported::default();
    let features = match model {
        Model::ConvNet(net) if binary => convnet_layers(net, input, &mut out)?,
        Model::ConvNet(net) => convnet_int8_layers(net, input, &mut out)?,
        Model::ResNet(net) if binary => resnet_layers(net, input, &mut out)?,
        Model::ResNet(_) => {
            return Err(refuse(
                format!("model `{}`", arch_name(&spec.arch)),
                format!(
                    "bits {} not supported by the packed export for ResNets (1/1 only; \
                     ConvNets A-D also export 2-3 bit settings)",
                    spec.plan.setting
                ),
            ));
        }
        _ => {
            return Err(refuse(
                format!("model `{}`", arch_name(&spec.arch)),
                "not supported by the packed export (ConvNet A-D and CIFAR ResNets)",
            ));
        }
    };
    if info.class_names.len() != features {
        return Err(refuse(
            "export info",
            format!(
                "{} class names for {features} classes",
                info.class_names.len()
            ),
        ));
    }
    let meta = ModelMeta {
        format_version: FORMAT_VERSION,
        architecture: arch_name(&spec.arch),
        bits: spec.plan.setting.to_string(),
        input_shape: [input.height, input.width, input.channels],
        normalize_mean: info.mean.clone(),
        normalize_std: info.std.clone(),
        class_names: info.class_names.clone(),
        layers: out.layers,
    };
    let bytes = crate::packed::to_bytes_mixed(&meta, &out.tensors)?;
    Ok((bytes, out.rows))
}

/// What the per-architecture walkers collect.
#[derive(Default)]
struct Exported {
    layers: Vec<LayerMeta>,
    tensors: BTreeMap<String, PackedTensor<'static>>,
    rows: LayerRows,
}

/// The integer levels of a layer's quantized weights as a bitpack int8 tensor: the quantizer
/// is resolved over the weights exactly as the training layer does (TWN reads them).
fn int8_weight(
    name: &str,
    weight: &Tensor,
    q: &QuantConfig,
    layout: Layout,
) -> Result<Int8Tensor<'static>> {
    let spec = q.kernel_quantizer.ok_or_else(|| {
        refuse(
            format!("layer `{name}`"),
            "has float weights; the int8 path needs quantized weights",
        )
    })?;
    let levels = match spec.quantizer {
        Quantizer::Sign | Quantizer::Ternary(_) => LevelSet::Ternary,
        Quantizer::Pow2(_) => LevelSet::Pow2,
        Quantizer::Uniform { .. } => {
            return Err(refuse(
                format!("layer `{name}`"),
                "uniform weight levels are not exact powers of two; not supported",
            ));
        }
    };
    let wv = vec1(name, weight)?;
    let h = spec.quantizer.resolve(&wv);
    let ints: Vec<i8> = wv
        .iter()
        .map(|&x| {
            h.int_level(h.code(x))
                .and_then(|i| i8::try_from(i).ok())
                .unwrap_or(0)
        })
        .collect();
    let t = Int8Tensor::from_levels(levels, layout, weight.dims(), &ints)
        .map_err(|e| refuse(format!("layer `{name}`"), e.to_string()))?;
    // The stored levels times their scale are the training layer's quantized weights.
    let back = t.to_f32();
    if wv.iter().zip(&back).any(|(&x, &b)| h.apply(x) != b) {
        return Err(refuse(
            format!("layer `{name}`"),
            "quantized weights are not exactly the stored levels times their scale",
        ));
    }
    Ok(t)
}

/// The name of the input quantizer of the layer that reads this one's output.
fn activation_of(name: &str, next: Option<&QuantConfig>) -> Result<String> {
    let spec = next.and_then(|q| q.input_quantizer).ok_or_else(|| {
        refuse(
            format!("layer `{name}`"),
            "the next layer reads a float input; the int8 path needs quantized activations",
        )
    })?;
    if spec.quantizer.is_data_dependent() || matches!(spec.quantizer, Quantizer::Uniform { .. }) {
        return Err(refuse(
            format!("layer after `{name}`"),
            format!(
                "activation quantizer `{}` is not supported (sign, ternary with a fixed delta, pow2)",
                spec.quantizer
            ),
        ));
    }
    Ok(spec.quantizer.to_string())
}

/// The layers of a 2-3 bit ConvNet A-D on the int8 path. Returns the number of classes.
fn convnet_int8_layers(
    net: &crate::ConvNet,
    input: crate::InputShape,
    out: &mut Exported,
) -> Result<usize> {
    let convs = net.conv_blocks();
    let fcs = net.fc_blocks();
    // Each layer's quantization, in order; the output quantizer of layer i is the input
    // quantizer of layer i + 1.
    let quants: Vec<&QuantConfig> = convs
        .iter()
        .map(|b| &b.conv.config().quant)
        .chain(fcs.iter().map(|b| &b.fc.config().quant))
        .collect();
    let (mut h, mut w) = (input.height, input.width);
    let mut c_in = input.channels;
    for (i, b) in convs.iter().enumerate() {
        let name = b.conv.name().to_string();
        let cfg = b.conv.config();
        if (i == 0) != cfg.quant.input_quantizer.is_none() {
            return Err(refuse(
                format!("layer `{name}`"),
                "the first layer reads the float image and every other layer quantized activations",
            ));
        }
        let (out_c, kh) = conv_shape(&b.conv, c_in)?;
        let t = int8_weight(&name, b.conv.weight(), &cfg.quant, Layout::Ohwi)?;
        out.tensors.insert(format!("{name}.weight"), t.into());
        let (scale, shift) = bn_affine(&name, &b.bn, Activation::HardTanh)?;
        let activation = activation_of(&name, quants.get(i + 1).copied())?;
        let (scale_bits, shift_bits) = (to_bits(&scale), to_bits(&shift));
        let (stride, padding, pool) = (cfg.stride, cfg.padding, b.pool);
        out.layers.push(if i == 0 {
            LayerMeta::Int8FloatConv {
                name: name.clone(),
                in_channels: c_in,
                out_channels: out_c,
                kernel: kh,
                stride,
                padding,
                pool,
                scale_bits,
                shift_bits,
                activation,
            }
        } else {
            LayerMeta::Int8Conv {
                name: name.clone(),
                in_channels: c_in,
                out_channels: out_c,
                kernel: kh,
                stride,
                padding,
                pool,
                scale_bits,
                shift_bits,
                activation,
            }
        });
        let kind = if i == 0 {
            "int8_float_conv"
        } else {
            "int8_conv"
        };
        out.rows.push((name, kind.into(), 0));
        (h, w) = conv_out(h, w, kh, stride, padding, pool);
        c_in = out_c;
    }
    let mut features = h * w * c_in;
    for (j, b) in fcs.iter().enumerate() {
        let name = b.fc.name().to_string();
        let i = convs.len() + j;
        if b.fc.config().quant.input_quantizer.is_none() {
            return Err(refuse(
                format!("layer `{name}`"),
                "reads float activations; the int8 path needs quantized ones",
            ));
        }
        let out_f = linear_shape(&b.fc, features)?;
        let t = int8_weight(&name, b.fc.weight(), &b.fc.config().quant, Layout::RowMajor)?;
        out.tensors.insert(format!("{name}.weight"), t.into());
        let last = j + 1 == fcs.len();
        if last {
            let (scale, shift) = bn_affine(&name, &b.bn, Activation::Identity)?;
            out.layers.push(LayerMeta::Int8DenseAffine {
                name: name.clone(),
                in_features: features,
                out_features: out_f,
                scale_bits: to_bits(&scale),
                shift_bits: to_bits(&shift),
            });
            out.rows.push((name, "int8_dense_affine".into(), 0));
        } else {
            let (scale, shift) = bn_affine(&name, &b.bn, Activation::HardTanh)?;
            let activation = activation_of(&name, quants.get(i + 1).copied())?;
            out.layers.push(LayerMeta::Int8Dense {
                name: name.clone(),
                in_features: features,
                out_features: out_f,
                scale_bits: to_bits(&scale),
                shift_bits: to_bits(&shift),
                activation,
            });
            out.rows.push((name, "int8_dense".into(), 0));
        }
        features = out_f;
    }
    Ok(features)
}

fn to_bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// Checks that a conv has no bias and square OHWI weights over `in_c` channels; returns
/// `(out, k)`.
fn conv_shape(conv: &aqe_candle::QuantConv2d, in_c: usize) -> Result<(usize, usize)> {
    let name = conv.name();
    if conv.bias().is_some() {
        return Err(refuse(
            format!("layer `{name}`"),
            "has a bias (not supported)",
        ));
    }
    let dims = conv.weight().dims().to_vec();
    let [out_c, kh, kw, c] = dims[..] else {
        return Err(refuse(
            format!("layer `{name}`"),
            format!("weight shape {dims:?} is not OHWI"),
        ));
    };
    if kh != kw || c != in_c {
        return Err(refuse(
            format!("layer `{name}`"),
            format!(
                "weight shape {dims:?} unsupported (expects square kernels over {in_c} channels)"
            ),
        ));
    }
    Ok((out_c, kh))
}

/// Packs a conv's sign weights after checking its quantization and [`conv_shape`]; returns
/// `(out, k)`.
fn conv_weight(
    conv: &aqe_candle::QuantConv2d,
    in_c: usize,
    float_input: bool,
    key: String,
    out: &mut Exported,
) -> Result<(usize, usize)> {
    let name = conv.name();
    check_quant(name, &conv.config().quant, float_input)?;
    let shape = conv_shape(conv, in_c)?;
    let wv = vec1(name, conv.weight())?;
    let bits = BitTensor::from_f32(Layout::Ohwi, conv.weight().dims(), &wv)
        .map_err(|e| refuse(format!("layer `{name}`"), e.to_string()))?;
    out.tensors.insert(key, bits.into());
    Ok(shape)
}

/// Checks that a linear layer has no bias and weights `[out, features]`; returns `out`.
fn linear_shape(fc: &aqe_candle::QuantLinear, features: usize) -> Result<usize> {
    let name = fc.name();
    if fc.bias().is_some() {
        return Err(refuse(
            format!("layer `{name}`"),
            "has a bias (not supported)",
        ));
    }
    let dims = fc.weight().dims().to_vec();
    if dims.len() != 2 || dims[1] != features {
        return Err(refuse(
            format!("layer `{name}`"),
            format!("weight shape {dims:?}, expected [_, {features}]"),
        ));
    }
    Ok(dims[0])
}

/// Packs a linear layer's sign weights after checking its quantization and [`linear_shape`];
/// returns `out`.
fn linear_weight(
    fc: &aqe_candle::QuantLinear,
    features: usize,
    out: &mut Exported,
) -> Result<usize> {
    let name = fc.name();
    check_quant(name, &fc.config().quant, false)?;
    let out_f = linear_shape(fc, features)?;
    let wv = vec1(name, fc.weight())?;
    let bits = BitTensor::from_f32(Layout::RowMajor, fc.weight().dims(), &wv)
        .map_err(|e| refuse(format!("layer `{name}`"), e.to_string()))?;
    out.tensors.insert(format!("{name}.weight"), bits.into());
    Ok(out_f)
}

/// The layers of a CIFAR ResNet: stem, residual blocks, pooled classifier. Returns the
/// number of classes.
fn resnet_layers(
    net: &crate::ResNetCifar,
    input: crate::InputShape,
    out: &mut Exported,
) -> Result<usize> {
    use crate::resnet::{BlockActivation, Shortcut};
    if net.activation() != BlockActivation::HardTanh {
        return Err(refuse(
            format!("ResNet-{}", net.depth()),
            "float (ReLU) activations cannot be packed",
        ));
    }
    let stem = &net.stem;
    let name = stem.name().to_string();
    let (c, k) = conv_weight(stem, input.channels, true, format!("{name}.weight"), out)?;
    let (scale, shift) = bn_affine(&name, &net.stem_bn, Activation::HardTanh)?;
    let cfg = stem.config();
    out.layers.push(LayerMeta::StemConv {
        name: name.clone(),
        in_channels: input.channels,
        out_channels: c,
        kernel: k,
        stride: cfg.stride,
        padding: cfg.padding,
        scale_bits: to_bits(&scale),
        shift_bits: to_bits(&shift),
    });
    out.rows.push((name, "stem_conv".into(), 0));
    let mut in_c = c;
    for b in &net.blocks {
        // The block's name is its convs' common prefix (`stage2.block1`).
        let c1 = b.conv1.name();
        let name = c1.strip_suffix(".conv1").unwrap_or(c1).to_string();
        let geometry = |conv: &aqe_candle::QuantConv2d, stride: Option<usize>| -> Result<()> {
            let cfg = conv.config();
            if cfg.padding != 1 || stride.is_some_and(|s| s != cfg.stride) {
                return Err(refuse(
                    format!("layer `{}`", conv.name()),
                    format!(
                        "a packed basic block needs 3x3 convs with padding 1 (got padding {}, stride {})",
                        cfg.padding, cfg.stride
                    ),
                ));
            }
            Ok(())
        };
        let stride = b.conv1.config().stride;
        geometry(&b.conv1, None)?;
        geometry(&b.conv2, Some(1))?;
        let (mid, k1) = conv_weight(&b.conv1, in_c, false, format!("{name}.conv1.weight"), out)?;
        let (oc, k2) = conv_weight(&b.conv2, mid, false, format!("{name}.conv2.weight"), out)?;
        if k1 != 3 || k2 != 3 {
            return Err(refuse(
                format!("block `{name}`"),
                "a packed basic block needs 3x3 convs",
            ));
        }
        let (s1, h1) = bn_affine(b.conv1.name(), &b.bn1, Activation::HardTanh)?;
        let (t, d, constant) = fold_all(b.conv1.name(), &s1, &h1, 9 * in_c)?;
        let (s2, h2) = bn_affine(b.conv2.name(), &b.bn2, Activation::Identity)?;
        let shortcut = match &b.shortcut {
            Shortcut::Identity => ShortcutMeta::Identity,
            Shortcut::PadA {
                pad_before,
                pad_after,
                ..
            } => ShortcutMeta::PadA {
                pad_before: *pad_before,
                pad_after: *pad_after,
            },
            Shortcut::ProjectionB { conv, bn } => {
                let (pc, pk) =
                    conv_weight(conv, in_c, false, format!("{name}.shortcut.weight"), out)?;
                if pk != 1
                    || pc != oc
                    || conv.config().padding != 0
                    || conv.config().stride != stride
                {
                    return Err(refuse(
                        format!("layer `{}`", conv.name()),
                        "a projection shortcut must be a 1x1 conv with the block's stride and no padding",
                    ));
                }
                let (s, h) = bn_affine(conv.name(), bn, Activation::Identity)?;
                ShortcutMeta::Projection {
                    scale_bits: to_bits(&s),
                    shift_bits: to_bits(&h),
                }
            }
        };
        if mid != oc {
            return Err(refuse(
                format!("block `{name}`"),
                format!("conv1 gives {mid} channels but conv2 {oc}"),
            ));
        }
        out.layers.push(LayerMeta::ResidualBlock {
            name: name.clone(),
            in_channels: in_c,
            out_channels: oc,
            stride,
            thresholds: t,
            directions: d,
            scale_bits: to_bits(&s2),
            shift_bits: to_bits(&h2),
            shortcut,
        });
        out.rows.push((name, "residual_block".into(), constant));
        in_c = oc;
    }
    let fc = &net.head.fc;
    let classes = linear_weight(fc, in_c, out)?;
    let (scale, shift) = bn_affine(fc.name(), &net.head.bn, Activation::Identity)?;
    out.layers.push(LayerMeta::PoolClassifier {
        name: fc.name().to_string(),
        in_features: in_c,
        out_features: classes,
        scale_bits: to_bits(&scale),
        shift_bits: to_bits(&shift),
    });
    out.rows
        .push((fc.name().to_string(), "pool_classifier".into(), 0));
    Ok(classes)
}

/// The layers of ConvNet A-D. Returns the number of classes.
fn convnet_layers(
    net: &crate::ConvNet,
    input: crate::InputShape,
    out: &mut Exported,
) -> Result<usize> {
    let (mut h, mut w) = (input.height, input.width);
    let mut c_in = input.channels;
    for (i, b) in net.conv_blocks().iter().enumerate() {
        let name = b.conv.name().to_string();
        let cfg = b.conv.config();
        let (out_c, k) = conv_weight(&b.conv, c_in, i == 0, format!("{name}.weight"), out)?;
        let (scale, shift) = bn_affine(&name, &b.bn, Activation::HardTanh)?;
        if i == 0 {
            out.layers.push(LayerMeta::FloatConv {
                name: name.clone(),
                in_channels: c_in,
                out_channels: out_c,
                kernel: k,
                stride: cfg.stride,
                padding: cfg.padding,
                pool: b.pool,
                scale_bits: to_bits(&scale),
                shift_bits: to_bits(&shift),
            });
            out.rows.push((name, "float_conv".to_string(), 0));
        } else {
            let (t, d, constant) = fold_all(&name, &scale, &shift, k * k * c_in)?;
            out.layers.push(LayerMeta::BinaryConv {
                name: name.clone(),
                in_channels: c_in,
                out_channels: out_c,
                kernel: k,
                stride: cfg.stride,
                padding: cfg.padding,
                pool: b.pool,
                thresholds: t,
                directions: d,
            });
            out.rows.push((name, "binary_conv".to_string(), constant));
        }
        (h, w) = conv_out(h, w, k, cfg.stride, cfg.padding, b.pool);
        c_in = out_c;
    }
    let mut features = h * w * c_in;
    let nfc = net.fc_blocks().len();
    for (i, b) in net.fc_blocks().iter().enumerate() {
        let name = b.fc.name().to_string();
        let out_f = linear_weight(&b.fc, features, out)?;
        if i + 1 == nfc {
            let (scale, shift) = bn_affine(&name, &b.bn, Activation::Identity)?;
            out.layers.push(LayerMeta::BinaryDenseAffine {
                name: name.clone(),
                in_features: features,
                out_features: out_f,
                scale_bits: to_bits(&scale),
                shift_bits: to_bits(&shift),
            });
            out.rows.push((name, "binary_dense_affine".to_string(), 0));
        } else {
            let (scale, shift) = bn_affine(&name, &b.bn, Activation::HardTanh)?;
            let (t, d, constant) = fold_all(&name, &scale, &shift, features)?;
            out.layers.push(LayerMeta::BinaryDense {
                name: name.clone(),
                in_features: features,
                out_features: out_f,
                thresholds: t,
                directions: d,
            });
            out.rows.push((name, "binary_dense".to_string(), constant));
        }
        features = out_f;
    }
    Ok(features)
}

/// Output size of a square-kernel conv with zero padding, then a 2x2/2 max-pool (floor) when
/// `pool`.
fn conv_out(
    h: usize,
    w: usize,
    k: usize,
    stride: usize,
    padding: usize,
    pool: bool,
) -> (usize, usize) {
    let ho = (h + 2 * padding - k) / stride + 1;
    let wo = (w + 2 * padding - k) / stride + 1;
    if pool { (ho / 2, wo / 2) } else { (ho, wo) }
}

/// Sets every conv and linear weight of a freshly built model to values uniform in `[-1, 1)`,
/// the range the weight constraint keeps trained latent weights in, so that 2-3 bit
/// quantizers see all their levels (a fresh initialisation is too small for ternary's
/// `delta = 0.5`). Deterministic in `seed`.
///
/// # Errors
/// Candle errors setting a tensor.
pub fn randomize_weights(store: &aqe_candle::ParamStore, seed: u64) -> Result<()> {
    let mut state = seed | 1;
    for (name, p) in store.params() {
        if !name.ends_with(".weight") || name.contains(".bn.") || p.var.rank() < 2 {
            continue;
        }
        let v: Vec<f32> = (0..p.var.elem_count())
            .map(|_| {
                state ^= state >> 12;
                state ^= state << 25;
                state ^= state >> 27;
                let r = state.wrapping_mul(0x2545_f491_4f6c_dd1d);
                -1.0 + 2.0 * ((r >> 40) as f32 / (1u64 << 24) as f32)
            })
            .collect();
        let t = Tensor::from_vec(v, p.var.dims(), &Device::Cpu)?;
        p.var.set(&t)?;
    }
    Ok(())
}

/// Sets every BatchNorm of a freshly built model to random parameters that behave like a
/// trained network's, so exports of untrained models have realistic thresholds (benchmarks,
/// tests): gamma in `[-1.5, 1.5)` (both signs), beta in `[-0.5, 0.5)`, running mean within one
/// accumulator standard deviation (`sqrt(K)`), running variance `K * [0.3, 1.5)`, where `K` is
/// the fan-in of the layer before the BatchNorm. Deterministic in `seed`.
///
/// # Errors
/// A BatchNorm whose layer weight (`<prefix>.weight`) or parameters are missing from `store`.
pub fn randomize_batch_norm(store: &aqe_candle::ParamStore, seed: u64) -> Result<()> {
    // xorshift64*, the generator the benchmarks' and tests' numbers were taken with.
    let mut state = seed | 1;
    let mut uniform = |lo: f32, hi: f32| {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        let r = state.wrapping_mul(0x2545_f491_4f6c_dd1d);
        lo + (hi - lo) * ((r >> 40) as f32 / (1u64 << 24) as f32)
    };
    let missing = |name: String| Error::Config {
        what: name,
        reason: "missing from the parameter store".into(),
    };
    for (name, p) in store.params() {
        let Some(prefix) = name.strip_suffix(".bn.running_var") else {
            continue;
        };
        let c = p.var.dims()[0];
        let w = store
            .get(&format!("{prefix}.weight"))
            .ok_or_else(|| missing(format!("{prefix}.weight")))?
            .var;
        let k: usize = w.dims()[1..].iter().product();
        let sd = (k as f32).sqrt();
        let mut cols: [Vec<f32>; 4] = Default::default();
        for _ in 0..c {
            cols[0].push(uniform(-1.5, 1.5));
            cols[1].push(uniform(-0.5, 0.5));
            cols[2].push(sd * uniform(-1.0, 1.0));
            cols[3].push(k as f32 * uniform(0.3, 1.5));
        }
        for (n, v) in ["weight", "bias", "running_mean", "running_var"]
            .into_iter()
            .zip(cols)
        {
            let t = candle_core::Tensor::from_vec(v, c, &candle_core::Device::Cpu)?;
            let key = format!("{prefix}.bn.{n}");
            store.get(&key).ok_or_else(|| missing(key))?.var.set(&t)?;
        }
    }
    Ok(())
}
