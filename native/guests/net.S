# virtio-net at device slot 0: sends one Ethernet frame, prints the payload of the first frame
# received, resets.
        .include "common.inc"
        .set RX_RING, 0x200000
        .set TX_RING, 0x204000
        .set RXBUF, 0x300000
        .globl _start
_start:
        mov esp, 0x80000
        mov ebx, MMIO0
        cmp dword ptr [ebx + 8], 1
        jne fail
        mov edx, 0x20                       # VIRTIO_NET_F_MAC
        call dev_init
        mov eax, 0
        mov edi, RX_RING
        call setup_queue
        mov eax, 1
        mov edi, TX_RING
        call setup_queue
        call dev_ok

        mov edi, RX_RING
        mov ecx, 0
        mov eax, RXBUF
        mov edx, 1526
        mov esi, 2
        call add_desc
        mov ecx, 0
        call publish
        mov dword ptr [ebx + REG_NOTIFY], 0

        mov edi, TX_RING
        mov ecx, 0
        mov eax, offset packet
        mov edx, packet_end - packet
        mov esi, 0
        call add_desc
        mov ecx, 0
        call publish
        mov dword ptr [ebx + REG_NOTIFY], 1

        mov edi, RX_RING
        mov ecx, 1
        call wait_used
        mov esi, offset got_msg
        call puts
        mov esi, RXBUF + 12 + 14            # virtio-net header, Ethernet header
        call puts
        RESET
        .section .rodata
got_msg: .asciz "net received: "
packet:
        .fill 12, 1, 0                      # virtio_net_hdr_v1
        .byte 0xff, 0xff, 0xff, 0xff, 0xff, 0xff
        .byte 0x52, 0x54, 0x00, 0x12, 0x34, 0x56
        .byte 0x88, 0xb5                    # local experimental ethertype
        .ascii "frame from guest"
        .fill 30, 1, 0                      # pad to 60 bytes
packet_end:
