// Host-side TCP: re-originates a guest connection from the host with Bun.connect and joins the two
// with backpressure in both directions (pause/resume toward the host, window toward the guest).
import type { Socket } from "bun";
import type { TcpConnection, Upstream } from "../tcp/connection";

/** Upstream over a connected Bun socket. */
export class SocketUpstream implements Upstream {
  private closed = false;
  constructor(private readonly sock: Socket<unknown>) {}
  write(data: Uint8Array): number {
    if (this.closed) return data.length; // discard: nobody will read it
    return this.sock.write(data);
  }
  shutdown(): void { if (!this.closed) this.sock.shutdown(); }
  pause(): void { if (!this.closed) this.sock.pause(); }
  resume(): void { if (!this.closed) this.sock.resume(); }
  close(): void { if (!this.closed) { this.closed = true; this.sock.end(); } }
  abort(): void { if (!this.closed) { this.closed = true; this.sock.terminate(); } }
}

/** Handlers that feed a socket's events into its connection (the socket's `data` is the connection). */
export const socketHandlers = {
  binaryType: "uint8array" as const,
  open(s: Socket<TcpConnection | null>) {
    const c = s.data;
    if (!c) return;
    s.setNoDelay(true);
    if (c.state === "CONNECTING") c.upstreamOpened(new SocketUpstream(s as Socket<unknown>));
  },
  data(s: Socket<TcpConnection | null>, d: Uint8Array) {
    // Bun hands each callback a fresh buffer (proxy/tcp.test.ts checks it), so the send queue keeps it as is.
    s.data?.upstreamData(d);
  },
  drain(s: Socket<TcpConnection | null>) { s.data?.upstreamDrain(); },
  end(s: Socket<TcpConnection | null>) { s.data?.upstreamEnd(); },
  close(s: Socket<TcpConnection | null>, err?: Error) {
    const c = s.data;
    s.data = null;
    if (!c) return;
    if (err) c.upstreamError();
    else c.upstreamEnd();
  },
  error(s: Socket<TcpConnection | null>) { s.data?.upstreamError(); },
  connectError(s: Socket<TcpConnection | null>) { const c = s.data; s.data = null; c?.upstreamError(); },
};

/** Connects to host:port for `conn`; the connection is answered (SYN-ACK) or reset once the outcome is known. */
export function connectHost(conn: TcpConnection, host: string, port: number, connectTimeoutMs = 30_000): void {
  let settled = false;
  const timer = setTimeout(() => { if (!settled && conn.state === "CONNECTING") conn.upstreamError(); }, connectTimeoutMs);
  Bun.connect<TcpConnection | null>({ hostname: host, port, data: conn, allowHalfOpen: true, socket: socketHandlers })
    .then((s) => { settled = true; clearTimeout(timer); if (conn.state === "CLOSED") s.terminate(); })
    .catch(() => { settled = true; clearTimeout(timer); });
}
