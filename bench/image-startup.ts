// Start-up added by images: Sandbox.create() → first byte of `echo` for the embedded initramfs
// root, the default image (msb.local/default, one EROFS disk under an overlay), a cached
// 4-layer image (four disks), a cached 7-layer image (flattened to one disk), and the Debian
// python3 image when its fixture is built. Also the host-side costs: importing the default image
// on first use, resolving a cached image, and flattening (the 7-layer image, and Debian + 6
// layers for a large tree). Runs interleaved so machine load affects all alike.
//
//   bun bench/image-startup.ts [runs]      (default 3 runs each; qemu backend)

import { existsSync, mkdtempSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Sandbox } from "../src/sandbox";
import { QemuBackend } from "../src/vm/qemu";
import { MAX_IMAGE_LAYERS } from "../src/supervisor";
import { busyboxEntries, SIX_LAYERS, writeLayoutOver, writeOciLayout } from "../src/image/harness";
import { importImage } from "../src/image/import";
import { ensureImage } from "../src/image/pull";
import { DEFAULT_IMAGE, ensureDefaultImage } from "../src/image/default";
import { fixtureDir } from "./image-fixture-debian";

const runs = Number(process.argv[2] ?? 3);
const home = mkdtempSync(join(tmpdir(), "msb-bench-image-startup-"));
process.env.MSB_HOME = home;
const work = mkdtempSync(join(tmpdir(), "msb-bench-layouts-"));

const median = (v: number[]) => [...v].sort((a, b) => a - b)[Math.floor(v.length / 2)]!;
const ms = (v: number) => `${v.toFixed(0).padStart(6)} ms`;
async function timed<T>(fn: () => Promise<T>): Promise<[T, number]> {
  const t = performance.now();
  const r = await fn();
  return [r, performance.now() - t];
}

// Host side: the default image on first use, then warm.
const [, defaultCold] = await timed(() => ensureDefaultImage());
const [, defaultWarm] = await timed(() => ensureDefaultImage());

// A 4-layer image (the most a VM takes as separate disks) and a 7-layer one (flattened).
const four = writeOciLayout(join(work, "four"), [
  { compression: "gzip", entries: busyboxEntries() },
  ...SIX_LAYERS.slice(0, MAX_IMAGE_LAYERS - 1).map((entries) => ({ compression: "gzip" as const, entries })),
]);
const seven = writeOciLayout(join(work, "seven"), [
  { compression: "gzip", entries: busyboxEntries() },
  ...SIX_LAYERS.map((entries) => ({ compression: "gzip" as const, entries })),
]);
await importImage(four.dir, { tag: "bench/four:1" });
await importImage(seven.dir, { tag: "bench/seven:1" });
let flattenSeven = 0;
const [, sevenFirst] = await timed(() => ensureImage("bench/seven:1", { policy: "never", maxLayers: MAX_IMAGE_LAYERS, onFlatten: (s) => (flattenSeven = s.ms) }));
const [, sevenCached] = await timed(() => ensureImage("bench/seven:1", { policy: "never", maxLayers: MAX_IMAGE_LAYERS }));

const configs: { label: string; image?: string }[] = [
  { label: "initramfs root (no image)" },
  { label: `${DEFAULT_IMAGE} (1 disk, overlay)`, image: DEFAULT_IMAGE },
  { label: "cached 4-layer image (4 disks)", image: "bench/four:1" },
  { label: "cached 7-layer image (flattened, 1 disk)", image: "bench/seven:1" },
];

// Debian python3: one large layer; flattening it with the six small layers on top measures the
// merge on a real tree (~175 MB of files).
const debian = join(fixtureDir(), "oci");
let debianFlatten: { ms: number; bytes: number } | undefined;
if (existsSync(join(debian, "index.json"))) {
  await importImage(debian, { tag: "bench/debian:1" });
  configs.push({ label: "cached Debian python3 image (1 disk)", image: "bench/debian:1" });
  const layered = writeLayoutOver(join(work, "debian-plus"), debian, SIX_LAYERS.map((entries) => ({ compression: "gzip" as const, entries })));
  await importImage(layered.dir, { tag: "bench/debian-plus:1" });
  let stats = { ms: 0, bytes: 0 };
  await ensureImage("bench/debian-plus:1", { policy: "never", maxLayers: MAX_IMAGE_LAYERS, onFlatten: (s) => (stats = { ms: s.ms, bytes: s.bytes }) });
  debianFlatten = stats;
}

const results = new Map<string, { firstByte: number[]; boot: number[]; init: number[]; uptime: number[] }>();
for (const c of configs) results.set(c.label, { firstByte: [], boot: [], init: [], uptime: [] });
for (let i = 0; i < runs; i++) {
  for (const c of configs) {
    const started = performance.now();
    const sandbox = await Sandbox.create({ backend: "qemu", ...(c.image ? { image: c.image, pull: "never" as const } : {}) });
    const proc = sandbox.spawn("echo", ["x"]);
    await proc.stdout[Symbol.asyncIterator]().next();
    const r = results.get(c.label)!;
    r.firstByte.push(performance.now() - started);
    r.boot.push(sandbox.timings!.bootMs);
    r.init.push(sandbox.timings!.initMs);
    r.uptime.push(sandbox.timings!.guestUptimeMs);
    await proc.wait();
    await sandbox.stop();
  }
}

// Bare kernel boots (to a deliberate panic+reset at once, as bench/startup.ts does) with today's
// initramfs and with one lacking /rootfs: what the busybox tree in the initramfs costs each boot.
const bare = { withRootfs: [] as number[], withoutRootfs: [] as number[] };
{
  const { buildInitramfsGz, loadBusybox } = await import("../guest/initramfs/build");
  const { guestAssets } = await import("../src/assets");
  const { findQemu } = await import("../src/vm/qemu");
  const { KERNEL_CMDLINE } = await import("../src/supervisor");
  const { readFileSync, writeFileSync } = await import("node:fs");
  const agent = join(import.meta.dir, "..", "build", "guest", "msb-agent");
  if (existsSync(agent)) {
    const assets = await guestAssets();
    const input = { init: new Uint8Array(readFileSync(agent)), ...loadBusybox() };
    const initrds = { withRootfs: join(work, "with.cpio.gz"), withoutRootfs: join(work, "without.cpio.gz") };
    writeFileSync(initrds.withRootfs, buildInitramfsGz(input));
    writeFileSync(initrds.withoutRootfs, buildInitramfsGz({ ...input, withoutRootfs: true }));
    const boot = async (initrd: string) => {
      const args = new QemuBackend().buildArgs({
        kernel: assets.kernel, initrd, cpus: 1, memoryMiB: 512, disks: [],
        cmdline: [...KERNEL_CMDLINE.filter((a) => !a.startsWith("rdinit=")), "rdinit=/no-init-bench"].join(" "),
        agentSocket: join(work, "bare.sock"), consoleLog: join(work, "bare.log"),
      });
      const listener = Bun.listen({ unix: join(work, "bare.sock"), socket: { data() {} } });
      const t = performance.now();
      await Bun.spawn([findQemu(), ...args], { stdout: "ignore", stderr: "ignore" }).exited;
      listener.stop(true);
      rmSync(join(work, "bare.sock"), { force: true });
      return performance.now() - t;
    };
    for (let i = 0; i < runs; i++) {
      bare.withRootfs.push(await boot(initrds.withRootfs));
      bare.withoutRootfs.push(await boot(initrds.withoutRootfs));
    }
    (bare as any).sizes = [statSync(initrds.withRootfs).size, statSync(initrds.withoutRootfs).size];
  }
}

console.log(`image start-up, ${runs} run(s) each (medians), ${new QemuBackend().describe()}`);
console.log(`${"root".padEnd(44)} ${"first byte".padStart(10)} ${"kernel".padStart(9)} ${"HELLO→READY".padStart(12)} ${"guest uptime".padStart(12)}  added vs initramfs root`);
const base = median(results.get(configs[0]!.label)!.firstByte);
for (const c of configs) {
  const r = results.get(c.label)!;
  const fb = median(r.firstByte);
  console.log(`${c.label.padEnd(44)} ${ms(fb)} ${ms(median(r.boot))} ${ms(median(r.init)).padStart(12)} ${ms(median(r.uptime)).padStart(12)}  ${c === configs[0] ? "" : `${fb - base >= 0 ? "+" : ""}${(fb - base).toFixed(0)} ms`}`);
}
console.log("host side:");
console.log(`  default image, first use (import of the embedded root tar)  ${ms(defaultCold)}`);
console.log(`  default image, later uses (checksum of the tar, lookup)      ${ms(defaultWarm)}`);
console.log(`  7-layer image, first use (flatten ${flattenSeven.toFixed(0)} ms)             ${ms(sevenFirst)}`);
console.log(`  7-layer image, cached                                        ${ms(sevenCached)}`);
if (debianFlatten)
  console.log(`  flatten Debian python3 + 6 layers: ${(debianFlatten.bytes / 2 ** 20).toFixed(0)} MiB EROFS in ${debianFlatten.ms.toFixed(0)} ms = ${(debianFlatten.bytes / 2 ** 20 / (debianFlatten.ms / 1000)).toFixed(0)} MiB/s`);
if (bare.withRootfs.length) {
  const [a, b] = (bare as any).sizes as [number, number];
  console.log(`bare kernel boot, initramfs with /rootfs (${(a / 1024).toFixed(0)} KiB)    ${ms(median(bare.withRootfs))}`);
  console.log(`bare kernel boot, initramfs without it (${(b / 1024).toFixed(0)} KiB)      ${ms(median(bare.withoutRootfs))}`);
}
rmSync(home, { recursive: true, force: true });
rmSync(work, { recursive: true, force: true });
