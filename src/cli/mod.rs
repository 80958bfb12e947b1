//! srvctl: the command line (placeholder).
