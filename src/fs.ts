// The SDK's file access to a running sandbox (`sandbox.fs`): streaming read/write, stat, list,
// mkdir, remove, rename, chmod, exists over the agent protocol's FILE streams, plus recursive
// copyIn/copyOut between the host and the sandbox that keep modes (what `msb cp` uses).

import { constants, lstatSync, mkdirSync, openSync, closeSync, readdirSync, readlinkSync, symlinkSync, chmodSync, writeSync, fstatSync } from "node:fs";
import { join } from "node:path";
import { OutputQueue, ReceiveCredit, type AgentClient } from "./agent/client";
import { INITIAL_WINDOW, MAX_CHUNK, TRANSFER_WINDOW, MessageType, decodeJson, decodeWindow, encodeFrame, encodeJsonFrame, encodeWindow, type Frame } from "./agent/protocol";
import { MsbError } from "./errors";

export type FileType = "file" | "directory" | "symlink" | "fifo" | "socket" | "char" | "block" | "unknown";

export interface FileStat {
  type: FileType;
  size: number;
  /** Permission bits with setuid/setgid/sticky (mode & 0o7777). */
  mode: number;
  mtimeMs: number;
  uid: number;
  gid: number;
  /** A symlink's target (stat with follow: false, and list entries). */
  target?: string;
}

export interface DirEntry extends FileStat {
  name: string;
}

export type WriteData = string | Uint8Array | ReadableStream<Uint8Array> | AsyncIterable<Uint8Array>;

/** Longest text readText() decodes (a bigger file: use read() and stream it). */
const MAX_READ_FILE = 512 * 1024 * 1024;

/** Longest `list` line accepted from the guest (a real one is well under 2 KiB). */
const MAX_LIST_LINE = 64 * 1024;

/** Longest entry name accepted from the guest (NAME_MAX). */
const MAX_NAME = 255;

/**
 * The frames of one FILE stream: DATA into a queue (credit returned as it is consumed), WINDOW
 * credit for a write, then FILE_RESULT or ERROR.
 */
class FileCall {
  readonly data: OutputQueue;
  readonly result: Promise<Record<string, unknown>>;
  private resolve!: (value: Record<string, unknown>) => void;
  private reject!: (error: Error) => void;
  private credit = INITIAL_WINDOW;
  /** What the agent may still send us as DATA (reads and listings). */
  private readonly receiveCredit = new ReceiveCredit(INITIAL_WINDOW);
  private creditWaiters: (() => void)[] = [];
  finished = false;
  stream = 0;

  constructor(
    private readonly client: AgentClient,
    readonly what: string,
  ) {
    this.data = new OutputQueue((bytes) => this.grant(bytes));
    this.result = new Promise((resolve, reject) => {
      this.resolve = resolve;
      this.reject = reject;
    });
    this.result.catch(() => {});
  }

  static open(client: AgentClient, request: Record<string, unknown>, what: string): FileCall {
    const call = new FileCall(client, what);
    call.stream = client.openFile(request, () => call);
    return call;
  }

  /** Returns credit for DATA: consumed bytes, or a wider window up front. */
  grant(bytes: number): void {
    this.receiveCredit.grant(bytes);
    if (!this.finished) this.client.sendRaw(encodeWindow(this.stream, bytes));
  }

  handle(frame: Frame): void {
    switch (frame.type) {
      case MessageType.DATA:
        if (!this.receiveCredit.receive(frame.payload.length)) {
          this.cancel(new MsbError("protocol", `${this.client.description}: the agent sent data for ${this.what} beyond the credit it was given`));
          return;
        }
        this.data.push(frame.payload);
        return;
      case MessageType.WINDOW:
        this.credit += decodeWindow(frame.payload);
        this.wakeWriters();
        return;
      case MessageType.FILE_RESULT:
        this.settle();
        this.data.end();
        this.resolve(decodeJson(frame.payload));
        return;
      case MessageType.ERROR: {
        const body = decodeJson(frame.payload);
        this.fail(new MsbError(String(body.code ?? "io"), `${this.client.description}: ${String(body.message ?? this.what)}`));
        return;
      }
    }
  }

  fail(error: Error): void {
    if (this.finished) return;
    this.settle();
    this.data.end(error);
    this.reject(error);
  }

  /** Stops a transfer early (the agent answers ERROR cancelled, which nobody waits for). */
  cancel(why?: Error): void {
    if (this.finished) return;
    this.client.sendRaw(encodeJsonFrame(this.stream, MessageType.SIGNAL, { signal: 9 }));
    this.fail(why ?? new MsbError("cancelled", `${this.client.description}: ${this.what} was cancelled`));
  }

  /** Sends bytes as DATA within the agent's credit; resolves once they are on their way. */
  async send(bytes: Uint8Array): Promise<void> {
    for (let offset = 0; offset < bytes.length; ) {
      if (this.finished) return;
      if (this.credit === 0) {
        await new Promise<void>((resolve) => this.creditWaiters.push(resolve));
        continue;
      }
      const size = Math.min(MAX_CHUNK, this.credit, bytes.length - offset);
      this.credit -= size;
      this.client.sendRaw(encodeFrame(this.stream, MessageType.DATA, bytes.subarray(offset, offset + size)));
      offset += size;
    }
    await this.client.flushed();
  }

  endData(): void {
    if (!this.finished) this.client.sendRaw(encodeFrame(this.stream, MessageType.DATA));
  }

  private settle(): void {
    this.finished = true;
    this.client.release(this.stream);
    this.wakeWriters();
  }

  private wakeWriters(): void {
    const waiters = this.creditWaiters;
    this.creditWaiters = [];
    for (const resolve of waiters) resolve();
  }
}

function toStat(body: Record<string, unknown>): FileStat {
  const num = (k: string) => (typeof body[k] === "number" ? (body[k] as number) : 0);
  const stat: FileStat = {
    type: (typeof body.type === "string" ? body.type : "unknown") as FileType,
    size: num("size"),
    mode: num("mode"),
    mtimeMs: num("mtimeMs"),
    uid: num("uid"),
    gid: num("gid"),
  };
  if (typeof body.target === "string") stat.target = body.target;
  return stat;
}

function checkPath(path: string, what = "path"): void {
  if (typeof path !== "string" || path === "") throw new MsbError("invalid_argument", `${what} is empty; give an absolute path in the sandbox such as /tmp/file`);
  if (!path.startsWith("/")) throw new MsbError("invalid_argument", `${what} must be an absolute path in the sandbox, got ${JSON.stringify(path)}`);
  if (path.includes("\0")) throw new MsbError("invalid_argument", `${what} contains a NUL byte: ${JSON.stringify(path)}`);
}

/** A guest-supplied directory entry name is safe to join onto a host path. */
function safeName(name: unknown): name is string {
  return typeof name === "string" && name !== "" && name !== "." && name !== ".." && !name.includes("/") && !name.includes("\0") && name.length <= MAX_NAME;
}

async function* chunksOf(data: WriteData): AsyncIterable<Uint8Array> {
  if (typeof data === "string") yield new TextEncoder().encode(data);
  else if (data instanceof Uint8Array) yield data;
  else if (data instanceof ReadableStream) {
    const reader = data.getReader();
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) return;
        if (value) yield value;
      }
    } finally {
      reader.releaseLock();
    }
  } else yield* data;
}

/**
 * Files in a running sandbox. Paths are absolute paths inside the sandbox.
 *
 * @example
 * await sandbox.fs.write("/tmp/hello.txt", "hi\n", { mode: 0o600 });
 * const text = await sandbox.fs.readText("/tmp/hello.txt");
 * for (const entry of await sandbox.fs.list("/tmp")) console.log(entry.name, entry.type);
 */
export class SandboxFs {
  constructor(private readonly client: AgentClient) {}

  private async simple(request: Record<string, unknown>, what: string): Promise<Record<string, unknown>> {
    return FileCall.open(this.client, request, what).result;
  }

  /** The file's bytes as a stream, read as the consumer pulls (flow-controlled). */
  read(path: string): ReadableStream<Uint8Array> {
    checkPath(path);
    const call = FileCall.open(this.client, { op: "read", path }, `read ${path}`);
    // Bulk transfers get a wider window than the protocol's default (see TRANSFER_WINDOW).
    call.grant(TRANSFER_WINDOW - INITIAL_WINDOW);
    const iterator = call.data[Symbol.asyncIterator]();
    return new ReadableStream<Uint8Array>({
      async pull(controller) {
        const { value, done } = await iterator.next();
        if (done) {
          await call.result;
          controller.close();
        } else controller.enqueue(value);
      },
      cancel() {
        call.cancel();
      },
    });
  }

  async readFile(path: string): Promise<Uint8Array> {
    const chunks: Uint8Array[] = [];
    let size = 0;
    for await (const chunk of this.read(path)) {
      size += chunk.length;
      if (size > MAX_READ_FILE) {
        throw new MsbError("too_large", `${this.client.description}: ${path} is over ${MAX_READ_FILE} bytes; use fs.read() to stream it`);
      }
      chunks.push(chunk);
    }
    return Buffer.concat(chunks);
  }

  async readText(path: string): Promise<string> {
    return new TextDecoder().decode(await this.readFile(path));
  }

  /**
   * Creates or truncates `path` and writes `data` into it, streaming. `mode` is set exactly
   * (default 0o644 for a new file). Resolves with the number of bytes written.
   */
  async write(path: string, data: WriteData, options: { mode?: number } = {}): Promise<number> {
    checkPath(path);
    if (options.mode !== undefined && !(Number.isInteger(options.mode) && options.mode >= 0 && options.mode <= 0o7777)) {
      throw new MsbError("invalid_argument", `mode must be an integer from 0 to 0o7777, got ${options.mode}`);
    }
    const request: Record<string, unknown> = { op: "write", path };
    if (options.mode !== undefined) request.mode = options.mode;
    const call = FileCall.open(this.client, request, `write ${path}`);
    try {
      for await (const chunk of chunksOf(data)) {
        if (call.finished) break;
        await call.send(chunk);
      }
    } catch (error) {
      call.cancel();
      throw error;
    }
    call.endData();
    const result = await call.result;
    return typeof result.size === "number" ? result.size : 0;
  }

  /** Follows symlinks unless `follow: false`. */
  async stat(path: string, options: { follow?: boolean } = {}): Promise<FileStat> {
    checkPath(path);
    return toStat(await this.simple({ op: "stat", path, follow: options.follow ?? true }, `stat ${path}`));
  }

  async exists(path: string): Promise<boolean> {
    checkPath(path);
    return (await this.simple({ op: "exists", path }, `exists ${path}`)).exists === true;
  }

  /** Entries of a directory (not . and ..), each described as lstat would, in directory order. */
  async list(path: string): Promise<DirEntry[]> {
    checkPath(path);
    const call = FileCall.open(this.client, { op: "list", path }, `list ${path}`);
    const entries: DirEntry[] = [];
    const decoder = new TextDecoder();
    let rest = "";
    for await (const chunk of call.data) {
      const lines = (rest + decoder.decode(chunk, { stream: true })).split("\n");
      rest = lines.pop()!;
      // An entry is a few hundred bytes; a guest that never ends a line must not grow our memory.
      if (rest.length > MAX_LIST_LINE) {
        call.cancel(new MsbError("protocol", `${this.client.description}: list ${path} sent an entry over ${MAX_LIST_LINE} bytes`));
        break;
      }
      for (const line of lines) {
        if (!line) continue;
        const body = decodeJson(new TextEncoder().encode(line));
        entries.push({ name: String(body.name), ...toStat(body) });
      }
    }
    await call.result;
    return entries;
  }

  async mkdir(path: string, options: { parents?: boolean; mode?: number } = {}): Promise<void> {
    checkPath(path);
    const request: Record<string, unknown> = { op: "mkdir", path, parents: options.parents ?? false };
    if (options.mode !== undefined) request.mode = options.mode;
    await this.simple(request, `mkdir ${path}`);
  }

  /** Removes a file, symlink or empty directory; `recursive` removes a directory's contents too. */
  async remove(path: string, options: { recursive?: boolean } = {}): Promise<void> {
    checkPath(path);
    await this.simple({ op: "remove", path, recursive: options.recursive ?? false }, `remove ${path}`);
  }

  async rename(from: string, to: string): Promise<void> {
    checkPath(from, "from");
    checkPath(to, "to");
    await this.simple({ op: "rename", from, to }, `rename ${from}`);
  }

  async chmod(path: string, mode: number): Promise<void> {
    checkPath(path);
    await this.simple({ op: "chmod", path, mode }, `chmod ${path}`);
  }

  async symlink(target: string, path: string): Promise<void> {
    checkPath(path);
    await this.simple({ op: "symlink", path, target }, `symlink ${path}`);
  }

  /**
   * Copies a host file or directory tree into the sandbox at `guestPath` (created or replaced
   * file by file), keeping modes; symlinks are copied as symlinks. Returns bytes copied.
   */
  async copyIn(hostPath: string, guestPath: string): Promise<number> {
    checkPath(guestPath);
    const st = lstatSync(hostPath);
    const mode = st.mode & 0o7777;
    if (st.isSymbolicLink()) {
      await this.symlink(readlinkSync(hostPath), guestPath);
      return 0;
    }
    if (st.isDirectory()) {
      if (!(await this.exists(guestPath))) await this.mkdir(guestPath, { mode: 0o700 });
      let total = 0;
      for (const name of readdirSync(hostPath).sort()) {
        total += await this.copyIn(join(hostPath, name), guestPath === "/" ? `/${name}` : `${guestPath}/${name}`);
      }
      // Last, so a read-only directory can still be filled first.
      await this.chmod(guestPath, mode);
      return total;
    }
    if (!st.isFile()) throw new MsbError("unsupported", `cannot copy ${hostPath}: only files, directories and symlinks are copied`);
    return this.write(guestPath, Bun.file(hostPath).stream(), { mode });
  }

  /**
   * Copies a sandbox file or directory tree to `hostPath` on the host, keeping modes; symlinks
   * are recreated as symlinks (never followed). Entry names from the guest are checked before
   * they are joined onto host paths. Returns bytes copied.
   */
  async copyOut(guestPath: string, hostPath: string): Promise<number> {
    checkPath(guestPath);
    const st = await this.stat(guestPath, { follow: false });
    return this.copyOutEntry(guestPath, hostPath, st);
  }

  private async copyOutEntry(guestPath: string, hostPath: string, st: FileStat): Promise<number> {
    if (st.type === "symlink") {
      symlinkSync(st.target ?? "", hostPath);
      return 0;
    }
    if (st.type === "directory") {
      try {
        mkdirSync(hostPath, { mode: 0o700 });
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code !== "EEXIST") throw error;
      }
      // Never write through a symlink someone put where the directory should be.
      if (!lstatSync(hostPath).isDirectory()) {
        throw new MsbError("exists", `cannot copy ${guestPath} to ${hostPath}: it exists and is not a directory`);
      }
      let total = 0;
      for (const entry of await this.list(guestPath)) {
        if (!safeName(entry.name)) {
          throw new MsbError("invalid_entry", `${this.client.description}: ${guestPath} has an entry named ${JSON.stringify(entry.name)}, which cannot be copied safely`);
        }
        total += await this.copyOutEntry(`${guestPath === "/" ? "" : guestPath}/${entry.name}`, join(hostPath, entry.name), entry);
      }
      chmodSync(hostPath, st.mode);
      return total;
    }
    if (st.type !== "file") {
      throw new MsbError("unsupported", `${this.client.description}: cannot copy ${guestPath} (a ${st.type}): only files, directories and symlinks are copied`);
    }
    // O_NOFOLLOW: a symlink at the destination is an error, not a way to write elsewhere.
    const fd = openSync(hostPath, constants.O_WRONLY | constants.O_CREAT | constants.O_TRUNC | constants.O_NOFOLLOW, 0o600);
    let total = 0;
    try {
      if (!fstatSync(fd).isFile()) throw new MsbError("exists", `cannot copy ${guestPath} to ${hostPath}: it is not a regular file`);
      for await (const chunk of this.read(guestPath)) {
        for (let off = 0; off < chunk.length; ) off += writeSync(fd, chunk, off);
        total += chunk.length;
      }
    } finally {
      closeSync(fd);
    }
    chmodSync(hostPath, st.mode);
    return total;
  }
}
