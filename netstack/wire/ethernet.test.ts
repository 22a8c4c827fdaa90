// Malformed-input and round-trip tests for ethernet.ts (truncated, bad lengths, bad checksums, option overruns).
import { describe, expect, test } from "bun:test";
import { EthernetFrame, EthernetRepr } from "./ethernet";
import { code } from "./testing";

describe("ethernet", () => {
  test("truncated header is rejected before any field access", () => {
    expect(code(() => EthernetFrame.newChecked(new Uint8Array(13)))).toBe("truncated");
  });
  test("round-trip", () => {
    const b = new Uint8Array(14);
    EthernetRepr.emit({ src: new Uint8Array([2, 0, 0, 0, 0, 1]), dst: new Uint8Array(6).fill(0xff), etherType: 0x0800 }, b);
    const r = EthernetRepr.parse(EthernetFrame.newChecked(b));
    expect(r.etherType).toBe(0x0800);
    expect([...r.src]).toEqual([2, 0, 0, 0, 0, 1]);
  });
});
