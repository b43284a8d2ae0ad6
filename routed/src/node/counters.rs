//! Counters the core keeps for a metrics endpoint to read (issue 16 serves them as
//! Prometheus text): rejected announcements per peer and reason, and how long the
//! kernel took to apply what the core asked. Routes in and out per peer are not
//! counted here: they are the RIB's and the exports' sizes, read when asked
//! ([`super::NodeCore::status`]).

use super::import::Rejection;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

/// Upper bounds, in seconds, of the kernel apply histogram's buckets
/// (`fjord_kernel_apply_seconds`): a handful of routes takes well under a millisecond,
/// 100,000 take about 0.4 s (BENCHMARKS.md).
pub const APPLY_BUCKETS: [f64; 8] = [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0];

/// What kind of kernel work an apply was.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum KernelWork {
    /// Route changes from RIB changes.
    Routes,
    /// A full reconcile or re-choice of every route.
    Reconcile,
    /// `fjord.vxlan`'s FDB and neighbour entries.
    Vteps,
}

/// A Prometheus-style histogram: cumulative counts per upper bound, a sum and a count.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Histogram {
    /// Observations at most [`APPLY_BUCKETS`]`[i]` (cumulative, as Prometheus reports).
    pub buckets: [u64; APPLY_BUCKETS.len()],
    pub count: u64,
    pub sum_seconds: f64,
}

impl Histogram {
    pub fn observe(&mut self, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        for (bucket, bound) in self.buckets.iter_mut().zip(APPLY_BUCKETS) {
            if seconds <= bound {
                *bucket += 1;
            }
        }
        self.count += 1;
        self.sum_seconds += seconds;
    }
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Counters {
    rejected: BTreeMap<(IpAddr, Rejection), u64>,
    apply: BTreeMap<KernelWork, Histogram>,
    /// Kernel applies that reported a failure, per kind.
    apply_failures: BTreeMap<KernelWork, u64>,
}

impl Counters {
    pub fn reject(&mut self, peer: IpAddr, reason: Rejection) {
        *self.rejected.entry((peer, reason)).or_default() += 1;
    }

    /// Rejections of one peer, every reason listed (zero included).
    pub fn rejected_of(&self, peer: IpAddr) -> BTreeMap<Rejection, u64> {
        Rejection::ALL
            .iter()
            .map(|&r| (r, self.rejected.get(&(peer, r)).copied().unwrap_or(0)))
            .collect()
    }

    /// Every (peer, reason) with its count, for a metrics endpoint.
    pub fn rejected(&self) -> impl Iterator<Item = (IpAddr, Rejection, u64)> + '_ {
        self.rejected.iter().map(|(&(p, r), &n)| (p, r, n))
    }

    pub fn applied(&mut self, work: KernelWork, elapsed: Duration, failed: bool) {
        self.apply.entry(work).or_default().observe(elapsed);
        if failed {
            *self.apply_failures.entry(work).or_default() += 1;
        }
    }

    pub fn apply_seconds(&self, work: KernelWork) -> Option<&Histogram> {
        self.apply.get(&work)
    }

    pub fn apply_failures(&self, work: KernelWork) -> u64 {
        self.apply_failures.get(&work).copied().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let mut h = Histogram::default();
        h.observe(Duration::from_micros(500));
        h.observe(Duration::from_millis(30));
        h.observe(Duration::from_secs(9));
        assert_eq!(h.buckets, [1, 1, 1, 2, 2, 2, 2, 2]);
        assert_eq!(h.count, 3);
        assert!((h.sum_seconds - 9.0305).abs() < 1e-9);
    }

    #[test]
    fn rejections_are_counted_per_peer_and_reason() {
        let mut c = Counters::default();
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.2".parse().unwrap(), "10.0.0.3".parse().unwrap());
        c.reject(a, Rejection::OwnBlock);
        c.reject(a, Rejection::OwnBlock);
        c.reject(b, Rejection::AsPathLoop);
        let of_a = c.rejected_of(a);
        assert_eq!(of_a[&Rejection::OwnBlock], 2);
        assert_eq!(of_a[&Rejection::OwnNextHop], 0);
        assert_eq!(c.rejected().count(), 2);
    }
}
