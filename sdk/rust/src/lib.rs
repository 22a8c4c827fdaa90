//! Rust SDK for msb: run untrusted code in local microVM sandboxes from Rust.
//!
//! It drives msb's local API (docs/api.md): a [`Client`] starts `msb api` as a child process and
//! speaks JSON lines with it over stdio. No daemon, no network service, no dependencies beyond std.
//!
//! ```no_run
//! use msb::{Client, ClientOptions, ExecOptions, SandboxOptions};
//!
//! let client = Client::start(ClientOptions::default())?;
//! let sandbox = client.create(&SandboxOptions { memory_mib: Some(256), ..Default::default() })?;
//! let result = sandbox.exec(&["sh", "-c", "echo hi; exit 3"], &ExecOptions::default())?;
//! assert_eq!((result.exit_code, result.stdout_text().as_str()), (3, "hi\n"));
//! # Ok::<(), msb::Error>(())
//! ```

pub mod base64;
mod client;
mod error;
pub mod json;
mod process;
mod sandbox;

pub use client::{Client, ClientOptions, PROTOCOL};
pub use error::{Error, Result};
pub use json::Value;
pub use process::{ExitStatus, Process, ProcessOutput};
pub use sandbox::{DirEntry, ExecOptions, ExecResult, FileStat, Sandbox, SandboxInfo, SandboxOptions, Secret};

#[cfg(test)]
mod tests {
    /// Handles are shared across threads (a reader thread per output stream, calls from several).
    #[test]
    fn handles_are_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<crate::Client>();
        check::<crate::Sandbox>();
        check::<crate::Process>();
        check::<crate::ProcessOutput>();
        check::<crate::Error>();
    }
}
