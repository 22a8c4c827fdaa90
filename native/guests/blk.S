# virtio-blk at device slot 0: read sector 0 and print its first 16 bytes, write sector 1,
# flush, print the GET_ID serial, reset.
        .include "common.inc"
        .set RING, 0x200000
        .set HDR, 0x208000
        .set STATUS, 0x208100
        .set BUF, 0x210000
        .set IDBUF, 0x211000
        .globl _start
_start:
        mov esp, 0x80000
        mov ebx, MMIO0
        cmp dword ptr [ebx], 0x74726976
        jne fail
        cmp dword ptr [ebx + 8], 2
        jne fail
        mov edx, 0x200                      # VIRTIO_BLK_F_FLUSH
        call dev_init
        xor eax, eax
        mov edi, RING
        call setup_queue
        call dev_ok

        # 1: read sector 0
        mov dword ptr [HDR], 0
        mov dword ptr [HDR + 8], 0
        mov ecx, 0
        mov eax, HDR
        mov edx, 16
        mov esi, 0x10001                    # NEXT, next 1
        call add_desc
        mov ecx, 1
        mov eax, BUF
        mov edx, 512
        mov esi, 0x20003                    # WRITE|NEXT, next 2
        call add_desc
        mov ecx, 2
        mov eax, STATUS
        mov edx, 1
        mov esi, 2                          # WRITE
        call add_desc
        mov ecx, 0
        call publish
        mov dword ptr [ebx + REG_NOTIFY], 0
        mov ecx, 1
        call wait_used
        cmp byte ptr [STATUS], 0
        jne fail
        mov esi, offset read_msg
        call puts
        mov esi, BUF
        mov ecx, 16
        call putn
        mov esi, offset nl
        call puts

        # 2: write sector 1 from BUF, after stamping it
        mov esi, offset stamp
        mov edi, BUF
        mov ecx, 16
        rep movsb
        mov edi, RING
        mov dword ptr [HDR], 1
        mov dword ptr [HDR + 8], 1
        mov byte ptr [STATUS], 0xff
        mov ecx, 1
        mov eax, BUF
        mov edx, 512
        mov esi, 0x20001                    # NEXT, next 2 (device-readable)
        call add_desc
        mov ecx, 0
        call publish
        mov dword ptr [ebx + REG_NOTIFY], 0
        mov ecx, 2
        call wait_used
        cmp byte ptr [STATUS], 0
        jne fail

        # 3: flush (header straight to status)
        mov dword ptr [HDR], 4
        mov byte ptr [STATUS], 0xff
        mov ecx, 0
        mov eax, HDR
        mov edx, 16
        mov esi, 0x20001
        call add_desc
        mov ecx, 0
        call publish
        mov dword ptr [ebx + REG_NOTIFY], 0
        mov ecx, 3
        call wait_used
        cmp byte ptr [STATUS], 0
        jne fail

        # 4: GET_ID into IDBUF
        mov dword ptr [HDR], 8
        mov byte ptr [STATUS], 0xff
        mov ecx, 0
        mov eax, HDR
        mov edx, 16
        mov esi, 0x10001
        call add_desc
        mov ecx, 1
        mov eax, IDBUF
        mov edx, 20
        mov esi, 0x20003
        call add_desc
        mov ecx, 0
        call publish
        mov dword ptr [ebx + REG_NOTIFY], 0
        mov ecx, 4
        call wait_used
        cmp byte ptr [STATUS], 0
        jne fail
        mov esi, offset id_msg
        call puts
        mov esi, IDBUF
        call puts
        mov esi, offset done_msg
        call puts
        RESET
        .section .rodata
read_msg: .asciz "sector0: "
stamp:    .ascii "written-by-guest"
id_msg:   .asciz "serial: "
done_msg: .asciz "\nblk ok\n"
nl:       .asciz "\n"
