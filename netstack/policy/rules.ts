// The egress policy model: rules (allow/deny × destination × protocol × ports × direction) parsed
// from a compact string syntax or an object form, compiled with a preset into an ordered list
// where the first match wins, then a default.
//
// Compact syntax (what `--allow` / `--deny` and config strings take):
//
//   [PROTO:][KIND:]DEST[:PORTS]      or   ingress:[PROTO:][KIND:]DEST[:PORTS]
//
//   PROTO  tcp | udp | icmp | any                (omitted: any)
//   DEST   api.example.com                       a name (exact; matches the IPs this sandbox resolved for it)
//          *.example.com                         any name under example.com (not example.com itself)
//          1.2.3.4   [2001:db8::1]                an address (IPv6 in brackets when ports follow)
//          10.0.0.0/8   [fd00::]/8                a CIDR
//          group:private                         public | private | loopback | link-local | metadata | multicast | host | reserved
//          any  (or *)                           everything
//   KIND   ip: | cidr: | domain: | group:        optional, to be explicit (group: is required for groups)
//   PORTS  443 | 8000-8100 | 80,443,8000-8100    (omitted: all ports; not allowed with icmp)
//
//   tcp:api.example.com:443   cidr:10.1.0.0/16   group:private   udp:*.example.org:1000-2000   ip:1.2.3.4
import { z } from "zod";
import { bytesEqual, inPrefix, ipToString, parseCidr, parseIp } from "../wire/address";
import { AddressClassifier, GROUPS, hostAddresses, spellings, type Group } from "./groups";

export type Action = "allow" | "deny";
export type RuleProto = "tcp" | "udp" | "icmp" | "any";
export type Direction = "egress" | "ingress";
export type Target =
  | { kind: "any" }
  | { kind: "domain"; name: string }
  | { kind: "suffix"; suffix: string }
  | { kind: "cidr"; addr: Uint8Array; prefix: number }
  | { kind: "group"; group: Group };

export interface Rule {
  action: Action;
  target: Target;
  proto: RuleProto;
  /** Inclusive port ranges; null = every port. */
  ports: Array<[number, number]> | null;
  direction: Direction;
  /** Canonical compact form, as logs show it. */
  text: string;
  /** Where the rule came from when it is not the user's: e.g. "preset public". */
  origin?: string;
}

export class PolicyError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "PolicyError";
  }
}

export const RULE_SYNTAX =
  "accepted forms: [tcp:|udp:|icmp:|any:]DEST[:PORTS], DEST one of a name (api.example.com), *.suffix, an IP (1.2.3.4, [2001:db8::1]), " +
  "a CIDR (10.0.0.0/8, [fd00::]/8), group:NAME (" + GROUPS.join(", ") + ") or any; PORTS like 443, 1000-2000 or 80,443; " +
  "prefix ingress: for published ports. Examples: tcp:api.example.com:443, cidr:10.1.0.0/16, group:private, udp:*.example.org:1000-2000, ip:1.2.3.4";

const bad = (text: string, why: string) => new PolicyError(`invalid rule "${text}": ${why}; ${RULE_SYNTAX}`);

const LABEL = /^(?!-)[a-z0-9_-]{1,63}(?<!-)$/;

function normalizeName(s: string): string | null {
  const n = s.toLowerCase().replace(/\.$/, "");
  if (n.length === 0 || n.length > 253) return null;
  return n.split(".").every((l) => LABEL.test(l)) ? n : null;
}

/** Splits on ':' outside brackets: "tcp:[::1]:80" → ["tcp", "[::1]", "80"]. */
function tokens(s: string): string[] {
  const out: string[] = [];
  let cur = "", depth = 0;
  for (const ch of s) {
    if (ch === "[") depth++;
    if (ch === "]") depth--;
    if (ch === ":" && depth === 0) { out.push(cur); cur = ""; continue; }
    cur += ch;
  }
  out.push(cur);
  return out;
}

function parsePorts(text: string, s: string): Array<[number, number]> {
  const out: Array<[number, number]> = [];
  for (const part of s.split(",")) {
    const m = /^(\d{1,5})(?:-(\d{1,5}))?$/.exec(part.trim());
    if (!m) throw bad(text, `"${part}" is not a port or a port range`);
    const lo = Number(m[1]), hi = Number(m[2] ?? m[1]);
    if (lo < 1 || hi > 65535 || lo > hi) throw bad(text, `port range "${part}" must be within 1-65535, low to high`);
    out.push([lo, hi]);
  }
  return out;
}

function parseAddressTarget(text: string, v: string, kind: "ip" | "cidr" | undefined): Target {
  const m = /^\[([^\]]+)\](\/\d+)?$/.exec(v);
  const raw = m ? m[1]! + (m[2] ?? "") : v;
  let c: { addr: Uint8Array; prefix: number };
  try { c = parseCidr(raw); } catch (e) { throw bad(text, `"${v}" is not an IP address or CIDR (${(e as Error).message})`); }
  if (kind === "ip" && c.prefix !== c.addr.length * 8) throw bad(text, `ip: takes one address, not the CIDR "${v}" (use cidr:)`);
  // Host bits set in a CIDR usually mean a typo: say so rather than silently widening it.
  const masked = c.addr.slice();
  for (let i = 0; i < masked.length; i++) {
    const bits = Math.max(0, Math.min(8, c.prefix - i * 8));
    masked[i]! &= (0xff << (8 - bits)) & 0xff;
  }
  if (!bytesEqual(masked, c.addr)) throw bad(text, `"${v}" has bits set beyond /${c.prefix}: did you mean ${ipToString(masked)}/${c.prefix}?`);
  return { kind: "cidr", addr: c.addr, prefix: c.prefix };
}

function targetText(t: Target): string {
  switch (t.kind) {
    case "any": return "any";
    case "domain": return t.name;
    case "suffix": return `*.${t.suffix}`;
    case "group": return `group:${t.group}`;
    case "cidr": {
      const full = t.prefix === t.addr.length * 8;
      const ip = ipToString(t.addr);
      return t.addr.length === 16 ? (full ? `[${ip}]` : `[${ip}]/${t.prefix}`) : (full ? ip : `${ip}/${t.prefix}`);
    }
  }
}

function ruleText(r: Omit<Rule, "text">): string {
  const parts: string[] = [];
  if (r.direction === "ingress") parts.push("ingress");
  if (r.proto !== "any") parts.push(r.proto);
  parts.push(targetText(r.target));
  if (r.ports) parts.push(r.ports.map(([a, b]) => (a === b ? `${a}` : `${a}-${b}`)).join(","));
  return `${r.action} ${parts.join(":")}`;
}

function parseTarget(text: string, kind: string | undefined, v: string): Target {
  if (v === "") throw bad(text, "the destination is missing");
  if (kind === "group") {
    if (!(GROUPS as readonly string[]).includes(v)) throw bad(text, `unknown group "${v}"`);
    return { kind: "group", group: v as Group };
  }
  if (kind === "ip" || kind === "cidr") return parseAddressTarget(text, v, kind);
  if (kind === undefined && (v === "any" || v === "*")) return { kind: "any" };
  if (kind === undefined && (/^[\d.]+(\/\d+)?$/.test(v) || v.startsWith("[") || v.includes(":"))) return parseAddressTarget(text, v, undefined);
  if (v.startsWith("*.")) {
    const s = normalizeName(v.slice(2));
    if (!s) throw bad(text, `"${v}" is not a valid *.suffix`);
    return { kind: "suffix", suffix: s };
  }
  if (v.includes("*")) throw bad(text, `"${v}": a wildcard is only allowed as a leading "*."`);
  const n = normalizeName(v);
  if (!n) throw bad(text, `"${v}" is not a valid domain name`);
  if (GROUPS.includes(n as Group) && kind !== "domain") throw bad(text, `"${v}" looks like a group: write group:${v} (or domain:${v} for the name)`);
  return { kind: "domain", name: n };
}

/** Parses one compact rule. Throws PolicyError saying what was wrong and which forms are accepted. */
export function parseRule(text: string, action: Action): Rule {
  const t = text.trim();
  if (t === "") throw bad(text, "it is empty");
  let toks = tokens(t);
  let direction: Direction = "egress";
  if (toks[0] === "ingress" || toks[0] === "egress") { direction = toks[0]; toks = toks.slice(1); }
  let proto: RuleProto = "any";
  if (toks.length > 1 && ["tcp", "udp", "icmp", "any"].includes(toks[0]!)) { proto = toks[0] as RuleProto; toks = toks.slice(1); }
  let kind: string | undefined;
  if (toks.length > 1 && ["ip", "cidr", "domain", "group"].includes(toks[0]!)) { kind = toks[0]; toks = toks.slice(1); }
  // Unbracketed IPv6 after ip:/cidr: with no ports: "ip:2001:db8::1".
  // Unbracketed IPv6 CIDR (the "/len" ends it): "fd00::/8".
  if ((kind === "ip" || kind === "cidr") && toks.length > 2 && !toks[0]!.startsWith("[")) toks = [toks.join(":")];
  else if (kind === undefined && toks.length > 2 && /^[0-9a-fA-F:.]+\/\d+$/.test(toks.join(":"))) toks = [toks.join(":")];
  if (toks.length > 2) throw bad(text, `too many ":"-separated parts (an IPv6 address needs brackets: [2001:db8::1]:443)`);
  const target = parseTarget(text, kind, toks[0]!);
  let ports: Array<[number, number]> | null = null;
  if (toks.length === 2) {
    if (toks[1] !== "*" && toks[1] !== "any") ports = parsePorts(text, toks[1]!);
  }
  if (proto === "icmp" && ports) throw bad(text, "icmp has no ports");
  const r = { action, target, proto, ports, direction };
  return { ...r, text: ruleText(r) };
}

/** The object form of a rule (SDK and config files); `to` takes the DEST forms of the compact syntax. */
export const ruleObjectSchema = z.object({
  to: z.string().min(1),
  proto: z.enum(["tcp", "udp", "icmp", "any"]).optional(),
  ports: z.union([z.number().int().min(1).max(65535), z.string(), z.array(z.union([z.number().int().min(1).max(65535), z.string()]))]).optional(),
  direction: z.enum(["egress", "ingress"]).optional(),
}).strict();

export type RuleObject = z.infer<typeof ruleObjectSchema>;
export type RuleInput = string | RuleObject;

export function ruleFromInput(input: RuleInput, action: Action): Rule {
  if (typeof input === "string") return parseRule(input, action);
  const o = ruleObjectSchema.parse(input);
  const text = JSON.stringify(input);
  const m = /^(ip|cidr|domain|group):(.*)$/.exec(o.to);
  const target = parseTarget(text, m?.[1], m ? m[2]! : o.to);
  const proto = o.proto ?? "any";
  const ports = o.ports === undefined ? null : parsePorts(text, Array.isArray(o.ports) ? o.ports.join(",") : String(o.ports));
  if (proto === "icmp" && ports) throw bad(text, "icmp has no ports");
  const r = { action, target, proto, ports, direction: o.direction ?? "egress" };
  return { ...r, text: ruleText(r) };
}

/** A rule in either form, checked by zod so config errors name the key (allow.2: invalid rule ...). */
export const ruleInputSchema = z.union([z.string(), ruleObjectSchema]).superRefine((v, ctx) => {
  try { ruleFromInput(v, "allow"); } catch (e) { ctx.addIssue({ code: "custom", message: (e as Error).message }); }
});

export type Preset = "public" | "all";

export interface PolicyOptions {
  preset?: Preset;
  allow?: RuleInput[];
  deny?: RuleInput[];
  /** The host's own addresses (group `host`); default: every address of os.networkInterfaces(). */
  hostAddresses?: Array<string | Uint8Array>;
}

/** What the policy is asked about for each new flow. */
export interface FlowQuery {
  proto: "tcp" | "udp" | "icmp";
  ip: Uint8Array;
  port: number;
  viaHostAlias?: boolean;
  /** Names this sandbox resolved to `ip` and that are still pinned (domain rules match only these). */
  names?: readonly string[];
  direction?: Direction;
}

export interface Decision {
  allow: boolean;
  /** The rule that decided; null when the default did. */
  rule: Rule | null;
}

const nameMatches = (t: Target, name: string) =>
  (t.kind === "domain" && t.name === name) || (t.kind === "suffix" && name.endsWith(`.${t.suffix}`));

const isCatchAll = (r: Rule) => r.target.kind === "any" && r.proto === "any" && r.ports === null;
/** A deny that applies to every protocol and port of its target: it decides names and answers. */
const isFullDeny = (r: Rule) => r.action === "deny" && r.proto === "any" && r.ports === null;

/** Protective rules of the `public` preset, after the user's rules (so user allows can open them). */
function publicPresetRules(): Rule[] {
  const origin = "preset public";
  const mk = (action: Action, text: string) => ({ ...parseRule(text, action), origin });
  return [
    // DNS must go through the gateway, where names are checked and answers filtered and pinned.
    mk("deny", "tcp:any:53,853"), mk("deny", "udp:any:53,853,5353,5355"),
    ...(["metadata", "host", "loopback", "link-local", "private", "multicast", "reserved"] as const).map((g) => mk("deny", `group:${g}`)),
  ];
}

/**
 * A compiled policy: user deny rules, then user allow rules (in the order given), then the preset's
 * protective rules, then the default. A catch-all `deny any` / `allow any` is not a rule but the
 * default: `deny: ["any"], allow: ["tcp:api.example.com:443"]` allows only that.
 */
export class CompiledPolicy {
  readonly egress: Rule[];
  readonly ingress: Rule[];
  readonly defaultAllow: boolean;
  readonly defaultText: string;
  readonly classifier: AddressClassifier;

  constructor(readonly preset: Preset, rules: Rule[], defaultAllow: boolean, defaultText: string, host: Uint8Array[], readonly ingressDefaultAllow = true) {
    this.egress = rules.filter((r) => r.direction === "egress");
    this.ingress = rules.filter((r) => r.direction === "ingress");
    this.defaultAllow = defaultAllow;
    this.defaultText = defaultText;
    this.classifier = new AddressClassifier(host);
  }

  private targetMatchesAddress(t: Target, sp: Uint8Array[], groups: () => Group[]): boolean {
    switch (t.kind) {
      case "any": return true;
      case "cidr": {
        for (const s of sp) if (inPrefix(s, t.addr, t.prefix)) return true;
        return false;
      }
      case "group": return groups().includes(t.group);
      default: return false;
    }
  }

  /** Decides one flow: first matching rule, else the default. */
  decide(q: FlowQuery): Decision {
    const rules = q.direction === "ingress" ? this.ingress : this.egress;
    let groups: Group[] | null = null;
    const sp = spellings(q.ip);
    const g = () => (groups ??= this.classifier.groups(q.ip, q.viaHostAlias === true, sp));
    for (const r of rules) {
      if (r.proto !== "any" && r.proto !== q.proto) continue;
      if (r.ports) {
        if (q.proto === "icmp") continue;
        if (!r.ports.some(([a, b]) => q.port >= a && q.port <= b)) continue;
      }
      const t = r.target;
      const hit = t.kind === "domain" || t.kind === "suffix"
        ? (q.names ?? []).some((n) => nameMatches(t, n))
        : this.targetMatchesAddress(t, sp, g);
      if (hit) return { allow: r.action === "allow", rule: r };
    }
    return { allow: q.direction === "ingress" ? this.ingressDefaultAllow : this.defaultAllow, rule: null };
  }

  /**
   * Whether the guest may look `name` up at all (else NXDOMAIN, no upstream query): a domain rule
   * that allows it, an allow rule on a group or everything (answers are then filtered by address),
   * or an allowing default; a full deny on the name refuses it.
   */
  nameDecision(name: string): Decision {
    for (const r of this.egress) {
      const t = r.target;
      if (t.kind === "domain" || t.kind === "suffix") {
        if (!nameMatches(t, name)) continue;
        if (r.action === "allow") return { allow: true, rule: r };
        if (isFullDeny(r)) return { allow: false, rule: r };
      } else if (r.action === "allow" && (t.kind === "group" || t.kind === "any")) {
        return { allow: true, rule: r };
      }
    }
    return { allow: this.defaultAllow, rule: null };
  }

  /**
   * The rebinding filter: may an address in a DNS answer for `names` (the question and its CNAME
   * chain) reach the guest? Address rules decide first: a full deny on the address (the preset's
   * protective ones included) drops it even if a domain rule allows the name, so a name never
   * opens a private, loopback, metadata or host address by itself (allow the address too for an
   * internal name). An address allow keeps it; otherwise a domain allow, else the default.
   */
  answerDecision(names: readonly string[], ip: Uint8Array): Decision {
    let groups: Group[] | null = null;
    const sp = spellings(ip);
    const g = () => (groups ??= this.classifier.groups(ip, false, sp));
    let byName: Rule | null = null;
    for (const r of this.egress) {
      const t = r.target;
      if (t.kind === "domain" || t.kind === "suffix") {
        if (!names.some((n) => nameMatches(t, n))) continue;
        if (r.action === "allow") byName ??= r;
        else if (isFullDeny(r) && !byName) return { allow: false, rule: r };
        continue;
      }
      if (!this.targetMatchesAddress(t, sp, g)) continue;
      if (r.action === "allow" && t.kind !== "any") return { allow: true, rule: r };
      if (isFullDeny(r)) return { allow: false, rule: r };
    }
    if (byName) return { allow: true, rule: byName };
    return { allow: this.defaultAllow, rule: null };
  }

  /** For logs: the rule's text and where it came from, or the default. */
  describe(d: Decision): string {
    if (!d.rule) return `default (${this.defaultText})`;
    return d.rule.origin ? `${d.rule.text} (${d.rule.origin})` : d.rule.text;
  }
}

/** Compiles a preset and the user's rules into the ordered policy the stack enforces. */
export function compilePolicy(o: PolicyOptions = {}): CompiledPolicy {
  const preset = o.preset ?? "public";
  if (preset !== "public" && preset !== "all") throw new PolicyError(`unknown network preset "${String(preset)}": use public or all (none means no NIC, decided before any policy)`);
  const deny = (o.deny ?? []).map((r) => ruleFromInput(r, "deny"));
  const allow = (o.allow ?? []).map((r) => ruleFromInput(r, "allow"));
  const denyAll = deny.some((r) => isCatchAll(r) && r.direction === "egress");
  const allowAll = allow.some((r) => isCatchAll(r) && r.direction === "egress");
  if (denyAll && allowAll) throw new PolicyError(`both "deny any" and "allow any" were given: pick one default`);
  const ingressDenyAll = deny.some((r) => isCatchAll(r) && r.direction === "ingress");
  const user = [...deny, ...allow].filter((r) => !isCatchAll(r));
  let defaultAllow = true;
  let defaultText = preset === "public" ? "preset public: public addresses allowed" : "preset all";
  if (denyAll) { defaultAllow = false; defaultText = "deny any"; }
  if (allowAll) defaultText = "allow any";
  // An explicit "allow any" drops the preset's protective rules: that is what it says.
  const rules = preset === "public" && !allowAll ? [...user, ...publicPresetRules()] : user;
  const host = (o.hostAddresses ?? hostAddresses()).map((a) => (typeof a === "string" ? parseIp(a) : a));
  return new CompiledPolicy(preset, rules, defaultAllow, defaultText, host, !ingressDenyAll);
}
