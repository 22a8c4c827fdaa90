// The SDK's error type: the API's stable error codes (docs/api.md, "Errors") as variants to match
// on, each carrying msb's message, which names the sandbox, image or path involved.

use std::fmt;
use std::path::PathBuf;

/// What went wrong in a call. Branch on the variant; show the `Display` text to people.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Error {
    /// No sandbox of that name exists (`not_found` from a sandbox call).
    SandboxNotFound { message: String },
    /// The image is not in the registry (`NOT_FOUND`), or not in the local store with pull policy
    /// `never` (`NOT_IN_STORE`).
    ImageNotFound { code: String, message: String },
    /// A path or process inside the sandbox does not exist (`not_found` from a file or process call).
    NotFound { message: String },
    /// A sandbox of that name already exists.
    AlreadyExists { message: String },
    /// The sandbox is not running; the message says its status.
    NotRunning { message: String },
    /// Bad sandbox options or call parameters (`invalid_config`, `invalid_params`); the message
    /// names the key.
    InvalidOptions { message: String },
    /// The `msb api` process could not be started.
    Start { binary: PathBuf, reason: String },
    /// The `msb api` process exited or was killed; every call waiting on it fails with this.
    RuntimeExited { stderr_tail: String },
    /// The two sides disagree about the API (`version`, `protocol`, `unknown_method`, `parse`,
    /// `too_large`, or a reply this SDK cannot read).
    Protocol { message: String },
    /// Any other failure msb reported (image pull errors like `UNAUTHORIZED`, file errors like
    /// `is_directory`, ...).
    Other { code: String, message: String },
}

/// Which kind of thing a `not_found` from a call refers to.
#[derive(Clone, Copy)]
pub(crate) enum Subject {
    Sandbox,
    PathOrProcess,
}

impl Error {
    /// The API's error code, where msb sent one.
    pub fn code(&self) -> Option<&str> {
        match self {
            Error::SandboxNotFound { .. } | Error::NotFound { .. } => Some("not_found"),
            Error::ImageNotFound { code, .. } | Error::Other { code, .. } => Some(code),
            Error::AlreadyExists { .. } => Some("already_exists"),
            Error::NotRunning { .. } => Some("not_running"),
            _ => None,
        }
    }

    /// Maps an API error object `{code, message}` to its variant.
    pub(crate) fn from_api(code: &str, message: String, subject: Subject) -> Error {
        match code {
            "not_found" => match subject {
                Subject::Sandbox => Error::SandboxNotFound { message },
                Subject::PathOrProcess => Error::NotFound { message },
            },
            "NOT_FOUND" | "NOT_IN_STORE" => Error::ImageNotFound { code: code.to_string(), message },
            "already_exists" => Error::AlreadyExists { message },
            "not_running" => Error::NotRunning { message },
            "invalid_config" | "invalid_params" => Error::InvalidOptions { message },
            "version" | "protocol" | "unknown_method" | "parse" | "too_large" => Error::Protocol { message: format!("{code}: {message}") },
            _ => Error::Other { code: code.to_string(), message },
        }
    }

    pub(crate) fn protocol(message: impl Into<String>) -> Error {
        Error::Protocol { message: message.into() }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::SandboxNotFound { message }
            | Error::NotFound { message }
            | Error::AlreadyExists { message }
            | Error::NotRunning { message }
            | Error::InvalidOptions { message }
            | Error::ImageNotFound { message, .. }
            | Error::Other { message, .. } => f.write_str(message),
            Error::Start { binary, reason } => {
                write!(f, "could not start `{} api`: {reason}; set ClientOptions::binary or MSB_BIN to the msb binary, or put msb on PATH", binary.display())
            }
            Error::RuntimeExited { stderr_tail } if stderr_tail.trim().is_empty() => {
                f.write_str("the msb api process exited (it wrote nothing on stderr); start a new Client")
            }
            Error::RuntimeExited { stderr_tail } => {
                write!(f, "the msb api process exited; start a new Client. Its last stderr:\n{}", stderr_tail.trim_end())
            }
            Error::Protocol { message } => write!(f, "msb API protocol error: {message}"),
        }
    }
}

impl std::error::Error for Error {}

impl From<Error> for std::io::Error {
    fn from(error: Error) -> std::io::Error {
        std::io::Error::other(error)
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
