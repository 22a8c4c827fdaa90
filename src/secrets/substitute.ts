// The placeholder rules: which secrets exist, what a placeholder looks like, which host may
// receive which secret, and the text substitution itself (whole strings and streams). Works on
// latin1 strings so every byte of the wire maps to one character and back unchanged.

import { MsbError } from "../errors.ts";

/**
 * A secret as the supervisor holds it. `value` lives in supervisor memory only: never logged,
 * never put in an error, never stored, never sent to the guest.
 */
export interface Secret {
  /** Environment variable name in the guest; the guest sees NAME=$MSB_NAME. */
  name: string;
  value: string;
  /** Host names that may receive the value: exact ("api.example.com") or "*.example.com" (subdomains, not the apex). */
  allow: string[];
  /** Also substitute in the request-target (path and query). Default: headers only. */
  query?: boolean;
  /** Also substitute in request bodies (Content-Length bodies are buffered, see http1.ts). */
  body?: boolean;
}

/** `$MSB_` + NAME. NAME is [A-Z_][A-Z0-9_]* so it is a valid environment variable name. */
export const PLACEHOLDER_PREFIX = "$MSB_";
export const SECRET_NAME = /^[A-Z_][A-Z0-9_]{0,127}$/;

/**
 * A placeholder token: `$MSB_` or its percent-encoded form `%24MSB_`, then the longest run of
 * [A-Za-z0-9_]. The token ends at the first other character, so `$MSB_KEY_2` is never read as
 * `$MSB_KEY` followed by `_2`. A token naming no configured secret is left alone.
 */
const TOKEN = /(\$|%24)MSB_([A-Za-z0-9_]+)/g;

export function placeholder(name: string): string {
  return PLACEHOLDER_PREFIX + name;
}

export class SecretError extends MsbError {}

/** Checks a secret's shape; the message names the secret, never its value. */
export function validateSecret(s: Secret): void {
  if (!SECRET_NAME.test(s.name)) throw new SecretError("secret-name", `Secret name ${JSON.stringify(s.name.slice(0, 64))} is not valid: use A-Z, 0-9 and _, not starting with a digit.`);
  if (s.value.length === 0) throw new SecretError("secret-empty", `Secret ${s.name} has an empty value; set it in the host environment.`);
  if (/[\0\r\n]/.test(s.value)) throw new SecretError("secret-value", `Secret ${s.name} contains NUL, CR or LF, which cannot be put in an HTTP header; remove them.`);
  if (s.value.includes("MSB_")) throw new SecretError("secret-value", `Secret ${s.name}'s value contains "MSB_", which would be read as a placeholder; such values are not supported.`);
  if (s.allow.length === 0) throw new SecretError("secret-allow", `Secret ${s.name} allows no host; give at least one host name it may be sent to.`);
  for (const h of s.allow) {
    if (!/^(\*\.)?[a-z0-9_]([a-z0-9_.-]*[a-z0-9_])?$/i.test(h) || h.includes("..")) throw new SecretError("secret-allow", `Secret ${s.name}: allowed host ${JSON.stringify(h.slice(0, 80))} is not a host name or *.domain pattern.`);
  }
}

/** True when `host` (a TLS server name) matches one of `patterns`. */
export function hostAllowed(patterns: readonly string[], host: string): boolean {
  const h = host.toLowerCase().replace(/\.$/, "");
  for (const raw of patterns) {
    const p = raw.toLowerCase().replace(/\.$/, "");
    if (p.startsWith("*.")) {
      if (h.endsWith(p.slice(1)) && h.length > p.length - 1) return true;
    } else if (h === p) return true;
  }
  return false;
}

/** The secrets of one sandbox, by name. */
export class SecretSet {
  readonly byName = new Map<string, Secret>();
  /** Longest placeholder token length worth holding back in a stream. */
  readonly maxToken: number;
  readonly anyBody: boolean;
  readonly anyQuery: boolean;

  constructor(secrets: readonly Secret[]) {
    for (const s of secrets) {
      validateSecret(s);
      if (this.byName.has(s.name)) throw new SecretError("secret-duplicate", `Secret ${s.name} is given twice.`);
      this.byName.set(s.name, s);
    }
    this.maxToken = 3 + "MSB_".length + Math.max(0, ...[...this.byName.keys()].map((n) => n.length)) + 1;
    this.anyBody = secrets.some((s) => s.body);
    this.anyQuery = secrets.some((s) => s.query);
  }

  get size(): number {
    return this.byName.size;
  }
}

/** What to do with a placeholder of `secret` in this request: put the value in, block, or leave it. */
export type Decide = (secret: Secret) => { ok: true } | { ok: false; reason: string; leave?: boolean };

/** How the value is written where the placeholder was. */
export type Encoding = "raw" | "percent";

export interface SubstResult {
  text: string;
  used: string[];
  /** Set when a placeholder may not be sent here: the whole request must be blocked. */
  blocked?: string;
}

/** UTF-8 bytes of `value` as a latin1 string (one char per byte), or percent-encoded. */
export function encodeValue(value: string, enc: Encoding): string {
  return enc === "percent" ? encodeURIComponent(value) : Buffer.from(value, "utf8").toString("latin1");
}

/**
 * Replaces the placeholders in `text`. `raw` says how a `$MSB_X` is replaced ("percent" where
 * the text is a URL); `%24MSB_X` is always replaced percent-encoded. `scope` filters secrets that
 * are substituted here; a secret outside the scope is left as the placeholder, but still blocked
 * if this host may not have it (a placeholder to a foreign host is a leak attempt either way).
 */
export function substitute(text: string, set: SecretSet, decide: Decide, raw: Encoding, scope: (s: Secret) => boolean = () => true): SubstResult {
  const used: string[] = [];
  let blocked: string | undefined;
  if (!text.includes("MSB_")) return { text, used };
  const out = text.replace(TOKEN, (m, pre: string, name: string) => {
    const s = set.byName.get(name);
    if (!s || blocked) return m;
    const d = decide(s);
    if (!d.ok) {
      // `leave`: send the placeholder itself (policy "pass"); it is not the secret.
      if (!d.leave) blocked = d.reason;
      return m;
    }
    if (!scope(s)) return m;
    used.push(name);
    return encodeValue(s.value, pre === "$" ? raw : "percent");
  });
  return blocked ? { text, used: [], blocked } : { text: out, used };
}

/** True when `tail` could be the start of a placeholder token that more bytes would complete. */
function couldContinue(tail: string): boolean {
  for (const head of ["$MSB_", "%24MSB_"]) {
    if (tail.length <= head.length) {
      if (head.startsWith(tail)) return true;
    } else if (tail.startsWith(head) && /^[A-Za-z0-9_]*$/.test(tail.slice(head.length))) return true;
  }
  return false;
}

/**
 * Substitution over a stream cut at arbitrary points (HTTP chunks, TCP segments): the end of each
 * piece that could still grow into a placeholder is held back until the next piece or the end.
 */
export class StreamSubstituter {
  private pending = "";
  readonly used = new Set<string>();
  blocked?: string;

  constructor(
    private set: SecretSet,
    private decide: Decide,
    private scope: (s: Secret) => boolean,
  ) {}

  /** Text that can be sent now. */
  push(piece: string): string {
    const s = this.pending + piece;
    let hold = s.length;
    for (let i = Math.max(0, s.length - this.set.maxToken); i < s.length; i++) {
      const c = s.charCodeAt(i);
      if ((c === 0x24 || c === 0x25) && couldContinue(s.slice(i))) {
        hold = i;
        break;
      }
    }
    this.pending = s.slice(hold);
    return this.run(s.slice(0, hold));
  }

  /** The held-back rest, at the end of the stream. */
  end(): string {
    const s = this.pending;
    this.pending = "";
    return this.run(s);
  }

  private run(s: string): string {
    const r = substitute(s, this.set, this.decide, "raw", this.scope);
    for (const u of r.used) this.used.add(u);
    if (r.blocked) this.blocked ??= r.blocked;
    return r.text;
  }
}
