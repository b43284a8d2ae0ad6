//! The CNI specification's data model, shared by the `fjord` and `fjord-ipam` plugins.
//!
//! Everything here is pure: parsing the environment and stdin a runtime hands a plugin,
//! building results in the shape of the `cniVersion` the runtime asked for, and the spec's
//! error codes. Nothing touches the kernel.

pub mod config;
pub mod error;
pub mod invocation;
pub mod result;
pub mod skel;
pub mod version;

pub use config::{Attachment, NetConf};
pub use error::{CniError, ErrorCode};
pub use invocation::{CniArgs, Command, Invocation};
pub use result::{CniResult, Dns, Interface, IpConfig, Route};
pub use skel::Plugin;
pub use version::Version;
