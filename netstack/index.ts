// msb's userspace TCP/IP stack: the sandbox's only way out. It terminates the guest's Ethernet
// frames and re-opens every TCP/UDP flow from the host, after the egress policy allows it.
//
// Wiring (the supervisor):
//
//   const stack = new NetStack({
//     guestIPv4: "10.0.2.15/24", gatewayIPv4: "10.0.2.2", dnsIPv4: "10.0.2.3",   // defaults
//     ipv6: { guest: "fd6d:7362::15/64", gateway: "fd6d:7362::2", dns: "fd6d:7362::3" }, // default ULA
//     mtu: 65520,                       // must match the MTU the agent configures in the guest
//     vnetHdr: false,                   // true: frames carry virtio_net_hdr_v1 (TSO + csum offload)
//     policy: compilePolicy({ preset: "public", allow: ["tcp:api.example.com:443"], deny: [] }),
//                                       // rules + DNS filtering/pinning; or (dest) => boolean
//     name: "my-sandbox",               // in every denial line (written through `log`)
//     tcp: { maxConnections: 4096, maxHalfOpen: 256 }, udp: { maxFlows: 1024 },
//     resolver: async (query) => resp, // DNS hook (raw messages); default: host's resolv.conf
//     publishedPorts: ["8080:80", "0.0.0.0:5353:53/udp"],
//   });
//   await stack.start();                       // binds published ports; rejects if one is taken
//   const net = stack.listenUnix(spec.netSocket); // qemu -netdev stream connects here
//   // or: await stack.attachFd(fd)             // native VMM socketpair end
//   // or: const link = stack.attach({ write, end }); link.receive(chunk); link.drain();
//   ...
//   net.close(); stack.close();
//
// The guest must be configured (by the agent, from `stack.guestConfig()`) with the same addresses,
// routes, DNS server and MTU. See README.md for what is and is not supported.
export { NetStack, NetStackError, DEFAULTS, type NetStackOptions, type NetLink, type Closable, type GuestNetConfig } from "./stack";
export { defaultPolicy, isNonPublic, type EgressPolicy, type Destination } from "./policy/policy";
export {
  compilePolicy, parseRule, ruleFromInput, ruleInputSchema, ruleObjectSchema, CompiledPolicy, PolicyError, RULE_SYNTAX,
  type PolicyOptions, type Rule, type RuleInput, type RuleObject, type Preset, type FlowQuery, type Decision,
} from "./policy/rules";
export { GROUPS, embeddedIpv4, type Group } from "./policy/groups";
export { PIN_DEFAULTS } from "./dns/pins";
export { systemResolver, forwardingResolver, testResolverFromEnv, type DnsResolver } from "./dns/resolver";
export { parsePortSpec, PortSpecError, type PortSpec } from "./ports/ports";
export { FrameDecoder, FrameEncoder, type ByteSink } from "./phy/framing";
