//! Buffer readback without blocking: `map_async` is requested once and its completion is a
//! [`ReadbackWait`], which a caller either awaits (the browser: the map resolves on the event
//! loop, nothing may block) or waits on with `device.poll` (native).

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use super::GpuError;

/// The outcome of one `map_async` and the task waiting for it.
#[derive(Default)]
struct Signal {
    result: Option<Result<(), String>>,
    waker: Option<Waker>,
}

/// A `map_async` in flight. Cloning shares it. As a future it resolves when the mapping is done
/// (or failed); [`ReadbackWait::wait_blocking`] polls the device until then (native only).
#[derive(Clone)]
pub struct ReadbackWait {
    signal: Arc<Mutex<Signal>>,
    /// Polled natively (in the browser the event loop completes the mapping).
    #[cfg_attr(target_arch = "wasm32", allow(dead_code))]
    device: wgpu::Device,
    /// The submit that writes the buffer: a native wait polls until it is done, not until
    /// every later submit is (a step recorded ahead may already be queued behind it).
    #[cfg_attr(target_arch = "wasm32", allow(dead_code))]
    after: Option<wgpu::SubmissionIndex>,
}

impl std::fmt::Debug for ReadbackWait {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadbackWait")
            .field("ready", &self.is_ready())
            .finish()
    }
}

impl ReadbackWait {
    /// Request the mapping of `buf[..bytes]` for reading. The copy into `buf` must already be
    /// submitted.
    pub fn request(device: &wgpu::Device, buf: &wgpu::Buffer, bytes: u64) -> ReadbackWait {
        Self::request_after(device, buf, bytes, None)
    }

    /// [`ReadbackWait::request`] for what submit `after` writes: waiting natively polls until
    /// that submit is done, without waiting for later ones (`None`: the whole queue).
    pub fn request_after(
        device: &wgpu::Device,
        buf: &wgpu::Buffer,
        bytes: u64,
        after: Option<wgpu::SubmissionIndex>,
    ) -> ReadbackWait {
        let signal = Arc::new(Mutex::new(Signal::default()));
        let s2 = signal.clone();
        buf.slice(..bytes).map_async(wgpu::MapMode::Read, move |r| {
            if let Ok(mut s) = s2.lock() {
                s.result = Some(r.map_err(|e| e.to_string()));
                if let Some(w) = s.waker.take() {
                    w.wake();
                }
            }
        });
        ReadbackWait {
            signal,
            device: device.clone(),
            after,
        }
    }

    /// Whether the mapping has completed (successfully or not).
    pub fn is_ready(&self) -> bool {
        self.signal.lock().is_ok_and(|s| s.result.is_some())
    }

    /// The mapping's outcome, once ready.
    pub fn result(&self) -> Option<Result<(), GpuError>> {
        let s = self.signal.lock().ok()?;
        s.result
            .as_ref()
            .map(|r| r.clone().map_err(GpuError::Readback))
    }

    /// Poll the device until the mapping completes. In the browser nothing can complete while
    /// this thread is busy, so there it fails at once unless the mapping is already done.
    pub fn wait_blocking(&self) -> Result<(), GpuError> {
        #[cfg(not(target_arch = "wasm32"))]
        for _ in 0..10_000 {
            if let Some(r) = self.result() {
                return r;
            }
            // Another thread polling the same device may be running our callback: poll until
            // it has.
            self.device
                .poll(wgpu::PollType::Wait {
                    submission_index: self.after.clone(),
                    timeout: None,
                })
                .map_err(|e| GpuError::Readback(e.to_string()))?;
            if let Some(r) = self.result() {
                return r;
            }
            std::thread::sleep(std::time::Duration::from_micros(100));
        }
        match self.result() {
            Some(r) => r,
            None if cfg!(target_arch = "wasm32") => Err(GpuError::Readback(
                "a GPU readback cannot be waited for synchronously in the browser \
                 (use Engine::step_begin / step_resume and await the readback)"
                    .into(),
            )),
            None => Err(GpuError::Readback("mapping did not complete".into())),
        }
    }
}

impl Future for ReadbackWait {
    type Output = Result<(), GpuError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if let Some(r) = self.result() {
            return Poll::Ready(r);
        }
        // Natively the callback only runs inside `device.poll`: give it a chance.
        #[cfg(not(target_arch = "wasm32"))]
        {
            let _ = self.device.poll(wgpu::PollType::Poll);
            if let Some(r) = self.result() {
                return Poll::Ready(r);
            }
        }
        match self.signal.lock() {
            Ok(mut s) => {
                if let Some(r) = s.result.as_ref() {
                    return Poll::Ready(r.clone().map_err(GpuError::Readback));
                }
                s.waker = Some(cx.waker().clone());
            }
            Err(e) => return Poll::Ready(Err(GpuError::Readback(e.to_string()))),
        }
        // Natively nothing else polls the device for us: ask to be polled again.
        #[cfg(not(target_arch = "wasm32"))]
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

/// Copy the mapped `buf[..bytes]` out and unmap it (the mapping must be complete).
pub fn take_mapped(buf: &wgpu::Buffer, bytes: u64) -> Result<Vec<u8>, GpuError> {
    let out = buf
        .slice(..bytes)
        .get_mapped_range()
        .map_err(|e| GpuError::Readback(e.to_string()))?
        .to_vec();
    buf.unmap();
    Ok(out)
}
