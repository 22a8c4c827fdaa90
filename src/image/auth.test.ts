import { afterAll, beforeAll, expect, test } from "bun:test";
import { chmodSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { findCredentials, registryKey, saveCredentials } from "./auth.ts";

let dir: string;
const saved = { DOCKER_CONFIG: process.env.DOCKER_CONFIG, PATH: process.env.PATH };
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), "msb-auth-test-"));
  process.env.DOCKER_CONFIG = join(dir, "docker");
  mkdirSync(process.env.DOCKER_CONFIG);
  // A credential helper at the edge: a shell script speaking docker's helper protocol.
  mkdirSync(join(dir, "bin"));
  writeFileSync(join(dir, "bin/docker-credential-fake"), `#!/bin/sh\nread server\ncase "$server" in\n  ghcr.io) echo '{"ServerURL":"ghcr.io","Username":"helper-user","Secret":"helper-secret"}';;\n  *) echo "credentials not found in native keychain"; exit 1;;\nesac\n`);
  chmodSync(join(dir, "bin/docker-credential-fake"), 0o755);
  process.env.PATH = `${join(dir, "bin")}:${process.env.PATH}`;
});
afterAll(() => {
  for (const [k, v] of Object.entries(saved)) {
    if (v === undefined) delete process.env[k];
    else process.env[k] = v;
  }
  rmSync(dir, { recursive: true, force: true });
});

test("auths keys are normalised (Docker Hub's legacy URL, schemes, paths)", () => {
  expect(registryKey("https://index.docker.io/v1/")).toBe("docker.io");
  expect(registryKey("registry-1.docker.io")).toBe("docker.io");
  expect(registryKey("http://localhost:5000/v2/")).toBe("localhost:5000");
});

test("docker config: auth (base64) and username/password forms; credHelpers; msb login wins", () => {
  writeFileSync(join(process.env.DOCKER_CONFIG!, "config.json"), JSON.stringify({
    auths: {
      "https://index.docker.io/v1/": { auth: Buffer.from("hubuser:hub:pass").toString("base64") },
      "localhost:5000": { username: "u", password: "p" },
    },
    credHelpers: { "ghcr.io": "fake" },
  }));
  const home = join(dir, "home");
  expect(findCredentials("docker.io", home)).toEqual({ username: "hubuser", password: "hub:pass" });
  expect(findCredentials("localhost:5000", home)).toEqual({ username: "u", password: "p" });
  expect(findCredentials("ghcr.io", home)).toEqual({ username: "helper-user", password: "helper-secret" });
  expect(findCredentials("quay.io", home)).toBeUndefined();
  saveCredentials("docker.io", { username: "mine", password: "x" }, home);
  expect(findCredentials("docker.io", home)).toEqual({ username: "mine", password: "x" });
});

test("a credsStore that has nothing for the registry falls back to auths", () => {
  writeFileSync(join(process.env.DOCKER_CONFIG!, "config.json"), JSON.stringify({
    credsStore: "fake",
    auths: { "quay.io": { auth: Buffer.from("q:r").toString("base64") } },
  }));
  expect(findCredentials("quay.io", join(dir, "home2"))).toEqual({ username: "q", password: "r" });
  expect(findCredentials("ghcr.io", join(dir, "home2"))).toEqual({ username: "helper-user", password: "helper-secret" });
});
