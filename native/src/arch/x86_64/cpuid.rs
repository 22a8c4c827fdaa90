// Per-vCPU CPUID: the host's KVM_GET_SUPPORTED_CPUID, with the topology made to say "N cores,
// one thread each, APIC id = vCPU index" and the hypervisor bit set.

use crate::vstate::kvm::CpuidEntry2;

const LEAF_FEATURES: u32 = 1;
const LEAF_CACHE: u32 = 4;
const LEAF_TOPOLOGY: u32 = 0xb;
const LEAF_TOPOLOGY_V2: u32 = 0x1f;
const ECX_HYPERVISOR: u32 = 1 << 31;
const EDX_HTT: u32 = 1 << 28;
const LEVEL_TYPE_SMT: u32 = 1;
const LEVEL_TYPE_CORE: u32 = 2;

/// Bits needed to hold `n` distinct ids.
fn bits_for(n: u32) -> u32 {
    if n <= 1 {
        0
    } else {
        32 - (n - 1).leading_zeros()
    }
}

pub fn vcpu_cpuid(supported: &[CpuidEntry2], cpu_id: u8, cpu_count: u8) -> Vec<CpuidEntry2> {
    let id = cpu_id as u32;
    let n = cpu_count as u32;
    let mut out = supported.to_vec();
    for e in out.iter_mut() {
        match e.function {
            LEAF_FEATURES => {
                e.ebx = (e.ebx & 0x0000_ffff) | (id << 24) | ((n & 0xff) << 16) | (8 << 8);
                e.ecx |= ECX_HYPERVISOR;
                if n > 1 {
                    e.edx |= EDX_HTT;
                } else {
                    e.edx &= !EDX_HTT;
                }
            }
            LEAF_CACHE => {
                // EAX[31:26] = cores per package - 1; EAX[25:14] = threads sharing this cache - 1.
                let cache_level = (e.eax >> 5) & 7;
                let sharing = if cache_level >= 3 { n - 1 } else { 0 };
                e.eax = (e.eax & 0x3fff) | ((n - 1) << 26) | ((sharing & 0xfff) << 14);
            }
            LEAF_TOPOLOGY | LEAF_TOPOLOGY_V2 => {
                e.edx = id;
                match e.index {
                    0 => {
                        e.eax = 0;
                        e.ebx = 1;
                        e.ecx = (LEVEL_TYPE_SMT << 8) | e.index;
                    }
                    1 => {
                        e.eax = bits_for(n);
                        e.ebx = n;
                        e.ecx = (LEVEL_TYPE_CORE << 8) | e.index;
                    }
                    _ => {
                        e.eax = 0;
                        e.ebx = 0;
                        e.ecx = e.index;
                    }
                }
            }
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(function: u32, index: u32) -> CpuidEntry2 {
        CpuidEntry2 { function, index, ..Default::default() }
    }

    #[test]
    fn sets_apic_id_count_and_topology() {
        let sup = vec![entry(1, 0), entry(0xb, 0), entry(0xb, 1), entry(4, 0)];
        let c = vcpu_cpuid(&sup, 2, 4);
        let l1 = c.iter().find(|e| e.function == 1).unwrap();
        assert_eq!(l1.ebx >> 24, 2);
        assert_eq!((l1.ebx >> 16) & 0xff, 4);
        assert_ne!(l1.ecx & ECX_HYPERVISOR, 0);
        let t1 = c.iter().find(|e| e.function == 0xb && e.index == 1).unwrap();
        assert_eq!(t1.ebx, 4);
        assert_eq!(t1.eax, 2);
        assert_eq!(t1.edx, 2);
        let l4 = c.iter().find(|e| e.function == 4).unwrap();
        assert_eq!(l4.eax >> 26, 3);
        assert_eq!(bits_for(1), 0);
        assert_eq!(bits_for(5), 3);
    }
}
