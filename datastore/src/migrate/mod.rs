//! Importing a Calico cluster's etcd datastore: the pure part. [`calico`] reads Calico's key
//! layout and record JSON (libcalico-go's backend model), [`translate`] turns them into
//! margay's records (or reports every problem with its Calico key), and [`plan`] compares
//! them with what margay's etcd already holds: create, update (`--overwrite` only), same,
//! or a conflict that stops the import. `margayctl datastore migrate from-calico` does the
//! reading and writing around it.

pub mod calico;
#[cfg(feature = "testing")]
pub mod fixture;
pub mod translate;

pub use translate::{Problem, Record, Skipped, Translation, translate};

use std::collections::BTreeMap;

/// What happens to one record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Create,
    /// Replaces a differing margay record read at this revision (`--overwrite`).
    Update {
        mod_revision: i64,
    },
    /// margay already holds exactly this.
    Same,
}

impl Action {
    /// `create`, `update`, `same`.
    pub fn word(&self) -> &'static str {
        match self {
            Action::Create => "create",
            Action::Update { .. } => "update",
            Action::Same => "same",
        }
    }
}

/// A margay record already there that differs from what Calico's data becomes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{key}: margay already holds a different {kind} '{name}' (from {source_key}); --overwrite replaces it"
)]
pub struct Conflict {
    pub key: String,
    pub kind: &'static str,
    pub name: String,
    pub source_key: String,
}

/// Each record with what to do, given margay's current values by key (bytes and
/// mod_revision). A differing record is a conflict unless `overwrite`.
pub fn plan(
    records: Vec<Record>,
    existing: &BTreeMap<String, (Vec<u8>, i64)>,
    overwrite: bool,
) -> Result<Vec<(Record, Action)>, Vec<Conflict>> {
    let mut out = Vec::with_capacity(records.len());
    let mut conflicts = Vec::new();
    for r in records {
        let action = match existing.get(&r.key) {
            None => Action::Create,
            Some((bytes, rev)) => {
                let same = bytes == &r.value
                    || serde_json::from_slice::<serde_json::Value>(bytes)
                        .is_ok_and(|v| v == r.json());
                match (same, overwrite) {
                    (true, _) => Action::Same,
                    (false, true) => Action::Update { mod_revision: *rev },
                    (false, false) => {
                        conflicts.push(Conflict {
                            key: r.key.clone(),
                            kind: r.kind,
                            name: r.name.clone(),
                            source_key: r.source.clone(),
                        });
                        continue;
                    }
                }
            }
        };
        out.push((r, action));
    }
    if conflicts.is_empty() {
        Ok(out)
    } else {
        Err(conflicts)
    }
}

#[cfg(test)]
mod tests;
