//! `fjord-routed status` as an operator runs it (issue 3, "status table and --json"):
//! two lab nodes, a pod on the first; each node's table names its peer, the peer type,
//! the state and the routes in/out its blocks imply, and agrees with `--json`; the
//! socket is root-only (0600); a wrong socket path is a clear error.

use fjord_conformance::fjord_bin;
use fjord_conformance::lab::{spawn_in_netns, Lab, LabSpec, MESH_PEER_TYPE};
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::time::Duration;

const UP_WITHIN: Duration = Duration::from_secs(30);
const TIMERS: [&str; 4] = ["--hold-time", "9", "--graceful-restart-time", "9"];

/// `fjord-routed status ARGS` inside node `i`: (success, stdout, stderr).
fn status_cli(lab: &Lab, i: usize, args: &[&str]) -> (bool, String, String) {
    let mut cmd = Command::new(fjord_bin("fjord-routed"));
    cmd.arg("status")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let out = spawn_in_netns(lab.node(i).netns(), &mut cmd)
        .wait_with_output()
        .expect("wait for fjord-routed status");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn status_table_and_json_show_the_mesh_peer_and_its_routes() {
    let lab = Lab::new(LabSpec::nodes(2));
    let _daemons: Vec<_> = (0..2).map(|i| lab.start_routed(i, &TIMERS)).collect();
    let _pod = lab.add_pod(0);
    // node1's pod claimed one block per family: node2 learns 2, node1 sends 2.
    let expect = [(0usize, 1usize, "0/2"), (1, 0, "2/0")];
    for (i, peer, routes) in expect {
        let address = lab.node(peer).address(false);
        let status = lab.wait_for_status(
            i,
            UP_WITHIN,
            "the peer is Established with its routes",
            |s| {
                s.peer(address).is_some_and(|p| {
                    p.state == "Established"
                        && format!("{}/{}", p.routes_in, p.routes_out) == routes
                })
            },
        );
        let socket = lab.socket(i);
        let (ok, table, err) = status_cli(&lab, i, &["--socket", &socket.display().to_string()]);
        assert!(ok, "fjord-routed status failed: {err}");
        let row = table
            .lines()
            .find(|l| l.contains(&format!("| {address} ")))
            .unwrap_or_else(|| panic!("no row for {address} in\n{table}"));
        for cell in [MESH_PEER_TYPE, "Established", routes] {
            assert!(row.contains(cell), "row {row:?} lacks {cell:?}\n{table}");
        }
        assert!(
            table.contains("PEER ADDRESS") && table.contains("ROUTES IN/OUT"),
            "{table}"
        );
        let since = &status.peer(address).expect("peer in JSON").since;
        assert!(
            row.contains(since.as_str()),
            "row {row:?} lacks since {since}"
        );
        let mode = std::fs::metadata(&socket)
            .expect("socket")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "status socket mode {mode:o}");
    }
    let missing = lab.dir().join("no-such.sock").display().to_string();
    let (ok, _, err) = status_cli(&lab, 0, &["--socket", &missing, "--json"]);
    assert!(!ok, "status against a missing socket succeeded");
    assert!(
        err.contains("no-such.sock"),
        "the error does not name the socket: {err}"
    );
}
