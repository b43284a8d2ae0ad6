//! The BFD Control packet (RFC 5880 section 4.1) and the reception checks of section
//! 6.8.6 that need nothing but the packet.
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |Vers |  Diag   |Sta|P|F|C|A|D|M|  Detect Mult  |    Length     |
//! |                       My Discriminator                        |
//! |                      Your Discriminator                       |
//! |                    Desired Min TX Interval                    |
//! |                   Required Min RX Interval                    |
//! |                 Required Min Echo RX Interval                 |
//! |   Auth Type   |   Auth Len    |    Authentication Data...     |  (if A)
//! ```
//!
//! [`ControlPacket::decode`] reads every field, the optional authentication section
//! included, and refuses only what cannot be parsed; [`ControlPacket::check_received`]
//! then applies the discards of 6.8.6 (Fjord configures no authentication, so a packet
//! with the A bit is discarded there, as 6.8.6 requires of a session with
//! `bfd.AuthType` zero). [`ControlPacket::receive`] does both, which is what the socket
//! shell calls.

use std::fmt;

use thiserror::Error;

/// RFC 5880 4.1: the protocol version this module speaks.
pub const VERSION: u8 = 1;
/// The mandatory section's length; the Length field of a packet without authentication.
pub const MANDATORY_LEN: usize = 24;
/// 6.8.6: the minimum Length with the A bit set (an authentication type and length).
const MIN_LEN_WITH_AUTH: usize = 26;

/// bfd.SessionState / the Sta field (RFC 5880 4.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
pub enum State {
    AdminDown = 0,
    Down = 1,
    Init = 2,
    Up = 3,
}

impl State {
    fn from_bits(bits: u8) -> State {
        match bits & 0b11 {
            0 => State::AdminDown,
            1 => State::Down,
            2 => State::Init,
            _ => State::Up,
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            State::AdminDown => "AdminDown",
            State::Down => "Down",
            State::Init => "Init",
            State::Up => "Up",
        })
    }
}

/// The Diag field (RFC 5880 4.1; IANA "BFD Diagnostic Codes"): why the sender's session
/// last changed state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
pub enum Diagnostic {
    None,
    ControlDetectionTimeExpired,
    EchoFunctionFailed,
    NeighborSignaledSessionDown,
    ForwardingPlaneReset,
    PathDown,
    ConcatenatedPathDown,
    AdministrativelyDown,
    ReverseConcatenatedPathDown,
    /// A code this module does not name (9-31: later RFCs, or reserved).
    Other(u8),
}

impl Diagnostic {
    pub fn code(self) -> u8 {
        match self {
            Diagnostic::None => 0,
            Diagnostic::ControlDetectionTimeExpired => 1,
            Diagnostic::EchoFunctionFailed => 2,
            Diagnostic::NeighborSignaledSessionDown => 3,
            Diagnostic::ForwardingPlaneReset => 4,
            Diagnostic::PathDown => 5,
            Diagnostic::ConcatenatedPathDown => 6,
            Diagnostic::AdministrativelyDown => 7,
            Diagnostic::ReverseConcatenatedPathDown => 8,
            Diagnostic::Other(code) => code & 0x1f,
        }
    }

    pub fn from_code(code: u8) -> Diagnostic {
        match code & 0x1f {
            0 => Diagnostic::None,
            1 => Diagnostic::ControlDetectionTimeExpired,
            2 => Diagnostic::EchoFunctionFailed,
            3 => Diagnostic::NeighborSignaledSessionDown,
            4 => Diagnostic::ForwardingPlaneReset,
            5 => Diagnostic::PathDown,
            6 => Diagnostic::ConcatenatedPathDown,
            7 => Diagnostic::AdministrativelyDown,
            8 => Diagnostic::ReverseConcatenatedPathDown,
            other => Diagnostic::Other(other),
        }
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Diagnostic::None => f.write_str("no diagnostic"),
            Diagnostic::ControlDetectionTimeExpired => {
                f.write_str("control detection time expired")
            }
            Diagnostic::EchoFunctionFailed => f.write_str("echo function failed"),
            Diagnostic::NeighborSignaledSessionDown => {
                f.write_str("neighbor signaled session down")
            }
            Diagnostic::ForwardingPlaneReset => f.write_str("forwarding plane reset"),
            Diagnostic::PathDown => f.write_str("path down"),
            Diagnostic::ConcatenatedPathDown => f.write_str("concatenated path down"),
            Diagnostic::AdministrativelyDown => f.write_str("administratively down"),
            Diagnostic::ReverseConcatenatedPathDown => {
                f.write_str("reverse concatenated path down")
            }
            Diagnostic::Other(code) => write!(f, "diagnostic {code}"),
        }
    }
}

/// The optional authentication section (RFC 5880 4.2), kept as bytes: Fjord configures
/// no authentication, so it is decoded only to be named in the discard.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Authentication {
    /// Auth Type: 1 simple password, 2/3 keyed MD5, 4/5 keyed SHA1.
    pub auth_type: u8,
    /// Everything after Auth Type and Auth Len (Auth Key ID onwards).
    pub data: Vec<u8>,
}

/// One BFD Control packet. Intervals are in microseconds, as on the wire.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ControlPacket {
    pub diagnostic: Diagnostic,
    pub state: State,
    /// P: the sender asks for a packet with F (a Poll Sequence, 6.5).
    pub poll: bool,
    /// F: the answer to a Poll.
    pub final_: bool,
    /// C: the sender's BFD does not share fate with its control plane.
    pub control_plane_independent: bool,
    /// D: the sender wants to run in Demand mode.
    pub demand: bool,
    /// M: reserved for point-to-multipoint; must be zero (6.8.6).
    pub multipoint: bool,
    pub detect_mult: u8,
    pub my_discriminator: u32,
    pub your_discriminator: u32,
    pub desired_min_tx_us: u32,
    pub required_min_rx_us: u32,
    pub required_min_echo_rx_us: u32,
    /// Present exactly when the A bit is set.
    pub authentication: Option<Authentication>,
}

/// Why a received datagram is discarded: malformed (decode) or refused by a reception
/// check of RFC 5880 6.8.6 (or 6.5, P and F together).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PacketError {
    #[error("{0} bytes is shorter than a BFD Control packet (24)")]
    Truncated(usize),
    #[error("unsupported BFD version {0}")]
    UnsupportedVersion(u8),
    #[error("Length field {length} is below the minimum {minimum}")]
    LengthBelowMinimum { length: u8, minimum: u8 },
    #[error("Length field {length} exceeds the {payload}-byte UDP payload")]
    LengthBeyondPayload { length: u8, payload: usize },
    #[error("Auth Len {auth_len} does not fit the packet's Length {length}")]
    AuthenticationLength { auth_len: u8, length: u8 },
    #[error("Detect Mult is zero")]
    ZeroDetectMult,
    #[error("the Multipoint bit is set")]
    Multipoint,
    #[error("My Discriminator is zero")]
    ZeroMyDiscriminator,
    #[error("Your Discriminator is zero in state {0}")]
    ZeroYourDiscriminator(State),
    #[error("authentication type {0} received, but none is configured")]
    AuthenticationNotConfigured(u8),
    #[error("both Poll and Final are set")]
    PollAndFinal,
}

impl ControlPacket {
    /// The wire form; Length is computed (24, or 26 + data with authentication).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(MANDATORY_LEN);
        out.push((VERSION << 5) | self.diagnostic.code());
        let flags = [
            (self.poll, 0x20),
            (self.final_, 0x10),
            (self.control_plane_independent, 0x08),
            (self.authentication.is_some(), 0x04),
            (self.demand, 0x02),
            (self.multipoint, 0x01),
        ]
        .iter()
        .filter(|(set, _)| *set)
        .fold(0u8, |acc, (_, bit)| acc | bit);
        out.push(((self.state as u8) << 6) | flags);
        out.push(self.detect_mult);
        out.push(0); // Length, filled in below.
        for word in [
            self.my_discriminator,
            self.your_discriminator,
            self.desired_min_tx_us,
            self.required_min_rx_us,
            self.required_min_echo_rx_us,
        ] {
            out.extend_from_slice(&word.to_be_bytes());
        }
        if let Some(auth) = &self.authentication {
            out.push(auth.auth_type);
            out.push(u8::try_from(2 + auth.data.len()).unwrap_or(u8::MAX));
            out.extend_from_slice(&auth.data);
        }
        out[3] = u8::try_from(out.len()).unwrap_or(u8::MAX);
        out
    }

    /// Parses every field of `payload` (a whole UDP payload). Bytes past Length are
    /// ignored (padding); what is refused here cannot be read at all.
    pub fn decode(payload: &[u8]) -> Result<ControlPacket, PacketError> {
        if payload.len() < MANDATORY_LEN {
            return Err(PacketError::Truncated(payload.len()));
        }
        let version = payload[0] >> 5;
        if version != VERSION {
            return Err(PacketError::UnsupportedVersion(version));
        }
        let flags = payload[1];
        let auth_bit = flags & 0x04 != 0;
        let length = payload[3];
        let minimum = if auth_bit {
            MIN_LEN_WITH_AUTH
        } else {
            MANDATORY_LEN
        };
        if usize::from(length) < minimum {
            return Err(PacketError::LengthBelowMinimum {
                length,
                minimum: minimum as u8,
            });
        }
        if usize::from(length) > payload.len() {
            return Err(PacketError::LengthBeyondPayload {
                length,
                payload: payload.len(),
            });
        }
        let word = |i: usize| {
            let at = 4 + 4 * i;
            u32::from_be_bytes([
                payload[at],
                payload[at + 1],
                payload[at + 2],
                payload[at + 3],
            ])
        };
        let authentication = if auth_bit {
            Some(decode_authentication(&payload[..usize::from(length)])?)
        } else {
            None
        };
        Ok(ControlPacket {
            diagnostic: Diagnostic::from_code(payload[0]),
            state: State::from_bits(flags >> 6),
            poll: flags & 0x20 != 0,
            final_: flags & 0x10 != 0,
            control_plane_independent: flags & 0x08 != 0,
            demand: flags & 0x02 != 0,
            multipoint: flags & 0x01 != 0,
            detect_mult: payload[2],
            my_discriminator: word(0),
            your_discriminator: word(1),
            desired_min_tx_us: word(2),
            required_min_rx_us: word(3),
            required_min_echo_rx_us: word(4),
            authentication,
        })
    }

    /// RFC 5880 6.8.6: the discards that depend on the packet alone, in the RFC's order.
    pub fn check_received(&self) -> Result<(), PacketError> {
        if self.detect_mult == 0 {
            return Err(PacketError::ZeroDetectMult);
        }
        if self.multipoint {
            return Err(PacketError::Multipoint);
        }
        if self.my_discriminator == 0 {
            return Err(PacketError::ZeroMyDiscriminator);
        }
        let may_be_unknown = matches!(self.state, State::Down | State::AdminDown);
        if self.your_discriminator == 0 && !may_be_unknown {
            return Err(PacketError::ZeroYourDiscriminator(self.state));
        }
        if let Some(auth) = &self.authentication {
            return Err(PacketError::AuthenticationNotConfigured(auth.auth_type));
        }
        // 6.5: "MUST NOT have both the Poll (P) and Final (F) bits set"; a sender that
        // does is broken, and neither reading of such a packet is safe.
        if self.poll && self.final_ {
            return Err(PacketError::PollAndFinal);
        }
        Ok(())
    }

    /// [`decode`](Self::decode) then [`check_received`](Self::check_received).
    pub fn receive(payload: &[u8]) -> Result<ControlPacket, PacketError> {
        let packet = ControlPacket::decode(payload)?;
        packet.check_received()?;
        Ok(packet)
    }
}

/// The authentication section of a packet cut to its Length (at least 26 bytes).
fn decode_authentication(packet: &[u8]) -> Result<Authentication, PacketError> {
    let section = &packet[MANDATORY_LEN..];
    let auth_len = section[1];
    if usize::from(auth_len) < 2 || usize::from(auth_len) > section.len() {
        return Err(PacketError::AuthenticationLength {
            auth_len,
            length: packet.len() as u8,
        });
    }
    Ok(Authentication {
        auth_type: section[0],
        data: section[2..usize::from(auth_len)].to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An Up packet as FRR's bfdd sends it at 300 ms x 3 (diag 0, no flags), with
    /// holo's echo interval of 50 ms.
    fn up_fixture() -> (Vec<u8>, ControlPacket) {
        (
            vec![
                0x20, 0xc0, 0x03, 0x18, 0x9f, 0xb2, 0x05, 0xd6, 0x4a, 0x23, 0x57, 0xdc, 0x00, 0x04,
                0x93, 0xe0, 0x00, 0x04, 0x93, 0xe0, 0x00, 0x00, 0xc3, 0x50,
            ],
            ControlPacket {
                diagnostic: Diagnostic::None,
                state: State::Up,
                poll: false,
                final_: false,
                control_plane_independent: false,
                demand: false,
                multipoint: false,
                detect_mult: 3,
                my_discriminator: 0x9fb2_05d6,
                your_discriminator: 0x4a23_57dc,
                desired_min_tx_us: 300_000,
                required_min_rx_us: 300_000,
                required_min_echo_rx_us: 50_000,
                authentication: None,
            },
        )
    }

    /// A first packet: Down, "detection time expired", Your Discriminator still zero,
    /// the slow 1 s rate of 6.8.3, every flag but M and A set one at a time below.
    fn down_fixture() -> (Vec<u8>, ControlPacket) {
        (
            vec![
                0x21, 0x40, 0x05, 0x18, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x0f,
                0x42, 0x40, 0x00, 0x01, 0x86, 0xa0, 0x00, 0x00, 0x00, 0x00,
            ],
            ControlPacket {
                diagnostic: Diagnostic::ControlDetectionTimeExpired,
                state: State::Down,
                poll: false,
                final_: false,
                control_plane_independent: false,
                demand: false,
                multipoint: false,
                detect_mult: 5,
                my_discriminator: 1,
                your_discriminator: 0,
                desired_min_tx_us: 1_000_000,
                required_min_rx_us: 100_000,
                required_min_echo_rx_us: 0,
                authentication: None,
            },
        )
    }

    #[test]
    fn up_fixture_encodes_and_decodes() {
        let (bytes, packet) = up_fixture();
        assert_eq!(packet.encode(), bytes);
        assert_eq!(ControlPacket::decode(&bytes), Ok(packet.clone()));
        assert_eq!(ControlPacket::receive(&bytes), Ok(packet));
    }

    #[test]
    fn down_fixture_with_zero_your_discriminator_is_accepted() {
        let (bytes, packet) = down_fixture();
        assert_eq!(packet.encode(), bytes);
        assert_eq!(ControlPacket::receive(&bytes), Ok(packet));
    }

    #[test]
    fn every_flag_has_its_own_bit() {
        let (bytes, base) = up_fixture();
        type SetFlag = fn(&mut ControlPacket);
        let cases: [(u8, SetFlag); 5] = [
            (0x20, |p| p.poll = true),
            (0x10, |p| p.final_ = true),
            (0x08, |p| p.control_plane_independent = true),
            (0x02, |p| p.demand = true),
            (0x01, |p| p.multipoint = true),
        ];
        for (bit, set) in cases {
            let mut packet = base.clone();
            set(&mut packet);
            let mut want = bytes.clone();
            want[1] |= bit;
            assert_eq!(packet.encode(), want, "bit {bit:#04x}");
            assert_eq!(ControlPacket::decode(&want), Ok(packet), "bit {bit:#04x}");
        }
    }

    #[test]
    fn every_state_and_diagnostic_round_trips() {
        let (_, base) = up_fixture();
        for state in [State::AdminDown, State::Down, State::Init, State::Up] {
            for code in 0..32u8 {
                let packet = ControlPacket {
                    state,
                    diagnostic: Diagnostic::from_code(code),
                    ..base.clone()
                };
                let bytes = packet.encode();
                assert_eq!(bytes[0], 0x20 | code);
                assert_eq!(bytes[1] >> 6, state as u8);
                assert_eq!(ControlPacket::decode(&bytes), Ok(packet));
            }
        }
        assert_eq!(Diagnostic::from_code(7), Diagnostic::AdministrativelyDown);
        assert_eq!(Diagnostic::from_code(9), Diagnostic::Other(9));
    }

    #[test]
    fn authentication_section_is_decoded_then_refused() {
        // Simple password (type 1), key id 7, password "fjord": Auth Len 2 + 1 + 5.
        let (mut bytes, base) = up_fixture();
        bytes[1] |= 0x04;
        bytes.extend_from_slice(&[0x01, 0x08, 0x07, b'f', b'j', b'o', b'r', b'd']);
        bytes[3] = 32;
        let packet = ControlPacket {
            authentication: Some(Authentication {
                auth_type: 1,
                data: vec![0x07, b'f', b'j', b'o', b'r', b'd'],
            }),
            ..base
        };
        assert_eq!(packet.encode(), bytes);
        assert_eq!(ControlPacket::decode(&bytes), Ok(packet));
        assert_eq!(
            ControlPacket::receive(&bytes),
            Err(PacketError::AuthenticationNotConfigured(1))
        );
    }

    #[test]
    fn bytes_past_length_are_padding() {
        let (mut bytes, packet) = up_fixture();
        bytes.extend_from_slice(&[0xde, 0xad]);
        assert_eq!(ControlPacket::receive(&bytes), Ok(packet));
    }

    /// The fixture with `edit` applied to its bytes.
    fn malformed(edit: impl FnOnce(&mut Vec<u8>)) -> Result<ControlPacket, PacketError> {
        let (mut bytes, _) = up_fixture();
        edit(&mut bytes);
        ControlPacket::receive(&bytes)
    }

    #[test]
    fn structural_errors_per_6_8_6() {
        assert_eq!(
            malformed(|b| b.truncate(23)),
            Err(PacketError::Truncated(23))
        );
        assert_eq!(
            malformed(|b| b[0] = 0x40),
            Err(PacketError::UnsupportedVersion(2))
        );
        assert_eq!(
            malformed(|b| b[0] = 0x00),
            Err(PacketError::UnsupportedVersion(0))
        );
        assert_eq!(
            malformed(|b| b[3] = 23),
            Err(PacketError::LengthBelowMinimum {
                length: 23,
                minimum: 24
            })
        );
        assert_eq!(
            malformed(|b| b[3] = 25),
            Err(PacketError::LengthBeyondPayload {
                length: 25,
                payload: 24
            })
        );
        // A bit with Length 24: below the 26 an authentication section needs.
        assert_eq!(
            malformed(|b| b[1] |= 0x04),
            Err(PacketError::LengthBelowMinimum {
                length: 24,
                minimum: 26
            })
        );
        // Auth Len 9 in a 26-byte packet.
        assert_eq!(
            malformed(|b| {
                b[1] |= 0x04;
                b[3] = 26;
                b.extend_from_slice(&[0x01, 0x09]);
            }),
            Err(PacketError::AuthenticationLength {
                auth_len: 9,
                length: 26
            })
        );
    }

    #[test]
    fn reception_checks_per_6_8_6() {
        assert_eq!(malformed(|b| b[2] = 0), Err(PacketError::ZeroDetectMult));
        assert_eq!(malformed(|b| b[1] |= 0x01), Err(PacketError::Multipoint));
        assert_eq!(
            malformed(|b| b[4..8].fill(0)),
            Err(PacketError::ZeroMyDiscriminator)
        );
        assert_eq!(
            malformed(|b| b[8..12].fill(0)),
            Err(PacketError::ZeroYourDiscriminator(State::Up))
        );
        assert_eq!(
            malformed(|b| {
                b[8..12].fill(0);
                b[1] = 0x80;
            }),
            Err(PacketError::ZeroYourDiscriminator(State::Init))
        );
        assert_eq!(
            malformed(|b| {
                b[8..12].fill(0);
                b[1] = 0x00;
            })
            .map(|p| p.state),
            Ok(State::AdminDown)
        );
        assert_eq!(malformed(|b| b[1] |= 0x30), Err(PacketError::PollAndFinal));
    }

    #[test]
    fn no_input_panics_the_decoder() {
        // Every length up to 40 bytes of a few patterns, and single-byte flips of the
        // fixture: each either decodes or is an error, never a panic.
        for len in 0..40 {
            for fill in [0x00, 0x20, 0xff, 0x24] {
                let _ = ControlPacket::receive(&vec![fill; len]);
            }
        }
        let (bytes, _) = up_fixture();
        for i in 0..bytes.len() {
            for flip in [0x01, 0x04, 0x80, 0xff] {
                let mut b = bytes.clone();
                b[i] ^= flip;
                let _ = ControlPacket::receive(&b);
            }
        }
    }
}
