//! The error type of `minw-models`.

/// What can go wrong building or running a model.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// From the training layers.
    #[error(transparent)]
    Layers(#[from] aqe_candle::Error),
    /// From Candle.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    /// An invalid quantizer, estimator or schedule.
    #[error(transparent)]
    Aqe(#[from] aqe_core::AqeError),
    /// A model configuration that cannot be built.
    #[error("{what}: {reason}")]
    Config {
        /// What was being configured.
        what: String,
        /// Why it is rejected.
        reason: String,
    },
    /// A data file that is missing, unreadable or malformed.
    #[error("{path}{}: {reason}", at_offset(.offset))]
    Data {
        /// The file (or directory) concerned.
        path: String,
        /// The byte offset in the file where the problem is, when there is one.
        offset: Option<u64>,
        /// What is wrong.
        reason: String,
    },
}

fn at_offset(offset: &Option<u64>) -> String {
    offset.map_or_else(String::new, |o| format!(" at byte offset {o}"))
}

/// `Result` with [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
