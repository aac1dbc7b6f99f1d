//! The kernel edge of policy: applies the desired [`Table`] to felix's policy table as one
//! transaction per change, reads the kernel's table back to repair drift, and adopts the table a
//! previous felix left (a restart patches it in place, it never flushes it first).
//!
//! Transactions go through a long-lived libnftables context ([`NftLib`]) when the library loads,
//! else through the `nft` binary; the kernel's table is always read with a fresh `nft -j list`,
//! so drift repair never trusts a cache.

use super::incremental::Touched;
use super::listing::{self, ListingError};
use super::render::{TABLE, TABLE_FAMILY, Table};
use super::script;
use crate::nat::{NatError, Nft};
use crate::nftlib::{NftLib, NftLibError};

/// Why the policy table could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error(transparent)]
    Nft(#[from] NatError),
    #[error(transparent)]
    Listing(#[from] ListingError),
    #[error(transparent)]
    Lib(#[from] NftLibError),
}

/// What one pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PolicyReport {
    /// Transactions committed (0: the table already matched).
    pub transactions: usize,
    /// Lines of the committed script (a measure of how much changed).
    pub script_lines: usize,
    /// Whether the kernel's table was read and differed from what felix last wrote.
    pub drift: bool,
}

/// Keeps felix's policy table equal to the desired one.
#[derive(Debug)]
pub struct PolicyKeeper {
    nft: Nft,
    /// The long-lived context transactions go through (`None`: the `nft` binary).
    lib: Option<NftLib>,
    /// The table as felix last committed it; `None`: unknown, read the kernel's first.
    applied: Option<Table>,
    /// Whether `applied` describes a table that exists (false: felix knows there is none).
    exists: bool,
}

impl PolicyKeeper {
    /// A keeper writing through libnftables in `nft`'s namespace, or through `nft` itself
    /// when the library cannot be loaded (logged once).
    pub fn new(nft: Nft) -> PolicyKeeper {
        let lib = match NftLib::open(nft.netns()) {
            Ok(l) => Some(l),
            Err(e) => {
                tracing::warn!(error = %e, "policy transactions go through the nft binary");
                None
            }
        };
        PolicyKeeper {
            nft,
            lib,
            applied: None,
            exists: false,
        }
    }

    /// A keeper that runs the `nft` binary for every transaction (the slow path, for
    /// comparison).
    pub fn with_binary(nft: Nft) -> PolicyKeeper {
        PolicyKeeper {
            nft,
            lib: None,
            applied: None,
            exists: false,
        }
    }

    /// Whether transactions go through libnftables.
    pub fn uses_library(&self) -> bool {
        self.lib.is_some()
    }

    /// The kernel's policy table, or `None` when there is none.
    pub fn kernel(&self) -> Result<Option<Table>, PolicyError> {
        match self.nft.list_json(TABLE_FAMILY, TABLE)? {
            Some(text) => Ok(Some(listing::parse(&text)?)),
            None => Ok(None),
        }
    }

    /// Makes the table `want` with one transaction computed against what felix last wrote (or,
    /// when that is unknown, against the kernel's table: adoption after a restart).
    pub fn apply(&mut self, want: &Table) -> Result<PolicyReport, PolicyError> {
        let kernel_read;
        let have = match &self.applied {
            Some(t) if self.exists => Some(t),
            Some(_) => None,
            None => {
                kernel_read = self.kernel()?;
                kernel_read.as_ref()
            }
        };
        let text = script::delta(have, want);
        self.commit(&text, want)
    }

    /// Makes the table `want` when only the names in `touched` differ from what felix last
    /// applied ([`Rendered::update`](super::incremental::Rendered::update) says which): the
    /// transaction looks at those names alone. Falls back to [`apply`](Self::apply) when what
    /// felix last applied is unknown.
    pub fn apply_touched(
        &mut self,
        want: &Table,
        touched: &Touched,
    ) -> Result<PolicyReport, PolicyError> {
        if touched.all || !self.exists {
            return self.apply(want);
        }
        let Some(have) = self.applied.as_mut() else {
            return self.apply(want);
        };
        let text = script::delta_touched(have, want, touched);
        self.commit_with(&text, |have| {
            if let Some(have) = have {
                copy_touched(have, want, touched);
            }
        })
    }

    /// Reads the kernel's table and patches whatever differs from `want` (someone flushed it,
    /// deleted an element, edited a chain). `drift` says whether anything had to change.
    pub fn resync(&mut self, want: &Table) -> Result<PolicyReport, PolicyError> {
        let live = self.kernel()?;
        let text = script::delta(live.as_ref(), want);
        let mut report = self.commit(&text, want)?;
        report.drift = report.transactions > 0;
        if report.drift {
            tracing::warn!(
                lines = report.script_lines,
                "policy table differed from the desired one; repaired"
            );
        }
        Ok(report)
    }

    /// Loads `want` by replacing the whole table (the slow path; benchmarks compare against it).
    pub fn load_full(&mut self, want: &Table) -> Result<PolicyReport, PolicyError> {
        let text = script::full(want);
        self.commit(&text, want)
    }

    /// Removes the table (policy switched off). felix never does this on shutdown: the table
    /// keeps enforcing while felix is away.
    pub fn remove(&mut self) -> Result<(), PolicyError> {
        self.transact(&format!(
            "add table {TABLE_FAMILY} {TABLE}\ndelete table {TABLE_FAMILY} {TABLE}\n"
        ))?;
        self.applied = Some(Table::default());
        self.exists = false;
        Ok(())
    }

    fn commit(&mut self, text: &str, want: &Table) -> Result<PolicyReport, PolicyError> {
        self.commit_with(text, |have| *have = Some(want.clone()))
    }

    /// Runs `text` (nothing when empty); once the kernel holds it, `record` brings felix's
    /// view of the table up to date.
    fn commit_with(
        &mut self,
        text: &str,
        record: impl FnOnce(&mut Option<Table>),
    ) -> Result<PolicyReport, PolicyError> {
        if text.is_empty() {
            record(&mut self.applied);
            self.exists = true;
            return Ok(PolicyReport::default());
        }
        match self.transact(text) {
            Ok(()) => {
                record(&mut self.applied);
                self.exists = true;
                Ok(PolicyReport {
                    transactions: 1,
                    script_lines: text.lines().count(),
                    drift: false,
                })
            }
            Err(e) => {
                // The transaction changed nothing; what the kernel holds is read again next time.
                self.applied = None;
                tracing::warn!(error = %e, "policy transaction failed");
                Err(e)
            }
        }
    }

    /// Runs one transaction.
    fn transact(&self, text: &str) -> Result<(), PolicyError> {
        match &self.lib {
            Some(lib) => Ok(lib.apply(text)?),
            None => Ok(self.nft.apply(text)?),
        }
    }
}

/// Makes `have` equal `want` in the names `touched` lists.
fn copy_touched(have: &mut Table, want: &Table, touched: &Touched) {
    for name in &touched.sets {
        match want.sets.get(name) {
            Some(s) => have.sets.insert(name.clone(), s.clone()),
            None => have.sets.remove(name),
        };
    }
    for name in &touched.chains {
        match want.chains.get(name) {
            Some(c) => have.chains.insert(name.clone(), c.clone()),
            None => have.chains.remove(name),
        };
    }
    for (map, keys) in &touched.entries {
        let (Some(h), Some(w)) = (have.maps.get_mut(map), want.maps.get(map)) else {
            continue;
        };
        for k in keys {
            match w.entries.get(k) {
                Some(v) => h.entries.insert(k.clone(), v.clone()),
                None => h.entries.remove(k),
            };
        }
    }
}
