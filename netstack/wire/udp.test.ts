// Malformed-input and round-trip tests for udp.ts (truncated, bad lengths, bad checksums, option overruns).
import { describe, expect, test } from "bun:test";
import { code, A, B, A6, B6 } from "./testing";
import { UdpPacket, UdpRepr } from "./udp";

describe("udp", () => {
  const dgram = (src = A, dst = B) => {
    const b = new Uint8Array(12);
    UdpRepr.emit({ srcPort: 5000, dstPort: 53, payload: new Uint8Array([1, 2, 3, 4]) }, b, 0, src, dst);
    return b;
  };
  test("round-trip over both families", () => {
    expect(UdpRepr.parse(UdpPacket.newChecked(dgram()), A, B).payload.length).toBe(4);
    expect(UdpRepr.parse(UdpPacket.newChecked(dgram(A6, B6)), A6, B6).dstPort).toBe(53);
  });
  test("length field larger than buffer or smaller than header", () => {
    const b = dgram(); b[5] = 40;
    expect(code(() => UdpPacket.newChecked(b))).toBe("truncated");
    const c = dgram(); c[5] = 4;
    expect(code(() => UdpPacket.newChecked(c))).toBe("malformed");
    expect(code(() => UdpPacket.newChecked(new Uint8Array(7)))).toBe("truncated");
  });
  test("bad checksum; zero checksum allowed over IPv4 only", () => {
    const b = dgram(); b[9] = b[9]! ^ 0xff;
    expect(code(() => UdpRepr.parse(UdpPacket.newChecked(b), A, B))).toBe("checksum");
    const z = dgram(); z[6] = z[7] = 0;
    expect(code(() => UdpRepr.parse(UdpPacket.newChecked(z), A, B))).toBe("ok");
    const z6 = dgram(A6, B6); z6[6] = z6[7] = 0;
    expect(code(() => UdpRepr.parse(UdpPacket.newChecked(z6), A6, B6))).toBe("checksum");
  });
});
