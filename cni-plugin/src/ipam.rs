//! Addresses for the pod: fjord-ipam in-process when `ipam.type` is `fjord-ipam`, any
//! other IPAM plugin by delegation through CNI_PATH, as the spec describes.

use crate::error::PluginError;
use fjord_cni_types::{CniError, CniResult, Invocation, NetConf};
use fjord_ipam::{cni, Ipam, IpamConfig};
use serde_json::Value;
use std::io::Write;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};

pub const IN_PROCESS_TYPE: &str = "fjord-ipam";

pub enum Addressing {
    InProcess(Box<Ipam>),
    Delegate { plugin: String, binary: PathBuf },
}

impl Addressing {
    pub fn from_conf(inv: &Invocation, conf: &NetConf) -> Result<Self, PluginError> {
        let ipam = conf.ipam.as_ref().ok_or_else(|| {
            PluginError::Config(
                "\"ipam\" is missing: fjord needs an IPAM plugin, e.g. {\"type\": \"fjord-ipam\"}"
                    .into(),
            )
        })?;
        let plugin = conf
            .ipam_type()
            .filter(|t| !t.is_empty())
            .ok_or_else(|| PluginError::Config("\"ipam.type\" is missing".into()))?;
        if plugin == IN_PROCESS_TYPE {
            let config = IpamConfig::from_json(ipam)?;
            return Ok(Addressing::InProcess(Box::new(Ipam::open(config)?)));
        }
        if plugin.contains('/') {
            return Err(PluginError::Config(format!(
                "\"ipam.type\" {plugin:?} must be a plugin name, not a path"
            )));
        }
        let binary = inv
            .path
            .iter()
            .map(|dir| PathBuf::from(dir).join(plugin))
            .find(|p| p.is_file())
            .ok_or_else(|| PluginError::DelegateNotFound {
                plugin: plugin.to_string(),
                searched: if inv.path.is_empty() {
                    "CNI_PATH is empty".into()
                } else {
                    inv.path.join(":")
                },
            })?;
        Ok(Addressing::Delegate {
            plugin: plugin.to_string(),
            binary,
        })
    }

    pub fn allocate(&self, inv: &Invocation, conf: &NetConf) -> Result<Vec<IpAddr>, PluginError> {
        match self {
            Addressing::InProcess(ipam) => {
                let requested = cni::requested_addresses(inv, conf)?;
                let assigned =
                    ipam.allocate(&cni::handle(inv), &cni::owner(inv, conf), &requested)?;
                Ok(assigned.into_iter().map(|a| a.address).collect())
            }
            Addressing::Delegate { .. } => {
                let out = self.delegate("ADD", conf)?.unwrap_or(Value::Null);
                let result = CniResult::from_json(&out).map_err(|reason| self.run_error(reason))?;
                if result.ips.is_empty() {
                    return Err(self.run_error("its result holds no IP address".into()));
                }
                Ok(result.ips.iter().map(|ip| ip.address.ip()).collect())
            }
        }
    }

    /// Releases the attachment's addresses; returns those it knows it released.
    pub fn release(&self, inv: &Invocation, conf: &NetConf) -> Result<Vec<IpAddr>, PluginError> {
        match self {
            Addressing::InProcess(ipam) => Ok(ipam.release(&cni::handle(inv))?),
            Addressing::Delegate { .. } => self.delegate("DEL", conf).map(|_| Vec::new()),
        }
    }

    /// The attachment's addresses as the IPAM records them (delegates: their CHECK).
    pub fn check(
        &self,
        inv: &Invocation,
        conf: &NetConf,
        expected: &[IpAddr],
    ) -> Result<(), PluginError> {
        match self {
            Addressing::InProcess(ipam) => {
                let mut held: Vec<IpAddr> = ipam
                    .lookup(&cni::handle(inv))?
                    .into_iter()
                    .map(|a| a.address)
                    .collect();
                if held.is_empty() {
                    return Err(PluginError::NotAttached {
                        container_id: inv.container_id.clone(),
                        ifname: inv.ifname.clone(),
                    });
                }
                let mut want = expected.to_vec();
                held.sort();
                want.sort();
                if held != want {
                    return Err(PluginError::CheckMismatch(format!(
                        "the IPAM holds {held:?} for this attachment, prevResult says {want:?}"
                    )));
                }
                Ok(())
            }
            Addressing::Delegate { .. } => self.delegate("CHECK", conf).map(drop),
        }
    }

    pub fn gc(&self, conf: &NetConf) -> Result<(), PluginError> {
        match self {
            Addressing::InProcess(ipam) => {
                let released = ipam.gc(&conf.name, &cni::valid_handles(conf))?;
                for (h, ip) in released {
                    tracing::info!(container_id = %h.container_id, ifname = %h.ifname, %ip, "GC released address");
                }
                Ok(())
            }
            Addressing::Delegate { .. } => self.delegate("GC", conf).map(drop),
        }
    }

    pub fn status(&self, conf: &NetConf) -> Result<(), PluginError> {
        match self {
            Addressing::InProcess(ipam) => Ok(ipam.status()?),
            Addressing::Delegate { .. } => self.delegate("STATUS", conf).map(drop),
        }
    }

    /// Runs the delegate with the same environment and configuration, as the spec's
    /// "delegated plugin" protocol asks; CNI_COMMAND is the verb.
    fn delegate(&self, verb: &str, conf: &NetConf) -> Result<Option<Value>, PluginError> {
        let Addressing::Delegate { binary, .. } = self else {
            unreachable!("delegate() is only called on delegates")
        };
        let stdin = serde_json::to_vec(&conf.raw).expect("a JSON map serializes");
        let mut child = Command::new(binary)
            .env("CNI_COMMAND", verb)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| self.run_error(format!("cannot start {}: {e}", binary.display())))?;
        if let Some(mut pipe) = child.stdin.take() {
            pipe.write_all(&stdin)
                .map_err(|e| self.run_error(format!("writing its stdin: {e}")))?;
        }
        let out = child
            .wait_with_output()
            .map_err(|e| self.run_error(format!("waiting for it: {e}")))?;
        let parsed: Option<Value> = serde_json::from_slice(&out.stdout).ok();
        if out.status.success() {
            return Ok(parsed);
        }
        let error = parsed
            .as_ref()
            .and_then(CniError::from_json)
            .unwrap_or_else(|| {
                CniError::new(
                    fjord_cni_types::ErrorCode::DelegateFailed,
                    format!(
                        "exited with {} and printed {:?} {:?}",
                        out.status,
                        String::from_utf8_lossy(&out.stdout),
                        String::from_utf8_lossy(&out.stderr)
                    ),
                )
            });
        Err(PluginError::Delegate {
            plugin: self.plugin_name().to_string(),
            error,
        })
    }

    fn plugin_name(&self) -> &str {
        match self {
            Addressing::InProcess(_) => IN_PROCESS_TYPE,
            Addressing::Delegate { plugin, .. } => plugin,
        }
    }

    fn run_error(&self, reason: String) -> PluginError {
        PluginError::DelegateRun {
            plugin: self.plugin_name().to_string(),
            reason,
        }
    }
}
