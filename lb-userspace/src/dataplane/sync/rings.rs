//! Regions of the ring map: each L4 service owns `2 * table_size` consecutive slots.

use super::SyncError;

/// A service's region: two tables of `table_size` slots from `start`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct RingRegion {
    pub start: u32,
    pub table_size: u32,
}

impl RingRegion {
    /// First slot of table `half` (0 or 1).
    pub(super) fn half_offset(&self, half: usize) -> u32 {
        if half == 0 {
            self.start
        } else {
            self.start + self.table_size
        }
    }

    fn len(&self) -> u32 {
        self.table_size * 2
    }
}

/// First-fit allocation of regions in a ring map of `capacity` slots.
#[derive(Debug)]
pub(super) struct RingAllocator {
    capacity: u32,
    /// Allocated regions, sorted by start.
    used: Vec<RingRegion>,
}

impl RingAllocator {
    pub(super) fn new(capacity: u32) -> Self {
        Self {
            capacity,
            used: Vec::new(),
        }
    }

    pub(super) fn allocate(&mut self, table_size: u32) -> Result<RingRegion, SyncError> {
        let full = SyncError::RingsFull {
            capacity: self.capacity,
        };
        let len = table_size.checked_mul(2).ok_or(full)?;
        let mut start = 0u32;
        let mut at = self.used.len();
        for (i, region) in self.used.iter().enumerate() {
            if region.start >= start.saturating_add(len) {
                at = i;
                break;
            }
            start = region.start + region.len();
        }
        if start.checked_add(len).is_none_or(|end| end > self.capacity) {
            return Err(SyncError::RingsFull {
                capacity: self.capacity,
            });
        }
        let region = RingRegion { start, table_size };
        self.used.insert(at, region);
        Ok(region)
    }

    /// Marks `region` as used (adopted from pinned maps); fails if it overlaps another or
    /// lies outside the map.
    pub(super) fn reserve(&mut self, region: RingRegion) -> Result<(), SyncError> {
        let end = region.start.checked_add(region.len());
        if end.is_none_or(|end| end > self.capacity)
            || self
                .used
                .iter()
                .any(|r| region.start < r.start + r.len() && r.start < region.start + region.len())
        {
            return Err(SyncError::Adopt {
                reason: format!(
                    "ring region at {} ({} slots) overlaps another or exceeds the map's {}",
                    region.start,
                    region.len(),
                    self.capacity
                ),
            });
        }
        let at = self.used.partition_point(|r| r.start < region.start);
        self.used.insert(at, region);
        Ok(())
    }

    pub(super) fn free(&mut self, region: RingRegion) {
        self.used.retain(|r| *r != region);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regions_do_not_overlap_and_freed_space_is_reused() {
        let mut rings = RingAllocator::new(100);
        let a = rings.allocate(10).unwrap_or_else(|e| panic!("{e}"));
        let b = rings.allocate(20).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((a.start, b.start), (0, 20));
        assert_eq!(b.half_offset(1), 40);
        rings.free(a);
        let c = rings.allocate(5).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.start, 0, "first fit reuses the hole");
        let d = rings.allocate(10).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(d.start, 60);
        assert!(matches!(
            rings.allocate(11),
            Err(SyncError::RingsFull { capacity: 100 })
        ));
        assert!(matches!(
            rings.allocate(u32::MAX),
            Err(SyncError::RingsFull { .. })
        ));
    }
}
