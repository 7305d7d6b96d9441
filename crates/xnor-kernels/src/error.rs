//! The error type of `xnor-kernels`.

use bitpack::BitpackError;

/// Everything a kernel entry point can reject: ISA choice, buffer lengths, shapes and values
/// outside the range a kernel is exact for. Variants name the operation and the sizes involved.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum KernelError {
    /// The ISA could not be selected or is not available on this CPU.
    #[error(transparent)]
    Isa(#[from] BitpackError),
    /// A buffer whose length disagrees with the shape.
    #[error("{op}: buffer `{buffer}` has length {got} but {expected} is required")]
    Length {
        /// The operation, e.g. `"binary_gemm"`.
        op: &'static str,
        /// Which buffer.
        buffer: &'static str,
        /// The required length.
        expected: usize,
        /// The length given.
        got: usize,
    },
    /// A shape the operation does not support.
    #[error("{op}: invalid shape: {reason}")]
    Shape {
        /// The operation.
        op: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// A value outside the range for which the kernel is exact, or non-zero padding.
    #[error("{op}: `{buffer}`[{index}] = {value} is invalid: {reason}")]
    Value {
        /// The operation.
        op: &'static str,
        /// Which buffer.
        buffer: &'static str,
        /// Flat index of the value.
        index: usize,
        /// The offending value.
        value: i64,
        /// What the legal range is.
        reason: &'static str,
    },
}

/// `Result` with [`KernelError`].
pub type Result<T, E = KernelError> = std::result::Result<T, E>;

pub(crate) fn check_len(
    op: &'static str,
    buffer: &'static str,
    got: usize,
    expected: usize,
) -> Result<()> {
    if got == expected {
        Ok(())
    } else {
        Err(KernelError::Length {
            op,
            buffer,
            expected,
            got,
        })
    }
}

/// `a * b` with an error instead of overflow.
pub(crate) fn mul(op: &'static str, a: usize, b: usize) -> Result<usize> {
    a.checked_mul(b).ok_or_else(|| KernelError::Shape {
        op,
        reason: format!("size {a} x {b} overflows usize"),
    })
}
