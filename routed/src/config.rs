//! The daemon's settings: flags, each with a `FJORD_*` environment variable for
//! DaemonSet use (docs/routed.md).

use clap::{Args, Parser, Subcommand, ValueEnum};
use fjord_ipam::config::{EtcdTlsFiles, TlsSettingNames};
use fjord_ipam::StoreSpec;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::time::Duration;

pub const DEFAULT_ASN: u32 = 64512;
pub const DEFAULT_SOCKET: &str = "/run/fjord/routed.sock";

#[derive(Debug, Parser)]
#[command(
    name = "fjord-routed",
    version,
    about = "Fjord's per-node BGP route daemon"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: CliCommand,
}

#[derive(Debug, Subcommand)]
pub enum CliCommand {
    /// Run the daemon: register the node, mesh with the others, program routes.
    Run(RunArgs),
    /// Print the peer table of a running daemon.
    Status(StatusArgs),
    /// Install `fjord`, `fjord-ipam` and the conflist on the node, atomically (the
    /// DaemonSet's init container).
    InstallCni(InstallCniArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Encapsulation {
    /// Native routes via the peer's node address only; a node that is not on a
    /// directly connected subnet is reported unreachable and gets no routes.
    Never,
    /// Every other node's blocks through the `fjord.vxlan` device.
    Always,
    /// Native to nodes on a directly connected subnet, VXLAN to the others (the default).
    CrossSubnet,
}

impl std::fmt::Display for Encapsulation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Encapsulation::Never => "never",
            Encapsulation::Always => "always",
            Encapsulation::CrossSubnet => "cross-subnet",
        })
    }
}

#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// This node's name, as the IPAM records block affinities.
    #[arg(long, env = "FJORD_NODE_NAME")]
    pub node_name: String,
    /// The node's underlay address(es): IPv4[,IPv6]. The IPv4 address is the BGP identifier.
    #[arg(
        long,
        env = "FJORD_NODE_ADDRESS",
        value_delimiter = ',',
        required = true
    )]
    pub node_address: Vec<IpAddr>,
    /// The AS of the node-to-node mesh, 1..=4294967294 without the reserved numbers.
    #[arg(long, env = "FJORD_ASN", default_value_t = DEFAULT_ASN)]
    pub asn: u32,
    /// dir:PATH, etcd:http://HOST:PORT[,...], or kubernetes[:DIR] (Node objects; podCIDRs
    /// written to DIR/<node>.json, DIR defaulting to /var/lib/fjord/kubernetes:
    /// docs/kubernetes.md).
    #[arg(long, env = "FJORD_STORE", default_value = "dir:/var/lib/fjord/ipam")]
    pub store: String,
    /// With --store etcd:https://...: the CA certificate (PEM) that signed the etcd
    /// members' server certificates.
    #[arg(long, env = "FJORD_ETCD_CA_CERT_FILE")]
    pub etcd_ca_cert_file: Option<PathBuf>,
    /// With --store etcd:https://...: the client certificate (PEM) etcd's
    /// --client-cert-auth asks for; with --etcd-key-file.
    #[arg(long, env = "FJORD_ETCD_CERT_FILE")]
    pub etcd_cert_file: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(long, env = "FJORD_ETCD_KEY_FILE")]
    pub etcd_key_file: Option<PathBuf>,
    /// With --store kubernetes: a kubeconfig file. Without it, the in-cluster service
    /// account when KUBERNETES_SERVICE_HOST is set, else KUBECONFIG or ~/.kube/config.
    #[arg(long, env = "FJORD_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    #[arg(long, env = "FJORD_ENCAPSULATION", value_enum, default_value_t = Encapsulation::CrossSubnet)]
    pub encapsulation: Encapsulation,
    /// An extra, non-mesh peer: ADDRESS or ADDRESS:ASN ([IPv6]:ASN); the ASN defaults to ours.
    #[arg(long = "peer", env = "FJORD_PEERS", value_delimiter = ' ')]
    pub peers: Vec<String>,
    /// Do not peer with the other registered nodes.
    #[arg(long, env = "FJORD_NO_MESH")]
    pub no_mesh: bool,
    #[arg(long, env = "FJORD_LISTEN_PORT", default_value_t = 179)]
    pub listen_port: u16,
    #[arg(long, env = "FJORD_SOCKET", default_value = DEFAULT_SOCKET)]
    pub socket: PathBuf,
    /// BGP hold time proposed to peers, in seconds (keepalives every third of it).
    #[arg(long, env = "FJORD_HOLD_TIME", default_value_t = 30)]
    pub hold_time: u16,
    /// Graceful restart time advertised to peers, in seconds; 0 turns graceful restart
    /// off. Kept at most the hold time, so a node that dies for good loses its routes
    /// on the other nodes within the hold time.
    #[arg(long, env = "FJORD_GRACEFUL_RESTART_TIME", default_value_t = 30)]
    pub graceful_restart_time: u16,
    /// Seconds between connection attempts to a peer that is down.
    #[arg(long, env = "FJORD_CONNECT_RETRY", default_value_t = 5)]
    pub connect_retry: u64,
    /// Where the pod MTU for this node is written for the `fjord` CNI plugin.
    #[arg(long, env = "FJORD_MTU_FILE", default_value = "/run/fjord/mtu")]
    pub mtu_file: PathBuf,
}

#[derive(Debug, Clone, Args)]
pub struct StatusArgs {
    #[arg(long, env = "FJORD_SOCKET", default_value = DEFAULT_SOCKET)]
    pub socket: PathBuf,
    /// Print JSON instead of the table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Args)]
pub struct InstallCniArgs {
    /// Where `fjord` and `fjord-ipam` are in the image.
    #[arg(
        long,
        env = "FJORD_CNI_SOURCE_BIN_DIR",
        default_value = "/opt/fjord/bin"
    )]
    pub source_bin_dir: PathBuf,
    /// The node's CNI bin directory, as mounted into the container.
    #[arg(long, env = "FJORD_CNI_BIN_DIR", default_value = "/host/opt/cni/bin")]
    pub cni_bin_dir: PathBuf,
    /// The node's CNI config directory, as mounted into the container.
    #[arg(
        long,
        env = "FJORD_CNI_CONF_DIR",
        default_value = "/host/etc/cni/net.d"
    )]
    pub cni_conf_dir: PathBuf,
    /// The conflist template (placeholders __FJORD_NODE_NAME__ and __FJORD_STORE__).
    #[arg(
        long,
        env = "FJORD_CNI_CONFLIST_TEMPLATE",
        default_value = "/etc/fjord/cni/fjord.conflist"
    )]
    pub conflist_template: PathBuf,
    /// File name of the installed conflist. The default sorts before every other
    /// network's usual name (05-cilium, 10-calico, 10-flannel, ...), after 00-multus.
    #[arg(
        long,
        env = "FJORD_CNI_CONFLIST_NAME",
        default_value = crate::install::DEFAULT_CONFLIST_NAME
    )]
    pub conflist_name: String,
    /// Move every other network config in the CNI config directory aside (renamed with
    /// the suffix .fjord-disabled), so the runtime uses Fjord's; `--exclusive=false`
    /// leaves them and only warns about those that sort first.
    #[arg(long, env = "FJORD_CNI_EXCLUSIVE", default_value_t = true, action = clap::ArgAction::Set)]
    pub exclusive: bool,
    /// This node's name, for __FJORD_NODE_NAME__.
    #[arg(long, env = "FJORD_NODE_NAME")]
    pub node_name: String,
    /// The store the daemon uses, for __FJORD_STORE__.
    #[arg(long, env = "FJORD_STORE", default_value = "dir:/var/lib/fjord/ipam")]
    pub store: String,
}

/// An extra peer from `--peer`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtraPeer {
    pub address: IpAddr,
    pub asn: Option<u32>,
}

/// Settings checked and resolved.
#[derive(Debug, Clone)]
pub struct Settings {
    pub node_name: String,
    pub addresses: Vec<IpAddr>,
    pub router_id: Ipv4Addr,
    pub asn: u32,
    pub store: StoreSpec,
    pub kubeconfig: Option<PathBuf>,
    pub peers: Vec<ExtraPeer>,
    pub mesh: bool,
    pub encapsulation: Encapsulation,
    pub listen_port: u16,
    pub socket: PathBuf,
    pub hold_time: u16,
    pub graceful_restart_time: u16,
    pub connect_retry: Duration,
    pub mtu_file: PathBuf,
}

impl RunArgs {
    pub fn settings(&self) -> Result<Settings, String> {
        let router_id = self
            .node_address
            .iter()
            .find_map(|a| match a {
                IpAddr::V4(v4) => Some(*v4),
                IpAddr::V6(_) => None,
            })
            .ok_or("--node-address needs an IPv4 address: it is the BGP identifier")?;
        if self.node_address.iter().filter(|a| a.is_ipv4()).count() > 1
            || self.node_address.iter().filter(|a| a.is_ipv6()).count() > 1
        {
            return Err("--node-address takes at most one IPv4 and one IPv6 address".into());
        }
        check_asn("--asn", self.asn)?;
        if self.hold_time != 0 && self.hold_time < 3 {
            return Err(format!(
                "--hold-time {} must be 0 or at least 3 (RFC 4271)",
                self.hold_time
            ));
        }
        let store: StoreSpec = self
            .store
            .parse::<StoreSpec>()
            .and_then(|store| store.with_etcd_tls(&self.etcd_tls_files(), &ETCD_TLS_FLAGS))
            .map_err(|e| format!("--store: {e}"))?;
        let peers = self
            .peers
            .iter()
            .filter(|p| !p.is_empty())
            .map(|p| parse_peer(p))
            .collect::<Result<_, _>>()?;
        let graceful_restart_time = match self.hold_time {
            0 => self.graceful_restart_time,
            hold => self.graceful_restart_time.min(hold),
        };
        Ok(Settings {
            node_name: self.node_name.clone(),
            addresses: self.node_address.clone(),
            router_id,
            asn: self.asn,
            store,
            kubeconfig: self.kubeconfig.clone(),
            peers,
            mesh: !self.no_mesh,
            encapsulation: self.encapsulation,
            listen_port: self.listen_port,
            socket: self.socket.clone(),
            hold_time: self.hold_time,
            graceful_restart_time,
            connect_retry: Duration::from_secs(self.connect_retry.max(1)),
            mtu_file: self.mtu_file.clone(),
        })
    }
}

/// How the daemon's etcd TLS settings are spelled, for errors.
const ETCD_TLS_FLAGS: TlsSettingNames = TlsSettingNames {
    ca_cert_file: "--etcd-ca-cert-file",
    cert_file: "--etcd-cert-file",
    key_file: "--etcd-key-file",
};

impl RunArgs {
    fn etcd_tls_files(&self) -> EtcdTlsFiles {
        EtcdTlsFiles {
            ca_cert_file: self.etcd_ca_cert_file.clone(),
            cert_file: self.etcd_cert_file.clone(),
            key_file: self.etcd_key_file.clone(),
        }
    }
}

impl Settings {
    pub fn address_v6(&self) -> Option<IpAddr> {
        self.addresses.iter().copied().find(IpAddr::is_ipv6)
    }

    /// What the node core needs of them.
    pub fn node_config(&self) -> crate::node::NodeConfig {
        crate::node::NodeConfig {
            node_name: self.node_name.clone(),
            addresses: self.addresses.clone(),
            router_id: self.router_id,
            asn: self.asn,
            peers: self.peers.clone(),
            mesh: self.mesh,
            encapsulation: self.encapsulation,
            listen_port: self.listen_port,
            hold_time: self.hold_time,
            graceful_restart_time: self.graceful_restart_time,
            connect_retry: self.connect_retry,
        }
    }
}

/// `10.0.0.9`, `10.0.0.9:65001`, `fd00::9`, `[fd00::9]:65001`.
pub fn parse_peer(text: &str) -> Result<ExtraPeer, String> {
    let bad = || format!("--peer {text:?} is not ADDRESS, ADDRESS:ASN or [IPv6]:ASN");
    if let Ok(address) = text.parse::<IpAddr>() {
        return Ok(ExtraPeer { address, asn: None });
    }
    let (addr, asn) = text.rsplit_once(':').ok_or_else(bad)?;
    let addr = addr.trim_start_matches('[').trim_end_matches(']');
    let asn = asn.parse().map_err(|_| bad())?;
    check_asn(&format!("--peer {text:?}"), asn)?;
    Ok(ExtraPeer {
        address: addr.parse().map_err(|_| bad())?,
        asn: Some(asn),
    })
}

/// AS numbers no BGP speaker may use as its own: 0 (RFC 7607), AS_TRANS 23456 (RFC 6793,
/// the 2-octet stand-in for 4-octet ASNs), the documentation ranges (RFC 5398) and the
/// last 2-octet and 4-octet numbers (RFC 7300).
fn check_asn(what: &str, asn: u32) -> Result<(), String> {
    let reason = match asn {
        0 => "AS 0 is reserved (RFC 7607) and no peer accepts it in an OPEN",
        23456 => "AS 23456 is AS_TRANS (RFC 6793), the stand-in for 4-octet AS numbers",
        64496..=64511 | 65536..=65551 => "it is reserved for documentation (RFC 5398)",
        65535 | 4_294_967_295 => "it is reserved (RFC 7300)",
        _ => return Ok(()),
    };
    Err(format!(
        "{what}: AS {asn} cannot be used: {reason}; private AS numbers are 64512-65534 and 4200000000-4294967294 (RFC 6996)"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_args(extra: &[&str]) -> Result<Settings, String> {
        let mut argv = vec!["fjord-routed", "run", "--node-name", "n1"];
        argv.extend_from_slice(extra);
        let cli = Cli::try_parse_from(argv).map_err(|e| e.to_string())?;
        let CliCommand::Run(args) = cli.command else {
            unreachable!()
        };
        args.settings()
    }

    #[test]
    fn peers_parse_in_every_documented_form() {
        assert_eq!(
            parse_peer("10.0.0.9").unwrap(),
            ExtraPeer {
                address: "10.0.0.9".parse().unwrap(),
                asn: None
            }
        );
        assert_eq!(parse_peer("10.0.0.9:65001").unwrap().asn, Some(65001));
        assert_eq!(parse_peer("fd00::9").unwrap().asn, None);
        let v6 = parse_peer("[fd00::9]:4200000001").unwrap();
        assert_eq!(v6.address, "fd00::9".parse::<IpAddr>().unwrap());
        assert_eq!(v6.asn, Some(4_200_000_001));
        for bad in ["", "router", "10.0.0.9:x", "10.0.0.9:99999999999"] {
            assert!(parse_peer(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn settings_resolve_router_id_and_cap_the_restart_time() {
        let s = run_args(&[
            "--node-address",
            "fd00::1,10.0.0.1",
            "--hold-time",
            "9",
            "--graceful-restart-time",
            "120",
            "--store",
            "dir:/tmp/x",
        ])
        .unwrap();
        assert_eq!(s.router_id, "10.0.0.1".parse::<Ipv4Addr>().unwrap());
        assert_eq!(s.graceful_restart_time, 9);
        assert_eq!(s.address_v6(), Some("fd00::1".parse().unwrap()));
        assert!(s.mesh);
        assert_eq!(s.encapsulation, Encapsulation::CrossSubnet);
    }

    #[test]
    fn encapsulation_takes_the_three_documented_values() {
        for (text, mode) in [
            ("never", Encapsulation::Never),
            ("always", Encapsulation::Always),
            ("cross-subnet", Encapsulation::CrossSubnet),
        ] {
            let s = run_args(&["--node-address", "10.0.0.1", "--encapsulation", text]).unwrap();
            assert_eq!(s.encapsulation, mode, "{text}");
        }
    }

    #[test]
    fn kubernetes_store_and_kubeconfig_are_read() {
        let s = run_args(&["--node-address", "10.0.0.1", "--store", "kubernetes"]).unwrap();
        assert_eq!(
            s.store,
            StoreSpec::Kubernetes(fjord_ipam::config::DEFAULT_KUBERNETES_DIR.into())
        );
        assert_eq!(s.kubeconfig, None);
        let s = run_args(&[
            "--node-address",
            "10.0.0.1",
            "--store",
            "kubernetes:/run/fjord/k8s",
            "--kubeconfig",
            "/etc/fjord/kubeconfig",
        ])
        .unwrap();
        assert_eq!(s.store, StoreSpec::Kubernetes("/run/fjord/k8s".into()));
        assert_eq!(s.kubeconfig, Some("/etc/fjord/kubeconfig".into()));
    }

    #[test]
    fn settings_refuse_what_cannot_work() {
        assert!(run_args(&["--node-address", "fd00::1"])
            .unwrap_err()
            .contains("IPv4"));
        assert!(run_args(&["--node-address", "10.0.0.1", "--hold-time", "2"]).is_err());
        assert!(run_args(&["--node-address", "10.0.0.1,10.0.0.2"]).is_err());
        assert!(run_args(&["--node-address", "10.0.0.1", "--store", "nfs:/x"]).is_err());
        assert!(run_args(&["--node-address", "10.0.0.1", "--encapsulation", "bogus"]).is_err());
    }

    #[test]
    fn etcd_tls_files_come_from_the_flags() {
        let s = run_args(&[
            "--node-address",
            "10.0.0.1",
            "--store",
            "etcd:https://10.0.0.11:2379",
            "--etcd-ca-cert-file",
            "/etc/fjord/etcd/ca.crt",
            "--etcd-cert-file",
            "/etc/fjord/etcd/client.crt",
            "--etcd-key-file",
            "/etc/fjord/etcd/client.key",
        ])
        .unwrap();
        let StoreSpec::Etcd(etcd) = &s.store else {
            panic!("{:?}", s.store)
        };
        let tls = etcd.tls.as_ref().expect("TLS files");
        assert_eq!(tls.ca_cert_file, PathBuf::from("/etc/fjord/etcd/ca.crt"));
        let err = run_args(&[
            "--node-address",
            "10.0.0.1",
            "--store",
            "etcd:https://10.0.0.11:2379",
        ])
        .unwrap_err();
        assert!(err.contains("needs --etcd-ca-cert-file"), "{err}");
        let err = run_args(&[
            "--node-address",
            "10.0.0.1",
            "--store",
            "etcd:http://10.0.0.11:2379",
            "--etcd-cert-file",
            "/c",
        ])
        .unwrap_err();
        assert!(err.contains("--etcd-cert-file is set"), "{err}");
    }

    #[test]
    fn reserved_as_numbers_are_refused_with_the_reason() {
        for (asn, reason) in [
            ("0", "RFC 7607"),
            ("23456", "AS_TRANS"),
            ("64496", "documentation"),
            ("65535", "RFC 7300"),
            ("65551", "documentation"),
            ("4294967295", "RFC 7300"),
        ] {
            let err = run_args(&["--node-address", "10.0.0.1", "--asn", asn]).unwrap_err();
            assert!(
                err.contains(&format!("--asn: AS {asn} cannot be used")) && err.contains(reason),
                "{asn}: {err}"
            );
        }
        let err = parse_peer("10.0.0.9:0").unwrap_err();
        assert!(err.contains("AS 0 cannot be used"), "{err}");
        for fine in ["1", "64512", "65534", "65000", "4200000000", "4294967294"] {
            run_args(&["--node-address", "10.0.0.1", "--asn", fine]).unwrap();
        }
    }
}
