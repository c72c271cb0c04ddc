//! Splitting work across the `ComputeTaskPool`.
//!
//! Two ways to hand a job to the pool's threads:
//! * outside a step, each job is one `ComputeTaskPool::scope` (a few µs to wake the threads);
//! * during a step run under [`with_team`], the pool's threads are held by one scope for the
//!   whole step and spin between jobs, so the ~150 matrix products of a decode step are handed
//!   over in well under a microsecond each (llama.cpp's threads do the same between graph
//!   nodes). Nothing spins between steps, so a game sharing the pool keeps its threads.

use std::cell::Cell;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicUsize, Ordering};

use bevy_tasks::{ComputeTaskPool, TaskPool, TaskPoolBuilder};

/// Initialise the compute pool with `threads` workers (first call wins; later calls return the
/// existing pool). `threads == 0` means "all available cores".
pub fn init_compute_pool(threads: usize) -> &'static ComputeTaskPool {
    ComputeTaskPool::get_or_init(|| {
        let n = if threads == 0 {
            bevy_tasks::available_parallelism()
        } else {
            threads
        };
        // The calling thread also works inside `scope`, so n-1 helpers give n busy cores.
        TaskPoolBuilder::new()
            .num_threads(n.saturating_sub(1).max(1))
            .thread_name("chord-compute".into())
            .build()
    })
}

fn pool() -> &'static TaskPool {
    init_compute_pool(0)
}

/// Number of parts a job of `n_items` items (each costing about `cost` units) is split into.
/// Up to four parts per worker: the caller starts on the parts at once while the pool's threads
/// are still waking up, and with only one part per thread it would often finish both halves
/// before a helper arrived (decode went from 60 to 75 tok/s on SmolLM2, 2 threads).
fn n_parts(n_items: usize, cost: usize) -> usize {
    const MIN_WORK_PER_PART: usize = 32 * 1024;
    let threads = pool().thread_num() + 1;
    let by_work = (n_items.saturating_mul(cost) / MIN_WORK_PER_PART).max(1);
    (4 * threads).min(by_work).min(n_items).max(1)
}

/// One job for the team: `f(i)` for every part `i < n`, each part claimed by one thread.
struct Job<'a> {
    f: &'a (dyn Fn(usize) + Sync),
    n: usize,
    next: AtomicUsize,
    done: AtomicUsize,
}

impl Job<'_> {
    /// Claim and run parts until none are left.
    fn work(&self) {
        loop {
            let i = self.next.fetch_add(1, Ordering::Relaxed);
            if i >= self.n {
                return;
            }
            (self.f)(i);
            self.done.fetch_add(1, Ordering::Release);
        }
    }
}

/// The spinning team of one step.
struct Team {
    /// The job being run (null between jobs). Points to a `Job` on the leader's stack.
    current: AtomicPtr<Job<'static>>,
    /// Helpers inside `current`'s job; the leader waits for zero before the job goes away.
    users: AtomicUsize,
    stop: AtomicBool,
}

static TEAM: Team = Team {
    current: AtomicPtr::new(std::ptr::null_mut()),
    users: AtomicUsize::new(0),
    stop: AtomicBool::new(false),
};

/// Serializes teams: one step at a time may hold the pool's threads.
static TEAM_LOCK: Mutex<()> = Mutex::new(());

thread_local! {
    /// Whether this thread leads the running team (only the leader posts jobs; a job's own
    /// parts run their inner parallel loops serially).
    static LEADER: Cell<bool> = const { Cell::new(false) };
}

impl Team {
    /// A helper: spin for jobs until the team stops.
    fn help(&self) {
        let mut last: *mut Job<'static> = std::ptr::null_mut();
        let mut idle = 0u32;
        while !self.stop.load(Ordering::Acquire) {
            let p = self.current.load(Ordering::SeqCst);
            if p.is_null() || p == last {
                idle = idle.saturating_add(1);
                // Spin briefly (a job usually follows within microseconds), then let other
                // threads of the machine run.
                if idle < 20_000 {
                    std::hint::spin_loop();
                } else {
                    std::thread::yield_now();
                }
                continue;
            }
            // Announce, then re-check: the leader clears `current` and then waits for
            // `users == 0`, so either it sees us or we see the change (both SeqCst).
            self.users.fetch_add(1, Ordering::SeqCst);
            if self.current.load(Ordering::SeqCst) == p {
                // SAFETY: `p` is the leader's live `Job`: the leader keeps it alive until it
                // has cleared `current` and seen `users == 0`, and we are counted in `users`.
                unsafe { (*p).work() };
            }
            self.users.fetch_sub(1, Ordering::SeqCst);
            last = p;
            idle = 0;
        }
    }

    /// The leader: run `f(i)` for `i < n` on the team and wait for all of it.
    fn run(&self, n: usize, f: &(dyn Fn(usize) + Sync)) {
        let job = Job {
            f,
            n,
            next: AtomicUsize::new(0),
            done: AtomicUsize::new(0),
        };
        // SAFETY (lifetime erasure): helpers only dereference this pointer while it is
        // `current` and they are counted in `users`; below, the leader clears `current` and
        // waits for `users == 0` before `job` (and the borrows in `f`) go out of scope.
        let ptr = (&job as *const Job<'_>).cast_mut().cast::<Job<'static>>();
        self.current.store(ptr, Ordering::SeqCst);
        job.work();
        while job.done.load(Ordering::Acquire) < n {
            std::hint::spin_loop();
        }
        self.current.store(std::ptr::null_mut(), Ordering::SeqCst);
        while self.users.load(Ordering::SeqCst) != 0 {
            std::hint::spin_loop();
        }
    }
}

/// Run `f` (a step) with the pool's threads spinning for work between its parallel jobs.
/// Without helper threads (wasm32, a one-thread pool) or inside another team, `f` just runs.
pub fn with_team<R>(f: impl FnOnce() -> R) -> R {
    let helpers = pool().thread_num();
    if cfg!(target_arch = "wasm32") || helpers == 0 || LEADER.with(Cell::get) {
        return f();
    }
    let _guard = match TEAM_LOCK.try_lock() {
        Ok(g) => g,
        // A step that panicked left nothing behind but the poison flag.
        Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
        // Another thread's step holds the team: run with per-job scopes.
        Err(std::sync::TryLockError::WouldBlock) => return f(),
    };
    TEAM.stop.store(false, Ordering::SeqCst);
    let mut out = None;
    pool().scope(|s| {
        for _ in 0..helpers {
            s.spawn(async { TEAM.help() });
        }
        LEADER.with(|l| l.set(true));
        // Stop the helpers even if `f` unwinds.
        struct Stop;
        impl Drop for Stop {
            fn drop(&mut self) {
                LEADER.with(|l| l.set(false));
                TEAM.stop.store(true, Ordering::SeqCst);
            }
        }
        let _stop = Stop;
        out = Some(f());
    });
    match out {
        Some(r) => r,
        None => unreachable!("the scope ran the closure"),
    }
}

/// Run `f(range)` over contiguous sub-ranges of `0..n_items` in parallel.
/// `cost` is a rough per-item cost used to avoid threading tiny jobs.
pub fn for_ranges<F>(n_items: usize, cost: usize, f: F)
where
    F: Fn(std::ops::Range<usize>) + Sync,
{
    if n_items == 0 {
        return;
    }
    let parts = n_parts(n_items, cost);
    if parts == 1 {
        f(0..n_items);
        return;
    }
    let per = n_items.div_ceil(parts);
    if LEADER.with(Cell::get) {
        TEAM.run(parts, &|p| {
            let range = p * per..((p + 1) * per).min(n_items);
            if !range.is_empty() {
                f(range);
            }
        });
        return;
    }
    let f = &f;
    pool().scope(|s| {
        for p in 0..parts {
            let start = p * per;
            let end = ((p + 1) * per).min(n_items);
            if start < end {
                s.spawn(async move { f(start..end) });
            }
        }
    });
}

/// Split `data` into chunks of `chunk_len` elements (the last may be shorter) and run
/// `f(chunk_index, chunk)` on each, in parallel groups.
pub fn for_chunks_mut<T, F>(data: &mut [T], chunk_len: usize, cost_per_chunk: usize, f: F)
where
    T: Send,
    F: Fn(usize, &mut [T]) + Sync,
{
    if data.is_empty() || chunk_len == 0 {
        return;
    }
    let n_chunks = data.len().div_ceil(chunk_len);
    let parts = n_parts(n_chunks, cost_per_chunk);
    if parts == 1 {
        for (i, c) in data.chunks_mut(chunk_len).enumerate() {
            f(i, c);
        }
        return;
    }
    let per = n_chunks.div_ceil(parts);
    if LEADER.with(Cell::get) {
        // Each part takes its own group of chunks out of its slot.
        let groups: Vec<Mutex<Option<&mut [T]>>> = data
            .chunks_mut(per * chunk_len)
            .map(|g| Mutex::new(Some(g)))
            .collect();
        TEAM.run(groups.len(), &|g| {
            let group = groups[g].lock().ok().and_then(|mut slot| slot.take());
            for (i, c) in group
                .into_iter()
                .flat_map(|g| g.chunks_mut(chunk_len))
                .enumerate()
            {
                f(g * per + i, c);
            }
        });
        return;
    }
    let f = &f;
    pool().scope(|s| {
        for (g, group) in data.chunks_mut(per * chunk_len).enumerate() {
            s.spawn(async move {
                for (i, c) in group.chunks_mut(chunk_len).enumerate() {
                    f(g * per + i, c);
                }
            });
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn ranges_cover_everything_once() {
        let hits: Vec<AtomicUsize> = (0..1000).map(|_| AtomicUsize::new(0)).collect();
        for_ranges(1000, 1 << 20, |r| {
            for i in r {
                hits[i].fetch_add(1, Ordering::Relaxed);
            }
        });
        assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 1));
    }

    #[test]
    fn parts_run_once_each_with_their_data() {
        for n in [1usize, 7, 100, 1000] {
            let ranges = part_ranges(n, 1 << 20);
            assert_eq!(ranges.first().map(|r| r.start), Some(0));
            assert_eq!(ranges.last().map(|r| r.end), Some(n));
            assert!(ranges.windows(2).all(|w| w[0].end == w[1].start));
            let mut out = vec![0usize; n];
            let mut rest: &mut [usize] = &mut out;
            let mut parts = Vec::new();
            for r in &ranges {
                let (a, b) = rest.split_at_mut(r.len());
                parts.push((r.clone(), a));
                rest = b;
            }
            for_parts(
                parts,
                |i, (r, slice): (std::ops::Range<usize>, &mut [usize])| {
                    for (x, j) in slice.iter_mut().zip(r) {
                        *x += j + 1;
                        assert!(i < 1000);
                    }
                },
            );
            assert!(out.iter().enumerate().all(|(j, &x)| x == j + 1), "n {n}");
        }
    }

    #[test]
    fn chunks_get_their_index() {
        let mut v = vec![0usize; 103];
        for_chunks_mut(&mut v, 10, 1 << 20, |i, c| {
            c.iter_mut().for_each(|x| *x = i)
        });
        for (j, x) in v.iter().enumerate() {
            assert_eq!(*x, j / 10);
        }
    }
}

/// The ranges [`map_ranges`] / [`for_parts`] split `n_items` items (each costing about
/// `cost` units) into, in order.
pub fn part_ranges(n_items: usize, cost: usize) -> Vec<std::ops::Range<usize>> {
    if n_items == 0 {
        return Vec::new();
    }
    let per = n_items.div_ceil(n_parts(n_items, cost));
    (0..n_items)
        .step_by(per)
        .map(|a| a..(a + per).min(n_items))
        .collect()
}

/// `f(i, parts[i])` for every part, spread over the pool like [`map_ranges`]: each part (its
/// data moved in, e.g. the disjoint output slices of a [`part_ranges`] range) is run once.
pub fn for_parts<T, F>(parts: Vec<T>, f: F)
where
    T: Send,
    F: Fn(usize, T) + Sync,
{
    if parts.len() <= 1 {
        for (i, p) in parts.into_iter().enumerate() {
            f(i, p);
        }
        return;
    }
    let slots: Vec<Mutex<Option<T>>> = parts.into_iter().map(|p| Mutex::new(Some(p))).collect();
    let run = |i: usize| {
        if let Some(p) = slots[i].lock().ok().and_then(|mut slot| slot.take()) {
            f(i, p);
        }
    };
    if LEADER.with(Cell::get) {
        TEAM.run(slots.len(), &run);
        return;
    }
    let run = &run;
    pool().scope(|s| {
        for i in 0..slots.len() {
            s.spawn(async move { run(i) });
        }
    });
}

/// Like [`for_ranges`] but each part returns a value; results come back with their ranges,
/// in order.
pub fn map_ranges<R, F>(n_items: usize, cost: usize, f: F) -> Vec<(std::ops::Range<usize>, R)>
where
    R: Send + 'static,
    F: Fn(std::ops::Range<usize>) -> R + Sync,
{
    if n_items == 0 {
        return Vec::new();
    }
    let parts = n_parts(n_items, cost);
    if parts == 1 {
        return vec![(0..n_items, f(0..n_items))];
    }
    let per = n_items.div_ceil(parts);
    if LEADER.with(Cell::get) {
        let results: Vec<Mutex<Option<R>>> = (0..parts).map(|_| Mutex::new(None)).collect();
        TEAM.run(parts, &|p| {
            let range = p * per..((p + 1) * per).min(n_items);
            if !range.is_empty() {
                let r = f(range);
                if let Ok(mut slot) = results[p].lock() {
                    *slot = Some(r);
                }
            }
        });
        return results
            .into_iter()
            .enumerate()
            .filter_map(|(p, slot)| {
                let r = slot.into_inner().ok().flatten()?;
                Some((p * per..((p + 1) * per).min(n_items), r))
            })
            .collect();
    }
    let f = &f;
    pool().scope(|s| {
        for p in 0..parts {
            let range = p * per..((p + 1) * per).min(n_items);
            if !range.is_empty() {
                s.spawn(async move {
                    let r = f(range.clone());
                    (range, r)
                });
            }
        }
    })
}

#[cfg(test)]
mod team_tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn team_jobs_cover_everything_once_and_keep_order() {
        init_compute_pool(2);
        with_team(|| {
            assert!(LEADER.with(Cell::get), "the step's thread leads the team");
            for round in 0..500 {
                let n = 1 + round % 97;
                let hits: Vec<AtomicUsize> = (0..n).map(|_| AtomicUsize::new(0)).collect();
                for_ranges(n, 1 << 20, |r| {
                    for i in r {
                        hits[i].fetch_add(1, Ordering::Relaxed);
                    }
                });
                assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 1));
                let parts = map_ranges(n, 1 << 20, |r| r.clone().sum::<usize>());
                let mut next = 0;
                for (r, sum) in &parts {
                    assert_eq!(r.start, next, "ranges in order");
                    assert_eq!(*sum, r.clone().sum::<usize>());
                    next = r.end;
                }
                assert_eq!(next, n);
                let mut v = vec![usize::MAX; n * 3];
                for_chunks_mut(&mut v, 3, 1 << 20, |i, c| c.iter_mut().for_each(|x| *x = i));
                assert!(v.iter().enumerate().all(|(j, &x)| x == j / 3));
            }
        });
        assert!(!LEADER.with(Cell::get), "the team ended with the step");
    }

    #[test]
    fn nested_and_concurrent_teams_fall_back_to_plain_runs() {
        init_compute_pool(2);
        let total = AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..3 {
                s.spawn(|| {
                    with_team(|| {
                        with_team(|| {
                            for_ranges(64, 1 << 20, |r| {
                                total.fetch_add(r.len(), Ordering::Relaxed);
                            });
                        })
                    })
                });
            }
        });
        assert_eq!(total.load(Ordering::Relaxed), 3 * 64);
    }

    #[test]
    fn a_panicking_step_releases_the_team() {
        init_compute_pool(2);
        let r = std::panic::catch_unwind(|| with_team(|| panic!("step failed")));
        assert!(r.is_err());
        assert!(!LEADER.with(Cell::get));
        // The next step gets a team again and works.
        let n = with_team(|| {
            map_ranges(100, 1 << 20, |r| r.len())
                .iter()
                .map(|p| p.1)
                .sum::<usize>()
        });
        assert_eq!(n, 100);
    }
}

#[cfg(test)]
mod overhead {
    #[test]
    #[ignore]
    fn team_overhead() {
        super::init_compute_pool(2);
        let n = 200_000;
        let t = std::time::Instant::now();
        super::with_team(|| {
            for _ in 0..n {
                super::for_ranges(2, 1 << 30, |r| {
                    std::hint::black_box(r);
                });
            }
        });
        eprintln!(
            "team hand-off: {:.3} µs",
            t.elapsed().as_secs_f64() * 1e6 / n as f64
        );
    }

    #[test]
    #[ignore]
    fn scope_overhead() {
        super::init_compute_pool(2);
        let n = 20000;
        let t = std::time::Instant::now();
        for _ in 0..n {
            super::for_ranges(2, 1 << 30, |r| {
                std::hint::black_box(r);
            });
        }
        eprintln!(
            "scope round trip: {:.2} µs",
            t.elapsed().as_secs_f64() * 1e6 / n as f64
        );
    }
}
