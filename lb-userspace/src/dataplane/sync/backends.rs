//! Backend ids: stable while a backend stays, reused after it leaves with a new generation.

use std::collections::{BTreeMap, HashMap};

use super::SyncError;
use crate::balancer::DesiredBackend;

#[derive(Debug)]
pub(super) struct BackendIds {
    ids: BTreeMap<DesiredBackend, u32>,
    /// Generation each id had when last handed out.
    generations: HashMap<u32, u32>,
    free: Vec<u32>,
    next: u32,
    max: u32,
}

impl BackendIds {
    pub(super) fn new(max: u32) -> Self {
        Self {
            ids: BTreeMap::new(),
            generations: HashMap::new(),
            free: Vec::new(),
            next: 0,
            max,
        }
    }

    pub(super) fn id(&self, backend: &DesiredBackend) -> Option<u32> {
        self.ids.get(backend).copied()
    }

    /// A new id for `backend`, and its generation: one more than the id's last, so
    /// connection-table entries of the id's previous owner no longer match.
    pub(super) fn allocate(&mut self, backend: &DesiredBackend) -> Result<(u32, u32), SyncError> {
        let id = match self.free.pop() {
            Some(id) => id,
            None if self.next < self.max => {
                self.next += 1;
                self.next - 1
            }
            None => return Err(SyncError::TooMany { max: self.max }),
        };
        let generation = self.generations.entry(id).or_insert(0);
        *generation = generation.wrapping_add(1);
        let generation = *generation;
        self.ids.insert(backend.clone(), id);
        Ok((id, generation))
    }

    /// Applied backends not in `wanted` (sorted), with their ids and generations.
    pub(super) fn unreferenced(
        &self,
        wanted: &[DesiredBackend],
    ) -> Vec<(DesiredBackend, u32, u32)> {
        self.ids
            .iter()
            .filter(|(b, _)| wanted.binary_search(b).is_err())
            .map(|(b, id)| {
                (
                    b.clone(),
                    *id,
                    self.generations.get(id).copied().unwrap_or(0),
                )
            })
            .collect()
    }

    /// Takes `id` with `generation` for `backend` (adopted from pinned maps).
    pub(super) fn reserve(
        &mut self,
        backend: &DesiredBackend,
        id: u32,
        generation: u32,
    ) -> Result<(), SyncError> {
        self.remember_generation(id, generation)?;
        self.free.retain(|free| *free != id);
        self.ids.insert(backend.clone(), id);
        Ok(())
    }

    /// Records that `id` was last handed out with `generation`, so its next owner gets a
    /// later one; the id stays free.
    pub(super) fn remember_generation(
        &mut self,
        id: u32,
        generation: u32,
    ) -> Result<(), SyncError> {
        if id >= self.max {
            return Err(SyncError::TooMany { max: self.max });
        }
        while self.next <= id {
            self.free.push(self.next);
            self.next += 1;
        }
        self.generations.insert(id, generation);
        Ok(())
    }

    pub(super) fn free(&mut self, backend: &DesiredBackend) {
        if let Some(id) = self.ids.remove(backend) {
            self.free.push(id);
        }
    }
}
