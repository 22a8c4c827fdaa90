// Leaf certificates for intercepted host names, signed by the msb CA on demand and cached in
// memory. All leaves of one issuer share one key pair: signing a certificate takes about a
// millisecond, making an EC key takes longer, and the key never leaves this process anyway.

import { isIP } from "node:net";
import { createSecureContext, type SecureContext } from "node:tls";
import type { CertificateAuthority } from "./ca.ts";
import { EC_ALG, randomSerial, toPem, x509 } from "./x509.ts";

/** Guest clocks may lag (a restored snapshot, no NTP yet): a leaf is valid from a day ago. */
export const LEAF_BACKDATE_MS = 24 * 3600_000;
/** Short-lived: leaves are cheap to remake and are only ever held in memory. */
export const LEAF_VALIDITY_MS = 7 * 24 * 3600_000;
/** Remake a cached leaf this long before it expires. */
const LEAF_RENEW_MS = 24 * 3600_000;
/** Bound on the in-memory cache; the guest picks the names, so it must not grow without limit. */
export const LEAF_CACHE_MAX = 4096;

export interface Leaf {
  name: string;
  certPem: string;
  keyPem: string;
  notAfter: number;
  context: SecureContext;
}

/** Host names are case-insensitive and may end in a dot; an IP literal stays as written. */
export function normalizeName(name: string): string {
  const n = name.toLowerCase();
  return n.endsWith(".") ? n.slice(0, -1) : n;
}

const VALID_DNS = /^(?=.{1,253}$)(\*\.)?([a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9])?)(\.[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9])?)*$/;

export class LeafIssuer {
  private keys?: Promise<{ pair: CryptoKeyPair; pem: string }>;
  private cache = new Map<string, Promise<Leaf>>();

  constructor(readonly ca: CertificateAuthority) {}

  /** The leaf for `name` (a DNS name or IP literal), made now or taken from the cache. */
  async get(rawName: string): Promise<Leaf> {
    const name = normalizeName(rawName);
    if (!isIP(name) && !VALID_DNS.test(name)) throw new Error(`not a valid host name for a certificate: ${JSON.stringify(rawName.slice(0, 80))}`);
    const hit = this.cache.get(name);
    if (hit) {
      const leaf = await hit.catch(() => undefined);
      if (leaf && leaf.notAfter - Date.now() > LEAF_RENEW_MS) {
        // Refresh recency so the cache evicts least recently used names.
        this.cache.delete(name);
        this.cache.set(name, hit);
        return leaf;
      }
      this.cache.delete(name);
    }
    const p = this.make(name);
    this.cache.set(name, p);
    p.catch(() => this.cache.delete(name));
    while (this.cache.size > LEAF_CACHE_MAX) this.cache.delete(this.cache.keys().next().value!);
    return p;
  }

  get size(): number {
    return this.cache.size;
  }

  private sharedKey() {
    this.keys ??= (async () => {
      const pair = (await crypto.subtle.generateKey(EC_ALG, true, ["sign", "verify"])) as CryptoKeyPair;
      return { pair, pem: toPem("PRIVATE KEY", await crypto.subtle.exportKey("pkcs8", pair.privateKey)) };
    })();
    return this.keys;
  }

  private async make(name: string): Promise<Leaf> {
    const { pair, pem } = await this.sharedKey();
    const now = Date.now();
    const notAfter = Math.min(now + LEAF_VALIDITY_MS, this.ca.cert.notAfter.getTime());
    const ip = isIP(name);
    const cert = await x509.X509CertificateGenerator.create({
      serialNumber: randomSerial(),
      subject: ip ? `CN=${name}` : `CN=${name.replace(/^\*\./, "wildcard.")}`,
      issuer: this.ca.cert.subject,
      notBefore: new Date(now - LEAF_BACKDATE_MS),
      notAfter: new Date(notAfter),
      signingAlgorithm: EC_ALG,
      publicKey: pair.publicKey,
      signingKey: this.ca.privateKey,
      extensions: [
        new x509.BasicConstraintsExtension(false, undefined, true),
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
        new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth]),
        new x509.SubjectAlternativeNameExtension([{ type: ip ? "ip" : "dns", value: name }]),
        await x509.AuthorityKeyIdentifierExtension.create(this.ca.cert, false),
      ],
    });
    const certPem = cert.toString("pem") + "\n";
    return { name, certPem, keyPem: pem, notAfter, context: createSecureContext({ key: pem, cert: certPem + this.ca.certPem }) };
  }
}
