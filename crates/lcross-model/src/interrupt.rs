//! Stopping long work from the caller: a check installed on the calling thread for the
//! length of one call, asked before every forward pass (so extraction, hidden states,
//! generation and every evaluation stop within one batch), answered with
//! [`ModelError::Interrupted`](crate::ModelError::Interrupted).
//!
//! The Python package installs a check that runs `PyErr_CheckSignals` (Ctrl-C becomes
//! `KeyboardInterrupt`); the CLI installs none (Ctrl-C ends the process, and every
//! artifact is written atomically). The work of one call stays on the thread that made it
//! (its batch loops; the pool threads only split each product), so a thread-local check is
//! seen by every forward pass of the call.

use std::cell::RefCell;
use std::time::{Duration, Instant};

use crate::error::{ModelError, Result};

/// Checks closer together than this are skipped (a check may take the GIL).
const MIN_INTERVAL: Duration = Duration::from_millis(50);

struct Installed {
    /// Returns true when the work must stop.
    should_stop: Box<dyn FnMut() -> bool>,
    last: Option<Instant>,
}

thread_local! {
    static CHECK: RefCell<Option<Installed>> = const { RefCell::new(None) };
}

/// Run `work` with `should_stop` asked (at most every 50 ms) by [`check`] on this thread;
/// the previous check (if any) is back in place afterwards, also when `work` panics.
pub fn with_check<R>(should_stop: impl FnMut() -> bool + 'static, work: impl FnOnce() -> R) -> R {
    struct Restore(Option<Installed>);
    impl Drop for Restore {
        fn drop(&mut self) {
            let previous = self.0.take();
            CHECK.with(|c| *c.borrow_mut() = previous);
        }
    }
    let previous = CHECK.with(|c| c.borrow_mut().replace(Installed { should_stop: Box::new(should_stop), last: None }));
    let _restore = Restore(previous);
    work()
}

/// `Err(Interrupted)` when the check installed on this thread says stop; `Ok` when it
/// does not, when it was asked less than 50 ms ago, or when none is installed.
pub fn check() -> Result<()> {
    let stop = CHECK.with(|c| {
        // A check that itself runs lcross work would find the cell borrowed: not asked.
        let Ok(mut slot) = c.try_borrow_mut() else { return false };
        let Some(installed) = slot.as_mut() else { return false };
        let now = Instant::now();
        if installed.last.is_some_and(|t| now.duration_since(t) < MIN_INTERVAL) {
            return false;
        }
        installed.last = Some(now);
        (installed.should_stop)()
    });
    if stop {
        Err(ModelError::Interrupted)
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;
    use std::rc::Rc;

    #[test]
    fn a_check_stops_only_inside_its_call() {
        assert!(check().is_ok(), "no check installed");
        let asked = Rc::new(Cell::new(0));
        let counter = asked.clone();
        let inside = with_check(
            move || {
                counter.set(counter.get() + 1);
                true
            },
            check,
        );
        assert!(matches!(inside, Err(ModelError::Interrupted)));
        assert_eq!(asked.get(), 1);
        assert!(check().is_ok(), "the check is removed after the call");
    }

    #[test]
    fn checks_are_spaced_and_nested_calls_restore_the_outer_one() {
        let asked = Rc::new(Cell::new(0));
        let counter = asked.clone();
        with_check(
            move || {
                counter.set(counter.get() + 1);
                false
            },
            || {
                for _ in 0..100 {
                    check().unwrap();
                }
                assert_eq!(asked.get(), 1, "asked once within 50 ms");
                assert!(with_check(|| true, check).is_err());
                std::thread::sleep(MIN_INTERVAL);
                check().unwrap();
                assert_eq!(asked.get(), 2, "the outer check is back");
            },
        );
    }
}
