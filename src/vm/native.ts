// The native VM backend: msb's own KVM VMM (native/, libmsbvmm.so) loaded with bun:ffi. Control
// goes through a six-call C ABI; the VM's data (agent port, NIC frames) flows over the unix
// sockets named in the spec, never through per-message FFI calls.

import { dlopen, FFIType, type Pointer } from "bun:ffi";
import { existsSync } from "node:fs";
import { join } from "node:path";
import type { VmBackend, VmExit, VmExitReason, VmHandle, VmSpec } from "./backend";
import { probeKvm, type KvmProbe } from "./kvm";
import { MsbError } from "../errors";
import { isCompiled, sourceRoot } from "../paths";
import { embeddedAsset } from "../assets";

export const NATIVE_LIB_NAME = "libmsbvmm.so";
/** The C ABI version this wrapper speaks (msb_abi_version()). */
export const NATIVE_ABI_VERSION = 2;
/** How often a running VM is checked for its exit; the JS thread never blocks on the VMM. */
const EXIT_POLL_MS = 10;
const DETAIL_BUF = 4096;

const EXIT_REASONS: Record<number, VmExitReason> = { 1: "reset", 2: "poweroff", 3: "crash", 4: "killed", 5: "error" };

const symbols = {
  msb_abi_version: { args: [], returns: FFIType.u32 },
  msb_kvm_kind: { args: [], returns: FFIType.i32 },
  msb_vm_create: { args: [FFIType.ptr], returns: FFIType.u64 },
  msb_vm_start: { args: [FFIType.u64], returns: FFIType.i32 },
  msb_vm_request_stop: { args: [FFIType.u64], returns: FFIType.i32 },
  msb_vm_poll_exit: { args: [FFIType.u64, FFIType.ptr, FFIType.u64], returns: FFIType.i32 },
  msb_vm_destroy: { args: [FFIType.u64], returns: FFIType.i32 },
  msb_vm_stats: { args: [FFIType.u64, FFIType.ptr, FFIType.u64], returns: FFIType.i32 },
  msb_last_error: { args: [FFIType.ptr, FFIType.u64], returns: FFIType.i32 },
  msb_vhost_user_fs_start: { args: [FFIType.ptr, FFIType.ptr, FFIType.i32], returns: FFIType.u64 },
  msb_vhost_user_fs_finished: { args: [FFIType.u64], returns: FFIType.i32 },
  msb_vhost_user_fs_stop: { args: [FFIType.u64], returns: FFIType.i32 },
} as const;

type NativeLib = ReturnType<typeof dlopen<typeof symbols>>["symbols"];

let loaded: Promise<NativeLib> | undefined;

/**
 * Finds libmsbvmm.so: MSB_NATIVE_LIB, else the copy embedded in a compiled msb (extracted once
 * into the cache, since dlopen needs a real file), else native/target/release in this checkout.
 */
export async function findNativeLib(): Promise<string> {
  const override = process.env.MSB_NATIVE_LIB;
  if (override) {
    if (!existsSync(override)) throw new MsbError("missing_asset", `MSB_NATIVE_LIB points at ${override}, which does not exist`);
    return override;
  }
  if (isCompiled()) return embeddedAsset("libmsbvmm", `native VMM (${NATIVE_LIB_NAME})`);
  const path = join(sourceRoot()!, "native", "target", "release", NATIVE_LIB_NAME);
  if (!existsSync(path)) {
    throw new MsbError(
      "missing_asset",
      `${NATIVE_LIB_NAME} not found at ${path}; build it with \`cargo build --release\` in native/ (or use --backend qemu)`,
    );
  }
  return path;
}

/**
 * Why a full Linux guest cannot be run on the native backend here, or undefined when it can
 * (hardware KVM and the library present). For e2e suites' skip lines under MSB_BACKEND=native.
 */
export async function nativeLinuxSkipReason(kvm: KvmProbe = probeKvm()): Promise<string | undefined> {
  if (kvm.kind !== "hardware") return `the native backend boots Linux only on hardware KVM: ${kvm.reason}`;
  try {
    await loadNative();
  } catch (e) {
    return e instanceof Error ? e.message : String(e);
  }
  return undefined;
}

/** Loads the VMM library once per process and checks it speaks our ABI. */
export function loadNative(): Promise<NativeLib> {
  loaded ??= (async () => {
    const path = await findNativeLib();
    let lib: NativeLib;
    try {
      lib = dlopen(path, symbols).symbols;
    } catch (cause) {
      throw new MsbError("backend_unavailable", `cannot load the native VMM from ${path}: ${String(cause)}`, { cause });
    }
    const abi = lib.msb_abi_version();
    if (abi !== NATIVE_ABI_VERSION) {
      throw new MsbError("backend_unavailable", `${path} speaks VMM ABI ${abi}, this msb expects ${NATIVE_ABI_VERSION}; rebuild native/`);
    }
    return lib;
  })();
  loaded.catch(() => (loaded = undefined));
  return loaded;
}

function cstring(s: string): Buffer {
  return Buffer.from(`${s}\0`, "utf8");
}

/** The NUL-terminated string the VMM wrote into `buf` (at most `n` bytes of it). */
function readCString(buf: Buffer, n: number): string {
  const limit = Math.min(Math.max(n, 0), buf.length - 1);
  const nul = buf.indexOf(0);
  return buf.subarray(0, nul >= 0 && nul < limit ? nul : limit).toString("utf8");
}

function lastError(lib: NativeLib): string {
  const buf = Buffer.alloc(DETAIL_BUF);
  const n = lib.msb_last_error(buf as unknown as Pointer, BigInt(buf.length));
  return readCString(buf, n) || "unknown error";
}

/** A vhost-user-fs backend serving one share on its own thread inside this process. */
export interface VhostUserFs {
  readonly socketPath: string;
  /** Whether the backend has stopped serving (QEMU disconnected, or stop() was called). */
  finished(): boolean;
  /** Stops it (idempotent); returns the error it ended with, if any. */
  stop(): string | undefined;
}

/**
 * Starts a vhost-user-fs backend for QEMU's vhost-user-fs-device: listens on `socketPath` (which
 * must not exist) and serves `hostPath` (a directory, or a single file shown alone in its
 * directory), refusing every change host-side when `readOnly`.
 */
export async function startVhostUserFs(socketPath: string, hostPath: string, readOnly: boolean): Promise<VhostUserFs> {
  const lib = await loadNative();
  const handle = lib.msb_vhost_user_fs_start(cstring(socketPath) as unknown as Pointer, cstring(hostPath) as unknown as Pointer, readOnly ? 1 : 0);
  if (!handle) throw new MsbError("volume", `cannot share ${hostPath}: ${lastError(lib)}`);
  let stopped: string | undefined | null = null;
  return {
    socketPath,
    finished: () => stopped !== null || lib.msb_vhost_user_fs_finished(handle) !== 0,
    stop: () => {
      if (stopped === null) stopped = lib.msb_vhost_user_fs_stop(handle) === 1 ? lastError(lib) : undefined;
      return stopped;
    },
  };
}

/** Counters the VMM keeps (nanoseconds since msb_vm_create began). */
export interface NativeVmStats {
  createdNs: number;
  startNs: number;
  firstExitNs: number;
  lastExitNs: number;
  exits: number;
  pioExits: number;
  mmioExits: number;
  /** Boot vCPU's instruction pointer when the VM was stopped (0 if it ended on its own). */
  bspRipAtStop: number;
  serialBytes: number;
  brokenDevices: string[];
}

export interface NativeVmHandle extends VmHandle {
  /** VMM counters; after the exit, their final values. */
  stats(): NativeVmStats | undefined;
}

/**
 * Runs VMs on msb's own KVM VMM.
 *
 * @example
 * const vm = await new NativeBackend().start(spec);
 * const { reason } = await vm.exited; // "reset" when the guest powered off
 */
export class NativeBackend implements VmBackend {
  readonly name = "native" as const;
  private readonly kvm: KvmProbe;
  private readonly allowSoftwareKvm: boolean;

  /**
   * On a software /dev/kvm (kvm_pvm) a Linux guest would boot at emulation speed, so start()
   * refuses unless `allowSoftwareKvm` (or MSB_NATIVE_ALLOW_SOFTWARE_KVM=1) says to go ahead;
   * tests running small guests do.
   */
  constructor(kvm: KvmProbe = probeKvm(), options: { allowSoftwareKvm?: boolean } = {}) {
    this.kvm = kvm;
    this.allowSoftwareKvm = options.allowSoftwareKvm ?? process.env.MSB_NATIVE_ALLOW_SOFTWARE_KVM === "1";
  }

  describe(): string {
    if (this.kvm.kind === "hardware") return "native KVM VMM (hardware KVM)";
    if (this.kvm.kind === "software") {
      return `native KVM VMM on a software hypervisor: ${this.kvm.reason}; a Linux guest will not boot at usable speed here, use --backend qemu`;
    }
    return `native KVM VMM, unusable here: ${this.kvm.reason}; use --backend qemu`;
  }

  async start(spec: VmSpec): Promise<NativeVmHandle> {
    if (this.kvm.kind === "none") throw new MsbError("backend_unavailable", `the native backend needs KVM: ${this.kvm.reason}; use --backend qemu`);
    if (this.kvm.kind === "software" && !this.allowSoftwareKvm) {
      throw new MsbError(
        "backend_unavailable",
        `the native backend needs hardware KVM, and ${this.kvm.reason}: the guest would boot at emulation speed; ` +
          "use --backend qemu (the default here), or set MSB_NATIVE_ALLOW_SOFTWARE_KVM=1 to run it anyway",
      );
    }
    for (const [what, path] of [["guest kernel", spec.kernel], ["guest initramfs", spec.initrd]] as const) {
      if (path && !existsSync(path)) throw new MsbError("missing_asset", `${what} not found: ${path}`);
    }
    const lib = await loadNative();
    const json = JSON.stringify({
      kernel: spec.kernel,
      initrd: spec.initrd,
      cmdline: spec.cmdline,
      cpus: spec.cpus,
      memoryMiB: spec.memoryMiB,
      disks: spec.disks.map((d) => ({ path: d.path, readOnly: d.readOnly, serial: d.serial })),
      agentSocket: spec.agentSocket,
      netSocket: spec.netSocket,
      consoleLog: spec.consoleLog,
      shares: (spec.shares ?? []).map((s) => ({ tag: s.tag, hostPath: s.hostPath, readOnly: s.readOnly })),
    });
    const handle = lib.msb_vm_create(cstring(json) as unknown as Pointer);
    if (!handle) throw new MsbError("vm_start_failed", `native VMM could not create the VM: ${lastError(lib)}`);
    if (lib.msb_vm_start(handle) !== 0) {
      const why = lastError(lib);
      lib.msb_vm_destroy(handle);
      throw new MsbError("vm_start_failed", `native VMM could not start the VM: ${why}`);
    }
    return new RunningVm(lib, handle);
  }
}

class RunningVm implements NativeVmHandle {
  readonly exited: Promise<VmExit>;
  private freed = false;
  private final: NativeVmStats | undefined;
  private readonly detail = Buffer.alloc(DETAIL_BUF);

  constructor(
    private readonly lib: NativeLib,
    private readonly handle: bigint,
  ) {
    this.exited = new Promise<VmExit>((resolve) => {
      const check = () => {
        let code: number;
        try {
          code = this.lib.msb_vm_poll_exit(this.handle, this.detail as unknown as Pointer, BigInt(this.detail.length));
        } catch (cause) {
          resolve({ reason: "error", detail: `polling the native VMM failed: ${String(cause)}` });
          return;
        }
        if (code === 0) {
          setTimeout(check, EXIT_POLL_MS);
          return;
        }
        const detail = code > 0 ? readCString(this.detail, DETAIL_BUF) : lastError(this.lib);
        this.final = this.readStats();
        this.free();
        resolve({ reason: EXIT_REASONS[code] ?? "error", detail: detail || undefined });
      };
      setTimeout(check, EXIT_POLL_MS);
    });
  }

  kill(): void {
    if (!this.freed) this.lib.msb_vm_request_stop(this.handle);
  }

  stats(): NativeVmStats | undefined {
    return this.freed ? this.final : this.readStats();
  }

  private readStats(): NativeVmStats | undefined {
    if (this.freed) return undefined;
    const buf = Buffer.alloc(DETAIL_BUF);
    const n = this.lib.msb_vm_stats(this.handle, buf as unknown as Pointer, BigInt(buf.length));
    if (n < 0) return undefined;
    return JSON.parse(readCString(buf, n)) as NativeVmStats;
  }

  private free(): void {
    if (this.freed) return;
    this.freed = true;
    this.lib.msb_vm_destroy(this.handle);
  }
}
