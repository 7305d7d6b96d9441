//! The error type of `aqe-candle`.

/// What can go wrong when building, running or checkpointing AQE layers.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An error from Candle (shapes, devices, dtypes).
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    /// An invalid quantizer, estimator, schedule or alpha.
    #[error(transparent)]
    Aqe(#[from] aqe_core::AqeError),
    /// A tensor whose shape does not fit the layer.
    #[error("{layer}: expected {expected}, got shape {got:?}")]
    Shape {
        /// The layer or op.
        layer: String,
        /// What was expected, in words.
        expected: String,
        /// The shape received.
        got: Vec<usize>,
    },
    /// A configuration that cannot work (bad hyper-parameter, unsupported combination).
    #[error("{what}: {reason}")]
    Config {
        /// The object being configured.
        what: String,
        /// Why it is rejected.
        reason: String,
    },
    /// A checkpoint or optimizer-state file that does not match the model.
    #[error("{path}: {reason}")]
    State {
        /// The file (or tensor name) concerned.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// I/O while reading or writing a checkpoint.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// `Result` with [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

impl From<Error> for candle_core::Error {
    fn from(e: Error) -> Self {
        match e {
            Error::Candle(e) => e,
            other => candle_core::Error::wrap(other),
        }
    }
}
