//! ICMP echo packets for the in-process probe: building requests and reading replies
//! (pure; the sockets are in `probe.rs`).

use std::net::IpAddr;

const ECHO_REQUEST_V4: u8 = 8;
const ECHO_REPLY_V4: u8 = 0;
const ECHO_REQUEST_V6: u8 = 128;
const ECHO_REPLY_V6: u8 = 129;
/// Bytes after the 8-byte ICMP header: enough to tell our packets by content too.
const PAYLOAD: &[u8] = b"fjord-lab probe";

/// An echo request with `id` and `seq`. The IPv4 checksum is ours to fill in; for
/// ICMPv6 the kernel computes it on raw sockets (RFC 3542 section 3.1), so it stays 0.
pub fn echo_request(v6: bool, id: u16, seq: u16) -> Vec<u8> {
    let kind = if v6 { ECHO_REQUEST_V6 } else { ECHO_REQUEST_V4 };
    let mut packet = vec![kind, 0, 0, 0];
    packet.extend_from_slice(&id.to_be_bytes());
    packet.extend_from_slice(&seq.to_be_bytes());
    packet.extend_from_slice(PAYLOAD);
    if !v6 {
        let sum = checksum(&packet);
        packet[2..4].copy_from_slice(&sum.to_be_bytes());
    }
    packet
}

/// The Internet checksum (RFC 1071).
pub fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for chunk in data.chunks(2) {
        let word = match chunk {
            [a, b] => u16::from_be_bytes([*a, *b]),
            [a] => u16::from_be_bytes([*a, 0]),
            _ => 0,
        };
        sum += u32::from(word);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// The `(id, seq)` of an echo reply received on a raw socket of `family`, `None` for any
/// other packet. IPv4 raw sockets deliver the IP header; ICMPv6 ones do not.
pub fn echo_reply(v6: bool, datagram: &[u8]) -> Option<(u16, u16)> {
    let icmp = if v6 {
        datagram
    } else {
        let header_len = usize::from(datagram.first()? & 0x0f) * 4;
        datagram.get(header_len..)?
    };
    let want = if v6 { ECHO_REPLY_V6 } else { ECHO_REPLY_V4 };
    if icmp.len() < 8 + PAYLOAD.len() || icmp[0] != want || &icmp[8..8 + PAYLOAD.len()] != PAYLOAD {
        return None;
    }
    let id = u16::from_be_bytes([icmp[4], icmp[5]]);
    let seq = u16::from_be_bytes([icmp[6], icmp[7]]);
    Some((id, seq))
}

/// The source address of an IPv4 datagram (its header's bytes 12..16).
pub fn ipv4_source(datagram: &[u8]) -> Option<IpAddr> {
    let b: [u8; 4] = datagram.get(12..16)?.try_into().ok()?;
    Some(IpAddr::from(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_with_its_checksum_sums_to_zero() {
        let packet = echo_request(false, 0x1234, 7);
        assert_eq!(packet[0], 8);
        assert_eq!(checksum(&packet), 0);
        // RFC 1071's example words sum to 0xddf2; the checksum is its complement.
        assert_eq!(
            checksum(&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]),
            !0xddf2
        );
    }

    #[test]
    fn a_reply_is_read_behind_the_ipv4_header_and_others_are_not() {
        let mut reply = echo_request(false, 0xbeef, 42);
        reply[0] = 0;
        let mut datagram = vec![0x45; 1];
        datagram.extend_from_slice(&[0; 11]);
        datagram.extend_from_slice(&[10, 244, 0, 2]);
        datagram.extend_from_slice(&[10, 244, 0, 3]);
        datagram.extend_from_slice(&reply);
        assert_eq!(echo_reply(false, &datagram), Some((0xbeef, 42)));
        assert_eq!(ipv4_source(&datagram), Some("10.244.0.2".parse().unwrap()));
        // A request (another prober pinging this pod) is not a reply.
        let mut request = datagram.clone();
        request[20] = 8;
        assert_eq!(echo_reply(false, &request), None);
        assert_eq!(echo_reply(false, &datagram[..24]), None);
    }

    #[test]
    fn an_icmpv6_reply_is_read_as_it_comes() {
        let mut reply = echo_request(true, 9, 300);
        assert_eq!(reply[0], 128);
        reply[0] = 129;
        assert_eq!(echo_reply(true, &reply), Some((9, 300)));
        let mut foreign = reply.clone();
        foreign[9] ^= 0xff;
        assert_eq!(echo_reply(true, &foreign), None);
    }
}
