// Streaming reader for layer tarballs (ustar, PAX, GNU long names), treating the archive as
// hostile: every size is bounded and checked, and entry bodies are handed out as they arrive so
// nothing is buffered whole or extracted to disk.
//
// Names are kept as "byte strings": each char is one byte of the archive (latin1), because a tar
// name is bytes, not text, and EROFS stores them as bytes. Use `bytesOf` to get them back.

import { ImageError } from "./errors.ts";

export type TarEntryType = "file" | "hardlink" | "symlink" | "char" | "block" | "dir" | "fifo";

export interface TarEntry {
  /** Name as stored (PAX/GNU long names applied), as a byte string. */
  path: string;
  type: TarEntryType;
  /** Permission bits incl. setuid/setgid/sticky (no file-type bits). */
  mode: number;
  uid: number;
  gid: number;
  /** Seconds since the epoch, and the nanoseconds PAX may add. */
  mtime: number;
  mtimeNsec: number;
  /** Body length (regular files only; 0 for the rest). */
  size: number;
  /** Symlink target or hardlink target, as a byte string. */
  linkname: string;
  devmajor: number;
  devminor: number;
  /** Extended attributes from PAX SCHILY.xattr.* records; names are byte strings. */
  xattrs: Map<string, Uint8Array>;
}

export interface TarLimits {
  /** Largest single regular file. */
  maxFileSize: number;
  /** Largest PAX header or GNU long name body. */
  maxMetaSize: number;
  /** Longest path or link name, in bytes. */
  maxPathLength: number;
  /** Largest total of entry bodies in the archive. */
  maxTotalSize: number;
  maxEntries: number;
}

export const DEFAULT_TAR_LIMITS: TarLimits = {
  maxFileSize: 64 * 2 ** 30,
  maxMetaSize: 1 << 20,
  maxPathLength: 4096,
  maxTotalSize: 256 * 2 ** 30,
  maxEntries: 1_000_000,
};

const BLOCK = 512;
// ustar header field offsets and lengths.
const NAME = 0, NAME_LEN = 100;
const MODE = 100, MODE_LEN = 8;
const UID = 108, UID_LEN = 8;
const GID = 116, GID_LEN = 8;
const SIZE = 124, SIZE_LEN = 12;
const MTIME = 136, MTIME_LEN = 12;
const CHKSUM = 148, CHKSUM_LEN = 8;
const TYPEFLAG = 156;
const LINKNAME = 157, LINKNAME_LEN = 100;
const MAGIC = 257;
const DEVMAJOR = 329, DEVMINOR = 337, DEV_LEN = 8;
const PREFIX = 345, PREFIX_LEN = 155;

/** The bytes of a byte string produced by this module. */
export function bytesOf(s: string): Uint8Array {
  const out = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) out[i] = s.charCodeAt(i) & 0xff;
  return out;
}

const ascii = new TextDecoder("utf-8");

function byteString(b: Uint8Array): string {
  // Names are almost always ASCII, where a native decode is exact and fast. Otherwise map bytes
  // by hand: TextDecoder("latin1") is windows-1252 per WHATWG and would not keep them 1:1.
  let plain = true;
  for (let i = 0; i < b.length; i++) if (b[i]! >= 0x80) { plain = false; break; }
  if (plain) return ascii.decode(b);
  let s = "";
  for (let i = 0; i < b.length; i++) s += String.fromCharCode(b[i]!);
  return s;
}

function cstr(b: Uint8Array, off: number, len: number): string {
  let end = off;
  while (end < off + len && b[end] !== 0) end++;
  return byteString(b.subarray(off, end));
}

function num(b: Uint8Array, off: number, len: number, field: string): number {
  if (b[off]! & 0x80) {
    // GNU base-256: big-endian two's complement; we accept only non-negative values < 2^53.
    if (b[off] === 0xff) throw new ImageError("TAR_INVALID", `negative ${field} in tar header`);
    let v = b[off]! & 0x7f;
    for (let i = off + 1; i < off + len; i++) {
      v = v * 256 + b[i]!;
      if (v > Number.MAX_SAFE_INTEGER) throw new ImageError("TAR_LIMIT", `${field} in tar header is absurdly large`);
    }
    return v;
  }
  let v = 0;
  let i = off;
  while (i < off + len && (b[i] === 0x20 || b[i] === 0)) i++;
  for (; i < off + len; i++) {
    const c = b[i]!;
    if (c === 0 || c === 0x20) break;
    if (c < 0x30 || c > 0x37) throw new ImageError("TAR_INVALID", `bad octal digit in tar header field ${field}`);
    v = v * 8 + (c - 0x30);
  }
  return v;
}

/** Buffered pull reader over a byte stream. */
class ByteSource {
  private chunks: Uint8Array[] = [];
  private head = 0; // offset into chunks[0]
  private buffered = 0;
  private done = false;
  consumed = 0;
  // Only read() is used: the web and node:stream/web reader types both fit.
  constructor(private reader: { read(): Promise<{ value?: Uint8Array; done: boolean }> }) {}

  private async fill(n: number): Promise<boolean> {
    while (this.buffered < n && !this.done) {
      const { value, done } = await this.reader.read();
      if (done || !value) {
        this.done = true;
        break;
      }
      if (value.byteLength) {
        this.chunks.push(value);
        this.buffered += value.byteLength;
      }
    }
    return this.buffered >= n;
  }

  /** Exactly n bytes, or null at a clean end of stream (nothing buffered). Throws if truncated. */
  async exact(n: number, what: string): Promise<Uint8Array | null> {
    if (!(await this.fill(n))) {
      if (this.buffered === 0) return null;
      throw new ImageError("TRUNCATED", `tar stream ends in the middle of ${what}`);
    }
    const first = this.chunks[0]!;
    if (first.byteLength - this.head >= n) {
      const out = first.subarray(this.head, this.head + n);
      this.advance(n);
      return out;
    }
    const out = new Uint8Array(n);
    let got = 0;
    while (got < n) {
      const c = this.chunks[0]!;
      const take = Math.min(n - got, c.byteLength - this.head);
      out.set(c.subarray(this.head, this.head + take), got);
      got += take;
      this.advance(take);
    }
    return out;
  }

  /** Up to max bytes (at least 1), zero-copy. Throws if the stream has ended. */
  async some(max: number, what: string): Promise<Uint8Array> {
    if (!(await this.fill(1))) throw new ImageError("TRUNCATED", `tar stream ends in the middle of ${what}`);
    const c = this.chunks[0]!;
    const take = Math.min(max, c.byteLength - this.head);
    const out = c.subarray(this.head, this.head + take);
    this.advance(take);
    return out;
  }

  async skip(n: number, what: string): Promise<void> {
    while (n > 0) n -= (await this.some(n, what)).byteLength;
  }

  private advance(n: number) {
    this.head += n;
    this.buffered -= n;
    this.consumed += n;
    while (this.chunks.length && this.head >= this.chunks[0]!.byteLength) {
      this.head -= this.chunks[0]!.byteLength;
      this.chunks.shift();
    }
  }

  /** Reads what is left (used to drain trailing padding so hashes cover the whole stream). */
  async drain(): Promise<void> {
    while (await this.fill(1)) {
      const c = this.chunks[0]!;
      this.advance(c.byteLength - this.head);
    }
  }
}

/**
 * Reads entries one by one. After `next()` returns an entry of type "file", its body may be read
 * with `body()`; whatever is not read is skipped by the following `next()`.
 *
 *   const tar = new TarReader(stream);
 *   for (let e; (e = await tar.next()); ) if (e.type === "file") for await (const c of tar.body()) use(c);
 */
export class TarReader {
  private src: ByteSource;
  private remaining = 0; // unread body bytes of the current entry
  private padding = 0;
  private entries = 0;
  private total = 0;
  private globals = new Map<string, string>();
  private ended = false;

  constructor(stream: ReadableStream<Uint8Array>, private limits: TarLimits = DEFAULT_TAR_LIMITS) {
    this.src = new ByteSource(stream.getReader());
  }

  /** Bytes of the archive consumed so far. */
  get position(): number {
    return this.src.consumed;
  }

  async next(): Promise<TarEntry | null> {
    if (this.ended) return null;
    await this.src.skip(this.remaining + this.padding, "an entry body");
    this.remaining = this.padding = 0;

    let longName: string | undefined;
    let longLink: string | undefined;
    let pax: Map<string, string> | undefined;
    for (;;) {
      const h = await this.src.exact(BLOCK, "a tar header");
      if (h === null || isZero(h)) {
        // End of archive: two zero blocks, or (leniently) one, or a bare end of stream after
        // complete entries. Pending long-name/PAX records with no entry are an error.
        if (longName !== undefined || longLink !== undefined || pax)
          throw new ImageError("TRUNCATED", "tar stream ends after an extended header with no entry");
        this.ended = true;
        await this.src.drain();
        return null;
      }
      verifyChecksum(h, this.src.consumed - BLOCK);
      if (++this.entries > this.limits.maxEntries)
        throw new ImageError("TAR_LIMIT", `tar has more than ${this.limits.maxEntries} entries`);
      const flag = String.fromCharCode(h[TYPEFLAG]!);
      const size = num(h, SIZE, SIZE_LEN, "size");

      if (flag === "x" || flag === "g" || flag === "L" || flag === "K") {
        if (size > this.limits.maxMetaSize)
          throw new ImageError("TAR_LIMIT", `tar extended header of ${size} bytes exceeds the ${this.limits.maxMetaSize}-byte limit`);
        const body = (await this.src.exact(size, "an extended header")) ?? new Uint8Array(0);
        if (body.byteLength < size) throw new ImageError("TRUNCATED", "tar stream ends in an extended header");
        await this.src.skip(pad(size), "header padding");
        if (flag === "L") longName = this.checkLen(cstr(body, 0, body.byteLength), "GNU long name");
        else if (flag === "K") longLink = this.checkLen(cstr(body, 0, body.byteLength), "GNU long link name");
        else {
          const recs = parsePax(body);
          if (flag === "g") for (const [k, v] of recs) this.globals.set(k, v);
          else pax = recs;
        }
        continue;
      }

      const records = new Map(this.globals);
      if (pax) for (const [k, v] of pax) records.set(k, v);

      const isGnu = h[MAGIC + 5] === 0x20; // "ustar  \0": the prefix field holds other things
      let path = cstr(h, NAME, NAME_LEN);
      if (!isGnu && h[MAGIC] === 0x75) {
        const prefix = cstr(h, PREFIX, PREFIX_LEN);
        if (prefix) path = prefix + "/" + path;
      }
      if (longName !== undefined) path = longName;
      if (records.has("path")) path = (records.get("path")!);
      let linkname = cstr(h, LINKNAME, LINKNAME_LEN);
      if (longLink !== undefined) linkname = longLink;
      if (records.has("linkpath")) linkname = (records.get("linkpath")!);
      this.checkLen(path, "entry name");
      this.checkLen(linkname, "link name");

      let entrySize = size;
      if (records.has("size")) entrySize = paxInt(records.get("size")!, "size");
      let mtime = num(h, MTIME, MTIME_LEN, "mtime");
      let mtimeNsec = 0;
      if (records.has("mtime")) [mtime, mtimeNsec] = paxTime(records.get("mtime")!);
      const uid = records.has("uid") ? paxInt(records.get("uid")!, "uid") : num(h, UID, UID_LEN, "uid");
      const gid = records.has("gid") ? paxInt(records.get("gid")!, "gid") : num(h, GID, GID_LEN, "gid");
      const xattrs = new Map<string, Uint8Array>();
      for (const [k, v] of records) {
        if (k.startsWith("SCHILY.xattr.")) xattrs.set((k.slice(13)), bytesOf(v));
      }

      let type: TarEntryType;
      switch (flag) {
        case "0": case "\0": case "7": type = "file"; break;
        case "1": type = "hardlink"; break;
        case "2": type = "symlink"; break;
        case "3": type = "char"; break;
        case "4": type = "block"; break;
        case "5": type = "dir"; break;
        case "6": type = "fifo"; break;
        default:
          throw new ImageError("TAR_INVALID", `tar entry ${JSON.stringify(path)} has unsupported type '${printable(flag)}' (sparse and volume entries are not supported)`);
      }
      // A hardlink's size field may be non-zero in old archives but carries no body; only
      // regular files have bodies we hand out. Other types' bodies are skipped.
      if (type === "file" && entrySize > this.limits.maxFileSize)
        throw new ImageError("TAR_LIMIT", `tar entry ${JSON.stringify(path)} claims ${entrySize} bytes, over the ${this.limits.maxFileSize}-byte limit`);
      const bodyLen = type === "dir" || type === "hardlink" || type === "symlink" ? 0 : entrySize;
      this.total += bodyLen;
      if (this.total > this.limits.maxTotalSize)
        throw new ImageError("TAR_LIMIT", `tar contents exceed the ${this.limits.maxTotalSize}-byte limit`);
      this.remaining = bodyLen;
      this.padding = pad(bodyLen);
      return {
        path,
        type,
        mode: num(h, MODE, MODE_LEN, "mode") & 0o7777,
        uid,
        gid,
        mtime,
        mtimeNsec,
        size: type === "file" ? entrySize : 0,
        linkname,
        devmajor: type === "char" || type === "block" ? num(h, DEVMAJOR, DEV_LEN, "devmajor") : 0,
        devminor: type === "char" || type === "block" ? num(h, DEVMINOR, DEV_LEN, "devminor") : 0,
        xattrs,
      };
    }
  }

  /** The current entry's body, chunk by chunk (chunks are views; copy to keep them). */
  async *body(): AsyncGenerator<Uint8Array> {
    while (this.remaining > 0) {
      const c = await this.src.some(this.remaining, "a file body");
      this.remaining -= c.byteLength;
      yield c;
    }
  }

  private checkLen(s: string, what: string): string {
    if (s.length > this.limits.maxPathLength)
      throw new ImageError("TAR_LIMIT", `tar ${what} of ${s.length} bytes exceeds the ${this.limits.maxPathLength}-byte limit`);
    return s;
  }
}

function pad(n: number): number {
  return (BLOCK - (n % BLOCK)) % BLOCK;
}

function isZero(b: Uint8Array): boolean {
  for (let i = 0; i < b.length; i++) if (b[i] !== 0) return false;
  return true;
}

function printable(c: string): string {
  const code = c.charCodeAt(0);
  return code >= 0x20 && code < 0x7f ? c : `\\x${code.toString(16).padStart(2, "0")}`;
}

function verifyChecksum(h: Uint8Array, offset: number) {
  const stored = num(h, CHKSUM, CHKSUM_LEN, "checksum");
  let unsigned = 0;
  let signed = 0;
  for (let i = 0; i < BLOCK; i++) {
    const b = i >= CHKSUM && i < CHKSUM + CHKSUM_LEN ? 0x20 : h[i]!;
    unsigned += b;
    signed += b > 127 ? b - 256 : b;
  }
  if (stored !== unsigned && stored !== signed)
    throw new ImageError("TAR_INVALID", `tar header at byte ${offset} has a bad checksum (not a tar archive, or corrupted)`);
}

/** PAX records are UTF-8 text; we keep values as byte strings of their UTF-8 encoding. */
function parsePax(body: Uint8Array): Map<string, string> {
  const out = new Map<string, string>();
  let off = 0;
  while (off < body.length) {
    if (body[off] === 0) break;
    let sp = off;
    while (sp < body.length && body[sp] !== 0x20) sp++;
    const len = Number(byteString(body.subarray(off, sp)));
    if (!Number.isInteger(len) || len <= 0 || off + len > body.length || body[off + len - 1] !== 0x0a)
      throw new ImageError("TAR_INVALID", "malformed PAX extended header record");
    const rec = body.subarray(sp + 1, off + len - 1);
    const eq = rec.indexOf(0x3d);
    if (eq < 0) throw new ImageError("TAR_INVALID", "malformed PAX record (no '=')");
    out.set(byteString(rec.subarray(0, eq)), byteString(rec.subarray(eq + 1)));
    off += len;
  }
  return out;
}

function paxInt(v: string, field: string): number {
  if (!/^\d+$/.test(v)) throw new ImageError("TAR_INVALID", `bad PAX ${field} value ${JSON.stringify(v.slice(0, 40))}`);
  const n = Number(v);
  if (!Number.isSafeInteger(n)) throw new ImageError("TAR_LIMIT", `PAX ${field} is absurdly large`);
  return n;
}

function paxTime(v: string): [number, number] {
  const m = /^(-?\d+)(?:\.(\d+))?$/.exec(v);
  if (!m) throw new ImageError("TAR_INVALID", `bad PAX mtime ${JSON.stringify(v.slice(0, 40))}`);
  const sec = Math.max(0, Number(m[1]));
  const ns = m[2] ? Number((m[2] + "000000000").slice(0, 9)) : 0;
  return [sec, ns];
}
