//! BGP passwords that Calico's resources name by `secretKeyRef`, read from mounted Secrets.
//!
//! calico-node reads the Secret through the Kubernetes API. bgpd talks to etcd only, so the
//! DaemonSet mounts each Secret as a volume instead: Secret `NAME` at `<dir>/NAME/`, where
//! Kubernetes writes one file per key, so `{name: NAME, key: KEY}` is the file `<dir>/NAME/KEY`.
//! The file's bytes are the password, exactly (Calico takes the Secret's value as it is).
//! Cluster mode reads the file each time it computes the peerings, which it also does every
//! few seconds ([`super::follow`]), so a rotated Secret reaches the session without a restart.

use margay_common::Secret;
use margay_datastore::resources::{BgpPassword, SecretKeyRef};
use std::path::{Path, PathBuf};

/// Where the DaemonSet mounts Secrets unless `--secrets-dir` says otherwise.
pub const DEFAULT_SECRETS_DIR: &str = "/etc/margay/secrets";

/// Why a referenced password could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    #[error(
        "secretKeyRef {name}/{key}: '{part}' cannot name a file (Kubernetes names hold no '/' and are not '.' or '..')"
    )]
    BadName {
        name: String,
        key: String,
        part: String,
    },
    #[error(
        "secretKeyRef {name}/{key}: cannot read {path}: {reason} (mount Secret '{name}' at {dir})"
    )]
    Unreadable {
        name: String,
        key: String,
        path: String,
        dir: String,
        reason: String,
    },
    #[error("secretKeyRef {name}/{key}: {path} is empty")]
    Empty {
        name: String,
        key: String,
        path: String,
    },
}

/// The file that holds `r`'s key under `dir`.
pub fn secret_path(dir: &Path, r: &SecretKeyRef) -> Result<PathBuf, SecretError> {
    for part in [&r.name, &r.key] {
        if part.is_empty() || part.contains('/') || part == "." || part == ".." {
            return Err(SecretError::BadName {
                name: r.name.clone(),
                key: r.key.clone(),
                part: part.clone(),
            });
        }
    }
    Ok(dir.join(&r.name).join(&r.key))
}

/// Reads the key `r` names from the Secrets mounted under `dir`.
pub fn read_secret(dir: &Path, r: &SecretKeyRef) -> Result<Secret, SecretError> {
    let path = secret_path(dir, r)?;
    let text = std::fs::read_to_string(&path).map_err(|e| SecretError::Unreadable {
        name: r.name.clone(),
        key: r.key.clone(),
        path: path.display().to_string(),
        dir: dir.join(&r.name).display().to_string(),
        reason: e.to_string(),
    })?;
    if text.is_empty() {
        return Err(SecretError::Empty {
            name: r.name.clone(),
            key: r.key.clone(),
            path: path.display().to_string(),
        });
    }
    Ok(Secret::new(text))
}

/// The password a BGPPeer or BGPConfiguration gives: inline, or from a mounted Secret.
pub fn password(dir: &Path, p: &BgpPassword) -> Result<Option<Secret>, SecretError> {
    match (&p.value, &p.secret_key_ref) {
        (Some(v), _) => Ok(Some(v.clone())),
        (None, Some(r)) => read_secret(dir, r).map(Some),
        (None, None) => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(name: &str, key: &str) -> SecretKeyRef {
        SecretKeyRef {
            name: name.into(),
            key: key.into(),
            optional: None,
        }
    }

    #[test]
    fn the_key_is_a_file_in_the_secrets_directory() {
        let dir = std::env::temp_dir().join(format!("margay-secrets-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("bgp-secrets")).unwrap();
        std::fs::write(dir.join("bgp-secrets/tor"), "pa ss\n").unwrap();
        let got = read_secret(&dir, &r("bgp-secrets", "tor")).unwrap();
        assert_eq!(
            got.expose(),
            "pa ss\n",
            "the bytes as stored, as Calico takes them"
        );
        let missing = read_secret(&dir, &r("bgp-secrets", "other")).unwrap_err();
        assert!(
            missing.to_string().contains("bgp-secrets/other"),
            "{missing}"
        );
        std::fs::write(dir.join("bgp-secrets/empty"), "").unwrap();
        assert!(matches!(
            read_secret(&dir, &r("bgp-secrets", "empty")),
            Err(SecretError::Empty { .. })
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn names_cannot_leave_the_directory() {
        for (n, k) in [
            ("..", "x"),
            ("a/b", "x"),
            ("s", "../../etc/passwd"),
            ("s", ""),
        ] {
            assert!(
                matches!(
                    secret_path(Path::new("/s"), &r(n, k)),
                    Err(SecretError::BadName { .. })
                ),
                "{n}/{k}"
            );
        }
    }
}
