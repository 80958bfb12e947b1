//! Frees big values (a replaced snapshot, the DNS layer's pre-encoded
//! answers) on a background thread, so that a publication returns without
//! waiting for the previous zone to be freed (100 sites x 1,000 masters:
//! ~4 ms of freeing per change).
//!
//! The values are dropped in the order they were handed over. If the thread
//! cannot be started or has gone, a value is dropped where it is handed over.

use std::sync::OnceLock;
use std::sync::mpsc::{self, Sender};

type Garbage = Box<dyn Send>;

/// Drops `value` on the background thread (or here, if there is none).
pub fn later<T: Send + 'static>(value: T) {
    let garbage: Garbage = Box::new(value);
    let rest = match sender() {
        Some(tx) => tx.send(garbage).err().map(|e| e.0),
        None => Some(garbage),
    };
    drop(rest);
}

fn sender() -> Option<&'static Sender<Garbage>> {
    static TX: OnceLock<Option<Sender<Garbage>>> = OnceLock::new();
    TX.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Garbage>();
        let spawned = std::thread::Builder::new().name("srvd-retire".into()).spawn(move || {
            for garbage in rx {
                drop(garbage);
            }
        });
        match spawned {
            Ok(_) => Some(tx),
            Err(e) => {
                tracing::warn!(error = %e, "cannot start the thread that frees replaced snapshots; freeing them on the publishing thread");
                None
            }
        }
    })
    .as_ref()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    #[test]
    fn values_handed_over_are_dropped() {
        let v = Arc::new(vec![0u8; 1024]);
        let weak = Arc::downgrade(&v);
        super::later(v);
        let deadline = Instant::now() + Duration::from_secs(30);
        while weak.upgrade().is_some() {
            assert!(Instant::now() < deadline, "the value was never dropped");
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}
