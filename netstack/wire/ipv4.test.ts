// Malformed-input and round-trip tests for ipv4.ts (truncated, bad lengths, bad checksums, option overruns).
import { describe, expect, test } from "bun:test";
import { checksum } from "./checksum";
import { Ipv4Packet, Ipv4Repr } from "./ipv4";
import { code, ipv4Datagram } from "./testing";

describe("ipv4", () => {
  test("round-trip and checksum", () => {
    const d = ipv4Datagram(17, new Uint8Array(8));
    expect(checksum(d, 0, 20)).toBe(0);
    const r = Ipv4Repr.parse(Ipv4Packet.newChecked(d));
    expect(r.payloadLen).toBe(8);
  });
  test("short buffer, IHL < 5, total length beyond buffer, total < IHL", () => {
    expect(code(() => Ipv4Packet.newChecked(new Uint8Array(19)))).toBe("truncated");
    const d = ipv4Datagram(17, new Uint8Array(8));
    const ihl = d.slice(); ihl[0] = 0x44;
    expect(code(() => Ipv4Packet.newChecked(ihl))).toBe("malformed");
    const big = d.slice(); big[3] = 200;
    expect(code(() => Ipv4Packet.newChecked(big))).toBe("truncated");
    const small = d.slice(); small[2] = 0; small[3] = 10;
    expect(code(() => Ipv4Packet.newChecked(small))).toBe("malformed");
  });
  test("bad checksum, wrong version, fragments", () => {
    const d = ipv4Datagram(17, new Uint8Array(8));
    const bad = d.slice(); bad[8] = bad[8]! ^ 1;
    expect(code(() => Ipv4Repr.parse(Ipv4Packet.newChecked(bad)))).toBe("checksum");
    const frag = ipv4Datagram(17, new Uint8Array(8));
    frag[6] = 0x20; frag[10] = frag[11] = 0;
    const c = checksum(frag, 0, 20); frag[10] = c >> 8; frag[11] = c & 0xff;
    expect(code(() => Ipv4Repr.parse(Ipv4Packet.newChecked(frag)))).toBe("unsupported");
  });
  test("Ethernet padding is excluded from the payload", () => {
    const d = ipv4Datagram(17, new Uint8Array(8));
    const padded = new Uint8Array(d.length + 18); padded.set(d);
    expect(Ipv4Packet.newChecked(padded).payload.length).toBe(8);
  });
});
