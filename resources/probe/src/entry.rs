//! Entry points: the 32-bit PVH entry, the 64-bit Linux boot protocol entry (at image offset 0x200,
//! which is also the bzImage's 64-bit entry), the PVH ELF note and the boot page tables.
//!
//! Both entries write to port 0x80 first (Veil's boot marker), then reach `common64`, which loads
//! the probe's boot GDT, a stack, enables SSE, zeroes `.bss` and calls [`crate::probe_start`].

use core::arch::global_asm;

/// Boot protocol numbers passed to `probe_start` in EDI.
pub const BOOT_PVH: u32 = 1;
/// See [`BOOT_PVH`].
pub const BOOT_LINUX: u32 = 2;

global_asm!(
    r#"
    .section .head, "awx"
    .code32
    .globl pvh_entry
pvh_entry:
    out 0x80, al
    mov esi, ebx
    mov edi, {pvh}
    lgdt [boot_gdtr]
    mov eax, cr4
    or eax, 0x620
    mov cr4, eax
    mov eax, offset boot_pml4
    mov cr3, eax
    mov ecx, 0xc0000080
    rdmsr
    or eax, 0x100
    wrmsr
    mov eax, cr0
    or eax, 0x80000001
    mov cr0, eax
    ljmp 0x08, offset pvh_long
    .code64
pvh_long:
    jmp common64

    .org 0x200
    .globl linux64_entry
linux64_entry:
    out 0x80, al
    mov edi, {linux}
common64:
    lea rsp, [rip + boot_stack_top]
    lgdt [rip + boot_gdtr]
    lea rax, [rip + 2f]
    push 0x08
    push rax
    retfq
2:
    mov eax, 0x10
    mov ds, ax
    mov es, ax
    mov ss, ax
    mov fs, ax
    mov gs, ax
    mov rax, cr0
    and rax, -5
    or rax, 2
    mov cr0, rax
    mov rax, cr4
    or rax, 0x600
    mov cr4, rax
    mov r12d, edi
    mov r13, rsi
    lea rdi, [rip + __bss_start]
    lea rcx, [rip + __bss_end]
    sub rcx, rdi
    shr rcx, 3
    xor eax, eax
    rep stosq
    mov edi, r12d
    mov rsi, r13
    call {start}
    ud2

    .section .note.Xen, "a"
    .p2align 2
    .long 4
    .long 4
    .long 18
    .asciz "Xen"
    .long pvh_entry

    .section .data.boot_pt, "aw"
    .p2align 12
boot_pml4:
    .quad boot_pdpt + 3
    .fill 511, 8, 0
boot_pdpt:
    .quad boot_pd + 3
    .fill 511, 8, 0
boot_pd:
    .set pde, 0x83
    .rept 512
    .quad pde
    .set pde, pde + 0x200000
    .endr

    .p2align 3
boot_gdt:
    .quad 0
    .quad 0x00af9a000000ffff
    .quad 0x00cf92000000ffff
boot_gdt_end:
    .p2align 3
boot_gdtr:
    .short boot_gdt_end - boot_gdt - 1
    .quad boot_gdt

    .section .stack, "aw", @nobits
    .p2align 12
boot_stack:
    .skip 16384
    .globl boot_stack_top
boot_stack_top:
    .text
"#,
    pvh = const BOOT_PVH,
    linux = const BOOT_LINUX,
    start = sym crate::probe_start,
);
