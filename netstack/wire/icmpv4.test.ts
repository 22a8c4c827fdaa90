// Malformed-input and round-trip tests for icmpv4.ts (truncated, bad lengths, bad checksums, option overruns).
import { describe, expect, test } from "bun:test";
import { Icmpv4Packet, Icmpv4Repr } from "./icmpv4";
import { code } from "./testing";

describe("icmpv4", () => {
  test("v4 echo round-trip, bad checksum, truncated", () => {
    const b = new Uint8Array(12);
    Icmpv4Repr.emit({ kind: "echoRequest", ident: 7, seq: 9, data: new Uint8Array([1, 2, 3, 4]) }, b);
    const r = Icmpv4Repr.parse(Icmpv4Packet.newChecked(b));
    expect(r).toMatchObject({ kind: "echoRequest", ident: 7, seq: 9 });
    b[9] = b[9]! ^ 1;
    expect(code(() => Icmpv4Repr.parse(Icmpv4Packet.newChecked(b)))).toBe("checksum");
    expect(code(() => Icmpv4Packet.newChecked(new Uint8Array(7)))).toBe("truncated");
  });
});
