//! The adapter: what rgpu owns between AddDevice and RemoveDevice.
//!
//! States are types: an [`Adapter`] always exists after AddDevice; only while started does it
//! hold a [`Started`] — the Dxgkrnl interface, the mapped registers and the device memory — so
//! nothing can touch the device or allocate device memory on an adapter that is not started.
//! Stopping drops the `Started` value: its `Drop` quiesces the device, then its fields release
//! the fence page, the ring and the register mapping in reverse order of acquisition.
//!
//! The parts with their own invariants live in their own modules: [`address_space`] (ASIDs,
//! roots, owning processes), [`ring`], [`interrupt`] (fences, preemption, the ISR) and
//! [`hardware`] (the started state and the device's bring-up).
//!
//! Safe code only (`forbid(unsafe_code)`): the DDI entry layer (`crate::ddi`) decodes
//! Dxgkrnl's arguments and calls these methods with typed values.

#![forbid(unsafe_code)]

pub mod address_space;
pub mod hardware;
pub mod interrupt;
pub mod memory;
pub mod ring;

use core::sync::atomic::{AtomicBool, Ordering};

use dxgk::device::Enumerator;
use dxgk::handle::DxgkProcessHandle;
use dxgk::interface::{DxgkInterface, StartInfo};
use dxgk::irql::Passive;
use dxgk::pool::Pool;
use dxgk::{NtError, NtResult};
use dxgk_sys::DEVICE_OBJECT;
use rgpu_hw::regs;

use self::address_space::AddressSpaces;
use self::hardware::reset_and_identify;
pub use self::hardware::{Started, FENCE_PAGE_BYTES, REGISTER_TIMEOUT_US};
use self::interrupt::Fences;
pub use self::ring::RING_BYTES;
use crate::ddi::AdapterContext;
use crate::log_once::LoggedOnce;
use crate::paging::Aperture;
use crate::soft::RUN_BUDGET;
use rgpu_hw::RunState;

/// Per-adapter state, owned by Dxgkrnl's `MiniportDeviceContext` between AddDevice and
/// RemoveDevice.
pub struct Adapter {
    /// The pool routine resolved for this adapter (ExAllocatePool2 or the fallback).
    pub pool: Pool,
    /// The PDO Dxgkrnl passed to AddDevice.
    pub pdo: *mut DEVICE_OBJECT,
    /// Unsupported DDIs already logged for this adapter.
    pub logged: LoggedOnce,
    /// What the escape interface reports (allocations, paging, submissions, escapes).
    pub counters: crate::counters::Counters,
    /// The device's address spaces.
    spaces: AddressSpaces,
    /// Submission fences and preemption.
    fences: Fences,
    /// Set by DxgkDdiNotifySurpriseRemoval: the registers are gone, never touch them again.
    removed: AtomicBool,
    /// True while the adapter is in a low-power state (D1–D3).
    powered_down: AtomicBool,
    /// Whether rgpu told Dxgkrnl before StartDevice that it supports DMA remapping.
    pub remapping: memory::RemappingOptIn,
    /// Which bus enumerated the device (AddDevice asks the PDO): a root-enumerated device runs
    /// soft rgpu, which the caps asked before StartDevice must already say.
    pub enumerator: Enumerator,
    started: Option<Started>,
}

impl Adapter {
    /// A fresh adapter (AddDevice) for a device `enumerator` enumerated.
    pub fn new(pool: Pool, pdo: *mut DEVICE_OBJECT, enumerator: Enumerator) -> Self {
        Self {
            pool,
            pdo,
            logged: LoggedOnce::default(),
            counters: crate::counters::Counters::default(),
            spaces: AddressSpaces::default(),
            fences: Fences::default(),
            removed: AtomicBool::new(false),
            powered_down: AtomicBool::new(false),
            remapping: memory::RemappingOptIn::default(),
            enumerator,
            started: None,
        }
    }

    /// Whether the caps and placement answer for soft rgpu (docs/soft-rgpu.md, the soft-mode
    /// memory contract): once started, whether the adapter runs the in-driver model; before,
    /// whether the device is root-enumerated (what StartDevice will find: no register BAR).
    pub fn soft_caps(&self) -> bool {
        match &self.started {
            Some(s) => s.mmio.soft().is_some(),
            None => self.enumerator == Enumerator::Root,
        }
    }

    /// The started state, if the adapter is started.
    pub fn started(&self) -> Option<&Started> {
        self.started.as_ref()
    }

    /// The interface version DDIs answer for: the negotiated one once started, else rgpu's
    /// minimum (QueryAdapterInfo may come before StartDevice).
    pub fn interface_version(&self) -> u32 {
        self.started
            .as_ref()
            .map_or(crate::version::MINIMUM_INTERFACE_VERSION, |s| {
                s.interface_version()
            })
    }

    /// Starts the adapter (DxgkDdiStartDevice) with the interface and start information the
    /// entry layer decoded. PASSIVE_LEVEL. On failure everything acquired so far is released
    /// and the adapter stays stopped.
    /// `context` names this adapter for the soft engine thread (soft mode only).
    pub fn start(
        &mut self,
        iface: DxgkInterface,
        info: StartInfo,
        context: AdapterContext,
    ) -> NtResult<()> {
        let passive = Passive::check()?;
        if self.started.is_some() {
            rgpu_log!(error, "StartDevice: adapter already started");
            return Err(NtError::INVALID_DEVICE_STATE);
        }
        let version = iface
            .version()
            .min(crate::version::NEWEST_INTERFACE_VERSION);
        let (path, reason) = memory::select(&iface, version, self.remapping.offered());
        rgpu_log!(
            info,
            "StartDevice: memory: {}",
            memory::describe(path, reason)
        );
        self.started = Some(Started::bring_up(
            iface, info, &passive, path, &self.pool, context,
        )?);
        Ok(())
    }

    /// Stops the adapter (DxgkDdiStopDevice): releases everything StartDevice acquired.
    /// Idempotent: stopping a stopped adapter is a no-op.
    pub fn stop(&mut self) {
        if let Some(mut s) = self.started.take() {
            // The engine first: it reaches the pages returned below.
            drop(s.engine.take());
            // Quiesce first (unless surprise-removed: the registers are gone), then give the
            // device pages back to the pool and trim it: StopDevice returns everything.
            if !self.is_removed() {
                s.quiesce();
            }
            s.quiesce_on_drop = false;
            let pages = [s.fence.take(), s.ring_page.take()];
            if let Ok(passive) = Passive::check() {
                for page in pages.into_iter().flatten() {
                    // A page that cannot be returned is freed with it (dropped).
                    let _ = s.pool.put(&passive, page);
                }
                let stats = s.pool.stats();
                let trimmed = s.pool.trim(&passive, 0);
                rgpu_log!(
                    info,
                    "stopped: page pool trimmed {} page(s) ({} allocated, {} reused over this start)",
                    trimmed,
                    stats.allocated,
                    stats.hits
                );
            }
            drop(s);
        }
    }

    /// Halts the soft engine thread (no-op on hardware): PnP DDIs call this through `&self`
    /// before they take the adapter exclusively. PASSIVE_LEVEL.
    pub fn halt_engine(&self) {
        if let Some(engine) = self.started.as_ref().and_then(|s| s.engine.as_ref()) {
            engine.halt();
        }
    }

    /// The soft engine thread's work after a wake: runs the model over the adapter's memory,
    /// [`RUN_BUDGET`] units per device-lock hold, raising each asserted interrupt through
    /// DxgkCbSynchronizeExecution → [`Adapter::interrupt`], until the ring is idle, halted or
    /// `stop()` says the thread is ending. ≤ DISPATCH_LEVEL (the thread runs at PASSIVE).
    pub fn run_soft_engine(&self, stop: impl Fn() -> bool) {
        let Some(s) = self.hardware() else {
            return;
        };
        let Some(soft) = s.mmio.soft() else {
            return;
        };
        let memory = s.soft_memory();
        loop {
            let (outcome, asserted) = soft.run(&memory, RUN_BUDGET);
            if asserted {
                // Only fails when the interface lacks the callback (StartDevice checked it).
                let _ = s.iface.synchronize_execution(|isr| self.interrupt(isr));
            }
            let more = outcome.is_some_and(|o| o.state == RunState::BudgetExhausted);
            if !more || stop() {
                return;
            }
        }
    }

    /// Quiesces the device (ResetDevice, ResetFromTimeout): interrupts off, device reset. Only
    /// register writes, so it is safe at any IRQL and on the bugcheck path.
    pub fn reset_hardware(&self) {
        if let Some(s) = self.hardware() {
            s.quiesce();
        }
    }

    /// Reprograms the ring and the ASID roots after a reset (RestartFromTimeout, ResetEngine,
    /// power-up).
    pub fn restart_hardware(&self) -> NtResult<()> {
        let s = self.hardware().ok_or(NtError::INVALID_DEVICE_STATE)?;
        s.program_ring()?;
        for (asid, root) in self.spaces.roots() {
            program_root(s, asid, root);
        }
        self.fences.reset();
        Ok(())
    }

    /// The started state, unless the device was surprise-removed (then the registers are gone).
    fn hardware(&self) -> Option<&Started> {
        if self.removed.load(Ordering::Acquire) {
            return None;
        }
        self.started.as_ref()
    }

    /// DxgkDdiNotifySurpriseRemoval: from now on the device is not touched; Dxgkrnl follows with
    /// StopDevice and RemoveDevice, which release memory without register access.
    pub fn surprise_remove(&self) {
        self.removed.store(true, Ordering::Release);
    }

    /// True after a surprise removal.
    pub fn is_removed(&self) -> bool {
        self.removed.load(Ordering::Acquire)
    }

    /// DxgkDdiSetPowerState for the adapter: D1–D3 quiesce the device (its memory and the
    /// driver's state are kept) and end a soft engine's thread; D0 resets, identifies and
    /// reprograms it (ring, fence write-back, ASID roots) and starts the soft engine again.
    /// VidMm re-initializes the paging process's page tables after power-up.
    pub fn set_power(&self, d0: bool) -> NtResult<()> {
        let Some(s) = self.hardware() else {
            // Not started (or removed): nothing to program; remember the state.
            self.powered_down.store(!d0, Ordering::Release);
            return Ok(());
        };
        if d0 {
            reset_and_identify(&s.mmio)?;
            self.restart_hardware()?;
            self.resume_engine()?;
            self.powered_down.store(false, Ordering::Release);
        } else {
            s.quiesce();
            // The device is off: so is the soft engine's thread (started again at D0).
            self.end_engine();
            self.powered_down.store(true, Ordering::Release);
        }
        Ok(())
    }

    /// DxgkDdiResetFromTimeout: quiesces the device and, in soft mode, ends the engine thread
    /// (RestartFromTimeout starts a new one). PASSIVE_LEVEL.
    pub fn reset_from_timeout(&self) {
        self.reset_hardware();
        self.end_engine();
    }

    /// DxgkDdiRestartFromTimeout: reprograms the device after [`Adapter::reset_from_timeout`]
    /// and, in soft mode, starts the engine thread again. PASSIVE_LEVEL.
    pub fn restart_from_timeout(&self) -> NtResult<()> {
        self.restart_hardware()?;
        self.resume_engine()
    }

    /// Whether a soft engine thread runs: None on hardware (or when not started).
    pub fn soft_engine_running(&self) -> Option<bool> {
        let e = self.started.as_ref()?.engine.as_ref()?;
        Some(!e.is_halted())
    }

    /// Ends the soft engine's thread, if any (the device is quiesced first). PASSIVE_LEVEL.
    fn end_engine(&self) {
        if let Some(e) = self.hardware().and_then(|s| s.engine.as_ref()) {
            e.halt();
        }
    }

    /// Starts the soft engine's thread again, if it was ended. PASSIVE_LEVEL.
    fn resume_engine(&self) -> NtResult<()> {
        let Some(e) = self.hardware().and_then(|s| s.engine.as_ref()) else {
            return Ok(());
        };
        let passive = Passive::check()?;
        e.resume(&self.pool, &passive).inspect_err(|err| {
            rgpu_log!(
                error,
                "soft engine thread could not be started again: {}",
                err
            )
        })
    }

    /// True while in D1–D3.
    pub fn is_powered_down(&self) -> bool {
        self.powered_down.load(Ordering::Acquire)
    }

    /// Reserves a device ASID: 0 for the system paging process, 1..=15 for the others.
    /// STATUS_INSUFFICIENT_RESOURCES when all are in use (rgpu does not virtualize ASIDs).
    pub fn allocate_asid(&self, system: bool) -> NtResult<u8> {
        self.spaces.allocate(system)
    }

    /// Records Dxgkrnl's handle of the process that owns `asid` (CreateProcess), named in
    /// DMA_PAGE_FAULTED for faults in that address space.
    pub fn set_process_handle(&self, asid: u8, process: Option<DxgkProcessHandle>) {
        self.spaces.set_process(asid, process);
    }

    /// Returns an ASID from [`Adapter::allocate_asid`], disabling its root.
    pub fn free_asid(&self, asid: u8) {
        // Disable the device's root before the ASID can be handed out again.
        if let Some(s) = self.hardware() {
            s.mmio.write(regs::asid_root_entries(u32::from(asid)), 0);
        }
        self.spaces.release(asid);
    }

    /// Programs ASID `asid`'s root table (DxgkDdiSetRootPageTable; the context is idle).
    pub fn set_root(&self, asid: u8, root: u64, entries: u32) -> NtResult<()> {
        let s = self.hardware().ok_or(NtError::INVALID_DEVICE_STATE)?;
        let root = self.spaces.set_root(asid, root, entries);
        program_root(s, u32::from(asid), root);
        Ok(())
    }

    /// Soft rgpu's registry of aperture pages' CPU views (soft adapters, once started).
    pub fn aperture_views(&self) -> Option<&dxgk::aperture_views::ApertureViews> {
        self.started.as_ref().and_then(|s| s.views.as_ref())
    }

    /// The GART, once started.
    pub fn aperture(&self) -> Option<&Aperture> {
        self.started.as_ref().map(|s| &s.aperture)
    }

    /// Queues a DMA buffer at GPU VA `va` (`length` bytes) in `asid`, signalling `fence` with an
    /// interrupt when done (DxgkDdiSubmitCommandVirtual). Privileged for the paging context.
    pub fn submit(
        &self,
        va: u64,
        length: u32,
        asid: u8,
        privileged: bool,
        fence: u64,
    ) -> NtResult<()> {
        let s = self.hardware().ok_or(NtError::INVALID_DEVICE_STATE)?;
        let mut entry = rgpu_hw::ring::RingEntry::exec(va, length, asid);
        entry.buf_virtual = true;
        entry.privileged = privileged;
        entry.fence = true;
        entry.fence_irq = true;
        entry.fence_value = fence;
        let mut ring = s.ring.lock();
        ring.push(s.ring_page.as_ref(), &s.mmio, &entry)?;
        self.fences.set_submitted(fence as u32);
        s.wake_engine(ring.doorbell(&s.mmio));
        Ok(())
    }

    /// DxgkDdiPreemptCommand (DISPATCH_LEVEL), minimal but correct for a device that cannot stop
    /// inside a DMA buffer: nothing queued is abandoned. The request is answered with
    /// DMA_PREEMPTED once the ring has drained, LastCompletedFenceId being the last submitted
    /// fence, so VidSch resubmits nothing. A fence-only NOP entry re-signals the last submitted
    /// fence to raise the interrupt that reports it, also when the ring is already idle.
    ///
    /// rgpu does not declare PreemptionAware, so a real VidSch does not call this; the DDI is
    /// kept correct for schedulers that do, and for the day rgpu declares it.
    pub fn preempt(&self, preemption_fence: u32) -> NtResult<()> {
        let s = self.hardware().ok_or(NtError::INVALID_DEVICE_STATE)?;
        let mut ring = s.ring.lock();
        let entry = rgpu_hw::ring::RingEntry {
            fence: true,
            fence_irq: true,
            fence_value: u64::from(self.fences.submitted()),
            ..Default::default()
        };
        // Queue first, then publish the request: a full ring leaves no request behind.
        ring.push(s.ring_page.as_ref(), &s.mmio, &entry)?;
        self.fences.request_preemption(preemption_fence);
        s.wake_engine(ring.doorbell(&s.mmio));
        Ok(())
    }

    /// The last SubmissionFenceId reported completed (kept in software across resets).
    pub fn last_completed_fence(&self) -> u32 {
        self.fences.completed()
    }

    /// The last SubmissionFenceId queued on the ring.
    pub fn last_submitted_fence(&self) -> u32 {
        self.fences.submitted()
    }

    /// False when the engine is halted on a fault (or the adapter is stopped).
    pub fn engine_responsive(&self) -> bool {
        self.hardware()
            .is_some_and(|s| s.mmio.read(regs::STATUS) & regs::STATUS_HALTED == 0)
    }

    /// BeginExclusiveAccess: the scheduler is suspended; mask interrupts so nothing runs until
    /// EndExclusiveAccess. The ring is idle, so the device touches no system memory.
    pub fn begin_exclusive_access(&self) {
        if let Some(s) = self.hardware() {
            s.mmio.write(regs::INT_ENABLE, 0);
        }
    }

    /// EndExclusiveAccess: unmask interrupts again.
    pub fn end_exclusive_access(&self) {
        if let Some(s) = self.hardware() {
            s.mmio.write(regs::INT_ENABLE, regs::INT_MASK);
        }
    }
}

/// Writes one ASID's root registers.
fn program_root(s: &Started, asid: u32, root: address_space::Root) {
    s.mmio.write(regs::asid_root_lo(asid), root.address as u32);
    s.mmio
        .write(regs::asid_root_hi(asid), (root.address >> 32) as u32);
    s.mmio.write(regs::asid_root_entries(asid), root.entries);
}
