// What the egress policy costs a new connection: TCP connect + 1-byte request/response from a real
// Linux guest (the netstack TAP harness: a network namespace on a TAP device bridged to a NetStack)
// to a server on a loopback alias address this script adds, with
//   off     — policy hook `() => true`, no DNS filtering
//   rules   — the `public` preset plus 24 user rules walked on every SYN (by IP)
//   pinned  — `deny any` + a domain rule: the flow is allowed only through a DNS pin
//   lookup  — per connection: a DNS query (filtered, pinned) then connect, vs the same without policy
// all in one run, rounds interleaved so machine load hits every variant alike. Also the in-process
// cost of one decision. Needs root, ip, rustc, python3; nothing leaves the machine (the server's
// address is on lo).
//
//   node_modules/.bin/bun bench/egress-policy.ts [connections-per-round] [rounds]
import { compilePolicy, type NetStackOptions } from "../netstack";
import { startGuest, harnessUnavailable, type Guest } from "../netstack/test/harness";
import { parseIp } from "../netstack/wire/address";
import { buildResponse, DnsMessageRepr, DnsPacket } from "../netstack/wire/dns";

const PER_ROUND = Number(process.argv[2] ?? 200);
const ROUNDS = Number(process.argv[3] ?? 5);
const why = harnessUnavailable() ?? (Bun.which("python3") ? null : "needs python3");
if (why) { console.error(`egress-policy bench: ${why}`); process.exit(2); }

const SERVER_IP = "44.44.44.50"; // public to the policy; local to this host (a loopback alias)
const NAME = "svc.bench.test";
const sh = (cmd: string[]) => {
  const r = Bun.spawnSync(cmd, { stderr: "pipe" });
  if (r.exitCode !== 0) throw new Error(`${cmd.join(" ")}: ${r.stderr.toString()}`);
};
sh(["ip", "addr", "add", `${SERVER_IP}/32`, "dev", "lo"]);
const cleanup = () => Bun.spawnSync(["ip", "addr", "del", `${SERVER_IP}/32`, "dev", "lo"]);
process.on("exit", cleanup);

const server = Bun.listen({
  hostname: SERVER_IP, port: 0,
  socket: { data(s) { s.write("k"); }, open(s) { s.setNoDelay(true); } },
});
const PORT = server.port;

/** The stack's upstream: svc.bench.test → the server, everything else NXDOMAIN. */
const resolver = async (q: Uint8Array) => {
  const question = DnsMessageRepr.parse(DnsPacket.newChecked(q)).questions[0]!;
  if (question.name === NAME && question.type === 1) return buildResponse(q, question, 0, [{ type: 1, ttl: 300, rdata: parseIp(SERVER_IP) }]);
  return buildResponse(q, question, question.name === NAME ? 0 : 3);
};

const manyRules = [
  ...Array.from({ length: 12 }, (_, i) => `*.tracker${i}.test`),
  ...Array.from({ length: 8 }, (_, i) => `cidr:203.${i}.0.0/16`),
  "tcp:any:25", "udp:any:123", "tcp:[2001:db8::1]:22", "icmp:any",
];
const variants: Array<{ name: string; opts: NetStackOptions; byName: boolean; lookupEach: boolean }> = [
  { name: "off", opts: { policy: () => true }, byName: false, lookupEach: false },
  { name: "rules", opts: { policy: compilePolicy({ hostAddresses: [], deny: manyRules }) }, byName: false, lookupEach: false },
  { name: "pinned", opts: { policy: compilePolicy({ hostAddresses: [], deny: ["any"], allow: [`tcp:${NAME}:${PORT}`] }) }, byName: true, lookupEach: false },
  { name: "off+lookup", opts: { policy: () => true }, byName: true, lookupEach: true },
  { name: "pinned+lookup", opts: { policy: compilePolicy({ hostAddresses: [], deny: ["any"], allow: [`tcp:${NAME}:${PORT}`] }) }, byName: true, lookupEach: true },
];

const guestScript = (byName: boolean, lookupEach: boolean, n: number) => `
import socket, struct, time, random
def lookup():
    q = struct.pack("!HHHHHH", random.randrange(65536), 0x0100, 1, 0, 0, 0) + b"".join(bytes([len(p)]) + p.encode() for p in "${NAME}".split(".")) + b"\\0" + struct.pack("!HH", 1, 1)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(5)
    s.sendto(q, ("10.0.2.3", 53)); r = s.recv(2048); s.close()
    return socket.inet_ntoa(r[-4:])
ip = lookup() if ${byName ? "True" : "False"} else "${SERVER_IP}"
ts = []
for i in range(${n}):
    t = time.perf_counter()
    if ${lookupEach ? "True" : "False"}: ip = lookup()
    c = socket.create_connection((ip, ${PORT}), timeout=5)
    c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    c.sendall(b"x"); c.recv(1); c.close()
    ts.append((time.perf_counter() - t) * 1e6)
print(" ".join("%.1f" % x for x in ts))
`;

const guests: Guest[] = [];
const samples = new Map<string, number[]>();
try {
  for (const v of variants) guests.push(await startGuest({ ...v.opts, resolver, mtu: 1500 }));
  // Warm-up: the first connections pay for ARP, JIT and socket setup.
  for (const [i, v] of variants.entries()) await guests[i]!.exec(["python3", "-c", guestScript(v.byName, v.lookupEach, 30)]);
  for (let round = 0; round < ROUNDS; round++) {
    for (const [i, v] of variants.entries()) {
      const r = await guests[i]!.exec(["python3", "-c", guestScript(v.byName, v.lookupEach, PER_ROUND)]);
      const list = samples.get(v.name) ?? [];
      list.push(...r.stdout.trim().split(" ").map(Number));
      samples.set(v.name, list);
    }
  }
} finally {
  for (const g of guests) await g.close();
  server.stop(true);
  cleanup();
}

const pct = (xs: number[], p: number) => xs[Math.min(xs.length - 1, Math.floor(xs.length * p))]!;
const base = [...samples.get("off")!].sort((a, b) => a - b);
const baseLookup = [...samples.get("off+lookup")!].sort((a, b) => a - b);
console.log(`egress policy: connect + 1-byte request/response from a namespace guest, ${ROUNDS} rounds × ${PER_ROUND} per variant, interleaved`);
for (const v of variants) {
  const xs = [...samples.get(v.name)!].sort((a, b) => a - b);
  const ref = v.lookupEach ? baseLookup : base;
  const d50 = pct(xs, 0.5) - pct(ref, 0.5), d99 = pct(xs, 0.99) - pct(ref, 0.99);
  console.log(`  ${v.name.padEnd(14)} p50 ${pct(xs, 0.5).toFixed(0).padStart(5)} µs  p99 ${pct(xs, 0.99).toFixed(0).padStart(6)} µs` +
    (v.name.startsWith("off") ? "  (baseline)" : `  vs ${v.lookupEach ? "off+lookup" : "off"}: p50 ${d50 >= 0 ? "+" : ""}${d50.toFixed(0)} µs, p99 ${d99 >= 0 ? "+" : ""}${d99.toFixed(0)} µs`));
}

// The decision alone, in process: what every SYN pays before the host connect starts.
const compiled = compilePolicy({ hostAddresses: [], deny: manyRules });
const pinnedPolicy = compilePolicy({ hostAddresses: [], deny: ["any"], allow: [`tcp:${NAME}:443`] });
const ips = ["44.44.44.50", "10.1.2.3", "::ffff:169.254.169.254", "2606:4700::1111"].map(parseIp);
const N = 200_000;
let allowed = 0;
let t = performance.now();
for (let i = 0; i < N; i++) allowed += compiled.decide({ proto: "tcp", ip: ips[i & 3]!, port: 443 }).allow ? 1 : 0;
const rulesNs = ((performance.now() - t) * 1e6) / N;
t = performance.now();
for (let i = 0; i < N; i++) allowed += pinnedPolicy.decide({ proto: "tcp", ip: ips[0]!, port: 443, names: [NAME] }).allow ? 1 : 0;
const pinnedNs = ((performance.now() - t) * 1e6) / N;
console.log(`  one decision in process: public preset + ${manyRules.length} rules ${rulesNs.toFixed(0)} ns, deny-any + pinned domain rule ${pinnedNs.toFixed(0)} ns (${allowed} allowed)`);
