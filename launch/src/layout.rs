//! The guest_memfd memory slots a confidential launch needs: the plan's RAM, plus the ranges
//! imports use outside RAM (the firmware image below 4 GiB).

use crate::platform::SlotSpec;
use veil_firmware::LaunchPlan;
use veil_firmware::plan::PAGE_SIZE;

fn merge(mut v: Vec<(u64, u64)>) -> Vec<(u64, u64)> {
    v.sort_unstable();
    let mut out: Vec<(u64, u64)> = Vec::new();
    for (s, e) in v {
        match out.last_mut() {
            Some(last) if s <= last.1 => last.1 = last.1.max(e),
            _ => out.push((s, e)),
        }
    }
    out
}

/// The slots for `plan`, numbered from 0 in GPA order: each RAM range, and each run of import
/// pages outside RAM, rounded out to whole pages.
pub fn slots(plan: &LaunchPlan) -> Vec<SlotSpec> {
    let ram: Vec<(u64, u64)> = merge(
        plan.memory
            .iter()
            .filter(|m| m.size > 0)
            .map(|m| (m.gpa, m.gpa + m.size))
            .collect(),
    );
    let mut outside = Vec::new();
    for imp in &plan.imports {
        let (mut s, e) = (imp.gpa, imp.gpa + imp.size);
        // Walk the import across the RAM ranges, collecting the pieces no range covers.
        for &(rs, re) in &ram {
            if re <= s || rs >= e {
                continue;
            }
            if rs > s {
                outside.push((s, rs));
            }
            s = s.max(re);
        }
        if s < e {
            outside.push((s, e));
        }
    }
    let outside = merge(
        outside
            .into_iter()
            .map(|(s, e)| (s / PAGE_SIZE * PAGE_SIZE, e.div_ceil(PAGE_SIZE) * PAGE_SIZE))
            .collect(),
    );
    let mut all: Vec<(u64, u64)> = ram.into_iter().chain(outside).collect();
    all.sort_unstable();
    all.into_iter()
        .enumerate()
        .map(|(i, (s, e))| SlotSpec {
            slot: i as u32,
            gpa: s,
            size: e - s,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use veil_firmware::plan::{MemoryRange, PageData, PageImport, PageKind, Platform};

    #[test]
    fn firmware_below_4g_gets_its_own_slot_next_to_ram() {
        let mut plan = LaunchPlan::new(Platform::SevSnp);
        plan.memory = vec![MemoryRange {
            gpa: 0,
            size: 512 << 20,
        }];
        for (gpa, size) in [(0x80_0000u64, 0x9000u64), (0xffc0_0000, 0x40_0000)] {
            plan.imports.push(PageImport {
                gpa,
                size,
                kind: PageKind::Zero,
                data: PageData::Zero,
                label: "x".into(),
            });
        }
        let s = slots(&plan);
        assert_eq!(s.len(), 2);
        assert_eq!((s[0].gpa, s[0].size), (0, 512 << 20));
        assert_eq!(
            (s[1].slot, s[1].gpa, s[1].size),
            (1, 0xffc0_0000, 0x40_0000)
        );
    }
}
