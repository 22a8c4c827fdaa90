// Benchmarks the native VMM through the same bun:ffi wrapper the product uses:
//  - create-to-first-guest-instruction (msb_vm_create entry to the guest's first exit; the
//    exits guest's first instruction after one `mov` is a port write),
//  - exit round-trip latency (2000 port writes to an unclaimed port),
//  - host RSS of an idle VM beyond its guest memory,
//  - boot-to-agent-ready, native vs qemu, on hosts with hardware KVM.
// Usage: bun bench/native-vmm.ts [--runs N]

import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import type { VmBackend, VmSpec } from "../src/vm/backend";
import { probeKvm } from "../src/vm/kvm";
import { NativeBackend, type NativeVmHandle } from "../src/vm/native";
import { QemuBackend } from "../src/vm/qemu";

const root = resolve(import.meta.dir, "..");
const guestsDir = join(root, "native", "guests");
const runsArg = process.argv.indexOf("--runs");
const RUNS = runsArg > 0 ? Number(process.argv[runsArg + 1]) : 20;
const dir = mkdtempSync(join(tmpdir(), "msb-bench-native-"));
const kvm = probeKvm();

function buildGuest(name: string): string {
  const obj = join(dir, `${name}.o`);
  const elf = join(dir, `${name}.elf`);
  for (const cmd of [
    ["as", "--64", "-I", guestsDir, "-o", obj, join(guestsDir, `${name}.S`)],
    ["ld", "-m", "elf_x86_64", "--no-warn-rwx-segments", "-T", join(guestsDir, "guest.ld"), "-o", elf, obj],
  ]) {
    const r = Bun.spawnSync(cmd);
    if (r.exitCode !== 0) throw new Error(`${cmd[0]} ${name}: ${r.stderr.toString()}`);
  }
  return elf;
}

const sink = Bun.listen({ unix: join(dir, "agent.sock"), socket: { data() {} } });

function spec(kernel: string, memoryMiB = 32): VmSpec {
  return {
    kernel,
    initrd: "",
    cmdline: "console=ttyS0 reboot=k",
    cpus: 1,
    memoryMiB,
    disks: [],
    agentSocket: join(dir, "agent.sock"),
    consoleLog: join(dir, "console.log"),
  };
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}
function p90(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(s.length * 0.9))]!;
}
const ms = (ns: number) => (ns / 1e6).toFixed(2);

function rssKiB(): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync("/proc/self/status", "utf8"));
  return m ? Number(m[1]) : NaN;
}

/** Rss of the anonymous mapping that is exactly the guest's RAM. */
function guestRamRssKiB(memoryMiB: number): number {
  const smaps = readFileSync("/proc/self/smaps", "utf8").split("\n");
  let inGuest = false;
  let total = 0;
  for (const line of smaps) {
    const head = /^([0-9a-f]+)-([0-9a-f]+) /.exec(line);
    if (head) {
      const size = Number(BigInt(`0x${head[2]}`) - BigInt(`0x${head[1]}`));
      inGuest = size === memoryMiB * 1024 * 1024 && !line.includes("/");
      continue;
    }
    if (inGuest && line.startsWith("Rss:")) total += Number(/(\d+)/.exec(line)![1]);
  }
  return total;
}

console.log(`native VMM benchmark on ${kvm.kind} KVM (${kvm.reason}); ${RUNS} runs each`);
// The micro-guests here are tiny, so they are measured on software KVM too.
const backend = new NativeBackend(kvm, { allowSoftwareKvm: true });

// 1 + 2: create-to-first-instruction and exit round trip.
{
  const exits = buildGuest("exits");
  const firsts: number[] = [];
  const walls: number[] = [];
  const perExit: number[] = [];
  // One warm-up run loads the library and warms page caches.
  await (await backend.start(spec(exits))).exited;
  for (let i = 0; i < RUNS; i++) {
    const t0 = Bun.nanoseconds();
    const vm = (await backend.start(spec(exits))) as NativeVmHandle;
    const started = Bun.nanoseconds() - t0;
    const exit = await vm.exited;
    if (exit.reason !== "reset") throw new Error(`exits guest ended with ${exit.reason}: ${exit.detail}`);
    const s = vm.stats()!;
    firsts.push(s.firstExitNs);
    walls.push(started);
    perExit.push((s.lastExitNs - s.firstExitNs) / Math.max(1, s.pioExits - 1));
  }
  console.log(`create-to-first-guest-instruction: median ${ms(median(firsts))} ms, p90 ${ms(p90(firsts))} ms (Firecracker: 125 ms to init)`);
  console.log(`  NativeBackend.start() returned after: median ${ms(median(walls))} ms`);
  console.log(
    `exit round trip (port write to the VMM and back, incl. the guest's dec/jnz): median ${(median(perExit) / 1000).toFixed(2)} us`,
  );
  if (kvm.kind === "software") {
    console.log("  note: on kvm_pvm the guest's two loop instructions are emulated (~1.5 us each) and are part of this figure");
  }
}

// 3: RSS of an idle VM beyond guest memory.
{
  const idle = buildGuest("idle");
  const memoryMiB = 256;
  // Warm up so the library, its threads' first stacks and allocator arenas exist before measuring.
  const warm = await backend.start(spec(idle, memoryMiB));
  await Bun.sleep(50);
  warm.kill();
  await warm.exited;
  Bun.gc(true);
  const before = rssKiB();
  const vm = await backend.start(spec(idle, memoryMiB));
  await Bun.sleep(300);
  const after = rssKiB();
  const guest = guestRamRssKiB(memoryMiB);
  vm.kill();
  await vm.exited;
  const overhead = after - before - guest;
  console.log(
    `idle VM (${memoryMiB} MiB guest, 1 vCPU): host RSS +${after - before} KiB, of which guest RAM touched ${guest} KiB; VMM overhead ${overhead} KiB (${(overhead / 1024).toFixed(2)} MiB; Firecracker: < 5 MiB)`,
  );
}

// 4: boot-to-agent-ready, native vs qemu, with the real guest.
{
  const kernel = process.env.MSB_KERNEL ?? join(root, "build", "guest", "vmlinux");
  const initrd = process.env.MSB_INITRD ?? join(root, "build", "guest", "initramfs.cpio.gz");
  if (kvm.kind !== "hardware") {
    console.log(`boot-to-agent-ready native vs qemu: skipped, needs hardware KVM (${kvm.reason})`);
  } else if (!(await Bun.file(kernel).exists()) || !(await Bun.file(initrd).exists())) {
    console.log(`boot-to-agent-ready native vs qemu: skipped, guest assets missing (${kernel}, ${initrd}); run scripts/setup.sh`);
  } else {
    const results: Record<string, number[]> = { native: [], qemu: [] };
    for (let i = 0; i < Math.min(RUNS, 10); i++) {
      for (const b of [new NativeBackend(kvm), new QemuBackend(kvm)] as VmBackend[]) {
        results[b.name]!.push(await bootToAgent(b, kernel, initrd));
      }
    }
    const n = median(results.native!);
    const q = median(results.qemu!);
    console.log(`boot-to-agent-ready: native median ${n.toFixed(1)} ms, qemu median ${q.toFixed(1)} ms, qemu/native ${(q / n).toFixed(2)}x`);
  }
}

/** Time from start() to the first bytes the guest agent sends on its port. */
async function bootToAgent(b: VmBackend, kernel: string, initrd: string): Promise<number> {
  const sock = join(dir, `boot-${b.name}.sock`);
  let firstData: (t: number) => void = () => {};
  const ready = new Promise<number>((r) => (firstData = r));
  const server = Bun.listen({ unix: sock, socket: { data() { firstData(Bun.nanoseconds()); } } });
  const t0 = Bun.nanoseconds();
  const vm = await b.start({
    kernel,
    initrd,
    cmdline: "console=ttyS0 reboot=k panic=-1 quiet",
    cpus: 1,
    memoryMiB: 256,
    disks: [],
    agentSocket: sock,
    consoleLog: join(dir, `boot-${b.name}.log`),
  });
  const timeout = Bun.sleep(30_000).then(() => NaN);
  const t1 = await Promise.race([ready, timeout]);
  vm.kill();
  await vm.exited;
  server.stop(true);
  return (t1 - t0) / 1e6;
}

sink.stop(true);
rmSync(dir, { recursive: true, force: true });
