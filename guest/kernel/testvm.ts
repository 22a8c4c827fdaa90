// Boots the built guest kernel under QEMU (microvm, TCG) with a check script as the workload:
// shared by kernel.test.ts (asserts each result) and boot-time.ts (measures launch to /init).

import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { buildInitramfsGz, loadBusybox } from "../initramfs/build";
import { tcgClockArgs } from "../../src/vm/qemu";

export { tcgClockArgs };

export const REPO_ROOT = resolve(import.meta.dir, "../..");
/** Where guest/kernel/build.sh puts the kernel (and `<kernel>.config`) by default. */
export const DEFAULT_KERNEL = join(REPO_ROOT, "build/guest/vmlinux");

/**
 * The microvm machine the tests use. Our kernel has no ACPI: with acpi=off QEMU describes the CPUs
 * and IOAPIC in an MP table and appends virtio_mmio.device=... for each device to the command
 * line. The PIT and PIC stay on: under TCG there is no kvm-clock, and without ACPI (no HPET, no PM
 * timer) the PIT's interrupt is the kernel's only reference for jiffies and for checking the local
 * APIC timer. x-option-roms=off: the PVH entry needs no option ROM.
 */
export const MACHINE = "microvm,acpi=off,x-option-roms=off,rtc=on,isa-serial=on";
/**
 * reboot=t (triple fault) rather than reboot=k: microvm has no i8042, so the kernel's keyboard
 * controller reset spins through its timeouts (~1-3 s under TCG) before falling back to a triple
 * fault anyway. QEMU with -no-reboot exits on either. no_timer_check: as in KERNEL_CMDLINE
 * (src/supervisor.ts), a starved emulated vCPU must not fail the IO-APIC timer check.
 */
export const BASE_CMDLINE = ["console=ttyS0", "reboot=t", "panic=-1", "rdinit=/init", "no_timer_check"];

/** The first line /init prints; boot time is measured up to it. */
export const INIT_MARKER = "MSB-INIT-START";
export const DONE_MARKER = "MSB-CHECKS-DONE";

export interface TestDisk {
  path: string;
  readOnly: boolean;
  serial: string;
}

export interface BootOptions {
  kernel: string;
  initrd: string;
  disks?: TestDisk[];
  cpus?: number;
  memoryMiB?: number;
  machine?: string;
  /** QEMU -cpu model (default "max"). */
  cpu?: string;
  extraCmdline?: string[];
  timeoutMs?: number;
}

export interface BootResult {
  /** Everything the guest wrote to its serial console. */
  output: string;
  /** Milliseconds from spawning qemu to the INIT_MARKER line (undefined if it never came). */
  initMs?: number;
  /** Milliseconds until qemu exited. */
  totalMs: number;
  exitCode: number | null;
  timedOut: boolean;
  stderr: string;
  args: string[];
}

export function qemuArgs(o: BootOptions): string[] {
  const args = [
    "-M", o.machine ?? MACHINE,
    "-accel", "tcg",
    "-cpu", o.cpu ?? "max",
    "-smp", String(o.cpus ?? 2),
    "-m", `${o.memoryMiB ?? 512}M`,
    "-nodefaults", "-no-user-config", "-nographic", "-no-reboot",
    "-kernel", o.kernel,
    "-initrd", o.initrd,
    "-append", [...BASE_CMDLINE, ...tcgClockArgs(), ...(o.extraCmdline ?? [])].join(" "),
    "-serial", "stdio",
    "-device", "virtio-rng-device",
    // The agent's channel: a named virtio-console port, here connected to nothing.
    "-device", "virtio-serial-device,max_ports=2",
    "-chardev", "null,id=agent",
    "-device", "virtserialport,chardev=agent,name=agent",
    // A NIC on a hub with no other port: the driver binds and frames go nowhere.
    "-netdev", "hubport,id=net0,hubid=0",
    "-device", "virtio-net-device,netdev=net0",
  ];
  (o.disks ?? []).forEach((disk, i) => {
    args.push("-drive", `id=d${i},file=${disk.path},format=raw,if=none${disk.readOnly ? ",readonly=on" : ""}`);
    args.push("-device", `virtio-blk-device,drive=d${i},serial=${disk.serial}`);
  });
  return args;
}

/** Boots once, collecting the serial output; kills qemu after timeoutMs. */
export async function boot(o: BootOptions): Promise<BootResult> {
  const args = qemuArgs(o);
  const started = performance.now();
  const child = Bun.spawn(["qemu-system-x86_64", ...args], { stdin: "ignore", stdout: "pipe", stderr: "pipe" });
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    child.kill("SIGKILL");
  }, o.timeoutMs ?? 60_000);
  let output = "";
  let initMs: number | undefined;
  const decoder = new TextDecoder();
  for await (const chunk of child.stdout) {
    output += decoder.decode(chunk, { stream: true });
    if (initMs === undefined && output.includes(INIT_MARKER)) initMs = performance.now() - started;
  }
  const exitCode = await child.exited;
  clearTimeout(timer);
  const stderr = await new Response(child.stderr).text();
  return { output: output.replaceAll("\r", ""), initMs, totalMs: performance.now() - started, exitCode, timedOut, stderr, args };
}

/**
 * /init for the test initramfs: mark the start, then enter the default root the way the agent
 * must. A plain chroot is not enough: the kernel refuses to create user namespaces inside a chroot
 * (EPERM), and "/" would not be a mount point, so `unshare -m` (mount --make-rprivate /) fails.
 * Bind-mounting /rootfs onto itself and moving that mount over / makes it a real root (the
 * initramfs itself can never be pivot_root'ed away).
 */
export const TEST_INIT = `#!/rootfs/bin/busybox sh
echo ${INIT_MARKER}
bb=/rootfs/bin/busybox
$bb mount --bind /rootfs /rootfs
cd /rootfs
$bb mount --move . /
exec $bb chroot . /bin/sh /checks.sh
`;

/** A /init that only marks the start and resets the VM: for measuring boot time. */
export const BOOT_ONLY_INIT = `#!/rootfs/bin/busybox sh
echo ${INIT_MARKER}
/rootfs/bin/busybox reboot -f
`;

/**
 * Builds everything a check boot needs in a temporary directory: the probe (static), the
 * initramfs with checks.sh and the probe in the default root, an erofs image carrying an xattr and
 * an ACL, and an empty ext4 image. Throws with the missing Debian package named.
 */
export function prepareCheckBoot(): { dir: string; initrd: string; disks: TestDisk[]; cleanup: () => void } {
  for (const [tool, pkg] of [["gcc", "build-essential"], ["mkfs.erofs", "erofs-utils"], ["mkfs.ext4", "e2fsprogs"], ["qemu-system-x86_64", "qemu-system-x86"]]) {
    if (!Bun.which(tool!)) throw new Error(`${tool} not found; install Debian's ${pkg}`);
  }
  const dir = mkdtempSync(join(tmpdir(), "msb-kernel-test-"));
  const probe = join(dir, "probe");
  run(["gcc", "-static", "-O2", "-o", probe, join(import.meta.dir, "probe.c")]);

  const erofsSrc = join(dir, "erofs-src");
  mkdirSync(join(erofsSrc, "sub"), { recursive: true });
  writeFileSync(join(erofsSrc, "hello.txt"), "hello from erofs\n");
  writeFileSync(join(erofsSrc, "sub/nested.txt"), "nested\n");
  run([probe, "xattr-set", join(erofsSrc, "hello.txt")]);
  const erofs = join(dir, "layer.erofs");
  run(["mkfs.erofs", "--quiet", "--all-root", "-T0", erofs, erofsSrc]);

  const ext4 = join(dir, "data.ext4");
  writeFileSync(ext4, new Uint8Array(0));
  run(["truncate", "-s", "64M", ext4]);
  run(["mkfs.ext4", "-q", "-F", ext4]);

  const initrd = join(dir, "initramfs.cpio.gz");
  writeFileSync(initrd, buildInitramfsGz({
    init: new TextEncoder().encode(TEST_INIT),
    ...loadBusybox(),
    rootfsFiles: {
      "checks.sh": { data: readFileSync(join(import.meta.dir, "checks.sh")), mode: 0o755 },
      "usr/bin/msb-probe": { data: readFileSync(probe), mode: 0o755 },
    },
  }));
  return {
    dir,
    initrd,
    disks: [
      { path: erofs, readOnly: true, serial: "msb-erofs" },
      { path: ext4, readOnly: false, serial: "msb-ext4" },
    ],
    cleanup: () => rmSync(dir, { recursive: true, force: true }),
  };
}

/** Writes the boot-only initramfs into dir and returns its path. */
export function prepareBootOnly(dir: string): string {
  const initrd = join(dir, "boot-only.cpio.gz");
  writeFileSync(initrd, buildInitramfsGz({ init: new TextEncoder().encode(BOOT_ONLY_INIT), ...loadBusybox() }));
  return initrd;
}

function run(cmd: string[]): void {
  const r = Bun.spawnSync(cmd, { stdout: "pipe", stderr: "pipe" });
  if (r.exitCode !== 0) throw new Error(`${cmd.join(" ")} failed (exit ${r.exitCode}): ${r.stderr.toString().trim()}`);
}

export const IMAGE_DONE_MARKER = "MSB-IMAGE-DONE";

/**
 * /init for booting a real image: its layers as one erofs disk (vda), under an overlay with a
 * tmpfs upper dir, moved over / like the agent does, then the Python workload, apt and dpkg.
 */
export const IMAGE_INIT = `#!/rootfs/bin/busybox sh
echo ${INIT_MARKER}
bb=/rootfs/bin/busybox
$bb mount -t devtmpfs dev /dev
$bb mkdir -p /image /upper /newroot
$bb mount -t erofs -o ro /dev/vda /image || echo "REAL erofs-mount FAIL"
$bb mount -t tmpfs tmpfs /upper && $bb mkdir /upper/data /upper/work
$bb mount -t overlay overlay -o lowerdir=/image,upperdir=/upper/data,workdir=/upper/work /newroot || echo "REAL overlay FAIL"
$bb ip link set lo up
cd /newroot
$bb mount -t proc proc proc
$bb mount -t sysfs sysfs sys
$bb mount -t devtmpfs dev dev
$bb mkdir -p dev/pts dev/shm
$bb mount -t devpts -o newinstance,ptmxmode=0666 devpts dev/pts
$bb ln -sf pts/ptmx dev/ptmx
$bb mount -t tmpfs shm dev/shm
$bb mount -t tmpfs tmp tmp
$bb mount -t tmpfs run run
$bb cp /rootfs/workload.py tmp/workload.py
$bb mount --move . /
$bb chroot . /bin/sh -c '
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root
grep "^ID=" /etc/os-release | sed "s/^/INFO image /"
python3 /tmp/workload.py 2>&1
apt-get --version >/dev/null && echo "REAL apt ok" || echo "REAL apt FAIL"
n=$(dpkg-query -W | wc -l) && test "$n" -gt 50 && echo "REAL dpkg ok" || echo "REAL dpkg FAIL ($n packages)"
'
echo ${IMAGE_DONE_MARKER}
$bb reboot -f
`;

/**
 * Turns an OCI layout (one image, gzip layers without whiteouts, as bench/image-fixture-debian.ts
 * writes) into an erofs disk, and builds the initramfs that boots it. Needs root to extract.
 */
export function prepareImageBoot(layout: string): { initrd: string; disks: TestDisk[]; cleanup: () => void } {
  const dir = mkdtempSync(join(tmpdir(), "msb-image-test-"));
  const blob = (digest: string) => join(layout, "blobs", ...digest.split(":"));
  const index = JSON.parse(readFileSync(join(layout, "index.json"), "utf8"));
  const manifest = JSON.parse(readFileSync(blob(index.manifests[0].digest), "utf8"));
  const root = join(dir, "root");
  mkdirSync(root);
  for (const layer of manifest.layers as { digest: string }[]) {
    run(["tar", "-xzf", blob(layer.digest), "-C", root, "--numeric-owner"]);
  }
  const erofs = join(dir, "image.erofs");
  run(["mkfs.erofs", "--quiet", "-T0", erofs, root]);
  rmSync(root, { recursive: true, force: true });
  const initrd = join(dir, "initramfs.cpio.gz");
  writeFileSync(initrd, buildInitramfsGz({
    init: new TextEncoder().encode(IMAGE_INIT),
    ...loadBusybox(),
    rootfsFiles: { "workload.py": { data: readFileSync(join(import.meta.dir, "image-workload.py")), mode: 0o644 } },
  }));
  return { initrd, disks: [{ path: erofs, readOnly: true, serial: "image" }], cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}
