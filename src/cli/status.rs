//! `status`: health of every master and role, drain state, zone serial.

use crate::control::proto::Request;

pub fn request() -> Request {
    Request::Status
}
