# Prints a greeting and the kernel command line it was given, checks the PVH start info, resets.
        .include "common.inc"
        .globl _start
_start:
        mov esp, 0x80000
        cmp dword ptr [ebx], 0x336ec578     # hvm_start_info magic
        jne fail
        mov esi, offset hello
        call puts
        mov esi, [ebx + 24]                 # cmdline_paddr
        call puts
        mov esi, offset nl
        call puts
        RESET
        .section .rodata
hello:  .asciz "hello from the guest\ncmdline: "
nl:     .asciz "\n"
