// virtio_net_hdr_v1: round-trip, truncation and unknown flags.
import { expect, test } from "bun:test";
import { code } from "./testing";
import { VNET_HEADER_LEN, VnetFlag, VnetGso, VnetRepr } from "./virtio-net";

test("round-trip, little-endian fields", () => {
  const b = new Uint8Array(VNET_HEADER_LEN + 2);
  const r = { flags: VnetFlag.NEEDS_CSUM, gsoType: VnetGso.TCPV4, hdrLen: 54, gsoSize: 1448, csumStart: 34, csumOffset: 16 };
  VnetRepr.emit(r, b, 2);
  expect(b[2 + 4]).toBe(1448 & 0xff);
  expect(VnetRepr.parse(b.subarray(2))).toEqual(r);
});

test("truncated header and unknown flags are rejected", () => {
  expect(code(() => VnetRepr.parse(new Uint8Array(11)))).toBe("truncated");
  const b = new Uint8Array(12); b[0] = 0x80;
  expect(code(() => VnetRepr.parse(b))).toBe("malformed");
});
