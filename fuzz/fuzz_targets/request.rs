//! Raw request bytes through the fast path, the general path, TSIG checking
//! and signing and zone transfers, over UDP and TCP, to the encoded reply:
//! see `srvd::dns::fuzzing::fuzz_one` for the properties checked.
#![no_main]

use std::sync::{Arc, LazyLock};

use libfuzzer_sys::fuzz_target;
use srvd::dns::served::Served;

static SNAP: LazyLock<Arc<Served>> = LazyLock::new(|| srvd::dns::fuzzing::example_snapshot().expect("the example snapshot builds"));

fuzz_target!(|data: &[u8]| {
    srvd::dns::fuzzing::fuzz_one(&SNAP, data);
});
