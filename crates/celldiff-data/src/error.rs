//! The one error type of the `celldiff` library.
//!
//! Every variant names what went wrong in terms a user can act on: the file, the field (an
//! HDF5 path such as `X/indptr`, an `obs` column, a CLI flag) and what was expected. The CLI
//! maps [`Error::is_bad_input`] errors to exit code 2.

use std::path::PathBuf;

/// Errors returned by the `celldiff` library.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading or writing a file failed at the operating-system level (missing file, permission).
    #[error("{path}: {source}")]
    Io {
        /// The file that could not be read or written.
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A file exists but its content is not what was expected (not HDF5, missing `X`,
    /// unsupported encoding, truncated weights, ...).
    #[error("{path}: field `{field}`: {message}")]
    Format {
        /// The offending file.
        path: PathBuf,
        /// The field inside the file (HDF5 path, column, JSON key, tensor name).
        field: String,
        /// What was found and what was expected.
        message: String,
    },
    /// The data are readable but unusable for the requested operation (NaN in X, negative
    /// counts, zero cells after filtering, an unknown `obs` key, gene sets that do not match).
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// An output would overwrite something that exists and `--force` was not given.
    #[error("{path} already exists (replacing it needs force)")]
    AlreadyExists {
        /// The existing path.
        path: PathBuf,
    },
    /// An output path celldiff will not write to, or that appeared while it worked: `.`, `..`,
    /// the input itself or a folder holding it, a directory celldiff did not write, a symbolic
    /// link, FIFO or device (see [`crate::io::output`]).
    #[error("{path}: {reason}")]
    Refused {
        /// The output path as given.
        path: PathBuf,
        /// Why it is refused, and what to do instead.
        reason: String,
    },
    /// Invalid parameters (a configuration error by the caller, e.g. `n_latent = 0`).
    #[error("invalid parameter: {0}")]
    Param(String),
    /// A failure inside the numerical code that is not the user's fault.
    #[error("internal error: {0}")]
    Internal(String),
    /// The caller asked the work to stop (Ctrl-C in a Python session, checked between
    /// minibatches by celldiff's training loop through its observer);
    /// nothing was written.
    #[error("interrupted: {0}")]
    Interrupted(String),
}

impl Error {
    /// Whether the error is caused by bad input (files, fields, parameters): the CLI exits 2.
    pub fn is_bad_input(&self) -> bool {
        !matches!(self, Error::Internal(_) | Error::Interrupted(_))
    }

    /// Builds an [`Error::Format`] error.
    pub fn format(
        path: impl Into<PathBuf>,
        field: impl Into<String>,
        msg: impl Into<String>,
    ) -> Self {
        Error::Format {
            path: path.into(),
            field: field.into(),
            message: msg.into(),
        }
    }

    /// Builds an [`Error::Io`] error.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}

/// `Result` with [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
