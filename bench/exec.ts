// Exec and file benchmark on one running sandbox, each next to the same operation on the host
// measured in the same run: `exec true` round trips (p50/p99), stdout streaming throughput (vs a
// local pipe), and file copy throughput both ways (vs a local file copy).
//
//   bun bench/exec.ts [execRuns=1000] [streamMiB=256] [fileMiB=256]

import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Sandbox } from "../src/sandbox";

const execRuns = Number(process.argv[2] ?? 1000);
const streamMiB = Number(process.argv[3] ?? 256);
const fileMiB = Number(process.argv[4] ?? 256);
const MiB = 1024 * 1024;
const home = mkdtempSync(join(tmpdir(), "msb-bench-"));
process.env.MSB_HOME = home;
const scratch = mkdtempSync(join(tmpdir(), "msb-bench-files-"));

function percentile(values: number[], p: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

function line(label: string, sandbox: string, host: string, ratio: number): void {
  console.log(`${label.padEnd(34)} sandbox ${sandbox.padStart(18)}   host ${host.padStart(18)}   ratio ${ratio.toFixed(1)}x`);
}

async function drain(stream: AsyncIterable<Uint8Array>): Promise<number> {
  let n = 0;
  for await (const chunk of stream) n += chunk.length;
  return n;
}

const sandbox = await Sandbox.create({ memoryMiB: Math.max(1024, fileMiB * 2 + 512) });
try {
  // exec true: round trip latency.
  for (let i = 0; i < 20; i++) await sandbox.exec("true");
  const guest: number[] = [];
  for (let i = 0; i < execRuns; i++) {
    const t = performance.now();
    const r = await sandbox.exec("true");
    guest.push(performance.now() - t);
    if (r.exitCode !== 0) throw new Error(`exec true failed: ${r.stderr}`);
  }
  const host: number[] = [];
  for (let i = 0; i < execRuns; i++) {
    const t = performance.now();
    await Bun.spawn(["true"]).exited;
    host.push(performance.now() - t);
  }
  const fmt = (v: number[]) => `p50 ${percentile(v, 50).toFixed(2)} p99 ${percentile(v, 99).toFixed(2)} ms`;
  console.log(`exec true x${execRuns}`);
  line("  round trip", fmt(guest), fmt(host), percentile(guest, 50) / percentile(host, 50));

  // stdout streaming: dd of /dev/zero in 64 KiB blocks through the exec's stdout (busybox
  // `head -c` is itself slow in an emulated guest: a few MB/s even into /dev/null).
  const streamBytes = streamMiB * MiB;
  const blocks = String(streamBytes / (64 * 1024));
  let t = performance.now();
  const proc = sandbox.spawn("dd", ["if=/dev/zero", "bs=65536", `count=${blocks}`, "status=none"]);
  const [got] = await Promise.all([drain(proc.stdout), proc.wait()]);
  const guestStream = (got / MiB) / ((performance.now() - t) / 1000);
  if (got !== streamBytes) throw new Error(`stdout streamed ${got} of ${streamBytes} bytes`);
  // The same producer and a local pipe inside the guest: what the guest manages without the channel.
  const inGuest = await sandbox.shell(`time sh -c 'dd if=/dev/zero bs=65536 count=${blocks} status=none | dd of=/dev/null bs=65536 status=none'`);
  const real = /real\s+(\d+)m\s*([\d.]+)s/.exec(inGuest.stderr);
  const inGuestRate = real ? streamMiB / (Number(real[1]) * 60 + Number(real[2])) : NaN;
  t = performance.now();
  const local = Bun.spawn(["dd", "if=/dev/zero", "bs=65536", `count=${blocks}`, "status=none"], { stdout: "pipe" });
  const localGot = await drain(local.stdout);
  const hostStream = (localGot / MiB) / ((performance.now() - t) / 1000);
  console.log(`stdout streaming ${streamMiB} MiB (dd bs=64k)`);
  line("  throughput", `${guestStream.toFixed(1)} MB/s`, `${hostStream.toFixed(1)} MB/s`, hostStream / guestStream);
  console.log(`  (a pipe inside the guest, same dd: ${inGuestRate.toFixed(1)} MB/s)`);

  // File copy both ways, against a local file copy of the same file.
  const src = join(scratch, "src");
  const block = crypto.getRandomValues(new Uint8Array(MiB));
  writeFileSync(src, new Uint8Array(0));
  {
    const writer = Bun.file(src).writer();
    for (let i = 0; i < fileMiB; i++) writer.write(block);
    await writer.end();
  }
  t = performance.now();
  await sandbox.fs.copyIn(src, "/tmp/bench-file");
  const inRate = fileMiB / ((performance.now() - t) / 1000);
  t = performance.now();
  await sandbox.fs.copyOut("/tmp/bench-file", join(scratch, "back"));
  const outRate = fileMiB / ((performance.now() - t) / 1000);
  t = performance.now();
  await Bun.write(join(scratch, "local-copy"), Bun.file(src));
  const localRate = fileMiB / ((performance.now() - t) / 1000);
  console.log(`file copy ${fileMiB} MiB`);
  line("  host -> sandbox (copyIn)", `${inRate.toFixed(1)} MB/s`, `${localRate.toFixed(1)} MB/s`, localRate / inRate);
  line("  sandbox -> host (copyOut)", `${outRate.toFixed(1)} MB/s`, `${localRate.toFixed(1)} MB/s`, localRate / outRate);
} finally {
  await sandbox.stop();
  rmSync(scratch, { recursive: true, force: true });
  rmSync(home, { recursive: true, force: true });
}
