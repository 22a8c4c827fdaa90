// msb's native VMM: a KVM microVM monitor exposed as a small C ABI (see ffi.rs, README.md).
pub mod arch;
pub mod devices;
pub mod ffi;
pub mod fuse;
pub mod json;
pub mod sys;
pub mod vhost_user;
pub mod vmm;
pub mod vstate;
