//! The TD HOB: the hand-off block list through which TDVF learns the guest's memory (PI
//! specification vol. 3 HOB formats; TDVF design guide, "TD HOB").
//!
//! The list is a PHIT header, one resource-descriptor HOB per memory range - RAM the VMM added
//! at launch as system memory, all other RAM as unaccepted memory that TDVF accepts with
//! TDG.MEM.PAGE.ACCEPT - and an end-of-list HOB.

use veil_firmware::plan::MemoryRange;

use crate::model_memory::RangeSet;

const HOB_TYPE_HANDOFF: u16 = 0x0001;
const HOB_TYPE_RESOURCE_DESCRIPTOR: u16 = 0x0003;
const HOB_TYPE_END_OF_HOB_LIST: u16 = 0xffff;
const HANDOFF_TABLE_VERSION: u32 = 0x0009;
/// `EFI_RESOURCE_SYSTEM_MEMORY`.
pub const RESOURCE_SYSTEM_MEMORY: u32 = 0;
/// `EFI_RESOURCE_MEMORY_UNACCEPTED`.
pub const RESOURCE_MEMORY_UNACCEPTED: u32 = 7;
/// PRESENT | INITIALIZED | TESTED.
pub const ATTR_PRESENT_INITIALIZED_TESTED: u32 = 0x7;

const PHIT_LEN: usize = 56;
const RESOURCE_LEN: usize = 48;
const END_LEN: usize = 8;

/// One resource descriptor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resource {
    /// `RESOURCE_SYSTEM_MEMORY` or `RESOURCE_MEMORY_UNACCEPTED`.
    pub kind: u32,
    /// First byte.
    pub start: u64,
    /// Length.
    pub length: u64,
}

/// The resources for `ram` when the ranges in `added` were added (accepted) at launch.
pub fn resources(ram: &[MemoryRange], added: &RangeSet) -> Vec<Resource> {
    let mut out = Vec::new();
    let mut push = |kind, start, end: u64| {
        if end > start {
            out.push(Resource {
                kind,
                start,
                length: end - start,
            });
        }
    };
    for r in ram.iter().filter(|r| r.size > 0) {
        let end = r.gpa + r.size;
        let mut at = r.gpa;
        for (s, e) in added.pieces(r.gpa, end) {
            push(RESOURCE_MEMORY_UNACCEPTED, at, s);
            push(RESOURCE_SYSTEM_MEMORY, s, e);
            at = e;
        }
        push(RESOURCE_MEMORY_UNACCEPTED, at, end);
    }
    out
}

/// The HOB list for `resources`, to be placed at `hob_gpa`.
pub fn build(hob_gpa: u64, resources: &[Resource]) -> Vec<u8> {
    let total = PHIT_LEN + resources.len() * RESOURCE_LEN + END_LEN;
    let mut b = Vec::with_capacity(total);
    let header = |b: &mut Vec<u8>, ty: u16, len: usize| {
        b.extend_from_slice(&ty.to_le_bytes());
        b.extend_from_slice(&(len as u16).to_le_bytes());
        b.extend_from_slice(&0u32.to_le_bytes());
    };
    header(&mut b, HOB_TYPE_HANDOFF, PHIT_LEN);
    b.extend_from_slice(&HANDOFF_TABLE_VERSION.to_le_bytes());
    b.extend_from_slice(&0u32.to_le_bytes()); // BOOT_WITH_FULL_CONFIGURATION
    for v in [0u64, 0, 0, 0] {
        // Memory top/bottom and free memory top/bottom: TDVF finds its own.
        b.extend_from_slice(&v.to_le_bytes());
    }
    b.extend_from_slice(&(hob_gpa + total as u64).to_le_bytes()); // EfiEndOfHobList
    for r in resources {
        header(&mut b, HOB_TYPE_RESOURCE_DESCRIPTOR, RESOURCE_LEN);
        b.extend_from_slice(&[0u8; 16]); // owner GUID
        b.extend_from_slice(&r.kind.to_le_bytes());
        b.extend_from_slice(&ATTR_PRESENT_INITIALIZED_TESTED.to_le_bytes());
        b.extend_from_slice(&r.start.to_le_bytes());
        b.extend_from_slice(&r.length.to_le_bytes());
    }
    header(&mut b, HOB_TYPE_END_OF_HOB_LIST, END_LEN);
    debug_assert_eq!(b.len(), total);
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn added_ranges_are_system_memory_and_the_rest_unaccepted() {
        let mut added = RangeSet::default();
        added.insert(0x80_0000, 0x80_9000);
        let ram = [MemoryRange {
            gpa: 0,
            size: 0x100_0000,
        }];
        let r = resources(&ram, &added);
        assert_eq!(
            r,
            [
                Resource {
                    kind: RESOURCE_MEMORY_UNACCEPTED,
                    start: 0,
                    length: 0x80_0000
                },
                Resource {
                    kind: RESOURCE_SYSTEM_MEMORY,
                    start: 0x80_0000,
                    length: 0x9000
                },
                Resource {
                    kind: RESOURCE_MEMORY_UNACCEPTED,
                    start: 0x80_9000,
                    length: 0x100_0000 - 0x80_9000
                },
            ]
        );
        let hob = build(0x80_9000, &r);
        assert_eq!(hob.len(), 56 + 3 * 48 + 8);
        assert_eq!(&hob[0..4], &[1, 0, 56, 0]);
        let end_of_list = u64::from_le_bytes(hob[48..56].try_into().unwrap());
        assert_eq!(end_of_list, 0x80_9000 + hob.len() as u64);
        assert_eq!(&hob[hob.len() - 8..hob.len() - 4], &[0xff, 0xff, 8, 0]);
    }
}
