//! `fjord-routed status`: the daemon's peer table over a root-only Unix socket.

use serde::{Deserialize, Serialize};
use std::io;
use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusReport {
    pub node: String,
    pub asn: u32,
    pub router_id: String,
    pub addresses: Vec<IpAddr>,
    /// `never`, `always` or `cross-subnet`.
    #[serde(default)]
    pub encapsulation: String,
    /// The node's IPAM blocks, announced to every peer.
    pub blocks: Vec<String>,
    pub peers: Vec<PeerStatus>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerStatus {
    pub address: IpAddr,
    #[serde(rename = "type")]
    pub peer_type: String,
    /// The registered node behind a mesh peer.
    pub node: Option<String>,
    pub asn: u32,
    pub state: String,
    /// Local time of the last state change, HH:MM:SS, as the table shows it.
    pub since: String,
    pub since_unix: u64,
    /// How the peer's blocks are reached: `native`, `vxlan`, or `unreachable` (mode
    /// `never` and the peer is not on a directly connected subnet: no routes installed).
    #[serde(default)]
    pub datapath: String,
    pub routes_in: usize,
    pub routes_out: usize,
}

pub const MESH_PEER: &str = "node-to-node mesh";
pub const EXTERNAL_PEER: &str = "global";

/// Serves `report()` as one JSON line per connection. The socket is made 0600: the
/// peer table is for the node's administrator.
pub async fn serve(
    path: &Path,
    report: impl Fn() -> StatusReport + Send + Sync + 'static,
) -> io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    loop {
        let (mut stream, _) = listener.accept().await?;
        let mut line = serde_json::to_vec(&report()).expect("a status report serializes");
        line.push(b'\n');
        tokio::spawn(async move {
            // A client that hangs up early loses nothing but its own answer.
            let _ = stream.write_all(&line).await;
            let _ = stream.shutdown().await;
        });
    }
}

/// Asks a running daemon for its report.
pub async fn query(path: &Path) -> io::Result<StatusReport> {
    let mut stream = UnixStream::connect(path).await.map_err(|e| {
        io::Error::new(
            e.kind(),
            format!(
                "cannot reach fjord-routed at {}: {e} (is it running? is --socket right?)",
                path.display()
            ),
        )
    })?;
    let mut buf = Vec::new();
    stream.read_to_end(&mut buf).await?;
    serde_json::from_slice(&buf).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("unreadable status: {e}"),
        )
    })
}

/// The peer table of docs/routed.md ("Status").
pub fn render_table(report: &StatusReport) -> String {
    let headers = [
        "PEER ADDRESS",
        "PEER TYPE",
        "STATE",
        "SINCE",
        "ROUTES IN/OUT",
        "DATAPATH",
    ];
    let rows: Vec<[String; 6]> = report
        .peers
        .iter()
        .map(|p| {
            [
                p.address.to_string(),
                p.peer_type.clone(),
                p.state.clone(),
                p.since.clone(),
                format!("{}/{}", p.routes_in, p.routes_out),
                p.datapath.clone(),
            ]
        })
        .collect();
    let widths: Vec<usize> = (0..6)
        .map(|i| {
            rows.iter()
                .map(|r| r[i].len())
                .chain([headers[i].len()])
                .max()
                .unwrap_or(0)
                + 2
        })
        .collect();
    let rule = widths
        .iter()
        .fold(String::from("+"), |acc, w| acc + &"-".repeat(*w) + "+");
    let line = |cells: &[String], center: &[bool]| {
        let mut out = String::from("|");
        for (i, cell) in cells.iter().enumerate() {
            let w = widths[i] - 2;
            let padded = if center[i] {
                format!("{cell:^w$}")
            } else {
                format!("{cell:<w$}")
            };
            out += &format!(" {padded} |");
        }
        out
    };
    let header_cells: Vec<String> = headers.iter().map(|h| h.to_string()).collect();
    let mut out = vec![format!(
        "BGP status of node {} (AS {})",
        report.node, report.asn
    )];
    out.push(rule.clone());
    out.push(line(&header_cells, &[true; 6]));
    out.push(rule.clone());
    for r in &rows {
        out.push(line(r, &[false, false, false, false, true, false]));
    }
    out.push(rule);
    if !report.blocks.is_empty() {
        out.push(format!("Blocks of this node: {}", report.blocks.join(", ")));
    }
    out.join("\n") + "\n"
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> StatusReport {
        StatusReport {
            node: "node-1".into(),
            asn: 64512,
            router_id: "10.0.0.1".into(),
            addresses: vec!["10.0.0.1".parse().unwrap()],
            encapsulation: "cross-subnet".into(),
            blocks: vec!["10.244.0.0/26".into()],
            peers: vec![PeerStatus {
                address: "10.0.0.2".parse().unwrap(),
                peer_type: MESH_PEER.into(),
                node: Some("node-2".into()),
                asn: 64512,
                state: "Established".into(),
                since: "10:23:14".into(),
                since_unix: 0,
                datapath: "native".into(),
                routes_in: 1,
                routes_out: 1,
            }],
        }
    }

    #[test]
    fn table_looks_like_the_design() {
        let table = render_table(&sample());
        let expected = "\
+--------------+-------------------+-------------+----------+---------------+----------+
| PEER ADDRESS |     PEER TYPE     |    STATE    |  SINCE   | ROUTES IN/OUT | DATAPATH |
+--------------+-------------------+-------------+----------+---------------+----------+
| 10.0.0.2     | node-to-node mesh | Established | 10:23:14 |      1/1      | native   |
+--------------+-------------------+-------------+----------+---------------+----------+
";
        assert!(table.contains(expected), "{table}");
        assert!(table.contains("10.244.0.0/26"));
    }

    #[test]
    fn json_uses_the_documented_keys() {
        let v = serde_json::to_value(sample()).unwrap();
        assert_eq!(v["peers"][0]["type"], MESH_PEER);
        assert_eq!(v["peers"][0]["routes_in"], 1);
        assert_eq!(v["peers"][0]["datapath"], "native");
        assert_eq!(v["encapsulation"], "cross-subnet");
        assert_eq!(v["blocks"][0], "10.244.0.0/26");
    }

    #[tokio::test]
    async fn serves_the_report_over_a_private_socket() {
        let dir = std::env::temp_dir().join(format!("fjord-status-{}", std::process::id()));
        let path = dir.join("routed.sock");
        let server_path = path.clone();
        let server = tokio::spawn(async move { serve(&server_path, sample).await });
        let report = loop {
            match query(&path).await {
                Ok(r) => break r,
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(10)).await,
            }
        };
        assert_eq!(report, sample());
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        server.abort();
        std::fs::remove_dir_all(dir).unwrap();
    }
}
