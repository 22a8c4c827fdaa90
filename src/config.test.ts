import { expect, test } from "bun:test";
import { parseSandboxOptions, tlsIntercepted } from "./config";

test("defaults fill in what the caller left out", () => {
  const config = parseSandboxOptions({});
  expect(config.cpus).toBe(1);
  expect(config.memoryMiB).toBe(512);
  expect(config.detached).toBe(false);
});

test("errors name the key and the problem", () => {
  expect(() => parseSandboxOptions({ cpus: 0 })).toThrow(/cpus: .*>=1/);
  expect(() => parseSandboxOptions({ name: "../x" })).toThrow(/name: must be 1-63 letters/);
  expect(() => parseSandboxOptions({ workdir: "tmp" })).toThrow(/workdir: must be an absolute path/);
  expect(() => parseSandboxOptions({ memory: 5 } as never)).toThrow(/memory/);
});

test("secrets: names are checked, values are optional (taken at start), names are unique; tls defaults", () => {
  const config = parseSandboxOptions({ secrets: [{ name: "API_KEY", value: "v", allow: ["api.example.com"] }] });
  expect(config.tls).toEqual({ ports: [443], bypass: [], ca: [], onDisallowed: "block" });
  expect(tlsIntercepted(config)).toBe(true);
  expect(tlsIntercepted(parseSandboxOptions({}))).toBe(false);
  expect(tlsIntercepted(parseSandboxOptions({ tls: { intercept: true } }))).toBe(true);
  expect(tlsIntercepted({ ...config, tls: { ...config.tls, intercept: false } })).toBe(false);
  expect(() => parseSandboxOptions({ secrets: [{ name: "api-key", allow: ["a.com"] }] })).toThrow(/secrets\.0\.name: must be A-Z/);
  expect(() => parseSandboxOptions({ secrets: [{ name: "K", allow: [] }] })).toThrow(/secrets\.0\.allow: name at least one host/);
  expect(() => parseSandboxOptions({ secrets: [{ name: "K", allow: ["a"] }, { name: "K", allow: ["b"] }] })).toThrow(/each secret name may appear once/);
  expect(() => parseSandboxOptions({ tls: { ports: [0] } })).toThrow(/tls\.ports\.0/);
  expect(() => parseSandboxOptions({ tls: { ca: ["not a pem"] } })).toThrow(/tls\.ca\.0: must be a PEM certificate/);
});
