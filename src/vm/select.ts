// Chooses the VM backend: an explicit choice (option or MSB_BACKEND) wins; otherwise native on
// hosts with hardware KVM and qemu everywhere else.

import type { VmBackend } from "./backend";
import { probeKvm } from "./kvm";
import { NativeBackend } from "./native";
import { QemuBackend } from "./qemu";
import { MsbError } from "../errors";

export type BackendName = "qemu" | "native";

export function selectBackend(requested?: BackendName): VmBackend {
  const fromEnv = process.env.MSB_BACKEND;
  if (fromEnv && fromEnv !== "qemu" && fromEnv !== "native") {
    throw new MsbError("invalid_config", `MSB_BACKEND must be "qemu" or "native", not "${fromEnv}"`);
  }
  const kvm = probeKvm();
  const name = requested ?? (fromEnv as BackendName | undefined) ?? (kvm.kind === "hardware" ? "native" : "qemu");
  return name === "native" ? new NativeBackend(kvm) : new QemuBackend(kvm);
}
