// Side-by-side network benchmark in the namespace harness: our NetStack vs slirp4netns vs pasta,
// each giving a network namespace (the "guest") a way to the host's loopback. Prints iperf3
// throughput both ways at MTU 1500 and 65520, TCP connect+request+response latency (p50/p99)
// and the network process's CPU per Gbit. Needs root, iperf3, python3, slirp4netns, passt (pasta).
//
//   node_modules/.bin/bun bench/netstack-bench.ts [seconds-per-iperf-run=5] [only=ours,ours-vnet,slirp4netns,pasta]
//
// "ours-vnet" runs the stack with the virtio-net header mode (checksum offload + TSO through the
// TAP, as a VMM passing the header would); plain "ours" is what qemu -netdev stream gives.
import { readFileSync } from "node:fs";
import { allowLoopbackPorts, harnessUnavailable, startGuest, waitForPort } from "../netstack/test/harness";

const SECONDS = Number(process.argv[2] ?? 5);
const ONLY = (process.argv[3] ?? "ours,ours-vnet,slirp4netns,pasta").split(",");
const IPERF_PORT = 5201;
const ECHO_PORT = 5202;

const why = harnessUnavailable();
if (why) { console.error(`netstack bench: ${why}`); process.exit(2); }
for (const t of ["iperf3", "python3", "slirp4netns", "pasta"]) if (!Bun.which(t)) { console.error(`netstack bench: needs ${t} (apt: iperf3 python3 slirp4netns passt)`); process.exit(2); }

const cpuOfPid = (pid: number) => {
  const f = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]!.split(" ");
  return (Number(f[11]) + Number(f[12])) / 100; // utime + stime in clock ticks (USER_HZ = 100)
};

interface Setup { name: string; ns: string; gateway: string; cpu: () => number; extraCpu?: () => number; close(): Promise<void> }

function sh(cmd: string[]) {
  const r = Bun.spawnSync(cmd, { stderr: "pipe" });
  if (r.exitCode !== 0) throw new Error(`${cmd.join(" ")}: ${r.stderr.toString()}`);
}

async function waitFor(ns: string, addrPrefix: string) {
  for (let i = 0; i < 100; i++) {
    const r = Bun.spawnSync(["ip", "netns", "exec", ns, "ip", "-4", "addr"], { stdout: "pipe" });
    if (r.stdout.toString().includes(addrPrefix)) return;
    await Bun.sleep(50);
  }
  throw new Error(`namespace ${ns} never got an address ${addrPrefix}*`);
}

async function ours(mtu: number, vnetHdr = false): Promise<Setup> {
  const g = await startGuest({ mtu, vnetHdr, policy: allowLoopbackPorts(IPERF_PORT, ECHO_PORT) });
  const self = () => { const u = process.cpuUsage(); return (u.user + u.system) / 1e6; };
  const pumpPid = Number(Bun.spawnSync(["pgrep", "-n", "-f", "msb-netstack-tap-pump"], { stdout: "pipe" }).stdout.toString().trim());
  return { name: vnetHdr ? "msb +vnet/TSO" : "msb netstack", ns: g.ns, gateway: "10.0.2.2", cpu: self, extraCpu: () => (pumpPid ? cpuOfPid(pumpPid) : 0), close: () => g.close() };
}

async function slirp(mtu: number): Promise<Setup> {
  const ns = `msbbench-slirp${mtu}`;
  Bun.spawnSync(["ip", "netns", "del", ns]);
  sh(["ip", "netns", "add", ns]);
  const p = Bun.spawn(["slirp4netns", "--netns-type=path", "--configure", `--mtu=${mtu}`, `/run/netns/${ns}`, "tap0"], { stdout: "ignore", stderr: "ignore" });
  await waitFor(ns, "10.0.2.100");
  sh(["ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up"]);
  return { name: "slirp4netns", ns, gateway: "10.0.2.2", cpu: () => cpuOfPid(p.pid), async close() { p.kill(); await p.exited; Bun.spawnSync(["ip", "netns", "del", ns]); } };
}

async function pasta(mtu: number): Promise<Setup> {
  const ns = `msbbench-pasta${mtu}`;
  Bun.spawnSync(["ip", "netns", "del", ns]);
  sh(["ip", "netns", "add", ns]);
  const p = Bun.spawn(["pasta", "-f", "-q", "--runas", "0", "--netns-only", "--config-net", "-m", String(mtu), "-t", "none", "-u", "none", "-T", "none", "-U", "none", "--netns", `/run/netns/${ns}`],
    { stdout: "ignore", stderr: "ignore" });
  const gw = Bun.spawnSync(["ip", "-4", "route", "show", "default"], { stdout: "pipe" }).stdout.toString().split(" ")[2]!;
  const prefix = gw.split(".").slice(0, 3).join(".");
  await waitFor(ns, prefix);
  sh(["ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up"]);
  return { name: "pasta", ns, gateway: gw, cpu: () => cpuOfPid(p.pid), async close() { p.kill(); await p.exited; Bun.spawnSync(["ip", "netns", "del", ns]); } };
}

async function iperf(s: Setup, reverse: boolean) {
  const c0 = s.cpu(), e0 = s.extraCpu?.() ?? 0;
  const r = Bun.spawn(["ip", "netns", "exec", s.ns, "iperf3", "-c", s.gateway, "-p", String(IPERF_PORT), "-t", String(SECONDS), "-J", ...(reverse ? ["-R"] : [])], { stdout: "pipe", stderr: "pipe" });
  const out = await new Response(r.stdout).text();
  await r.exited;
  const cpu = s.cpu() - c0, extra = (s.extraCpu?.() ?? 0) - e0;
  try {
    const j = JSON.parse(out);
    const bytes = j.end.sum_received.bytes as number;
    const secs = j.end.sum_received.seconds as number;
    const gbits = (bytes * 8) / 1e9;
    return { gbps: gbits / secs, cpuPerGbit: cpu / gbits, extraPerGbit: extra / gbits };
  } catch {
    return { gbps: NaN, cpuPerGbit: NaN, extraPerGbit: NaN, error: out.slice(0, 200) };
  }
}

async function latency(s: Setup) {
  const r = Bun.spawn(["ip", "netns", "exec", s.ns, "python3", "-c", `
import socket, time
ts = []
for i in range(400):
    t = time.perf_counter()
    c = socket.create_connection(("${s.gateway}", ${ECHO_PORT}), timeout=5)
    c.sendall(b"GET / HTTP/1.0\\r\\n\\r\\n"); c.recv(100); c.close()
    ts.append((time.perf_counter() - t) * 1e6)
ts = sorted(ts[20:])
print(ts[len(ts)//2], ts[int(len(ts)*0.99)])
`], { stdout: "pipe", stderr: "pipe" });
  const [p50, p99] = (await new Response(r.stdout).text()).trim().split(" ").map(Number);
  return { p50: p50!, p99: p99! };
}

const iperfServer = Bun.spawn(["iperf3", "-s", "-B", "127.0.0.1", "-p", String(IPERF_PORT)], { stdout: "ignore", stderr: "ignore" });
const echoServer = Bun.spawn(["python3", "-c", `
import socketserver
class H(socketserver.BaseRequestHandler):
    def handle(self):
        self.request.recv(100); self.request.sendall(b"HTTP/1.0 200 OK\\r\\n\\r\\nok")
socketserver.ThreadingTCPServer.allow_reuse_address = True
socketserver.ThreadingTCPServer(("127.0.0.1", ${ECHO_PORT}), H).serve_forever()
`], { stdout: "ignore", stderr: "ignore" });
await waitForPort(IPERF_PORT);
await waitForPort(ECHO_PORT);

const rows: string[] = [];
const fmt = (n: number, d = 2) => (Number.isFinite(n) ? n.toFixed(d) : "n/a");
try {
  for (const mtu of [1500, 65520]) {
    const oursVnet = (mtu: number) => ours(mtu, true);
    for (const [name, make] of [["ours", ours], ["ours-vnet", oursVnet], ["slirp4netns", slirp], ["pasta", pasta]] as const) {
      if (!ONLY.includes(name)) continue;
      const s = await make(mtu);
      try {
        const up = await iperf(s, false);
        const down = await iperf(s, true);
        const lat = await latency(s);
        const extra = s.extraCpu ? ` (+ TAP pump ${fmt(up.extraPerGbit, 3)}/${fmt(down.extraPerGbit, 3)})` : "";
        rows.push(`${s.name.padEnd(14)} mtu ${String(mtu).padEnd(5)}  guest→host ${fmt(up.gbps).padStart(6)} Gbit/s  host→guest ${fmt(down.gbps).padStart(6)} Gbit/s  ` +
          `connect+req+resp p50 ${fmt(lat.p50, 0)} µs p99 ${fmt(lat.p99, 0)} µs  cpu-s/Gbit ${fmt(up.cpuPerGbit, 3)}/${fmt(down.cpuPerGbit, 3)}${extra}`);
        console.log(rows.at(-1));
      } finally {
        await s.close();
      }
    }
  }
} finally {
  iperfServer.kill();
  echoServer.kill();
}
