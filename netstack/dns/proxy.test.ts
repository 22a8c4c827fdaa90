// DNS proxy tests with a scripted resolver hook: caching by TTL with aged TTLs, id rewriting,
// truncation for UDP, malformed queries, resolver failures and the host alias.
import { expect, setSystemTime, test, afterEach } from "bun:test";
import { buildQuery, buildResponse, DnsMessageRepr, DnsPacket } from "../wire/dns";
import { DnsProxy } from "./proxy";

afterEach(() => setSystemTime());

function proxy(answer: (q: Uint8Array) => Uint8Array | Promise<Uint8Array>) {
  let calls = 0;
  const p = new DnsProxy({ resolver: async (q) => { calls++; return answer(q); }, localNames: new Map([["host.msb.internal", { a: new Uint8Array([10, 0, 2, 2]) }]]) });
  return { p, calls: () => calls };
}
const parse = (r: Uint8Array | null) => DnsMessageRepr.parse(DnsPacket.newChecked(r!));
const aRecord = (q: Uint8Array, ttl: number) => buildResponse(q, parse(q).questions[0], 0, [{ type: 1, ttl, rdata: new Uint8Array([1, 2, 3, 4]) }]);

test("answers are cached for their TTL, served with the guest's id and aged TTLs, then refetched", async () => {
  setSystemTime(new Date("2026-01-01T00:00:00Z"));
  const { p, calls } = proxy((q) => aRecord(q, 100));
  const r1 = parse(await p.answer(buildQuery(1, "a.example", 1), "udp"));
  expect(r1.answers[0]!.ttl).toBe(100);
  setSystemTime(new Date("2026-01-01T00:00:40Z"));
  const r2 = parse(await p.answer(buildQuery(2, "A.EXAMPLE", 1), "udp"));
  expect(r2.id).toBe(2);
  expect(r2.answers[0]!.ttl).toBe(60);
  expect(calls()).toBe(1);
  setSystemTime(new Date("2026-01-01T00:01:41Z"));
  await p.answer(buildQuery(3, "a.example", 1), "udp");
  expect(calls()).toBe(2);
});

test("zero TTL and SERVFAIL are not cached", async () => {
  const { p, calls } = proxy((q) => aRecord(q, 0));
  await p.answer(buildQuery(1, "z.example", 1), "udp");
  await p.answer(buildQuery(1, "z.example", 1), "udp");
  expect(calls()).toBe(2);
});

test("a resolver failure or a mismatched answer becomes SERVFAIL", async () => {
  const failing = proxy(() => { throw new Error("down"); }).p;
  expect((await failing.answer(buildQuery(9, "x.example", 1), "udp"))![3]! & 15).toBe(2);
  const wrong = proxy(() => aRecord(buildQuery(9, "other.example", 1), 5)).p;
  expect((await wrong.answer(buildQuery(9, "x.example", 1), "udp"))![3]! & 15).toBe(2);
});

test("answers too big for UDP come back truncated so the guest retries over TCP", async () => {
  const { p } = proxy((q) => buildResponse(q, parse(q).questions[0], 0,
    Array.from({ length: 40 }, (_, i) => ({ type: 1, ttl: 60, rdata: new Uint8Array([1, 1, 1, i]) }))));
  const udp = await p.answer(buildQuery(1, "big.example", 1), "udp");
  expect(udp![2]! & 2).toBe(2);
  expect(udp!.length).toBeLessThanOrEqual(512);
  const tcp = await p.answer(buildQuery(1, "big.example", 1), "tcp");
  expect(parse(tcp).answers.length).toBe(40);
});

test("malformed queries get FORMERR or nothing; responses are ignored; the host alias is local", async () => {
  const { p, calls } = proxy((q) => aRecord(q, 5));
  expect(await p.answer(new Uint8Array(5), "udp")).toBeNull();
  const bad = buildQuery(1, "a.b", 1); bad[5] = 3;
  expect((await p.answer(bad, "udp"))![3]! & 15).toBe(1);
  const resp = buildQuery(1, "a.b", 1); resp[2]! |= 0x80;
  expect(await p.answer(resp, "udp")).toBeNull();
  const alias = parse(await p.answer(buildQuery(5, "host.msb.internal", 1), "udp"));
  expect([...alias.answers[0]!.rdata]).toEqual([10, 0, 2, 2]);
  expect(calls()).toBe(0);
});
