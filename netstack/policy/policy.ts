// The egress decision hook's types and a plain-function form of the default (public destinations
// allowed; loopback, private, link-local, CGNAT, ULA, multicast, metadata and reserved ranges denied
// in every IPv4/IPv6 spelling). The rule model with DNS pinning is in rules.ts.
import { AddressClassifier } from "./groups";

export type Proto = "tcp" | "udp" | "icmp";

export interface Destination {
  proto: Proto;
  /** The address the host would connect to (after the host alias maps the gateway to loopback). */
  ip: string;
  ipBytes: Uint8Array;
  port: number;
  /** True when the guest addressed the gateway (host.msb.internal) and the host's loopback is meant. */
  viaHostAlias: boolean;
}

/** Decides whether the guest may reach a destination. Must be fast and synchronous: it runs per new flow. */
export type EgressPolicy = (dest: Destination) => boolean;

const classifier = new AddressClassifier([]);

/** True for addresses the `public` preset denies by range (any group but public), in every spelling. */
export function isNonPublic(ip: Uint8Array): boolean {
  return classifier.isNonPublic(ip);
}

/** The `public` preset as a plain hook (no host addresses, no DNS filtering): see rules.ts for the full policy. */
export const defaultPolicy: EgressPolicy = (d) => !d.viaHostAlias && !isNonPublic(d.ipBytes);
