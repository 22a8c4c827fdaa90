// Malformed-input and round-trip tests for address.ts (truncated, bad lengths, bad checksums, option overruns).
import { describe, expect, test } from "bun:test";
import { parseIpv4, parseIpv6, ipv6ToString, parseCidr, inPrefix } from "./address";
import { code } from "./testing";

describe("addresses", () => {
  test("IPv6 parse/format round-trips and compresses the longest zero run", () => {
    expect(ipv6ToString(parseIpv6("fd6d:7362:0:0:0:0:0:15"))).toBe("fd6d:7362::15");
    expect(ipv6ToString(parseIpv6("::ffff:1.2.3.4"))).toBe("::ffff:102:304");
    expect(ipv6ToString(parseIpv6("::"))).toBe("::");
    expect(code(() => parseIpv6("1::2::3"))).toBe("malformed");
    expect(code(() => parseIpv4("1.2.3.256"))).toBe("malformed");
  });
  test("prefix matching", () => {
    const n = parseCidr("10.0.0.0/8");
    expect(inPrefix(parseIpv4("10.9.9.9"), n.addr, n.prefix)).toBe(true);
    expect(inPrefix(parseIpv4("11.0.0.1"), n.addr, n.prefix)).toBe(false);
  });
});
