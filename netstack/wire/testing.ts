// Shared helpers for the wire tests: error-code capture and valid packets to corrupt.
import { parseIpv4, parseIpv6 } from "./address";
import { WireError } from "./error";
import { Ipv4Repr } from "./ipv4";
import { TcpRepr } from "./tcp";

/** Runs `f` and returns the WireError code it threw, or "ok". Other errors propagate (they are bugs). */
export const code = (f: () => unknown) => {
  try { f(); } catch (e) { if (e instanceof WireError) return e.code; throw e; }
  return "ok";
};
export const A = parseIpv4("10.0.2.15"), B = parseIpv4("93.184.216.34");
export const A6 = parseIpv6("fd6d:7362::15"), B6 = parseIpv6("2001:4860::8888");

export function ipv4Datagram(proto: number, payload: Uint8Array) {
  const b = new Uint8Array(20 + payload.length);
  Ipv4Repr.emit({ src: A, dst: B, protocol: proto, payloadLen: payload.length, ttl: 64 }, b);
  b.set(payload, 20);
  return b;
}
export function tcpSegment(r: Partial<TcpRepr> = {}, src = A, dst = B) {
  const repr: TcpRepr = { srcPort: 1234, dstPort: 80, seq: 1, ack: 5, flags: 0, window: 100, options: {}, payload: new Uint8Array([1, 2, 3]), ...r };
  const b = new Uint8Array(TcpRepr.headerLen(repr) + repr.payload.length);
  TcpRepr.emit(repr, b, 0, src, dst);
  return b;
}
