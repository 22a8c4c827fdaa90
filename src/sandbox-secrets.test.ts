// Secrets through the SDK's lifecycle (qemu backend): values are never written to MSB_HOME, never
// in the supervisor's or the VM's environment, each start needs them again, and the guest sees only
// the placeholder and the msb CA. What the wire carries is src/secrets-run.test.ts's subject.
import { afterAll, describe, expect, test } from "bun:test";
import { mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { MsbError } from "./errors";
import { Sandbox } from "./sandbox";
import { caDir } from "./secrets/ca";
import { getSandboxRecord } from "./state";
import { e2eBackends, removeHome, useTempHome } from "./testing";

const home = useTempHome();
afterAll(() => removeHome(home));

const VALUE = `sk-${crypto.randomUUID()}`;

/** Every file under `dir` whose bytes contain `needle`. */
function filesContaining(dir: string, needle: string): string[] {
  const found: string[] = [];
  for (const entry of readdirSync(dir, { recursive: true, withFileTypes: true })) {
    if (!entry.isFile()) continue;
    const path = join(entry.parentPath, entry.name);
    if (statSync(path).size > 64 << 20) continue;
    if (readFileSync(path).includes(needle)) found.push(path);
  }
  return found;
}

test("the disk scan finds a value where there is one (so its empty answers below mean something)", () => {
  const dir = join(home, "scan-control");
  mkdirSync(join(dir, "deep"), { recursive: true });
  writeFileSync(join(dir, "deep", "x.bin"), Buffer.concat([Buffer.alloc(1000), Buffer.from(VALUE), Buffer.alloc(10)]));
  expect(filesContaining(home, VALUE)).toEqual([join(dir, "deep", "x.bin")]);
  rmSync(dir, { recursive: true });
});

test("a secret without a value, given or in the environment, fails before anything is recorded", async () => {
  const error = await Sandbox.create({ secrets: [{ name: "MSB_TEST_UNSET_SECRET", allow: ["api.example.com"] }] }).catch((e) => e);
  expect(error).toBeInstanceOf(MsbError);
  expect((error as MsbError).code).toBe("secret_missing");
  expect((error as Error).message).toContain("MSB_TEST_UNSET_SECRET");
  expect(await Sandbox.list()).toEqual([]);
});

test("a bad value is refused naming the secret, never echoing the value", async () => {
  const bad = "line1\nline2-do-not-echo";
  const error = await Sandbox.create({ secrets: [{ name: "BAD", value: bad, allow: ["api.example.com"] }] }).catch((e) => e);
  expect((error as Error).message).toContain("BAD");
  expect((error as Error).message).not.toContain("do-not-echo");
  expect(await Sandbox.list()).toEqual([]);
});

for (const { backend, skip } of await e2eBackends()) describe.skipIf(skip !== undefined)(`secrets across a sandbox's life on ${backend}${skip ? ` (skipped: ${skip})` : ""}`, () => {
  test("the guest sees the placeholder and trusts the msb CA; no value on disk or in process environments; restart needs the value", async () => {
    const name = `sec-${backend}`;
    const sandbox = await Sandbox.create({ name, backend, secrets: [{ name: "API_KEY", value: VALUE, allow: ["api.example.com"] }] });
    try {
      const env = await sandbox.shell('echo "$API_KEY"; echo "$SSL_CERT_FILE $REQUESTS_CA_BUNDLE $CURL_CA_BUNDLE $NODE_EXTRA_CA_CERTS"; cat /etc/msb/ca.pem');
      const [placeholderLine, trustLine, ...pem] = env.stdout.split("\n");
      expect(placeholderLine).toBe("$MSB_API_KEY");
      expect(trustLine).toBe("/etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt /etc/msb/ca.pem");
      expect(pem.join("\n").trim()).toBe(readFileSync(join(caDir(), "ca.pem"), "utf8").trim());
      // The CA's key never goes to the guest.
      expect((await sandbox.shell("grep -rl 'PRIVATE KEY' /etc 2>/dev/null; true")).stdout).toBe("");

      const record = getSandboxRecord(name);
      expect(record.config.secrets).toEqual([{ name: "API_KEY", allow: ["api.example.com"] }]);
      const pids = [record.supervisorPid, record.vmPid].filter((p): p is number => typeof p === "number");
      expect(pids.length).toBe(2);
      for (const pid of pids) expect(readFileSync(`/proc/${pid}/environ`).includes(VALUE)).toBe(false);
      expect(filesContaining(home, VALUE)).toEqual([]);
    } finally {
      await sandbox.stop();
    }
    expect(filesContaining(home, VALUE)).toEqual([]);

    const error = await Sandbox.start(name).catch((e) => e);
    expect((error as MsbError).code).toBe("secret_missing");
    expect((error as Error).message).toContain("API_KEY");
    expect(getSandboxRecord(name).status).toBe("stopped");

    const again = await Sandbox.start(name, { secrets: { API_KEY: VALUE } });
    try {
      expect((await again.shell('echo "$API_KEY"; grep -c "BEGIN CERTIFICATE" /etc/msb/ca.pem')).stdout).toBe("$MSB_API_KEY\n1\n");
    } finally {
      await again.stop();
    }
    await Sandbox.remove(name);
  }, 120_000);
});
