# virtio-console (multiport) at device slot 0: does the port handshake the Linux driver does,
# prints the name the device gave port 1, sends a line on the port, prints what comes back.
        .include "common.inc"
        .set RINGS, 0x200000                # queue q's ring area: RINGS + q * 0x4000
        .set CTRL_IN, 0x300000              # 4 control buffers of 0x100
        .set CTRL_OUT, 0x310000
        .set RXBUF, 0x320000
        .globl _start
_start:
        mov esp, 0x80000
        mov ebx, MMIO0
        cmp dword ptr [ebx + 8], 3
        jne fail
        mov edx, 2                          # VIRTIO_CONSOLE_F_MULTIPORT
        call dev_init
        mov ebp, 0
1:      mov eax, ebp
        mov edi, ebp
        shl edi, 14
        add edi, RINGS
        call setup_queue
        inc ebp
        cmp ebp, 6
        jne 1b
        call dev_ok

        # Control receive buffers (queue 2).
        mov edi, RINGS + 2 * 0x4000
        mov ebp, 0
2:      mov ecx, ebp
        mov eax, ebp
        shl eax, 8
        add eax, CTRL_IN
        mov edx, 0x100
        mov esi, 2
        call add_desc
        mov ecx, ebp
        call publish
        inc ebp
        cmp ebp, 4
        jne 2b
        mov dword ptr [ebx + REG_NOTIFY], 2

        # DEVICE_READY on control transmit (queue 3); expect DEVICE_ADD.
        mov dword ptr [CTRL_OUT], 0
        mov dword ptr [CTRL_OUT + 4], 0x10000
        mov edi, RINGS + 3 * 0x4000
        mov ecx, 0
        mov eax, CTRL_OUT
        mov edx, 8
        mov esi, 0
        call add_desc
        mov ecx, 0
        call publish
        mov dword ptr [ebx + REG_NOTIFY], 3
        mov edi, RINGS + 2 * 0x4000
        mov ecx, 1
        call wait_used
        cmp word ptr [CTRL_IN + 4], 1       # DEVICE_ADD
        jne fail

        # PORT_READY for port 1; expect PORT_NAME then PORT_OPEN.
        mov dword ptr [CTRL_OUT + 16], 1
        mov dword ptr [CTRL_OUT + 20], 0x10003
        mov edi, RINGS + 3 * 0x4000
        mov ecx, 1
        mov eax, CTRL_OUT + 16
        mov edx, 8
        mov esi, 0
        call add_desc
        mov ecx, 1
        call publish
        mov dword ptr [ebx + REG_NOTIFY], 3
        mov edi, RINGS + 2 * 0x4000
        mov ecx, 3
        call wait_used
        mov esi, offset name_msg
        call puts
        mov esi, CTRL_IN + 0x108            # second buffer, after the 8-byte header
        call puts
        mov esi, offset nl
        call puts

        # PORT_OPEN from the guest side.
        mov dword ptr [CTRL_OUT + 32], 1
        mov dword ptr [CTRL_OUT + 36], 0x10006
        mov edi, RINGS + 3 * 0x4000
        mov ecx, 2
        mov eax, CTRL_OUT + 32
        mov edx, 8
        mov esi, 0
        call add_desc
        mov ecx, 2
        call publish
        mov dword ptr [ebx + REG_NOTIFY], 3

        # Port 1: a receive buffer (queue 4), then a line out (queue 5).
        mov edi, RINGS + 4 * 0x4000
        mov ecx, 0
        mov eax, RXBUF
        mov edx, 64
        mov esi, 2
        call add_desc
        mov ecx, 0
        call publish
        mov dword ptr [ebx + REG_NOTIFY], 4
        mov edi, RINGS + 5 * 0x4000
        mov ecx, 0
        mov eax, offset ping
        mov edx, ping_end - ping
        mov esi, 0
        call add_desc
        mov ecx, 0
        call publish
        mov dword ptr [ebx + REG_NOTIFY], 5

        mov edi, RINGS + 4 * 0x4000
        mov ecx, 1
        call wait_used
        mov esi, offset got_msg
        call puts
        mov ecx, [RINGS + 4 * 0x4000 + 0x2008]   # used[0].len
        mov esi, RXBUF
        call putn
        RESET
        .section .rodata
name_msg: .asciz "port name: "
got_msg:  .asciz "received: "
nl:       .asciz "\n"
ping:     .ascii "ping from guest\n"
ping_end:
