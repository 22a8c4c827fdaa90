import { expect, test } from "bun:test";
import { displayReference, formatReference, parseReference } from "./reference.ts";

const D = "sha256:" + "a".repeat(64);

test.each([
  ["python", "docker.io/library/python:latest"],
  ["python:3.12-slim", "docker.io/library/python:3.12-slim"],
  ["library/python", "docker.io/library/python:latest"],
  ["docker.io/python", "docker.io/library/python:latest"],
  ["index.docker.io/library/node:22", "docker.io/library/node:22"],
  ["bitnami/redis", "docker.io/bitnami/redis:latest"],
  ["ghcr.io/org/team/app:v1.2", "ghcr.io/org/team/app:v1.2"],
  ["localhost:5000/x", "localhost:5000/x:latest"],
  ["localhost/x", "localhost/x:latest"],
  ["127.0.0.1:5000/a/b:t", "127.0.0.1:5000/a/b:t"],
  ["123456789.dkr.ecr.us-east-1.amazonaws.com/repo:tag", "123456789.dkr.ecr.us-east-1.amazonaws.com/repo:tag"],
  [`python@${D}`, `docker.io/library/python@${D}`],
  [`python:3@${D}`, `docker.io/library/python:3@${D}`],
  [`localhost:5000/x@${D}`, `localhost:5000/x@${D}`],
  ["[::1]:5000/x", "[::1]:5000/x:latest"],
])("%s → %s", (input, canonical) => {
  expect(formatReference(parseReference(input))).toBe(canonical);
});

test("display form drops docker.io/library", () => {
  expect(displayReference(parseReference("python:3"))).toBe("python:3");
  expect(displayReference(parseReference("bitnami/redis"))).toBe("bitnami/redis:latest");
  expect(displayReference(parseReference("localhost:5000/x"))).toBe("localhost:5000/x:latest");
});

test.each([
  ["", /empty/],
  ["Python", /lowercase/],
  ["python:", /tag/],
  ["python:bad tag", /tag/],
  ["python@sha256:abc", /digest/],
  ["python@md5:" + "a".repeat(32), /digest/],
  ["a//b", /lowercase/],
  ["-x", /lowercase/],
  ["host:99x/y", /registry|tag/],
])("rejects %p", (input, msg) => {
  expect(() => parseReference(input)).toThrow(msg);
});
