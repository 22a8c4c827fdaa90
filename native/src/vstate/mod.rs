// KVM state: the /dev/kvm handle, the VM, its vCPUs and guest memory.
pub mod kvm;
pub mod memory;
pub mod vcpu;
pub mod vm;
