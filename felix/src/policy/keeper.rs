//! The kernel edge of policy: applies the desired [`Table`] to felix's policy table as one
//! transaction per change, reads the kernel's table back to repair drift, and adopts the table a
//! previous felix left (a restart patches it in place, it never flushes it first).

use super::listing::{self, ListingError};
use super::render::{TABLE, TABLE_FAMILY, Table};
use super::script;
use crate::nat::{NatError, Nft};

/// Why the policy table could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error(transparent)]
    Nft(#[from] NatError),
    #[error(transparent)]
    Listing(#[from] ListingError),
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
    /// The table as felix last committed it; `None`: unknown, read the kernel's first.
    applied: Option<Table>,
    /// Whether `applied` describes a table that exists (false: felix knows there is none).
    exists: bool,
}

impl PolicyKeeper {
    pub fn new(nft: Nft) -> PolicyKeeper {
        PolicyKeeper {
            nft,
            applied: None,
            exists: false,
        }
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
        self.nft.apply(&format!(
            "add table {TABLE_FAMILY} {TABLE}\ndelete table {TABLE_FAMILY} {TABLE}\n"
        ))?;
        self.applied = Some(Table::default());
        self.exists = false;
        Ok(())
    }

    fn commit(&mut self, text: &str, want: &Table) -> Result<PolicyReport, PolicyError> {
        if text.is_empty() {
            self.applied = Some(want.clone());
            self.exists = true;
            return Ok(PolicyReport::default());
        }
        match self.nft.apply(text) {
            Ok(()) => {
                self.applied = Some(want.clone());
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
                Err(e.into())
            }
        }
    }
}
