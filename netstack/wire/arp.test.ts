// Malformed-input and round-trip tests for arp.ts (truncated, bad lengths, bad checksums, option overruns).
import { describe, expect, test } from "bun:test";
import { ArpPacket, ArpRepr } from "./arp";
import { code, A, B } from "./testing";

describe("arp", () => {
  const good = () => {
    const b = new Uint8Array(28);
    ArpRepr.emit({ op: 1, senderMac: new Uint8Array(6).fill(2), senderIp: A, targetMac: new Uint8Array(6), targetIp: B }, b);
    return b;
  };
  test("round-trip", () => expect(ArpRepr.parse(ArpPacket.newChecked(good())).op).toBe(1));
  test("truncated, wrong lengths, unknown op", () => {
    expect(code(() => ArpPacket.newChecked(good().subarray(0, 27)))).toBe("truncated");
    const b = good(); b[4] = 8;
    expect(code(() => ArpRepr.parse(ArpPacket.newChecked(b)))).toBe("malformed");
    const c = good(); c[7] = 9;
    expect(code(() => ArpRepr.parse(ArpPacket.newChecked(c)))).toBe("unsupported");
  });
});
