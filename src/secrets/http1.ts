// Rewrites the guest's HTTP/1.x requests on their way upstream: finds placeholders in each
// request (headers, Basic auth, and where a secret asks for it the request-target and body),
// puts the real values in when this request may carry them, and refuses framing it cannot read
// unambiguously. Input arrives cut anywhere (TCP segments, TLS records); output is canonical
// HTTP/1.1 framing, so what the upstream parses is exactly what was checked here.

import { type Decide, hostAllowed, type Secret, type SecretSet, StreamSubstituter, substitute } from "./substitute.ts";

export const MAX_HEAD_BYTES = 64 * 1024;
export const MAX_HEADERS = 200;
/** Content-Length bodies are held whole (the length changes) when body substitution is on. */
export const MAX_BUFFERED_BODY = 16 * 1024 * 1024;
const MAX_CHUNK_LINE = 4096;
const MAX_TRAILER_BYTES = 16 * 1024;
export const MAX_LOGGED_REQUESTS = 512;

export interface RequestContext {
  /** The TLS server name the guest asked for (or the destination IP when it sent none). */
  serverName: string;
  /** Destination port, to check a Host header's port. */
  port: number;
  secrets: SecretSet;
  /** Whether the destination IP was resolved by this sandbox for serverName (DNS pinning). */
  destPinned: boolean;
  /** "block" (default): a placeholder bound for a host it is not allowed on blocks the request. "pass": it goes out as the literal placeholder. */
  onDisallowed?: "block" | "pass";
  maxBufferedBody?: number;
}

/** Why the relay stops: `block` a policy decision (403 to the guest), `refuse` unreadable framing (400). */
export interface Stop {
  kind: "block" | "refuse";
  status: 403 | 400;
  /** For logs and the guest: names secrets and hosts, never a value. */
  reason: string;
}

/** One request as logged: which secrets went in (names only). */
export interface RequestLog {
  method: string;
  host: string;
  substituted: string[];
}

export interface PushResult {
  out: Uint8Array[];
  stop?: Stop;
}

type State =
  | { t: "head" }
  | { t: "fixed"; left: number }
  | { t: "fixed-buffer"; left: number; parts: Buffer[]; head: RequestHead }
  | { t: "chunk-line" }
  | { t: "chunk-data"; left: number }
  | { t: "chunk-crlf" }
  | { t: "trailers" }
  | { t: "tunnel" }
  | { t: "stopped" };

interface RequestHead {
  method: string;
  target: string;
  version: string;
  headers: [string, string][];
}

const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
const REQUEST_LINE = /^([!#$%&'*+\-.^_`|~0-9A-Za-z]+) ([\x21-\x7e]+) HTTP\/1\.([01])$/;
// Field values: visible ASCII, obs-text, SP and HTAB; never CR, LF, NUL or other controls.
const FIELD_VALUE = /^[\t\x20-\x7e\x80-\xff]*$/;

const CRLF = Buffer.from("\r\n");

/**
 * Feed it the guest's bytes in any cuts; it returns bytes to send upstream, or a Stop.
 *
 * @example
 * const rw = new Http1RequestRewriter({ serverName: "api.example.com", port: 443, secrets, destPinned: true });
 * const { out, stop } = rw.push(chunk);
 */
export class Http1RequestRewriter {
  /** The most recent requests (at most MAX_LOGGED_REQUESTS); `dropped` older ones were let go. */
  readonly log: RequestLog[] = [];
  dropped = 0;
  private state: State = { t: "head" };
  private q = new ByteQueue();
  /** Where the scan for the end of a head or trailer block resumes (start of its last line). */
  private scanFrom = 0;
  private bodySub?: StreamSubstituter;
  /** After this request, the connection stops being HTTP (Upgrade). */
  private upgradeAfter = false;

  constructor(private ctx: RequestContext) {}

  push(chunk: Uint8Array): PushResult {
    if (this.state.t === "stopped") return { out: [] };
    if (this.state.t === "tunnel") return { out: [chunk] };
    this.q.append(chunk);
    const out: Uint8Array[] = [];
    try {
      while (this.step(out));
    } catch (e) {
      if (e instanceof StopSignal) {
        this.state = { t: "stopped" };
        this.q.clear();
        return { out: [], stop: e.stop };
      }
      throw e;
    }
    return { out };
  }

  /** The guest closed its side. A request cut short is not forwarded. */
  end(): PushResult {
    if (this.state.t === "tunnel" || this.state.t === "stopped") return { out: [] };
    if (this.state.t === "head" && this.buf.length === 0) return { out: [] };
    if (this.state.t === "fixed" || this.state.t === "chunk-data" || this.state.t === "chunk-line" || this.state.t === "chunk-crlf" || this.state.t === "trailers") {
      // The head already went upstream; the upstream sees the same truncation the guest made.
      return { out: [] };
    }
    this.state = { t: "stopped" };
    return { out: [], stop: { kind: "refuse", status: 400, reason: "connection closed in the middle of a request" } };
  }

  private get buf(): Buffer {
    return this.q.view;
  }

  private consume(n: number) {
    this.q.consume(n);
    this.scanFrom = 0;
  }

  /** End of the head/trailer block at the front of the buffer, scanning only bytes not seen before. */
  private blockEnd(): number | "bad" | undefined {
    const r = findHeadEnd(this.buf, this.scanFrom);
    if (typeof r === "object") {
      this.scanFrom = r.more;
      return undefined;
    }
    return r;
  }

  /** One parsing step; false when more input is needed. */
  private step(out: Uint8Array[]): boolean {
    const st = this.state;
    switch (st.t) {
      case "head":
        return this.head(out);
      case "fixed": {
        if (this.buf.length === 0) return false;
        const n = Math.min(st.left, this.buf.length);
        out.push(this.buf.subarray(0, n));
        this.consume(n);
        st.left -= n;
        if (st.left === 0) this.messageDone();
        return true;
      }
      case "fixed-buffer": {
        if (this.buf.length === 0 && st.left > 0) return false;
        const n = Math.min(st.left, this.buf.length);
        st.parts.push(this.buf.subarray(0, n));
        this.consume(n);
        st.left -= n;
        if (st.left > 0) return false;
        const body = Buffer.concat(st.parts).toString("latin1");
        const r = substitute(body, this.ctx.secrets, this.decider(st.head), "raw", (s) => !!s.body);
        if (r.blocked) this.block(r.blocked);
        this.logLast(r.used);
        const bodyBytes = Buffer.from(r.text, "latin1");
        setHeader(st.head.headers, "content-length", String(bodyBytes.length));
        out.push(serializeHead(st.head), bodyBytes);
        this.messageDone();
        return true;
      }
      case "chunk-line": {
        const i = this.buf.indexOf(CRLF);
        if (i < 0) {
          if (this.buf.length > MAX_CHUNK_LINE) this.refuse("chunk size line too long");
          if (this.buf.includes(0x0a)) this.refuse("chunk size line ends in a bare LF");
          return false;
        }
        const line = this.buf.subarray(0, i).toString("latin1");
        this.consume(i + 2);
        const m = line.match(/^([0-9a-fA-F]{1,8})(;[\t\x20-\x7e]*)?$/);
        if (!m) this.refuse("malformed chunk size line");
        const size = parseInt(m![1]!, 16);
        if (size === 0) {
          if (this.bodySub) {
            const rest = this.bodySub.end();
            if (this.bodySub.blocked) this.block(this.bodySub.blocked);
            this.logLast([...this.bodySub.used]);
            if (rest.length) out.push(chunkOf(Buffer.from(rest, "latin1")));
            this.bodySub = undefined;
          }
          out.push(Buffer.from("0\r\n"));
          this.state = { t: "trailers" };
        } else this.state = { t: "chunk-data", left: size };
        if (size !== 0 && !this.bodySub) out.push(Buffer.from(size.toString(16) + "\r\n"));
        return true;
      }
      case "chunk-data": {
        if (this.buf.length === 0) return false;
        const n = Math.min(st.left, this.buf.length);
        const data = this.buf.subarray(0, n);
        this.consume(n);
        st.left -= n;
        if (this.bodySub) {
          const text = this.bodySub.push(data.toString("latin1"));
          if (this.bodySub.blocked) this.block(this.bodySub.blocked);
          if (text.length) out.push(chunkOf(Buffer.from(text, "latin1")));
        } else out.push(data);
        if (st.left === 0) this.state = { t: "chunk-crlf" };
        return true;
      }
      case "chunk-crlf": {
        if (this.buf.length < 2) return false;
        if (this.buf[0] !== 0x0d || this.buf[1] !== 0x0a) this.refuse("chunk data not followed by CRLF");
        this.consume(2);
        if (!this.bodySub) out.push(CRLF);
        this.state = { t: "chunk-line" };
        return true;
      }
      case "trailers": {
        const end = this.blockEnd();
        if (end === "bad") this.refuse("bare CR or LF in chunked trailers");
        if (end === undefined) {
          if (this.buf.length > MAX_TRAILER_BYTES) this.refuse("chunked trailers too large");
          return false;
        }
        const block = this.buf.subarray(0, end).toString("latin1");
        this.consume(end);
        const fields = block === "\r\n" ? [] : parseFields(block.slice(0, -4).split("\r\n"), (r) => this.refuse(r));
        const last = this.lastHead!;
        const decide = this.decider(last);
        let text = "";
        for (const [name, value] of fields) {
          const r = substitute(value, this.ctx.secrets, decide, "raw");
          if (r.blocked) this.block(r.blocked);
          this.logLast(r.used);
          text += `${name}: ${r.text}\r\n`;
        }
        out.push(Buffer.from(text + "\r\n", "latin1"));
        this.messageDone();
        return true;
      }
      case "tunnel":
        if (this.buf.length) out.push(this.buf);
        this.q.clear();
        return false;
      default:
        return false;
    }
  }

  private lastHead?: RequestHead;
  private lastHostOk = false;
  private lastHostShown = "";

  private head(out: Uint8Array[]): boolean {
    // Tolerate empty lines before a request (RFC 9112 2.2), as after a body some clients send.
    let start = 0;
    while (this.buf.length >= start + 2 && this.buf[start] === 0x0d && this.buf[start + 1] === 0x0a) start += 2;
    if (start) this.consume(start);
    if (this.buf.length === 0) return false;
    const end = this.blockEnd();
    if (end === "bad") this.refuse("bare CR or LF in the request head (lines must end in CRLF)");
    if (end === undefined) {
      if (this.buf.length > MAX_HEAD_BYTES) this.refuse(`request head exceeds ${MAX_HEAD_BYTES} bytes`);
      return false;
    }
    if (end > MAX_HEAD_BYTES) this.refuse(`request head exceeds ${MAX_HEAD_BYTES} bytes`);
    const text = this.buf.subarray(0, end - 4).toString("latin1");
    this.consume(end);
    const lines = text.split("\r\n");
    const m = lines[0]!.match(REQUEST_LINE);
    if (!m) {
      if (lines[0]!.startsWith("PRI * HTTP/2")) this.refuse("HTTP/2 without ALPN negotiation is not supported on intercepted connections");
      this.refuse("malformed request line");
    }
    const head: RequestHead = { method: m![1]!, target: m![2]!, version: m![3]!, headers: parseFields(lines.slice(1), (r) => this.refuse(r)) };
    if (head.headers.length > MAX_HEADERS) this.refuse(`more than ${MAX_HEADERS} header fields`);
    if (head.method === "CONNECT") this.refuse("CONNECT inside an intercepted TLS connection is not supported");

    // Framing (RFC 9112 6): refuse everything two parsers could read differently.
    const cl = getAll(head.headers, "content-length");
    const te = getAll(head.headers, "transfer-encoding");
    if (cl.length && te.length) this.refuse("both Content-Length and Transfer-Encoding are present");
    if (cl.length > 1) this.refuse("more than one Content-Length field");
    if (te.length > 1) this.refuse("more than one Transfer-Encoding field");
    if (te.length && head.version === "0") this.refuse("Transfer-Encoding in an HTTP/1.0 request");
    if (te.length && te[0]!.toLowerCase() !== "chunked") this.refuse(`Transfer-Encoding ${JSON.stringify(te[0]!.slice(0, 40))} is not supported (only "chunked")`);
    let length = 0;
    if (cl.length) {
      if (!/^[0-9]{1,15}$/.test(cl[0]!)) this.refuse("Content-Length is not a single decimal number");
      length = Number(cl[0]);
    }
    const hosts = getAll(head.headers, "host");
    if (hosts.length > 1) this.refuse("more than one Host field");
    if (head.version === "1" && hosts.length === 0) this.refuse("HTTP/1.1 request without a Host field");

    // Host binding: the request must name the server the TLS connection was made to.
    const ctx = this.ctx;
    let hostOk = hosts.length === 1 && hostMatches(hosts[0]!, ctx.serverName, ctx.port);
    let shown = hosts[0] ?? "(none)";
    if (!head.target.startsWith("/") && head.target !== "*") {
      const abs = head.target.match(/^https?:\/\/([^/?#]*)/i);
      if (!abs) this.refuse("request-target is neither origin-form nor absolute-form");
      // userinfo ("user@host") is refused as a match: it only serves to confuse host checks.
      if (abs![1]!.includes("@") || !hostMatches(abs![1]!, ctx.serverName, ctx.port)) {
        hostOk = false;
        shown = abs![1]!;
      }
    }
    this.lastHead = head;
    this.lastHostOk = hostOk;
    this.lastHostShown = shown;
    if (this.log.length >= MAX_LOGGED_REQUESTS) {
      // A long keep-alive connection must not grow memory: keep the most recent half.
      this.log.splice(0, MAX_LOGGED_REQUESTS / 2);
      this.dropped += MAX_LOGGED_REQUESTS / 2;
    }
    this.log.push({ method: head.method, host: shown.slice(0, 255), substituted: [] });
    const decide = this.decider(head);

    // Request-target: substituted only for secrets that ask for it, percent-encoded.
    const t = substitute(head.target, ctx.secrets, decide, "percent", (s) => !!s.query);
    if (t.blocked) this.block(t.blocked);
    head.target = t.text;
    this.logLast(t.used);
    for (const h of head.headers) {
      if (h[0].toLowerCase() === "host") continue;
      const r = substituteHeader(h[0], h[1], ctx.secrets, decide);
      if (r.blocked) this.block(r.blocked);
      h[1] = r.text;
      this.logLast(r.used);
    }

    const connection = getAll(head.headers, "connection").join(",").toLowerCase();
    this.upgradeAfter = getAll(head.headers, "upgrade").length > 0 && /\bupgrade\b/.test(connection);
    const bodyScan = ctx.secrets.anyBody;
    if (te.length) {
      out.push(serializeHead(head));
      this.bodySub = bodyScan ? new StreamSubstituter(ctx.secrets, decide, (s) => !!s.body) : undefined;
      this.state = { t: "chunk-line" };
    } else if (length > 0 && bodyScan) {
      const max = ctx.maxBufferedBody ?? MAX_BUFFERED_BODY;
      if (length > max) this.block(`request body of ${length} bytes exceeds the ${max}-byte limit for body substitution`);
      // The head waits for the body, so a client waiting for "100 Continue" would stall: drop Expect.
      head.headers = head.headers.filter(([n]) => n.toLowerCase() !== "expect");
      this.state = { t: "fixed-buffer", left: length, parts: [], head };
    } else {
      out.push(serializeHead(head));
      if (length > 0) this.state = { t: "fixed", left: length };
      else this.messageDone();
    }
    return true;
  }

  private decider(head: RequestHead): Decide {
    const ctx = this.ctx;
    const hostOk = head === this.lastHead ? this.lastHostOk : false;
    const shown = this.lastHostShown;
    const pass = ctx.onDisallowed === "pass";
    return (s: Secret) => {
      let reason: string | undefined;
      if (!hostAllowed(s.allow, ctx.serverName)) reason = `secret ${s.name} is not allowed for host ${ctx.serverName}`;
      else if (!hostOk) reason = `secret ${s.name}: request Host ${JSON.stringify(shown.slice(0, 255))} does not match TLS server name ${ctx.serverName}`;
      else if (!ctx.destPinned) reason = `secret ${s.name}: destination address was not resolved by this sandbox for ${ctx.serverName}`;
      if (!reason) return { ok: true };
      // "pass": leave the placeholder as it is (it is not the secret).
      return { ok: false, reason, leave: pass };
    };
  }

  private logLast(used: string[]) {
    const l = this.log[this.log.length - 1];
    if (l) for (const u of used) if (!l.substituted.includes(u)) l.substituted.push(u);
  }

  private messageDone() {
    // After an Upgrade request the bytes belong to another protocol: relayed as they are.
    this.state = this.upgradeAfter ? { t: "tunnel" } : { t: "head" };
  }

  private refuse(reason: string): never {
    throw new StopSignal({ kind: "refuse", status: 400, reason });
  }

  private block(reason: string): never {
    throw new StopSignal({ kind: "block", status: 403, reason });
  }
}

class StopSignal {
  constructor(readonly stop: Stop) {}
}

/** Host field (or absolute-form authority) equals the TLS server name, and the port if given. */
export function hostMatches(hostField: string, serverName: string, port: number): boolean {
  const m = hostField.trim().match(/^(\[[0-9a-fA-F:.]+\]|[^:\[\]]+)(?::([0-9]{1,5}))?$/);
  if (!m) return false;
  let h = m[1]!.toLowerCase();
  if (h.startsWith("[")) h = h.slice(1, -1);
  if (h.endsWith(".")) h = h.slice(0, -1);
  if (h !== serverName.toLowerCase()) return false;
  return m[2] === undefined || Number(m[2]) === port;
}

/**
 * Offset just past the blank line ending a head, "bad" on a bare CR or LF (a line end two
 * parsers might disagree on), or where to resume once more bytes are there.
 */
function findHeadEnd(b: Buffer, from: number): number | "bad" | { more: number } {
  let lineStart = from;
  for (let i = from; i < b.length; i++) {
    const c = b[i]!;
    if (c === 0x0a) return "bad";
    if (c !== 0x0d) continue;
    if (i + 1 >= b.length) return { more: lineStart };
    if (b[i + 1] !== 0x0a) return "bad";
    if (i === lineStart) return i + 2;
    i++;
    lineStart = i + 1;
  }
  return { more: lineStart };
}

/**
 * Bytes received but not yet parsed. Appends never write over bytes already handed out (outputs
 * may still reference them), so growth always copies into fresh memory. Takes ownership of the
 * chunks it is given.
 */
class ByteQueue {
  private store: Buffer = Buffer.alloc(0);
  private start = 0;
  private end = 0;

  get view(): Buffer {
    return this.store.subarray(this.start, this.end);
  }

  append(c: Uint8Array) {
    if (this.start === this.end) {
      this.store = Buffer.from(c.buffer, c.byteOffset, c.byteLength);
      this.start = 0;
      this.end = c.byteLength;
      return;
    }
    if (this.end + c.byteLength > this.store.length) {
      const len = this.end - this.start;
      const next = Buffer.allocUnsafe(Math.max(2 * (len + c.byteLength), 4096));
      this.store.copy(next, 0, this.start, this.end);
      this.store = next;
      this.start = 0;
      this.end = len;
    }
    this.store.set(c, this.end);
    this.end += c.byteLength;
  }

  consume(n: number) {
    this.start += n;
  }

  clear() {
    this.store = Buffer.alloc(0);
    this.start = this.end = 0;
  }
}

function parseFields(lines: string[], refuse: (r: string) => never): [string, string][] {
  const out: [string, string][] = [];
  for (const line of lines) {
    if (line.startsWith(" ") || line.startsWith("\t")) refuse("obsolete line folding in a header field");
    const c = line.indexOf(":");
    if (c <= 0) refuse("header line without a field name");
    const name = line.slice(0, c);
    if (!TOKEN.test(name)) refuse("header field name is not a token (no spaces before the colon)");
    const value = line.slice(c + 1).replace(/^[ \t]+|[ \t]+$/g, "");
    if (!FIELD_VALUE.test(value)) refuse(`control character in header field ${name.slice(0, 64)}`);
    out.push([name, value]);
  }
  return out;
}

function getAll(headers: [string, string][], name: string): string[] {
  return headers.filter(([n]) => n.toLowerCase() === name).map(([, v]) => v);
}

function setHeader(headers: [string, string][], name: string, value: string) {
  for (const h of headers) if (h[0].toLowerCase() === name) h[1] = value;
}

function serializeHead(h: RequestHead): Buffer {
  let s = `${h.method} ${h.target} HTTP/1.${h.version}\r\n`;
  for (const [n, v] of h.headers) s += `${n}: ${v}\r\n`;
  return Buffer.from(s + "\r\n", "latin1");
}

function chunkOf(data: Buffer): Buffer {
  return Buffer.concat([Buffer.from(data.length.toString(16) + "\r\n"), data, CRLF]);
}

/** Header value substitution, including placeholders inside `Basic` credentials' base64. */
export function substituteHeader(name: string, value: string, set: SecretSet, decide: Decide) {
  const lower = name.toLowerCase();
  if (lower === "authorization" || lower === "proxy-authorization") {
    const m = value.match(/^(basic)([ \t]+)([A-Za-z0-9+/]+={0,2})$/i);
    if (m) {
      const decoded = Buffer.from(m[3]!, "base64").toString("latin1");
      if (Buffer.from(decoded, "latin1").toString("base64").replace(/=+$/, "") === m[3]!.replace(/=+$/, "")) {
        const r = substitute(decoded, set, decide, "raw");
        if (r.blocked || r.used.length) return { text: r.blocked ? value : `${m[1]}${m[2]}${Buffer.from(r.text, "latin1").toString("base64")}`, used: r.used, blocked: r.blocked };
      }
    }
  }
  return substitute(value, set, decide, "raw");
}
