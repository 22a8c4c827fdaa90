// Malformed-input and round-trip tests for dns.ts (truncated, bad lengths, bad checksums, option overruns).
import { describe, expect, test } from "bun:test";
import { DnsMessageRepr, DnsPacket, buildQuery, buildResponse, readName } from "./dns";
import { code } from "./testing";

describe("dns", () => {
  test("query round-trip", () => {
    const q = buildQuery(0x1234, "Example.COM", 28);
    const r = DnsMessageRepr.parse(DnsPacket.newChecked(q));
    expect(r.questions).toEqual([{ name: "example.com", type: 28, class: 1 }]);
  });
  test("compression loops, forward pointers and over-long names are rejected", () => {
    const loop = new Uint8Array([...new Uint8Array(12), 0xc0, 12]);
    expect(code(() => readName(loop, 12))).toBe("malformed");
    const fwd = new Uint8Array([...new Uint8Array(12), 0xc0, 20, 0, 0, 0, 0, 0, 0, 1, 0x61, 0]);
    expect(code(() => readName(fwd, 12))).toBe("malformed");
    const long: number[] = [];
    for (let i = 0; i < 5; i++) long.push(63, ...new Array(63).fill(0x61));
    long.push(0);
    expect(code(() => readName(new Uint8Array(long), 0))).toBe("malformed");
    expect(code(() => readName(new Uint8Array([5, 0x61]), 0))).toBe("truncated");
  });
  test("counts that promise more records than present", () => {
    const q = buildQuery(1, "a.b", 1);
    q[7] = 3; // ancount 3, nothing there
    expect(code(() => DnsMessageRepr.parse(DnsPacket.newChecked(q)))).toBe("truncated");
    expect(code(() => DnsPacket.newChecked(new Uint8Array(11)))).toBe("truncated");
  });
  test("response records expose TTL offsets and the minimum TTL", () => {
    const q = buildQuery(1, "a.b", 1);
    const r = buildResponse(q, { name: "a.b", type: 1, class: 1 }, 0, [
      { type: 1, ttl: 300, rdata: new Uint8Array([1, 2, 3, 4]) },
      { type: 1, ttl: 60, rdata: new Uint8Array([5, 6, 7, 8]) },
    ]);
    const m = DnsMessageRepr.parse(DnsPacket.newChecked(r));
    expect(m.minTtl).toBe(60);
    expect(m.ttlOffsets.length).toBe(2);
    expect(m.answers[1]!.rdata).toEqual(new Uint8Array([5, 6, 7, 8]));
  });
});
