//! BGP: the wire format, the RFC 4271 state machine and the per-peer session tasks.
