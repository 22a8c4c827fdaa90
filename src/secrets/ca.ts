// The certificate authority the guest trusts so the supervisor can terminate its TLS: one per
// MSB_HOME, created on first use, stored as MSB_HOME/tls/ca/{ca.pem (0644), ca.key (0600)}.

import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { MsbError } from "../errors.ts";
import { msbHome } from "../paths.ts";
import { EC_ALG, fromPem, randomSerial, toPem, x509 } from "./x509.ts";

export interface CertificateAuthority {
  /** PEM of the CA certificate: what the guest adds to its trust bundles. */
  certPem: string;
  /** PEM (PKCS#8) of the CA private key. Never leaves the host. */
  keyPem: string;
  cert: InstanceType<typeof x509.X509Certificate>;
  privateKey: CryptoKey;
  /** Directory holding ca.pem and ca.key. */
  dir: string;
}

export const CA_SUBJECT = "CN=msb sandbox interception CA, O=msb";
/** Ten years: the CA is local to one MSB_HOME; rotating it means re-trusting it in every image. */
const CA_VALIDITY_MS = 10 * 365 * 24 * 3600_000;

export function caDir(home = msbHome()): string {
  return join(home, "tls", "ca");
}

const loaded = new Map<string, Promise<CertificateAuthority>>();

/**
 * The CA of `home` (default MSB_HOME), created if missing. Safe when several processes call it
 * at once: each builds its CA in a private temp directory and renames that directory into place;
 * rename onto an existing non-empty directory fails, so exactly one wins and the others read it.
 */
export function loadOrCreateCa(home = msbHome()): Promise<CertificateAuthority> {
  const dir = caDir(home);
  let p = loaded.get(dir);
  if (!p) {
    p = loadOrCreate(dir);
    p.catch(() => loaded.delete(dir));
    loaded.set(dir, p);
  }
  return p;
}

async function loadOrCreate(dir: string): Promise<CertificateAuthority> {
  if (existsSync(join(dir, "ca.pem"))) return readCa(dir);
  const parent = join(dir, "..");
  mkdirSync(parent, { recursive: true, mode: 0o700 });
  const tmp = mkdtempSync(join(parent, ".ca-tmp-"));
  try {
    const { certPem, keyPem } = await generateCa();
    writeFileSync(join(tmp, "ca.key"), keyPem, { mode: 0o600 });
    chmodSync(join(tmp, "ca.key"), 0o600);
    writeFileSync(join(tmp, "ca.pem"), certPem, { mode: 0o644 });
    chmodSync(tmp, 0o755);
    try {
      renameSync(tmp, dir);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code !== "ENOTEMPTY" && code !== "EEXIST") throw e;
      // Another process won the race; its CA is the one.
    }
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
  return readCa(dir);
}

async function readCa(dir: string): Promise<CertificateAuthority> {
  const certFile = join(dir, "ca.pem");
  const keyFile = join(dir, "ca.key");
  let certPem: string, keyPem: string;
  try {
    certPem = readFileSync(certFile, "utf8");
    keyPem = readFileSync(keyFile, "utf8");
  } catch (e) {
    throw new MsbError("ca-unreadable", `The msb CA in ${dir} cannot be read (${(e as Error).message}); remove ${dir} to make a new one (sandboxes must then be restarted to trust it).`, { cause: e });
  }
  try {
    const cert = new x509.X509Certificate(certPem);
    const privateKey = await crypto.subtle.importKey("pkcs8", fromPem(keyPem, "PRIVATE KEY"), EC_ALG, false, ["sign"]);
    return { certPem, keyPem, cert, privateKey, dir };
  } catch (e) {
    throw new MsbError("ca-corrupt", `The msb CA in ${dir} is corrupt (${(e as Error).message}); remove ${dir} to make a new one (sandboxes must then be restarted to trust it).`, { cause: e });
  }
}

async function generateCa(): Promise<{ certPem: string; keyPem: string }> {
  const keys = (await crypto.subtle.generateKey(EC_ALG, true, ["sign", "verify"])) as CryptoKeyPair;
  const now = Date.now();
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: randomSerial(),
    name: CA_SUBJECT,
    notBefore: new Date(now - 24 * 3600_000),
    notAfter: new Date(now + CA_VALIDITY_MS),
    signingAlgorithm: EC_ALG,
    keys,
    extensions: [
      new x509.BasicConstraintsExtension(true, 0, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
    ],
  });
  const pkcs8 = await crypto.subtle.exportKey("pkcs8", keys.privateKey);
  return { certPem: cert.toString("pem") + "\n", keyPem: toPem("PRIVATE KEY", pkcs8) };
}
