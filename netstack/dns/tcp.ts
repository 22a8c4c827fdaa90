// DNS over TCP to the gateway (RFC 7766): an Upstream that is not a host socket but the DNS proxy
// itself, reading 2-byte-length-prefixed queries and writing answers back into the connection.
import type { TcpConnection, Upstream } from "../tcp/connection";
import type { DnsProxy } from "./proxy";

/** At most this many queries from one connection are answered concurrently (pipelining is allowed). */
const MAX_PIPELINED = 16;

export class DnsTcpUpstream implements Upstream {
  private buf = new Uint8Array(0);
  private busy = 0;
  private ended = false;
  private closed = false;

  constructor(private readonly conn: TcpConnection, private readonly proxy: DnsProxy) {}

  write(data: Uint8Array): number {
    if (this.closed) return data.length;
    // Hold back once a full message and the pipeline limit are reached: the guest's window closes.
    if (this.busy >= MAX_PIPELINED || this.buf.length > 65537) return 0;
    const n = new Uint8Array(this.buf.length + data.length);
    n.set(this.buf);
    n.set(data, this.buf.length);
    this.buf = n;
    this.parse();
    return data.length;
  }

  private parse(): void {
    while (this.buf.length >= 2 && this.busy < MAX_PIPELINED) {
      const len = (this.buf[0]! << 8) | this.buf[1]!;
      if (this.buf.length < 2 + len) return;
      const q = this.buf.slice(2, 2 + len);
      this.buf = this.buf.slice(2 + len);
      this.busy++;
      this.proxy.answer(q, "tcp").then((r) => {
        this.busy--;
        if (this.closed) return;
        if (r) {
          const out = new Uint8Array(2 + r.length);
          out[0] = r.length >> 8; out[1] = r.length & 0xff; out.set(r, 2);
          this.conn.upstreamData(out);
        }
        this.parse();
        this.conn.upstreamDrain();
        this.maybeEnd();
      });
    }
  }

  private maybeEnd(): void {
    if (this.ended && this.busy === 0 && !this.closed) this.conn.upstreamEnd();
  }

  shutdown(): void { this.ended = true; this.maybeEnd(); }
  pause(): void {}
  resume(): void {}
  close(): void { this.closed = true; }
  abort(): void { this.closed = true; }
}
