// The native backend through bun:ffi on real KVM: freestanding guests from native/guests/ start,
// write to the console log, talk over the agent socket, and end with the right exit reason.

import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import type { VmSpec } from "./backend";
import { probeKvm } from "./kvm";
import { NativeBackend, findNativeLib, nativeLinuxSkipReason } from "./native";

const root = resolve(import.meta.dir, "../..");
const guestsDir = join(root, "native", "guests");
const kvm = probeKvm();
const libPath = process.env.MSB_NATIVE_LIB ?? join(root, "native", "target", "release", "libmsbvmm.so");
const haveAs = Bun.which("as") !== null && Bun.which("ld") !== null;

const skipReason =
  kvm.kind === "none"
    ? `no usable KVM: ${kvm.reason}`
    : !existsSync(libPath)
      ? `${libPath} is not built (cargo build --release in native/)`
      : !haveAs
        ? "binutils (as, ld) are not installed to assemble the test guests"
        : undefined;

let dir = "";
/** These guests are tiny, so they run fine on a software KVM too. */
const native = () => new NativeBackend(kvm, { allowSoftwareKvm: true });
/** Where guests that do not use the agent port still connect it, as the contract requires. */
let sink: { stop: () => void } | undefined;

function buildGuest(name: string): string {
  const obj = join(dir, `${name}.o`);
  const elf = join(dir, `${name}.elf`);
  const as = Bun.spawnSync(["as", "--64", "-I", guestsDir, "-o", obj, join(guestsDir, `${name}.S`)]);
  if (as.exitCode !== 0) throw new Error(`assembling ${name}: ${as.stderr.toString()}`);
  const ld = Bun.spawnSync(["ld", "-m", "elf_x86_64", "--no-warn-rwx-segments", "-T", join(guestsDir, "guest.ld"), "-o", elf, obj]);
  if (ld.exitCode !== 0) throw new Error(`linking ${name}: ${ld.stderr.toString()}`);
  return elf;
}

function specFor(kernel: string, extra: Partial<VmSpec> = {}): VmSpec {
  return {
    kernel,
    initrd: "",
    cmdline: "console=ttyS0 reboot=k",
    cpus: 1,
    memoryMiB: 32,
    disks: [],
    agentSocket: join(dir, "unused.sock"),
    consoleLog: join(dir, `${Math.random().toString(36).slice(2)}.log`),
    ...extra,
  };
}

/** A unix socket server like the supervisor's agent relay: answers each line with a reply. */
function agentServer(path: string, reply: string) {
  const received: string[] = [];
  const server = Bun.listen({
    unix: path,
    socket: {
      data(socket, data) {
        received.push(data.toString());
        socket.write(reply);
      },
    },
  });
  return { received, stop: () => server.stop(true) };
}

describe.skipIf(skipReason !== undefined)(`native backend on real KVM${skipReason ? ` (skipped: ${skipReason})` : ""}`, () => {
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), "msb-native-test-"));
    sink = agentServer(join(dir, "unused.sock"), "");
  });
  afterAll(() => {
    sink?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  test("finds the library", async () => {
    expect(await findNativeLib()).toBe(process.env.MSB_NATIVE_LIB ?? libPath);
  });

  test("console guest: UART output in the log, agent port echo, exit by reset", async () => {
    const sock = join(dir, "agent.sock");
    const agent = agentServer(sock, "pong from host\n");
    try {
      const spec = specFor(buildGuest("console"), { agentSocket: sock });
      const vm = await native().start(spec);
      const exit = await vm.exited;
      const log = readFileSync(spec.consoleLog, "utf8");
      expect(exit.reason).toBe("reset");
      expect(exit.detail).toBe("guest requested a reset through the keyboard controller");
      expect(log).toContain("port name: agent");
      expect(log).toContain("received: pong from host");
      expect(agent.received.join("")).toBe("ping from guest\n");
      const stats = vm.stats();
      expect(stats?.exits).toBeGreaterThan(0);
      expect(stats?.brokenDevices).toEqual([]);
    } finally {
      agent.stop();
    }
  });

  test("blk guest reads, writes and reports the serial of a disk", async () => {
    const disk = join(dir, "disk.img");
    const data = Buffer.alloc(64 * 1024);
    data.write("MSB-SECTOR-ZERO!");
    writeFileSync(disk, data);
    const spec = specFor(buildGuest("blk"), { disks: [{ path: disk, readOnly: false, serial: "ts-serial" }] });
    const vm = await native().start(spec);
    const exit = await vm.exited;
    const log = readFileSync(spec.consoleLog, "utf8");
    expect(exit.reason).toBe("reset");
    expect(log).toContain("sector0: MSB-SECTOR-ZERO!");
    expect(log).toContain("serial: ts-serial");
    expect(readFileSync(disk).subarray(512, 528).toString()).toBe("written-by-guest");
  });

  test("net guest: frames cross the net socket as u32 BE length + Ethernet frame", async () => {
    const sock = join(dir, "net.sock");
    let wire = Buffer.alloc(0);
    const reply = Buffer.alloc(60);
    Buffer.from([0x52, 0x54, 0, 0x12, 0x34, 0x56, 2, 0, 0, 0, 0, 1, 0x88, 0xb5]).copy(reply);
    reply.write("frame from host\n", 14);
    const server = Bun.listen({
      unix: sock,
      socket: {
        data(socket, data) {
          wire = Buffer.concat([wire, data]);
          if (wire.length >= 64) {
            const prefix = Buffer.alloc(4);
            prefix.writeUInt32BE(reply.length);
            socket.write(Buffer.concat([prefix, reply]));
          }
        },
      },
    });
    try {
      const spec = specFor(buildGuest("net"), { netSocket: sock });
      const vm = await native().start(spec);
      const exit = await vm.exited;
      const log = readFileSync(spec.consoleLog, "utf8");
      expect(exit.reason).toBe("reset");
      expect(wire.readUInt32BE(0)).toBe(60);
      expect(wire.subarray(4 + 14, 4 + 30).toString()).toBe("frame from guest");
      expect(log).toContain("net received: frame from host");
    } finally {
      server.stop(true);
    }
  });

  test("kill() stops a spinning guest and exited resolves as killed", async () => {
    // One vCPU running the SMP guest: the BSP waits forever for an AP that does not exist.
    const vm = await native().start(specFor(buildGuest("smp")));
    await Bun.sleep(100);
    vm.kill();
    vm.kill(); // idempotent
    const exit = await vm.exited;
    expect(exit.reason).toBe("killed");
    vm.kill(); // after the exit too
  });

  test("a missing agent socket or kernel is a clear start error", async () => {
    const kernel = buildGuest("hello");
    await expect(native().start(specFor(kernel, { agentSocket: join(dir, "nobody-listens.sock") }))).rejects.toThrow(
      /agent console port.*nobody-listens\.sock/,
    );
    await expect(native().start(specFor(join(dir, "no-such-vmlinux")))).rejects.toThrow(/guest kernel not found/);
    const notElf = join(dir, "not-elf");
    writeFileSync(notElf, "garbage");
    await expect(native().start(specFor(notElf))).rejects.toThrow(/not a usable x86-64 ELF/);
  });

  test("says why a Linux guest cannot run natively here", async () => {
    const reason = await nativeLinuxSkipReason(kvm);
    if (kvm.kind === "hardware") expect(reason).toBeUndefined();
    else expect(reason).toContain(kvm.reason);
  });

  test.skipIf(kvm.kind !== "software")("on software KVM, start() refuses by default and says why (skipped: not software KVM)", async () => {
    const prev = process.env.MSB_NATIVE_ALLOW_SOFTWARE_KVM;
    delete process.env.MSB_NATIVE_ALLOW_SOFTWARE_KVM;
    try {
      await expect(new NativeBackend(kvm).start(specFor(buildGuest("hello")))).rejects.toThrow(/needs hardware KVM.*--backend qemu/);
    } finally {
      if (prev !== undefined) process.env.MSB_NATIVE_ALLOW_SOFTWARE_KVM = prev;
    }
  });

  test("describe() says what kind of KVM it runs on", () => {
    const text = native().describe();
    expect(text).toContain(kvm.kind === "hardware" ? "hardware KVM" : "software hypervisor");
  });
});
