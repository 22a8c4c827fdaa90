import { describe, expect, test } from "bun:test";
import { mkdtempSync, readFileSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { caDir, loadOrCreateCa } from "./ca.ts";
import { LEAF_BACKDATE_MS, LeafIssuer } from "./leaf.ts";
import { x509 } from "./x509.ts";

const bun = process.execPath;

describe("msb CA", () => {
  test("is created once per home with a 0600 key and a readable cert, then loaded", async () => {
    const home = mkdtempSync(join(tmpdir(), "msb-ca-"));
    try {
      const ca = await loadOrCreateCa(home);
      const dir = caDir(home);
      expect(statSync(join(dir, "ca.key")).mode & 0o777).toBe(0o600);
      expect(statSync(join(dir, "ca.pem")).mode & 0o777).toBe(0o644);
      expect(ca.cert.subject).toContain("msb");
      const bc = ca.cert.getExtension(x509.BasicConstraintsExtension);
      expect(bc?.ca).toBe(true);
      expect(readFileSync(join(dir, "ca.pem"), "utf8")).toBe(ca.certPem);
      // A second process loads the same CA rather than making a new one.
      const p = Bun.spawnSync([bun, "-e", `import {loadOrCreateCa} from ${JSON.stringify(join(import.meta.dir, "ca.ts"))}; console.log((await loadOrCreateCa(${JSON.stringify(home)})).cert.serialNumber)`]);
      expect(p.stdout.toString().trim()).toBe(ca.cert.serialNumber);
    } finally {
      rmSync(home, { recursive: true, force: true });
    }
  });

  test("two processes creating at once end with one CA", async () => {
    const home = mkdtempSync(join(tmpdir(), "msb-ca-race-"));
    try {
      const script = `import {loadOrCreateCa} from ${JSON.stringify(join(import.meta.dir, "ca.ts"))}; console.log((await loadOrCreateCa(${JSON.stringify(home)})).cert.serialNumber)`;
      const procs = [0, 1, 2].map(() => Bun.spawn([bun, "-e", script], { stdout: "pipe" }));
      const serials = await Promise.all(procs.map(async (p) => (await new Response(p.stdout).text()).trim()));
      expect(serials[0]).toMatch(/^[0-9a-f]+$/);
      expect(new Set(serials).size).toBe(1);
      expect(readFileSync(join(caDir(home), "ca.pem"), "utf8")).toContain("BEGIN CERTIFICATE");
    } finally {
      rmSync(home, { recursive: true, force: true });
    }
  });
});

describe("leaf certificates", () => {
  test("per name, cached, back-dated, signed by the CA, with dNSName or iPAddress SAN", async () => {
    const home = mkdtempSync(join(tmpdir(), "msb-leaf-"));
    try {
      const ca = await loadOrCreateCa(home);
      const issuer = new LeafIssuer(ca);
      const a = await issuer.get("API.Example.com.");
      expect(await issuer.get("api.example.com")).toBe(a);
      const cert = new x509.X509Certificate(a.certPem);
      expect(await cert.verify({ publicKey: ca.cert.publicKey, signatureOnly: true })).toBe(true);
      expect(cert.notBefore.getTime()).toBeLessThan(Date.now() - LEAF_BACKDATE_MS + 60_000);
      expect(cert.notAfter.getTime()).toBeGreaterThan(Date.now());
      const san = cert.getExtension(x509.SubjectAlternativeNameExtension)!;
      expect(san.names.toJSON()).toEqual([{ type: "dns", value: "api.example.com" }]);
      const ip = new x509.X509Certificate((await issuer.get("10.0.0.7")).certPem);
      expect(ip.getExtension(x509.SubjectAlternativeNameExtension)!.names.toJSON()).toEqual([{ type: "ip", value: "10.0.0.7" }]);
      await expect(issuer.get("bad name/../x")).rejects.toThrow("not a valid host name");
      await expect(issuer.get("a".repeat(300))).rejects.toThrow("not a valid host name");
      // openssl agrees the chain is valid for the name.
      const dir = mkdtempSync(join(tmpdir(), "msb-leaf-v-"));
      await Bun.write(join(dir, "leaf.pem"), a.certPem);
      await Bun.write(join(dir, "ca.pem"), ca.certPem);
      const v = Bun.spawnSync(["openssl", "verify", "-CAfile", join(dir, "ca.pem"), "-verify_hostname", "api.example.com", join(dir, "leaf.pem")]);
      expect(v.stdout.toString() + v.stderr.toString()).toContain("OK");
      rmSync(dir, { recursive: true, force: true });
    } finally {
      rmSync(home, { recursive: true, force: true });
    }
  });
});
