// Builds the guest initramfs: /init (the msb agent), a console for the kernel, and the default
// root filesystem at /rootfs (static busybox) that the agent chroots into when no image is given.
// The same root is also written as a tar (default-rootfs.tar.gz beside the initramfs), from which
// the default image msb.local/default is made, so the default root can be an overlay like any image.
//
//   bun guest/initramfs/build.ts --agent PATH [--out build/guest/initramfs.cpio.gz] [--rootfs-out FILE] [--busybox /bin/busybox]
//
// `--init PATH` is the same as `--agent PATH` (tests use a shell script as /init). The output is
// one gzip-compressed newc archive; every entry is owned by root:root with a fixed mtime, so the
// same inputs always give the same bytes.

import { existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { CpioWriter, type CpioEntry } from "./cpio";
import { writeTar, type TarWriteEntry } from "../../src/image/tarwriter.ts";

/** The directory the agent chroots into for the default root. */
export const ROOTFS_DIR = "rootfs";
/** 2020-01-01T00:00:00Z: a fixed mtime (not 0, so tools comparing against "old" dates behave). */
export const FIXED_MTIME = 1_577_836_800;
export const DEFAULT_BUSYBOX = "/bin/busybox";
/** The default root as a tar, written beside the initramfs and embedded in dist/msb. */
export const DEFAULT_ROOTFS_TAR = "default-rootfs.tar.gz";

const ELF_MAGIC = [0x7f, 0x45, 0x4c, 0x46];
const PT_INTERP = 3;

export class InitramfsError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "InitramfsError";
  }
}

export interface InitramfsInput {
  /** Contents of /init: a static executable, or a script whose interpreter is in the archive. */
  init: Uint8Array;
  /** A static busybox binary for the default root. */
  busybox: Uint8Array;
  /** Applet paths from `busybox --list-full` (e.g. "usr/bin/awk"); each becomes a symlink. */
  applets: string[];
  /** Extra files for the default root, keyed by path inside it (tests add check scripts). */
  rootfsFiles?: Record<string, { data: Uint8Array; mode: number }>;
  /**
   * Leave /rootfs out (the default root then comes from the default image only). For measuring
   * what the busybox tree costs each boot, and for when the initramfs root is retired.
   */
  withoutRootfs?: boolean;
}

// Directories of the default root, in creation order (parents first), with their modes.
const ROOTFS_DIRS: [string, number][] = [
  ["bin", 0o755], ["sbin", 0o755], ["usr", 0o755], ["usr/bin", 0o755], ["usr/sbin", 0o755],
  ["usr/lib", 0o755], ["lib", 0o755], ["etc", 0o755], ["proc", 0o555], ["sys", 0o555],
  ["dev", 0o755], ["run", 0o755], ["tmp", 0o1777], ["root", 0o700], ["home", 0o755],
  ["var", 0o755], ["var/tmp", 0o1777], ["var/log", 0o755], ["mnt", 0o755], ["opt", 0o755],
  ["srv", 0o755],
];

const ROOTFS_ETC: Record<string, string> = {
  "etc/passwd": "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
  "etc/group": "root:x:0:\nnogroup:x:65534:\n",
  "etc/hosts": "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n",
  "etc/os-release": 'NAME="msb default root"\nID=msb\nPRETTY_NAME="msb default root (busybox)"\n',
  "etc/shells": "/bin/sh\n/bin/ash\n",
};

/** Builds the uncompressed newc archive. */
export function buildInitramfs(input: InitramfsInput): Uint8Array<ArrayBuffer> {
  const w = new CpioWriter({ mtime: FIXED_MTIME });
  // The kernel opens /dev/console for init's stdio before anything mounts devtmpfs.
  w.add({ type: "dir", path: "dev", mode: 0o755 });
  w.add({ type: "char", path: "dev/console", mode: 0o600, major: 5, minor: 1 });
  w.add({ type: "char", path: "dev/null", mode: 0o666, major: 1, minor: 3 });
  w.add({ type: "file", path: "init", mode: 0o755, data: input.init });

  if (input.withoutRootfs) return w.finish();
  w.add({ type: "dir", path: ROOTFS_DIR, mode: 0o755 });
  for (const entry of rootfsEntries(input)) w.add({ ...entry, path: `${ROOTFS_DIR}/${entry.path}` });
  return w.finish();
}

/**
 * The default root's tree (paths relative to it, parents before children): the same tree goes
 * into the initramfs at /rootfs and into the default image's tar.
 */
export function rootfsEntries(input: Omit<InitramfsInput, "init">): CpioEntry[] {
  const out: CpioEntry[] = [];
  const seen = new Set<string>();
  const add = (e: CpioEntry) => {
    seen.add(e.path);
    out.push(e);
  };
  const parents = (path: string) => {
    const parts = path.split("/");
    for (let i = 1; i < parts.length; i++) {
      const dir = parts.slice(0, i).join("/");
      if (!seen.has(dir)) add({ type: "dir", path: dir, mode: 0o755 });
    }
  };
  for (const [path, mode] of ROOTFS_DIRS) add({ type: "dir", path, mode });
  for (const [path, text] of Object.entries(ROOTFS_ETC)) add({ type: "file", path, mode: 0o644, data: new TextEncoder().encode(text) });
  add({ type: "file", path: "bin/busybox", mode: 0o755, data: input.busybox });
  for (const applet of [...new Set(input.applets)].sort()) {
    if (applet === "bin/busybox" || seen.has(applet)) continue;
    parents(applet);
    add({ type: "symlink", path: applet, target: "/bin/busybox" });
  }
  for (const [path, file] of Object.entries(input.rootfsFiles ?? {}).sort(([a], [b]) => a.localeCompare(b))) {
    const rel = path.replace(/^\/+/, "");
    parents(rel);
    add({ type: "file", path: rel, mode: file.mode, data: file.data });
  }
  return out;
}

/**
 * The default root as a plain tar (root:root, fixed mtime; deterministic), from which the
 * default image (msb.local/default) is made on first use: see src/image/default.ts.
 */
export function buildRootfsTar(input: Omit<InitramfsInput, "init">): Uint8Array<ArrayBuffer> {
  const entries: TarWriteEntry[] = [{ path: "./", type: "dir", mode: 0o755, mtime: FIXED_MTIME }];
  for (const e of rootfsEntries(input)) {
    const common = { path: e.type === "dir" ? `${e.path}/` : e.path, mode: e.mode ?? 0o777, mtime: FIXED_MTIME };
    if (e.type === "file") entries.push({ ...common, data: e.data });
    else if (e.type === "dir") entries.push({ ...common, type: "dir" });
    else if (e.type === "symlink") entries.push({ ...common, type: "symlink", linkname: e.target });
    else throw new InitramfsError(`the default root has an entry of type ${e.type} (${e.path}), which its tar does not carry`);
  }
  return writeTar(entries);
}

/** The default root's tar, gzipped (level 9, deterministic). */
export function buildRootfsTarGz(input: Omit<InitramfsInput, "init">): Uint8Array<ArrayBuffer> {
  return Bun.gzipSync(buildRootfsTar(input), { level: 9 });
}

/** Builds and gzips the archive (level 9; gzip output is deterministic, its header carries no time). */
export function buildInitramfsGz(input: InitramfsInput): Uint8Array<ArrayBuffer> {
  return Bun.gzipSync(buildInitramfs(input), { level: 9 });
}

/** Reads a static busybox and its applet list from the host. */
export function loadBusybox(path = DEFAULT_BUSYBOX): { busybox: Uint8Array; applets: string[] } {
  if (!existsSync(path)) {
    throw new InitramfsError(`busybox not found at ${path}; install Debian's busybox-static (apt-get install busybox-static) or pass --busybox PATH`);
  }
  const busybox = new Uint8Array(readFileSync(path));
  requireStaticElf(busybox, path, "busybox for the default root");
  const listed = Bun.spawnSync([path, "--list-full"]);
  if (listed.exitCode !== 0) {
    throw new InitramfsError(`${path} --list-full failed (exit ${listed.exitCode}): ${listed.stderr.toString().trim()}`);
  }
  const applets = listed.stdout.toString().split("\n").map((l) => l.trim()).filter((l) => l !== "");
  for (const applet of applets) {
    if (applet.startsWith("/") || applet.split("/").some((p) => p === ".." || p === "")) {
      throw new InitramfsError(`${path} --list-full printed an unexpected applet path ${JSON.stringify(applet)}`);
    }
  }
  if (applets.length === 0) throw new InitramfsError(`${path} --list-full listed no applets`);
  return { busybox, applets };
}

/** /init must run with nothing else present: a static ELF, or a script (#!). */
export function checkInit(data: Uint8Array, path: string): void {
  if (data.length >= 2 && data[0] === 0x23 && data[1] === 0x21) return; // "#!"
  requireStaticElf(data, path, "/init");
}

function requireStaticElf(data: Uint8Array, path: string, what: string): void {
  if (data.length < 64 || !ELF_MAGIC.every((b, i) => data[i] === b)) {
    throw new InitramfsError(`${path} is not an ELF executable or #! script; it cannot be the ${what}`);
  }
  if (data[4] !== 2 || data[5] !== 1) throw new InitramfsError(`${path} is not a 64-bit little-endian ELF; it cannot be the ${what}`);
  const view = new DataView(data.buffer, data.byteOffset, data.byteLength);
  const phoff = Number(view.getBigUint64(0x20, true));
  const phentsize = view.getUint16(0x36, true);
  const phnum = view.getUint16(0x38, true);
  if (phentsize < 4 || phoff + phnum * phentsize > data.length) {
    throw new InitramfsError(`${path} has a truncated ELF program header table`);
  }
  for (let i = 0; i < phnum; i++) {
    if (view.getUint32(phoff + i * phentsize, true) === PT_INTERP) {
      throw new InitramfsError(
        `${path} is dynamically linked (it has an ELF interpreter); the ${what} must be static (for Rust: -C target-feature=+crt-static)`,
      );
    }
  }
}

function parseArgs(argv: string[]): { init: string; out: string; busybox: string; rootfsOut: string } {
  const usage = "usage: bun guest/initramfs/build.ts --agent PATH [--out FILE] [--rootfs-out FILE] [--busybox PATH]";
  const values: Record<string, string> = {};
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    const [flag, inline] = arg.includes("=") ? [arg.slice(0, arg.indexOf("=")), arg.slice(arg.indexOf("=") + 1)] : [arg, undefined];
    if (flag === "-h" || flag === "--help") {
      console.log(usage);
      process.exit(0);
    }
    if (!["--agent", "--init", "--out", "--busybox", "--rootfs-out"].includes(flag)) throw new InitramfsError(`unknown argument ${arg}\n${usage}`);
    const value = inline ?? argv[++i];
    if (value === undefined || value === "") throw new InitramfsError(`${flag} needs a value\n${usage}`);
    values[flag === "--init" ? "--agent" : flag] = value;
  }
  if (!values["--agent"]) throw new InitramfsError(`--agent PATH is required (the static agent binary, e.g. from guest/agent)\n${usage}`);
  const root = resolve(import.meta.dir, "../..");
  const out = values["--out"] ?? join(root, "build/guest/initramfs.cpio.gz");
  return {
    init: values["--agent"],
    out,
    busybox: values["--busybox"] ?? DEFAULT_BUSYBOX,
    rootfsOut: values["--rootfs-out"] ?? join(dirname(resolve(out)), DEFAULT_ROOTFS_TAR),
  };
}

function main(): void {
  const args = parseArgs(process.argv.slice(2));
  if (!existsSync(args.init)) throw new InitramfsError(`init binary ${args.init} does not exist; build the agent first (guest/agent)`);
  const init = new Uint8Array(readFileSync(args.init));
  checkInit(init, args.init);
  const busybox = loadBusybox(args.busybox);
  const gz = buildInitramfsGz({ init, ...busybox });
  mkdirSync(dirname(resolve(args.out)), { recursive: true });
  const temp = `${args.out}.${process.pid}.tmp`;
  writeFileSync(temp, gz);
  renameSync(temp, args.out);
  console.log(`initramfs: wrote ${args.out} (${gz.length} bytes; /init from ${args.init}, busybox from ${args.busybox})`);
  const rootfs = buildRootfsTarGz(busybox);
  const rootfsTemp = `${args.rootfsOut}.${process.pid}.tmp`;
  writeFileSync(rootfsTemp, rootfs);
  renameSync(rootfsTemp, args.rootfsOut);
  console.log(`initramfs: wrote ${args.rootfsOut} (${rootfs.length} bytes; the default image's root)`);
}

if (import.meta.main) {
  try {
    main();
  } catch (error) {
    if (!(error instanceof InitramfsError)) throw error;
    console.error(`initramfs: error: ${error.message}`);
    process.exit(1);
  }
}
