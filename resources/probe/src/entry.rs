//! Everything the probe runs at CPL0, in assembly: on our nested KVM every CPL0 instruction goes
//! through an instruction emulator, which is slow (~1,700x) and fails on most SSE instructions
//! (`xorps` ends the VM with "emulation failure"), so no compiled Rust code runs at CPL0.
//!
//! - `pvh_entry` (32-bit, the PVH note's entry) and `linux64_entry` (64-bit, `e_entry`, image
//!   offset 0x200 = the bzImage's 64-bit entry) both write port 0x80 first, then reach
//!   `common64`: static GDT, stack, SSE on, `.bss` zeroed, static identity map of the first
//!   4 GiB (user pages, the MMIO hole uncached), the BSP's TSS and the IDT, xAPIC mode, and
//!   `iretq` to ring 3 at [`crate::probe_main`]`(proto, info)` with IOPL 3 (which this nested
//!   KVM drops: ring 3 does port I/O through the TSS I/O bitmap).
//! - `ap_entry64`: where the AP trampoline lands; loads the tables and the AP's TSS and drops to
//!   ring 3 at `crate::smp::ap_main(ticket)`.
//! - Exceptions (vectors 0-31, IST1) copy their frame to `exc_frame` and leave for ring 3 at
//!   [`crate::cpu::exception_report`], except the #GP of a ring-3 `hlt`, which halts the CPU:
//!   that is how ring 3 stops a CPU, and the #GP of a ring-3 `sti` / `cli` (IOPL is 0 here),
//!   which sets / clears IF in the saved RFLAGS and returns past the instruction: that is how
//!   ring 3 takes interrupts (see `virtio/irq.rs`), and the #GP of a ring-3 `clts`, which makes
//!   a KVM hypercall at CPL0 with ring 3's registers (see `pagestate.rs`). (This nested KVM turns a ring-3 `int n` into #UD, so the
//!   probe has no `int` gate.)

use crate::cpu::{GDT_ENTRIES, KERNEL_CS, KERNEL_DS, TSS_BASE, USER_CS, USER_DS};
use core::arch::global_asm;

/// Boot protocol numbers passed to `probe_main`.
pub const BOOT_PVH: u32 = 1;
/// See [`BOOT_PVH`].
pub const BOOT_LINUX: u32 = 2;
/// RFLAGS for ring 3: IOPL 3, interrupts off.
pub const USER_RFLAGS: u64 = 0x3002;
/// Bytes of the BSP's ring-3 stack.
pub const USTACK_BYTES: u64 = 64 << 10;

global_asm!(
    r#"
    .section .head, "awx"
    .code32
    .globl pvh_entry
pvh_entry:
    out 0x80, al
    mov esi, ebx
    mov edi, {pvh}
    lgdt [gdtr]
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
    lea rsp, [rip + kstack_top]
    lgdt [rip + gdtr]
    lea rax, [rip + 2f]
    push {kcs}
    push rax
    retfq
2:
    mov eax, {kds}
    mov ds, ax
    mov es, ax
    mov ss, ax
    mov fs, ax
    mov gs, ax
    mov rax, cr0
    and rax, -5
    or rax, 0x22
    mov cr0, rax
    mov rax, cr4
    or rax, 0x620
    mov cr4, rax
    lea rax, [rip + boot_pml4]
    mov cr3, rax
    mov r12d, edi
    mov r13, rsi
    lea rdi, [rip + __bss_start]
    lea rcx, [rip + __bss_end]
    sub rcx, rdi
    shr rcx, 3
    xor eax, eax
    rep stosq

    # The BSP's TSS: ring-0 stack, IST1, and an I/O bitmap allowing every port (this nested KVM
    # does not honour IOPL 3 from iretq; the bitmap lets ring 3 do port I/O everywhere).
    lea rax, [rip + bsp_tss]
    lea rcx, [rip + kstack_top]
    mov [rax + 4], rcx
    lea rcx, [rip + istack_top]
    mov [rax + 36], rcx
    mov word ptr [rax + 102], 104
    mov byte ptr [rax + {tss_limit}], 0xff
    # Its descriptor (GDT slot {tss}).
    lea rdi, [rip + gdt + {tss}]
    mov rdx, rax
    shl rdx, 16
    mov rcx, 0xffffff0000
    and rdx, rcx
    mov rcx, rax
    shr rcx, 24
    and rcx, 0xff
    shl rcx, 56
    or rdx, rcx
    mov rcx, 0x0000890000000000 + {tss_limit}
    or rdx, rcx
    mov [rdi], rdx
    shr rax, 32
    mov [rdi + 8], rax
    mov eax, {tss}
    ltr ax

    # IDT: exception gates (IST1) for 0-31.
    lea rdi, [rip + idt]
    lea rsi, [rip + exc_stubs]
    mov ecx, 32
    mov r8, 0x00008e0100000000
3:
    call set_gate
    add rsi, 16
    add rdi, 16
    dec ecx
    jnz 3b
    lidt [rip + idtr]

    # The LAPIC: leave x2APIC mode if the loader enabled it (ring 3 drives it through MMIO).
    mov ecx, 0x1b
    rdmsr
    test eax, 0x400
    jz 4f
    and eax, -0xc01
    wrmsr
    or eax, 0x800
    wrmsr
4:
    and eax, -0x1000
    mov [rip + apic_base], eax
    mov [rip + apic_base + 4], edx

    push {rflags}
    popfq
    mov edi, r12d
    mov rsi, r13
    # Enter ring 3 with RSP = 8 mod 16, as after a `call`, as the ABI expects.
    lea rax, [rip + ustack_top - 8]
    push {uds}
    push rax
    push {rflags}
    push {ucs}
    lea rax, [rip + {main}]
    push rax
    iretq

    # Writes the gate for handler RSI with attributes R8 (type, DPL, IST) at RDI.
set_gate:
    mov rax, rsi
    and eax, 0xffff
    or rax, r8
    mov rdx, rsi
    shr rdx, 16
    and edx, 0xffff
    shl rdx, 48
    or rax, rdx
    mov edx, {kcs}
    shl rdx, 16
    or rax, rdx
    mov [rdi], rax
    mov rax, rsi
    shr rax, 32
    mov [rdi + 8], rax
    ret

    .text
    .globl ap_entry64
ap_entry64:
    test rsp, rsp
    jz 6f
    lgdt [rip + gdtr]
    lea rax, [rip + 5f]
    push {kcs}
    push rax
    retfq
5:
    mov eax, {kds}
    mov ds, ax
    mov es, ax
    mov ss, ax
    mov eax, edi
    shl eax, 4
    add eax, {tss} + 16
    ltr ax
    lidt [rip + idtr]
    mov rax, rsp
    add rax, [rip + ap_ustack_offset]
    sub rax, 8
    push {uds}
    push rax
    push {rflags}
    push {ucs}
    lea rax, [rip + {ap_main}]
    push rax
    iretq
6:
    cli
    hlt
    jmp 6b

    .macro EXC_NOERR v
    .p2align 4
    push 0
    push \v
    jmp exc_common
    .endm
    .macro EXC_ERR v
    .p2align 4
    push \v
    jmp exc_common
    .endm
    .p2align 4
exc_stubs:
    EXC_NOERR 0
    EXC_NOERR 1
    EXC_NOERR 2
    EXC_NOERR 3
    EXC_NOERR 4
    EXC_NOERR 5
    EXC_NOERR 6
    EXC_NOERR 7
    EXC_ERR 8
    EXC_NOERR 9
    EXC_ERR 10
    EXC_ERR 11
    EXC_ERR 12
    EXC_ERR 13
    EXC_ERR 14
    EXC_NOERR 15
    EXC_NOERR 16
    EXC_ERR 17
    EXC_NOERR 18
    EXC_NOERR 19
    EXC_NOERR 20
    EXC_ERR 21
    EXC_NOERR 22
    EXC_NOERR 23
    EXC_NOERR 24
    EXC_NOERR 25
    EXC_NOERR 26
    EXC_NOERR 27
    EXC_NOERR 28
    EXC_ERR 29
    EXC_ERR 30
    EXC_NOERR 31
    # Copies [vector, error, rip, cs, rflags, rsp, ss] and CR2 to exc_frame, then reports
    # from ring 3 on its own stack.
exc_common:
    # Ring 3 halts its CPU by executing `hlt`, which raises #GP: do it here. Ring 3 also
    # toggles RFLAGS.IF with `sti` / `cli`, which raise #GP at IOPL 0: emulate them.
    cmp qword ptr [rsp], 13
    jne 13f
    test byte ptr [rsp + 24], 3
    jz 13f
    push rax
    mov rax, [rsp + 24]
    cmp byte ptr [rax], 0xfb
    je 15f
    cmp byte ptr [rax], 0xfa
    je 16f
    cmp word ptr [rax], 0x060f
    je 18f
    cmp byte ptr [rax], 0xf4
    pop rax
    jne 13f
    cli
14:
    hlt
    jmp 14b
15:
    or qword ptr [rsp + 40], 0x200
    jmp 17f
16:
    and qword ptr [rsp + 40], -0x201
17:
    inc qword ptr [rsp + 24]
    pop rax
    add rsp, 16
    iretq
    # Ring 3's `clts`: a KVM hypercall with ring 3's registers (see `pagestate.rs`); RSI set
    # means AMD (`vmmcall`). RAX carries the answer back past the 2-byte instruction.
18:
    pop rax
    test rsi, rsi
    jnz 19f
    vmcall
    jmp 20f
19:
    vmmcall
20:
    add qword ptr [rsp + 16], 2
    add rsp, 16
    iretq
13:
    cmp byte ptr [rip + exc_busy], 0
    jne exc_nested
    mov byte ptr [rip + exc_busy], 1
    lea rdi, [rip + exc_frame]
    mov ecx, 7
7:
    pop rax
    mov [rdi], rax
    add rdi, 8
    dec ecx
    jnz 7b
    mov rax, cr2
    mov [rdi], rax
    lea rdi, [rip + exc_frame]
    lea rax, [rip + exc_ustack_top - 8]
    push {uds}
    push rax
    push {rflags}
    push {ucs}
    lea rax, [rip + {report}]
    push rax
    iretq

    # An exception while reporting one: say so from here and stop.
exc_nested:
    lea rsi, [rip + nested_msg]
    mov edx, 0x3f8
10:
    mov al, [rsi]
    test al, al
    jz 11f
    out dx, al
    inc rsi
    jmp 10b
11:
    mov edx, 0xf4
    mov eax, 1
    out dx, eax
12:
    cli
    hlt
    jmp 12b

    .section .note.Xen, "a"
    .p2align 2
    .long 4
    .long 4
    .long 18
    .asciz "Xen"
    .long pvh_entry

    # The identity map of the first 4 GiB: 2 MiB pages, user-accessible, 3-4 GiB uncached.
    # Ring 3 adds PDPT entries for RAM above 4 GiB (see paging.rs).
    .section .data.boot_pt, "aw"
    .p2align 12
    .globl boot_pml4
boot_pml4:
    .quad boot_pdpt + 7
    .fill 511, 8, 0
    .globl boot_pdpt
boot_pdpt:
    .quad boot_pd + 0x0007
    .quad boot_pd + 0x1007
    .quad boot_pd + 0x2007
    .quad boot_pd + 0x3007
    .fill 508, 8, 0
boot_pd:
    .set pde, 0x87
    .rept 1536
    .quad pde
    .set pde, pde + 0x200000
    .endr
    .rept 512
    .quad pde | 0x18
    .set pde, pde + 0x200000
    .endr

    .section .rodata
nested_msg:
    .asciz "PROBE FAIL exception: another exception while reporting one\nPROBE FAIL\n"

    .section .data, "aw"
    .p2align 4
    .globl gdt
gdt:
    .quad 0
    .quad 0x00af9a000000ffff
    .quad 0x00cf92000000ffff
    .quad 0x00cff2000000ffff
    .quad 0x00affa000000ffff
    .fill {gdt_entries} - 5, 8, 0
    .p2align 3
gdtr:
    .short {gdt_entries} * 8 - 1
    .quad gdt
idtr:
    .short 256 * 16 - 1
    .quad idt
    .globl apic_base
apic_base:
    .quad 0xfee00000
    .globl ap_ustack_offset
ap_ustack_offset:
    .quad 0

    .section .bss, "aw", @nobits
    .p2align 4
bsp_tss:
    .skip {tss_limit} + 1
    .p2align 4
    .globl idt
idt:
    .skip 256 * 16
    .globl exc_frame
exc_frame:
    .skip 8 * 8
exc_busy:
    .skip 8

    .section .stack, "aw", @nobits
    .p2align 12
    .skip 16384
kstack_top:
    .skip 8192
istack_top:
    .skip 16384
exc_ustack_top:
    .skip {ustack}
    .globl ustack_top
ustack_top:
    .text
"#,
    pvh = const BOOT_PVH,
    linux = const BOOT_LINUX,
    kcs = const KERNEL_CS,
    kds = const KERNEL_DS,
    ucs = const USER_CS,
    uds = const USER_DS,
    tss = const TSS_BASE,
    rflags = const USER_RFLAGS,
    gdt_entries = const GDT_ENTRIES,
    ustack = const USTACK_BYTES,
    tss_limit = const crate::cpu::TSS_LIMIT,
    main = sym crate::probe_main,
    ap_main = sym crate::smp::ap_main,
    report = sym crate::cpu::exception_report,
);
