// The contract between the supervisor and a VM engine: both backends (qemu, native) start the
// same guest from the same spec and hand back the same two byte streams.

/** A disk the guest sees as a virtio-blk device, in the order given (vda, vdb, ...). */
export interface DiskSpec {
  path: string;
  readOnly: boolean;
  /** Reported to the guest through VIRTIO_BLK_T_GET_ID (at most 20 bytes). */
  serial?: string;
}

/** A host directory (or single file) served to the guest over virtio-fs under `tag`. */
export interface ShareSpec {
  /** What the guest mounts by: `mount -t virtiofs TAG DIR` (1-36 printable characters). */
  tag: string;
  /** Absolute host path: a directory, or a regular file (then shown alone in its directory). */
  hostPath: string;
  /** Refused host-side: every change fails with EROFS whatever the guest does. */
  readOnly: boolean;
}

export interface VmSpec {
  /** Guest kernel: an ELF vmlinux with a PVH entry note. */
  kernel: string;
  /** Initramfs (newc cpio, optionally gzip-compressed); concatenated archives are fine. */
  initrd: string;
  cmdline: string;
  cpus: number;
  memoryMiB: number;
  disks: DiskSpec[];
  /**
   * A unix socket, already listening, that the backend connects the guest's virtio-console port
   * named `agent` to. The supervisor accepts exactly one connection on it.
   */
  agentSocket: string;
  /**
   * A unix socket, already listening, that carries the guest NIC's Ethernet frames, each as a
   * u32 big-endian length followed by the frame. Absent: the guest has no NIC.
   */
  netSocket?: string;
  /** File the kernel console (serial UART) is written to. */
  consoleLog: string;
  /** virtio-fs shares (volumes); absent or empty: none. */
  shares?: ShareSpec[];
}

/** Why a VM ended. `reset` is how a healthy guest powers off (reboot=k / triple fault). */
export type VmExitReason = "reset" | "poweroff" | "crash" | "killed" | "error";

export interface VmExit {
  reason: VmExitReason;
  /** Human-readable detail, e.g. a KVM internal error or the engine's own last words. */
  detail?: string;
}

export interface VmHandle {
  /** Process id of the engine, when it is a separate process (qemu). */
  readonly pid?: number;
  /** Resolves once the VM has ended, however it ended. Never rejects. */
  readonly exited: Promise<VmExit>;
  /** Stops the VM at once (the guest gets no chance to sync). Idempotent. */
  kill(): void;
}

export interface VmBackend {
  readonly name: "qemu" | "native";
  /** One line for the user saying how this backend will run (e.g. which accelerator and why). */
  describe(): string;
  /** Starts a VM; rejects with a clear error if it cannot even be started. */
  start(spec: VmSpec): Promise<VmHandle>;
}
