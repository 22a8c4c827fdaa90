// The host's client for the agent protocol: runs commands and file transfers over one framed
// connection (to the supervisor's agent.sock), many at once, with per-stream flow control in both
// directions.

import { FrameConnection, frameSocketHandlers } from "./connection";
import {
  INITIAL_WINDOW,
  MAX_CHUNK,
  MAX_STREAMS,
  MessageType,
  decodeJson,
  decodeWindow,
  encodeFrame,
  encodeJsonFrame,
  encodeWindow,
  type Frame,
} from "./protocol";
import { MsbError } from "../errors";

export interface ExecRequest {
  argv: string[];
  env?: Record<string, string>;
  cwd?: string;
  /** Whether the caller will stream stdin; otherwise the process reads /dev/null. */
  stdin?: boolean;
  /** A user name from the sandbox's /etc/passwd, `uid`, `uid:gid` or `name:group`. */
  user?: string;
  /** The agent kills the command's process group after this many ms; the status says `timedOut`. */
  timeoutMs?: number;
  /** Run on a pseudo-terminal of this size (all output arrives on stdout). */
  tty?: { rows: number; cols: number };
}

export interface ExitStatus {
  /** Exit code, or null when the process was killed by a signal. */
  code: number | null;
  signal: number | null;
  /** Set when the command could not be started (codes 125-127). */
  error?: string;
  /** The command was killed because its timeoutMs passed. */
  timedOut: boolean;
}

/** What the client does with the frames of one stream (an exec or a file operation). */
interface StreamHandler {
  handle(frame: Frame): void;
  fail(error: Error): void;
}

/**
 * What a stream's sender may still send us: the guest is untrusted, so data beyond the credit we
 * granted is refused instead of queued (it would otherwise grow our memory without bound).
 */
export class ReceiveCredit {
  constructor(private available: number) {}

  /** Accounts for arriving data; false when it exceeds the credit. */
  receive(bytes: number): boolean {
    if (bytes > this.available) return false;
    this.available -= bytes;
    return true;
  }

  grant(bytes: number): void {
    this.available += bytes;
  }
}

/** One output stream of a running command, consumed as an async iterable of chunks. */
export class OutputQueue implements AsyncIterable<Uint8Array> {
  private chunks: Uint8Array[] = [];
  private ended = false;
  private failure: Error | undefined;
  private wake: (() => void) | undefined;

  constructor(private readonly consumed: (bytes: number) => void) {}

  push(chunk: Uint8Array): void {
    this.chunks.push(chunk);
    this.notify();
  }

  end(error?: Error): void {
    this.ended = true;
    this.failure ??= error;
    this.notify();
  }

  private notify(): void {
    const wake = this.wake;
    this.wake = undefined;
    wake?.();
  }

  async *[Symbol.asyncIterator](): AsyncIterator<Uint8Array> {
    for (;;) {
      const chunk = this.chunks.shift();
      if (chunk) {
        // Credit goes back only once the consumer has taken the bytes: a slow reader pauses
        // the command in the guest instead of growing our memory.
        this.consumed(chunk.length);
        yield chunk;
        continue;
      }
      if (this.ended) {
        if (this.failure) throw this.failure;
        return;
      }
      await new Promise<void>((resolve) => (this.wake = resolve));
    }
  }
}

/**
 * A command running in the sandbox.
 *
 * @example
 * const proc = client.spawn({ argv: ["cat"], stdin: true });
 * await proc.write("hello"); await proc.end();
 * for await (const chunk of proc.stdout) process.stdout.write(chunk);
 * const status = await proc.wait();
 */
export class ExecProcess implements StreamHandler {
  readonly stdout: AsyncIterable<Uint8Array>;
  readonly stderr: AsyncIterable<Uint8Array>;
  private readonly stdoutQueue: OutputQueue;
  private readonly stderrQueue: OutputQueue;
  private stdinCredit = INITIAL_WINDOW;
  /** STDOUT and STDERR share one window (docs/protocol.md). */
  private readonly credit = new ReceiveCredit(INITIAL_WINDOW);
  private creditWaiters: (() => void)[] = [];
  private stdinEnded = false;
  private finished = false;
  private readonly exit: Promise<ExitStatus>;
  private resolveExit!: (status: ExitStatus) => void;
  private rejectExit!: (error: Error) => void;

  constructor(
    private readonly client: AgentClient,
    readonly stream: number,
    private readonly tty = false,
  ) {
    const grant = (bytes: number) => {
      this.credit.grant(bytes);
      if (!this.finished) this.client.sendRaw(encodeWindow(this.stream, bytes));
    };
    this.stdoutQueue = new OutputQueue(grant);
    this.stderrQueue = new OutputQueue(grant);
    this.stdout = this.stdoutQueue;
    this.stderr = this.stderrQueue;
    this.exit = new Promise((resolve, reject) => {
      this.resolveExit = resolve;
      this.rejectExit = reject;
    });
    // wait() may never be called by callers that only stream; don't report that as unhandled.
    this.exit.catch(() => {});
  }

  /** Sends input; resolves once it fits the guest's window (backpressure). */
  async write(data: Uint8Array | string): Promise<void> {
    if (this.stdinEnded) throw new MsbError("stdin_closed", "stdin was already ended");
    const bytes = typeof data === "string" ? new TextEncoder().encode(data) : data;
    for (let offset = 0; offset < bytes.length; ) {
      if (this.finished) return;
      if (this.stdinCredit === 0) {
        await new Promise<void>((resolve) => this.creditWaiters.push(resolve));
        continue;
      }
      const size = Math.min(MAX_CHUNK, this.stdinCredit, bytes.length - offset);
      this.stdinCredit -= size;
      this.client.sendRaw(encodeFrame(this.stream, MessageType.STDIN, bytes.subarray(offset, offset + size)));
      offset += size;
    }
    await this.client.flushed();
  }

  /** Closes stdin: the command sees end of file. */
  async end(): Promise<void> {
    if (this.stdinEnded || this.finished) return;
    this.stdinEnded = true;
    this.client.sendRaw(encodeFrame(this.stream, MessageType.STDIN));
    await this.client.flushed();
  }

  /** Sends a signal (number, default SIGKILL) to the command's process group. */
  kill(signal = 9): void {
    if (this.finished) return;
    this.client.sendRaw(encodeJsonFrame(this.stream, MessageType.SIGNAL, { signal }));
  }

  /** Changes the terminal size of a command spawned with `tty` (it gets SIGWINCH). */
  resize(cols: number, rows: number): void {
    if (!this.tty) throw new MsbError("invalid_argument", "resize() needs a command spawned with tty");
    checkSize(cols, rows);
    if (this.finished) return;
    this.client.sendRaw(encodeJsonFrame(this.stream, MessageType.RESIZE, { rows, cols }));
  }

  wait(): Promise<ExitStatus> {
    return this.exit;
  }

  /**
   * Leaves the command running in the sandbox without this client (the supervisor keeps it; its
   * output goes to the sandbox's exec log, `msb logs`). Output iteration ends; wait() rejects
   * with code "detached".
   */
  detach(): void {
    if (this.finished) return;
    this.client.sendRaw(encodeFrame(this.stream, MessageType.DETACH));
    this.settle();
    this.stdoutQueue.end();
    this.stderrQueue.end();
    this.rejectExit(new MsbError("detached", `${this.client.description}: detached from the command; it keeps running`));
  }

  /** @internal */
  handle(frame: Frame): void {
    switch (frame.type) {
      case MessageType.STDOUT:
      case MessageType.STDERR:
        if (!this.credit.receive(frame.payload.length)) {
          this.kill(9);
          this.fail(new MsbError("protocol", `${this.client.description}: the agent sent output on stream ${this.stream} beyond the credit it was given; the command was killed`));
          return;
        }
        (frame.type === MessageType.STDOUT ? this.stdoutQueue : this.stderrQueue).push(frame.payload);
        return;
      case MessageType.WINDOW: {
        this.stdinCredit += decodeWindow(frame.payload);
        const waiters = this.creditWaiters;
        this.creditWaiters = [];
        for (const resolve of waiters) resolve();
        return;
      }
      case MessageType.EXIT: {
        const body = decodeJson(frame.payload);
        const status: ExitStatus = {
          code: typeof body.code === "number" ? body.code : null,
          signal: typeof body.signal === "number" ? body.signal : null,
          timedOut: body.timedOut === true,
        };
        if (typeof body.error === "string") status.error = body.error;
        this.settle();
        this.stdoutQueue.end();
        this.stderrQueue.end();
        this.resolveExit(status);
        return;
      }
      case MessageType.ERROR: {
        const body = decodeJson(frame.payload);
        this.fail(new MsbError(String(body.code ?? "agent"), `${this.client.description}: ${String(body.message ?? "error")}`));
        return;
      }
    }
  }

  /** @internal */
  fail(error: Error): void {
    if (this.finished) return;
    this.settle();
    this.stdoutQueue.end(error);
    this.stderrQueue.end(error);
    this.rejectExit(error);
  }

  private settle(): void {
    this.finished = true;
    this.client.release(this.stream);
    const waiters = this.creditWaiters;
    this.creditWaiters = [];
    for (const resolve of waiters) resolve();
  }
}

/** Connection to a sandbox's agent (through its supervisor). */
function checkSize(cols: number, rows: number): void {
  const ok = (n: number) => Number.isInteger(n) && n >= 1 && n <= 65535;
  if (!ok(cols) || !ok(rows)) throw new MsbError("invalid_argument", `terminal size must be 1-65535 columns and rows, got ${cols}x${rows}`);
}

export class AgentClient {
  private readonly processes = new Map<number, StreamHandler>();
  private nextStream = 1;
  private closedError: Error | undefined;
  private closeWaiters: (() => void)[] = [];
  private pongWaiters: ((payload: Uint8Array) => void)[] = [];

  private constructor(
    private readonly connection: FrameConnection,
    /** Who is on the other end, for messages: "sandbox NAME". */
    readonly description: string,
  ) {}

  static async connect(socketPath: string, description = socketPath): Promise<AgentClient> {
    let client: AgentClient | undefined;
    let opened = false;
    const events = {
      onFrame: (frame: Frame) => client?.dispatch(frame),
      onClose: (error?: Error) => client?.handleClose(error, description),
    };
    try {
      await Bun.connect<FrameConnection | undefined>({
        unix: socketPath,
        socket: frameSocketHandlers((socket) => {
          client = new AgentClient(new FrameConnection(socket, events), description);
          opened = true;
        }),
      });
    } catch (cause) {
      throw new MsbError("not_running", `cannot connect to ${description}: ${(cause as Error).message}`, { cause });
    }
    if (!opened || !client) throw new MsbError("not_running", `cannot connect to ${description}`);
    return client;
  }

  get closed(): boolean {
    return this.closedError !== undefined;
  }

  spawn(request: ExecRequest): ExecProcess {
    if (this.closedError) throw this.closedError;
    if (request.argv.length === 0) throw new MsbError("invalid_argument", "exec needs a command: argv is empty");
    if (request.timeoutMs !== undefined && !(Number.isInteger(request.timeoutMs) && request.timeoutMs > 0)) {
      throw new MsbError("invalid_argument", `timeoutMs must be a positive integer number of milliseconds, got ${request.timeoutMs}`);
    }
    if (request.user !== undefined && (request.user === "" || request.user.includes("\0"))) {
      throw new MsbError("invalid_argument", `user must be a name, uid or uid:gid, got ${JSON.stringify(request.user)}`);
    }
    if (request.tty) checkSize(request.tty.cols, request.tty.rows);
    const stream = this.openStream();
    const process = new ExecProcess(this, stream, request.tty !== undefined);
    this.processes.set(stream, process);
    const body: Record<string, unknown> = { argv: request.argv, stdin: request.stdin ?? false };
    if (request.env) body.env = request.env;
    if (request.cwd !== undefined) body.cwd = request.cwd;
    if (request.user !== undefined) body.user = request.user;
    if (request.timeoutMs !== undefined) body.timeoutMs = request.timeoutMs;
    if (request.tty) body.tty = { rows: request.tty.rows, cols: request.tty.cols };
    this.sendRaw(encodeJsonFrame(stream, MessageType.EXEC, body));
    return process;
  }

  /**
   * Starts a file operation (docs/protocol.md, "Files"). `handler` gets its frames; the request
   * is validated by the agent, which answers FILE_RESULT or ERROR.
   * @internal
   */
  openFile(request: Record<string, unknown>, make: (stream: number) => StreamHandler): number {
    if (this.closedError) throw this.closedError;
    const stream = this.openStream();
    this.processes.set(stream, make(stream));
    this.sendRaw(encodeJsonFrame(stream, MessageType.FILE, request));
    return stream;
  }

  private openStream(): number {
    if (this.processes.size >= MAX_STREAMS) {
      throw new MsbError(
        "too_many_streams",
        `at most ${MAX_STREAMS} commands and file transfers can run at once on one connection to ${this.description}`,
      );
    }
    while (this.processes.has(this.nextStream)) this.nextStream = (this.nextStream % 0xffff_fffe) + 1;
    const stream = this.nextStream;
    this.nextStream = (this.nextStream % 0xffff_fffe) + 1;
    return stream;
  }

  async ping(payload = Uint8Array.of(1)): Promise<Uint8Array> {
    if (this.closedError) throw this.closedError;
    const pong = new Promise<Uint8Array>((resolve) => this.pongWaiters.push(resolve));
    this.sendRaw(encodeFrame(0, MessageType.PING, payload));
    return pong;
  }

  /** Asks the sandbox to shut down; resolves when the supervisor closes the connection. */
  async shutdown(): Promise<void> {
    if (this.closedError) return;
    const closed = this.waitClosed();
    this.sendRaw(encodeFrame(0, MessageType.SHUTDOWN));
    await closed;
  }

  waitClosed(): Promise<void> {
    if (this.closedError) return Promise.resolve();
    return new Promise((resolve) => this.closeWaiters.push(resolve));
  }

  close(): void {
    this.connection.close();
  }

  /** @internal */
  sendRaw(bytes: Uint8Array): void {
    this.connection.send(bytes);
  }

  /** @internal */
  flushed(): Promise<void> {
    return this.connection.flushed();
  }

  /** @internal */
  release(stream: number): void {
    this.processes.delete(stream);
  }

  private dispatch(frame: Frame): void {
    if (frame.stream === 0) {
      if (frame.type === MessageType.PONG) this.pongWaiters.shift()?.(frame.payload);
      else if (frame.type === MessageType.ERROR) {
        const body = decodeJson(frame.payload);
        this.connection.close(new MsbError(String(body.code ?? "agent"), String(body.message ?? "error")));
      }
      return;
    }
    this.processes.get(frame.stream)?.handle(frame);
  }

  private handleClose(error: Error | undefined, description: string): void {
    this.closedError = new MsbError(
      "disconnected",
      `lost the connection to ${description}${error ? `: ${error.message}` : ""}; the sandbox has stopped or its supervisor died`,
      { cause: error },
    );
    for (const process of [...this.processes.values()]) process.fail(this.closedError);
    this.processes.clear();
    const waiters = this.closeWaiters;
    this.closeWaiters = [];
    for (const resolve of waiters) resolve();
  }
}
