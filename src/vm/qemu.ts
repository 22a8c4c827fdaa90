// The qemu VM backend: runs `qemu-system-x86_64 -M microvm` as a child process, with KVM where the
// host has it in hardware and TCG software emulation otherwise.

import { existsSync, readFileSync, rmSync, statSync } from "node:fs";
import { dirname, join } from "node:path";
import type { VmBackend, VmExit, VmHandle, VmSpec } from "./backend";
import { probeKvm, type KvmProbe } from "./kvm";
import { MsbError } from "../errors";
import { startVhostUserFs, type VhostUserFs } from "./native";

export const QEMU_INSTALL_HINT =
  "install QEMU: `apt-get install qemu-system-x86` (Debian/Ubuntu), `dnf install qemu-system-x86` (Fedora), " +
  "or set MSB_QEMU to the path of qemu-system-x86_64";

/** Finds qemu-system-x86_64 (MSB_QEMU, then PATH) or explains how to get it. */
export function findQemu(): string {
  const override = process.env.MSB_QEMU;
  if (override) {
    if (existsSync(override) && statSync(override).isFile()) return override;
    throw new MsbError("qemu_missing", `MSB_QEMU points at ${override}, which does not exist; ${QEMU_INSTALL_HINT}`);
  }
  const found = Bun.which("qemu-system-x86_64");
  if (!found) throw new MsbError("qemu_missing", `qemu-system-x86_64 was not found on PATH; ${QEMU_INSTALL_HINT}`);
  return found;
}

export class QemuBackend implements VmBackend {
  readonly name = "qemu" as const;
  private readonly kvm: KvmProbe;

  constructor(kvm: KvmProbe = probeKvm()) {
    this.kvm = kvm;
  }

  get accelerator(): "kvm" | "tcg" {
    return this.kvm.kind === "hardware" ? "kvm" : "tcg";
  }

  describe(): string {
    return this.accelerator === "kvm"
      ? "qemu backend with KVM acceleration"
      : `qemu backend with TCG software emulation, because ${this.kvm.reason}`;
  }

  buildArgs(spec: VmSpec): string[] {
    // Our kernel has no ACPI: with acpi=off QEMU describes CPUs and IOAPIC in an MP table and
    // appends virtio_mmio.device=... to the command line. PIT and PIC stay on: under TCG the PIT
    // is the kernel's only timer reference. The PVH entry needs no option ROM.
    const machine = "microvm,acpi=off,x-option-roms=off,rtc=on,isa-serial=on";
    const cmdline = this.accelerator === "tcg" ? [spec.cmdline, ...tcgClockArgs()].join(" ") : spec.cmdline;
    const args = [
      "-M", machine,
      "-accel", this.accelerator === "kvm" ? "kvm" : "tcg,thread=multi",
      "-cpu", this.accelerator === "kvm" ? "host" : "max",
      "-smp", String(spec.cpus),
      "-m", `${spec.memoryMiB}M`,
      "-nodefaults", "-no-user-config", "-nographic", "-no-reboot",
      "-kernel", spec.kernel,
      "-initrd", spec.initrd,
      "-append", cmdline,
      "-chardev", `file,id=console,path=${spec.consoleLog}`,
      "-serial", "chardev:console",
      "-device", "virtio-serial-device,max_ports=2",
      "-chardev", `socket,id=agent,path=${spec.agentSocket}`,
      "-device", "virtserialport,chardev=agent,name=agent",
      "-device", "virtio-rng-device",
    ];
    spec.disks.forEach((disk, index) => {
      const drive = [`id=disk${index}`, `file=${disk.path}`, "format=raw", "if=none", "cache=unsafe"];
      if (disk.readOnly) drive.push("readonly=on");
      args.push("-drive", drive.join(","));
      const device = [`virtio-blk-device`, `drive=disk${index}`];
      if (disk.serial) device.push(`serial=${disk.serial}`);
      args.push("-device", device.join(","));
    });
    if (spec.netSocket) {
      args.push("-netdev", `stream,id=net0,server=off,addr.type=unix,addr.path=${spec.netSocket}`);
      args.push("-device", "virtio-net-device,netdev=net0");
    }
    const shares = spec.shares ?? [];
    if (shares.length > 0) {
      // vhost-user backends read guest RAM directly, so it must be a shareable memfd.
      args[args.indexOf("-M") + 1] += ",memory-backend=mem";
      args.push("-object", `memory-backend-memfd,id=mem,size=${spec.memoryMiB}M,share=on`);
      shares.forEach((share, index) => {
        args.push("-chardev", `socket,id=fs${index},path=${shareSocket(spec, index)}`);
        // 1024 descriptors: a 1 MiB FUSE read/write (256 pages) fits without indirect descriptors.
        args.push("-device", `vhost-user-fs-device,chardev=fs${index},tag=${share.tag},queue-size=1024`);
      });
    }
    return args;
  }

  async start(spec: VmSpec): Promise<VmHandle> {
    const qemu = findQemu();
    for (const [what, path] of [["guest kernel", spec.kernel], ["guest initramfs", spec.initrd]] as const) {
      if (!existsSync(path)) throw new MsbError("missing_asset", `${what} not found: ${path}`);
    }
    const backends: VhostUserFs[] = [];
    const stopBackends = () => backends.forEach((b) => b.stop());
    let child: ReturnType<typeof spawnQemu>;
    try {
      for (const [index, share] of (spec.shares ?? []).entries()) {
        const socket = shareSocket(spec, index);
        rmSync(socket, { force: true });
        backends.push(await startVhostUserFs(socket, share.hostPath, share.readOnly));
      }
      child = spawnQemu(qemu, this.buildArgs(spec));
    } catch (e) {
      stopBackends();
      throw e;
    }
    const stderr = new Response(child.stderr).text();
    const exited: Promise<VmExit> = child.exited.then(async (code) => {
      stopBackends();
      const message = (await stderr).trim();
      if (child.signalCode) return { reason: "killed", detail: `qemu killed by ${child.signalCode}` };
      // With -no-reboot a guest reset (our power-off path, and a panic with panic=-1) exits 0.
      if (code === 0) return { reason: "reset" };
      return { reason: "error", detail: message ? `qemu exited with ${code}: ${message}` : `qemu exited with ${code}` };
    });
    return {
      pid: child.pid,
      exited,
      kill: () => {
        if (child.exitCode === null && !child.killed) child.kill("SIGKILL");
      },
    };
  }
}

function spawnQemu(qemu: string, args: string[]) {
  return Bun.spawn([qemu, ...args], { stdin: "ignore", stdout: "ignore", stderr: "pipe" });
}

/** The unix socket of share `index`'s vhost-user-fs backend, beside the agent socket. */
function shareSocket(spec: VmSpec, index: number): string {
  return join(dirname(spec.agentSocket), `fs${index}.sock`);
}

/**
 * Under TCG the guest TSC ticks at the host's rate but the kernel cannot measure it (no kvm-clock,
 * no PIT calibration port on microvm), so it falls back to jiffies and loses high-resolution
 * timers. Telling it the rate, and that the TSC is reliable, gives it the TSC clocksource.
 */
export function tcgClockArgs(): string[] {
  const khz = hostTscKhz();
  return khz ? [`tsc_early_khz=${khz}`, "tsc=reliable"] : [];
}

let cachedTscKhz: number | undefined | null = null;

/** The host TSC rate in kHz: from the kernel log if readable, else cpuinfo on constant-TSC CPUs. */
function hostTscKhz(): number | undefined {
  if (cachedTscKhz !== null) return cachedTscKhz;
  cachedTscKhz = undefined;
  const dmesg = Bun.spawnSync(["dmesg"], { stdout: "pipe", stderr: "ignore" }).stdout?.toString() ?? "";
  const logged = /tsc: Refined TSC clocksource calibration: ([\d.]+) MHz/.exec(dmesg) ?? /tsc: Detected ([\d.]+) MHz/.exec(dmesg);
  if (logged) return (cachedTscKhz = Math.round(Number(logged[1]) * 1000));
  try {
    const cpuinfo = readFileSync("/proc/cpuinfo", "utf8");
    const mhz = /^cpu MHz\s*:\s*([\d.]+)/m.exec(cpuinfo);
    if (mhz && /^flags\s*:.*\bconstant_tsc\b/m.test(cpuinfo)) cachedTscKhz = Math.round(Number(mhz[1]) * 1000);
  } catch {
    // No /proc/cpuinfo: leave the kernel to its fallback.
  }
  return cachedTscKhz;
}
