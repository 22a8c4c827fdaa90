// Malformed-input and round-trip tests for ipv6.ts (truncated, bad lengths, bad checksums, option overruns).
import { describe, expect, test } from "bun:test";
import { Ipv6Packet, Ipv6Repr } from "./ipv6";
import { code, A6, B6 } from "./testing";

describe("ipv6", () => {
  test("payload length beyond buffer is rejected", () => {
    const b = new Uint8Array(48);
    Ipv6Repr.emit({ src: A6, dst: B6, nextHeader: 17, payloadLen: 8, hopLimit: 64 }, b);
    expect(Ipv6Repr.parse(Ipv6Packet.newChecked(b)).payloadLen).toBe(8);
    expect(code(() => Ipv6Packet.newChecked(b.subarray(0, 47)))).toBe("truncated");
    expect(code(() => Ipv6Packet.newChecked(b.subarray(0, 39)))).toBe("truncated");
    const v = b.slice(); v[0] = 0x40;
    expect(code(() => Ipv6Repr.parse(Ipv6Packet.newChecked(v)))).toBe("malformed");
  });
});
