//! margay's CNI plugin: parse the runtime's request (environment and stdin), ask felix over its
//! socket, and print the CNI result in the runtime's spec version.
//!
//! `main` only gathers the process's environment and stdin and calls [`run`].

pub mod commands;
pub mod env;
pub mod error;
pub mod felix;
pub mod ipam;
pub mod logging;
pub mod netconf;
pub mod result;
pub mod version;

use env::Environment;
use error::CniError;
use std::collections::BTreeMap;

/// What the process prints on stdout and exits with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub stdout: String,
    pub exit_code: i32,
}

/// Handles one CNI request. `stdin` is `Err` when it could not be read.
pub fn run(vars: BTreeMap<String, String>, stdin: std::io::Result<Vec<u8>>) -> Outcome {
    let stdin = stdin
        .map_err(|e| CniError::new(error::code::IO_FAILURE, format!("cannot read stdin: {e}")));
    let answer_version = stdin
        .as_ref()
        .ok()
        .and_then(|s| netconf::peek_version(s))
        .filter(|v| version::SpecVersion::parse(v).is_ok())
        .unwrap_or_else(|| version::NEWEST.as_str().to_string());
    match handle(vars, stdin) {
        Ok(out) => Outcome {
            stdout: out.unwrap_or_default(),
            exit_code: 0,
        },
        Err(e) => {
            tracing::error!(code = e.code, msg = %e.msg, details = %e.details, "CNI request failed");
            Outcome {
                stdout: e.to_json(&answer_version),
                exit_code: 1,
            }
        }
    }
}

fn handle(
    vars: BTreeMap<String, String>,
    stdin: Result<Vec<u8>, CniError>,
) -> Result<Option<String>, CniError> {
    let command = vars.get("CNI_COMMAND").map(String::as_str);
    if command == Some("VERSION") {
        // The runtime may send `{"cniVersion": ...}`; answer in it when supported.
        let asked = stdin.as_ref().ok().and_then(|s| netconf::peek_version(s));
        let v = asked
            .and_then(|v| version::SpecVersion::parse(&v).ok())
            .unwrap_or(version::NEWEST);
        return Ok(Some(version::version_json(v.as_str())));
    }
    let stdin = stdin?;
    let env = Environment::from_vars(vars)?;
    let conf = netconf::NetConf::parse(&stdin)?;
    logging::init(conf.log_level, conf.log_file_path.as_deref())?;
    tracing::debug!(command = env.command.as_str(), container = %env.container_id, network = %conf.name, "CNI request");
    commands::run(&env, &conf, &stdin)
}
