//! The error type of `bitpack`.

use std::sync::Arc;

use crate::isa::Isa;

/// Everything that can go wrong in `bitpack`: ISA selection, shapes, illegal values and
/// malformed packed files. Variants name the tensor, the field and the sizes involved.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum BitpackError {
    /// An ISA name (from `XNOR_ISA` or a string) that is not known.
    #[error("unknown ISA `{name}`; valid names are: {}", valid.join(", "))]
    UnknownIsa {
        /// The name as given.
        name: String,
        /// Every valid name.
        valid: &'static [&'static str],
    },
    /// An ISA was forced (by `XNOR_ISA` or an explicit argument) that this CPU lacks.
    #[error("ISA `{isa}` was requested via {requested_by} but this CPU does not support it; available: {}", available.iter().map(|i| i.name()).collect::<Vec<_>>().join(", "))]
    IsaUnavailable {
        /// The ISA that was asked for.
        isa: Isa,
        /// Who asked, e.g. `"XNOR_ISA"` or `"argument"`.
        requested_by: &'static str,
        /// What this host does support, best first.
        available: Vec<Isa>,
    },
    /// A shape that makes no sense: a zero or overflowing size, or the wrong rank.
    #[error("tensor `{tensor}`: invalid shape {shape:?}: {reason}")]
    InvalidShape {
        /// The tensor's name (or the operation when the tensor has none).
        tensor: String,
        /// The shape as given.
        shape: Vec<usize>,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A buffer whose length disagrees with what the shape, layout and bit width imply.
    #[error("tensor `{tensor}`: `{field}` has length {got} but {expected} is required")]
    LengthMismatch {
        /// The tensor's name (or the operation).
        tensor: String,
        /// Which buffer, e.g. `"values"` or `"data"`.
        field: &'static str,
        /// The required length.
        expected: usize,
        /// The length found.
        got: usize,
    },
    /// An integer level that is not legal for the declared bit width / quantizer.
    #[error(
        "tensor `{tensor}`: value {value} at index {index} is not a legal {encoding} level (legal: {legal:?})"
    )]
    IllegalLevel {
        /// The tensor's name.
        tensor: String,
        /// Flat index of the value in the storage (row-padded) buffer.
        index: usize,
        /// The offending value.
        value: i64,
        /// The level set, e.g. `"ternary"`.
        encoding: &'static str,
        /// The legal values.
        legal: &'static [i8],
    },
    /// A real value that is not exactly `level * scale` for a legal level.
    #[error(
        "tensor `{tensor}`: value {value:?} at index {index} is not a {levels} level times its scale"
    )]
    OffGrid {
        /// The tensor's name.
        tensor: String,
        /// Logical flat index of the value.
        index: usize,
        /// The offending value.
        value: f32,
        /// The level set, e.g. `"pow2"` or `"uniform:3"`.
        levels: String,
    },
    /// A pad bit or pad byte that is not zero (kernels rely on zero padding).
    #[error("tensor `{tensor}`: non-zero padding in row {row} (storage element {element})")]
    NonZeroPadding {
        /// The tensor's name.
        tensor: String,
        /// The row holding the bad padding.
        row: usize,
        /// Index of the offending word/byte within the row.
        element: usize,
    },
    /// A `bitpack` format version this build does not understand.
    #[error("unsupported bitpack format version `{found}` (this build reads version {supported})")]
    UnsupportedVersion {
        /// The version string in the file.
        found: String,
        /// The version this build reads.
        supported: &'static str,
    },
    /// A required `__metadata__` key is absent.
    #[error("tensor `{tensor}`: missing metadata key `{key}`")]
    MissingMetadata {
        /// The tensor's name (empty for file-level keys).
        tensor: String,
        /// The full metadata key.
        key: String,
    },
    /// A `__metadata__` value that cannot be parsed or is inconsistent.
    #[error("tensor `{tensor}`: metadata `{key}` = `{value}` is invalid: {reason}")]
    BadMetadata {
        /// The tensor's name (empty for file-level keys).
        tensor: String,
        /// The full metadata key.
        key: String,
        /// The value found.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A tensor name that was looked up but is not in the file.
    #[error("no tensor named `{tensor}` in the file")]
    NoSuchTensor {
        /// The name looked up.
        tensor: String,
    },
    /// The safetensors container itself is malformed (header, offsets, dtype...).
    #[error("malformed safetensors container: {0}")]
    Container(String),
    /// An I/O error while writing or reading a file.
    #[error("I/O error on `{path}`: {source}")]
    Io {
        /// The file involved.
        path: String,
        /// The underlying error.
        #[source]
        source: Arc<std::io::Error>,
    },
}

/// `Result` with [`BitpackError`].
pub type Result<T, E = BitpackError> = std::result::Result<T, E>;
