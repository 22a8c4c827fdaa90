# Idles with interrupts off: the vCPU sleeps inside KVM, so the VMM's own footprint can be
# measured with a running VM.
        .include "common.inc"
        .globl _start
_start:
        cli
1:      hlt
        jmp 1b
