//! Per-kernel GPU timestamps (`CHORD_GPU_PROFILE=1` on a device with `TIMESTAMP_QUERY` and
//! `TIMESTAMP_QUERY_INSIDE_PASSES`): a timestamp is written after every dispatch (group) of a
//! step, each labelled with the kind of kernel it ends; the difference between consecutive
//! timestamps is charged to that label. Steps of one row (decode) and of several (prefill) are
//! tallied apart, and [`Profiler::report`] prints µs per step for each kind.
//!
//! The first timestamp of every compute pass is labelled `(idle before pass)`: with several
//! submits per step it measures how long the GPU waited for the CPU between them.

use std::collections::BTreeMap;

use super::{GpuContext, GpuError};

/// Most timestamps per step (`wgpu::QUERY_SET_MAX_QUERIES`).
const MAX_QUERIES: u32 = 4096;

/// Label of a pass's first timestamp (the time since the previous pass's last dispatch).
pub const IDLE: &str = "(idle before pass)";

/// The GPU's wait from one step's last timestamp to the next step's first (readback, sampling,
/// the schedule and recording up to the first submit): tallied apart from the GPU work.
pub const BETWEEN: &str = "(idle between steps)";

#[derive(Default, Debug, Clone)]
pub struct Tally {
    /// Steps tallied.
    pub steps: u64,
    /// Kind → (total ns, dispatch groups).
    pub kinds: BTreeMap<&'static str, (f64, u64)>,
    /// GPU idle time (ns) before each of these steps since the step before.
    pub between: Vec<f64>,
}

impl Tally {
    /// Total GPU ns per step, idle gaps between passes included.
    pub fn ns_per_step(&self) -> f64 {
        let total: f64 = self.kinds.values().map(|(ns, _)| ns).sum();
        total / self.steps.max(1) as f64
    }
}

/// Timestamp queries of the step being recorded, and the tallies so far.
pub struct Profiler {
    set: wgpu::QuerySet,
    resolve: wgpu::Buffer,
    read: wgpu::Buffer,
    /// Label of each timestamp written this step (index = query index).
    labels: Vec<&'static str>,
    /// Nanoseconds per timestamp tick.
    period_ns: f64,
    pub decode: Tally,
    pub prefill: Tally,
    /// Last timestamp of the previous step (ticks), for the idle time between steps.
    last_tick: Option<u64>,
}

impl Profiler {
    /// A profiler when the device can write timestamps inside compute passes.
    pub fn new(ctx: &GpuContext) -> Option<Profiler> {
        let need = wgpu::Features::TIMESTAMP_QUERY | wgpu::Features::TIMESTAMP_QUERY_INSIDE_PASSES;
        if !ctx.device.features().contains(need) {
            eprintln!("chord: CHORD_GPU_PROFILE: the device has no timestamps inside passes");
            return None;
        }
        let set = ctx.device.create_query_set(&wgpu::QuerySetDescriptor {
            label: Some("profile timestamps"),
            ty: wgpu::QueryType::Timestamp,
            count: MAX_QUERIES,
        });
        let bytes = 8 * MAX_QUERIES as u64;
        let resolve = ctx.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("profile resolve"),
            size: bytes,
            usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        });
        let read = ctx.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("profile readback"),
            size: bytes,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        Some(Profiler {
            set,
            resolve,
            read,
            labels: Vec::new(),
            period_ns: ctx.queue.get_timestamp_period() as f64,
            decode: Tally::default(),
            prefill: Tally::default(),
            last_tick: None,
        })
    }

    /// Write a timestamp ending the work of kind `label` (dropped once the set is full).
    pub fn stamp(&mut self, pass: &mut wgpu::ComputePass<'static>, label: &'static str) {
        let i = self.labels.len() as u32;
        if i < MAX_QUERIES {
            pass.write_timestamp(&self.set, i);
            self.labels.push(label);
        }
    }

    /// Timestamps written this step.
    pub fn pending(&self) -> usize {
        self.labels.len()
    }

    /// Resolve this step's timestamps into the readback buffer (recorded outside any pass).
    pub fn resolve(&self, enc: &mut wgpu::CommandEncoder) {
        let n = self.labels.len() as u32;
        if n == 0 {
            return;
        }
        enc.resolve_query_set(&self.set, 0..n, &self.resolve, 0);
        enc.copy_buffer_to_buffer(&self.resolve, 0, &self.read, 0, 8 * n as u64);
    }

    /// After the step's submit completed: read the timestamps back and tally them.
    pub fn collect(&mut self, ctx: &GpuContext, decode: bool) -> Result<(), GpuError> {
        let n = self.labels.len();
        if n == 0 {
            return Ok(());
        }
        let raw = super::forward::read_back_bytes(ctx, &self.read, 8 * n as u64)?;
        let ticks: &[u64] = bytemuck::cast_slice(&raw);
        let tally = if decode {
            &mut self.decode
        } else {
            &mut self.prefill
        };
        tally.add(&self.labels, ticks, self.period_ns);
        if let (Some(prev), Some(&first), Some(&last)) =
            (self.last_tick, ticks.first(), ticks.last())
        {
            let gap = first.saturating_sub(prev) as f64 * self.period_ns;
            tally.between.push(gap);
            self.last_tick = Some(last);
        } else {
            self.last_tick = ticks.last().copied();
        }
        self.labels.clear();
        Ok(())
    }

    /// Forget this step's timestamps (a step that was not collected).
    pub fn clear(&mut self) {
        self.labels.clear();
        self.last_tick = None;
    }

    /// The tallies as tables of µs per step for each kind.
    pub fn report(&self) -> String {
        let mut s = String::new();
        for (what, t) in [("decode (1 row)", &self.decode), ("prefill", &self.prefill)] {
            if t.steps == 0 {
                continue;
            }
            s += &format!(
                "gpu timestamps, {what} steps: {} steps, {:.1} µs GPU per step\n",
                t.steps,
                t.ns_per_step() / 1e3
            );
            s += &t.table();
            let mut gaps = t.between.clone();
            if !gaps.is_empty() {
                gaps.sort_by(f64::total_cmp);
                s += &format!(
                    "{BETWEEN}: median {:.1} µs per step (not in the table; {} steps)\n",
                    gaps[gaps.len() / 2] / 1e3,
                    gaps.len()
                );
            }
        }
        s
    }
}

impl Tally {
    /// Charge each timestamp's difference from the previous one to its label (the first
    /// timestamp has none and only starts the clock).
    pub fn add(&mut self, labels: &[&'static str], ticks: &[u64], period_ns: f64) {
        self.steps += 1;
        for i in 1..labels.len().min(ticks.len()) {
            let dt = ticks[i].saturating_sub(ticks[i - 1]) as f64 * period_ns;
            let e = self.kinds.entry(labels[i]).or_insert((0.0, 0));
            e.0 += dt;
            e.1 += 1;
        }
    }

    /// One line per kind, most expensive first: µs per step, dispatch groups per step, µs each.
    pub fn table(&self) -> String {
        let steps = self.steps.max(1) as f64;
        let total = self.ns_per_step();
        let mut rows: Vec<_> = self.kinds.iter().collect();
        rows.sort_by(|a, b| b.1.0.total_cmp(&a.1.0));
        let mut s = String::from(
            "| kind | µs/step | share | per step | µs each |\n|---|---|---|---|---|\n",
        );
        for (k, (ns, count)) in rows {
            let per = ns / steps;
            s += &format!(
                "| {k} | {:.1} | {:.1} % | {:.0} | {:.2} |\n",
                per / 1e3,
                100.0 * per / total.max(1e-9),
                *count as f64 / steps,
                ns / (*count).max(1) as f64 / 1e3
            );
        }
        s
    }
}
