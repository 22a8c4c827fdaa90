// Reads the server name (SNI) and ALPN list from a TLS ClientHello before any TLS is terminated,
// so the relay can choose a leaf certificate or leave the flow opaque. The bytes come from the
// guest: every length is checked against what is there and against fixed caps.

export const RECORD_HEADER_LEN = 5;
export const RECORD_TYPE_HANDSHAKE = 22;
/** RFC 8446 5.1: a plaintext record fragment is at most 2^14 bytes. */
export const MAX_RECORD_LEN = 1 << 14;
export const HANDSHAKE_HEADER_LEN = 4;
export const HANDSHAKE_CLIENT_HELLO = 1;
/** Real ClientHellos (even with post-quantum key shares) are a few KiB; refuse anything huge. */
export const MAX_CLIENT_HELLO_LEN = 64 * 1024;
const RANDOM_LEN = 32;
const EXT_SERVER_NAME = 0;
const EXT_ALPN = 16;
const SNI_HOST_NAME = 0;

export interface ClientHello {
  /** Lower-cased host_name from the server_name extension, if the client sent one. */
  serverName?: string;
  alpn: string[];
  /** Bytes of the stream the hello took (whole records): replay them to the TLS server. */
  consumed: number;
}

export type HelloParse = { status: "need-more" } | { status: "ok"; hello: ClientHello } | { status: "invalid"; reason: string };

const HOST_NAME = /^[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?(\.[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?)*\.?$/;

/** Parses the ClientHello at the start of `buf` (the first bytes the guest sent on the flow). */
export function parseClientHello(buf: Uint8Array): HelloParse {
  const hs: Uint8Array[] = [];
  let hsLen = 0;
  let off = 0;
  let need = -1;
  while (true) {
    if (buf.length - off < RECORD_HEADER_LEN) return { status: "need-more" };
    const type = buf[off]!;
    if (type !== RECORD_TYPE_HANDSHAKE) return { status: "invalid", reason: `first TLS record has type ${type}, not handshake (22): not a TLS ClientHello` };
    if (buf[off + 1] !== 3) return { status: "invalid", reason: `TLS record version ${buf[off + 1]}.${buf[off + 2]} is not 3.x` };
    const len = (buf[off + 3]! << 8) | buf[off + 4]!;
    if (len === 0 || len > MAX_RECORD_LEN) return { status: "invalid", reason: `TLS record length ${len} is outside 1..${MAX_RECORD_LEN}` };
    if (buf.length - off - RECORD_HEADER_LEN < len) return { status: "need-more" };
    hs.push(buf.subarray(off + RECORD_HEADER_LEN, off + RECORD_HEADER_LEN + len));
    hsLen += len;
    off += RECORD_HEADER_LEN + len;
    if (need < 0 && hsLen >= HANDSHAKE_HEADER_LEN) {
      const h = concat(hs, HANDSHAKE_HEADER_LEN);
      if (h[0] !== HANDSHAKE_CLIENT_HELLO) return { status: "invalid", reason: `first handshake message has type ${h[0]}, not ClientHello (1)` };
      need = HANDSHAKE_HEADER_LEN + ((h[1]! << 16) | (h[2]! << 8) | h[3]!);
      if (need > MAX_CLIENT_HELLO_LEN) return { status: "invalid", reason: `ClientHello of ${need} bytes exceeds the ${MAX_CLIENT_HELLO_LEN}-byte limit` };
    }
    if (need >= 0 && hsLen >= need) {
      const msg = concat(hs, need);
      const r = parseBody(msg.subarray(HANDSHAKE_HEADER_LEN));
      if (typeof r === "string") return { status: "invalid", reason: r };
      return { status: "ok", hello: { ...r, consumed: off } };
    }
    if (off > MAX_CLIENT_HELLO_LEN + 64 * RECORD_HEADER_LEN) return { status: "invalid", reason: "ClientHello spread over too many records" };
  }
}

function concat(parts: Uint8Array[], n: number): Uint8Array {
  const out = new Uint8Array(n);
  let o = 0;
  for (const p of parts) {
    if (o >= n) break;
    const take = Math.min(p.length, n - o);
    out.set(p.subarray(0, take), o);
    o += take;
  }
  return out;
}

/** A cursor that refuses to read past its end; errors are strings naming the field. */
class Reader {
  off = 0;
  constructor(readonly b: Uint8Array) {}
  left() {
    return this.b.length - this.off;
  }
  u8(what: string): number {
    if (this.left() < 1) throw `ClientHello truncated in ${what}`;
    return this.b[this.off++]!;
  }
  u16(what: string): number {
    if (this.left() < 2) throw `ClientHello truncated in ${what}`;
    const v = (this.b[this.off]! << 8) | this.b[this.off + 1]!;
    this.off += 2;
    return v;
  }
  bytes(n: number, what: string): Uint8Array {
    if (this.left() < n) throw `ClientHello ${what} claims ${n} bytes, only ${this.left()} left`;
    const v = this.b.subarray(this.off, this.off + n);
    this.off += n;
    return v;
  }
}

function parseBody(body: Uint8Array): Omit<ClientHello, "consumed"> | string {
  try {
    const r = new Reader(body);
    r.bytes(2 + RANDOM_LEN, "version and random");
    const sid = r.u8("session id length");
    if (sid > 32) return `ClientHello session id length ${sid} exceeds 32`;
    r.bytes(sid, "session id");
    const cs = r.u16("cipher suites length");
    if (cs < 2 || cs % 2) return `ClientHello cipher suites length ${cs} is not a positive even number`;
    r.bytes(cs, "cipher suites");
    const comp = r.u8("compression methods length");
    if (comp < 1) return "ClientHello lists no compression method";
    r.bytes(comp, "compression methods");
    const out: Omit<ClientHello, "consumed"> = { alpn: [] };
    if (r.left() === 0) return out; // extensions are optional (pre-TLS 1.2 hellos)
    const extLen = r.u16("extensions length");
    if (extLen !== r.left()) return `ClientHello extensions length ${extLen} does not match the ${r.left()} bytes that follow`;
    const seen = new Set<number>();
    while (r.left() > 0) {
      const type = r.u16("extension type");
      const data = new Reader(r.bytes(r.u16("extension length"), `extension ${type}`));
      if (seen.has(type)) return `ClientHello repeats extension ${type}`;
      seen.add(type);
      if (type === EXT_SERVER_NAME) {
        const list = new Reader(data.bytes(data.u16("server name list length"), "server name list"));
        if (data.left()) return "ClientHello server_name extension has trailing bytes";
        while (list.left() > 0) {
          const nameType = list.u8("server name type");
          const name = list.bytes(list.u16("server name length"), "server name");
          if (nameType !== SNI_HOST_NAME) continue;
          if (out.serverName !== undefined) return "ClientHello names two host_name server names";
          if (name.length < 1 || name.length > 253) return `ClientHello server name length ${name.length} is outside 1..253`;
          const s = new TextDecoder("latin1").decode(name).toLowerCase();
          if (!HOST_NAME.test(s)) return "ClientHello server name is not a valid DNS host name";
          out.serverName = s.endsWith(".") ? s.slice(0, -1) : s;
        }
      } else if (type === EXT_ALPN) {
        const list = new Reader(data.bytes(data.u16("ALPN list length"), "ALPN list"));
        if (data.left()) return "ClientHello ALPN extension has trailing bytes";
        while (list.left() > 0) {
          const p = list.bytes(list.u8("ALPN protocol length"), "ALPN protocol");
          if (p.length === 0) return "ClientHello lists an empty ALPN protocol";
          out.alpn.push(new TextDecoder("latin1").decode(p));
        }
      }
    }
    return out;
  } catch (e) {
    if (typeof e === "string") return e;
    throw e;
  }
}
