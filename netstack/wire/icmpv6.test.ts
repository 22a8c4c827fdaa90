// Malformed-input and round-trip tests for icmpv6.ts (truncated, bad lengths, bad checksums, option overruns).
import { describe, expect, test } from "bun:test";
import { parseIpv6 } from "./address";
import { Icmpv6Packet, Icmpv6Repr, parseNdpOptions } from "./icmpv6";
import { code, A6, B6 } from "./testing";

describe("icmpv6", () => {
  test("v6 neighbor solicitation round-trip; truncated NS; zero-length NDP option", () => {
    const r = { kind: "neighborSolicit" as const, target: parseIpv6("fd6d:7362::2"), sourceMac: new Uint8Array([2, 0, 0, 0, 0, 9]) };
    const b = new Uint8Array(Icmpv6Repr.bufferLen(r));
    Icmpv6Repr.emit(r, b, 0, A6, B6);
    const p = Icmpv6Repr.parse(Icmpv6Packet.newChecked(b), A6, B6);
    expect(p.kind).toBe("neighborSolicit");
    expect(code(() => Icmpv6Packet.newChecked(b.subarray(0, 20)))).toBe("truncated");
    expect(code(() => Icmpv6Repr.parse(Icmpv6Packet.newChecked(b), A6, A6))).toBe("checksum");
    expect(code(() => parseNdpOptions(new Uint8Array([1, 0, 0, 0, 0, 0, 0, 0])))).toBe("malformed");
    expect(code(() => parseNdpOptions(new Uint8Array([1, 2, 0, 0, 0, 0, 0, 0])))).toBe("malformed");
  });
});
