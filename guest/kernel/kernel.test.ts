// Fails when the guest kernel config breaks what ordinary images need: checks the built config,
// then boots the kernel under QEMU (microvm, TCG) and runs checks.sh and probe.c inside it.

import { describe, expect, test } from "bun:test";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { fixtureDir } from "../../bench/image-fixture-debian";
import { DEFAULT_KERNEL, DONE_MARKER, IMAGE_DONE_MARKER, boot, prepareCheckBoot, prepareImageBoot } from "./testvm";

const kernel = process.env.MSB_KERNEL ?? DEFAULT_KERNEL;
const configPath = `${kernel}.config`;
const built = existsSync(kernel);
const suffix = built ? "" : ` (skipped: no kernel at ${kernel}; run guest/kernel/build.sh)`;

/** What ordinary container images and our agent rely on, independent of how msb.fragment says it. */
const REQUIRED = {
  boot: ["64BIT", "SMP", "PVH", "KVM_GUEST", "PARAVIRT", "X86_MPPARSE", "BLK_DEV_INITRD", "RD_GZIP", "BINFMT_ELF",
    "BINFMT_SCRIPT", "BINFMT_MISC", "SERIAL_8250", "SERIAL_8250_CONSOLE", "PRINTK", "PRINTK_TIME", "IKCONFIG",
    "IKCONFIG_PROC", "PANIC_ON_OOPS"],
  virtio: ["VIRTIO", "VIRTIO_MMIO", "VIRTIO_MMIO_CMDLINE_DEVICES", "VIRTIO_BLK", "VIRTIO_NET", "VIRTIO_CONSOLE",
    "HW_RANDOM", "HW_RANDOM_VIRTIO", "VSOCKETS", "VIRTIO_VSOCKETS", "FUSE_FS", "VIRTIO_FS"],
  syscalls: ["MULTIUSER", "FUTEX", "EPOLL", "SIGNALFD", "TIMERFD", "EVENTFD", "SHMEM", "MEMFD_CREATE", "AIO",
    "IO_URING", "FILE_LOCKING", "POSIX_TIMERS", "HIGH_RES_TIMERS", "ADVISE_SYSCALLS", "MEMBARRIER", "RSEQ",
    "FHANDLE", "CROSS_MEMORY_ATTACH", "SYSVIPC", "POSIX_MQUEUE", "SECCOMP", "SECCOMP_FILTER", "BPF_SYSCALL", "KEYS",
    "SECURITY_LANDLOCK"],
  isolation: ["CGROUPS", "MEMCG", "MEMCG_KMEM", "CGROUP_SCHED", "FAIR_GROUP_SCHED", "CFS_BANDWIDTH", "CGROUP_PIDS",
    "CPUSETS", "BLK_CGROUP", "BLK_DEV_THROTTLING", "CGROUP_BPF", "PSI", "NAMESPACES", "UTS_NS", "IPC_NS", "PID_NS",
    "NET_NS", "USER_NS", "TIME_NS"],
  filesystems: ["PROC_FS", "PROC_SYSCTL", "SYSFS", "DEVTMPFS", "TMPFS", "TMPFS_XATTR", "TMPFS_POSIX_ACL", "EXT4_FS",
    "EXT4_FS_POSIX_ACL", "EXT4_FS_SECURITY", "OVERLAY_FS", "EROFS_FS", "EROFS_FS_XATTR", "EROFS_FS_POSIX_ACL",
    "INOTIFY_USER", "FANOTIFY", "DNOTIFY", "UNIX98_PTYS", "BLK_DEV_LOOP"],
  network: ["NET", "INET", "IPV6", "UNIX", "PACKET", "IP_MULTICAST", "TCP_CONG_CUBIC", "INET_DIAG", "UNIX_DIAG", "TUN"],
};
/** Everything is built in: there is nowhere to load a module from. */
const FORBIDDEN = ["MODULES"];

/** Result lines checks.sh and the probe must print, each as "<kind> <name> ok". */
const EXPECTED_CHECKS = ["proc", "sysfs", "devtmpfs", "tmpfs", "devpts", "dev-shm", "mqueue", "binfmt_misc", "sysctl",
  "cgroup2", "overlay", "erofs", "overlay-on-erofs", "ext4", "loop", "fuse", "loopback-ipv4", "loopback-ipv6",
  "routes", "virtio-port", "virtio-rng", "vsock-dev", "smp", "unshare-user", "unshare-net", "unshare-pid-mount-uts"];
const EXPECTED_PROBES = ["image-xattr-acl", "overlay-xattr-acl", "ext4-xattr-acl", "epoll-eventfd-signalfd-timerfd",
  "futex", "membarrier-rseq", "memfd", "sysv-ipc", "posix-mqueue", "process-vm", "inotify", "fanotify", "dnotify",
  "file-locks", "fhandle", "aio", "io-uring", "tmpfs-xattr-acl", "unix-sockets", "tcp-ipv4", "tcp-ipv6", "multicast",
  "packet-netlink", "vsock", "pty", "seccomp-filter", "bpf", "keyctl", "landlock", "tun", "getrandom", "namespaces", "unprivileged-userns"];

function parseConfig(text: string): Map<string, string> {
  const options = new Map<string, string>();
  for (const line of text.split("\n")) {
    const m = /^CONFIG_([A-Za-z0-9_]+)=(.*)$/.exec(line);
    if (m) options.set(m[1]!, m[2]!);
  }
  return options;
}

describe.skipIf(!built)(`guest kernel config${suffix}`, () => {
  test("the config kept beside the kernel has every option ordinary images need, built in", () => {
    expect(existsSync(configPath)).toBe(true);
    const config = parseConfig(readFileSync(configPath, "utf8"));
    const missing = Object.entries(REQUIRED).flatMap(([group, names]) =>
      names.filter((name) => config.get(name) !== "y").map((name) => `${group}: CONFIG_${name}=${config.get(name) ?? "unset"}`));
    expect(missing).toEqual([]);
    expect(FORBIDDEN.filter((name) => config.has(name))).toEqual([]);
    expect(config.get("DEFAULT_TCP_CONG")).toBe('"cubic"');
  });

  test("vmlinux is an ELF with the PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY)", () => {
    const notes = Bun.spawnSync(["readelf", "-n", kernel]).stdout.toString();
    expect(notes).toMatch(/Xen\s+0x[0-9a-f]+\s+.*(0x00000012|PHYS32)/);
  });
});

describe.skipIf(!built)(`guest kernel boots under QEMU and runs what images need${suffix}`, () => {
  test("checks.sh and the probe pass inside the guest", async () => {
    const vm = prepareCheckBoot();
    try {
      const result = await boot({ kernel, initrd: vm.initrd, disks: vm.disks, cpus: 2, timeoutMs: 55_000 });
      const lines = result.output.split("\n").map((l) => l.trim());
      const context = () => `qemu ${result.args.join(" ")}\n--- serial ---\n${result.output}\n--- stderr ---\n${result.stderr}`;
      if (result.timedOut || !result.output.includes(DONE_MARKER)) console.error(context());
      expect(result.timedOut).toBe(false);
      // -no-reboot turns the guest's reset (reboot -f with reboot=k) into qemu exiting 0.
      expect(result.exitCode).toBe(0);
      expect(lines).toContain(DONE_MARKER);

      const failures = lines.filter((l) => /^(CHECK|PROBE) \S+ FAIL/.test(l));
      expect(failures).toEqual([]);
      const passed = new Set(lines.filter((l) => / ok$/.test(l)).map((l) => l.split(" ").slice(0, 2).join(" ")));
      const absent = [
        ...EXPECTED_CHECKS.map((n) => `CHECK ${n}`),
        ...EXPECTED_PROBES.map((n) => `PROBE ${n}`),
      ].filter((key) => !passed.has(key));
      expect(absent).toEqual([]);

      // The config we checked above is the one this kernel runs with.
      const md5 = lines.find((l) => l.startsWith("INFO config-md5 "))?.split(" ")[2];
      expect(md5).toBe(new Bun.CryptoHasher("md5").update(readFileSync(configPath)).digest("hex"));
    } finally {
      vm.cleanup();
    }
  }, 60_000);
});

/** What the real-image workload (image-workload.py, apt, dpkg) must report. */
const EXPECTED_REAL = ["python", "ssl", "sqlite", "subprocess", "multiprocessing", "posix-semaphore", "asyncio-ipv4",
  "asyncio-ipv6", "pty", "sleep-10ms", "getrandom", "ctypes", "threads", "epoll", "xattr", "apt", "dpkg"];
const layout = join(fixtureDir(), "oci");
const haveImage = existsSync(join(layout, "index.json")) && process.getuid?.() === 0;
const imageSuffix = !built ? suffix : haveImage ? "" :
  ` (skipped: needs root and the Debian fixture at ${layout}; build it with bench/image-fixture-debian.ts)`;

describe.skipIf(!built || !haveImage)(`a real Debian image runs on the guest kernel${imageSuffix}`, () => {
  test("python3 (ssl, sqlite, multiprocessing, asyncio over IPv4/IPv6, pty, timers), apt and dpkg work", async () => {
    const vm = prepareImageBoot(layout);
    try {
      const result = await boot({ kernel, initrd: vm.initrd, disks: vm.disks, cpus: 2, memoryMiB: 1024, timeoutMs: 280_000 });
      if (result.timedOut || !result.output.includes(IMAGE_DONE_MARKER)) console.error(result.output);
      expect(result.timedOut).toBe(false);
      expect(result.exitCode).toBe(0);
      const lines = result.output.split("\n").map((l) => l.trim());
      expect(lines.filter((l) => /^REAL \S+ FAIL/.test(l))).toEqual([]);
      const passed = new Set(lines.filter((l) => /^REAL \S+ ok$/.test(l)).map((l) => l.split(" ")[1]));
      expect(EXPECTED_REAL.filter((n) => !passed.has(n))).toEqual([]);
    } finally {
      vm.cleanup();
    }
  }, 300_000);
});
