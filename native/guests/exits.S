# Exit round-trip benchmark: 2000 port writes to an unclaimed port (each a full exit to the VMM
# and back), then reset. The VMM's stats time the first and last exit.
        .include "common.inc"
        .globl _start
_start:
        mov ecx, 2000
1:      out 0x80, al
        dec ecx
        jnz 1b
        RESET
