// The virtio-net header (struct virtio_net_hdr_v1, 12 bytes, little-endian) that may precede each
// frame on the stream: it carries checksum and segmentation offload, so TCP segments of up to
// 64 KiB cross whole at any MTU and neither side computes payload checksums.
import { malformed, truncated } from "./error";

export const VNET_FLAGS = 0;
export const VNET_GSO_TYPE = 1;
export const VNET_HDR_LEN_FIELD = 2;
export const VNET_GSO_SIZE = 4;
export const VNET_CSUM_START = 6;
export const VNET_CSUM_OFFSET = 8;
export const VNET_NUM_BUFFERS = 10;
export const VNET_HEADER_LEN = 12;

export const VnetFlag = { NEEDS_CSUM: 1, DATA_VALID: 2 } as const;
export const VnetGso = { NONE: 0, TCPV4: 1, UDP: 3, TCPV6: 4, ECN: 0x80 } as const;

export interface VnetRepr {
  flags: number;
  gsoType: number;
  hdrLen: number;
  gsoSize: number;
  csumStart: number;
  csumOffset: number;
}

const u16 = (b: Uint8Array, o: number) => b[o]! | (b[o + 1]! << 8);
const put16 = (b: Uint8Array, o: number, v: number) => { b[o] = v & 0xff; b[o + 1] = v >>> 8; };

export const VnetRepr = {
  /** Parses the header at the front of `buf`; the frame follows at VNET_HEADER_LEN. */
  parse(buf: Uint8Array): VnetRepr {
    if (buf.length < VNET_HEADER_LEN) throw truncated("virtio-net header", VNET_HEADER_LEN, buf.length);
    const r = { flags: buf[VNET_FLAGS]!, gsoType: buf[VNET_GSO_TYPE]!, hdrLen: u16(buf, VNET_HDR_LEN_FIELD), gsoSize: u16(buf, VNET_GSO_SIZE),
      csumStart: u16(buf, VNET_CSUM_START), csumOffset: u16(buf, VNET_CSUM_OFFSET) };
    if (r.flags & ~3) throw malformed("virtio-net header", `unknown flags 0x${r.flags.toString(16)}`);
    return r;
  },
  emit(r: VnetRepr, buf: Uint8Array, off: number): void {
    buf[off + VNET_FLAGS] = r.flags;
    buf[off + VNET_GSO_TYPE] = r.gsoType;
    put16(buf, off + VNET_HDR_LEN_FIELD, r.hdrLen);
    put16(buf, off + VNET_GSO_SIZE, r.gsoSize);
    put16(buf, off + VNET_CSUM_START, r.csumStart);
    put16(buf, off + VNET_CSUM_OFFSET, r.csumOffset);
    put16(buf, off + VNET_NUM_BUFFERS, 0);
  },
};

export const NO_OFFLOAD: VnetRepr = Object.freeze({ flags: 0, gsoType: 0, hdrLen: 0, gsoSize: 0, csumStart: 0, csumOffset: 0 });
