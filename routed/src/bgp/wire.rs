//! The BGP wire format as the rest of Fjord sees it: Fjord's own message types, encoded
//! and decoded through `rustbgpd-wire` (pinned, docs/decisions/0002-bgp-codec.md). This
//! is the only file that names that crate, so replacing it touches nothing else.
//!
//! Decoding is two steps because an UPDATE's meaning depends on the session (2- or
//! 4-octet AS numbers, iBGP or eBGP for RFC 7606): [`Codec`] frames the byte stream into
//! [`Frame`]s without knowing the session, and [`Frame::decode`] turns a frame into a
//! [`Message`] under a [`SessionContext`]. [`decode`] does both for one buffer.

use std::net::{IpAddr, Ipv4Addr};

use bytes::{Bytes, BytesMut};
use ipnetwork::{IpNetwork, Ipv4Network, Ipv6Network};
use rustbgpd_wire as rb;
use tokio_util::codec::Decoder;

use super::error::{AttrAction, BgpError, HeaderError, MessageError, UpdateError};

/// RFC 4271 4.1: no message is longer (Extended Messages, RFC 8654, are not offered).
pub const MAX_MESSAGE_LEN: usize = 4096;
pub const HEADER_LEN: usize = 19;
/// RFC 6793: the 2-octet "My AS" of a speaker whose AS number does not fit.
pub const AS_TRANS: u16 = 23456;
pub const BGP_PORT: u16 = 179;
/// LOCAL_PREF of a route that carries none (eBGP routes, our own blocks): RFC 4271
/// 5.1.5 requires the attribute on iBGP and leaves its value to the operator; 100 is
/// what BIRD, FRR and Cisco assume.
pub const DEFAULT_LOCAL_PREF: u32 = 100;

const TYPE_OPEN: u8 = 1;
const TYPE_UPDATE: u8 = 2;
const TYPE_NOTIFICATION: u8 = 3;
const TYPE_KEEPALIVE: u8 = 4;
const TYPE_ROUTE_REFRESH: u8 = 5;
const ATTR_NEXT_HOP: u8 = 3;

/// The address families Fjord speaks, each with SAFI unicast.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Afi {
    Ipv4,
    Ipv6,
}

impl Afi {
    pub const ALL: [Afi; 2] = [Afi::Ipv4, Afi::Ipv6];

    pub fn of(prefix: &IpNetwork) -> Afi {
        match prefix {
            IpNetwork::V4(_) => Afi::Ipv4,
            IpNetwork::V6(_) => Afi::Ipv6,
        }
    }

    pub fn of_addr(addr: &IpAddr) -> Afi {
        match addr {
            IpAddr::V4(_) => Afi::Ipv4,
            IpAddr::V6(_) => Afi::Ipv6,
        }
    }

    /// The IANA AFI number.
    pub fn number(self) -> u16 {
        match self {
            Afi::Ipv4 => 1,
            Afi::Ipv6 => 2,
        }
    }

    fn to_rb(self) -> rb::Afi {
        match self {
            Afi::Ipv4 => rb::Afi::Ipv4,
            Afi::Ipv6 => rb::Afi::Ipv6,
        }
    }

    /// Only unicast counts: Fjord negotiates nothing else.
    fn from_rb(afi: rb::Afi, safi: rb::Safi) -> Option<Afi> {
        match (afi, safi) {
            (rb::Afi::Ipv4, rb::Safi::Unicast) => Some(Afi::Ipv4),
            (rb::Afi::Ipv6, rb::Safi::Unicast) => Some(Afi::Ipv6),
            _ => None,
        }
    }
}

/// ORIGIN (RFC 4271 5.1.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Origin {
    Igp,
    Egp,
    Incomplete,
}

impl Origin {
    fn to_rb(self) -> rb::Origin {
        match self {
            Origin::Igp => rb::Origin::Igp,
            Origin::Egp => rb::Origin::Egp,
            Origin::Incomplete => rb::Origin::Incomplete,
        }
    }

    fn from_rb(o: rb::Origin) -> Origin {
        match o {
            rb::Origin::Igp => Origin::Igp,
            rb::Origin::Egp => Origin::Egp,
            rb::Origin::Incomplete => Origin::Incomplete,
        }
    }
}

/// One prefix with the attributes Fjord reads and writes.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Route {
    pub prefix: IpNetwork,
    pub next_hop: IpAddr,
    pub origin: Origin,
    /// One AS_SEQUENCE, nearest AS first. A received AS_SET (RFC 9774 deprecates them) is
    /// flattened in order.
    pub as_path: Vec<u32>,
    pub local_pref: Option<u32>,
    pub med: Option<u32>,
}

impl Route {
    /// The attributes that must be equal for routes to share an UPDATE.
    pub(crate) fn same_attributes(&self, other: &Route) -> bool {
        self.next_hop == other.next_hop
            && self.origin == other.origin
            && self.as_path == other.as_path
            && self.local_pref == other.local_pref
            && self.med == other.med
    }
}

/// Graceful restart capability (RFC 4724 3).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GracefulRestartCap {
    /// Seconds the peer asks us to keep its routes after the session drops.
    pub restart_time: u16,
    /// The R bit: the sender has restarted.
    pub restarting: bool,
    pub families: Vec<GracefulRestartFamily>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GracefulRestartFamily {
    pub afi: Afi,
    /// The F bit: forwarding state for this family survived the restart.
    pub forwarding_preserved: bool,
}

impl GracefulRestartCap {
    /// Whether routes of `afi` are kept across the peer's restart (RFC 4724 4.2).
    pub fn covers(&self, afi: Afi) -> bool {
        self.families.iter().any(|f| f.afi == afi)
    }
}

/// The capabilities Fjord understands (RFC 5492); the codes of the others are kept
/// in `other` for logging and are not re-encoded.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Capabilities {
    pub four_octet_as: Option<u32>,
    pub multiprotocol: Vec<Afi>,
    pub route_refresh: bool,
    pub graceful_restart: Option<GracefulRestartCap>,
    pub other: Vec<u8>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Open {
    /// The 2-octet "My AS" field: `AS_TRANS` when the AS does not fit (RFC 6793).
    pub my_as: u16,
    pub hold_time: u16,
    pub router_id: Ipv4Addr,
    pub capabilities: Capabilities,
}

impl Open {
    /// An OPEN for `asn`, with the 4-octet AS capability set to it.
    pub fn new(asn: u32, hold_time: u16, router_id: Ipv4Addr, mut caps: Capabilities) -> Open {
        caps.four_octet_as = Some(asn);
        Open {
            my_as: u16::try_from(asn).unwrap_or(AS_TRANS),
            hold_time,
            router_id,
            capabilities: caps,
        }
    }

    /// The sender's AS: the 4-octet capability when present, else "My AS" (RFC 6793 4.1).
    pub fn asn(&self) -> u32 {
        self.capabilities
            .four_octet_as
            .unwrap_or(u32::from(self.my_as))
    }
}

/// An UPDATE. IPv4 routes travel in the classic fields, IPv6 in MP_REACH/MP_UNREACH.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Update {
    pub withdrawn: Vec<IpNetwork>,
    pub announced: Vec<Route>,
    /// An End-of-RIB marker (RFC 4724 2) carries no routes.
    pub end_of_rib: Option<Afi>,
}

impl Update {
    pub fn end_of_rib(afi: Afi) -> Update {
        Update {
            end_of_rib: Some(afi),
            ..Update::default()
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notification {
    pub code: u8,
    pub subcode: u8,
    pub data: Vec<u8>,
}

impl Notification {
    /// The error this NOTIFICATION reports, for logs and decisions.
    pub fn error(&self) -> MessageError {
        MessageError::from_parts(self.code, self.subcode, &self.data)
    }
}

impl From<&MessageError> for Notification {
    fn from(e: &MessageError) -> Notification {
        e.notification()
    }
}

/// ROUTE-REFRESH (RFC 2918), with the raw AFI/SAFI: a request for a family that was
/// not negotiated must be ignored, not rejected, so it has to be representable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RouteRefresh {
    pub afi: u16,
    pub safi: u8,
}

impl RouteRefresh {
    pub fn new(afi: Afi) -> RouteRefresh {
        RouteRefresh {
            afi: afi.number(),
            safi: 1,
        }
    }

    /// The family asked for, if it is one Fjord speaks.
    pub fn family(&self) -> Option<Afi> {
        match (self.afi, self.safi) {
            (1, 1) => Some(Afi::Ipv4),
            (2, 1) => Some(Afi::Ipv6),
            _ => None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    Open(Open),
    Update(Update),
    Notification(Notification),
    Keepalive,
    RouteRefresh(RouteRefresh),
}

impl Message {
    pub fn kind(&self) -> &'static str {
        match self {
            Message::Open(_) => "OPEN",
            Message::Update(_) => "UPDATE",
            Message::Notification(_) => "NOTIFICATION",
            Message::Keepalive => "KEEPALIVE",
            Message::RouteRefresh(_) => "ROUTE-REFRESH",
        }
    }
}

/// What decoding an UPDATE depends on, known once the OPENs are exchanged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionContext {
    /// Both sides sent the 4-octet AS capability: AS_PATH carries 4-octet numbers.
    pub four_octet_as: bool,
    /// Internal peer: selects the RFC 7606 handling of LOCAL_PREF and friends.
    pub ibgp: bool,
}

impl Default for SessionContext {
    fn default() -> Self {
        SessionContext {
            four_octet_as: true,
            ibgp: true,
        }
    }
}

/// A decoded message, and how a malformed UPDATE was handled (RFC 7606) if it was.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decoded {
    pub message: Message,
    pub revised: Option<Revised>,
}

/// RFC 7606 outcome: `action` is `Discard` (the routes stand without the attribute) or
/// `Withdraw` (the UPDATE's announced prefixes were moved to `withdrawn`); `error` is
/// the strongest error found, i.e. the NOTIFICATION RFC 4271 alone would have sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Revised {
    pub action: AttrAction,
    pub error: MessageError,
}

/// Decodes exactly one complete message.
pub fn decode(bytes: &[u8], ctx: SessionContext) -> Result<Decoded, MessageError> {
    let declared = match check_header(bytes)? {
        Some(len) => len,
        None => return Err(bad_length(bytes.len())),
    };
    if declared != bytes.len() {
        return Err(bad_length(declared));
    }
    decode_frame(Bytes::copy_from_slice(bytes))?.decode(ctx)
}

/// Encodes one message, header included.
pub fn encode(msg: &Message, ctx: SessionContext) -> Result<Bytes, BgpError> {
    let rb_msg = match msg {
        Message::Open(o) => rb::Message::Open(open_to_rb(o)),
        Message::Update(u) => rb::Message::Update(update_to_rb(u, ctx)?),
        Message::Notification(n) => rb::Message::Notification(rb::NotificationMessage::new(
            rb::NotificationCode::from_u8(n.code),
            n.subcode,
            Bytes::copy_from_slice(&n.data),
        )),
        Message::Keepalive => rb::Message::Keepalive,
        Message::RouteRefresh(r) => rb::Message::RouteRefresh(rb::RouteRefreshMessage {
            afi_raw: r.afi,
            subtype_raw: 0,
            safi_raw: r.safi,
            orf: None,
        }),
    };
    rb::encode_message(&rb_msg)
        .map(BytesMut::freeze)
        .map_err(|e| BgpError::Encode(e.to_string()))
}

fn bad_length(len: usize) -> MessageError {
    HeaderError::BadMessageLength(u16::try_from(len).unwrap_or(u16::MAX)).into()
}

/// RFC 4271 6.1 header checks, including the per-type minimum lengths (the crate maps
/// a short OPEN or UPDATE to an OPEN/UPDATE error; the RFC says Bad Message Length).
/// `Ok(None)`: fewer than 19 bytes so far.
fn check_header(buf: &[u8]) -> Result<Option<usize>, MessageError> {
    let Some(header) = buf.get(..HEADER_LEN) else {
        return Ok(None);
    };
    if header[..16].iter().any(|&b| b != 0xff) {
        return Err(HeaderError::ConnectionNotSynchronized.into());
    }
    let len = u16::from_be_bytes([header[16], header[17]]);
    let kind = header[18];
    let min = match kind {
        TYPE_OPEN => 29,
        TYPE_UPDATE | TYPE_ROUTE_REFRESH => 23,
        TYPE_NOTIFICATION => 21,
        TYPE_KEEPALIVE => 19,
        _ if (19..=4096).contains(&len) => return Err(HeaderError::BadMessageType(kind).into()),
        _ => 19,
    };
    let too_long = usize::from(len) > MAX_MESSAGE_LEN || (kind == TYPE_KEEPALIVE && len != 19);
    if len < min || too_long {
        return Err(HeaderError::BadMessageLength(len).into());
    }
    Ok(Some(usize::from(len)))
}

fn decode_frame(mut bytes: Bytes) -> Result<Frame, MessageError> {
    rb::decode_message(&mut bytes, MAX_MESSAGE_LEN as u16)
        .map(Frame)
        .map_err(|e| from_rb_error(&e))
}

fn from_rb_error(e: &rb::DecodeError) -> MessageError {
    let (code, subcode, data) = e.to_notification();
    MessageError::from_parts(code.as_u8(), subcode, &data)
}

/// One framed message whose UPDATE body is not yet interpreted.
#[derive(Clone, Debug)]
pub struct Frame(rb::Message);

impl Frame {
    pub fn kind(&self) -> &'static str {
        match self.0 {
            rb::Message::Open(_) => "OPEN",
            rb::Message::Update(_) => "UPDATE",
            rb::Message::Notification(_) => "NOTIFICATION",
            rb::Message::Keepalive => "KEEPALIVE",
            rb::Message::RouteRefresh(_) => "ROUTE-REFRESH",
            _ => "unknown",
        }
    }

    pub fn decode(self, ctx: SessionContext) -> Result<Decoded, MessageError> {
        let plain = |message| {
            Ok(Decoded {
                message,
                revised: None,
            })
        };
        match self.0 {
            rb::Message::Open(o) => plain(Message::Open(open_from_rb(&o))),
            rb::Message::Update(u) => update_from_rb(&u, ctx),
            rb::Message::Notification(n) => plain(Message::Notification(Notification {
                code: n.code.as_u8(),
                subcode: n.subcode,
                data: n.data.to_vec(),
            })),
            rb::Message::Keepalive => plain(Message::Keepalive),
            rb::Message::RouteRefresh(r) => plain(Message::RouteRefresh(RouteRefresh {
                afi: r.afi_raw,
                safi: r.safi_raw,
            })),
            other => Err(HeaderError::BadMessageType(other.message_type().as_u8()).into()),
        }
    }
}

/// Frames a BGP byte stream (tokio-util); errors are the header errors of RFC 4271 6.1
/// and the body errors the crate finds before any session context is needed.
#[derive(Clone, Copy, Debug, Default)]
pub struct Codec;

impl Decoder for Codec {
    type Item = Frame;
    type Error = BgpError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, BgpError> {
        let Some(len) = check_header(src)? else {
            src.reserve(HEADER_LEN);
            return Ok(None);
        };
        if src.len() < len {
            src.reserve(len - src.len());
            return Ok(None);
        }
        let frame = src.split_to(len).freeze();
        Ok(Some(decode_frame(frame)?))
    }
}

// ---- OPEN ----

fn open_to_rb(o: &Open) -> rb::OpenMessage {
    let c = &o.capabilities;
    let mut caps: Vec<rb::Capability> = c
        .multiprotocol
        .iter()
        .map(|afi| rb::Capability::MultiProtocol {
            afi: afi.to_rb(),
            safi: rb::Safi::Unicast,
        })
        .collect();
    if c.route_refresh {
        caps.push(rb::Capability::RouteRefresh);
    }
    if let Some(gr) = &c.graceful_restart {
        caps.push(rb::Capability::GracefulRestart {
            restart_state: gr.restarting,
            notification: false,
            restart_time: gr.restart_time,
            families: gr
                .families
                .iter()
                .map(|f| rb::GracefulRestartFamily {
                    afi: f.afi.to_rb(),
                    safi: rb::Safi::Unicast,
                    forwarding_preserved: f.forwarding_preserved,
                })
                .collect(),
        });
    }
    if let Some(asn) = c.four_octet_as {
        caps.push(rb::Capability::FourOctetAs { asn });
    }
    rb::OpenMessage {
        version: 4,
        my_as: o.my_as,
        hold_time: o.hold_time,
        bgp_identifier: o.router_id,
        capabilities: caps,
    }
}

fn open_from_rb(o: &rb::OpenMessage) -> Open {
    let mut c = Capabilities::default();
    for cap in &o.capabilities {
        match cap {
            rb::Capability::FourOctetAs { asn } => c.four_octet_as = Some(*asn),
            rb::Capability::MultiProtocol { afi, safi } => match Afi::from_rb(*afi, *safi) {
                Some(a) if !c.multiprotocol.contains(&a) => c.multiprotocol.push(a),
                Some(_) => {}
                None => c.other.push(cap.code()),
            },
            rb::Capability::RouteRefresh => c.route_refresh = true,
            rb::Capability::GracefulRestart {
                restart_state,
                restart_time,
                families,
                ..
            } => {
                c.graceful_restart = Some(GracefulRestartCap {
                    restart_time: *restart_time,
                    restarting: *restart_state,
                    families: families
                        .iter()
                        .filter_map(|f| {
                            Afi::from_rb(f.afi, f.safi).map(|afi| GracefulRestartFamily {
                                afi,
                                forwarding_preserved: f.forwarding_preserved,
                            })
                        })
                        .collect(),
                })
            }
            other => c.other.push(other.code()),
        }
    }
    Open {
        my_as: o.my_as,
        hold_time: o.hold_time,
        router_id: o.bgp_identifier,
        capabilities: c,
    }
}

// ---- UPDATE, outbound ----

fn update_to_rb(u: &Update, ctx: SessionContext) -> Result<rb::UpdateMessage, BgpError> {
    if let Some(afi) = u.end_of_rib {
        if !u.announced.is_empty() || !u.withdrawn.is_empty() {
            return Err(BgpError::Encode(
                "an End-of-RIB marker carries no routes".into(),
            ));
        }
        let attrs = match afi {
            Afi::Ipv4 => vec![],
            Afi::Ipv6 => vec![mp_unreach(Afi::Ipv6, vec![])],
        };
        return build(&[], &[], &attrs, ctx);
    }
    let (v4_out, v6_out): (Vec<&Route>, Vec<&Route>) = u
        .announced
        .iter()
        .partition(|r| Afi::of(&r.prefix) == Afi::Ipv4);
    let mut attrs = Vec::new();
    if let Some(first) = u.announced.first() {
        check_shared_attributes(&v4_out, &v6_out, first)?;
        path_attributes(first, &mut attrs);
    }
    if let Some(r) = v4_out.first() {
        match r.next_hop {
            IpAddr::V4(nh) => attrs.insert(2, rb::PathAttribute::NextHop(nh)),
            IpAddr::V6(_) => {
                return Err(BgpError::Encode(format!(
                    "IPv4 route {} with an IPv6 next hop",
                    r.prefix
                )))
            }
        }
    }
    if let Some(r) = v6_out.first() {
        if !r.next_hop.is_ipv6() {
            return Err(BgpError::Encode(format!(
                "IPv6 route {} with an IPv4 next hop",
                r.prefix
            )));
        }
        attrs.push(mp_reach(r.next_hop, &v6_out));
    }
    let v6_withdrawn: Vec<rb::NlriEntry> = u
        .withdrawn
        .iter()
        .filter_map(|p| match p {
            IpNetwork::V6(n) => Some(v6_entry(n)),
            IpNetwork::V4(_) => None,
        })
        .collect();
    if !v6_withdrawn.is_empty() {
        attrs.push(mp_unreach(Afi::Ipv6, v6_withdrawn));
    }
    let announced: Vec<rb::Ipv4NlriEntry> =
        v4_out.iter().filter_map(|r| v4_entry(&r.prefix)).collect();
    let withdrawn: Vec<rb::Ipv4NlriEntry> = u.withdrawn.iter().filter_map(v4_entry).collect();
    build(&announced, &withdrawn, &attrs, ctx)
}

fn build(
    announced: &[rb::Ipv4NlriEntry],
    withdrawn: &[rb::Ipv4NlriEntry],
    attrs: &[rb::PathAttribute],
    ctx: SessionContext,
) -> Result<rb::UpdateMessage, BgpError> {
    rb::UpdateMessage::try_build(
        announced,
        withdrawn,
        attrs,
        ctx.four_octet_as,
        false,
        rb::Ipv4UnicastMode::Body,
    )
    .map_err(|e| BgpError::Encode(e.to_string()))
}

fn check_shared_attributes(v4: &[&Route], v6: &[&Route], first: &Route) -> Result<(), BgpError> {
    let same = |group: &[&Route]| {
        group.first().is_none_or(|g| {
            group.iter().all(|r| r.same_attributes(g))
                && g.origin == first.origin
                && g.as_path == first.as_path
                && g.local_pref == first.local_pref
                && g.med == first.med
        })
    };
    if same(v4) && same(v6) {
        Ok(())
    } else {
        Err(BgpError::Encode(
            "routes in one UPDATE must share their path attributes".into(),
        ))
    }
}

/// ORIGIN, AS_PATH, MED, LOCAL_PREF in type-code order; NEXT_HOP goes in at index 2.
fn path_attributes(r: &Route, attrs: &mut Vec<rb::PathAttribute>) {
    attrs.push(rb::PathAttribute::Origin(r.origin.to_rb()));
    let segments = if r.as_path.is_empty() {
        vec![]
    } else {
        vec![rb::AsPathSegment::AsSequence(r.as_path.clone())]
    };
    attrs.push(rb::PathAttribute::AsPath(rb::AsPath { segments }));
    if let Some(med) = r.med {
        attrs.push(rb::PathAttribute::Med(med));
    }
    if let Some(lp) = r.local_pref {
        attrs.push(rb::PathAttribute::LocalPref(lp));
    }
}

fn v4_entry(p: &IpNetwork) -> Option<rb::Ipv4NlriEntry> {
    match p {
        IpNetwork::V4(n) => Some(rb::Ipv4NlriEntry {
            path_id: 0,
            prefix: rb::Ipv4Prefix::new(n.network(), n.prefix()),
        }),
        IpNetwork::V6(_) => None,
    }
}

fn v6_entry(n: &Ipv6Network) -> rb::NlriEntry {
    rb::NlriEntry {
        path_id: 0,
        prefix: rb::Prefix::V6(rb::Ipv6Prefix::new(n.network(), n.prefix())),
    }
}

fn mp_reach(next_hop: IpAddr, routes: &[&Route]) -> rb::PathAttribute {
    let announced = routes
        .iter()
        .filter_map(|r| match &r.prefix {
            IpNetwork::V6(n) => Some(v6_entry(n)),
            IpNetwork::V4(_) => None,
        })
        .collect();
    rb::PathAttribute::MpReachNlri(Box::new(rb::MpReachNlri {
        afi: rb::Afi::Ipv6,
        safi: rb::Safi::Unicast,
        next_hop,
        link_local_next_hop: None,
        announced,
        flowspec_announced: vec![],
        evpn_announced: vec![],
        bgpls_announced: vec![],
        vpn_announced: vec![],
        labeled_announced: vec![],
        rtc_announced: vec![],
    }))
}

fn mp_unreach(afi: Afi, withdrawn: Vec<rb::NlriEntry>) -> rb::PathAttribute {
    rb::PathAttribute::MpUnreachNlri(Box::new(rb::MpUnreachNlri {
        afi: afi.to_rb(),
        safi: rb::Safi::Unicast,
        withdrawn,
        flowspec_withdrawn: vec![],
        evpn_withdrawn: vec![],
        bgpls_withdrawn: vec![],
        vpn_withdrawn: vec![],
        labeled_withdrawn: vec![],
        rtc_withdrawn: vec![],
    }))
}

// ---- UPDATE, inbound ----

/// The pieces of a received UPDATE before routes are assembled.
#[derive(Default)]
struct Inbound {
    withdrawn: Vec<IpNetwork>,
    /// (prefix, next hop from MP_REACH; `None`: body NLRI, next hop from NEXT_HOP).
    announced: Vec<(IpNetwork, Option<IpAddr>)>,
    worst: Option<(AttrAction, MessageError)>,
}

impl Inbound {
    fn note(&mut self, action: AttrAction, error: MessageError) {
        if self.worst.as_ref().is_none_or(|(a, _)| action > *a) {
            self.worst = Some((action, error));
        }
    }
}

fn update_from_rb(u: &rb::UpdateMessage, ctx: SessionContext) -> Result<Decoded, MessageError> {
    if u.withdrawn_routes.is_empty() && u.path_attributes.is_empty() && u.nlri.is_empty() {
        return Ok(eor(Afi::Ipv4));
    }
    let revised = u
        .parse_revised(ctx.four_octet_as, ctx.ibgp, false, &[])
        .map_err(|e| from_rb_error(&e))?;
    let parsed = revised.update;
    let mut inbound = Inbound::default();
    for m in &revised.malformed {
        let action = match m.disposition {
            rb::ErrorDisposition::AttributeDiscard => AttrAction::Discard,
            rb::ErrorDisposition::TreatAsWithdraw => AttrAction::Withdraw,
            rb::ErrorDisposition::SessionReset => AttrAction::Reset,
        };
        inbound.note(action, from_rb_error(&m.error));
    }
    // Attributes handled by attribute-discard (including later duplicates, RFC 7606
    // 3 (g)) are already left out of `attributes` by the crate.
    let attrs = parsed.attributes;
    if let Some(afi) = mp_end_of_rib(&parsed.withdrawn, &parsed.announced, &attrs) {
        return Ok(eor(afi));
    }
    collect_prefixes(&parsed.withdrawn, &parsed.announced, &attrs, &mut inbound)?;
    validate(&attrs, !parsed.announced.is_empty(), ctx, &mut inbound);
    finish(inbound, &attrs)
}

fn eor(afi: Afi) -> Decoded {
    Decoded {
        message: Message::Update(Update::end_of_rib(afi)),
        revised: None,
    }
}

/// RFC 4724 2: an UPDATE whose only content is an empty MP_UNREACH_NLRI.
fn mp_end_of_rib(
    withdrawn: &[rb::Ipv4NlriEntry],
    announced: &[rb::Ipv4NlriEntry],
    attrs: &[rb::PathAttribute],
) -> Option<Afi> {
    match (withdrawn, announced, attrs) {
        ([], [], [rb::PathAttribute::MpUnreachNlri(mp)]) if mp.withdrawn.is_empty() => {
            Afi::from_rb(mp.afi, mp.safi)
        }
        _ => None,
    }
}

fn collect_prefixes(
    withdrawn: &[rb::Ipv4NlriEntry],
    announced: &[rb::Ipv4NlriEntry],
    attrs: &[rb::PathAttribute],
    inbound: &mut Inbound,
) -> Result<(), MessageError> {
    for e in withdrawn {
        inbound.withdrawn.push(v4_network(&e.prefix)?);
    }
    for e in announced {
        inbound.announced.push((v4_network(&e.prefix)?, None));
    }
    for attr in attrs {
        match attr {
            rb::PathAttribute::MpReachNlri(mp) if Afi::from_rb(mp.afi, mp.safi).is_some() => {
                for e in &mp.announced {
                    inbound
                        .announced
                        .push((network(&e.prefix)?, Some(mp.next_hop)));
                }
            }
            rb::PathAttribute::MpUnreachNlri(mp) if Afi::from_rb(mp.afi, mp.safi).is_some() => {
                for e in &mp.withdrawn {
                    inbound.withdrawn.push(network(&e.prefix)?);
                }
            }
            _ => {}
        }
    }
    Ok(())
}

fn v4_network(p: &rb::Ipv4Prefix) -> Result<IpNetwork, MessageError> {
    Ipv4Network::new(p.addr, p.len)
        .map(IpNetwork::V4)
        .map_err(|_| UpdateError::InvalidNetworkField(vec![p.len]).into())
}

fn network(p: &rb::Prefix) -> Result<IpNetwork, MessageError> {
    match p {
        rb::Prefix::V4(p) => v4_network(p),
        rb::Prefix::V6(p) => Ipv6Network::new(p.addr, p.len)
            .map(IpNetwork::V6)
            .map_err(|_| UpdateError::InvalidNetworkField(vec![p.len]).into()),
    }
}

/// RFC 4271 6.3 semantic checks, each with its RFC 7606 action.
fn validate(
    attrs: &[rb::PathAttribute],
    has_body_nlri: bool,
    ctx: SessionContext,
    inbound: &mut Inbound,
) {
    let has_nlri = !inbound.announced.is_empty();
    if let Err(e) = rb::validate::validate_update_attributes_with_context(
        attrs,
        has_nlri,
        has_body_nlri,
        !ctx.ibgp,
        rb::UpdateValidationOptions::default(),
    ) {
        let action = match e.error.disposition {
            rb::ErrorDisposition::AttributeDiscard => AttrAction::Discard,
            rb::ErrorDisposition::TreatAsWithdraw => AttrAction::Withdraw,
            rb::ErrorDisposition::SessionReset => AttrAction::Reset,
        };
        let error = MessageError::from_parts(3, e.error.subcode, &e.error.data);
        inbound.note(action, error);
    }
    // NEXT_HOP is mandatory with body NLRI on every session (RFC 4271 5.1.3); the
    // crate checks it for eBGP only. Missing, it is treat-as-withdraw (RFC 7606 3 (d)).
    let has_next_hop = attrs.iter().any(|a| a.type_code() == ATTR_NEXT_HOP);
    if has_body_nlri && !has_next_hop {
        let error = UpdateError::MissingWellKnownAttribute(ATTR_NEXT_HOP).into();
        inbound.note(AttrAction::Withdraw, error);
    }
}

fn finish(inbound: Inbound, attrs: &[rb::PathAttribute]) -> Result<Decoded, MessageError> {
    let Inbound {
        mut withdrawn,
        announced,
        worst,
    } = inbound;
    let revised = match worst {
        Some((AttrAction::Reset, error)) => return Err(error),
        Some((action, error)) => Some(Revised { action, error }),
        None => None,
    };
    let shared = if revised
        .as_ref()
        .is_some_and(|r| r.action == AttrAction::Withdraw)
    {
        None
    } else {
        shared_attributes(attrs)
    };
    let mut routes = Vec::with_capacity(announced.len());
    match shared {
        Some(s) => {
            for (prefix, mp_next_hop) in announced {
                match mp_next_hop.or(s.next_hop) {
                    Some(next_hop) => routes.push(s.route(prefix, next_hop)),
                    None => withdrawn.push(prefix),
                }
            }
        }
        // Treat-as-withdraw, or (impossible after validation) no ORIGIN/AS_PATH.
        None => withdrawn.extend(announced.into_iter().map(|(p, _)| p)),
    }
    Ok(Decoded {
        message: Message::Update(Update {
            withdrawn,
            announced: routes,
            end_of_rib: None,
        }),
        revised,
    })
}

struct Shared {
    next_hop: Option<IpAddr>,
    origin: Origin,
    as_path: Vec<u32>,
    local_pref: Option<u32>,
    med: Option<u32>,
}

impl Shared {
    fn route(&self, prefix: IpNetwork, next_hop: IpAddr) -> Route {
        Route {
            prefix,
            next_hop,
            origin: self.origin,
            as_path: self.as_path.clone(),
            local_pref: self.local_pref,
            med: self.med,
        }
    }
}

fn shared_attributes(attrs: &[rb::PathAttribute]) -> Option<Shared> {
    let mut origin = None;
    let mut as_path = None;
    let mut s = Shared {
        next_hop: None,
        origin: Origin::Igp,
        as_path: vec![],
        local_pref: None,
        med: None,
    };
    for a in attrs {
        match a {
            rb::PathAttribute::Origin(o) => origin = Some(Origin::from_rb(*o)),
            rb::PathAttribute::AsPath(p) => as_path = Some(flatten(p)),
            rb::PathAttribute::NextHop(nh) => s.next_hop = Some(IpAddr::V4(*nh)),
            rb::PathAttribute::LocalPref(lp) => s.local_pref = Some(*lp),
            rb::PathAttribute::Med(m) => s.med = Some(*m),
            _ => {}
        }
    }
    s.origin = origin?;
    s.as_path = as_path?;
    Some(s)
}

fn flatten(p: &rb::AsPath) -> Vec<u32> {
    p.segments
        .iter()
        .flat_map(|s| match s {
            rb::AsPathSegment::AsSequence(v) | rb::AsPathSegment::AsSet(v) => v.iter().copied(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(prefix: &str, nh: &str) -> Route {
        Route {
            prefix: prefix.parse().unwrap(),
            next_hop: nh.parse().unwrap(),
            origin: Origin::Igp,
            as_path: vec![],
            local_pref: Some(100),
            med: None,
        }
    }

    #[test]
    fn mixed_families_round_trip_in_one_update() {
        let u = Update {
            withdrawn: vec![
                "10.1.0.0/26".parse().unwrap(),
                "fd00::/122".parse().unwrap(),
            ],
            announced: vec![
                route("10.2.0.0/26", "10.0.0.1"),
                route("10.3.0.0/26", "10.0.0.1"),
            ],
            end_of_rib: None,
        };
        let ctx = SessionContext::default();
        let bytes = encode(&Message::Update(u.clone()), ctx).unwrap();
        let d = decode(&bytes, ctx).unwrap();
        assert_eq!(d.message, Message::Update(u));
        assert_eq!(d.revised, None);
    }

    #[test]
    fn routes_with_different_attributes_are_refused_in_one_update() {
        let mut b = route("10.3.0.0/26", "10.0.0.1");
        b.med = Some(5);
        let u = Update {
            announced: vec![route("10.2.0.0/26", "10.0.0.1"), b],
            ..Update::default()
        };
        assert!(encode(&Message::Update(u), SessionContext::default()).is_err());
    }

    #[test]
    fn four_octet_as_path_travels_in_as4_path_on_a_two_octet_session() {
        let mut r = route("10.2.0.0/26", "10.0.0.1");
        r.as_path = vec![64512, 4_200_000_001];
        let ctx = SessionContext {
            four_octet_as: false,
            ibgp: false,
        };
        let u = Update {
            announced: vec![r.clone()],
            ..Update::default()
        };
        let bytes = encode(&Message::Update(u), ctx).unwrap();
        let Message::Update(back) = decode(&bytes, ctx).unwrap().message else {
            panic!("not an UPDATE");
        };
        assert_eq!(back.announced[0].as_path, vec![64512, 4_200_000_001]);
    }

    #[test]
    fn codec_waits_for_a_whole_frame() {
        let bytes = encode(&Message::Keepalive, SessionContext::default()).unwrap();
        let mut buf = BytesMut::from(&bytes[..10]);
        assert!(Codec.decode(&mut buf).unwrap().is_none());
        buf.extend_from_slice(&bytes[10..]);
        let f = Codec.decode(&mut buf).unwrap().unwrap();
        assert_eq!(f.kind(), "KEEPALIVE");
        assert!(buf.is_empty());
    }
}
