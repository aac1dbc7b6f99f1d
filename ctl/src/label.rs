//! `margayctl label workloadendpoint NAME key=value key2- [-n NS] [--overwrite]` and
//! `margayctl label namespace NS key=value`: change the labels policy selectors match, with
//! a compare-and-swap so a concurrent writer (felix) is never overwritten. A namespace's
//! labels live in its `kns.<namespace>` profile as `pcns.<key>`, as Calico keeps them.

use anyhow::{Context, bail};
use margay_datastore::policy::endpoint::NAMESPACE_LABEL_PREFIX;
use margay_datastore::resources::{
    NAMESPACE_PROFILE_PREFIX, ProfileSpec, Resource, WorkloadEndpointSpec,
};
use margay_datastore::{Store, StoreError};
use std::collections::BTreeMap;

/// Arguments of `margayctl label`.
#[derive(Debug, Clone, clap::Args)]
pub struct LabelArgs {
    /// `workloadendpoint` (`wep`) or `namespace` (`ns`).
    pub kind: String,
    /// The endpoint's name (or its pod's), or the namespace.
    pub name: String,
    /// `key=value` to set, `key-` to remove (or `key` with --remove).
    #[arg(required = true)]
    pub labels: Vec<String>,
    /// The endpoint's namespace.
    #[arg(short = 'n', long, default_value = "default")]
    pub namespace: String,
    /// Replace a label that already has another value.
    #[arg(long)]
    pub overwrite: bool,
    /// Remove the labels named (calicoctl's form).
    #[arg(long)]
    pub remove: bool,
}

/// One change to a label set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LabelChange {
    Set(String, String),
    Remove(String),
}

/// Reads `key=value`, `key-`, or with `remove` a bare `key`.
pub fn parse_changes(args: &[String], remove: bool) -> anyhow::Result<Vec<LabelChange>> {
    args.iter()
        .map(|a| {
            let c = if let Some((k, v)) = a.split_once('=') {
                LabelChange::Set(k.to_string(), v.to_string())
            } else if let Some(k) = a.strip_suffix('-') {
                LabelChange::Remove(k.to_string())
            } else if remove {
                LabelChange::Remove(a.clone())
            } else {
                bail!("'{a}' is neither key=value nor key- (or use --remove)")
            };
            let key = match &c {
                LabelChange::Set(k, _) | LabelChange::Remove(k) => k,
            };
            if key.is_empty() {
                bail!("'{a}': the key is empty");
            }
            if key.starts_with("projectcalico.org/") {
                bail!("'{key}' is set by margay itself and cannot be changed");
            }
            Ok(c)
        })
        .collect()
}

/// Applies the changes to `labels`; a changed value needs `overwrite`. Returns whether
/// anything changed.
pub fn apply_changes(
    labels: &mut BTreeMap<String, String>,
    changes: &[LabelChange],
    overwrite: bool,
) -> anyhow::Result<bool> {
    let before = labels.clone();
    for c in changes {
        match c {
            LabelChange::Set(k, v) => {
                if let Some(old) = labels.get(k)
                    && old != v
                    && !overwrite
                {
                    bail!("label '{k}' is already '{old}'; use --overwrite to change it");
                }
                labels.insert(k.clone(), v.clone());
            }
            LabelChange::Remove(k) => {
                labels.remove(k);
            }
        }
    }
    Ok(*labels != before)
}

/// Finds the endpoint by its name, or by its pod's name, in `ns`.
async fn find_endpoint(
    store: &Store,
    ns: &str,
    name: &str,
) -> anyhow::Result<Resource<WorkloadEndpointSpec>> {
    if let Some(w) = store.get_ns::<WorkloadEndpointSpec>(Some(ns), name).await? {
        return Ok(w);
    }
    let (all, _) = store.list::<WorkloadEndpointSpec>().await?;
    let mut found: Vec<_> = all
        .into_iter()
        .filter(|w| {
            w.metadata.namespace.as_deref() == Some(ns) && w.spec.pod.as_deref() == Some(name)
        })
        .collect();
    match found.len() {
        1 => Ok(found.remove(0)),
        0 => bail!("resource does not exist: WorkloadEndpoint({ns}/{name})"),
        n => bail!("{n} workload endpoints of pod {ns}/{name}; name one of them"),
    }
}

async fn label_endpoint(
    store: &Store,
    args: &LabelArgs,
    changes: &[LabelChange],
) -> anyhow::Result<String> {
    for _ in 0..20 {
        let mut w = find_endpoint(store, &args.namespace, &args.name).await?;
        if !apply_changes(&mut w.metadata.labels, changes, args.overwrite)? {
            return Ok(format!("WorkloadEndpoint({}/{})", args.namespace, w.name()));
        }
        match store.update(&w).await {
            Ok(_) => return Ok(format!("WorkloadEndpoint({}/{})", args.namespace, w.name())),
            Err(e) if e.is_conflict() => continue,
            Err(e) => return Err(e.into()),
        }
    }
    bail!("the endpoint kept changing; try again")
}

async fn label_namespace(
    store: &Store,
    args: &LabelArgs,
    changes: &[LabelChange],
) -> anyhow::Result<String> {
    let name = format!("{NAMESPACE_PROFILE_PREFIX}{}", args.name);
    let prefixed: Vec<LabelChange> = changes
        .iter()
        .map(|c| match c {
            LabelChange::Set(k, v) => {
                LabelChange::Set(format!("{NAMESPACE_LABEL_PREFIX}{k}"), v.clone())
            }
            LabelChange::Remove(k) => LabelChange::Remove(format!("{NAMESPACE_LABEL_PREFIX}{k}")),
        })
        .collect();
    for _ in 0..20 {
        let existing = store.get::<ProfileSpec>(&name).await?;
        let created = existing.is_none();
        let mut p = existing.unwrap_or_else(|| Resource::new(name.clone(), ProfileSpec::default()));
        if !apply_changes(&mut p.spec.labels_to_apply, &prefixed, args.overwrite)? && !created {
            return Ok(format!("Profile({name})"));
        }
        let res = if created {
            store.create(&p).await
        } else {
            store.update(&p).await
        };
        match res {
            Ok(_) => return Ok(format!("Profile({name})")),
            Err(e) if e.is_conflict() || matches!(e, StoreError::AlreadyExists { .. }) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    bail!("the profile kept changing; try again")
}

/// Runs `label`.
pub async fn run(store: &Store, args: &LabelArgs) -> anyhow::Result<()> {
    let changes = parse_changes(&args.labels, args.remove)?;
    let what = match args.kind.to_ascii_lowercase().as_str() {
        "workloadendpoint" | "workloadendpoints" | "wep" | "weps" => {
            label_endpoint(store, args, &changes).await
        }
        "namespace" | "namespaces" | "ns" => label_namespace(store, args, &changes).await,
        other => bail!("cannot label '{other}': give workloadendpoint or namespace"),
    }
    .context("labelling")?;
    println!("Successfully labelled {what}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_parse_in_kubectl_and_calicoctl_forms() {
        let c = parse_changes(&["app=web".into(), "old-".into()], false).unwrap();
        assert_eq!(
            c,
            vec![
                LabelChange::Set("app".into(), "web".into()),
                LabelChange::Remove("old".into())
            ]
        );
        assert_eq!(
            parse_changes(&["app".into()], true).unwrap(),
            vec![LabelChange::Remove("app".into())]
        );
        assert!(parse_changes(&["app".into()], false).is_err());
        assert!(parse_changes(&["projectcalico.org/namespace=x".into()], false).is_err());
    }

    #[test]
    fn a_changed_value_needs_overwrite() {
        let mut l: BTreeMap<String, String> = [("app".to_string(), "web".to_string())].into();
        let set = |v: &str| vec![LabelChange::Set("app".into(), v.into())];
        assert!(!apply_changes(&mut l, &set("web"), false).unwrap());
        assert!(apply_changes(&mut l, &set("db"), false).is_err());
        assert!(apply_changes(&mut l, &set("db"), true).unwrap());
        assert_eq!(l["app"], "db");
        assert!(apply_changes(&mut l, &[LabelChange::Remove("app".into())], false).unwrap());
        assert!(l.is_empty());
    }
}
