// Published-port spec parsing: defaults, explicit addresses, IPv6 brackets, protocols, and errors that say what is wrong.
import { expect, test } from "bun:test";
import { PortSpecError, parsePortSpec } from "./ports";

test("port specs: default loopback bind, explicit address, IPv6 in brackets, udp", () => {
  expect(parsePortSpec("8080:80")).toEqual({ hostIp: "127.0.0.1", hostPort: 8080, guestPort: 80, proto: "tcp" });
  expect(parsePortSpec("0.0.0.0:5353:53/udp")).toEqual({ hostIp: "0.0.0.0", hostPort: 5353, guestPort: 53, proto: "udp" });
  expect(parsePortSpec("[::1]:8443:443/tcp")).toEqual({ hostIp: "::1", hostPort: 8443, guestPort: 443, proto: "tcp" });
});

test("bad specs say what is wrong", () => {
  expect(() => parsePortSpec("80")).toThrow(PortSpecError);
  expect(() => parsePortSpec("8080:0")).toThrow(/guest port "0"/);
  expect(() => parsePortSpec("70000:80")).toThrow(/host port/);
  expect(() => parsePortSpec("8080:80/sctp")).toThrow(/sctp/);
  expect(() => parsePortSpec("localhost:8080:80")).toThrow(/not an IP address/);
});
