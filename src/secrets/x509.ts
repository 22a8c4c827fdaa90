// Loads @peculiar/x509 with WebCrypto wired in, after the Reflect shim it needs (tsyringe).

import "../image/reflect-shim.ts";

const mod = await import("@peculiar/x509");
mod.cryptoProvider.set(crypto);

export const x509 = mod;

/** ECDSA P-256 with SHA-256: fast to make and sign, accepted by every TLS client we care about. */
export const EC_ALG = { name: "ECDSA", namedCurve: "P-256", hash: "SHA-256" } as const;

export function toPem(label: string, der: ArrayBuffer | Uint8Array): string {
  const b64 = Buffer.from(der instanceof Uint8Array ? der : new Uint8Array(der)).toString("base64");
  return `-----BEGIN ${label}-----\n${b64.replace(/.{64}/g, "$&\n").replace(/\n$/, "")}\n-----END ${label}-----\n`;
}

export function fromPem(pem: string, label: string): Uint8Array<ArrayBuffer> {
  const m = pem.match(new RegExp(`-----BEGIN ${label}-----([A-Za-z0-9+/=\\s]+)-----END ${label}-----`));
  if (!m) throw new Error(`no ${label} block in PEM`);
  return new Uint8Array(Buffer.from(m[1]!.replace(/\s+/g, ""), "base64"));
}

export function randomSerial(): string {
  const b = crypto.getRandomValues(new Uint8Array(16));
  b[0]! &= 0x7f; // positive INTEGER
  b[0]! |= 0x01; // no leading zero byte to strip
  return Buffer.from(b).toString("hex");
}
