//! Splitting work across the `ComputeTaskPool`.

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
mod overhead {
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
