# Starts the second vCPU with INIT/SIPI through the local APIC, as an SMP kernel does; the AP
# comes up in real mode, prints on the UART and raises a flag the BSP waits for.
        .include "common.inc"
        .set APIC, 0xfee00000
        .set TRAMPOLINE, 0x10000            # SIPI vector 0x10
        .set FLAG, 0x7000
        .globl _start
_start:
        mov esp, 0x80000
        mov esi, offset ap_code
        mov edi, TRAMPOLINE
        mov ecx, ap_end - ap_code
        rep movsb
        mov dword ptr [APIC + 0xf0], 0x1ff          # software-enable the LAPIC
        mov dword ptr [APIC + 0x310], 0x01000000    # destination: APIC id 1
        mov dword ptr [APIC + 0x300], 0x00004500    # INIT
        mov dword ptr [APIC + 0x300], 0x00004610    # STARTUP, vector 0x10
1:      cmp byte ptr [FLAG], 1
        jne 1b
        mov esi, offset bsp_msg
        call puts
        RESET
        .section .rodata
bsp_msg: .asciz "BSP saw the AP\n"

# Real-mode code for the AP, copied below 1 MiB by the BSP.
        .code16
ap_code:
        mov dx, 0x3f8
        mov al, 'A'
        out dx, al
        mov al, 'P'
        out dx, al
        mov al, '\n'
        out dx, al
        xor ax, ax
        mov ds, ax
        mov byte ptr ds:[FLAG], 1
2:      hlt
        jmp 2b
ap_end:
        .code32
