# A hostile driver against virtio-blk at slot 0: odd-sized and stray MMIO accesses, a looping
# descriptor chain, a buffer outside guest RAM, a bogus queue notify, then an avail index far
# ahead. The device must return the bad chains unused, then refuse to go on (NEEDS_RESET), and
# the VM must still end cleanly by reset.
        .include "common.inc"
        .set RING, 0x200000
        .globl _start
_start:
        mov esp, 0x80000
        mov ebx, MMIO0
        mov byte ptr [ebx + 3], 0xff            # odd size, odd offset
        mov word ptr [ebx + 0x70], 0xffff       # 2-byte status write: ignored
        mov dword ptr [ebx + 0xffc], 0xffffffff # end of the window
        mov eax, [ebx + 0xffc]
        mov dword ptr [0xd0100000], 1           # no device there
        mov eax, [0xd0100000]
        mov dword ptr [ebx + 0x30], 0x7fffffff  # QueueSel out of range
        mov dword ptr [ebx + 0x38], 0xffffffff
        mov dword ptr [ebx + 0x44], 1
        mov edx, 0
        call dev_init
        xor eax, eax
        mov edi, RING
        call setup_queue
        call dev_ok
        mov dword ptr [ebx + REG_NOTIFY], 5     # no such queue

        # A chain that loops: 0 -> 1 -> 0.
        mov ecx, 0
        mov eax, 0x300000
        mov edx, 16
        mov esi, 0x10001
        call add_desc
        mov ecx, 1
        mov eax, 0x300100
        mov edx, 16
        mov esi, 0x00001
        call add_desc
        mov ecx, 0
        call publish
        mov dword ptr [ebx + REG_NOTIFY], 0
        mov ecx, 1
        call wait_used

        # A buffer far outside the 32 MiB of guest RAM.
        mov ecx, 2
        mov eax, 0xfff00000
        mov edx, 0x100000
        mov esi, 0
        call add_desc
        mov ecx, 2
        call publish
        mov dword ptr [ebx + REG_NOTIFY], 0
        mov ecx, 2
        call wait_used

        # avail.idx a thousand entries ahead.
        add word ptr [RING + 0x1002], 1000
        mov dword ptr [ebx + REG_NOTIFY], 0
1:      test dword ptr [ebx + REG_STATUS], 0x40 # DEVICE_NEEDS_RESET
        jz 1b
        mov esi, offset done
        call puts
        RESET
        .section .rodata
done:   .asciz "hostile done: device needs reset\n"
