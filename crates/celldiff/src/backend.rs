//! Device (backend) selection and thread control.
//!
//! The CPU backend is chosen at compile time by a cargo feature: `flex` (default; Burn's
//! pure-Rust CPU backend on the `gemm` crate) or `ndarray` (optionally with
//! `openblas-system`). The `cuda` feature adds Burn's CubeCL CUDA backend, selected at run time
//! with `--device cuda`. See the README for the measured trade-off.
//!
//! Threads: [`set_threads`] sizes the one global rayon pool that Burn's CPU backend and
//! celldiff's kernels share; [`in_pool`] runs a whole job on one of its workers, which the CLI
//! does for every command (15–21 % faster training at 2 threads, docs/RESULTS.md). Library
//! users get the same speed by wrapping their work in [`in_pool`]; it changes which thread runs
//! the work, not what is computed.

use burn::tensor::Device;

use crate::error::{Error, Result};

/// Which device to run on.
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceChoice {
    /// CUDA if compiled in, else the CPU backend.
    #[default]
    Auto,
    /// The compiled-in CPU backend.
    Cpu,
    /// NVIDIA GPU 0 (needs the `cuda` feature).
    #[cfg_attr(feature = "clap", value(alias = "gpu"))]
    Cuda,
}

/// The CPU device of the compiled-in CPU backend.
pub fn cpu_device() -> Device {
    #[cfg(feature = "flex")]
    {
        Device::flex()
    }
    #[cfg(all(not(feature = "flex"), feature = "ndarray"))]
    {
        // Burn 0.22 deprecates burn-ndarray in favour of flex; the feature is kept so that
        // the backends can be compared (docs/RESULTS.md).
        #[allow(deprecated)]
        Device::ndarray()
    }
    #[cfg(all(not(feature = "flex"), not(feature = "ndarray")))]
    {
        Device::default()
    }
}

/// Whether `device` is the compiled-in CPU backend's device (tensors live in host memory, so
/// reading them back is a copy, not a transfer).
pub fn is_cpu(device: &Device) -> bool {
    *device == cpu_device()
}

/// Resolves a [`DeviceChoice`] to a Burn device. `Auto` is GPU 0 when the binary has CUDA and
/// `cuda_unavailable` (with the `cuda` feature) finds nothing missing, else the CPU backend.
///
/// # Errors
/// [`Error::Param`] if `Cuda` is requested but celldiff was built without the `cuda` feature,
/// or the CUDA driver, NVRTC or a GPU is missing (the message says which).
pub fn device(choice: DeviceChoice) -> Result<Device> {
    match choice {
        DeviceChoice::Cpu => Ok(cpu_device()),
        DeviceChoice::Cuda => {
            #[cfg(feature = "cuda")]
            {
                match cuda_unavailable() {
                    None => Ok(Device::cuda(0)),
                    Some(why) => Err(Error::Param(format!(
                        "the CUDA device cannot be used: {why}"
                    ))),
                }
            }
            #[cfg(not(feature = "cuda"))]
            {
                Err(Error::Param(
                    "the CUDA device needs a build with the cargo feature `cuda` (see README)"
                        .into(),
                ))
            }
        }
        DeviceChoice::Auto => {
            #[cfg(feature = "cuda")]
            {
                Ok(match cuda_unavailable() {
                    None => Device::cuda(0),
                    Some(_) => cpu_device(),
                })
            }
            #[cfg(not(feature = "cuda"))]
            {
                Ok(cpu_device())
            }
        }
    }
}

thread_local! {
    /// Set inside [`with_generic_kernels`].
    static GENERIC_KERNELS: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f` with celldiff's own CPU kernels switched off on this thread: the fused dense layer
/// (GEMM + bias + activation, `models::fused`), the fused Adam step (`optim`), the one-pass EMA
/// blend (`models::ema`) and the vectorised SiLU of the sampling loop. Inside, every layer runs
/// Burn's generic tensor operations, the path all layers take on `--device cuda` (where those
/// kernels never apply), so tests can check on a CPU that both paths compute the same model,
/// values and gradients (`models/fused/tests.rs`). The setting is restored when `f` returns or
/// panics. Work `f` sends to other threads is not affected; the kernels are chosen on the
/// calling thread.
pub fn with_generic_kernels<T>(f: impl FnOnce() -> T) -> T {
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            GENERIC_KERNELS.with(|g| g.set(self.0));
        }
    }
    let _restore = Restore(GENERIC_KERNELS.with(|g| g.replace(true)));
    f()
}

/// Whether celldiff's own CPU kernels may run on this thread (false inside
/// [`with_generic_kernels`]); they apply only to `f32` tensors of the flex CPU device anyway.
pub fn own_kernels_enabled() -> bool {
    !GENERIC_KERNELS.with(|g| g.get())
}

/// Why CUDA cannot be used on this machine, or `None` when the NVIDIA driver library
/// (`libcuda.so`), NVRTC (`libnvrtc.so`, which compiles the kernels) and at least one GPU are
/// there. Burn's CUDA runtime loads these on a worker thread and panics there when one is
/// missing; this checks first, through the same binding (cudarc), so that the user gets a
/// named error instead.
#[cfg(feature = "cuda")]
pub fn cuda_unavailable() -> Option<String> {
    // SAFETY: `is_culib_present` only tries to dlopen the library by its usual names.
    if !unsafe { cudarc::driver::sys::is_culib_present() } {
        return Some(
            "the NVIDIA driver library (libcuda.so) was not found: is there an NVIDIA GPU and \
             driver here? (its folder must be on LD_LIBRARY_PATH)"
                .into(),
        );
    }
    // SAFETY: as above, for NVRTC.
    if !unsafe { cudarc::nvrtc::sys::is_culib_present() } {
        return Some(
            "NVRTC (libnvrtc.so, from the CUDA toolkit) was not found: add its folder (e.g. \
             /usr/local/cuda/lib64) to LD_LIBRARY_PATH and set CUDA_PATH"
                .into(),
        );
    }
    match cudarc::driver::result::init().and_then(|()| cudarc::driver::result::device::get_count())
    {
        Ok(n) if n > 0 => None,
        Ok(_) => Some("the CUDA driver sees no GPU".into()),
        Err(e) => Some(format!("the CUDA driver did not start ({e:?})")),
    }
}

/// Name of the compiled-in CPU backend (`"flex"`, `"ndarray"`, `"ndarray+openblas"`).
pub fn cpu_backend_name() -> &'static str {
    if cfg!(feature = "flex") {
        "flex"
    } else if cfg!(feature = "openblas-system") {
        "ndarray+openblas"
    } else if cfg!(feature = "ndarray") {
        "ndarray"
    } else {
        "none"
    }
}

/// Sets the number of CPU threads used by the CPU backends and celldiff's own parallel code
/// (the global rayon pool) and returns the pool's size. Call once, before any work; once the
/// pool exists, later calls leave it as it is. `None` = all available cores.
///
/// # Errors
/// [`Error::Param`] if the worker threads cannot be started (e.g. `n` threads of 16 MiB stack
/// each do not fit under a memory limit), naming `n` and the operating system's reason.
pub fn set_threads(n: Option<usize>) -> Result<usize> {
    let n = n.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    // Refuse before spawning anything when the stacks alone would take more than half of the
    // address-space limit (`ulimit -v`): threads that did start would otherwise die (and abort
    // the process) allocating their signal stacks once the limit is reached.
    #[cfg(any(target_os = "linux", target_os = "android"))]
    if let Some(limit) = rustix::process::getrlimit(rustix::process::Resource::As).current {
        let need = (n as u64).saturating_mul(WORKER_STACK_BYTES as u64);
        if need > limit / 2 {
            return Err(Error::Param(format!(
                "cannot start {n} worker threads: each needs a {} MiB stack, {} MiB in all, \
                 more than half of the address-space limit of {} MiB (ulimit -v); use fewer \
                 threads (--threads)",
                WORKER_STACK_BYTES >> 20,
                need >> 20,
                limit >> 20
            )));
        }
    }
    if let Err(e) = rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .stack_size(WORKER_STACK_BYTES)
        .build_global()
    {
        let msg = e.to_string();
        // rayon's ErrorKind is private; its message for an existing pool is a fixed string.
        if !msg.contains("already been initialized") {
            return Err(Error::Param(format!(
                "cannot start {n} worker threads ({msg}): each needs a {} MiB stack; use fewer \
                 threads (--threads)",
                WORKER_STACK_BYTES >> 20
            )));
        }
    }
    Ok(rayon::current_num_threads())
}

/// Stack of each rayon worker: 16 MiB (the main thread's usual 8 MiB, doubled), since
/// [`in_pool`] runs whole commands on a worker instead of the main thread.
const WORKER_STACK_BYTES: usize = 16 << 20;

/// Runs `f` on a worker thread of the global rayon pool (the one [`set_threads`] sizes) and
/// returns its result; the calling thread sleeps until then.
///
/// Why: a parallel operation started from a thread outside the pool (the main thread) is
/// queued for the workers, wakes them and blocks on a latch until they finish, so each of the
/// hundreds of parallel GEMMs and element-wise passes of a training step costs two thread
/// hand-offs, and the pool's `n` workers plus the main thread share `n` cores. Started on a
/// worker, the same operation begins on the calling worker at once and the others steal the
/// rest (rayon's work stealing). `perf` of `celldiff bench` (2 threads) showed the scheduler
/// and the latch waits at ~15 % of the denoiser training time before this (docs/RESULTS.md).
/// Panics in `f` propagate to the caller, as from [`rayon::scope`].
pub fn in_pool<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    if rayon::current_thread_index().is_some() {
        return f();
    }
    rayon::scope(|_| f())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The closure runs on a worker of the global pool (not the calling test thread), its
    /// result comes back, and a nested call runs in place.
    #[test]
    fn set_threads_keeps_an_existing_pool() {
        // Whichever call builds the global pool first, a second call is not an error.
        let first = set_threads(Some(2)).unwrap();
        assert_eq!(set_threads(Some(3)).unwrap(), first);
    }

    #[test]
    fn in_pool_runs_on_a_worker_and_returns_the_result() {
        assert!(rayon::current_thread_index().is_none());
        let caller = std::thread::current().id();
        let (index, other_thread, nested) = in_pool(|| {
            let here = std::thread::current().id();
            let nested = in_pool(|| std::thread::current().id() == here);
            (rayon::current_thread_index(), here != caller, nested)
        });
        assert!(index.is_some());
        assert!(other_thread && nested);
    }
}
