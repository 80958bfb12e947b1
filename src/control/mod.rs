//! The control plane: srvctl talks to the daemon over a Unix socket.
pub mod proto;
