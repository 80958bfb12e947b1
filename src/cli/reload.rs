//! `reload`: re-read config, zone file and registry (like SIGHUP).

use crate::control::proto::Request;

pub fn request() -> Request {
    Request::Reload
}
