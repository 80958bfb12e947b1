//! `status`: health of every master and role, drain state, zone serial.

use crate::control::proto::Request;

pub(super) fn request() -> Request {
    Request::Status
}
