# Triple fault: an empty IDT and an invalid opcode, so the #UD cannot be delivered, nor the
# double fault. The VM must end with reason "reset", the host process unharmed.
        .include "common.inc"
        .globl _start
_start:
        lidt [idt_ptr]
        ud2
        .section .rodata
idt_ptr: .word 0
        .long 0
