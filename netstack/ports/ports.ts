// Published ports: `-p [IP:]HOST:GUEST[/udp]`. Parsing and validation of the spec; the listeners
// live in the stack, which turns each accepted host connection into a connection into the guest.
export interface PortSpec {
  /** Host address to bind; 127.0.0.1 unless the user gave one. */
  hostIp: string;
  hostPort: number;
  guestPort: number;
  proto: "tcp" | "udp";
}

export class PortSpecError extends Error {
  constructor(spec: string, why: string) {
    super(`published port "${spec}": ${why} (expected [IP:]HOST:GUEST[/udp], e.g. 8080:80 or 0.0.0.0:5353:53/udp)`);
    this.name = "PortSpecError";
  }
}

function port(spec: string, s: string, what: string): number {
  if (!/^\d{1,5}$/.test(s) || Number(s) < 1 || Number(s) > 65535) throw new PortSpecError(spec, `${what} "${s}" is not a port number 1-65535`);
  return Number(s);
}

export function parsePortSpec(spec: string): PortSpec {
  let s = spec.trim();
  let proto: "tcp" | "udp" = "tcp";
  const slash = s.lastIndexOf("/");
  if (slash >= 0) {
    const p = s.slice(slash + 1).toLowerCase();
    if (p !== "tcp" && p !== "udp") throw new PortSpecError(spec, `protocol "${p}" is neither tcp nor udp`);
    proto = p;
    s = s.slice(0, slash);
  }
  // IPv6 host addresses are written in brackets: [::1]:8080:80
  let hostIp = "127.0.0.1";
  const br = /^\[([^\]]+)\]:(.*)$/.exec(s);
  if (br) { hostIp = br[1]!; s = br[2]!; }
  const parts = s.split(":");
  if (parts.length === 3 && !br) { hostIp = parts.shift()!; }
  if (parts.length !== 2) throw new PortSpecError(spec, "needs a host port and a guest port");
  if (!/^[0-9a-fA-F:.]+$/.test(hostIp)) throw new PortSpecError(spec, `host address "${hostIp}" is not an IP address`);
  return { hostIp, hostPort: port(spec, parts[0]!, "host port"), guestPort: port(spec, parts[1]!, "guest port"), proto };
}
