//! `margayctl datastore migrate from-calico`: reads every key under Calico's `/calico/`,
//! translates it ([`margay_datastore::migrate`]), compares it with margay's `/margay/` data
//! and writes what differs, in compare-and-swap transactions.
//!
//! Nothing is written unless the whole Calico dataset translates cleanly and no margay
//! record conflicts (or `--overwrite`); `--dry-run` prints the plan and writes nothing; a
//! second run finds every record `same` and writes nothing.

pub mod source;

use anyhow::{Context, bail};
use margay_datastore::migrate::{self, Action, Record, calico::CALICO_ROOT};
use margay_datastore::store::{CasWrite, ROOT};
use margay_datastore::{EtcdArgs, Store};
use source::{CalicoEtcdArgs, read_prefix};
use std::collections::BTreeMap;
use std::io::Write;

/// Records written per etcd transaction (etcd allows 128 operations in one by default).
const BATCH: usize = 100;

/// `datastore migrate from-calico`'s flags.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct FromCalicoArgs {
    #[command(flatten)]
    pub calico: CalicoEtcdArgs,
    /// Print what would be written (kind, name, create/update/same) and change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Replace margay records that differ from what Calico's data becomes (otherwise the
    /// first such key stops the migration).
    #[arg(long)]
    pub overwrite: bool,
}

/// What a run did (or, dry, would do).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    pub calico_keys: usize,
    pub created: usize,
    pub updated: usize,
    pub same: usize,
    pub skipped: usize,
    /// etcd transactions written.
    pub transactions: usize,
}

fn progress_every_thousand(what: &'static str) -> impl FnMut(usize) {
    let mut reported = 0;
    move |n| {
        while n / 1000 > reported {
            reported += 1;
            eprintln!("{what} {} keys", reported * 1000);
        }
    }
}

/// Runs the migration; prints the plan or the writes to `out`, progress to stderr.
pub async fn from_calico(
    margay: &EtcdArgs,
    args: &FromCalicoArgs,
    out: &mut impl Write,
) -> anyhow::Result<Summary> {
    let source_args = args.calico.resolve(margay);
    let source = Store::connect(&source_args).await.with_context(|| {
        format!(
            "connecting to Calico's etcd at {}",
            source_args.endpoints.join(",")
        )
    })?;
    let target = Store::connect(margay)
        .await
        .with_context(|| format!("connecting to etcd at {}", margay.endpoints.join(",")))?;

    let calico: Vec<(String, Vec<u8>)> =
        read_prefix(&source, CALICO_ROOT, progress_every_thousand("read Calico"))
            .await
            .with_context(|| {
                format!(
                    "reading Calico's keys from its etcd at {}",
                    source_args.endpoints.join(",")
                )
            })?
            .into_iter()
            .map(|(k, v, _)| (k, v))
            .collect();
    if calico.is_empty() {
        bail!(
            "Calico's etcd holds no key under {CALICO_ROOT}: nothing to migrate (wrong endpoint?)"
        );
    }
    let translation = match migrate::translate(&calico) {
        Ok(t) => t,
        Err(problems) => {
            for p in &problems {
                eprintln!("problem: {p}");
            }
            bail!(
                "{} problem(s) in Calico's data, the first at {}; nothing written",
                problems.len(),
                problems[0].key
            );
        }
    };
    let calico_keys = calico.len();
    drop(calico);
    let existing: BTreeMap<String, (Vec<u8>, i64)> =
        read_prefix(&target, ROOT, progress_every_thousand("read margay"))
            .await
            .with_context(|| {
                format!(
                    "reading margay's keys from etcd at {}",
                    margay.endpoints.join(",")
                )
            })?
            .into_iter()
            .map(|(k, v, rev)| (k, (v, rev)))
            .collect();
    let steps = match migrate::plan(translation.records, &existing, args.overwrite) {
        Ok(s) => s,
        Err(conflicts) => {
            for c in &conflicts {
                eprintln!("conflict: {c}");
            }
            bail!(
                "{} conflict(s) with margay's data, the first at {}; nothing written (--overwrite replaces them)",
                conflicts.len(),
                conflicts[0].key
            );
        }
    };

    let mut summary = Summary {
        calico_keys,
        skipped: translation.skipped.len(),
        ..Summary::default()
    };
    for s in &translation.skipped {
        writeln!(out, "skip {}: {}", s.key, s.reason)?;
    }
    for n in &translation.notes {
        writeln!(out, "note: {n}")?;
    }
    for (r, a) in &steps {
        match a {
            Action::Create => summary.created += 1,
            Action::Update { .. } => summary.updated += 1,
            Action::Same => summary.same += 1,
        }
        if args.dry_run {
            writeln!(out, "{} {} {}", a.word(), r.kind, r.name)?;
        }
    }
    if !args.dry_run {
        summary.transactions = write(&target, &steps).await?;
    }
    writeln!(
        out,
        "{}{} Calico keys: {} created, {} updated, {} unchanged, {} skipped ({} etcd transactions)",
        if args.dry_run {
            "dry run, nothing written: "
        } else {
            ""
        },
        summary.calico_keys,
        summary.created,
        summary.updated,
        summary.same,
        summary.skipped,
        summary.transactions
    )?;
    Ok(summary)
}

/// Writes every record that is not `same`, [`BATCH`] to a transaction, each compared on the
/// revision it was planned against; returns the number of transactions.
async fn write(store: &Store, steps: &[(Record, Action)]) -> anyhow::Result<usize> {
    let todo: Vec<CasWrite<'_>> = steps
        .iter()
        .filter_map(|(r, a)| match a {
            Action::Same => None,
            Action::Create => Some(CasWrite {
                key: &r.key,
                value: r.value.clone(),
                expected: None,
            }),
            Action::Update { mod_revision } => Some(CasWrite {
                key: &r.key,
                value: r.value.clone(),
                expected: Some(*mod_revision),
            }),
        })
        .collect();
    let mut progress = progress_every_thousand("wrote");
    let mut done = 0;
    let mut transactions = 0;
    for batch in todo.chunks(BATCH) {
        store.put_json_all(batch).await.with_context(|| {
            format!(
                "margay's data changed while migrating (a key of the batch from {}); {done} records were written, run the migration again",
                batch[0].key
            )
        })?;
        done += batch.len();
        transactions += 1;
        progress(done);
    }
    Ok(transactions)
}
