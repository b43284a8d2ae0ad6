//! `fjord-routed status`: the daemon's peer table over a root-only Unix socket.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::SystemTime;
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
    /// The last state change in UTC as the table shows it ([`since_text`]): `HH:MM:SS`
    /// when it was today, `YYYY-MM-DD HH:MM:SS` before; `-` before the first.
    pub since: String,
    /// The same as seconds since the Unix epoch (0 before the first change).
    pub since_unix: u64,
    /// How the peer's blocks are reached: `native`, `vxlan`, or `unreachable` (mode
    /// `never` and the peer is not on a directly connected subnet: no routes installed).
    #[serde(default)]
    pub datapath: String,
    pub routes_in: usize,
    pub routes_out: usize,
    /// Announcements not installed, by reason (`own_next_hop`, `as_path_loop`,
    /// `own_block`; routed/src/node/import.rs), since the daemon started.
    #[serde(default)]
    pub rejected: BTreeMap<String, u64>,
}

pub const MESH_PEER: &str = "node-to-node mesh";
pub const EXTERNAL_PEER: &str = "global";

/// Serves `report()` as one JSON line per connection (a connection asked while the
/// daemon stops, when `report()` gives `None`, is closed unanswered). The socket is made
/// 0600: the peer table is for the node's administrator.
pub async fn serve<F, R>(path: &Path, report: F) -> io::Result<()>
where
    F: Fn() -> R,
    R: Future<Output = Option<StatusReport>> + Send + 'static,
{
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
        let answer = report();
        tokio::spawn(async move {
            if let Some(report) = answer.await {
                let mut line = serde_json::to_vec(&report).expect("a status report serializes");
                line.push(b'\n');
                // A client that hangs up early loses nothing but its own answer.
                let _ = stream.write_all(&line).await;
            }
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

/// When a state change at `at` happened, in UTC, as seen at `now`: `HH:MM:SS` on the
/// same day, `YYYY-MM-DD HH:MM:SS` on an earlier (or later) one.
pub fn since_text(at: SystemTime, now: SystemTime) -> String {
    let (at, now) = (unix_seconds(at), unix_seconds(now));
    let (day, secs) = (at / 86_400, at % 86_400);
    let clock = format!("{:02}:{:02}:{:02}", secs / 3600, secs / 60 % 60, secs % 60);
    if day == now / 86_400 {
        return clock;
    }
    let (year, month, date) = civil_date(day);
    format!("{year:04}-{month:02}-{date:02} {clock}")
}

pub fn unix_seconds(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Year, month, day of the `days`th day after 1970-01-01 (proleptic Gregorian), by
/// Howard Hinnant's `civil_from_days`.
fn civil_date(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
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
                rejected: BTreeMap::from([("own_block".to_string(), 2)]),
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
        assert_eq!(v["peers"][0]["rejected"]["own_block"], 2);
    }

    #[test]
    fn since_is_a_utc_clock_today_and_a_dated_one_before() {
        let day = |d: u64, h: u64, m: u64, s: u64| {
            SystemTime::UNIX_EPOCH
                + std::time::Duration::from_secs(d * 86_400 + h * 3600 + m * 60 + s)
        };
        // 2026-05-01 is day 20574 since the epoch.
        let now = day(20_574, 18, 0, 0);
        assert_eq!(since_text(day(20_574, 10, 23, 14), now), "10:23:14");
        assert_eq!(
            since_text(day(20_573, 23, 59, 59), now),
            "2026-04-30 23:59:59"
        );
        assert_eq!(since_text(day(0, 0, 0, 7), now), "1970-01-01 00:00:07");
        assert_eq!(
            since_text(day(11_016, 12, 0, 0), now),
            "2000-02-29 12:00:00"
        );
        assert_eq!(unix_seconds(day(1, 0, 0, 1)), 86_401);
    }

    #[tokio::test]
    async fn serves_the_report_over_a_private_socket() {
        let dir = std::env::temp_dir().join(format!("fjord-status-{}", std::process::id()));
        let path = dir.join("routed.sock");
        let server_path = path.clone();
        let server =
            tokio::spawn(async move { serve(&server_path, || async { Some(sample()) }).await });
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
