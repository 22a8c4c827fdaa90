// Rebinding protection and pinning through the DNS proxy, with a scripted upstream (the resolver
// hook is the test's edge): private A/AAAA, CNAME chains into internal names, TTL-0 public then
// private, records that carry addresses past the filter, NXDOMAIN without upstream queries.
import { describe, expect, test } from "bun:test";
import { compilePolicy } from "../policy/rules";
import { ipToString, parseIp } from "../wire/address";
import { buildQuery, DnsMessageRepr, DnsPacket, DnsType, encodeName } from "../wire/dns";
import type { DnsFilter } from "./filter";
import { PinTable } from "./pins";
import { DnsProxy } from "./proxy";

interface Rec { name: string; type: number; ttl?: number; data: string | Uint8Array; section?: 0 | 1 | 2 }

/** An upstream response for `query` with the given records; names in rdata use compression pointers to the question where they can. */
function respond(query: Uint8Array, recs: Rec[], rcode = 0): Uint8Array {
  const q = DnsMessageRepr.parse(DnsPacket.newChecked(query)).questions[0]!;
  const qname = encodeName(q.name);
  const parts: number[] = [...query.subarray(0, 12)];
  parts[2] = 0x81; parts[3] = 0x80 | rcode;
  parts.push(...qname, q.type >> 8, q.type & 0xff, 0, 1);
  const counts = [0, 0, 0];
  for (const r of recs) {
    counts[r.section ?? 0]!++;
    // The owner is the question name: a pointer to offset 12 (what real servers do).
    if (r.name === q.name) parts.push(0xc0, 12); else parts.push(...encodeName(r.name));
    let rd: Uint8Array;
    if (typeof r.data === "string" && (r.type === DnsType.A || r.type === DnsType.AAAA)) rd = parseIp(r.data);
    else if (typeof r.data === "string") rd = encodeName(r.data);
    else rd = r.data;
    const ttl = r.ttl ?? 300;
    parts.push(r.type >> 8, r.type & 0xff, 0, 1, ttl >>> 24, (ttl >>> 16) & 0xff, (ttl >>> 8) & 0xff, ttl & 0xff, rd.length >> 8, rd.length & 0xff, ...rd);
  }
  parts[6] = 0; parts[7] = counts[0]!; parts[8] = 0; parts[9] = counts[1]!; parts[10] = 0; parts[11] = counts[2]!;
  return new Uint8Array(parts);
}

function setup(upstream: (name: string, type: number, q: Uint8Array) => Rec[], opts: Parameters<typeof compilePolicy>[0] = {}, now = { t: 1_000_000 }) {
  const policy = compilePolicy({ hostAddresses: ["127.0.0.1"], ...opts });
  const pins = new PinTable({ now: () => now.t, graceMs: 5000 });
  const denied: string[] = [];
  let upstreamCalls = 0;
  const filter: DnsFilter = {
    name: (n) => { const d = policy.nameDecision(n); return d.allow ? null : policy.describe(d); },
    address: (names, ip) => { const d = policy.answerDecision(names, ip); return d.allow ? null : policy.describe(d); },
    resolved: (ip, names, ttl) => pins.pin(ip, names, ttl),
    denied: (m) => denied.push(m),
  };
  const proxy = new DnsProxy({
    resolver: async (query) => {
      upstreamCalls++;
      const q = DnsMessageRepr.parse(DnsPacket.newChecked(query)).questions[0]!;
      return respond(query, upstream(q.name, q.type, query));
    },
    localNames: new Map(), filter,
  });
  const ask = async (name: string, type: number = DnsType.A) => {
    const r = await proxy.answer(buildQuery(7, name, type), "udp");
    const m = DnsMessageRepr.parse(DnsPacket.newChecked(r!));
    return { rcode: r![3]! & 0x0f, answers: m.answers, addrs: m.answers.filter((a) => a.type === DnsType.A || a.type === DnsType.AAAA).map((a) => ipToString(a.rdata)) };
  };
  return { ask, pins, denied, policy, now, calls: () => upstreamCalls };
}

describe("rebinding filter", () => {
  test("private, loopback, metadata and host answers are dropped, public ones kept and pinned", async () => {
    const s = setup((name) => [
      { name, type: DnsType.A, data: "93.184.216.34" },
      { name, type: DnsType.A, data: "127.0.0.1" },
      { name, type: DnsType.A, data: "10.1.2.3" },
      { name, type: DnsType.A, data: "169.254.169.254" },
      { name, type: DnsType.A, data: "0.0.0.0" },
    ]);
    const r = await s.ask("mixed.test");
    expect(r.addrs).toEqual(["93.184.216.34"]);
    expect(s.denied.length).toBe(4);
    expect(s.denied.join("\n")).toContain("mixed.test → 169.254.169.254 (deny group:metadata (preset public))");
    expect(s.pins.names(parseIp("93.184.216.34"))).toEqual(["mixed.test"]);
    expect(s.pins.names(parseIp("127.0.0.1"))).toEqual([]);
  });

  test("AAAA: ULA, link-local, mapped and NAT64 spellings of private IPv4 are dropped", async () => {
    const s = setup((name) => ["fd00::1", "fe80::1", "::ffff:10.0.0.1", "64:ff9b::7f00:1", "2002:a9fe:a9fe::", "fd00:ec2::254", "2606:4700::1"]
      .map((data) => ({ name, type: DnsType.AAAA, data })));
    expect((await s.ask("v6.test", DnsType.AAAA)).addrs).toEqual(["2606:4700::1"]);
  });

  test("CNAME chains: an internal target is dropped; records outside the chain never reach the guest", async () => {
    const s = setup((name) => [
      { name, type: DnsType.CNAME, data: "hop.test" },
      { name: "hop.test", type: DnsType.CNAME, data: "internal.corp" },
      { name: "internal.corp", type: DnsType.A, data: "192.168.1.10" },
      { name: "unrelated.test", type: DnsType.A, data: "1.2.3.4" },
      { name: "ns.test", type: DnsType.A, data: "10.0.0.53", section: 2 },
    ]);
    const r = await s.ask("start.test");
    expect(r.addrs).toEqual([]);
    expect(r.answers.map((a) => a.type)).toEqual([DnsType.CNAME, DnsType.CNAME]);
    expect(s.denied.join("\n")).toContain("internal.corp → 192.168.1.10");
    expect(s.denied.join("\n")).toContain("unrelated.test → 1.2.3.4 (not in the question's CNAME chain)");
  });

  test("a domain rule alone never opens a private answer; with its address allowed too, the chain is pinned", async () => {
    const up = (name: string): Rec[] => name === "start.test"
      ? [{ name, type: DnsType.CNAME, data: "intranet.corp" }, { name: "intranet.corp", type: DnsType.A, data: "10.9.8.7" }]
      : [{ name, type: DnsType.A, data: "10.9.8.7" }];
    const only = setup(up, { allow: ["tcp:intranet.corp:443"] });
    expect((await only.ask("intranet.corp")).addrs).toEqual([]);
    const s = setup(up, { allow: ["tcp:intranet.corp:443", "cidr:10.9.8.0/24"] });
    expect((await s.ask("start.test")).addrs).toEqual(["10.9.8.7"]);
    expect(s.pins.names(parseIp("10.9.8.7")).sort()).toEqual(["intranet.corp", "start.test"]);
    const strict = setup(up, { deny: ["any"], allow: ["tcp:intranet.corp:443", "cidr:10.9.8.0/24"] });
    await strict.ask("intranet.corp");
    const d = strict.policy.decide({ proto: "tcp", ip: parseIp("10.9.8.7"), port: 443, names: strict.pins.names(parseIp("10.9.8.7")) });
    expect(d.allow).toBe(true);
  });

  test("TTL 0 public, then private: the second answer is dropped, the first pin expires after the grace", async () => {
    let n = 0;
    const s = setup((name) => [{ name, type: DnsType.A, ttl: 0, data: n++ === 0 ? "93.184.216.34" : "127.0.0.1" }], { deny: ["any"], allow: ["rebind.test"] });
    expect((await s.ask("rebind.test")).addrs).toEqual(["93.184.216.34"]);
    expect((await s.ask("rebind.test")).addrs).toEqual([]);
    expect(s.calls()).toBe(2); // TTL 0 is not cached
    expect(s.pins.names(parseIp("93.184.216.34"))).toEqual(["rebind.test"]);
    s.now.t += 5001;
    expect(s.pins.names(parseIp("93.184.216.34"))).toEqual([]);
  });

  test("SVCB/HTTPS address hints and DNAME are dropped; MX and TXT pass with names written out", async () => {
    const s = setup((name, type) => type === DnsType.MX
      ? [{ name, type: DnsType.MX, data: new Uint8Array([0, 10, 0xc0, 12]) }]
      : [{ name, type: 65, data: new Uint8Array([0, 1, 0, 0, 4, 0, 4, 127, 0, 0, 1]) }, { name, type: DnsType.TXT, data: new Uint8Array([2, 104, 105]) }]);
    const https = await s.ask("svc.test", 65);
    expect(https.answers.map((a) => a.type)).toEqual([DnsType.TXT]);
    const mx = await s.ask("mail.test", DnsType.MX);
    expect([...mx.answers[0]!.rdata]).toEqual([0, 10, ...encodeName("mail.test")]);
  });
});

describe("names", () => {
  test("names no rule allows get NXDOMAIN without an upstream query", async () => {
    const s = setup((name) => [{ name, type: DnsType.A, data: "1.2.3.4" }], { deny: ["any"], allow: ["tcp:api.example.com:443", "*.pypi.org"] });
    expect((await s.ask("c2VjcmV0.exfil.test")).rcode).toBe(3);
    expect((await s.ask("pypi.org")).rcode).toBe(3);
    expect((await s.ask("4.3.2.1.in-addr.arpa", DnsType.PTR)).rcode).toBe(3);
    expect(s.calls()).toBe(0);
    expect(s.denied[0]).toContain("NXDOMAIN without asking upstream (default (deny any))");
    expect((await s.ask("api.example.com")).addrs).toEqual(["1.2.3.4"]);
    expect((await s.ask("files.pypi.org")).addrs).toEqual(["1.2.3.4"]);
    expect(s.calls()).toBe(2);
  });

  test("a CNAME into a denied name yields no addresses", async () => {
    const s = setup((name) => [{ name, type: DnsType.CNAME, data: "x.tracker.test" }, { name: "x.tracker.test", type: DnsType.A, data: "1.2.3.4" }], { deny: ["*.tracker.test"] });
    expect((await s.ask("innocent.test")).addrs).toEqual([]);
    expect((await s.ask("y.tracker.test")).rcode).toBe(3);
  });

  test("cached answers are pinned again when served", async () => {
    const s = setup((name) => [{ name, type: DnsType.A, ttl: 100, data: "1.2.3.4" }]);
    await s.ask("cached.test");
    s.now.t += 200_000;
    expect(s.pins.names(parseIp("1.2.3.4"))).toEqual([]);
    await s.ask("cached.test"); // served from the proxy's cache (real clock), pinned on the table's clock
    expect(s.calls()).toBe(1);
    expect(s.pins.names(parseIp("1.2.3.4"))).toEqual(["cached.test"]);
  });
});

describe("pin table", () => {
  test("TTL plus grace, capped TTLs, bounded size (least recently pinned goes)", () => {
    const now = { t: 0 };
    const p = new PinTable({ now: () => now.t, graceMs: 1000, maxTtlSec: 60, maxAddresses: 2 });
    p.pin(parseIp("1.1.1.1"), ["a.test"], 10);
    p.pin(parseIp("2.2.2.2"), ["b.test"], 1_000_000);
    now.t = 10_999;
    expect(p.names(parseIp("1.1.1.1"))).toEqual(["a.test"]);
    now.t = 11_000;
    expect(p.names(parseIp("1.1.1.1"))).toEqual([]);
    expect(p.names(parseIp("2.2.2.2"))).toEqual(["b.test"]);
    now.t = 61_000;
    expect(p.names(parseIp("2.2.2.2"))).toEqual([]);
    p.pin(parseIp("3.3.3.3"), ["c"], 100); p.pin(parseIp("4.4.4.4"), ["d"], 100); p.pin(parseIp("5.5.5.5"), ["e"], 100);
    expect(p.size).toBe(2);
    expect(p.names(parseIp("3.3.3.3"))).toEqual([]);
    expect(p.names(parseIp("5.5.5.5"))).toEqual(["e"]);
  });
});
