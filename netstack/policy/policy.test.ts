// Default egress policy: denied in every spelling, public allowed.
import { expect, test } from "bun:test";
import { parseIp } from "../wire/address";
import { defaultPolicy, isNonPublic } from "./policy";

const d = (ip: string, viaHostAlias = false) => ({ proto: "tcp" as const, ip, ipBytes: parseIp(ip), port: 443, viaHostAlias });

test("non-public IPv4 and IPv6 ranges are denied, including embedded-IPv4 spellings", () => {
  for (const ip of ["127.0.0.1", "10.1.2.3", "172.20.0.1", "192.168.1.1", "169.254.169.254", "100.64.0.1", "0.0.0.0", "224.0.0.1", "255.255.255.255",
    "::1", "::", "fe80::1", "fd00::1", "ff02::1", "::ffff:127.0.0.1", "::ffff:169.254.169.254", "64:ff9b::a9fe:a9fe", "2002:7f00:1::", "::127.0.0.1"])
    expect([ip, isNonPublic(parseIp(ip))]).toEqual([ip, true]);
});

test("public addresses are allowed; the host alias is denied by default", () => {
  for (const ip of ["93.184.216.34", "1.1.1.1", "2606:4700::1111", "::ffff:8.8.8.8"]) expect([ip, defaultPolicy(d(ip))]).toEqual([ip, true]);
  expect(defaultPolicy(d("127.0.0.1", true))).toBe(false);
});
