//! The reachability matrix: pod-pair probe results summed up node by node (pure).

use std::collections::BTreeMap;
use std::fmt::Write;

/// One kind of probe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Probe {
    Ping4,
    Ping6,
    Tcp4,
    Tcp6,
}

impl Probe {
    pub fn label(self) -> &'static str {
        match self {
            Probe::Ping4 => "ping4",
            Probe::Ping6 => "ping6",
            Probe::Tcp4 => "tcp4",
            Probe::Tcp6 => "tcp6",
        }
    }
}

/// The probes, in [`PairResult::ok`]'s order.
pub const PROBES: [Probe; 4] = [Probe::Ping4, Probe::Ping6, Probe::Tcp4, Probe::Tcp6];

/// What the probe found for one ordered pod pair (indexes into the pod list); `ok` in
/// the order of [`PROBES`]: ping IPv4, ping IPv6, TCP IPv4, TCP IPv6.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PairResult {
    pub from: usize,
    pub to: usize,
    pub ok: [bool; 4],
}

impl PairResult {
    pub fn all_ok(&self) -> bool {
        self.ok.iter().all(|ok| *ok)
    }
}

/// Counts for one (source node, destination node) cell.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Cell {
    pub pairs: usize,
    pub ok: [usize; 4],
}

/// The node x node summary.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Matrix {
    pub cells: BTreeMap<(usize, usize), Cell>,
    /// Pairs where some probe failed.
    pub failed: Vec<PairResult>,
    pub pairs: usize,
}

/// Sums `results` by the nodes of their pods (`node_of[pod]`).
pub fn summarize(results: &[PairResult], node_of: &[usize]) -> Matrix {
    let mut cells: BTreeMap<(usize, usize), Cell> = BTreeMap::new();
    let mut failed = Vec::new();
    for r in results {
        let cell = cells.entry((node_of[r.from], node_of[r.to])).or_default();
        cell.pairs += 1;
        for (count, ok) in cell.ok.iter_mut().zip(r.ok) {
            *count += usize::from(ok);
        }
        if !r.all_ok() {
            failed.push(r.clone());
        }
    }
    Matrix {
        cells,
        failed,
        pairs: results.len(),
    }
}

impl Matrix {
    pub fn all_reachable(&self) -> bool {
        self.failed.is_empty() && self.pairs > 0
    }

    /// `node1 -> node2:  4/4 ping4  4/4 ping6  4/4 tcp4  4/4 tcp6`, one line per cell;
    /// then up to `max_failures` failing pairs by pod name.
    pub fn render(
        &self,
        node_names: &[String],
        pod_names: &[String],
        max_failures: usize,
    ) -> String {
        let probes = PROBES;
        let width = node_names.iter().map(|n| n.len()).max().unwrap_or(0);
        let mut out = String::new();
        for ((from, to), cell) in &self.cells {
            let _ = write!(
                out,
                "  {:>width$} -> {:<width$}:",
                node_names[*from], node_names[*to]
            );
            for (probe, ok) in probes.iter().zip(cell.ok) {
                let mark = if ok == cell.pairs { "" } else { "!" };
                let fraction = format!("{mark}{ok}/{}", cell.pairs);
                let _ = write!(out, " {fraction:>10} {}", probe.label());
            }
            out.push('\n');
        }
        for r in self.failed.iter().take(max_failures) {
            let failing: Vec<&str> = probes
                .iter()
                .zip(r.ok)
                .filter(|(_, ok)| !ok)
                .map(|(p, _)| p.label())
                .collect();
            let _ = writeln!(
                out,
                "  FAILED {} -> {}: {}",
                pod_names[r.from],
                pod_names[r.to],
                failing.join(", ")
            );
        }
        if self.failed.len() > max_failures {
            let _ = writeln!(
                out,
                "  … and {} more failing pairs",
                self.failed.len() - max_failures
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(from: usize, to: usize, ok: [bool; 4]) -> PairResult {
        PairResult { from, to, ok }
    }

    #[test]
    fn pairs_are_counted_by_node_and_failures_listed() {
        // Pods 0, 1 on node 0; pod 2 on node 1.
        let node_of = [0, 0, 1];
        let all = [true; 4];
        let results = vec![
            pair(0, 1, all),
            pair(1, 0, all),
            pair(0, 2, all),
            pair(1, 2, [true, true, false, true]),
            pair(2, 0, all),
            pair(2, 1, all),
        ];
        let m = summarize(&results, &node_of);
        assert_eq!(m.pairs, 6);
        assert_eq!(
            m.cells[&(0, 0)],
            Cell {
                pairs: 2,
                ok: [2; 4]
            }
        );
        assert_eq!(
            m.cells[&(0, 1)],
            Cell {
                pairs: 2,
                ok: [2, 2, 1, 2]
            }
        );
        assert_eq!(m.cells[&(1, 0)].pairs, 2);
        assert!(!m.all_reachable());
        assert_eq!(m.failed, vec![pair(1, 2, [true, true, false, true])]);
        let nodes = vec!["node1".to_string(), "node2".to_string()];
        let pods: Vec<String> = ["node1-pod1", "node1-pod2", "node2-pod1"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let text = m.render(&nodes, &pods, 10);
        assert!(
            text.contains("node1 -> node2:        2/2 ping4        2/2 ping6       !1/2 tcp4"),
            "{text}"
        );
        assert!(
            text.contains("FAILED node1-pod2 -> node2-pod1: tcp4"),
            "{text}"
        );
    }

    #[test]
    fn nothing_probed_is_not_reachable() {
        let m = summarize(&[], &[]);
        assert!(!m.all_reachable());
    }
}
