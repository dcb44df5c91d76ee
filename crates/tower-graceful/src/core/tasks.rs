//! Tracked background work (WebSocket sessions, spawned jobs): few, named by
//! the user, so a small list behind a lock. Their *count* is the counter's
//! (`core::counter`); this list only names them for the report.

use std::borrow::Cow;

use tokio::time::Instant;

/// Where a task's name sits in [`Tasks`]; given back when the task ends.
#[derive(Debug)]
pub(crate) struct TaskKey(usize);

/// The names of the tracked tasks alive now, and when each started.
#[derive(Debug, Default)]
pub(crate) struct Tasks {
    slots: Vec<Option<(Cow<'static, str>, Instant)>>,
    free: Vec<usize>,
}

impl Tasks {
    pub(crate) fn insert(&mut self, name: Cow<'static, str>) -> TaskKey {
        let entry = Some((name, Instant::now()));
        let key = match self.free.pop() {
            Some(k) => {
                self.slots[k] = entry;
                k
            }
            None => {
                self.slots.push(entry);
                self.slots.len() - 1
            }
        };
        TaskKey(key)
    }

    pub(crate) fn remove(&mut self, key: TaskKey) {
        self.slots[key.0] = None;
        self.free.push(key.0);
    }

    /// Alive now: name and start.
    pub(crate) fn live(&self) -> impl Iterator<Item = &(Cow<'static, str>, Instant)> {
        self.slots.iter().flatten()
    }

    /// How many are alive.
    #[cfg_attr(not(feature = "metrics"), allow(dead_code))]
    pub(crate) fn len(&self) -> usize {
        self.slots.len() - self.free.len()
    }
}
