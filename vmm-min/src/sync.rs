//! Locking helpers shared by the VMM's threads.

use std::sync::{Mutex, MutexGuard};

/// Locks a mutex, ignoring poisoning: a panicked thread's data is still the
/// best we have, and the VM must keep running.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
