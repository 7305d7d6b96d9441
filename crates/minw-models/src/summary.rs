//! A model summary in the manner of Larq's: per layer the input and weight bits, output shape,
//! parameters, MACs and the kernel it will run on; totals with the latent (training) size next
//! to the packed (deployment) size.

use std::fmt;

use aqe_candle::{ParamKind, ParamStore, QuantConfig, QuantConv2d, QuantLinear};

/// The kernel a layer runs on after export.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KernelKind {
    /// 1-bit inputs and weights: XNOR + popcount.
    XnorPopcount,
    /// 1-3 bit inputs and weights with at least one 2- or 3-bit side: exact int8 dot products.
    Int8,
    /// Float inputs (e.g. the raw image) with quantized weights.
    FloatInputQuantizedWeights,
    /// Float.
    Float,
}

impl KernelKind {
    fn of(in_bits: u8, w_bits: u8) -> Self {
        match (in_bits, w_bits) {
            (1, 1) => KernelKind::XnorPopcount,
            (a, w) if a <= 3 && w <= 3 => KernelKind::Int8,
            (_, w) if w <= 3 => KernelKind::FloatInputQuantizedWeights,
            _ => KernelKind::Float,
        }
    }

    /// Short name.
    pub fn name(self) -> &'static str {
        match self {
            KernelKind::XnorPopcount => "xnor-popcount",
            KernelKind::Int8 => "int8",
            KernelKind::FloatInputQuantizedWeights => "float x qweight",
            KernelKind::Float => "float",
        }
    }
}

/// One convolution or fully connected layer.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerRow {
    /// Parameter scope of the layer.
    pub name: String,
    /// Bits of the layer's input (32 = float).
    pub input_bits: u8,
    /// Bits of its weights (32 = float).
    pub weight_bits: u8,
    /// Output shape without the batch (`[h, w, c]` or `[features]`).
    pub output: Vec<usize>,
    /// Weights.
    pub params: usize,
    /// Multiply-accumulates per image.
    pub macs: u64,
    /// The kernel it runs on after export.
    pub kernel: KernelKind,
}

fn bits(cfg: &QuantConfig) -> (u8, u8) {
    let b = |s: &Option<aqe_candle::QuantSpec>| s.map_or(32, |s| s.quantizer.bits());
    (b(&cfg.input_quantizer), b(&cfg.kernel_quantizer))
}

/// The row of `conv` for an input of `h` x `w`; returns it with the output size.
pub(crate) fn conv_row(conv: &QuantConv2d, (h, w): (usize, usize)) -> (LayerRow, (usize, usize)) {
    let dims = conv.weight().dims();
    let (o, kh, kw, i) = (dims[0], dims[1], dims[2], dims[3]);
    let cfg = conv.config();
    let oh = (h + 2 * cfg.padding - kh) / cfg.stride + 1;
    let ow = (w + 2 * cfg.padding - kw) / cfg.stride + 1;
    let (ib, wb) = bits(&cfg.quant);
    let row = LayerRow {
        name: conv.name().to_string(),
        input_bits: ib,
        weight_bits: wb,
        output: vec![oh, ow, o],
        params: o * kh * kw * i,
        macs: (oh * ow * o * kh * kw * i) as u64,
        kernel: KernelKind::of(ib, wb),
    };
    (row, (oh, ow))
}

/// The row of a fully connected layer.
pub(crate) fn linear_row(fc: &QuantLinear) -> LayerRow {
    let dims = fc.weight().dims();
    let (ib, wb) = bits(&fc.config().quant);
    LayerRow {
        name: fc.name().to_string(),
        input_bits: ib,
        weight_bits: wb,
        output: vec![dims[0]],
        params: dims[0] * dims[1],
        macs: (dims[0] * dims[1]) as u64,
        kernel: KernelKind::of(ib, wb),
    }
}

/// A whole model's summary.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    /// Model name.
    pub title: String,
    /// Conv and FC layers in order.
    pub layers: Vec<LayerRow>,
    /// Other parameters (BatchNorm scale and shift, biases).
    pub other_params: usize,
    /// Running statistics (BatchNorm mean and variance).
    pub buffers: usize,
}

impl Summary {
    pub(crate) fn new(title: String, layers: Vec<LayerRow>, store: &ParamStore) -> Self {
        Summary {
            title,
            layers,
            other_params: store.count(&[
                ParamKind::Bias,
                ParamKind::NormScale,
                ParamKind::NormShift,
            ]),
            buffers: store.count(&[ParamKind::Buffer]),
        }
    }

    /// MACs per image on each kernel kind.
    pub fn macs(&self, kind: KernelKind) -> u64 {
        self.layers
            .iter()
            .filter(|l| l.kernel == kind)
            .map(|l| l.macs)
            .sum()
    }

    /// Bytes of the model as trained: every parameter and buffer in f32.
    pub fn latent_bytes(&self) -> usize {
        4 * (self.layers.iter().map(|l| l.params).sum::<usize>() + self.other_params + self.buffers)
    }

    /// Bytes after packing: quantized weights at their bit width, float weights in f32, and each
    /// BatchNorm folded into two f32 per channel.
    pub fn packed_bytes(&self) -> usize {
        let weights: usize = self
            .layers
            .iter()
            .map(|l| {
                if l.weight_bits <= 3 {
                    (l.params * usize::from(l.weight_bits)).div_ceil(8)
                } else {
                    4 * l.params
                }
            })
            .sum();
        weights + 4 * self.other_params
    }
}

fn human(n: u64) -> String {
    match n {
        n if n >= 10_000_000 => format!("{:.1}M", n as f64 / 1e6),
        n if n >= 10_000 => format!("{:.1}k", n as f64 / 1e3),
        n => n.to_string(),
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}", self.title)?;
        writeln!(
            f,
            "{:<24} {:>5} {:>5} {:>14} {:>9} {:>9}  kernel",
            "layer", "in b", "w b", "output", "params", "MACs"
        )?;
        for l in &self.layers {
            let shape = l
                .output
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("x");
            writeln!(
                f,
                "{:<24} {:>5} {:>5} {:>14} {:>9} {:>9}  {}",
                l.name,
                l.input_bits,
                l.weight_bits,
                shape,
                human(l.params as u64),
                human(l.macs),
                l.kernel.name()
            )?;
        }
        let quantized: usize = self
            .layers
            .iter()
            .filter(|l| l.weight_bits <= 3)
            .map(|l| l.params)
            .sum();
        let float: usize = self
            .layers
            .iter()
            .filter(|l| l.weight_bits > 3)
            .map(|l| l.params)
            .sum();
        writeln!(
            f,
            "params: {} quantized weights, {} float weights, {} other (BatchNorm, biases), {} running statistics",
            quantized, float, self.other_params, self.buffers
        )?;
        writeln!(
            f,
            "MACs per image: {} xnor-popcount, {} int8, {} float-input x quantized weights, {} float",
            human(self.macs(KernelKind::XnorPopcount)),
            human(self.macs(KernelKind::Int8)),
            human(self.macs(KernelKind::FloatInputQuantizedWeights)),
            human(self.macs(KernelKind::Float))
        )?;
        write!(
            f,
            "size: {:.2} MiB latent (training) -> {:.3} MiB packed ({:.1}x smaller)",
            self.latent_bytes() as f64 / 1048576.0,
            self.packed_bytes() as f64 / 1048576.0,
            self.latent_bytes() as f64 / self.packed_bytes().max(1) as f64
        )
    }
}
