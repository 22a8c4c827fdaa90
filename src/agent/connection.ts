// A framed protocol connection over a Bun socket: decodes incoming frames and queues outgoing
// bytes that the socket did not take yet, resending them on drain so no frame is ever lost.

import type { Socket, SocketHandler } from "bun";
import { FrameDecoder, ProtocolError, type Frame } from "./protocol";

export interface FrameConnectionEvents {
  onFrame(frame: Frame): void;
  /** Called once, when the socket closes for any reason; `error` is set when it was not clean. */
  onClose(error?: Error): void;
}

export class FrameConnection {
  private readonly decoder = new FrameDecoder();
  private pending: Uint8Array[] = [];
  private pendingBytes = 0;
  private closed = false;
  private drainWaiters: (() => void)[] = [];

  constructor(
    private readonly socket: Socket<FrameConnection | undefined>,
    private readonly events: FrameConnectionEvents,
  ) {
    socket.data = this;
  }

  get isClosed(): boolean {
    return this.closed;
  }

  /** Bytes accepted by send() that the kernel has not taken yet. */
  get queuedBytes(): number {
    return this.pendingBytes;
  }

  send(bytes: Uint8Array): void {
    if (this.closed) return;
    if (this.pending.length > 0) {
      this.pending.push(bytes);
      this.pendingBytes += bytes.length;
      return;
    }
    const written = this.socket.write(bytes);
    if (written < bytes.length) {
      const rest = bytes.subarray(Math.max(written, 0));
      this.pending.push(rest);
      this.pendingBytes += rest.length;
    }
  }

  /** Resolves when everything queued so far has been handed to the kernel. */
  flushed(): Promise<void> {
    if (this.pending.length === 0 || this.closed) return Promise.resolve();
    return new Promise((resolve) => this.drainWaiters.push(resolve));
  }

  close(error?: Error): void {
    if (this.closed) return;
    this.finish(error);
    this.socket.end();
  }

  /** Closes after the queued bytes are written (or the peer goes away). */
  async closeAfterFlush(): Promise<void> {
    await this.flushed();
    this.close();
  }

  handleData(data: Uint8Array): void {
    if (this.closed) return;
    let frames: Frame[];
    try {
      frames = this.decoder.push(data);
    } catch (error) {
      this.close(error as ProtocolError);
      return;
    }
    for (const frame of frames) {
      if (this.closed) return;
      this.events.onFrame(frame);
    }
  }

  handleDrain(): void {
    while (this.pending.length > 0) {
      const head = this.pending[0]!;
      const written = this.socket.write(head);
      if (written <= 0) return;
      this.pendingBytes -= written;
      if (written < head.length) {
        this.pending[0] = head.subarray(written);
        return;
      }
      this.pending.shift();
    }
    const waiters = this.drainWaiters;
    this.drainWaiters = [];
    for (const resolve of waiters) resolve();
  }

  handleClose(error?: Error): void {
    if (this.closed) return;
    this.finish(error);
  }

  private finish(error?: Error): void {
    this.closed = true;
    this.pending = [];
    this.pendingBytes = 0;
    const waiters = this.drainWaiters;
    this.drainWaiters = [];
    for (const resolve of waiters) resolve();
    this.events.onClose(error);
  }
}

/** Socket handlers that forward to the FrameConnection stored in `socket.data`. */
export function frameSocketHandlers(
  onOpen?: (socket: Socket<FrameConnection | undefined>) => void,
): SocketHandler<FrameConnection | undefined> {
  return {
    open(socket) {
      onOpen?.(socket);
    },
    data(socket, data) {
      socket.data?.handleData(data);
    },
    drain(socket) {
      socket.data?.handleDrain();
    },
    close(socket, error) {
      socket.data?.handleClose(error);
    },
    error(socket, error) {
      socket.data?.handleClose(error);
    },
    end(socket) {
      socket.end();
    },
  };
}
