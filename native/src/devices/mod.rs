// Device models: legacy port-I/O devices and virtio over MMIO.
pub mod i8042;
pub mod serial;
pub mod virtio;
