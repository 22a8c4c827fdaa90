// Writes "newc" (SVR4, magic 070701) cpio archives: the format the Linux kernel unpacks as an
// initramfs. Deterministic: the same entries in the same order always give the same bytes.
//
// Entries are written in the order added. The kernel does not create missing parent directories
// while unpacking, so the writer refuses an entry whose parent directory was not added before it.

/** Permission and type bits, as in <sys/stat.h>. */
export const S_IFMT = 0o170000;
export const S_IFSOCK = 0o140000;
export const S_IFLNK = 0o120000;
export const S_IFREG = 0o100000;
export const S_IFBLK = 0o060000;
export const S_IFDIR = 0o040000;
export const S_IFCHR = 0o020000;
export const S_IFIFO = 0o010000;

const MAGIC = "070701";
const HEADER_LEN = 110;
const FIELD_LEN = 8;
const TRAILER_NAME = "TRAILER!!!";
const ALIGN = 4;
const MAX_FIELD = 0xffff_ffff;

interface Common {
  /** Path inside the archive; a leading "/" is dropped, "." and ".." components are refused. */
  path: string;
  /** Permission bits (0o7777 at most); the type bits come from `type`. */
  mode: number;
  uid?: number;
  gid?: number;
  /** Seconds since the epoch; defaults to the writer's mtime. */
  mtime?: number;
}

export type CpioEntry =
  | (Common & { type: "file"; data: Uint8Array })
  | (Common & { type: "dir" })
  | (Omit<Common, "mode"> & { type: "symlink"; target: string; mode?: number })
  | (Common & { type: "char" | "block"; major: number; minor: number })
  | (Common & { type: "fifo" });

export class CpioError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "CpioError";
  }
}

export interface CpioWriterOptions {
  /** mtime for entries that don't set their own (default 0, for reproducible archives). */
  mtime?: number;
}

/**
 * Builds a newc archive in memory.
 *
 * @example
 * const w = new CpioWriter();
 * w.add({ type: "dir", path: "dev", mode: 0o755 });
 * w.add({ type: "char", path: "dev/console", mode: 0o600, major: 5, minor: 1 });
 * w.add({ type: "file", path: "init", mode: 0o755, data: agentBytes });
 * const bytes = w.finish();
 */
export class CpioWriter {
  private readonly chunks: Uint8Array[] = [];
  private readonly seen = new Map<string, CpioEntry["type"]>();
  private readonly mtime: number;
  private length = 0;
  private nextIno = 1;
  private finished = false;

  constructor(options: CpioWriterOptions = {}) {
    this.mtime = checkField(options.mtime ?? 0, "mtime", "the writer");
  }

  /** Adds one entry; throws CpioError naming the entry if it cannot be represented. */
  add(entry: CpioEntry): this {
    if (this.finished) throw new CpioError(`cannot add ${entry.path}: the archive is already finished`);
    const path = normalizePath(entry.path);
    if (this.seen.has(path)) throw new CpioError(`duplicate entry ${path}: each path may appear once`);
    const parent = path.includes("/") ? path.slice(0, path.lastIndexOf("/")) : "";
    if (parent !== "" && this.seen.get(parent) !== "dir") {
      throw new CpioError(
        `entry ${path} comes before its parent directory ${parent}: add the directory first (the kernel does not create parents)`,
      );
    }

    const perm = entry.mode ?? 0o777;
    if (!Number.isInteger(perm) || perm < 0 || perm > 0o7777) {
      throw new CpioError(`entry ${path}: mode ${perm} is not a permission value (0 to 0o7777)`);
    }
    let data: Uint8Array = new Uint8Array(0);
    let type: number;
    let rdevMajor = 0;
    let rdevMinor = 0;
    switch (entry.type) {
      case "file":
        type = S_IFREG;
        data = entry.data;
        break;
      case "dir":
        type = S_IFDIR;
        break;
      case "symlink":
        type = S_IFLNK;
        if (entry.target === "" || entry.target.includes("\0")) {
          throw new CpioError(`symlink ${path}: target must be non-empty and contain no NUL byte`);
        }
        data = new TextEncoder().encode(entry.target);
        break;
      case "char":
      case "block":
        type = entry.type === "char" ? S_IFCHR : S_IFBLK;
        rdevMajor = checkField(entry.major, "major", path);
        rdevMinor = checkField(entry.minor, "minor", path);
        break;
      case "fifo":
        type = S_IFIFO;
        break;
      default:
        throw new CpioError(`entry ${path}: unknown type ${(entry as { type: unknown }).type}`);
    }
    if (data.length > MAX_FIELD) throw new CpioError(`entry ${path}: ${data.length} bytes exceeds newc's 4 GiB limit`);

    this.writeRecord(path, {
      ino: this.nextIno++,
      mode: type | perm,
      uid: checkField(entry.uid ?? 0, "uid", path),
      gid: checkField(entry.gid ?? 0, "gid", path),
      nlink: entry.type === "dir" ? 2 : 1,
      mtime: checkField(entry.mtime ?? this.mtime, "mtime", path),
      rdevMajor,
      rdevMinor,
      data,
    });
    this.seen.set(path, entry.type);
    return this;
  }

  /** Whether `path` (normalized like add() does) is already in the archive. */
  has(path: string): boolean {
    return this.seen.has(normalizePath(path));
  }

  /** Appends the trailer and returns the whole archive. */
  finish(): Uint8Array<ArrayBuffer> {
    if (!this.finished) {
      this.writeRecord(TRAILER_NAME, {
        ino: 0, mode: 0, uid: 0, gid: 0, nlink: 1, mtime: 0, rdevMajor: 0, rdevMinor: 0, data: new Uint8Array(0),
      });
      this.finished = true;
    }
    const out = new Uint8Array(this.length);
    let offset = 0;
    for (const chunk of this.chunks) {
      out.set(chunk, offset);
      offset += chunk.length;
    }
    return out;
  }

  private writeRecord(name: string, h: RecordFields): void {
    const nameBytes = new TextEncoder().encode(`${name}\0`);
    const fields = [
      h.ino, h.mode, h.uid, h.gid, h.nlink, h.mtime, h.data.length,
      0, 0, // devmajor/devminor of the filesystem the file came from: meaningless here
      h.rdevMajor, h.rdevMinor,
      nameBytes.length,
      0, // check: only used by the "070702" CRC variant
    ];
    const header = MAGIC + fields.map((v) => v.toString(16).padStart(FIELD_LEN, "0")).join("");
    this.push(new TextEncoder().encode(header));
    this.push(nameBytes);
    this.pad(HEADER_LEN + nameBytes.length);
    if (h.data.length > 0) {
      this.push(h.data);
      this.pad(h.data.length);
    }
  }

  private push(bytes: Uint8Array): void {
    this.chunks.push(bytes);
    this.length += bytes.length;
  }

  private pad(written: number): void {
    const rest = (ALIGN - (written % ALIGN)) % ALIGN;
    if (rest > 0) this.push(new Uint8Array(rest));
  }
}

interface RecordFields {
  ino: number;
  mode: number;
  uid: number;
  gid: number;
  nlink: number;
  mtime: number;
  rdevMajor: number;
  rdevMinor: number;
  data: Uint8Array;
}

function checkField(value: number, what: string, path: string): number {
  if (!Number.isInteger(value) || value < 0 || value > MAX_FIELD) {
    throw new CpioError(`entry ${path}: ${what} ${value} does not fit newc's unsigned 32-bit field`);
  }
  return value;
}

function normalizePath(raw: string): string {
  const path = raw.replace(/^\/+/, "").replace(/\/+$/, "");
  if (path === "") throw new CpioError(`entry "${raw}": empty path (the archive root needs no entry)`);
  if (path.includes("\0")) throw new CpioError(`entry ${JSON.stringify(raw)}: path contains a NUL byte`);
  for (const part of path.split("/")) {
    if (part === "" || part === "." || part === "..") {
      throw new CpioError(`entry ${raw}: path must not contain empty, "." or ".." components`);
    }
  }
  if (path === TRAILER_NAME) throw new CpioError(`entry ${raw}: "${TRAILER_NAME}" is reserved for the archive trailer`);
  return path;
}
