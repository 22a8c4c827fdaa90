// virtio devices over the MMIO transport.
pub mod blk;
pub mod console;
pub mod fs;
pub mod mmio;
pub mod net;
pub mod queue;
pub mod rng;
pub mod stream;
