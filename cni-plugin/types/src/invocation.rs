//! The `CNI_*` environment a runtime sets, checked per verb.

use crate::error::{CniError, ErrorCode};
use std::collections::BTreeMap;
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Add,
    Del,
    Check,
    Status,
    Gc,
    Version,
}

impl FromStr for Command {
    type Err = CniError;

    fn from_str(s: &str) -> Result<Self, CniError> {
        Ok(match s {
            "ADD" => Command::Add,
            "DEL" => Command::Del,
            "CHECK" => Command::Check,
            "STATUS" => Command::Status,
            "GC" => Command::Gc,
            "VERSION" => Command::Version,
            other => {
                return Err(CniError::new(
                    ErrorCode::InvalidEnvironment,
                    format!(
                        "CNI_COMMAND {other:?} is not one of ADD, DEL, CHECK, STATUS, GC, VERSION"
                    ),
                ))
            }
        })
    }
}

/// `CNI_ARGS`: `K=V` pairs separated by `;`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CniArgs(pub BTreeMap<String, String>);

impl CniArgs {
    pub fn parse(s: &str) -> Result<Self, CniError> {
        let mut map = BTreeMap::new();
        for pair in s.split(';').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').ok_or_else(|| {
                CniError::new(
                    ErrorCode::InvalidEnvironment,
                    format!("CNI_ARGS entry {pair:?} is not KEY=VALUE"),
                )
            })?;
            map.insert(k.to_string(), v.to_string());
        }
        Ok(CniArgs(map))
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }
}

/// What the environment says about one invocation.
#[derive(Debug, Clone)]
pub struct Invocation {
    pub command: Command,
    pub container_id: String,
    pub netns: String,
    pub ifname: String,
    pub args: CniArgs,
    pub path: Vec<String>,
}

/// Linux limits interface names to 15 bytes (IFNAMSIZ less the NUL).
pub const IFNAME_MAX: usize = 15;

impl Invocation {
    /// Reads the invocation through `var` (the process environment in production).
    pub fn from_env(var: impl Fn(&str) -> Option<String>) -> Result<Self, CniError> {
        let get = |k: &str| var(k).unwrap_or_default();
        let command_text = get("CNI_COMMAND");
        if command_text.is_empty() {
            return Err(missing("CNI_COMMAND", "every invocation"));
        }
        let command: Command = command_text.parse()?;
        let inv = Invocation {
            command,
            container_id: get("CNI_CONTAINERID"),
            netns: get("CNI_NETNS"),
            ifname: get("CNI_IFNAME"),
            args: CniArgs::parse(&get("CNI_ARGS"))?,
            path: get("CNI_PATH")
                .split(':')
                .filter(|p| !p.is_empty())
                .map(str::to_string)
                .collect(),
        };
        inv.check_required()?;
        Ok(inv)
    }

    fn check_required(&self) -> Result<(), CniError> {
        let (needs_netns, needs_container) = match self.command {
            Command::Add | Command::Check => (true, true),
            Command::Del => (false, true),
            Command::Status | Command::Gc | Command::Version => return Ok(()),
        };
        let verb = format!("{:?}", self.command).to_uppercase();
        if needs_container && self.container_id.is_empty() {
            return Err(missing("CNI_CONTAINERID", &verb));
        }
        if needs_container && !valid_container_id(&self.container_id) {
            return Err(CniError::new(
                ErrorCode::InvalidEnvironment,
                format!(
                    "CNI_CONTAINERID {:?} must be letters, digits, '_', '.' or '-' and start with a letter or digit",
                    self.container_id
                ),
            ));
        }
        if needs_netns && self.netns.is_empty() {
            return Err(missing("CNI_NETNS", &verb));
        }
        if needs_container && self.ifname.is_empty() {
            return Err(missing("CNI_IFNAME", &verb));
        }
        if needs_container {
            check_ifname(&self.ifname)?;
        }
        Ok(())
    }
}

fn missing(var: &str, verb: &str) -> CniError {
    CniError::new(
        ErrorCode::InvalidEnvironment,
        format!("{var} is not set; it is required for {verb}"),
    )
}

/// The spec's container ID rule: alphanumerics plus `_ . -`, starting alphanumeric.
fn valid_container_id(id: &str) -> bool {
    let mut chars = id.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// The spec's interface name rules (and the kernel's).
pub fn check_ifname(name: &str) -> Result<(), CniError> {
    let problem = if name.len() > IFNAME_MAX {
        Some(format!(
            "is {} bytes, the limit is {IFNAME_MAX}",
            name.len()
        ))
    } else if name == "." || name == ".." {
        Some("is not a valid interface name".to_string())
    } else if name
        .chars()
        .any(|c| c == '/' || c == ':' || c.is_whitespace())
    {
        Some("contains '/', ':' or whitespace".to_string())
    } else {
        None
    };
    match problem {
        Some(p) => Err(CniError::new(
            ErrorCode::InvalidEnvironment,
            format!("CNI_IFNAME {name:?} {p}"),
        )),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn inv(pairs: &[(&str, &str)]) -> Result<Invocation, CniError> {
        let env: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Invocation::from_env(|k| env.get(k).cloned())
    }

    const ADD: [(&str, &str); 4] = [
        ("CNI_COMMAND", "ADD"),
        ("CNI_CONTAINERID", "c1"),
        ("CNI_NETNS", "/var/run/netns/x"),
        ("CNI_IFNAME", "eth0"),
    ];

    #[test]
    fn add_needs_all_three_and_says_which_is_missing() {
        assert!(inv(&ADD).is_ok());
        for (skip, (missing_var, _)) in ADD.iter().enumerate().skip(1) {
            let pairs: Vec<_> = ADD
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != skip)
                .map(|(_, p)| *p)
                .collect();
            let err = inv(&pairs).unwrap_err();
            assert_eq!(err.code, 4);
            assert!(err.msg.contains(missing_var), "{}", err.msg);
        }
    }

    #[test]
    fn del_runs_without_a_netns_and_version_without_anything() {
        assert!(inv(&[
            ("CNI_COMMAND", "DEL"),
            ("CNI_CONTAINERID", "c1"),
            ("CNI_IFNAME", "eth0")
        ])
        .is_ok());
        assert!(inv(&[("CNI_COMMAND", "VERSION")]).is_ok());
        assert!(inv(&[("CNI_COMMAND", "GC")]).is_ok());
    }

    #[test]
    fn bad_command_ifname_and_args_are_code_4() {
        assert_eq!(inv(&[]).unwrap_err().code, 4);
        assert_eq!(inv(&[("CNI_COMMAND", "PUT")]).unwrap_err().code, 4);
        let mut long = ADD.to_vec();
        long[3] = ("CNI_IFNAME", "a-very-long-ifname");
        let err = inv(&long).unwrap_err();
        assert!(err.msg.contains("limit is 15"), "{}", err.msg);
        let mut bad_args = ADD.to_vec();
        bad_args.push(("CNI_ARGS", "IgnoreUnknown=1;garbage"));
        assert_eq!(inv(&bad_args).unwrap_err().code, 4);
        let mut bad_id = ADD.to_vec();
        bad_id[1] = ("CNI_CONTAINERID", "-bad/id");
        assert_eq!(inv(&bad_id).unwrap_err().code, 4);
    }

    #[test]
    fn parses_kubelet_args() {
        let a =
            CniArgs::parse("IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0").unwrap();
        assert_eq!(a.get("K8S_POD_NAME"), Some("web-0"));
        assert_eq!(a.get("K8S_POD_NAMESPACE"), Some("default"));
        assert_eq!(a.get("nothing"), None);
    }
}
