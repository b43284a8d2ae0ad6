//! The injector: one small BGP speaker, the same for every receiver. It opens an iBGP
//! session from the injector namespace, then writes UPDATEs that were all encoded
//! (through fjord-routed's wire adapter, `fjord_routed::bgp::wire`) before the clock
//! starts, as fast as the socket takes them, and an End-of-RIB.

use anyhow::{bail, ensure, Context, Result};
use fjord_routed::bgp::wire::{
    self, Afi, Capabilities, Message, Notification, Open, Origin, Route, SessionContext, Update,
    HEADER_LEN, MAX_MESSAGE_LEN,
};
use ipnetwork::{IpNetwork, Ipv4Network};
use std::fs::File;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::sched::{setns, CloneFlags};

/// The injected prefixes are `BASE + i * 64` (distinct /26s), i < N.
pub const PREFIX_BASE: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 0);
pub const PREFIX_LEN: u8 = 26;
/// The most routes the prefix space holds: 10.0.0.0/8 in /26s.
pub const MAX_ROUTES: usize = 1 << 18;
/// iBGP, both sides.
pub const ASN: u32 = 64512;
/// Proposed by the injector and configured on both receivers: no KEEPALIVE is due
/// during a run (a third of it is 80 s).
pub const HOLD_TIME: u16 = 240;
const LOCAL_PREF: u32 = 100;

/// The `i`th injected prefix.
pub fn prefix(i: usize) -> Ipv4Network {
    let offset = u32::try_from(i * 64).expect("fewer than MAX_ROUTES routes");
    Ipv4Network::new(Ipv4Addr::from(u32::from(PREFIX_BASE) + offset), PREFIX_LEN)
        .expect("a /26 is a valid prefix")
}

/// The index of `p` among the injected prefixes, if it is one of the first `n`.
pub fn prefix_index(p: Ipv4Network, n: usize) -> Option<usize> {
    let offset = u32::from(p.ip()).checked_sub(u32::from(PREFIX_BASE))?;
    let i = (offset / 64) as usize;
    (p.prefix() == PREFIX_LEN && offset % 64 == 0 && i < n).then_some(i)
}

/// All UPDATEs of one injection, encoded back to back, then the End-of-RIB.
pub struct Injection {
    pub routes: usize,
    pub messages: usize,
    updates: Vec<u8>,
    end_of_rib: Vec<u8>,
}

fn route(i: usize, next_hop: Ipv4Addr) -> Route {
    Route {
        prefix: IpNetwork::V4(prefix(i)),
        next_hop: next_hop.into(),
        origin: Origin::Igp,
        as_path: Vec::new(),
        local_pref: Some(LOCAL_PREF),
        med: None,
    }
}

fn encode_update(routes: Vec<Route>) -> Result<Vec<u8>> {
    let update = Update {
        announced: routes,
        ..Update::default()
    };
    let bytes = wire::encode(&Message::Update(update), SessionContext::default())?;
    Ok(bytes.to_vec())
}

/// How many /26 NLRI fit in one UPDATE beside the shared attributes: an UPDATE of
/// one route, plus 5 bytes (length octet and 4 address octets) per further route.
fn routes_per_update(next_hop: Ipv4Addr) -> Result<usize> {
    let one = encode_update(vec![route(0, next_hop)])?.len();
    ensure!(
        one < MAX_MESSAGE_LEN,
        "an UPDATE of one route is {one} bytes"
    );
    Ok((MAX_MESSAGE_LEN - one) / 5 + 1)
}

impl Injection {
    /// Encodes `n` routes via `next_hop`, as many per UPDATE as fit in 4096 bytes.
    pub fn prepare(n: usize, next_hop: Ipv4Addr) -> Result<Injection> {
        ensure!(
            (1..=MAX_ROUTES).contains(&n),
            "--routes {n}: give 1 to {MAX_ROUTES}"
        );
        let per_update = routes_per_update(next_hop)?;
        let mut updates = Vec::with_capacity(n * 5 + n / per_update * 64 + 64);
        let mut messages = 0;
        for start in (0..n).step_by(per_update) {
            let chunk = (start..n.min(start + per_update))
                .map(|i| route(i, next_hop))
                .collect();
            let bytes = encode_update(chunk)?;
            ensure!(
                bytes.len() <= MAX_MESSAGE_LEN,
                "an UPDATE came out {} bytes long",
                bytes.len()
            );
            updates.extend_from_slice(&bytes);
            messages += 1;
        }
        let eor = wire::encode(
            &Message::Update(Update::end_of_rib(Afi::Ipv4)),
            SessionContext::default(),
        )?;
        Ok(Injection {
            routes: n,
            messages,
            updates,
            end_of_rib: eor.to_vec(),
        })
    }

    pub fn bytes(&self) -> usize {
        self.updates.len()
    }
}

/// An Established session with a receiver; a reader thread drains what the receiver
/// sends (KEEPALIVEs, its End-of-RIB) and keeps a NOTIFICATION if one comes.
pub struct Session {
    stream: TcpStream,
    notification: Arc<Mutex<Option<Notification>>>,
    reader: Option<JoinHandle<()>>,
}

/// Connects from inside the namespace at `netns` (a socket stays in the namespace it
/// was made in; a short-lived thread enters it, connects and hands the socket back).
fn connect_in(netns: &std::path::Path, remote: Ipv4Addr) -> Result<TcpStream> {
    let ns = File::open(netns).with_context(|| format!("open {}", netns.display()))?;
    let handle = std::thread::spawn(move || -> Result<TcpStream> {
        setns(&ns, CloneFlags::CLONE_NEWNET).context("enter the injector namespace")?;
        let to = SocketAddr::from((remote, wire::BGP_PORT));
        Ok(TcpStream::connect_timeout(&to, Duration::from_secs(2))?)
    });
    handle.join().expect("connect thread panicked")
}

/// Reads one whole message (framed by its header's length) and decodes it.
fn read_message(stream: &mut TcpStream) -> Result<Message> {
    let mut buf = vec![0u8; HEADER_LEN];
    stream.read_exact(&mut buf)?;
    let len = usize::from(u16::from_be_bytes([buf[16], buf[17]]));
    ensure!(
        (HEADER_LEN..=MAX_MESSAGE_LEN).contains(&len),
        "the receiver sent a message of length {len}"
    );
    buf.resize(len, 0);
    stream.read_exact(&mut buf[HEADER_LEN..])?;
    let decoded = wire::decode(&buf, SessionContext::default())
        .map_err(|e| anyhow::anyhow!("the receiver sent a malformed message: {e}"))?;
    Ok(decoded.message)
}

fn write_message(stream: &mut TcpStream, msg: &Message) -> Result<()> {
    let bytes = wire::encode(msg, SessionContext::default())?;
    stream.write_all(&bytes)?;
    Ok(())
}

/// OPEN, OPEN, KEEPALIVE, KEEPALIVE on a fresh connection.
fn handshake(stream: &mut TcpStream, router_id: Ipv4Addr) -> Result<()> {
    let caps = Capabilities {
        multiprotocol: vec![Afi::Ipv4],
        ..Capabilities::default()
    };
    write_message(
        stream,
        &Message::Open(Open::new(ASN, HOLD_TIME, router_id, caps)),
    )?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut got_open = false;
    loop {
        match read_message(stream)? {
            Message::Open(o) => {
                ensure!(o.asn() == ASN, "the receiver is in AS {}", o.asn());
                got_open = true;
                write_message(stream, &Message::Keepalive)?;
            }
            Message::Keepalive if got_open => break,
            Message::Notification(n) => bail!("the receiver refused: {}", n.error()),
            other => bail!("unexpected {} during the handshake", other.kind()),
        }
    }
    stream.set_read_timeout(None)?;
    Ok(())
}

impl Session {
    /// Opens the session from `netns` (whose address is `local`, also the router ID),
    /// retrying (refused connections, a NOTIFICATION while the
    /// receiver is still starting) until `within` has passed.
    pub fn establish(
        netns: &std::path::Path,
        local: Ipv4Addr,
        remote: Ipv4Addr,
        within: Duration,
    ) -> Result<Session> {
        let deadline = Instant::now() + within;
        let stream = loop {
            let attempt = connect_in(netns, remote).and_then(|mut s| {
                handshake(&mut s, local)?;
                Ok(s)
            });
            match attempt {
                Ok(s) => break s,
                Err(e) if Instant::now() >= deadline => {
                    return Err(e.context(format!("no session with {remote} within {within:?}")))
                }
                Err(_) => std::thread::sleep(Duration::from_millis(200)),
            }
        };
        stream.set_nodelay(true)?;
        let notification = Arc::new(Mutex::new(None));
        let mut read_half = stream.try_clone()?;
        let seen = notification.clone();
        let reader = std::thread::spawn(move || {
            while let Ok(msg) = read_message(&mut read_half) {
                if let Message::Notification(n) = msg {
                    *seen.lock().expect("notification lock") = Some(n);
                    return;
                }
            }
        });
        Ok(Session {
            stream,
            notification,
            reader: Some(reader),
        })
    }

    /// Writes every UPDATE, then the End-of-RIB; returns the instant the first byte of
    /// the first UPDATE was handed to the socket (t0).
    pub fn inject(&mut self, injection: &Injection) -> Result<Instant> {
        let t0 = Instant::now();
        self.stream
            .write_all(&injection.updates)
            .context("write the UPDATEs")?;
        self.stream
            .write_all(&injection.end_of_rib)
            .context("write the End-of-RIB")?;
        Ok(t0)
    }

    /// A NOTIFICATION the receiver sent since the session came up.
    pub fn notification(&self) -> Option<Notification> {
        self.notification.lock().expect("notification lock").clone()
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        // The reader thread sees EOF and ends.
        let _ = self.stream.shutdown(Shutdown::Both);
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_are_distinct_slash_26s_and_map_back() {
        assert_eq!(prefix(0).to_string(), "10.0.0.0/26");
        assert_eq!(prefix(5).to_string(), "10.0.1.64/26");
        assert_eq!(prefix(99_999).to_string(), "10.97.167.192/26");
        assert_eq!(prefix_index(prefix(99_999), 100_000), Some(99_999));
        assert_eq!(prefix_index(prefix(99_999), 99_999), None);
        let off_grid = Ipv4Network::new(Ipv4Addr::new(10, 0, 0, 32), 26).unwrap();
        assert_eq!(prefix_index(off_grid, 10), None);
        let wrong_len = Ipv4Network::new(Ipv4Addr::new(10, 0, 0, 0), 24).unwrap();
        assert_eq!(prefix_index(wrong_len, 10), None);
    }

    #[test]
    fn an_injection_packs_full_updates_that_decode_to_every_route() {
        let nh = Ipv4Addr::new(192, 168, 255, 2);
        let inj = Injection::prepare(2_000, nh).unwrap();
        let per_update = routes_per_update(nh).unwrap();
        assert!(per_update > 700, "{per_update} routes per UPDATE");
        assert_eq!(inj.messages, 2_000usize.div_ceil(per_update));
        let mut rest = &inj.updates[..];
        let mut seen = 0;
        while !rest.is_empty() {
            let len = usize::from(u16::from_be_bytes([rest[16], rest[17]]));
            assert!(len <= MAX_MESSAGE_LEN);
            let Message::Update(u) = wire::decode(&rest[..len], SessionContext::default())
                .unwrap()
                .message
            else {
                panic!("not an UPDATE");
            };
            for r in &u.announced {
                assert_eq!(r.prefix, IpNetwork::V4(prefix(seen)));
                assert_eq!(r.next_hop, std::net::IpAddr::V4(nh));
                seen += 1;
            }
            rest = &rest[len..];
        }
        assert_eq!(seen, 2_000);
        let eor = wire::decode(&inj.end_of_rib, SessionContext::default()).unwrap();
        assert_eq!(eor.message, Message::Update(Update::end_of_rib(Afi::Ipv4)));
    }

    #[test]
    fn sizes_outside_the_prefix_space_are_refused() {
        let nh = Ipv4Addr::new(192, 168, 255, 2);
        assert!(Injection::prepare(0, nh).is_err());
        assert!(Injection::prepare(MAX_ROUTES + 1, nh).is_err());
    }
}
