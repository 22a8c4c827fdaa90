// The host-side resolver hook against loopback test servers: UDP answers with ids restored, a
// truncated UDP answer retried over TCP, silent servers skipped with a clear error, resolv.conf parsing.
import { afterAll, expect, test } from "bun:test";
import { buildQuery, buildResponse, DnsMessageRepr, DnsPacket } from "../wire/dns";
import { forwardingResolver, parseResolvConf } from "./resolver";

const q1 = (b: Uint8Array) => DnsMessageRepr.parse(DnsPacket.newChecked(b)).questions[0]!;
const answer = (q: Uint8Array, n: number) => buildResponse(q, q1(q), 0, Array.from({ length: n }, (_, i) => ({ type: 1, ttl: 60, rdata: new Uint8Array([10, 0, 0, i]) })));

// UDP answers "big.test" with TC set (and no records), everything else with one A record; TCP on the
// same port number answers with 100 records. A port free for both is searched for, as DNS needs.
const udpHandler = { data(s: { send(b: Uint8Array, p: number, a: string): boolean }, b: Uint8Array, port: number, addr: string) {
  const r = q1(b).name === "big.test" ? (() => { const x = buildResponse(b, q1(b), 0); x[2] = x[2]! | 2; return x; })() : answer(b, 1);
  s.send(r, port, addr);
} };
const tcpHandler = { data(s: { write(b: Uint8Array): number }, d: Uint8Array) {
  const q = d.subarray(2, 2 + ((d[0]! << 8) | d[1]!));
  const r = answer(q, 100);
  const out = new Uint8Array(2 + r.length); out[0] = r.length >> 8; out[1] = r.length & 0xff; out.set(r, 2);
  s.write(out);
} };
let udp!: { port: number; close(): void };
let tcp!: { stop(force?: boolean): void };
for (let i = 0; ; i++) {
  udp = await Bun.udpSocket({ hostname: "127.0.0.1", binaryType: "uint8array", socket: udpHandler });
  try { tcp = Bun.listen({ hostname: "127.0.0.1", port: udp.port, socket: tcpHandler }); break; }
  catch (e) { udp.close(); if (i > 20) throw e; }
}
const silent = await Bun.udpSocket({ hostname: "127.0.0.1" });
afterAll(() => { udp.close(); tcp.stop(true); silent.close(); });

test("UDP answers come back with the guest's id", async () => {
  const r = await forwardingResolver({ servers: [{ host: "127.0.0.1", port: udp.port }] })(buildQuery(0x1234, "a.test", 1));
  expect(DnsPacket.newChecked(r).id).toBe(0x1234);
  expect(DnsMessageRepr.parse(DnsPacket.newChecked(r)).answers.length).toBe(1);
});

test("a truncated UDP answer is retried over TCP", async () => {
  const r = await forwardingResolver({ servers: [{ host: "127.0.0.1", port: udp.port }] })(buildQuery(7, "big.test", 1));
  expect(DnsPacket.newChecked(r).truncatedFlag).toBe(false);
  expect(DnsMessageRepr.parse(DnsPacket.newChecked(r)).answers.length).toBe(100);
});

test("a silent server is skipped for the next; all silent is a clear error", async () => {
  const both = forwardingResolver({ servers: [{ host: "127.0.0.1", port: silent.port }, { host: "127.0.0.1", port: udp.port }], timeoutMs: 200 });
  expect(DnsPacket.newChecked(await both(buildQuery(1, "a.test", 1))).id).toBe(1);
  const none = forwardingResolver({ servers: [{ host: "127.0.0.1", port: silent.port }], timeoutMs: 100 });
  expect(none(buildQuery(1, "a.test", 1))).rejects.toThrow(/no nameserver answered: 127.0.0.1:\d+ did not answer within 100 ms/);
  expect(forwardingResolver({ servers: [] })(buildQuery(1, "a.test", 1))).rejects.toThrow(/no nameservers configured/);
});

test("resolv.conf parsing keeps nameserver lines only, in order", () => {
  expect(parseResolvConf("# c\nsearch x\nnameserver 10.0.0.1\n  nameserver fe80::1%eth0\noptions edns0\n")).toEqual(["10.0.0.1", "fe80::1%eth0"]);
});
