//! The part of the platform models both share: memory slots, which ranges are private, which
//! pages were launched, the vCPUs, and the command log.

use std::collections::BTreeMap;

use kvm_bindings::kvm_cpuid_entry2;

use crate::platform::{CommandError, Rule, SlotSpec};
use veil_firmware::plan::PAGE_SIZE;

/// A set of disjoint half-open ranges `[start, end)`.
#[derive(Debug, Clone, Default)]
pub struct RangeSet {
    map: BTreeMap<u64, u64>,
}

impl RangeSet {
    /// Adds `[start, end)`.
    pub fn insert(&mut self, mut start: u64, mut end: u64) {
        if start >= end {
            return;
        }
        // Merge with every range that touches [start, end).
        let touching: Vec<(u64, u64)> = self
            .map
            .range(..=end)
            .filter(|(_, e)| **e >= start)
            .map(|(s, e)| (*s, *e))
            .collect();
        for (s, e) in touching {
            self.map.remove(&s);
            start = start.min(s);
            end = end.max(e);
        }
        self.map.insert(start, end);
    }

    /// Removes `[start, end)`.
    pub fn remove(&mut self, start: u64, end: u64) {
        if start >= end {
            return;
        }
        let overlapping: Vec<(u64, u64)> = self
            .map
            .range(..end)
            .filter(|(_, e)| **e > start)
            .map(|(s, e)| (*s, *e))
            .collect();
        for (s, e) in overlapping {
            self.map.remove(&s);
            if s < start {
                self.map.insert(s, start);
            }
            if e > end {
                self.map.insert(end, e);
            }
        }
    }

    /// Whether all of `[start, end)` is in the set.
    pub fn contains_all(&self, start: u64, end: u64) -> bool {
        match self.map.range(..=start).next_back() {
            Some((_, e)) => *e >= end,
            None => start >= end,
        }
    }

    /// Whether any of `[start, end)` is in the set.
    pub fn contains_any(&self, start: u64, end: u64) -> bool {
        self.map.range(..end).any(|(_, e)| *e > start)
    }

    /// The parts of the set inside `[start, end)`, in order.
    pub fn pieces(&self, start: u64, end: u64) -> Vec<(u64, u64)> {
        self.map
            .range(..end)
            .filter(|(_, e)| **e > start)
            .map(|(s, e)| ((*s).max(start), (*e).min(end)))
            .collect()
    }

    /// The first address of `[start, end)` not in the set, if any.
    pub fn first_missing(&self, start: u64, end: u64) -> Option<u64> {
        let mut at = start;
        while at < end {
            match self.map.range(..=at).next_back() {
                Some((_, e)) if *e > at => at = *e,
                _ => return Some(at),
            }
        }
        None
    }
}

/// Memory, vCPUs and log of a modelled confidential VM.
#[derive(Debug, Default)]
pub struct ModelMemory {
    /// Slots added, in order.
    pub slots: Vec<SlotSpec>,
    /// Ranges whose attributes are PRIVATE.
    pub private: RangeSet,
    /// Ranges discarded since the last conversion (for run-time tests).
    pub discarded_private: RangeSet,
    /// Shared ranges discarded.
    pub discarded_shared: RangeSet,
    /// vCPU ids in creation order.
    pub vcpus: Vec<u32>,
    /// `KVM_CAP_EXIT_HYPERCALL` enabled.
    pub page_state_exits: bool,
    /// Every command that crossed the interface, one line each.
    pub log: Vec<String>,
}

/// `len` bytes at `gpa` are a non-empty, page-aligned range (without overflow).
pub fn check_aligned(command: &'static str, gpa: u64, len: u64) -> Result<u64, CommandError> {
    let end = gpa.checked_add(len);
    match end {
        Some(end) if len > 0 && gpa % PAGE_SIZE == 0 && len % PAGE_SIZE == 0 => Ok(end),
        _ => Err(CommandError::rule(
            command,
            libc::EINVAL,
            Rule::Alignment,
            format!("range {gpa:#x}+{len:#x} is not a non-empty run of 4 KiB-aligned pages"),
        )),
    }
}

/// `src` can feed `len` bytes of pages: long enough and 4 KiB aligned, as KVM requires of the
/// source of a launch update.
pub fn check_source(command: &'static str, src: &[u8], len: u64) -> Result<(), CommandError> {
    if (src.len() as u64) < len {
        return Err(CommandError::rule(
            command,
            libc::EFAULT,
            Rule::Alignment,
            format!("source holds {:#x} bytes for {len:#x}", src.len()),
        ));
    }
    if src.as_ptr() as usize % PAGE_SIZE as usize != 0 {
        return Err(CommandError::rule(
            command,
            libc::EINVAL,
            Rule::Alignment,
            format!("source address {:p} is not 4 KiB aligned", src.as_ptr()),
        ));
    }
    Ok(())
}

/// How many of `pages` one launch-update call takes when the model is set to take at most `max`
/// per call (at least one page, so the caller always makes progress).
pub fn pages_this_call(max: Option<u64>, pages: u64) -> u64 {
    max.map_or(pages, |m| m.clamp(1, pages))
}

/// The log's note on a launch-update call that took only `done` of `pages` (empty when all).
pub fn partial_note(done: u64, pages: u64) -> String {
    if done < pages {
        format!(" -> {done} done, rest written back")
    } else {
        String::new()
    }
}

/// Implements the slot, attribute, discard and page-state-exit methods of
/// [`crate::platform::PrivateMemory`] by handing them to the model's [`ModelMemory`] field
/// `$mem`; the model writes its own `create_vcpu` (the platforms differ in when vCPUs may come).
macro_rules! private_memory_from {
    ($mem:ident) => {
        fn add_slot(
            &mut self,
            spec: $crate::platform::SlotSpec,
        ) -> Result<(), $crate::platform::CommandError> {
            self.$mem.add_slot(spec)
        }

        fn set_memory_attributes(
            &mut self,
            gpa: u64,
            size: u64,
            private: bool,
        ) -> Result<(), $crate::platform::CommandError> {
            self.$mem.set_attributes(gpa, size, private)
        }

        fn discard(
            &mut self,
            gpa: u64,
            size: u64,
            private_backing: bool,
        ) -> Result<(), $crate::platform::CommandError> {
            self.$mem.discard(gpa, size, private_backing)
        }

        fn enable_page_state_exits(&mut self) -> Result<(), $crate::platform::CommandError> {
            self.$mem.enable_page_state_exits();
            Ok(())
        }
    };
}
pub(crate) use private_memory_from;

impl ModelMemory {
    /// Records `KVM_GET_SUPPORTED_CPUID` answered with `supported`, and returns the answer.
    pub fn supported_cpuid(&mut self, supported: &[kvm_cpuid_entry2]) -> Vec<kvm_cpuid_entry2> {
        self.log.push(format!(
            "KVM_GET_SUPPORTED_CPUID ({} entries)",
            supported.len()
        ));
        supported.to_vec()
    }

    /// Checks that vCPU `id` was created, for a `command` addressed to it.
    pub fn require_vcpu(&self, command: &'static str, id: u32) -> Result<(), CommandError> {
        if self.vcpus.contains(&id) {
            return Ok(());
        }
        Err(CommandError::rule(
            command,
            libc::ENOENT,
            Rule::VcpuState,
            format!("vCPU {id} was never created"),
        ))
    }

    /// Records `KVM_SET_CPUID2` for vCPU `id`, which must exist.
    pub fn set_vcpu_cpuid(
        &mut self,
        id: u32,
        cpuid: &[kvm_cpuid_entry2],
    ) -> Result<(), CommandError> {
        const CMD: &str = "KVM_SET_CPUID2";
        self.require_vcpu(CMD, id)?;
        self.log
            .push(format!("{CMD} vcpu={id} nent={}", cpuid.len()));
        Ok(())
    }

    /// Records `KVM_SET_USER_MEMORY_REGION2` with a guest_memfd.
    pub fn add_slot(&mut self, spec: SlotSpec) -> Result<(), CommandError> {
        const CMD: &str = "KVM_SET_USER_MEMORY_REGION2";
        let end = check_aligned(CMD, spec.gpa, spec.size)?;
        if let Some(o) = self
            .slots
            .iter()
            .find(|s| s.slot == spec.slot || (spec.gpa < s.gpa + s.size && s.gpa < end))
        {
            return Err(CommandError::rule(
                CMD,
                libc::EEXIST,
                Rule::Slot,
                format!(
                    "slot {} at {:#x}+{:#x} clashes with slot {} at {:#x}+{:#x}",
                    spec.slot, spec.gpa, spec.size, o.slot, o.gpa, o.size
                ),
            ));
        }
        self.log.push(format!(
            "KVM_CREATE_GUEST_MEMFD size={:#x}; KVM_SET_USER_MEMORY_REGION2 slot={} gpa={:#x} \
             size={:#x} flags=KVM_MEM_GUEST_MEMFD",
            spec.size, spec.slot, spec.gpa, spec.size
        ));
        self.slots.push(spec);
        Ok(())
    }

    /// Records `KVM_SET_MEMORY_ATTRIBUTES`.
    pub fn set_attributes(
        &mut self,
        gpa: u64,
        size: u64,
        private: bool,
    ) -> Result<(), CommandError> {
        let end = check_aligned("KVM_SET_MEMORY_ATTRIBUTES", gpa, size)?;
        if private {
            self.private.insert(gpa, end);
        } else {
            self.private.remove(gpa, end);
        }
        self.log.push(format!(
            "KVM_SET_MEMORY_ATTRIBUTES gpa={gpa:#x} size={size:#x} attributes={}",
            if private { "PRIVATE" } else { "0 (shared)" }
        ));
        Ok(())
    }

    /// Records a discard of backing pages.
    pub fn discard(
        &mut self,
        gpa: u64,
        size: u64,
        private_backing: bool,
    ) -> Result<(), CommandError> {
        let what = if private_backing {
            "fallocate(guest_memfd, PUNCH_HOLE)"
        } else {
            "madvise(shared view, DONTNEED)"
        };
        let end = check_aligned(
            if private_backing {
                "fallocate"
            } else {
                "madvise"
            },
            gpa,
            size,
        )?;
        if private_backing {
            self.discarded_private.insert(gpa, end);
        } else {
            self.discarded_shared.insert(gpa, end);
        }
        self.log.push(format!("{what} gpa={gpa:#x} size={size:#x}"));
        Ok(())
    }

    /// Checks that `[gpa, gpa + len)` lies in guest_memfd slots and is PRIVATE.
    pub fn check_private(
        &self,
        command: &'static str,
        gpa: u64,
        len: u64,
    ) -> Result<(), CommandError> {
        let end = gpa + len;
        let mut at = gpa;
        while at < end {
            let Some(s) = self
                .slots
                .iter()
                .find(|s| s.gpa <= at && at < s.gpa + s.size)
            else {
                return Err(CommandError::rule(
                    command,
                    libc::EINVAL,
                    Rule::NotPrivate,
                    format!("GPA {at:#x} is in no guest_memfd memory slot"),
                ));
            };
            at = (s.gpa + s.size).min(end);
        }
        if let Some(p) = self.private.first_missing(gpa, end) {
            return Err(CommandError::rule(
                command,
                libc::EINVAL,
                Rule::NotPrivate,
                format!("GPA {p:#x} is not PRIVATE: set the memory attributes before the update"),
            ));
        }
        Ok(())
    }

    /// Records `KVM_CREATE_VCPU`.
    pub fn create_vcpu(&mut self, id: u32) -> Result<(), CommandError> {
        if self.vcpus.contains(&id) {
            return Err(CommandError::rule(
                "KVM_CREATE_VCPU",
                libc::EEXIST,
                Rule::VcpuState,
                format!("vCPU {id} exists already"),
            ));
        }
        self.vcpus.push(id);
        self.log.push(format!("KVM_CREATE_VCPU id={id}"));
        Ok(())
    }

    /// Records `KVM_ENABLE_CAP(KVM_CAP_EXIT_HYPERCALL)`.
    pub fn enable_page_state_exits(&mut self) {
        self.page_state_exits = true;
        self.log
            .push("KVM_ENABLE_CAP KVM_CAP_EXIT_HYPERCALL args[0]=1<<KVM_HC_MAP_GPA_RANGE".into());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_set_merges_splits_and_answers() {
        let mut r = RangeSet::default();
        r.insert(0x1000, 0x3000);
        r.insert(0x3000, 0x5000);
        assert!(r.contains_all(0x1000, 0x5000));
        r.remove(0x2000, 0x3000);
        assert!(!r.contains_all(0x1000, 0x5000));
        assert_eq!(r.first_missing(0x1000, 0x5000), Some(0x2000));
        assert!(r.contains_any(0x2000, 0x3001));
        assert!(!r.contains_any(0x2000, 0x3000));
        assert_eq!(r.first_missing(0x3000, 0x5000), None);
    }
}
