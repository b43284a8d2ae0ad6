//! Errors of the BGP layer.
//!
//! [`MessageError`] mirrors RFC 4271 section 6 (plus RFC 6608 FSM subcodes and RFC 4486
//! Cease subcodes): every error the protocol names is a variant, so turning one into the
//! NOTIFICATION to send is a single `match` ([`MessageError::notification`]). RFC 7606's
//! three ways of handling a malformed UPDATE are [`AttrAction`].

use std::fmt;

use thiserror::Error;

use super::wire::Notification;

/// An error that ends a BGP session with a NOTIFICATION, or (for UPDATE errors handled
/// per RFC 7606) the NOTIFICATION that would have been sent, kept for the log.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum MessageError {
    #[error("message header error: {0}")]
    Header(#[from] HeaderError),
    #[error("OPEN message error: {0}")]
    Open(#[from] OpenError),
    #[error("UPDATE message error: {0}")]
    Update(#[from] UpdateError),
    #[error("hold timer expired")]
    HoldTimerExpired,
    #[error("finite state machine error: {0}")]
    Fsm(#[from] FsmError),
    #[error("cease: {0}")]
    Cease(#[from] Cease),
    /// A code/subcode pair this enum does not name (received from a peer, or a newer
    /// RFC); kept verbatim so it can be logged and re-sent.
    #[error("error code {code} subcode {subcode}")]
    Other {
        code: u8,
        subcode: u8,
        data: Vec<u8>,
    },
}

/// RFC 4271 6.1.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum HeaderError {
    #[error("connection not synchronized (bad marker)")]
    ConnectionNotSynchronized,
    /// Carries the erroneous Length field, which is the NOTIFICATION's data.
    #[error("bad message length {0}")]
    BadMessageLength(u16),
    #[error("bad message type {0}")]
    BadMessageType(u8),
}

/// RFC 4271 6.2 (subcode 7, RFC 5492).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum OpenError {
    #[error("malformed OPEN")]
    Unspecific,
    #[error("unsupported version number")]
    UnsupportedVersion,
    #[error("bad peer AS")]
    BadPeerAs,
    #[error("bad BGP identifier")]
    BadBgpIdentifier,
    #[error("unsupported optional parameter")]
    UnsupportedOptionalParameter,
    #[error("unacceptable hold time")]
    UnacceptableHoldTime,
    #[error("unsupported capability")]
    UnsupportedCapability(Vec<u8>),
}

/// RFC 4271 6.3. The data of each variant is the NOTIFICATION's data field: the
/// erroneous attribute (type, length, value) unless the RFC says otherwise.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum UpdateError {
    #[error("malformed attribute list")]
    MalformedAttributeList,
    #[error("unrecognized well-known attribute")]
    UnrecognizedWellKnownAttribute(Vec<u8>),
    /// Carries the type code of the missing attribute.
    #[error("missing well-known attribute {0}")]
    MissingWellKnownAttribute(u8),
    #[error("attribute flags error")]
    AttributeFlags(Vec<u8>),
    #[error("attribute length error")]
    AttributeLength(Vec<u8>),
    #[error("invalid ORIGIN attribute")]
    InvalidOrigin(Vec<u8>),
    #[error("invalid NEXT_HOP attribute")]
    InvalidNextHop(Vec<u8>),
    #[error("optional attribute error")]
    OptionalAttribute(Vec<u8>),
    #[error("invalid network field")]
    InvalidNetworkField(Vec<u8>),
    #[error("malformed AS_PATH")]
    MalformedAsPath(Vec<u8>),
}

/// RFC 6608: which state received a message it did not expect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum FsmError {
    #[error("unspecified")]
    Unspecified,
    #[error("unexpected message in OpenSent")]
    UnexpectedInOpenSent,
    #[error("unexpected message in OpenConfirm")]
    UnexpectedInOpenConfirm,
    #[error("unexpected message in Established")]
    UnexpectedInEstablished,
}

/// RFC 4486 Cease subcodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum Cease {
    #[error("maximum number of prefixes reached")]
    MaxPrefixes,
    #[error("administrative shutdown")]
    AdministrativeShutdown,
    #[error("peer de-configured")]
    PeerDeconfigured,
    #[error("administrative reset")]
    AdministrativeReset,
    #[error("connection rejected")]
    ConnectionRejected,
    #[error("other configuration change")]
    OtherConfigurationChange,
    #[error("connection collision resolution")]
    ConnectionCollisionResolution,
    #[error("out of resources")]
    OutOfResources,
    #[error("subcode {0}")]
    Other(u8),
}

impl Cease {
    fn subcode(self) -> u8 {
        match self {
            Cease::MaxPrefixes => 1,
            Cease::AdministrativeShutdown => 2,
            Cease::PeerDeconfigured => 3,
            Cease::AdministrativeReset => 4,
            Cease::ConnectionRejected => 5,
            Cease::OtherConfigurationChange => 6,
            Cease::ConnectionCollisionResolution => 7,
            Cease::OutOfResources => 8,
            Cease::Other(s) => s,
        }
    }

    fn from_subcode(subcode: u8) -> Cease {
        match subcode {
            1 => Cease::MaxPrefixes,
            2 => Cease::AdministrativeShutdown,
            3 => Cease::PeerDeconfigured,
            4 => Cease::AdministrativeReset,
            5 => Cease::ConnectionRejected,
            6 => Cease::OtherConfigurationChange,
            7 => Cease::ConnectionCollisionResolution,
            8 => Cease::OutOfResources,
            s => Cease::Other(s),
        }
    }
}

impl MessageError {
    /// The NOTIFICATION that reports this error (RFC 4271 4.5 and 6).
    pub fn notification(&self) -> Notification {
        let (code, subcode, data): (u8, u8, Vec<u8>) = match self {
            MessageError::Header(e) => match e {
                HeaderError::ConnectionNotSynchronized => (1, 1, vec![]),
                HeaderError::BadMessageLength(len) => (1, 2, len.to_be_bytes().to_vec()),
                HeaderError::BadMessageType(t) => (1, 3, vec![*t]),
            },
            MessageError::Open(e) => match e {
                OpenError::Unspecific => (2, 0, vec![]),
                // Data: the largest version we support (RFC 4271 6.2).
                OpenError::UnsupportedVersion => (2, 1, 4u16.to_be_bytes().to_vec()),
                OpenError::BadPeerAs => (2, 2, vec![]),
                OpenError::BadBgpIdentifier => (2, 3, vec![]),
                OpenError::UnsupportedOptionalParameter => (2, 4, vec![]),
                OpenError::UnacceptableHoldTime => (2, 6, vec![]),
                OpenError::UnsupportedCapability(d) => (2, 7, d.clone()),
            },
            MessageError::Update(e) => {
                let (subcode, data) = e.subcode_and_data();
                (3, subcode, data)
            }
            MessageError::HoldTimerExpired => (4, 0, vec![]),
            MessageError::Fsm(e) => (5, *e as u8, vec![]),
            MessageError::Cease(c) => (6, c.subcode(), vec![]),
            MessageError::Other {
                code,
                subcode,
                data,
            } => (*code, *subcode, data.clone()),
        };
        Notification {
            code,
            subcode,
            data,
        }
    }

    /// The error a received (or codec-produced) NOTIFICATION describes.
    pub fn from_parts(code: u8, subcode: u8, data: &[u8]) -> MessageError {
        let d = data.to_vec();
        let other = || MessageError::Other {
            code,
            subcode,
            data: d.clone(),
        };
        match (code, subcode) {
            (1, 1) => HeaderError::ConnectionNotSynchronized.into(),
            (1, 2) => match data {
                [a, b] => HeaderError::BadMessageLength(u16::from_be_bytes([*a, *b])).into(),
                _ => HeaderError::BadMessageLength(0).into(),
            },
            (1, 3) => HeaderError::BadMessageType(data.first().copied().unwrap_or(0)).into(),
            (2, 0) => OpenError::Unspecific.into(),
            (2, 1) => OpenError::UnsupportedVersion.into(),
            (2, 2) => OpenError::BadPeerAs.into(),
            (2, 3) => OpenError::BadBgpIdentifier.into(),
            (2, 4) => OpenError::UnsupportedOptionalParameter.into(),
            (2, 6) => OpenError::UnacceptableHoldTime.into(),
            (2, 7) => OpenError::UnsupportedCapability(d.clone()).into(),
            (3, s) => UpdateError::from_subcode(s, d.clone()).map_or_else(other, Into::into),
            (4, _) => MessageError::HoldTimerExpired,
            (5, 0) => FsmError::Unspecified.into(),
            (5, 1) => FsmError::UnexpectedInOpenSent.into(),
            (5, 2) => FsmError::UnexpectedInOpenConfirm.into(),
            (5, 3) => FsmError::UnexpectedInEstablished.into(),
            (6, s) => Cease::from_subcode(s).into(),
            _ => other(),
        }
    }
}

impl UpdateError {
    fn subcode_and_data(&self) -> (u8, Vec<u8>) {
        match self {
            UpdateError::MalformedAttributeList => (1, vec![]),
            UpdateError::UnrecognizedWellKnownAttribute(d) => (2, d.clone()),
            UpdateError::MissingWellKnownAttribute(t) => (3, vec![*t]),
            UpdateError::AttributeFlags(d) => (4, d.clone()),
            UpdateError::AttributeLength(d) => (5, d.clone()),
            UpdateError::InvalidOrigin(d) => (6, d.clone()),
            UpdateError::InvalidNextHop(d) => (8, d.clone()),
            UpdateError::OptionalAttribute(d) => (9, d.clone()),
            UpdateError::InvalidNetworkField(d) => (10, d.clone()),
            UpdateError::MalformedAsPath(d) => (11, d.clone()),
        }
    }

    fn from_subcode(subcode: u8, data: Vec<u8>) -> Option<UpdateError> {
        Some(match subcode {
            1 => UpdateError::MalformedAttributeList,
            2 => UpdateError::UnrecognizedWellKnownAttribute(data),
            3 => UpdateError::MissingWellKnownAttribute(data.first().copied().unwrap_or(0)),
            4 => UpdateError::AttributeFlags(data),
            5 => UpdateError::AttributeLength(data),
            6 => UpdateError::InvalidOrigin(data),
            8 => UpdateError::InvalidNextHop(data),
            9 => UpdateError::OptionalAttribute(data),
            10 => UpdateError::InvalidNetworkField(data),
            11 => UpdateError::MalformedAsPath(data),
            _ => return None,
        })
    }
}

/// RFC 7606 section 2: how a malformed UPDATE is handled, weakest first (so `max`
/// picks the action that wins when several attributes are malformed, section 3 (h)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AttrAction {
    /// Drop the attribute, keep the routes.
    Discard,
    /// Treat every route the UPDATE announces as withdrawn; the session stays up.
    Withdraw,
    /// Send the NOTIFICATION and reset the session (RFC 4271 behaviour).
    Reset,
}

impl fmt::Display for AttrAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AttrAction::Discard => "attribute-discard",
            AttrAction::Withdraw => "treat-as-withdraw",
            AttrAction::Reset => "session-reset",
        })
    }
}

/// Everything that can go wrong in the BGP layer.
#[derive(Debug, Error)]
pub enum BgpError {
    /// A protocol error: the peer is told with [`MessageError::notification`].
    #[error(transparent)]
    Message(#[from] MessageError),
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// A message Fjord built cannot be put on the wire (a bug or bad input from the
    /// daemon, never the peer's doing).
    #[error("cannot encode BGP message: {0}")]
    Encode(String),
    /// The peer's session task has ended.
    #[error("peer session task for {0} has ended")]
    PeerGone(std::net::IpAddr),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_named_error_round_trips_through_its_notification() {
        let errors: Vec<MessageError> = vec![
            HeaderError::ConnectionNotSynchronized.into(),
            HeaderError::BadMessageLength(4097).into(),
            HeaderError::BadMessageType(9).into(),
            OpenError::UnsupportedVersion.into(),
            OpenError::BadPeerAs.into(),
            OpenError::BadBgpIdentifier.into(),
            OpenError::UnsupportedOptionalParameter.into(),
            OpenError::UnacceptableHoldTime.into(),
            UpdateError::MalformedAttributeList.into(),
            UpdateError::MissingWellKnownAttribute(1).into(),
            UpdateError::InvalidNextHop(vec![0, 0, 0, 0]).into(),
            UpdateError::MalformedAsPath(vec![0x40, 2, 1, 9]).into(),
            MessageError::HoldTimerExpired,
            FsmError::UnexpectedInOpenConfirm.into(),
            Cease::ConnectionRejected.into(),
            Cease::ConnectionCollisionResolution.into(),
        ];
        for e in errors {
            let n = e.notification();
            assert_eq!(MessageError::from_parts(n.code, n.subcode, &n.data), e);
        }
    }

    #[test]
    fn codes_and_subcodes_are_the_rfc_numbers() {
        let n = MessageError::from(Cease::ConnectionCollisionResolution).notification();
        assert_eq!((n.code, n.subcode), (6, 7));
        let n = MessageError::from(FsmError::UnexpectedInEstablished).notification();
        assert_eq!((n.code, n.subcode), (5, 3));
        let n = MessageError::from(OpenError::UnsupportedVersion).notification();
        assert_eq!((n.code, n.subcode, n.data), (2, 1, vec![0, 4]));
        assert!(AttrAction::Reset > AttrAction::Withdraw);
        assert!(AttrAction::Withdraw > AttrAction::Discard);
    }
}
