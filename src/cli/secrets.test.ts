import { expect, test } from "bun:test";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseInlineSecretFlag, parseSecretFlag, withSecretFlags } from "./secrets";

test("--secret NAME@hosts reads the value from the environment and refuses inline values", () => {
  expect(parseSecretFlag("API_KEY@api.example.com,*.example.org", { API_KEY: "s3cret" })).toEqual({
    name: "API_KEY", value: "s3cret", allow: ["api.example.com", "*.example.org"],
  });
  expect(() => parseSecretFlag("API_KEY@api.example.com", {})).toThrow(/\$API_KEY is not set in this environment/);
  expect(() => parseSecretFlag("API_KEY=s3cret@api.example.com", { API_KEY: "x" })).toThrow(/use --secret-inline NAME=VALUE@HOST/);
  expect(() => parseSecretFlag("API_KEY", { API_KEY: "x" })).toThrow(/name the hosts the secret may go to/);
  expect(() => parseSecretFlag("API_KEY@", { API_KEY: "x" })).toThrow(/name the hosts/);
});

test("--secret-inline NAME=VALUE@hosts keeps an '@' inside the value", () => {
  expect(parseInlineSecretFlag("TOKEN=a@b=c@api.example.com")).toEqual({ name: "TOKEN", value: "a@b=c", allow: ["api.example.com"] });
  expect(() => parseInlineSecretFlag("TOKEN@api.example.com")).toThrow(/expects NAME=VALUE@HOST/);
});

test("secret and TLS flags combine with a config file's options", () => {
  const dir = mkdtempSync(join(tmpdir(), "msb-secrets-flags-"));
  const ca = join(dir, "ca.pem");
  writeFileSync(ca, "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n");
  process.env.MSB_TEST_FLAG_SECRET = "value-from-env";
  try {
    const options = withSecretFlags(
      { secrets: [{ name: "FROM_FILE", allow: ["a.example.com"] }], tls: { bypass: ["pinned.example.com"] } },
      ["--secret", "MSB_TEST_FLAG_SECRET@api.example.com", "--secret-body", "MSB_TEST_FLAG_SECRET", "--tls-bypass=*.internal.example",
        "--tls-ports", "443,8443", "--tls-ca", ca],
    );
    expect(options.secrets).toEqual([
      { name: "FROM_FILE", allow: ["a.example.com"] },
      { name: "MSB_TEST_FLAG_SECRET", value: "value-from-env", allow: ["api.example.com"], body: true },
    ]);
    expect(options.tls?.bypass).toEqual(["pinned.example.com", "*.internal.example"]);
    expect(options.tls?.ports).toEqual([443, 8443]);
    expect(options.tls?.ca?.[0]).toContain("BEGIN CERTIFICATE");
    expect(() => withSecretFlags({}, ["--secret-query", "NOPE"])).toThrow(/no secret named NOPE/);
    expect(() => withSecretFlags({}, ["--tls-ports", "443,x"])).toThrow(/--tls-ports expects ports/);
    expect(() => withSecretFlags({}, ["--tls-ca", join(dir, "missing.pem")])).toThrow(/--tls-ca .*missing\.pem/);
    expect(withSecretFlags({}, [])).toEqual({});
  } finally {
    delete process.env.MSB_TEST_FLAG_SECRET;
  }
});
