//! `margayctl apply | create | replace | delete`: writing resource files to the datastore,
//! reporting as calicoctl does (`Successfully applied 2 'BGPPeer' resource(s)`).

use anyhow::{Context, bail};
use margay_datastore::resources::{
    AnyResource, DEFAULT_TIER, GlobalNetworkPolicySpec, KindInfo, NetworkPolicySpec, TierSpec,
    not_acted, parse_documents_in,
};
use margay_datastore::store::WriteMode;
use margay_datastore::{Store, StoreError};
use std::io::Read;
use std::path::Path;

/// What to do with each resource of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Apply,
    Create,
    Replace,
    Delete,
}

impl Action {
    fn verb(self) -> (&'static str, &'static str) {
        match self {
            Action::Apply => ("apply", "applied"),
            Action::Create => ("create", "created"),
            Action::Replace => ("replace", "replaced"),
            Action::Delete => ("delete", "deleted"),
        }
    }
}

/// Reads a file (`-` for stdin) and parses every resource in it; namespaced resources that
/// name no namespace get `namespace` (`-n`), or `default`, as calicoctl does.
pub fn read_resources(path: &Path, namespace: Option<&str>) -> anyhow::Result<Vec<AnyResource>> {
    let text = if path == Path::new("-") {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .context("reading stdin")?;
        s
    } else {
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?
    };
    let rs = parse_documents_in(&text, namespace.unwrap_or("default"))
        .with_context(|| format!("in {}", path.display()))?;
    if rs.is_empty() {
        bail!("{}: no resources found", path.display());
    }
    Ok(rs)
}

/// The summary line: `2 'BGPPeer' resource(s)` when all share a kind, else `3 resource(s)`.
pub fn count_phrase(done: &[&AnyResource]) -> String {
    let kinds: std::collections::BTreeSet<&str> = done.iter().map(|r| r.info().kind).collect();
    match (kinds.len(), kinds.iter().next()) {
        (1, Some(k)) => format!("{} '{k}' resource(s)", done.len()),
        _ => format!("{} resource(s)", done.len()),
    }
}

fn describe(r: &AnyResource) -> String {
    format!("{}({})", r.info().kind, display_name(r))
}

fn display_name(r: &AnyResource) -> String {
    match &r.metadata().namespace {
        Some(ns) if r.info().namespaced => format!("{ns}/{}", r.name()),
        _ => r.name().to_string(),
    }
}

fn explain(e: &StoreError, r: &AnyResource) -> String {
    match e {
        StoreError::AlreadyExists { .. } => format!("resource already exists: {}", describe(r)),
        StoreError::NotFound { .. } => format!("resource does not exist: {}", describe(r)),
        StoreError::Conflict { .. } => format!(
            "update conflict: {} (its resourceVersion changed; get it again)",
            describe(r)
        ),
        e => e.to_string(),
    }
}

/// One `warning: ...` line per field set in `resources` that margay accepts but does not act
/// on (the field registry's verdict).
pub fn warnings(resources: &[AnyResource]) -> Vec<String> {
    resources
        .iter()
        .flat_map(not_acted)
        .map(|n| format!("warning: {n}"))
        .collect()
}

/// The tier a policy names (`default` when it names none).
fn tier_of(r: &AnyResource) -> Option<&str> {
    let t = match r {
        AnyResource::NetworkPolicy(p) => &p.spec.tier,
        AnyResource::GlobalNetworkPolicy(p) => &p.spec.tier,
        _ => return None,
    };
    Some(if t.is_empty() { DEFAULT_TIER } else { t })
}

/// Calico's referential rules: a policy's tier must exist (the `default` tier always does,
/// or is in the same file); a tier that still has policies cannot be deleted.
async fn check_tiers(
    store: &Store,
    action: Action,
    resources: &[AnyResource],
) -> anyhow::Result<()> {
    let in_file = |name: &str| {
        resources
            .iter()
            .any(|r| matches!(r, AnyResource::Tier(t) if t.name() == name))
    };
    if action == Action::Delete {
        for r in resources {
            if let AnyResource::Tier(t) = r {
                tier_unused(store, t.name()).await?;
            }
        }
        return Ok(());
    }
    for r in resources {
        if let Some(tier) = tier_of(r)
            && tier != DEFAULT_TIER
            && !in_file(tier)
            && store.get::<TierSpec>(tier).await?.is_none()
        {
            bail!(
                "Failed to {} '{}' resource: tier '{tier}' does not exist: {}",
                action.verb().0,
                r.info().kind,
                describe(r)
            );
        }
    }
    Ok(())
}

/// Fails when a policy still names tier `name`.
async fn tier_unused(store: &Store, name: &str) -> anyhow::Result<()> {
    let (nps, _) = store.list::<NetworkPolicySpec>().await?;
    let (gnps, _) = store.list::<GlobalNetworkPolicySpec>().await?;
    let users: Vec<String> = nps
        .iter()
        .filter(|p| p.spec.tier == name)
        .map(|p| {
            format!(
                "NetworkPolicy({}/{})",
                p.metadata.namespace.clone().unwrap_or_default(),
                p.name()
            )
        })
        .chain(
            gnps.iter()
                .filter(|p| p.spec.tier == name)
                .map(|p| format!("GlobalNetworkPolicy({})", p.name())),
        )
        .collect();
    if !users.is_empty() {
        bail!(
            "Failed to delete 'Tier' resource: tier '{name}' still has policies: {}",
            users.join(", ")
        );
    }
    if name == DEFAULT_TIER {
        bail!("Failed to delete 'Tier' resource: the default tier cannot be deleted");
    }
    Ok(())
}

/// Applies `action` to every resource, stopping at the first failure. Prints the summary
/// line, after a warning on stderr for each field written that margay does not act on;
/// returns an error naming the resource that failed.
pub async fn run(store: &Store, action: Action, resources: &[AnyResource]) -> anyhow::Result<()> {
    let (verb, done_verb) = action.verb();
    check_tiers(store, action, resources).await?;
    if action != Action::Delete {
        for w in warnings(resources) {
            eprintln!("{w}");
        }
    }
    let mut done: Vec<&AnyResource> = Vec::new();
    for r in resources {
        let res = match action {
            Action::Apply => store.write_any(r, WriteMode::Apply).await.map(|_| ()),
            Action::Create => store.write_any(r, WriteMode::Create).await.map(|_| ()),
            Action::Replace => store.write_any(r, WriteMode::Replace).await.map(|_| ()),
            Action::Delete => store.delete_any(r).await,
        };
        if let Err(e) = res {
            if !done.is_empty() {
                println!(
                    "Partial success: {done_verb} the first {}",
                    count_phrase(&done)
                );
            }
            bail!(
                "Failed to {verb} '{}' resource: {}",
                r.info().kind,
                explain(&e, r)
            );
        }
        done.push(r);
    }
    println!("Successfully {done_verb} {}", count_phrase(&done));
    Ok(())
}

/// `delete KIND NAME`: deletes one resource by name.
pub async fn delete_by_name(
    store: &Store,
    kind: &str,
    name: &str,
    namespace: &str,
) -> anyhow::Result<()> {
    let info = lookup(kind)?;
    if info.kind == "Tier" {
        tier_unused(store, name).await?;
    }
    let ns = info.namespaced.then_some(namespace);
    let key = margay_datastore::store::resource_key(info, ns, name);
    match store.delete_raw(&key, None).await {
        Ok(()) => {
            println!("Successfully deleted 1 '{}' resource(s)", info.kind);
            Ok(())
        }
        Err(StoreError::NotFound { .. }) => bail!(
            "Failed to delete '{}' resource: resource does not exist: {}({name})",
            info.kind,
            info.kind
        ),
        Err(e) => Err(e.into()),
    }
}

/// Resolves a kind name or fails listing the known ones.
pub fn lookup(kind: &str) -> anyhow::Result<KindInfo> {
    KindInfo::lookup(kind).ok_or_else(|| {
        anyhow::anyhow!(
            "unknown resource kind '{kind}'; known kinds: {}",
            margay_datastore::resources::KINDS
                .iter()
                .map(|k| k.plural)
                .collect::<Vec<_>>()
                .join(", ")
        )
    })
}
