// A guest TCP connection terminated in the stack and handed to host code as a node:stream Duplex
// (the TLS relay in src/secrets takes one per intercepted flow). Backpressure holds both ways: a
// relay that stops reading closes the guest's window, a guest that stops reading holds the
// relay's writes.
import { Duplex } from "node:stream";
import type { TcpConnection, Upstream } from "../tcp/connection";

/** What the guest sent, buffered in the stream before the reader is told to slow down. */
const READ_HIGH_WATER = 256 * 1024;

/** Answers the guest's SYN and returns the connection as a Duplex: readable = guest bytes, write = to the guest. */
export function acceptAsDuplex(conn: TcpConnection): Duplex {
  const upstream = new DuplexUpstream(conn);
  conn.upstreamOpened(upstream);
  // A guest reset must never surface as an unhandled 'error' (which would end the supervisor);
  // the reader learns of it through its own listeners and 'close'.
  upstream.stream.on("error", () => {});
  return upstream.stream;
}

class DuplexUpstream implements Upstream {
  readonly stream: Duplex;
  /** The reader has room: guest bytes are pushed as they come. */
  private readerHasRoom = true;
  /** The connection's queue toward the guest is full: the last write's callback waits for resume(). */
  private towardGuestFull = false;
  private heldWrite: ((error?: Error | null) => void) | null = null;
  /** The connection is gone (closed or reset): nothing more is reported to it. */
  private finished = false;

  constructor(private readonly conn: TcpConnection) {
    this.stream = new Duplex({
      allowHalfOpen: true,
      readableHighWaterMark: READ_HIGH_WATER,
      read: () => {
        if (this.readerHasRoom) return;
        this.readerHasRoom = true;
        this.conn.upstreamDrain();
      },
      write: (chunk: Buffer, _encoding, callback) => {
        if (this.finished) return callback(new Error("the guest connection is closed"));
        // The connection queues the bytes as they are; the writer hands over fresh buffers.
        this.conn.upstreamData(new Uint8Array(chunk.buffer, chunk.byteOffset, chunk.byteLength));
        if (this.towardGuestFull) this.heldWrite = callback;
        else callback();
      },
      final: (callback) => {
        if (!this.finished) this.conn.upstreamEnd();
        callback();
      },
      destroy: (error, callback) => {
        // Destroyed by its user before the guest side finished: reset the guest's connection.
        if (!this.finished) {
          this.finished = true;
          this.conn.upstreamError();
        }
        this.releaseHeldWrite(error ?? new Error("the guest connection is closed"));
        callback(error);
      },
    });
  }

  write(data: Uint8Array): number {
    if (this.finished) return data.length; // nobody will read it
    if (!this.readerHasRoom) return 0; // offered again after read() asks for more
    if (!this.stream.push(data)) this.readerHasRoom = false;
    return data.length;
  }

  shutdown(): void {
    if (!this.finished) this.stream.push(null);
  }

  pause(): void {
    this.towardGuestFull = true;
  }

  resume(): void {
    this.towardGuestFull = false;
    this.releaseHeldWrite();
  }

  close(): void {
    if (this.finished) return;
    this.finished = true;
    this.releaseHeldWrite();
    if (!this.stream.readableEnded) this.stream.push(null);
    if (!this.stream.destroyed) this.stream.destroy();
  }

  abort(): void {
    if (this.finished) return;
    this.finished = true;
    this.stream.destroy(new Error("the guest reset the connection"));
  }

  private releaseHeldWrite(error?: Error): void {
    const callback = this.heldWrite;
    this.heldWrite = null;
    callback?.(error);
  }
}
