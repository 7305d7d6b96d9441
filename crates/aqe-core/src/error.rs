//! The error type of `aqe-core`.

/// Everything that can go wrong in `aqe-core`: bad names, bad parameters, mismatched slices.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AqeError {
    /// A short name (quantizer, estimator, schedule) that is not known.
    #[error("unknown {kind} `{name}`; valid names are: {}", valid.join(", "))]
    UnknownName {
        /// What was being parsed, e.g. `"quantizer"`.
        kind: &'static str,
        /// The name as given.
        name: String,
        /// Every valid name for this kind.
        valid: &'static [&'static str],
    },
    /// A spec string whose parameters could not be read.
    #[error("cannot parse {kind} `{spec}`: {reason}; expected {expected}")]
    BadSpec {
        /// What was being parsed.
        kind: &'static str,
        /// The whole spec as given.
        spec: String,
        /// What is wrong with it.
        reason: String,
        /// The accepted syntax.
        expected: &'static str,
    },
    /// A parameter outside its valid range.
    #[error("invalid {name} = {value}: {reason}")]
    InvalidParameter {
        /// The parameter's name, e.g. `"alpha"`.
        name: &'static str,
        /// Its value, formatted.
        value: String,
        /// The rule it breaks, e.g. `"must lie in [0, 1]"`.
        reason: &'static str,
    },
    /// Slices passed to one operation whose lengths disagree.
    #[error("{op}: length mismatch, `{what}` has {got} elements but {expected} were expected")]
    LengthMismatch {
        /// The operation, e.g. `"aqe backward"`.
        op: &'static str,
        /// Which argument is wrong.
        what: &'static str,
        /// The length it should have.
        expected: usize,
        /// The length it has.
        got: usize,
    },
    /// An estimator used with a quantizer it is not defined for.
    #[error(
        "estimator `{estimator}` is only defined for the {expected} quantizer, not `{quantizer}`"
    )]
    Incompatible {
        /// The estimator's name.
        estimator: String,
        /// The quantizer's name.
        quantizer: String,
        /// The quantizer(s) the estimator supports.
        expected: &'static str,
    },
}

/// `Result` with [`AqeError`].
pub type Result<T> = std::result::Result<T, AqeError>;

/// Checks that `got` has `expected` elements.
pub(crate) fn check_len(
    op: &'static str,
    what: &'static str,
    expected: usize,
    got: usize,
) -> Result<()> {
    if expected == got {
        Ok(())
    } else {
        Err(AqeError::LengthMismatch {
            op,
            what,
            expected,
            got,
        })
    }
}
