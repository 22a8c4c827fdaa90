// Client for the OCI distribution API: manifests and blobs, with the anonymous/credentialed
// bearer-token flow and basic auth driven by WWW-Authenticate, retries with backoff on 5xx, 429
// and network failures, and idle timeouts on bodies. Verification of what comes back is the
// caller's job (see pull.ts), except manifests, which are checked here.

import type { Credentials } from "./auth.ts";
import { ImageError } from "./errors.ts";
import { apiHost } from "./reference.ts";

export const MediaType = {
  OciIndex: "application/vnd.oci.image.index.v1+json",
  OciManifest: "application/vnd.oci.image.manifest.v1+json",
  OciConfig: "application/vnd.oci.image.config.v1+json",
  DockerList: "application/vnd.docker.distribution.manifest.list.v2+json",
  DockerManifest: "application/vnd.docker.distribution.manifest.v2+json",
  DockerConfig: "application/vnd.docker.container.image.v1+json",
  DockerSchema1: "application/vnd.docker.distribution.manifest.v1+prettyjws",
} as const;

export const LAYER_MEDIA_TYPES = new Set([
  "application/vnd.oci.image.layer.v1.tar",
  "application/vnd.oci.image.layer.v1.tar+gzip",
  "application/vnd.oci.image.layer.v1.tar+zstd",
  "application/vnd.oci.image.layer.nondistributable.v1.tar",
  "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
  "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
  "application/vnd.docker.image.rootfs.diff.tar.gzip",
  "application/vnd.docker.image.rootfs.diff.tar",
  "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
]);

const MANIFEST_ACCEPT = [MediaType.OciIndex, MediaType.DockerList, MediaType.OciManifest, MediaType.DockerManifest].join(", ");
export const MAX_MANIFEST_BYTES = 4 << 20;

export interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
  platform?: { os?: string; architecture?: string; variant?: string };
  urls?: string[];
}

export interface RegistryOptions {
  /**
   * Plain HTTP instead of HTTPS. Undefined: plain HTTP only for loopback registries
   * (localhost, 127.0.0.0/8, [::1]), as Docker does.
   */
  insecure?: boolean;
  credentials?: Credentials;
  /** Attempts per request for retryable failures (5xx, 429, network errors, timeouts). */
  attempts?: number;
  /** First backoff delay; doubled each retry, with jitter. */
  backoffMs?: number;
  /** No response headers, or no body bytes, for this long → timeout. */
  timeoutMs?: number;
  userAgent?: string;
}

export interface FetchedManifest {
  digest: string;
  mediaType: string;
  bytes: Uint8Array;
  json: any;
}

export function isLoopbackRegistry(registry: string): boolean {
  const host = registry.replace(/:\d+$/, "").replace(/^\[|\]$/g, "");
  return host === "localhost" || /^127\.\d+\.\d+\.\d+$/.test(host) || host === "::1";
}

interface Challenge {
  scheme: string;
  params: Record<string, string>;
}

/** Parses `Bearer realm="…",service="…",scope="…"` (quoted values may contain commas). */
export function parseChallenge(header: string): Challenge | undefined {
  const m = /^\s*(\w+)\s*(.*)$/s.exec(header);
  if (!m) return undefined;
  const params: Record<string, string> = {};
  const re = /([\w-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^,\s]*))\s*,?/g;
  for (let p; (p = re.exec(m[2]!)); ) params[p[1]!.toLowerCase()] = p[2] !== undefined ? p[2].replace(/\\(.)/g, "$1") : p[3]!;
  return { scheme: m[1]!.toLowerCase(), params };
}

export function sha256Hex(data: Uint8Array): string {
  return new Bun.CryptoHasher("sha256").update(data).digest("hex");
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * One registry, one repository.
 *
 *   const c = new RegistryClient("localhost:5000", "library/busybox");
 *   const m = await c.manifest("latest");
 */
export class RegistryClient {
  private base: string;
  private authHeader?: string;
  private attempts: number;
  private backoffMs: number;
  private timeoutMs: number;
  private pinging = false;

  constructor(readonly registry: string, readonly repository: string, private opts: RegistryOptions = {}) {
    const insecure = opts.insecure ?? isLoopbackRegistry(registry);
    this.base = `${insecure ? "http" : "https"}://${apiHost(registry)}/v2/${repository}`;
    this.attempts = Math.max(1, opts.attempts ?? 4);
    this.backoffMs = opts.backoffMs ?? 500;
    this.timeoutMs = opts.timeoutMs ?? 60_000;
  }

  private where(what: string) {
    return `${this.registry}/${this.repository} ${what}`;
  }

  /** GET with auth negotiation and retries. Returns a 2xx response whose body is unread. */
  async get(path: string, accept: string | undefined, what: string, extra: Record<string, string> = {}): Promise<Response> {
    let authTried = false;
    let lastErr: unknown;
    for (let attempt = 1; attempt <= this.attempts; attempt++) {
      if (attempt > 1) await sleep(this.backoffDelay(attempt, lastErr));
      let res: Response;
      const ctl = new AbortController();
      const timer = setTimeout(() => ctl.abort(new ImageError("TIMEOUT", `${this.where(what)}: no response from the registry within ${this.timeoutMs} ms`)), this.timeoutMs);
      try {
        const headers: Record<string, string> = { ...extra, "user-agent": this.opts.userAgent ?? "msb" };
        if (accept) headers.accept = accept;
        if (this.authHeader) headers.authorization = this.authHeader;
        res = await this.fetchFollowing(this.base + path, headers, ctl.signal);
      } catch (err) {
        clearTimeout(timer);
        lastErr = ctl.signal.aborted ? ctl.signal.reason : new ImageError("NETWORK", `${this.where(what)}: cannot reach ${this.base.split("/v2/")[0]}: ${(err as Error).message}`, { cause: err });
        continue;
      }
      clearTimeout(timer);
      // 416: the range asked for does not fit the blob; the caller then downloads it whole.
      if (res.status === 416 && extra.range) return res;
      if (res.ok) return withIdleTimeout(res, this.timeoutMs, () => new ImageError("TIMEOUT", `${this.where(what)}: the registry stopped sending data for ${this.timeoutMs} ms`));
      await res.body?.cancel().catch(() => {});
      if (res.status === 401 && !authTried) {
        authTried = true;
        await this.authenticate(res.headers.get("www-authenticate"), what);
        attempt--; // the auth round trip does not count as a failed attempt
        continue;
      }
      if (res.status === 401 || res.status === 403)
        throw new ImageError("UNAUTHORIZED", `${this.where(what)}: access denied by the registry (HTTP ${res.status}); ${this.opts.credentials ? "the saved credentials were refused" : "no credentials are saved for " + this.registry + "; use msb login or ~/.docker/config.json"}`);
      if (res.status === 404)
        throw new ImageError("NOT_FOUND", `${this.where(what)}: not found in the registry (HTTP 404); check the image name and tag`);
      if (res.status === 429 || res.status >= 500) {
        const retryAfter = Number(res.headers.get("retry-after"));
        lastErr = new ImageError(res.status === 429 ? "RATE_LIMITED" : "REGISTRY_ERROR", `${this.where(what)}: the registry answered HTTP ${res.status}${res.status === 429 ? " (rate limited)" : ""} ${this.attempts} times; try again later`);
        (lastErr as any).retryAfterMs = Number.isFinite(retryAfter) && retryAfter > 0 ? Math.min(retryAfter * 1000, 30_000) : undefined;
        continue;
      }
      throw new ImageError("REGISTRY_ERROR", `${this.where(what)}: unexpected HTTP ${res.status} from the registry`);
    }
    throw lastErr;
  }

  /**
   * Follows redirects by hand so that credentials never go to another origin: registries send
   * blob downloads to CDNs or presigned S3 URLs, which reject (or would leak) our token.
   */
  private async fetchFollowing(url: string, headers: Record<string, string>, signal: AbortSignal): Promise<Response> {
    let current = new URL(url);
    const origin = current.origin;
    for (let hop = 0; hop <= 5; hop++) {
      const h = { ...headers };
      if (current.origin !== origin) delete h.authorization;
      const res = await fetch(current, { headers: h, signal, redirect: "manual" });
      const location = res.headers.get("location");
      if (res.status < 300 || res.status >= 400 || !location) return res;
      await res.body?.cancel().catch(() => {});
      const next = new URL(location, current);
      if (next.protocol !== "https:" && !(next.protocol === "http:" && current.protocol === "http:"))
        throw new ImageError("REGISTRY_ERROR", `${this.registry}: refusing a redirect from ${current.origin} to ${next.protocol}//${next.host}`);
      current = next;
    }
    throw new ImageError("REGISTRY_ERROR", `${this.registry}: more than 5 redirects for ${url}`);
  }

  private backoffDelay(attempt: number, lastErr: unknown): number {
    const ra = (lastErr as any)?.retryAfterMs;
    if (typeof ra === "number") return ra;
    const base = this.backoffMs * 2 ** (attempt - 2);
    return base / 2 + Math.random() * base;
  }

  private async authenticate(header: string | null, what: string): Promise<void> {
    const ch = header ? parseChallenge(header) : undefined;
    const creds = this.opts.credentials;
    if (ch?.scheme === "basic" || (!ch && creds)) {
      if (!creds)
        throw new ImageError("UNAUTHORIZED", `${this.where(what)}: the registry requires a login; run msb login ${this.registry} (or docker login)`);
      this.authHeader = basic(creds);
      return;
    }
    if (ch?.scheme !== "bearer" || !ch.params.realm)
      throw new ImageError("UNAUTHORIZED", `${this.where(what)}: the registry asked for authentication msb does not support (${header ?? "no WWW-Authenticate header"})`);
    let realm: URL;
    try {
      realm = new URL(ch.params.realm);
    } catch {
      throw new ImageError("UNAUTHORIZED", `${this.where(what)}: the registry's token realm ${JSON.stringify(ch.params.realm)} is not a URL`);
    }
    if (ch.params.service) realm.searchParams.set("service", ch.params.service);
    // A login check (GET /v2/) asks for no repository scope: only whether the account is valid.
    const scope = ch.params.scope ?? (this.pinging ? undefined : `repository:${this.repository}:pull`);
    if (scope) realm.searchParams.set("scope", scope);
    const headers: Record<string, string> = { "user-agent": this.opts.userAgent ?? "msb" };
    if (creds) headers.authorization = basic(creds);
    let res: Response;
    try {
      res = await fetch(realm, { headers, signal: AbortSignal.timeout(this.timeoutMs) });
    } catch (err) {
      throw new ImageError("NETWORK", `${this.where(what)}: cannot reach the token service ${realm.origin}: ${(err as Error).message}`, { cause: err });
    }
    if (!res.ok) {
      await res.body?.cancel().catch(() => {});
      throw new ImageError("UNAUTHORIZED", `${this.where(what)}: the token service ${realm.origin} refused (HTTP ${res.status})${creds ? "; check the saved credentials" : "; the image may be private: run msb login " + this.registry}`);
    }
    const text = await res.text();
    let token: string | undefined;
    try {
      const j = JSON.parse(text);
      token = j.token ?? j.access_token;
    } catch {}
    if (typeof token !== "string" || !token)
      throw new ImageError("UNAUTHORIZED", `${this.where(what)}: the token service ${realm.origin} returned no token`);
    this.authHeader = `Bearer ${token}`;
  }

  /** Checks that the credentials work (for msb login): GET /v2/. */
  async ping(): Promise<void> {
    const saved = this.base;
    this.base = this.base.replace(/\/v2\/.*$/, "/v2");
    this.pinging = true;
    try {
      const res = await this.get("/", undefined, "login");
      await res.body?.cancel().catch(() => {});
    } finally {
      this.base = saved;
      this.pinging = false;
    }
  }

  /** Fetches a manifest or index by tag or digest and checks its digest. */
  async manifest(reference: string): Promise<FetchedManifest> {
    const what = `manifest ${reference}`;
    const res = await this.get(`/manifests/${reference}`, MANIFEST_ACCEPT, what);
    const bytes = await readBounded(res, MAX_MANIFEST_BYTES, () => `${this.where(what)}: manifest larger than ${MAX_MANIFEST_BYTES} bytes`);
    const digest = `sha256:${sha256Hex(bytes)}`;
    if (reference.startsWith("sha256:") && digest !== reference)
      throw new ImageError("DIGEST_MISMATCH", `${this.where(what)}: the registry returned a manifest whose digest is ${digest}`);
    const header = res.headers.get("docker-content-digest");
    if (header && header.startsWith("sha256:") && header !== digest)
      throw new ImageError("DIGEST_MISMATCH", `${this.where(what)}: manifest digest ${digest} does not match the registry's Docker-Content-Digest ${header}`);
    let json: any;
    try {
      json = JSON.parse(new TextDecoder().decode(bytes));
    } catch {
      throw new ImageError("MANIFEST_INVALID", `${this.where(what)}: manifest is not JSON`);
    }
    const mediaType = json.mediaType ?? res.headers.get("content-type")?.split(";")[0]?.trim() ?? "";
    if (mediaType === MediaType.DockerSchema1 || json.schemaVersion === 1)
      throw new ImageError("UNSUPPORTED_MEDIA_TYPE", `${this.where(what)}: Docker schema 1 manifests are not supported; re-push the image with a current Docker or skopeo`);
    return { digest, mediaType, bytes, json };
  }

  /**
   * Streams a blob, or with `from` > 0 asks for the bytes from that offset on (HTTP Range).
   * The caller verifies size and digest while reading, and must check the status: 206 with a
   * matching Content-Range is the rest, 200 is the whole blob (the registry ignored the range),
   * 416 means the range was refused.
   */
  async blob(digest: string, what = `blob ${digest}`, from = 0): Promise<Response> {
    return this.get(`/blobs/${digest}`, undefined, what, from > 0 ? { range: `bytes=${from}-` } : {});
  }
}

function basic(c: Credentials): string {
  return `Basic ${Buffer.from(`${c.username}:${c.password}`).toString("base64")}`;
}

/** Reads a whole body, refusing more than `max` bytes. */
export async function readBounded(res: Response, max: number, tooBig: () => string): Promise<Uint8Array> {
  const len = Number(res.headers.get("content-length"));
  if (Number.isFinite(len) && len > max) {
    await res.body?.cancel().catch(() => {});
    throw new ImageError("MANIFEST_INVALID", tooBig());
  }
  const chunks: Uint8Array[] = [];
  let total = 0;
  for await (const c of res.body as ReadableStream<Uint8Array>) {
    total += c.byteLength;
    if (total > max) throw new ImageError("MANIFEST_INVALID", tooBig());
    chunks.push(c);
  }
  const out = new Uint8Array(total);
  let o = 0;
  for (const c of chunks) { out.set(c, o); o += c.byteLength; }
  return out;
}

/** Wraps a response so that its body errors if no bytes arrive for `ms`. */
function withIdleTimeout(res: Response, ms: number, err: () => Error): Response {
  if (!res.body) return res;
  const reader = res.body.getReader();
  let timer: ReturnType<typeof setTimeout> | undefined;
  const body = new ReadableStream<Uint8Array>({
    async pull(ctl) {
      const r = await Promise.race([
        reader.read(),
        new Promise<never>((_, rej) => { timer = setTimeout(() => rej(err()), ms); }),
      ]).finally(() => clearTimeout(timer));
      if (r.done) ctl.close();
      else ctl.enqueue(r.value);
    },
    cancel(reason) {
      clearTimeout(timer);
      return reader.cancel(reason);
    },
  });
  return new Response(body, { status: res.status, headers: res.headers });
}

/** The first byte offset of a 206 response's `Content-Range: bytes START-END/TOTAL`, if well-formed. */
export function contentRangeStart(res: Response): number | undefined {
  const m = /^bytes (\d+)-(\d+)\/(\d+|\*)$/.exec(res.headers.get("content-range")?.trim() ?? "");
  return m ? Number(m[1]) : undefined;
}

/** Chooses linux/amd64 from an index (manifest list). */
export function selectPlatform(index: any, where: string, os = "linux", arch = "amd64"): Descriptor {
  const manifests: Descriptor[] = Array.isArray(index.manifests) ? index.manifests : [];
  const match = manifests.find((m) => m.platform?.os === os && m.platform?.architecture === arch);
  if (!match) {
    const have = manifests.map((m) => `${m.platform?.os ?? "?"}/${m.platform?.architecture ?? "?"}`).join(", ") || "none";
    throw new ImageError("NO_MATCHING_PLATFORM", `${where}: no ${os}/${arch} image in the index (it has: ${have})`);
  }
  return match;
}
