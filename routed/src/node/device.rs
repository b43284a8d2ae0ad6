//! The core's encapsulation work: `fjord.vxlan` present exactly when a route may need
//! it, the connected subnets the native-or-VXLAN choice reads, and the full re-choice
//! of every route when either changes (and on every reconcile).

use super::{routes, Effect, NodeCore, Timer, RECONCILE_EVERY};
use crate::encap::{self, format_mac};
use crate::kernel::KernelError;
use ipnetwork::IpNetwork;
use tracing::{info, warn};

impl NodeCore {
    /// Asks for the device when the mode and the nodes' subnets need it, and for its
    /// removal when they do not (DESIGN: `cross-subnet` on one segment has none).
    pub(super) fn check_device(&mut self) {
        let needed = encap::device_needed(
            self.config.encapsulation,
            self.other_nodes.iter().copied(),
            &self.encap.connected,
        );
        match (needed, self.device_spec) {
            (true, Some(spec)) => self.effects.push(Effect::EnsureDevice(spec)),
            // The underlay was not found at start: VXLAN routes wait.
            (true, None) => self.set_device(None),
            (false, _) if self.encap.device.is_some() => self.effects.push(Effect::RemoveDevice),
            (false, _) => {}
        }
    }

    pub(super) fn device_ensured(&mut self, result: Result<(u32, bool), KernelError>) {
        let node = &self.config.node_name;
        match result {
            Ok((index, created)) => {
                if let (true, Some(spec)) = (created, self.device_spec) {
                    info!(%node, index, mtu = spec.mtu, underlay = spec.underlay, local = %spec.local,
                        mac = %format_mac(&spec.mac), "created fjord.vxlan");
                }
                self.device_failing = false;
                self.set_device(Some(index));
            }
            Err(e) => {
                // Tried again every check: one line per failure, not one a second.
                if !std::mem::replace(&mut self.device_failing, true) {
                    warn!(%node, error = %e, "cannot set up fjord.vxlan; VXLAN routes wait");
                }
                self.set_device(None);
            }
        }
    }

    /// On failure the old index stays, and the next check tries again.
    pub(super) fn device_removed(&mut self, result: Result<bool, KernelError>) {
        let node = &self.config.node_name;
        match result {
            Ok(_) => {
                info!(%node, "no peer needs VXLAN: removed fjord.vxlan");
                self.set_device(None);
            }
            Err(e) => warn!(%node, error = %e, "cannot remove fjord.vxlan"),
        }
    }

    /// When the device comes, goes or is replaced, every route is chosen again.
    fn set_device(&mut self, device: Option<u32>) {
        if device != self.encap.device {
            self.encap.device = device;
            self.read_connected();
        }
    }

    /// Every full re-choice starts from fresh connected subnets.
    pub(super) fn read_connected(&mut self) {
        self.effects.push(Effect::ReadConnected {
            device: self.encap.device,
        });
    }

    pub(super) fn connected(&mut self, result: Result<Vec<IpNetwork>, KernelError>) {
        let node = &self.config.node_name;
        match result {
            Ok(connected) if connected != self.encap.connected => {
                info!(%node, connected = %list(&connected), "the connected subnets changed");
                self.encap.connected = connected;
            }
            Ok(_) => {}
            Err(e) => {
                warn!(%node, error = %e, "cannot read the connected subnets; keeping the last ones")
            }
        }
        self.choose_all_routes();
    }

    /// Every route chosen again from the whole RIB. Inside the restart window nothing is
    /// swept (routes and VXLAN entries are only added or replaced); outside, a full
    /// reconcile, and the next one in [`RECONCILE_EVERY`].
    fn choose_all_routes(&mut self) {
        let (desired, vxlan) = routes::desired_routes(&self.rib, &self.encap);
        self.vxlan = vxlan;
        self.sync_vteps(self.restart_window);
        if self.restart_window {
            self.effects.push(Effect::ReplaceAll { desired });
        } else {
            self.effects.push(Effect::Reconcile { desired });
            self.set_timer(Timer::Reconcile, RECONCILE_EVERY);
        }
    }
}

/// `10.0.0.0/24, fd00::/64` for log lines.
pub(super) fn list(networks: &[IpNetwork]) -> String {
    let texts: Vec<String> = networks.iter().map(ToString::to_string).collect();
    texts.join(", ")
}
