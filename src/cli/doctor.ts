// `msb doctor`: what this host gives msb (KVM kind, backends, guest assets) and how to fix what
// is missing. Every check is real: it finds, loads or runs the thing it reports on.

import { defineCommand, type ArgsDef } from "citty";
import { checkFlags } from "./args";
import { guestAssets } from "../assets";
import { probeKvm } from "../vm/kvm";
import { NATIVE_ABI_VERSION, findNativeLib, loadNative } from "../vm/native";
import { QEMU_INSTALL_HINT, findQemu } from "../vm/qemu";
import { selectBackend } from "../vm/select";
import { VERSION } from "../version";
import { msbHome } from "../paths";
import { SCHEMA_VERSION, listSandboxRecords } from "../state";
import { findMkfsExt4 } from "../supervisor";

export interface DoctorCheck {
  name: string;
  ok: boolean;
  detail: string;
}

export async function doctorChecks(): Promise<DoctorCheck[]> {
  const checks: DoctorCheck[] = [];
  const attempt = async (name: string, run: () => Promise<string> | string) => {
    try {
      checks.push({ name, ok: true, detail: await run() });
    } catch (error) {
      checks.push({ name, ok: false, detail: (error as Error).message });
    }
  };
  await attempt("msb", () => `${VERSION}, home ${msbHome()}`);
  const kvm = probeKvm();
  checks.push({ name: "kvm", ok: kvm.kind !== "none", detail: `${kvm.kind}: ${kvm.reason}` });
  await attempt("default backend", () => selectBackend().describe());
  await attempt("qemu", () => {
    const qemu = findQemu();
    const version = Bun.spawnSync([qemu, "--version"]).stdout.toString().split("\n")[0];
    return `${qemu} (${version})`;
  });
  await attempt("native VMM", async () => {
    const path = await findNativeLib();
    const lib = await loadNative();
    return `${path} loaded, ABI ${lib.msb_abi_version()} (expects ${NATIVE_ABI_VERSION}), host KVM kind ${lib.msb_kvm_kind()}`;
  });
  await attempt("mkfs.ext4", () => {
    const path = findMkfsExt4();
    if (!path) throw new Error("not found: named sandboxes keep their writable layer on ext4; install e2fsprogs (apt install e2fsprogs)");
    return path;
  });
  await attempt("state", () => {
    const records = listSandboxRecords();
    const count = (status: string) => records.filter((r) => r.status === status).length;
    return `schema ${SCHEMA_VERSION}, ${records.length} sandboxes (${count("running")} running, ${count("crashed")} crashed)`;
  });
  await attempt("guest", async () => {
    const assets = await guestAssets();
    return `kernel ${assets.kernel}, initramfs ${assets.initrd}`;
  });
  return checks;
}

const doctorArgs = { json: { type: "boolean", description: "Print the checks as JSON" } } satisfies ArgsDef;

export const doctor = defineCommand({
  meta: { name: "doctor", description: "Check what this host gives msb and say how to fix what is missing" },
  args: doctorArgs,
  async run({ args, rawArgs }) {
    checkFlags(rawArgs, doctorArgs, "doctor");
    const checks = await doctorChecks();
    if (args.json) {
      console.log(JSON.stringify(checks, null, 2));
    } else {
      for (const check of checks) console.log(`${check.ok ? "ok " : "BAD"}  ${check.name.padEnd(16)} ${check.detail}`);
      if (checks.some((c) => c.name === "qemu" && !c.ok)) console.log(`\nqemu: ${QEMU_INSTALL_HINT}`);
    }
    if (checks.some((c) => !c.ok)) process.exitCode = 1;
  },
});
