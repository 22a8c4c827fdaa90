// The rule model: the compact syntax (and its errors), the object form, first-match order, the
// public preset in every address spelling, names and answers for DNS.
import { describe, expect, test } from "bun:test";
import { parseIp } from "../wire/address";
import { compilePolicy, parseRule, PolicyError, ruleFromInput, ruleInputSchema, type FlowQuery } from "./rules";

const HOST = ["192.168.77.5", "203.0.113.200", "2001:db8:77::5", "127.0.0.1", "::1", "44.1.2.3"];
const pub = compilePolicy({ hostAddresses: HOST });
const q = (ip: string, port = 443, proto: FlowQuery["proto"] = "tcp", extra: Partial<FlowQuery> = {}): FlowQuery =>
  ({ proto, ip: parseIp(ip), port, ...extra });

describe("parseRule", () => {
  test("the documented forms parse to their canonical text", () => {
    const cases: Array<[string, string]> = [
      ["tcp:api.example.com:443", "allow tcp:api.example.com:443"],
      ["cidr:10.1.0.0/16", "allow 10.1.0.0/16"],
      ["group:private", "allow group:private"],
      ["udp:*.example.org:1000-2000", "allow udp:*.example.org:1000-2000"],
      ["ip:1.2.3.4", "allow 1.2.3.4"],
      ["1.2.3.4:80,443", "allow 1.2.3.4:80,443"],
      ["tcp:[2001:db8::1]:22", "allow tcp:[2001:db8::1]:22"],
      ["ip:2001:db8::1", "allow [2001:db8::1]"],
      ["cidr:[fd00::]/8", "allow [fd00::]/8"],
      ["fd00::/8", "allow [fd00::]/8"],
      ["icmp:8.8.8.8", "allow icmp:8.8.8.8"],
      ["any", "allow any"],
      ["*", "allow any"],
      ["API.Example.COM.", "allow api.example.com"],
      ["domain:private", "allow private"],
      ["ingress:tcp:127.0.0.1:8080", "allow ingress:tcp:127.0.0.1:8080"],
      ["udp:any:53", "allow udp:any:53"],
    ];
    for (const [text, canon] of cases) expect([text, parseRule(text, "allow").text]).toEqual([text, canon]);
  });

  test("bad rules say what was wrong and show the accepted forms", () => {
    const cases: Array<[string, RegExp]> = [
      ["", /it is empty/],
      ["tcp:api.example.com:http", /"http" is not a port/],
      ["tcp:api.example.com:0", /within 1-65535/],
      ["tcp:api.example.com:90-80", /low to high/],
      ["group:intranet", /unknown group "intranet"/],
      ["10.0.0.1/8", /bits set beyond \/8: did you mean 10.0.0.0\/8/],
      ["ip:10.0.0.0/8", /ip: takes one address/],
      ["300.1.1.1", /not an IP address/],
      ["icmp:1.1.1.1:80", /icmp has no ports/],
      ["foo*.example.com", /wildcard is only allowed as a leading/],
      ["exa mple.com", /not a valid domain name/],
      ["private", /write group:private/],
      ["tcp:2001:db8::1:443", /too many|not an IP/],
    ];
    for (const [text, re] of cases) {
      let err: unknown;
      try { parseRule(text, "deny"); } catch (e) { err = e; }
      expect(err).toBeInstanceOf(PolicyError);
      expect([text, (err as Error).message]).toEqual([text, expect.stringMatching(re)]);
      expect((err as Error).message).toContain("Examples: tcp:api.example.com:443");
    }
  });

  test("the object form takes the same destinations; errors come through zod", () => {
    expect(ruleFromInput({ to: "api.example.com", proto: "tcp", ports: 443 }, "allow").text).toBe("allow tcp:api.example.com:443");
    expect(ruleFromInput({ to: "fd00::/8", ports: [80, "8000-8100"] }, "deny").text).toBe("deny [fd00::]/8:80,8000-8100");
    expect(ruleFromInput({ to: "group:metadata", direction: "egress" }, "deny").text).toBe("deny group:metadata");
    const bad = ruleInputSchema.safeParse({ to: "group:nope" });
    expect(bad.success).toBe(false);
    expect(bad.error!.issues[0]!.message).toContain('unknown group "nope"');
    expect(ruleInputSchema.safeParse({ to: "x.com", port: 1 }).success).toBe(false); // unknown key
    expect(ruleInputSchema.safeParse("tcp:x.com:443").success).toBe(true);
  });
});

describe("the public preset", () => {
  test("denied: every non-public range, the host, metadata, in every IPv6 spelling", () => {
    const denied = [
      "127.0.0.1", "127.255.0.9", "0.0.0.0", "0.1.2.3", "10.1.2.3", "172.16.0.1", "172.31.255.255", "192.168.1.1", "100.64.0.1",
      "100.127.255.254", "169.254.0.1", "169.254.169.254", "169.254.170.2", "100.100.100.200", "224.0.0.1", "239.255.255.250",
      "255.255.255.255", "240.0.0.1", "198.18.0.1", "198.19.255.255", "192.0.0.8", "192.0.2.1", "198.51.100.7", "203.0.113.9",
      "::1", "::", "fe80::1", "fd00::1", "fc00::1", "fd00:ec2::254", "ff02::1", "fec0::1", "2001:db8::1", "100::1", "64:ff9b:1::a00:1",
      // IPv4-mapped, SIIT, IPv4-compatible, NAT64, 6to4, Teredo (server and obfuscated client), ISATAP
      "::ffff:127.0.0.1", "::ffff:169.254.169.254", "::ffff:10.0.0.1", "::ffff:0:10.0.0.1", "::127.0.0.1", "::10.0.0.1",
      "::169.254.169.254", "64:ff9b::a9fe:a9fe", "64:ff9b::7f00:1", "64:ff9b::a00:1", "2002:a9fe:a9fe::1", "2002:7f00:1::",
      "2002:c0a8:101::", "2001:0:a9fe:a9fe::1", "2001:0:808:808:0:0:f5ff:fffe" /* client 10.0.0.1 xor ff */,
      "2606:4700::5efe:10.0.0.1", "2606:4700::200:5efe:169.254.169.254",
      // the host's own addresses, public ones included
      "44.1.2.3", "::ffff:44.1.2.3", "192.168.77.5", "2001:db8:77::5",
    ];
    for (const ip of denied) expect([ip, pub.decide(q(ip)).allow]).toEqual([ip, false]);
  });

  test("allowed: public unicast, also spelled as IPv6", () => {
    for (const ip of ["93.184.216.34", "1.1.1.1", "8.8.4.4", "2606:4700::1111", "::ffff:8.8.8.8", "64:ff9b::808:808", "2002:808:808::1", "172.32.0.1", "100.128.0.1"])
      expect([ip, pub.decide(q(ip)).allow]).toEqual([ip, true]);
  });

  test("the denying rule is named: metadata before link-local, host before loopback", () => {
    expect(pub.describe(pub.decide(q("169.254.169.254")))).toBe("deny group:metadata (preset public)");
    expect(pub.describe(pub.decide(q("::ffff:100.100.100.200")))).toBe("deny group:metadata (preset public)");
    expect(pub.describe(pub.decide(q("127.0.0.1", 80, "tcp", { viaHostAlias: true })))).toBe("deny group:host (preset public)");
    expect(pub.describe(pub.decide(q("10.0.0.1")))).toBe("deny group:private (preset public)");
    expect(pub.describe(pub.decide(q("1.1.1.1")))).toBe("default (preset public: public addresses allowed)");
  });

  test("DNS to other servers, DNS over TLS, mDNS and LLMNR are refused even to public addresses", () => {
    for (const [proto, port] of [["udp", 53], ["tcp", 53], ["tcp", 853], ["udp", 853], ["udp", 5353], ["udp", 5355]] as const)
      expect([proto, port, pub.decide(q("8.8.8.8", port, proto)).allow]).toEqual([proto, port, false]);
    expect(pub.decide(q("8.8.8.8", 443, "udp")).allow).toBe(true);
  });

  test("ICMP follows the address rules", () => {
    expect(pub.decide(q("10.0.0.1", 0, "icmp")).allow).toBe(false);
    expect(pub.decide(q("1.1.1.1", 0, "icmp")).allow).toBe(true);
  });
});

describe("user rules", () => {
  test("allow rules open private ranges on top of public; deny rules are checked first", () => {
    const p = compilePolicy({ hostAddresses: HOST, allow: ["cidr:10.1.0.0/16", "group:host"], deny: ["ip:10.1.2.3", "tcp:1.1.1.1:443"] });
    expect(p.decide(q("10.1.9.9")).allow).toBe(true);
    expect(p.decide(q("::ffff:10.1.9.9")).allow).toBe(true);
    expect(p.decide(q("10.1.2.3")).allow).toBe(false);
    expect(p.decide(q("10.2.0.1")).allow).toBe(false);
    expect(p.decide(q("127.0.0.1", 8080, "tcp", { viaHostAlias: true })).allow).toBe(true);
    expect(p.decide(q("1.1.1.1", 443)).allow).toBe(false);
    expect(p.decide(q("1.1.1.1", 80)).allow).toBe(true);
    expect(p.decide(q("1.1.1.1", 443, "udp")).allow).toBe(true);
  });

  test("deny any makes the default deny: only what is allowed passes", () => {
    const p = compilePolicy({ hostAddresses: HOST, deny: ["any"], allow: ["tcp:api.example.com:443", "udp:5.6.7.8:1000-2000"] });
    expect(p.defaultAllow).toBe(false);
    expect(p.decide(q("1.1.1.1")).allow).toBe(false);
    expect(p.decide(q("5.6.7.8", 1500, "udp")).allow).toBe(true);
    expect(p.decide(q("5.6.7.8", 2001, "udp")).allow).toBe(false);
    expect(p.decide(q("5.6.7.8", 1500, "tcp")).allow).toBe(false);
    // Domain rules match only pinned names: the same IP without a lookup is denied.
    expect(p.decide(q("93.184.216.34", 443)).allow).toBe(false);
    expect(p.decide(q("93.184.216.34", 443, "tcp", { names: ["api.example.com"] })).allow).toBe(true);
    expect(p.decide(q("93.184.216.34", 80, "tcp", { names: ["api.example.com"] })).allow).toBe(false);
    expect(() => compilePolicy({ deny: ["any"], allow: ["*"] })).toThrow(/pick one default/);
  });

  test("names: NXDOMAIN unless a rule allows them; with public, every name but full denies", () => {
    const strict = compilePolicy({ hostAddresses: HOST, deny: ["any"], allow: ["tcp:api.example.com:443", "*.pypi.org", "ip:9.9.9.9"] });
    expect(strict.nameDecision("api.example.com").allow).toBe(true);
    expect(strict.nameDecision("files.pypi.org").allow).toBe(true);
    expect(strict.nameDecision("pypi.org").allow).toBe(false);
    expect(strict.nameDecision("exfil-c2VjcmV0.evil.test").allow).toBe(false);
    const open = compilePolicy({ hostAddresses: HOST, deny: ["*.tracker.test", "tcp:partial.test:25"] });
    expect(open.nameDecision("anything.example").allow).toBe(true);
    expect(open.nameDecision("a.tracker.test").allow).toBe(false);
    expect(open.nameDecision("partial.test").allow).toBe(true);
    expect(compilePolicy({ hostAddresses: HOST, deny: ["any"], allow: ["group:public"] }).nameDecision("x.test").allow).toBe(true);
  });

  test("answers: private addresses for public names are dropped unless a rule allows them", () => {
    expect(pub.answerDecision(["evil.test"], parseIp("127.0.0.1")).allow).toBe(false);
    expect(pub.answerDecision(["evil.test"], parseIp("::ffff:10.0.0.1")).allow).toBe(false);
    expect(pub.answerDecision(["evil.test"], parseIp("fd00:ec2::254")).allow).toBe(false);
    expect(pub.answerDecision(["good.test"], parseIp("1.2.3.4")).allow).toBe(true);
    expect(compilePolicy({ hostAddresses: HOST, allow: ["tcp:intranet.corp:443"] }).answerDecision(["intranet.corp"], parseIp("10.9.8.7")).allow).toBe(false);
    const p = compilePolicy({ hostAddresses: HOST, allow: ["tcp:intranet.corp:443", "cidr:10.9.8.0/24"] });
    expect(p.answerDecision(["intranet.corp"], parseIp("10.9.8.7")).allow).toBe(true);
    expect(p.answerDecision(["other.corp"], parseIp("10.9.8.6")).allow).toBe(true); // the address rule allows it
    expect(p.answerDecision(["other.corp"], parseIp("10.9.9.1")).allow).toBe(false);
    expect(p.answerDecision(["alias.test", "intranet.corp"], parseIp("10.9.8.7")).allow).toBe(true);
  });

  test("ingress rules apply to published-port peers; ingress defaults to allow", () => {
    const p = compilePolicy({ hostAddresses: HOST, deny: ["ingress:any"], allow: ["ingress:tcp:127.0.0.1:8080"] });
    expect(p.decide({ direction: "ingress", proto: "tcp", ip: parseIp("127.0.0.1"), port: 8080 }).allow).toBe(true);
    expect(p.decide({ direction: "ingress", proto: "tcp", ip: parseIp("192.168.1.9"), port: 8080 }).allow).toBe(false);
    expect(pub.decide({ direction: "ingress", proto: "tcp", ip: parseIp("192.168.1.9"), port: 8080 }).allow).toBe(true);
  });

  test("preset all allows everything the rules do not deny", () => {
    const all = compilePolicy({ preset: "all", hostAddresses: HOST, deny: ["group:metadata"] });
    expect(all.decide(q("127.0.0.1", 80, "tcp", { viaHostAlias: true })).allow).toBe(true);
    expect(all.decide(q("10.0.0.1")).allow).toBe(true);
    expect(all.decide(q("169.254.169.254")).allow).toBe(false);
    expect(() => compilePolicy({ preset: "none" as "all" })).toThrow(/unknown network preset/);
  });
});
