//! The verb dispatcher every plugin binary runs: read the environment and stdin, call
//! the plugin, print the result or the spec error, pick the exit code.

use crate::config::NetConf;
use crate::error::{CniError, ErrorCode};
use crate::invocation::{Command, Invocation};
use crate::result::CniResult;
use crate::version::Version;
use serde_json::{json, Value};
use std::io::{Read, Write};

/// A CNI plugin's verbs. VERSION is answered by the dispatcher.
pub trait Plugin {
    fn add(&self, inv: &Invocation, conf: &NetConf) -> Result<CniResult, CniError>;
    fn del(&self, inv: &Invocation, conf: &NetConf) -> Result<(), CniError>;
    fn check(&self, inv: &Invocation, conf: &NetConf) -> Result<(), CniError>;
    fn status(&self, inv: &Invocation, conf: &NetConf) -> Result<(), CniError>;
    fn gc(&self, inv: &Invocation, conf: &NetConf) -> Result<(), CniError>;
}

/// Runs one invocation; returns the process exit code.
pub fn run(
    plugin: &dyn Plugin,
    env: impl Fn(&str) -> Option<String>,
    stdin: &mut dyn Read,
    stdout: &mut dyn Write,
) -> i32 {
    let mut input = Vec::new();
    let outcome = match stdin.read_to_end(&mut input) {
        Ok(_) => dispatch(plugin, &env, &input),
        Err(e) => Err(CniError::new(
            ErrorCode::IoFailure,
            format!("reading the network configuration from stdin: {e}"),
        )),
    };
    let (value, code) = match outcome {
        Ok(Some(v)) => (Some(v), 0),
        Ok(None) => (None, 0),
        Err(e) => {
            let version = NetConf::requested_version(&input)
                .unwrap_or_else(|| Version::LATEST.as_str().to_string());
            (Some(e.to_json(&version)), 1)
        }
    };
    if let Some(v) = value {
        // Nothing can be reported if stdout itself is gone; the exit code still says it.
        let _ = writeln!(stdout, "{v}");
    }
    code
}

fn dispatch(
    plugin: &dyn Plugin,
    env: &dyn Fn(&str) -> Option<String>,
    input: &[u8],
) -> Result<Option<Value>, CniError> {
    let inv = Invocation::from_env(env)?;
    if inv.command == Command::Version {
        return Ok(Some(version_answer(input)));
    }
    let conf = NetConf::parse(input)?;
    let v = conf.cni_version;
    let refuse = |verb: &str, since: &str| {
        Err(CniError::new(
            ErrorCode::IncompatibleVersion,
            format!("cniVersion {v} does not allow {verb}; it needs {since} or later"),
        ))
    };
    match inv.command {
        Command::Add => plugin.add(&inv, &conf).map(|r| Some(r.to_json(v))),
        Command::Del => plugin.del(&inv, &conf).map(|()| None),
        Command::Check if !v.supports_check() => refuse("CHECK", "0.4.0"),
        Command::Check => plugin.check(&inv, &conf).map(|()| None),
        Command::Status if !v.supports_status_and_gc() => refuse("STATUS", "1.1.0"),
        Command::Status => plugin.status(&inv, &conf).map(|()| None),
        Command::Gc if !v.supports_status_and_gc() => refuse("GC", "1.1.0"),
        Command::Gc => plugin.gc(&inv, &conf).map(|()| None),
        Command::Version => unreachable!("answered above"),
    }
}

fn version_answer(input: &[u8]) -> Value {
    let asked = NetConf::requested_version(input)
        .filter(|s| s.parse::<Version>().is_ok())
        .unwrap_or_else(|| Version::LATEST.as_str().to_string());
    let supported: Vec<_> = Version::ALL.iter().map(|v| v.as_str()).collect();
    json!({"cniVersion": asked, "supportedVersions": supported})
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::result::IpConfig;
    use std::collections::HashMap;

    struct Fixed;
    impl Plugin for Fixed {
        fn add(&self, _: &Invocation, _: &NetConf) -> Result<CniResult, CniError> {
            Ok(CniResult {
                ips: vec![IpConfig {
                    address: "10.1.0.2/32".parse().unwrap(),
                    gateway: None,
                    interface: None,
                }],
                ..Default::default()
            })
        }
        fn del(&self, _: &Invocation, _: &NetConf) -> Result<(), CniError> {
            Ok(())
        }
        fn check(&self, _: &Invocation, _: &NetConf) -> Result<(), CniError> {
            Err(CniError::new(ErrorCode::CheckFailed, "differs"))
        }
        fn status(&self, _: &Invocation, _: &NetConf) -> Result<(), CniError> {
            Ok(())
        }
        fn gc(&self, _: &Invocation, _: &NetConf) -> Result<(), CniError> {
            Ok(())
        }
    }

    fn call(cmd: &str, stdin: &str) -> (i32, Option<Value>) {
        let env: HashMap<&str, String> = [
            ("CNI_COMMAND", cmd.to_string()),
            ("CNI_CONTAINERID", "c1".into()),
            ("CNI_NETNS", "/var/run/netns/x".into()),
            ("CNI_IFNAME", "eth0".into()),
        ]
        .into();
        let mut out = Vec::new();
        let code = run(
            &Fixed,
            |k| env.get(k).cloned(),
            &mut stdin.as_bytes(),
            &mut out,
        );
        let v = (!out.is_empty()).then(|| serde_json::from_slice(&out).unwrap());
        (code, v)
    }

    const CONF: &str = r#"{"cniVersion":"0.4.0","name":"n","type":"fjord"}"#;

    #[test]
    fn add_prints_the_result_in_the_asked_version() {
        let (code, v) = call("ADD", CONF);
        assert_eq!(code, 0);
        let v = v.unwrap();
        assert_eq!(v["cniVersion"], "0.4.0");
        assert_eq!(v["ips"][0]["version"], "4");
    }

    #[test]
    fn errors_print_the_spec_object_and_exit_non_zero() {
        let (code, v) = call("CHECK", CONF);
        assert_eq!(code, 1);
        assert_eq!(
            v.unwrap(),
            json!({"cniVersion":"0.4.0","code":101,"msg":"differs"})
        );
        let (code, v) = call("ADD", "{garbage");
        assert_eq!(code, 1);
        assert_eq!(v.unwrap()["code"], 6);
    }

    #[test]
    fn verbs_newer_than_the_config_are_refused_with_code_1() {
        let old = r#"{"cniVersion":"0.3.1","name":"n","type":"fjord"}"#;
        assert_eq!(call("CHECK", old).1.unwrap()["code"], 1);
        assert_eq!(call("GC", CONF).1.unwrap()["code"], 1);
        assert_eq!(call("STATUS", CONF).1.unwrap()["code"], 1);
    }

    #[test]
    fn version_lists_everything_and_del_prints_nothing() {
        let (code, v) = call("VERSION", r#"{"cniVersion":"1.0.0"}"#);
        assert_eq!(code, 0);
        let v = v.unwrap();
        assert_eq!(v["cniVersion"], "1.0.0");
        assert_eq!(
            v["supportedVersions"],
            json!(["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"])
        );
        assert_eq!(call("DEL", CONF), (0, None));
    }
}
