// Volume benchmark, one run: sequential write/read MB/s and small-file create/stat/read rates
// through a virtio-fs share, against the same operations on the guest's own writable layer and
// on the host directory directly, with ratios. Guest timings are taken inside the guest
// (/proc/uptime around each step), so exec round trips are not counted.
//
//   bun bench/volumes.ts [seqMiB=256] [smallFiles=2000]

import { closeSync, fsyncSync, mkdirSync, mkdtempSync, openSync, readFileSync, readdirSync, rmSync, statSync, writeSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Sandbox } from "../src/sandbox";

const seqMiB = Number(process.argv[2] ?? 256);
const smallFiles = Number(process.argv[3] ?? 2000);
const MiB = 1024 * 1024;
const home = mkdtempSync(join(tmpdir(), "msb-bench-"));
process.env.MSB_HOME = home;
const shared = mkdtempSync(join(tmpdir(), "msb-bench-share-"));

interface Figures {
  writeMBs: number;
  readMBs: number;
  createPerS: number;
  statPerS: number;
  readPerS: number;
}

/** Runs the steps in the guest under `dir`; each step prints its elapsed seconds. */
async function guestFigures(sandbox: Sandbox, dir: string): Promise<Figures> {
  const script = `
set -e
t() { awk '{print $1}' /proc/uptime; }
mkdir -p ${dir}/small
a=$(t); dd if=/dev/zero of=${dir}/seq bs=1M count=${seqMiB} conv=fsync 2>/dev/null; b=$(t); echo write $a $b
sync; echo 3 > /proc/sys/vm/drop_caches
a=$(t); dd if=${dir}/seq of=/dev/null bs=1M 2>/dev/null; b=$(t); echo read $a $b
cd ${dir}/small
a=$(t); i=0; while [ $i -lt ${smallFiles} ]; do echo "small file $i" > f$i; i=$((i+1)); done; b=$(t); echo create $a $b
sync; echo 3 > /proc/sys/vm/drop_caches
a=$(t); ls -l > /dev/null; b=$(t); echo stat $a $b
echo 3 > /proc/sys/vm/drop_caches
a=$(t); cat f* > /dev/null; b=$(t); echo readsmall $a $b
cd /; rm -rf ${dir}/small ${dir}/seq
`;
  const r = await sandbox.shell(script);
  if (r.exitCode !== 0) throw new Error(`guest benchmark in ${dir} failed: ${r.stderr}`);
  const secs: Record<string, number> = {};
  for (const line of r.stdout.trim().split("\n")) {
    const [name, a, b] = line.split(" ");
    secs[name!] = Math.max(Number(b) - Number(a), 0.01);
  }
  return {
    writeMBs: seqMiB / secs.write!,
    readMBs: seqMiB / secs.read!,
    createPerS: smallFiles / secs.create!,
    statPerS: smallFiles / secs.stat!,
    readPerS: smallFiles / secs.readsmall!,
  };
}

function hostFigures(dir: string): Figures {
  const time = (f: () => void) => {
    const t = performance.now();
    f();
    return (performance.now() - t) / 1000;
  };
  const seq = join(dir, "seq");
  const block = Buffer.alloc(MiB);
  const write = time(() => {
    const fd = openSync(seq, "w");
    for (let i = 0; i < seqMiB; i++) writeSync(fd, block);
    fsyncSync(fd);
    closeSync(fd);
  });
  // The host page cache cannot be dropped without affecting others: this read is warm.
  const read = time(() => void readFileSync(seq));
  mkdirSync(join(dir, "small"));
  const create = time(() => {
    for (let i = 0; i < smallFiles; i++) {
      const fd = openSync(join(dir, "small", `f${i}`), "w");
      writeSync(fd, `small file ${i}\n`);
      closeSync(fd);
    }
  });
  const stat = time(() => {
    for (const name of readdirSync(join(dir, "small"))) statSync(join(dir, "small", name));
  });
  const readSmall = time(() => {
    for (const name of readdirSync(join(dir, "small"))) readFileSync(join(dir, "small", name));
  });
  rmSync(join(dir, "small"), { recursive: true });
  rmSync(seq);
  return { writeMBs: seqMiB / write, readMBs: seqMiB / read, createPerS: smallFiles / create, statPerS: smallFiles / stat, readPerS: smallFiles / readSmall };
}

const sandbox = await Sandbox.create({ memoryMiB: Math.max(1024, seqMiB * 2 + 512), volumes: [{ source: shared, target: "/share" }] });
try {
  const share = await guestFigures(sandbox, "/share");
  const local = await guestFigures(sandbox, "/bench-local");
  const host = hostFigures(shared);
  const fmt = (n: number) => (n >= 100 ? n.toFixed(0) : n.toFixed(1));
  console.log(`volumes: ${seqMiB} MiB sequential, ${smallFiles} small files; ${sandbox.notice}`);
  console.log(`${"".padEnd(22)} ${"share".padStart(10)} ${"guest layer".padStart(12)} ${"host".padStart(10)}   share/guest  share/host`);
  const rows: [string, keyof Figures][] = [
    ["seq write MB/s", "writeMBs"],
    ["seq read MB/s", "readMBs"],
    ["create files/s", "createPerS"],
    ["stat files/s", "statPerS"],
    ["read small files/s", "readPerS"],
  ];
  for (const [label, key] of rows) {
    console.log(
      `${label.padEnd(22)} ${fmt(share[key]).padStart(10)} ${fmt(local[key]).padStart(12)} ${fmt(host[key]).padStart(10)}   ${(share[key] / local[key]).toFixed(2).padStart(10)}x ${(share[key] / host[key]).toFixed(3).padStart(10)}x`,
    );
  }
  console.log("guest layer: the busybox root's own writable tmpfs; host: the shared directory itself (reads warm)");
} finally {
  await sandbox.stop();
  rmSync(home, { recursive: true, force: true });
  rmSync(shared, { recursive: true, force: true });
}
