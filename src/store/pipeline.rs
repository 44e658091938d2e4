//! The ingest pipeline's first stage: step 1 of a batch (read and hash) on
//! worker threads, handed to step 2 (write) in the batch's order.
//!
//! Order matters: within a batch the first of two identical uploads is the
//! one stored and file ids follow the batch, whichever worker finished
//! first. Memory matters too: a worker starts an upload only while it is
//! fewer than `window` uploads ahead of the writer, so that at most
//! `window` hashed contents wait in memory, however slow one of them is to
//! write or however fast the others are to read.
//!
//! The buffers files are read into go round too ([`BufferPool`]).

use std::collections::BTreeMap;
use std::num::NonZeroUsize;

use parking_lot::{Condvar, Mutex};

/// Read buffers handed back by the writer for the next reads: a fresh
/// buffer per file costs the kernel a page fault and a zeroed page per
/// 4 KiB, about as much as copying the file into it.
#[derive(Default)]
pub(crate) struct BufferPool(Mutex<Vec<Vec<u8>>>);

/// Buffers a pool keeps: as many as a batch has in flight.
const POOL_MAX: usize = 8;

impl BufferPool {
    /// An empty buffer with room for `len` bytes.
    pub(crate) fn take(&self, len: usize) -> Vec<u8> {
        let mut buf = self.0.lock().pop().unwrap_or_default();
        buf.clear();
        buf.reserve(len);
        buf
    }

    /// Hands `buf` back for a later [`take`](Self::take).
    pub(crate) fn give(&self, buf: Vec<u8>) {
        let mut pool = self.0.lock();
        if pool.len() < POOL_MAX {
            pool.push(buf);
        }
    }
}

struct State<T, U> {
    items: Vec<Option<T>>,
    /// The next item a worker takes.
    next: usize,
    /// Finished items the consumer has not taken yet, by index.
    done: BTreeMap<usize, U>,
    /// How many items the consumer has taken (all of them in order).
    taken: usize,
    /// The consumer is gone (returned or panicked): workers stop.
    abandoned: bool,
    /// A worker panicked: the item it held will never be done.
    failed: bool,
}

struct Shared<T, U> {
    state: Mutex<State<T, U>>,
    changed: Condvar,
}

/// Runs `f` over `items` on up to `workers` threads, at most `window` items
/// ahead of the consumer, and hands `consume` the results in the order of
/// `items`, each with its index. Returns what `consume` returns.
pub(crate) fn ordered_map<T: Send, U: Send, R>(
    items: Vec<T>,
    workers: NonZeroUsize,
    window: NonZeroUsize,
    f: impl Fn(T) -> U + Sync,
    consume: impl FnOnce(&mut dyn Iterator<Item = (usize, U)>) -> R,
) -> R {
    let count = items.len();
    let shared = Shared {
        state: Mutex::new(State {
            items: items.into_iter().map(Some).collect(),
            next: 0,
            done: BTreeMap::new(),
            taken: 0,
            abandoned: false,
            failed: false,
        }),
        changed: Condvar::new(),
    };
    let workers = workers.get().min(count.max(1));
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| work(&shared, window.get(), &f));
        }
        // Wakes the workers to stop however `consume` ends, so that the
        // scope can join them.
        let _stop = Abandon(&shared);
        let mut results = InOrder { shared: &shared, count };
        consume(&mut results)
    })
}

fn work<T, U>(shared: &Shared<T, U>, window: usize, f: &impl Fn(T) -> U) {
    // Without this, a panic in `f` would leave the consumer waiting forever
    // for the item it held.
    let _failed = Failed(shared);
    loop {
        let (index, item) = {
            let mut s = shared.state.lock();
            loop {
                if s.abandoned || s.next == s.items.len() {
                    return;
                }
                if s.next < s.taken + window {
                    break;
                }
                shared.changed.wait(&mut s);
            }
            let index = s.next;
            s.next += 1;
            (index, s.items[index].take().expect("each item is taken once"))
        };
        let out = f(item);
        shared.state.lock().done.insert(index, out);
        shared.changed.notify_all();
    }
}

struct InOrder<'a, T, U> {
    shared: &'a Shared<T, U>,
    count: usize,
}

impl<T, U> Iterator for InOrder<'_, T, U> {
    type Item = (usize, U);

    fn next(&mut self) -> Option<(usize, U)> {
        let mut s = self.shared.state.lock();
        if s.taken == self.count {
            return None;
        }
        let index = s.taken;
        let out = loop {
            if let Some(out) = s.done.remove(&index) {
                break out;
            }
            if s.failed {
                drop(s);
                panic!("an ingest pipeline worker panicked");
            }
            self.shared.changed.wait(&mut s);
        };
        s.taken += 1;
        drop(s);
        // A worker may be waiting for the window to move.
        self.shared.changed.notify_all();
        Some((index, out))
    }
}

/// Marks the pipeline failed if its worker unwinds.
struct Failed<'a, T, U>(&'a Shared<T, U>);

impl<T, U> Drop for Failed<'_, T, U> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.state.lock().failed = true;
            self.0.changed.notify_all();
        }
    }
}

struct Abandon<'a, T, U>(&'a Shared<T, U>);

impl<T, U> Drop for Abandon<'_, T, U> {
    fn drop(&mut self) {
        self.0.state.lock().abandoned = true;
        self.0.changed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    fn n(x: usize) -> NonZeroUsize {
        NonZeroUsize::new(x).unwrap()
    }

    #[test]
    fn results_come_in_input_order_whatever_order_workers_finish_in() {
        let items: Vec<u64> = (0..50).collect();
        let got: Vec<(usize, u64)> = ordered_map(
            items,
            n(4),
            n(8),
            |x| {
                // Early items take longest, so later ones finish first.
                std::thread::sleep(Duration::from_micros((50 - x) * 100));
                x * 10
            },
            |it| it.collect(),
        );
        assert_eq!(got, (0..50).map(|i| (i as usize, i * 10)).collect::<Vec<_>>());
    }

    #[test]
    fn workers_never_run_more_than_the_window_ahead_of_the_consumer() {
        let started = AtomicUsize::new(0);
        let most_ahead = AtomicUsize::new(0);
        let taken = AtomicUsize::new(0);
        ordered_map(
            (0..40).collect::<Vec<usize>>(),
            n(3),
            n(5),
            |i| {
                started.fetch_add(1, Ordering::SeqCst);
                most_ahead.fetch_max(i - taken.load(Ordering::SeqCst), Ordering::SeqCst);
                i
            },
            |it| {
                for (i, _) in it {
                    taken.store(i + 1, Ordering::SeqCst);
                    // A slow consumer: the workers would race ahead if not held.
                    std::thread::sleep(Duration::from_millis(1));
                }
            },
        );
        assert_eq!(started.load(Ordering::SeqCst), 40);
        // The consumer has taken item `taken - 1`, so items up to
        // `taken - 1 + 5` may be started, and not one more.
        assert!(most_ahead.load(Ordering::SeqCst) <= 5, "{most_ahead:?}");
    }

    #[test]
    fn a_worker_that_panics_makes_the_consumer_panic_instead_of_waiting_forever() {
        let (done, finished) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let outcome = std::panic::catch_unwind(|| {
                ordered_map(
                    (0..10).collect::<Vec<usize>>(),
                    n(2),
                    n(4),
                    |i| {
                        assert_ne!(i, 3, "a bug in step 1");
                        i
                    },
                    |it| it.count(),
                )
            });
            let _ = done.send(outcome.is_err());
        });
        let panicked = finished
            .recv_timeout(Duration::from_secs(30))
            .expect("the pipeline hung after a worker panicked");
        assert!(panicked);
    }

    #[test]
    fn a_buffer_handed_back_is_reused_empty() {
        let pool = BufferPool::default();
        let mut a = pool.take(100);
        a.extend_from_slice(&[7; 100]);
        let at = a.as_ptr();
        pool.give(a);
        let b = pool.take(50);
        assert!(b.is_empty() && b.capacity() >= 100);
        assert_eq!(b.as_ptr(), at);
    }

    #[test]
    fn a_consumer_that_stops_early_releases_the_workers() {
        let calls = AtomicUsize::new(0);
        let first = ordered_map(
            (0..1000).collect::<Vec<usize>>(),
            n(2),
            n(4),
            |i| {
                calls.fetch_add(1, Ordering::SeqCst);
                i
            },
            |it| it.next(),
        );
        assert_eq!(first, Some((0, 0)));
        assert!(calls.load(Ordering::SeqCst) < 10);
    }
}
