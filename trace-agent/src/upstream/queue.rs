//! The bounded queue between the pipeline and the network: bounded in payloads **and** in
//! bytes; pushing never blocks.
//!
//! Rule when full: the **oldest** queued payloads are evicted until the new one fits (and
//! counted by the caller as [`DropReason::QueueFull`](super::DropReason::QueueFull)). Fresh
//! data is worth more than old data once the destination is back, and a stalled destination
//! then costs at most the bound in memory. A single payload larger than the whole byte bound
//! is refused ([`Push::TooLarge`]).

use std::collections::VecDeque;
use std::pin::pin;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Instant;

use tokio::sync::Notify;

/// What happened to a pushed item.
#[derive(Debug)]
pub(crate) enum Push<T> {
    /// Queued; `evicted` were the oldest items removed to make room.
    Accepted {
        /// Items evicted (oldest first).
        evicted: Vec<T>,
    },
    /// Larger than the byte bound on its own: not queued.
    TooLarge(T),
    /// The queue is closed (shutdown): not queued.
    Closed(T),
}

#[derive(Debug)]
struct Inner<T> {
    items: VecDeque<(T, usize)>,
    bytes: usize,
    closed: bool,
}

/// A multi-producer, multi-consumer queue bounded by item count and total bytes.
#[derive(Debug)]
pub(crate) struct BoundedQueue<T> {
    inner: Mutex<Inner<T>>,
    notify: Notify,
    /// Signalled when an item leaves (for producers waiting for room).
    room: Condvar,
    max_items: usize,
    max_bytes: usize,
}

impl<T> BoundedQueue<T> {
    /// A queue of at most `max_items` items and `max_bytes` bytes (both at least 1).
    pub(crate) fn new(max_items: usize, max_bytes: usize) -> Self {
        Self {
            inner: Mutex::new(Inner {
                items: VecDeque::new(),
                bytes: 0,
                closed: false,
            }),
            notify: Notify::new(),
            room: Condvar::new(),
            max_items: max_items.max(1),
            max_bytes: max_bytes.max(1),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner<T>> {
        // A poisoned lock only means a panic elsewhere; the queue itself stays consistent.
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Adds `item` of `bytes` bytes, evicting the oldest items if needed. Never blocks.
    pub(crate) fn push(&self, item: T, bytes: usize) -> Push<T> {
        let mut inner = self.lock();
        if inner.closed {
            return Push::Closed(item);
        }
        if bytes > self.max_bytes {
            return Push::TooLarge(item);
        }
        let mut evicted = Vec::new();
        while inner.items.len() >= self.max_items || inner.bytes + bytes > self.max_bytes {
            match inner.items.pop_front() {
                Some((old, b)) => {
                    inner.bytes -= b;
                    evicted.push(old);
                }
                None => break,
            }
        }
        inner.items.push_back((item, bytes));
        inner.bytes += bytes;
        drop(inner);
        self.notify.notify_one();
        Push::Accepted { evicted }
    }

    /// The next item; waits while the queue is empty. `None` once it is closed and empty.
    pub(crate) async fn pop(&self) -> Option<T> {
        loop {
            let mut notified = pin!(self.notify.notified());
            notified.as_mut().enable();
            {
                let mut inner = self.lock();
                if let Some((item, b)) = inner.items.pop_front() {
                    inner.bytes -= b;
                    let more = !inner.items.is_empty();
                    drop(inner);
                    self.room.notify_all();
                    if more {
                        // Pass the wake-up on: another consumer may be waiting.
                        self.notify.notify_one();
                    }
                    return Some(item);
                }
                if inner.closed {
                    return None;
                }
            }
            notified.await;
        }
    }

    /// Whether an item of `bytes` fits now without evicting (an empty queue takes anything).
    pub(crate) fn fits(&self, bytes: usize) -> bool {
        let inner = self.lock();
        inner.items.is_empty() || (inner.items.len() < self.max_items && inner.bytes + bytes <= self.max_bytes)
    }

    /// Waits (blocking the calling thread: never call it on a runtime worker) until an item
    /// of `bytes` fits without evicting anything, the queue is closed, or `deadline` passes;
    /// returns whether it fits. An empty queue always fits.
    pub(crate) fn wait_for_room(&self, bytes: usize, deadline: Instant) -> bool {
        let mut inner = self.lock();
        loop {
            let full = inner.items.len() >= self.max_items || inner.bytes + bytes > self.max_bytes;
            if !full || inner.items.is_empty() || inner.closed {
                return !full || inner.items.is_empty();
            }
            let Some(left) = deadline.checked_duration_since(Instant::now()).filter(|d| !d.is_zero()) else {
                return false;
            };
            inner = self
                .room
                .wait_timeout(inner, left)
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .0;
        }
    }

    /// Refuses further pushes; consumers drain what is queued, then get `None`.
    pub(crate) fn close(&self) {
        self.lock().closed = true;
        self.notify.notify_waiters();
        self.room.notify_all();
    }

    /// Removes and returns everything still queued.
    pub(crate) fn drain(&self) -> Vec<T> {
        let mut inner = self.lock();
        inner.bytes = 0;
        let out = inner.items.drain(..).map(|(t, _)| t).collect();
        drop(inner);
        self.room.notify_all();
        out
    }

    /// `(items, bytes)` queued now.
    pub(crate) fn depth(&self) -> (usize, usize) {
        let inner = self.lock();
        (inner.items.len(), inner.bytes)
    }

    /// `(max_items, max_bytes)`.
    pub(crate) fn capacity(&self) -> (usize, usize) {
        (self.max_items, self.max_bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn evicted<T: std::fmt::Debug>(p: Push<T>) -> Vec<T> {
        match p {
            Push::Accepted { evicted } => evicted,
            other => panic!("not accepted: {other:?}"),
        }
    }

    #[test]
    fn full_in_items_evicts_the_oldest() {
        let q = BoundedQueue::new(2, 1000);
        assert!(evicted(q.push(1, 10)).is_empty());
        assert!(evicted(q.push(2, 10)).is_empty());
        assert_eq!(evicted(q.push(3, 10)), vec![1]);
        assert_eq!(q.depth(), (2, 20));
    }

    #[test]
    fn full_in_bytes_evicts_as_many_as_needed() {
        let q = BoundedQueue::new(10, 100);
        for i in 0..4 {
            q.push(i, 25);
        }
        assert_eq!(evicted(q.push(9, 60)), vec![0, 1, 2]);
        assert_eq!(q.depth(), (2, 85));
        assert!(matches!(q.push(10, 101), Push::TooLarge(10)));
        assert_eq!(q.depth(), (2, 85), "a refused item evicts nothing");
    }

    #[test]
    fn a_producer_waits_for_room_until_a_consumer_pops_or_the_deadline() {
        let q = std::sync::Arc::new(BoundedQueue::new(2, 1000));
        q.push(1, 10);
        assert!(q.wait_for_room(10, Instant::now()), "room: no wait");
        q.push(2, 10);
        let start = Instant::now();
        assert!(
            !q.wait_for_room(10, start + std::time::Duration::from_millis(20)),
            "full until the deadline"
        );
        let consumer = {
            let q = std::sync::Arc::clone(&q);
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
                rt.block_on(q.pop())
            })
        };
        assert!(q.wait_for_room(10, Instant::now() + std::time::Duration::from_secs(30)));
        assert_eq!(consumer.join().unwrap(), Some(1));
        assert!(evicted(q.push(3, 10)).is_empty(), "fits without evicting");
    }

    #[tokio::test]
    async fn pop_waits_then_close_drains_and_ends() {
        let q = std::sync::Arc::new(BoundedQueue::new(4, 100));
        let consumer = {
            let q = std::sync::Arc::clone(&q);
            tokio::spawn(async move {
                let mut got = Vec::new();
                while let Some(x) = q.pop().await {
                    got.push(x);
                }
                got
            })
        };
        q.push(1, 1);
        q.push(2, 1);
        tokio::task::yield_now().await;
        q.close();
        assert!(matches!(q.push(3, 1), Push::Closed(3)));
        assert_eq!(consumer.await.unwrap(), vec![1, 2]);
        assert_eq!(q.depth(), (0, 0));
    }
}
