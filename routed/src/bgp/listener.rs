//! Accepting BGP connections: each goes to the session of the peer with that address;
//! any other address is refused with Cease / Connection Rejected (RFC 4486) and logged,
//! since only configured or registered nodes may peer (issue 3).

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures::StreamExt;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio_util::codec::FramedRead;
use tracing::{debug, warn};

use super::error::Cease;
use super::session::{refuse, PeerHandle};
use super::wire::Codec;

/// How long an unknown connection gets to send its OPEN before it is refused anyway.
pub const REFUSE_OPEN_TIMEOUT: Duration = Duration::from_secs(5);

/// The configured peers by address, shared between the daemon (which adds and removes
/// peers as nodes come and go) and the listener.
#[derive(Clone, Debug, Default)]
pub struct Peers {
    inner: Arc<RwLock<HashMap<IpAddr, PeerHandle>>>,
}

impl Peers {
    pub fn new() -> Peers {
        Peers::default()
    }

    /// Adds or replaces the peer at `handle.address`; returns the one replaced.
    pub fn insert(&self, handle: PeerHandle) -> Option<PeerHandle> {
        let mut map = self.inner.write().unwrap_or_else(|e| e.into_inner());
        map.insert(canonical(handle.address), handle)
    }

    pub fn remove(&self, address: IpAddr) -> Option<PeerHandle> {
        let mut map = self.inner.write().unwrap_or_else(|e| e.into_inner());
        map.remove(&canonical(address))
    }

    pub fn get(&self, address: IpAddr) -> Option<PeerHandle> {
        let map = self.inner.read().unwrap_or_else(|e| e.into_inner());
        map.get(&canonical(address)).cloned()
    }

    pub fn addresses(&self) -> Vec<IpAddr> {
        let map = self.inner.read().unwrap_or_else(|e| e.into_inner());
        map.keys().copied().collect()
    }
}

/// An IPv4 peer reaching a dual-stack socket shows up as `::ffff:a.b.c.d`.
fn canonical(ip: IpAddr) -> IpAddr {
    ip.to_canonical()
}

pub struct Listener {
    listener: TcpListener,
}

impl Listener {
    /// Binds `addr`; on `[::]` the socket also accepts IPv4 (dual stack, IPV6_V6ONLY off).
    pub async fn bind(addr: SocketAddr) -> io::Result<Listener> {
        let socket = match addr {
            SocketAddr::V4(_) => TcpSocket::new_v4()?,
            SocketAddr::V6(_) => TcpSocket::new_v6()?,
        };
        if let SocketAddr::V6(v6) = addr {
            if v6.ip().is_unspecified() {
                use nix::sys::socket::{setsockopt, sockopt::Ipv6V6Only};
                setsockopt(&socket, Ipv6V6Only, &false).map_err(io::Error::from)?;
            }
        }
        socket.set_reuseaddr(true)?;
        socket.bind(addr)?;
        Ok(Listener {
            listener: socket.listen(128)?,
        })
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Accepts connections until the task is dropped.
    pub async fn run(self, peers: Peers) {
        loop {
            match self.listener.accept().await {
                Ok((stream, remote)) => dispatch(stream, remote, &peers).await,
                Err(e) => {
                    // Out of descriptors and the like: back off instead of spinning.
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
}

async fn dispatch(stream: TcpStream, remote: SocketAddr, peers: &Peers) {
    let ip = canonical(remote.ip());
    match peers.get(ip) {
        Some(handle) => {
            debug!(peer = %ip, "connection accepted");
            if handle.accept(stream).await.is_err() {
                debug!(peer = %ip, "session gone; connection dropped");
            }
        }
        None => {
            warn!(peer = %ip, port = remote.port(), "connection from an address that is not a peer: refused");
            tokio::spawn(refuse_unknown(stream));
        }
    }
}

/// Reads the OPEN (so the NOTIFICATION answers it, as the peer expects) and refuses.
async fn refuse_unknown(stream: TcpStream) {
    let mut frames = FramedRead::new(stream, Codec);
    let _ = tokio::time::timeout(REFUSE_OPEN_TIMEOUT, frames.next()).await;
    refuse(frames.into_inner(), Cease::ConnectionRejected).await;
}
