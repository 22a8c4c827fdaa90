// Tells whether this host has hardware KVM, a software-emulated /dev/kvm, or none, so backends
// can choose an accelerator and say why.

import { accessSync, constants, existsSync } from "node:fs";

export type KvmKind = "hardware" | "software" | "none";

export interface KvmProbe {
  kind: KvmKind;
  reason: string;
}

export function probeKvm(): KvmProbe {
  if (!existsSync("/dev/kvm")) return { kind: "none", reason: "/dev/kvm does not exist (no KVM on this host)" };
  try {
    accessSync("/dev/kvm", constants.R_OK | constants.W_OK);
  } catch {
    return { kind: "none", reason: "/dev/kvm is not accessible to this user (add yourself to the kvm group)" };
  }
  if (existsSync("/sys/module/kvm_pvm")) {
    return {
      kind: "software",
      reason: "/dev/kvm is served by kvm_pvm, a software hypervisor that emulates guest kernel code ~3000x slower",
    };
  }
  return { kind: "hardware", reason: "hardware KVM (/dev/kvm)" };
}
