//! Route changes written to the kernel many per system call: requests are serialized
//! back to back (netlink-packet-route's messages) into buffers of up to
//! [`CHUNK_BYTES`] and each buffer goes in one `send` on a plain netlink socket.
//!
//! The kernel handles every request of a buffer in order inside that `send` (rtnetlink
//! is synchronous) and goes on after a failed one, so when `send` returns the whole
//! buffer is done. Requests carry no NLM_F_ACK: success costs no reply, and a failure
//! comes back as an NLMSG_ERROR naming the request's sequence number (NETLINK_CAP_ACK
//! keeps it small), read without blocking after each buffer. This is what makes a large
//! table cost about what the kernel's FIB insertions cost, and it runs on a blocking
//! thread (`Kernel::apply`), beside the BGP sessions.

use std::io;

use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLMSG_ERROR, NLM_F_CREATE, NLM_F_REPLACE,
    NLM_F_REQUEST,
};
use netlink_packet_route::route::RouteMessage;
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::{protocols::NETLINK_ROUTE, Socket};
use std::os::fd::AsRawFd;

/// One `send`'s worth of requests (an IPv4 install is 52 bytes: about 630 of them),
/// well under the socket's send buffer.
pub const CHUNK_BYTES: usize = 32 * 1024;
/// SO_RCVBUF asked for: room for the error replies of a whole chunk.
const RECEIVE_BUFFER: usize = 1 << 20;
/// NETLINK_CAP_ACK (linux/netlink.h): error replies without the echoed request.
const NETLINK_CAP_ACK: libc::c_int = 10;
const SOL_NETLINK: libc::c_int = 270;
const NLMSG_HEADER_LEN: usize = 16;

/// A request to send: a route to add or replace, or to delete.
pub enum Request {
    Replace(RouteMessage),
    Delete(RouteMessage),
}

/// A blocking netlink socket for batched route changes, in the network namespace of
/// the thread that opened it.
pub struct BatchSocket {
    socket: Socket,
    buffer: Vec<u8>,
    seq: u32,
}

impl BatchSocket {
    pub fn open() -> io::Result<BatchSocket> {
        let mut socket = Socket::new(NETLINK_ROUTE)?;
        socket.bind_auto()?;
        socket.set_rx_buf_sz(RECEIVE_BUFFER)?;
        let on: libc::c_int = 1;
        // SAFETY: `on` is a live c_int and its size is passed.
        let rc = unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                SOL_NETLINK,
                NETLINK_CAP_ACK,
                (&on as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(BatchSocket {
            socket,
            buffer: Vec::with_capacity(CHUNK_BYTES),
            seq: 0,
        })
    }

    /// Sends every request; returns the failures as (index into `requests`, errno).
    /// An error reply that could not be read (receive buffer overrun) is reported with
    /// index `None`.
    pub fn apply(
        &mut self,
        requests: impl IntoIterator<Item = Request>,
    ) -> Vec<(Option<usize>, io::Error)> {
        let mut failures = Vec::new();
        let first_seq = self.seq.wrapping_add(1);
        self.buffer.clear();
        for request in requests {
            self.seq = self.seq.wrapping_add(1);
            let message = request_message(request, self.seq);
            let len = message.buffer_len();
            if !self.buffer.is_empty() && self.buffer.len() + len > CHUNK_BYTES {
                self.flush(first_seq, &mut failures);
            }
            let start = self.buffer.len();
            self.buffer.resize(start + len, 0);
            message.serialize(&mut self.buffer[start..]);
        }
        self.flush(first_seq, &mut failures);
        failures
    }

    /// Sends the buffered requests, then collects the error replies they caused.
    fn flush(&mut self, first_seq: u32, failures: &mut Vec<(Option<usize>, io::Error)>) {
        if self.buffer.is_empty() {
            return;
        }
        let sent = loop {
            match self.socket.send(&self.buffer, 0) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => break other,
            }
        };
        if let Err(e) = sent {
            // Nothing of this buffer was applied: every request in it failed.
            let mut rest = &self.buffer[..];
            while let Some((seq, len)) = header_of(rest) {
                let index = seq.wrapping_sub(first_seq) as usize;
                failures.push((Some(index), io::Error::new(e.kind(), e.to_string())));
                rest = &rest[len.min(rest.len())..];
            }
        }
        self.buffer.clear();
        self.read_errors(first_seq, failures);
    }

    fn read_errors(&mut self, first_seq: u32, failures: &mut Vec<(Option<usize>, io::Error)>) {
        // Each error reply is its own datagram of 36 bytes (NETLINK_CAP_ACK).
        let mut datagram = [0u8; 4096];
        loop {
            // SAFETY: `datagram` is valid for writes of its length.
            let n = unsafe {
                libc::recv(
                    self.socket.as_raw_fd(),
                    datagram.as_mut_ptr().cast(),
                    datagram.len(),
                    libc::MSG_DONTWAIT,
                )
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                match e.raw_os_error() {
                    Some(libc::EINTR) => continue,
                    Some(libc::EAGAIN) => return,
                    _ => {
                        failures.push((None, e));
                        return;
                    }
                }
            }
            for (seq, errno) in error_replies(&datagram[..n as usize]) {
                let index = seq.wrapping_sub(first_seq) as usize;
                failures.push((Some(index), io::Error::from_raw_os_error(errno)));
            }
        }
    }
}

fn request_message(request: Request, seq: u32) -> NetlinkMessage<RouteNetlinkMessage> {
    let (flags, inner) = match request {
        Request::Replace(m) => (
            NLM_F_REQUEST | NLM_F_CREATE | NLM_F_REPLACE,
            RouteNetlinkMessage::NewRoute(m),
        ),
        Request::Delete(m) => (NLM_F_REQUEST, RouteNetlinkMessage::DelRoute(m)),
    };
    let mut header = NetlinkHeader::default();
    header.flags = flags;
    header.sequence_number = seq;
    let mut message = NetlinkMessage::new(header, NetlinkPayload::from(inner));
    message.finalize();
    message
}

/// (sequence number, aligned length) of the first netlink message in `buf`.
fn header_of(buf: &[u8]) -> Option<(u32, usize)> {
    if buf.len() < NLMSG_HEADER_LEN {
        return None;
    }
    let len = u32::from_ne_bytes(buf[0..4].try_into().ok()?) as usize;
    if len < NLMSG_HEADER_LEN {
        return None;
    }
    let seq = u32::from_ne_bytes(buf[8..12].try_into().ok()?);
    Some((seq, (len + 3) & !3))
}

/// The (sequence number of the failed request, errno) of every NLMSG_ERROR with a
/// non-zero error in a datagram. The reply's own header carries the request's sequence
/// number; its payload starts with the negated errno.
pub fn error_replies(mut datagram: &[u8]) -> Vec<(u32, i32)> {
    let mut out = Vec::new();
    while let Some((seq, len)) = header_of(datagram) {
        let kind = u16::from_ne_bytes([datagram[4], datagram[5]]);
        if kind == NLMSG_ERROR && datagram.len() >= NLMSG_HEADER_LEN + 4 {
            let code = i32::from_ne_bytes(
                datagram[NLMSG_HEADER_LEN..NLMSG_HEADER_LEN + 4]
                    .try_into()
                    .expect("4 bytes"),
            );
            if code < 0 {
                out.push((seq, -code));
            }
        }
        datagram = &datagram[len.min(datagram.len())..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error_reply(seq: u32, code: i32) -> Vec<u8> {
        let mut m = Vec::new();
        m.extend_from_slice(&36u32.to_ne_bytes());
        m.extend_from_slice(&NLMSG_ERROR.to_ne_bytes());
        m.extend_from_slice(&0u16.to_ne_bytes());
        m.extend_from_slice(&seq.to_ne_bytes());
        m.extend_from_slice(&0u32.to_ne_bytes());
        m.extend_from_slice(&code.to_ne_bytes());
        m.extend_from_slice(&[0u8; 16]); // the capped request header
        m
    }

    #[test]
    fn error_replies_name_the_failed_requests_and_skip_acks() {
        let mut datagram = error_reply(7, -libc::ENETUNREACH);
        datagram.extend(error_reply(8, 0));
        datagram.extend(error_reply(9, -libc::EEXIST));
        assert_eq!(
            error_replies(&datagram),
            vec![(7, libc::ENETUNREACH), (9, libc::EEXIST)]
        );
        assert!(error_replies(&datagram[..10]).is_empty());
    }

    #[test]
    fn requests_are_serialized_with_their_sequence_number_and_no_ack() {
        let m = request_message(Request::Replace(RouteMessage::default()), 41);
        let mut buf = vec![0; m.buffer_len()];
        m.serialize(&mut buf);
        assert_eq!(header_of(&buf), Some((41, buf.len())));
        let flags = u16::from_ne_bytes([buf[6], buf[7]]);
        assert_eq!(flags & netlink_packet_core::NLM_F_ACK, 0);
        assert_ne!(flags & NLM_F_REPLACE, 0);
    }
}
