// Malformed-input and round-trip tests for tcp.ts (truncated, bad lengths, bad checksums, option overruns).
import { describe, expect, test } from "bun:test";
import { TcpPacket, TcpRepr, parseTcpOptions } from "./tcp";
import { code, A, B, tcpSegment } from "./testing";

describe("tcp", () => {
  test("round-trip with options", () => {
    const b = tcpSegment({ flags: 2, ack: null, options: { mss: 1460, wscale: 7, sackPermitted: true } });
    const r = TcpRepr.parse(TcpPacket.newChecked(b), A, B);
    expect(r.options).toEqual({ mss: 1460, wscale: 7, sackPermitted: true });
    expect(r.ack).toBeNull();
    expect([...r.payload]).toEqual([1, 2, 3]);
  });
  test("data offset below 20 or beyond the buffer", () => {
    const b = tcpSegment(); b[12] = 0x40;
    expect(code(() => TcpPacket.newChecked(b))).toBe("malformed");
    const c = tcpSegment(); c[12] = 0xf0;
    expect(code(() => TcpPacket.newChecked(c))).toBe("truncated");
    expect(code(() => TcpPacket.newChecked(new Uint8Array(19)))).toBe("truncated");
  });
  test("bad checksum and illegal flag combinations", () => {
    const b = tcpSegment(); b[20] = b[20]! ^ 1;
    expect(code(() => TcpRepr.parse(TcpPacket.newChecked(b), A, B))).toBe("checksum");
    expect(code(() => TcpRepr.parse(TcpPacket.newChecked(tcpSegment({ flags: 3 })), A, B))).toBe("malformed");
    expect(code(() => TcpRepr.parse(TcpPacket.newChecked(tcpSegment({ flags: 6 })), A, B))).toBe("malformed");
  });
  test("options that overrun, lack a length, have length < 2 or wrong fixed lengths", () => {
    expect(code(() => parseTcpOptions(new Uint8Array([2, 4, 5])))).toBe("malformed");
    expect(code(() => parseTcpOptions(new Uint8Array([1, 1, 2])))).toBe("malformed");
    expect(code(() => parseTcpOptions(new Uint8Array([8, 0, 0, 0])))).toBe("malformed");
    expect(code(() => parseTcpOptions(new Uint8Array([2, 3, 5, 0])))).toBe("malformed");
    expect(code(() => parseTcpOptions(new Uint8Array([5, 7, 0, 0, 0, 0, 0])))).toBe("malformed");
    expect(parseTcpOptions(new Uint8Array([3, 3, 30, 0])).wscale).toBe(14);
    expect(parseTcpOptions(new Uint8Array([8, 10, 0, 0, 0, 0, 0, 0, 0, 0, 2, 4, 5, 0])).mss).toBe(1280);
  });
});
