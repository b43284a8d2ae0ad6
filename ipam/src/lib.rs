//! Fjord IPAM (being written).
