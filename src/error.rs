//! The error type of everything that touches user input: files, datasets, configs, checkpoints
//! and the command line. Programming errors inside the math panic instead (see `autograd`).

use std::path::PathBuf;

/// What went wrong, with what was expected and what was found.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },
    /// A dataset file is missing, truncated or malformed.
    #[error("dataset: {0}")]
    Data(String),
    /// A model or training configuration is inconsistent.
    #[error("config: {0}")]
    Config(String),
    /// A checkpoint is missing tensors, has unexpected ones, or has mis-shaped ones.
    #[error("checkpoint: {0}")]
    Checkpoint(String),
    /// Training diverged or otherwise cannot continue.
    #[error("training: {0}")]
    Train(String),
    /// A download failed or produced an archive that does not verify.
    #[error("download: {0}")]
    Download(String),
    /// The requested device cannot be used (no GPU, no driver, a build without `cuda`).
    #[error("device: {0}")]
    Device(String),
    /// A figure could not be drawn.
    #[error("plot: {0}")]
    Plot(String),
    /// A collective operation across the processes of a distributed run failed, or a process
    /// did not answer in time.
    #[error("distributed: {0}")]
    Distributed(String),
    /// Training was stopped by a signal (SIGINT, SIGTERM) after writing a checkpoint at the exact
    /// position reached, from which `--resume` continues.
    #[error("interrupted: {0}")]
    Interrupted(String),
}

impl Error {
    /// Wraps an I/O error with the path it concerns.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { path: path.into(), source }
    }
}

impl From<autograd::DeviceError> for Error {
    /// A transfer to or from a device failed (it could not be opened).
    fn from(e: autograd::DeviceError) -> Self {
        Error::Device(e.to_string())
    }
}

/// This crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
