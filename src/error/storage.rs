//! The storage error, below both the store and the Redis connection layer that report it.

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum StoreError {
    /// The backend could not be reached or did not answer in time; the caller answers 503.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// A stored value could not be decoded.
    #[error("storage data corrupt: {0}")]
    Corrupt(String),
}

pub type StoreResult<T> = Result<T, StoreError>;
