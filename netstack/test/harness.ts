// Test harness: the "guest" is this host's own Linux TCP/IP stack inside a network namespace,
// attached through a TAP device to a NetStack. A small Rust pump (tap-pump.rs) carries the TAP's
// frames over a unix socket in the same u32-BE framing a VM backend uses, so real curl, iperf3 and
// Python sockets drive the stack at native speed. Needs root, ip, rustc; nothing leaves the machine.
import { existsSync, mkdtempSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { NetStack, type NetStackOptions, type Closable } from "../index";

const PUMP_SRC = join(import.meta.dir, "tap-pump.rs");
const PUMP_BIN = join(tmpdir(), "msb-netstack-tap-pump");

/** Why the harness cannot run here, or null when it can. */
export function harnessUnavailable(): string | null {
  if (process.getuid?.() !== 0) return "needs root (network namespaces and TAP devices)";
  if (!existsSync("/dev/net/tun")) return "needs /dev/net/tun";
  for (const tool of ["ip", "rustc"]) if (!Bun.which(tool)) return `needs ${tool} on PATH`;
  return null;
}

export function buildPump(): string {
  if (existsSync(PUMP_BIN) && statSync(PUMP_BIN).mtimeMs > statSync(PUMP_SRC).mtimeMs) return PUMP_BIN;
  const r = Bun.spawnSync(["rustc", "-O", "--edition", "2021", "-o", PUMP_BIN + ".tmp", PUMP_SRC], { stderr: "pipe" });
  if (r.exitCode !== 0) throw new Error(`building tap-pump failed: ${r.stderr.toString()}`);
  Bun.spawnSync(["mv", PUMP_BIN + ".tmp", PUMP_BIN]);
  return PUMP_BIN;
}

function run(cmd: string[]): void {
  const r = Bun.spawnSync(cmd, { stderr: "pipe", stdout: "pipe" });
  if (r.exitCode !== 0) throw new Error(`${cmd.join(" ")} failed: ${r.stderr.toString().trim()}`);
}

export interface Guest {
  ns: string;
  stack: NetStack;
  /** Runs a command inside the guest namespace; resolves with its output (rejects on non-zero exit unless allowed). */
  exec(cmd: string[], opts?: { allowFail?: boolean; timeoutMs?: number }): Promise<{ code: number; stdout: string; stderr: string }>;
  /** Spawns a long-running process in the namespace. */
  spawn(cmd: string[]): Bun.Subprocess<"ignore", "pipe", "pipe">;
  close(): Promise<void>;
}

let seq = 0;

/** Starts a stack and a namespace "guest" attached to it (addresses as in ARCHITECTURE.md). */
export async function startGuest(opts: NetStackOptions & { mtu?: number } = {}): Promise<Guest> {
  const pump = buildPump();
  const id = `${process.pid % 10000}x${seq++}`;
  const ns = `msbns${id}`;
  const tap = `msbtap${id}`;
  const dir = mkdtempSync(join(tmpdir(), "msb-netstack-"));
  const sockPath = join(dir, "net.sock");
  const stack = new NetStack(opts);
  await stack.start();
  const listener: Closable = stack.listenUnix(sockPath);
  run(["ip", "netns", "add", ns]);
  const proc = Bun.spawn([pump, tap, sockPath, ...(opts.vnetHdr ? ["--vnet"] : [])], { stdout: "pipe", stderr: "inherit" });
  const reader = proc.stdout.getReader();
  const first = await reader.read();
  if (!new TextDecoder().decode(first.value).includes("ready")) throw new Error("tap-pump did not start");
  reader.releaseLock();
  const mtu = String(opts.mtu ?? 1500);
  const nsx = (args: string[]) => run(["ip", "netns", "exec", ns, ...args]);
  run(["ip", "link", "set", tap, "netns", ns]);
  nsx(["ip", "link", "set", "lo", "up"]);
  nsx(["ip", "link", "set", tap, "mtu", mtu, "up"]);
  nsx(["ip", "addr", "add", "10.0.2.15/24", "dev", tap]);
  nsx(["ip", "route", "add", "default", "via", "10.0.2.2"]);
  nsx(["ip", "-6", "addr", "add", "fd6d:7362::15/64", "dev", tap, "nodad"]);
  nsx(["ip", "-6", "route", "add", "default", "via", "fd6d:7362::2"]);
  const exec: Guest["exec"] = async (cmd, o = {}) => {
    const p = Bun.spawn(["ip", "netns", "exec", ns, ...cmd], { stdout: "pipe", stderr: "pipe" });
    const timer = setTimeout(() => p.kill(), o.timeoutMs ?? 60_000);
    const [stdout, stderr, code] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
    clearTimeout(timer);
    if (code !== 0 && !o.allowFail) throw new Error(`${cmd.join(" ")} in ${ns} exited ${code}: ${stderr.trim()}`);
    return { code, stdout, stderr };
  };
  return {
    ns, stack, exec,
    spawn: (cmd) => Bun.spawn(["ip", "netns", "exec", ns, ...cmd], { stdout: "pipe", stderr: "pipe", stdin: "ignore" }),
    async close() {
      proc.kill();
      await proc.exited;
      listener.close();
      stack.close();
      Bun.spawnSync(["ip", "netns", "del", ns]);
      Bun.spawnSync(["rm", "-rf", dir]);
    },
  };
}

/** A policy for tests: the default, plus exactly the loopback ports the test's own servers use. */
export function allowLoopbackPorts(...ports: number[]) {
  return (d: { ip: string; port: number; viaHostAlias: boolean }) =>
    d.viaHostAlias && (d.ip === "127.0.0.1" || d.ip === "::1") && ports.includes(d.port);
}

/** Resolves once something accepts TCP connections on 127.0.0.1:port (servers started as child processes). */
export async function waitForPort(port: number, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const ok = await Bun.connect({ hostname: "127.0.0.1", port, socket: { data() {} } }).then((s) => { s.end(); return true; }, () => false);
    if (ok) return;
    if (Date.now() > deadline) throw new Error(`nothing listens on 127.0.0.1:${port} after ${timeoutMs} ms`);
    await Bun.sleep(50);
  }
}
