//! Test and benchmark harness (being written).
