import { afterEach, expect, test } from "bun:test";
import { probeKvm } from "./kvm";
import { selectBackend } from "./select";

afterEach(() => {
  delete process.env.MSB_BACKEND;
});

test("an explicit choice wins over MSB_BACKEND and the default", () => {
  process.env.MSB_BACKEND = "native";
  expect(selectBackend("qemu").name).toBe("qemu");
  expect(selectBackend().name).toBe("native");
});

test("the default is native only on hardware KVM", () => {
  expect(selectBackend().name).toBe(probeKvm().kind === "hardware" ? "native" : "qemu");
});

test("a bad MSB_BACKEND is named in the error", () => {
  process.env.MSB_BACKEND = "firecracker";
  expect(() => selectBackend()).toThrow(/MSB_BACKEND must be "qemu" or "native", not "firecracker"/);
});
