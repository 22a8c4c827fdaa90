// Writes tar archives in memory (ustar headers, PAX records for long names/xattrs/large sizes,
// optional GNU long-name records). Used to build layers for the embedded default image and,
// in tests, hostile and unusual archives that real tools would not produce.

import { bytesOf } from "./tar.ts";

export interface TarWriteEntry {
  path: string;
  type?: "file" | "hardlink" | "symlink" | "char" | "block" | "dir" | "fifo";
  mode?: number;
  uid?: number;
  gid?: number;
  mtime?: number;
  data?: Uint8Array | string;
  /** Body length to declare, when it should differ from data (for hostile tests). */
  declaredSize?: number;
  linkname?: string;
  devmajor?: number;
  devminor?: number;
  xattrs?: Record<string, string | Uint8Array>;
  /** Use GNU 'L'/'K' records instead of PAX for long names. */
  gnuLongNames?: boolean;
  /** Extra raw PAX records. */
  pax?: Record<string, string>;
}

const TYPEFLAGS = { file: "0", hardlink: "1", symlink: "2", char: "3", block: "4", dir: "5", fifo: "6" } as const;
const enc = new TextEncoder();

function toBytes(d: Uint8Array | string | undefined): Uint8Array {
  if (d === undefined) return new Uint8Array(0);
  return typeof d === "string" ? enc.encode(d) : d;
}

function octal(h: Uint8Array, off: number, len: number, v: number) {
  const s = v.toString(8).padStart(len - 1, "0");
  if (s.length > len - 1) throw new Error(`tar field overflow: ${v}`);
  for (let i = 0; i < s.length; i++) h[off + i] = s.charCodeAt(i);
  h[off + len - 1] = 0;
}

function putStr(h: Uint8Array, off: number, len: number, s: Uint8Array) {
  h.set(s.subarray(0, len), off);
}

function header(name: Uint8Array, flag: string, size: number, e: Partial<TarWriteEntry>, linkname: Uint8Array): Uint8Array {
  const h = new Uint8Array(512);
  putStr(h, 0, 100, name);
  octal(h, 100, 8, e.mode ?? (e.type === "dir" ? 0o755 : 0o644));
  octal(h, 108, 8, e.uid ?? 0);
  octal(h, 116, 8, e.gid ?? 0);
  if (size > 0o77777777777) {
    h[124] = 0x80; // base-256
    let v = size;
    for (let i = 135; i > 124; i--) { h[i] = v % 256; v = Math.floor(v / 256); }
  } else octal(h, 124, 12, size);
  octal(h, 136, 12, e.mtime ?? 1700000000);
  h[156] = flag.charCodeAt(0);
  putStr(h, 157, 100, linkname);
  h.set(enc.encode("ustar\0"), 257);
  h.set(enc.encode("00"), 263);
  octal(h, 329, 8, e.devmajor ?? 0);
  octal(h, 337, 8, e.devminor ?? 0);
  for (let i = 148; i < 156; i++) h[i] = 0x20;
  let sum = 0;
  for (const b of h) sum += b;
  octal(h, 148, 7, sum);
  h[155] = 0x20;
  return h;
}

function padTo512(b: Uint8Array): Uint8Array[] {
  const p = (512 - (b.byteLength % 512)) % 512;
  return p ? [b, new Uint8Array(p)] : [b];
}

function paxRecord(key: string, value: Uint8Array): Uint8Array {
  const body = new Uint8Array([...enc.encode(` ${key}=`), ...value, 0x0a]);
  let len = body.byteLength + 1;
  while (String(len).length + body.byteLength !== len) len++;
  return new Uint8Array([...enc.encode(String(len)), ...body]);
}

/** One archive's bytes. Names are UTF-8 unless given as byte strings through `bytesOf`. */
export function writeTar(entries: TarWriteEntry[], { endMarker = true } = {}): Uint8Array<ArrayBuffer> {
  const parts: Uint8Array[] = [];
  for (const e of entries) {
    const type = e.type ?? "file";
    const data = toBytes(e.data);
    const size = type === "file" ? (e.declaredSize ?? data.byteLength) : 0;
    const name = enc.encode(e.path);
    const link = enc.encode(e.linkname ?? "");
    const records: Uint8Array[] = [];
    for (const [k, v] of Object.entries(e.pax ?? {})) records.push(paxRecord(k, enc.encode(v)));
    let hname = name;
    let hlink = link;
    if (name.byteLength > 100) {
      if (e.gnuLongNames) {
        const body = new Uint8Array([...name, 0]);
        parts.push(header(enc.encode("././@LongLink"), "L", body.byteLength, {}, new Uint8Array(0)), ...padTo512(body));
      } else records.push(paxRecord("path", name));
      hname = name.subarray(0, 100);
    }
    if (link.byteLength > 100) {
      if (e.gnuLongNames) {
        const body = new Uint8Array([...link, 0]);
        parts.push(header(enc.encode("././@LongLink"), "K", body.byteLength, {}, new Uint8Array(0)), ...padTo512(body));
      } else records.push(paxRecord("linkpath", link));
      hlink = link.subarray(0, 100);
    }
    for (const [k, v] of Object.entries(e.xattrs ?? {})) records.push(paxRecord(`SCHILY.xattr.${k}`, toBytes(v)));
    if (records.length) {
      const body = new Uint8Array(records.reduce((s, r) => s + r.byteLength, 0));
      let o = 0;
      for (const r of records) { body.set(r, o); o += r.byteLength; }
      parts.push(header(enc.encode("PaxHeader"), "x", body.byteLength, {}, new Uint8Array(0)), ...padTo512(body));
    }
    parts.push(header(hname, TYPEFLAGS[type], size, e, hlink));
    if (type === "file") parts.push(...padTo512(data));
  }
  if (endMarker) parts.push(new Uint8Array(1024));
  const out = new Uint8Array(parts.reduce((s, p) => s + p.byteLength, 0));
  let o = 0;
  for (const p of parts) { out.set(p, o); o += p.byteLength; }
  return out;
}

export { bytesOf };
