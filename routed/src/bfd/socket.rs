//! The sockets of RFC 5881 (BFD for IPv4 and IPv6, single hop): one receiving socket
//! per family on UDP port 3784 that reports each datagram's TTL or hop limit, and one
//! sending socket per session on a source port of 49152-65535 whose packets leave with
//! TTL 255 (section 5: GTSM, RFC 5082; a receiver accepts only 255).

use std::io;
use std::net::{IpAddr, SocketAddr, SocketAddrV4, SocketAddrV6, UdpSocket};
use std::os::fd::{AsRawFd, OwnedFd};

use nix::sys::socket::{
    bind, recvmsg, setsockopt, socket, sockopt, AddressFamily, ControlMessageOwned, MsgFlags,
    SockFlag, SockType, SockaddrIn, SockaddrIn6, SockaddrStorage,
};

use super::BfdError;

/// RFC 5881 4: the destination port of single-hop Control packets.
pub const CONTROL_PORT: u16 = 3784;
/// RFC 5881 4: the source port range.
pub const SOURCE_PORTS: std::ops::RangeInclusive<u16> = 49152..=65535;
/// RFC 5881 5: sent with, and the only value accepted.
pub const GTSM_TTL: u8 = 255;
/// DSCP CS6 (network control), as FRR and BIRD mark BFD, so a congested queue keeps it.
const TOS_NETWORK_CONTROL: i32 = 0xc0;

/// A datagram read from a receiving socket.
pub struct Datagram {
    pub len: usize,
    pub from: SocketAddr,
    /// The IPv4 TTL or IPv6 hop limit it arrived with; None if the kernel gave none.
    pub ttl: Option<u8>,
}

fn family(ip: IpAddr) -> AddressFamily {
    if ip.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    }
}

fn udp_socket(ip: IpAddr) -> io::Result<OwnedFd> {
    let flags = SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC;
    Ok(socket(family(ip), SockType::Datagram, flags, None)?)
}

fn bind_to(fd: &OwnedFd, addr: SocketAddr) -> nix::Result<()> {
    match addr {
        SocketAddr::V4(a) => bind(fd.as_raw_fd(), &SockaddrIn::from(a)),
        SocketAddr::V6(a) => bind(fd.as_raw_fd(), &SockaddrIn6::from(a)),
    }
}

/// The receiving socket of one family: `0.0.0.0:3784` or `[::]:3784` (IPv6 only, so
/// both can be bound), asking the kernel for each datagram's TTL.
pub fn receiver(unspecified: IpAddr) -> Result<UdpSocket, BfdError> {
    let addr = SocketAddr::new(unspecified, CONTROL_PORT);
    let bind_error = |source: io::Error| BfdError::Bind {
        address: addr,
        source,
    };
    let fd = udp_socket(unspecified).map_err(bind_error)?;
    let set = if unspecified.is_ipv4() {
        setsockopt(&fd, sockopt::Ipv4RecvTtl, &true)
    } else {
        setsockopt(&fd, sockopt::Ipv6V6Only, &true)
            .and_then(|()| setsockopt(&fd, sockopt::Ipv6RecvHopLimit, &true))
    };
    set.map_err(|e| bind_error(e.into()))?;
    bind_to(&fd, addr).map_err(|e| bind_error(e.into()))?;
    Ok(UdpSocket::from(fd))
}

/// The sending socket of a session: bound to `local` and a free port of 49152-65535
/// (the first of a few random tries that is free), TTL 255, DSCP CS6.
pub fn sender(local: IpAddr, random: u64) -> Result<UdpSocket, BfdError> {
    let span = u64::from(SOURCE_PORTS.end() - SOURCE_PORTS.start()) + 1;
    let mut last = io::Error::from(io::ErrorKind::AddrInUse);
    for attempt in 0..32u64 {
        let offset = random.wrapping_add(attempt.wrapping_mul(7_919)) % span;
        let port = SOURCE_PORTS.start() + offset as u16;
        let addr = SocketAddr::new(local, port);
        let fd = udp_socket(local).map_err(|source| BfdError::Bind {
            address: addr,
            source,
        })?;
        let set = if local.is_ipv4() {
            setsockopt(&fd, sockopt::Ipv4Ttl, &i32::from(GTSM_TTL))
                .and_then(|()| setsockopt(&fd, sockopt::Ipv4Tos, &TOS_NETWORK_CONTROL))
        } else {
            setsockopt(&fd, sockopt::Ipv6Ttl, &i32::from(GTSM_TTL))
                .and_then(|()| setsockopt(&fd, sockopt::Ipv6TClass, &TOS_NETWORK_CONTROL))
        };
        set.map_err(|e| BfdError::Bind {
            address: addr,
            source: e.into(),
        })?;
        match bind_to(&fd, addr) {
            Ok(()) => return Ok(UdpSocket::from(fd)),
            Err(nix::errno::Errno::EADDRINUSE) => last = io::Error::from(io::ErrorKind::AddrInUse),
            Err(e) => {
                return Err(BfdError::Bind {
                    address: addr,
                    source: e.into(),
                })
            }
        }
    }
    Err(BfdError::Bind {
        address: SocketAddr::new(local, 0),
        source: last,
    })
}

/// Reads one datagram without blocking (`WouldBlock` when none is queued), with the
/// TTL or hop limit from its control message.
pub fn receive(socket: &impl AsRawFd, buf: &mut [u8]) -> io::Result<Datagram> {
    let mut iov = [io::IoSliceMut::new(buf)];
    let mut control = nix::cmsg_space!(libc::c_int, libc::c_int);
    let msg = recvmsg::<SockaddrStorage>(
        socket.as_raw_fd(),
        &mut iov,
        Some(&mut control),
        MsgFlags::MSG_DONTWAIT,
    )?;
    let ttl = msg.cmsgs()?.find_map(|c| match c {
        ControlMessageOwned::Ipv4Ttl(ttl) => u8::try_from(ttl).ok(),
        ControlMessageOwned::Ipv6HopLimit(hops) => u8::try_from(hops).ok(),
        _ => None,
    });
    let from = msg
        .address
        .as_ref()
        .and_then(socket_addr)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "datagram without source"))?;
    Ok(Datagram {
        len: msg.bytes,
        from,
        ttl,
    })
}

fn socket_addr(storage: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = storage.as_sockaddr_in() {
        return Some(SocketAddr::V4(SocketAddrV4::new(v4.ip(), v4.port())));
    }
    storage.as_sockaddr_in6().map(|v6| {
        SocketAddr::V6(SocketAddrV6::new(
            v6.ip(),
            v6.port(),
            v6.flowinfo(),
            v6.scope_id(),
        ))
    })
}
