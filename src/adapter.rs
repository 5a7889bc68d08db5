//! The adapter: what rgpu owns between AddDevice and RemoveDevice.
//!
//! States are types: an [`Adapter`] always exists after AddDevice; only while started does it
//! hold a [`Started`] — the Dxgkrnl interface, the mapped registers and the device memory — so
//! nothing can touch the device or allocate device memory on an adapter that is not started.
//! Stopping drops the `Started` value: its `Drop` quiesces the device, then its fields release
//! the fence page, the ring and the register mapping in reverse order of acquisition.

use dxgk::device::{DeviceInfo, Mmio};
use dxgk::interface::{DxgkInterface, InterfaceError};
use dxgk::irql::Passive;
use dxgk::memory::{DeviceMemory, MdlPages};
use dxgk::page_pool::PagePool;
use dxgk::pool::Pool;
use dxgk::sync::SpinLock;
use dxgk::{NtError, NtResult};
use dxgk_sys::HANDLE;
use dxgk_sys::{DEVICE_OBJECT, DXGKRNL_INTERFACE, DXGK_START_INFO};
use rgpu_hw::regs;

use crate::ddi::MINIMUM_INTERFACE_VERSION;
use crate::paging::{Aperture, APERTURE_PAGES};

/// Ring size in bytes (128 entries).
pub const RING_BYTES: usize = 4096;
/// How long register waits (reset, ring enable) may take.
pub const REGISTER_TIMEOUT_US: u64 = 10_000;
/// Upper bound on polls of one register wait, whatever the performance counter does.
const MAX_POLLS: u32 = 100_000;
/// Pages the adapter's pool keeps (ring + fence page, and room for reuse).
const POOL_PAGES: usize = 4;
const _: () = assert!(
    RING_BYTES == dxgk::memory::PAGE_SIZE && FENCE_PAGE_BYTES == dxgk::memory::PAGE_SIZE,
    "ring and fence page come from the single-page pool"
);
/// Bytes of the fence write-back page.
pub const FENCE_PAGE_BYTES: usize = 4096;

/// Per-adapter state, owned by Dxgkrnl's `MiniportDeviceContext` between AddDevice and
/// RemoveDevice.
pub struct Adapter {
    /// The pool routine resolved for this adapter (ExAllocatePool2 or the fallback).
    pub pool: Pool,
    /// The PDO Dxgkrnl passed to AddDevice.
    pub pdo: *mut DEVICE_OBJECT,
    /// Unsupported DDIs already logged for this adapter.
    pub logged: crate::ddi::LoggedOnce,
    /// Device ASIDs in use (bit n = ASID n); ASID 0 belongs to the system paging process.
    asids: core::sync::atomic::AtomicU32,
    /// Root table of each ASID as last set by SetRootPageTable: `logical address | entries`
    /// (the address is 4 KiB aligned, entries ≤ 512 fit the low bits); 0 = none. A device reset
    /// (TDR, power-up) clears the device's copy; these are what the driver restores.
    roots: [core::sync::atomic::AtomicU64; regs::NUM_ASIDS],
    /// Set by DxgkDdiNotifySurpriseRemoval: the registers are gone, never touch them again.
    removed: core::sync::atomic::AtomicBool,
    /// True while the adapter is in a low-power state (D1–D3).
    powered_down: core::sync::atomic::AtomicBool,
    /// Last SubmissionFenceId the ISR reported completed. Kept in software because a device
    /// reset (TDR) zeroes FENCE_VALUE while Dxgkrnl's fence ids keep counting: the faulting
    /// submission is the one after this, not after the register.
    completed_fence: core::sync::atomic::AtomicU32,
    /// Last SubmissionFenceId queued on the ring.
    submitted_fence: core::sync::atomic::AtomicU32,
    /// A PreemptCommand not yet answered: `PREEMPT_PENDING | PreemptionFenceId`, or 0.
    preempt_request: core::sync::atomic::AtomicU64,
    /// Dxgkrnl's process handle (hDxgkProcess) per ASID, for DMA_PAGE_FAULTED; 0 when free.
    process_handles: [core::sync::atomic::AtomicUsize; regs::NUM_ASIDS],
    started: Option<Started>,
}

/// Marks [`Adapter::preempt_request`] as holding a request (fence ids are 32-bit).
const PREEMPT_PENDING: u64 = 1 << 32;

/// Everything a started adapter holds. Field order is release order (the pool last: pages
/// returned to it are freed when it goes).
pub struct Started {
    aperture: Aperture,
    /// The fence write-back page (from `pool`; `None` only while being returned at stop).
    fence: Option<DeviceMemory>,
    ring: SpinLock<Ring>,
    mmio: Mmio,
    iface: DxgkInterface,
    /// min(Dxgkrnl's interface, the newest rgpu supports).
    interface_version: u32,
    device_version: u32,
    /// Reset the device when dropped (false after a surprise removal).
    quiesce_on_drop: bool,
    /// IOMMU-mapped pages for the ring and the fence page, kept for reuse across resets and
    /// trimmed at StopDevice (cf. Linux TTM's page pool).
    pool: PagePool,
}

/// The ring and the driver's write position in it. Submissions are serialized by the GPU
/// scheduler per node; the lock keeps ResetEngine / RestartFromTimeout consistent with them.
struct Ring {
    /// The ring page (from the pool; `None` only while being returned at stop).
    mem: Option<DeviceMemory>,
    /// Byte offset of the next entry the driver writes.
    tail: u32,
}

impl Started {
    /// Stops all device activity: interrupts off, device reset.
    fn quiesce(&self) {
        self.mmio.write(regs::INT_ENABLE, 0);
        self.mmio.write(regs::RESET, regs::RESET_ASSERT);
    }
}

impl Drop for Started {
    fn drop(&mut self) {
        if !self.quiesce_on_drop {
            return;
        }
        // Stop all DMA before the memory it could reach is unmapped and freed.
        self.mmio.write(regs::INT_ENABLE, 0);
        self.mmio.write(regs::RESET, regs::RESET_ASSERT);
    }
}

impl Adapter {
    /// A fresh adapter (AddDevice).
    pub fn new(pool: Pool, pdo: *mut DEVICE_OBJECT) -> Self {
        Self {
            pool,
            pdo,
            logged: crate::ddi::LoggedOnce::default(),
            asids: core::sync::atomic::AtomicU32::new(0),
            roots: [const { core::sync::atomic::AtomicU64::new(0) }; regs::NUM_ASIDS],
            removed: core::sync::atomic::AtomicBool::new(false),
            powered_down: core::sync::atomic::AtomicBool::new(false),
            completed_fence: core::sync::atomic::AtomicU32::new(0),
            submitted_fence: core::sync::atomic::AtomicU32::new(0),
            preempt_request: core::sync::atomic::AtomicU64::new(0),
            process_handles: [const { core::sync::atomic::AtomicUsize::new(0) }; regs::NUM_ASIDS],
            started: None,
        }
    }

    /// The started state, if the adapter is started.
    pub fn started(&self) -> Option<&Started> {
        self.started.as_ref()
    }

    /// Starts the adapter (DxgkDdiStartDevice). PASSIVE_LEVEL. On failure everything acquired
    /// so far is released and the adapter stays stopped.
    ///
    /// # Safety
    /// `interface` and `start_info` must be NULL or point to the structures Dxgkrnl passes to
    /// StartDevice.
    pub unsafe fn start(
        &mut self,
        start_info: *const DXGK_START_INFO,
        interface: *const DXGKRNL_INTERFACE,
    ) -> NtResult<()> {
        let passive = Passive::check()?;
        if self.started.is_some() {
            rgpu_log!(error, "StartDevice: adapter already started");
            return Err(NtError::INVALID_DEVICE_STATE);
        }
        if start_info.is_null() {
            rgpu_log!(error, "StartDevice: NULL DXGK_START_INFO");
            return Err(NtError::INVALID_PARAMETER);
        }
        // SAFETY: per the caller, a DXGKRNL_INTERFACE of at least its Size bytes (or NULL).
        let iface = match unsafe { DxgkInterface::copy_from(interface, MINIMUM_INTERFACE_VERSION) }
        {
            Ok(i) => i,
            Err(e) => {
                match e {
                    InterfaceError::TooOld { version, minimum } => rgpu_log!(
                        error,
                        "StartDevice: Dxgkrnl interface {:#x} is older than WDDM 2.4 ({:#x}); rgpu needs the IOMMU memory callbacks",
                        version,
                        minimum
                    ),
                    InterfaceError::TooSmall { size, expected } => rgpu_log!(
                        error,
                        "StartDevice: DXGKRNL_INTERFACE Size {} is smaller than {} for its Version",
                        size,
                        expected
                    ),
                    InterfaceError::Null => rgpu_log!(error, "StartDevice: NULL DXGKRNL_INTERFACE"),
                }
                return Err(e.into());
            }
        };
        let newest = crate::ddi::SUPPORTED_INTERFACE_VERSIONS[0];
        let interface_version = iface.version().min(newest);
        // SAFETY: non-null (checked) and provided by Dxgkrnl.
        let dma_queue_entries = unsafe { (*start_info).RequiredDmaQueueEntry };

        let info = DeviceInfo::query(&iface, &passive).inspect_err(|e| {
            rgpu_log!(
                error,
                "StartDevice: DxgkCbGetDeviceInformation failed: {}",
                e
            )
        })?;
        let Some(bar) = info.first_memory else {
            rgpu_log!(
                error,
                "StartDevice: no register BAR in the translated resources (a root-enumerated device without rgpu hardware?)"
            );
            return Err(NtError::DEVICE_HARDWARE_ERROR);
        };
        if bar.length < regs::BAR_SIZE {
            rgpu_log!(
                error,
                "StartDevice: register BAR of {} bytes, need {}",
                bar.length,
                regs::BAR_SIZE
            );
            return Err(NtError::DEVICE_HARDWARE_ERROR);
        }
        let mmio = Mmio::map(&iface, &passive, bar)
            .inspect_err(|e| rgpu_log!(error, "StartDevice: DxgkCbMapMemory failed: {}", e))?;
        let device_version = reset_and_identify(&mmio)?;

        let pool = PagePool::new(
            &iface,
            dxgk_sys::DXGK_MEMORY_CACHING_TYPE_CACHED,
            POOL_PAGES,
        );
        let ring = pool
            .get(&passive)
            .inspect_err(|e| rgpu_log!(error, "StartDevice: ring allocation failed: {}", e))?;
        let fence = pool.get(&passive).inspect_err(|e| {
            rgpu_log!(error, "StartDevice: fence page allocation failed: {}", e)
        })?;
        let gart = MdlPages::allocate(
            &iface,
            &passive,
            APERTURE_PAGES * 8,
            dxgk_sys::DXGK_MEMORY_CACHING_TYPE_CACHED,
        )
        .inspect_err(|e| {
            rgpu_log!(
                error,
                "StartDevice: aperture table allocation failed: {}",
                e
            )
        })?;
        let started = Started {
            aperture: Aperture::new(gart)?,
            fence: Some(fence),
            ring: SpinLock::new(Ring {
                mem: Some(ring),
                tail: 0,
            }),
            mmio,
            iface,
            interface_version,
            device_version,
            quiesce_on_drop: true,
            pool,
        };
        // On failure `started` drops: device reset, memory and mapping released.
        started.program_ring()?;
        rgpu_log!(
            info,
            "started: interface {:#x}, device version {:#x}, {} DMA queue entries",
            interface_version,
            device_version,
            dma_queue_entries
        );
        self.started = Some(started);
        Ok(())
    }

    /// Stops the adapter (DxgkDdiStopDevice): releases everything StartDevice acquired.
    /// Idempotent: stopping a stopped adapter is a no-op.
    pub fn stop(&mut self) {
        if let Some(mut s) = self.started.take() {
            // Quiesce first (unless surprise-removed: the registers are gone), then give the
            // device pages back to the pool and trim it: StopDevice returns everything.
            if !self.is_removed() {
                s.quiesce();
            }
            s.quiesce_on_drop = false;
            let pages = [s.fence.take(), s.ring.get_mut().mem.take()];
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
}

impl Adapter {
    /// Quiesces the device (ResetDevice, ResetFromTimeout): interrupts off, device reset. Only
    /// register writes, so it is safe at any IRQL and on the bugcheck path.
    pub fn reset_hardware(&self) {
        if let Some(s) = self.hardware() {
            s.mmio.write(regs::INT_ENABLE, 0);
            s.mmio.write(regs::RESET, regs::RESET_ASSERT);
        }
    }

    /// Reprograms the ring and the ASID roots after a reset (RestartFromTimeout, ResetEngine,
    /// power-up).
    pub fn restart_hardware(&self) -> NtResult<()> {
        let s = self.hardware().ok_or(NtError::INVALID_DEVICE_STATE)?;
        s.program_ring()?;
        self.restore_roots(s);
        // Everything submitted before the reset completed or was aborted with the old ring: a
        // fault from now on belongs to a later submission.
        let submitted = self
            .submitted_fence
            .load(core::sync::atomic::Ordering::Relaxed);
        self.completed_fence
            .store(submitted, core::sync::atomic::Ordering::Relaxed);
        // A reset ends any preemption in flight: VidSch restarts scheduling from scratch.
        self.preempt_request
            .store(0, core::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

    /// The started state, unless the device was surprise-removed (then the registers are gone).
    fn hardware(&self) -> Option<&Started> {
        if self.removed.load(core::sync::atomic::Ordering::Acquire) {
            return None;
        }
        self.started.as_ref()
    }

    fn restore_roots(&self, s: &Started) {
        for (asid, root) in self.roots.iter().enumerate() {
            let v = root.load(core::sync::atomic::Ordering::Acquire);
            let (addr, entries) = (v & !0xFFF, (v & 0x3FF) as u32);
            let a = asid as u32;
            s.mmio.write(regs::asid_root_lo(a), addr as u32);
            s.mmio.write(regs::asid_root_hi(a), (addr >> 32) as u32);
            s.mmio.write(regs::asid_root_entries(a), entries);
        }
    }

    /// DxgkDdiNotifySurpriseRemoval: from now on the device is not touched; Dxgkrnl follows with
    /// StopDevice and RemoveDevice, which release memory without register access.
    pub fn surprise_remove(&self) {
        self.removed
            .store(true, core::sync::atomic::Ordering::Release);
    }

    /// True after a surprise removal.
    pub fn is_removed(&self) -> bool {
        self.removed.load(core::sync::atomic::Ordering::Acquire)
    }

    /// DxgkDdiSetPowerState for the adapter: D1–D3 quiesce the device (its memory and the
    /// driver's state are kept); D0 resets, identifies and reprograms it (ring, fence write-back,
    /// ASID roots). VidMm re-initializes the paging process's page tables after power-up.
    pub fn set_power(&self, d0: bool) -> NtResult<()> {
        use core::sync::atomic::Ordering;
        let Some(s) = self.hardware() else {
            // Not started (or removed): nothing to program; remember the state.
            self.powered_down.store(!d0, Ordering::Release);
            return Ok(());
        };
        if d0 {
            reset_and_identify(&s.mmio)?;
            self.restart_hardware()?;
            self.powered_down.store(false, Ordering::Release);
        } else {
            s.mmio.write(regs::INT_ENABLE, 0);
            s.mmio.write(regs::RESET, regs::RESET_ASSERT);
            self.powered_down.store(true, Ordering::Release);
        }
        Ok(())
    }

    /// True while in D1–D3.
    pub fn is_powered_down(&self) -> bool {
        self.powered_down
            .load(core::sync::atomic::Ordering::Acquire)
    }

    /// Reserves a device ASID: 0 for the system paging process, 1..=15 for the others.
    /// STATUS_INSUFFICIENT_RESOURCES when all are in use (rgpu does not virtualize ASIDs).
    pub fn allocate_asid(&self, system: bool) -> NtResult<u8> {
        use core::sync::atomic::Ordering;
        let candidates = if system {
            0..1
        } else {
            1..regs::NUM_ASIDS as u32
        };
        for asid in candidates {
            let bit = 1u32 << asid;
            if self.asids.fetch_or(bit, Ordering::AcqRel) & bit == 0 {
                return Ok(asid as u8);
            }
        }
        Err(NtError::INSUFFICIENT_RESOURCES)
    }

    /// Records Dxgkrnl's handle of the process that owns `asid` (CreateProcess), named in
    /// DMA_PAGE_FAULTED for faults in that address space.
    pub fn set_process_handle(&self, asid: u8, handle: HANDLE) {
        if let Some(slot) = self.process_handles.get(usize::from(asid)) {
            slot.store(handle as usize, core::sync::atomic::Ordering::Release);
        }
    }

    /// Returns an ASID from [`Adapter::allocate_asid`], disabling its root.
    pub fn free_asid(&self, asid: u8) {
        if let Some(slot) = self.process_handles.get(usize::from(asid)) {
            slot.store(0, core::sync::atomic::Ordering::Release);
        }
        if let Some(slot) = self.roots.get(usize::from(asid)) {
            slot.store(0, core::sync::atomic::Ordering::Release);
        }
        if let Some(s) = self.hardware() {
            s.mmio.write(regs::asid_root_entries(u32::from(asid)), 0);
        }
        self.asids
            .fetch_and(!(1u32 << asid), core::sync::atomic::Ordering::AcqRel);
    }

    /// Programs ASID `asid`'s root table (DxgkDdiSetRootPageTable; the context is idle).
    pub fn set_root(&self, asid: u8, root: u64, entries: u32) -> NtResult<()> {
        let s = self.hardware().ok_or(NtError::INVALID_DEVICE_STATE)?;
        let a = u32::from(asid);
        let entries = entries.min(rgpu_hw::pte::ENTRIES_PER_TABLE as u32);
        if let Some(slot) = self.roots.get(usize::from(asid)) {
            slot.store(
                (root & !0xFFF) | u64::from(entries),
                core::sync::atomic::Ordering::Release,
            );
        }
        s.mmio.write(regs::asid_root_lo(a), root as u32);
        s.mmio.write(regs::asid_root_hi(a), (root >> 32) as u32);
        s.mmio.write(regs::asid_root_entries(a), entries);
        Ok(())
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
        push_ring_entry(s, &mut ring, &entry)?;
        self.submitted_fence
            .store(fence as u32, core::sync::atomic::Ordering::Relaxed);
        ring_doorbell(s, &ring);
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
        let last = self
            .submitted_fence
            .load(core::sync::atomic::Ordering::Relaxed);
        let entry = rgpu_hw::ring::RingEntry {
            fence: true,
            fence_irq: true,
            fence_value: u64::from(last),
            ..Default::default()
        };
        // Queue first, then publish the request: a full ring leaves no request behind.
        push_ring_entry(s, &mut ring, &entry)?;
        self.preempt_request.store(
            PREEMPT_PENDING | u64::from(preemption_fence),
            core::sync::atomic::Ordering::Release,
        );
        ring_doorbell(s, &ring);
        Ok(())
    }

    /// DxgkDdiInterruptRoutine (DIRQL): claims and acknowledges the device's interrupt, reports
    /// completed fences (DMA_COMPLETED), GPU page faults (DMA_PAGE_FAULTED) and other faults
    /// (DMA_FAULTED) to Dxgkrnl, and queues the DPC.
    /// Returns whether the interrupt was ours.
    pub fn interrupt(&self) -> bool {
        let Some(s) = self.hardware() else {
            return false;
        };
        let pending = s.mmio.read(regs::INT_STATUS) & s.mmio.read(regs::INT_ENABLE);
        if pending == 0 || pending == u32::MAX {
            return false;
        }
        s.mmio.write(regs::INT_ACK, pending);
        if pending & regs::INT_FENCE != 0 {
            let mut data = dxgk_sys::DXGKARGCB_NOTIFY_INTERRUPT_DATA {
                InterruptType: dxgk_sys::DXGK_INTERRUPT_DMA_COMPLETED,
                ..Default::default()
            };
            let fence = s.mmio.read(regs::FENCE_VALUE_LO);
            let previous = self
                .completed_fence
                .swap(fence, core::sync::atomic::Ordering::Relaxed);
            // A preemption NOP re-signals an already reported fence: report progress only.
            if fence != previous {
                data.u.DmaCompleted.SubmissionFenceId = fence;
                s.notify(&mut data);
            }
            self.answer_preemption(s, fence);
        }
        if pending & regs::INT_FAULT != 0 {
            let mut data = self.fault_notification(s);
            s.notify(&mut data);
        }
        if let Ok(queue_dpc) = s.iface.queue_dpc() {
            // SAFETY: DxgkCbQueueDpc may be called from the ISR with the adapter's handle.
            unsafe { queue_dpc(s.iface.device_handle()) };
        }
        true
    }

    /// From the ISR: the notification for the fault latched in FAULT_STATUS. Translation faults
    /// (an invalid or read-only PTE, a root or VA range) and IOMMU faults are GPU page faults,
    /// reported as DMA_PAGE_FAULTED with the address, level, access and process; malformed
    /// commands or ring entries and privilege violations as DMA_FAULTED. Either way the ring
    /// has halted, so the page fault asks for an engine reset.
    fn fault_notification(&self, s: &Started) -> dxgk_sys::DXGKARGCB_NOTIFY_INTERRUPT_DATA {
        use rgpu_hw::device::FaultKind;
        let status = s.mmio.read(regs::FAULT_STATUS);
        let address = u64::from(s.mmio.read(regs::FAULT_ADDR_LO))
            | (u64::from(s.mmio.read(regs::FAULT_ADDR_HI)) << 32);
        // The faulting buffer is the one after the last completed fence (the software copy:
        // FENCE_VALUE restarts from 0 after a reset).
        let faulted_fence = self
            .completed_fence
            .load(core::sync::atomic::Ordering::Relaxed)
            .wrapping_add(1);
        let kind = FaultKind::from_raw(status & regs::FAULT_TYPE_MASK);
        let page_fault = matches!(
            kind,
            Some(
                FaultKind::PteInvalid
                    | FaultKind::WriteProtect
                    | FaultKind::RootRange
                    | FaultKind::VaRange
                    | FaultKind::Iommu
            )
        );
        if !page_fault {
            let mut data = dxgk_sys::DXGKARGCB_NOTIFY_INTERRUPT_DATA {
                InterruptType: dxgk_sys::DXGK_INTERRUPT_DMA_FAULTED,
                ..Default::default()
            };
            data.u.DmaFaulted.FaultedFenceId = faulted_fence;
            data.u.DmaFaulted.Status = dxgk_sys::STATUS_GRAPHICS_GPU_EXCEPTION_ON_DEVICE;
            return data;
        }
        let mut flags = dxgk_sys::DXGK_PAGE_FAULT_ENGINE_RESET_REQUIRED.0;
        if status & regs::FAULT_WRITE != 0 {
            flags |= dxgk_sys::DXGK_PAGE_FAULT_WRITE.0;
        }
        if kind == Some(FaultKind::Iommu) {
            // FAULT_ADDR is then the logical address the IOMMU refused.
            flags |= dxgk_sys::DXGK_PAGE_FAULT_IOMMU.0;
        }
        let mut process: HANDLE = core::ptr::null_mut();
        if status & regs::FAULT_VIRTUAL != 0 {
            let asid = (status >> regs::FAULT_ASID_SHIFT) & regs::FAULT_ASID_MASK;
            if let Some(slot) = self.process_handles.get(asid as usize) {
                process = slot.load(core::sync::atomic::Ordering::Acquire) as HANDLE;
            }
            if !process.is_null() {
                flags |= dxgk_sys::DXGK_PAGE_FAULT_PROCESS_HANDLE_VALID.0;
            }
        }
        let mut data = dxgk_sys::DXGKARGCB_NOTIFY_INTERRUPT_DATA {
            InterruptType: dxgk_sys::DXGK_INTERRUPT_DMA_PAGE_FAULTED,
            ..Default::default()
        };
        let mut error = dxgk_sys::DXGK_FAULT_ERROR_CODE::default();
        error.set_GeneralErrorCode(dxgk_sys::DXGK_GENERAL_ERROR_PAGE_FAULT.0 as u32);
        data.u.DmaPageFaulted = dxgk_sys::DXGKARGCB_NOTIFY_INTERRUPT_DATA_DmaPageFaulted {
            FaultedFenceId: faulted_fence,
            PageFaultFlags: dxgk_sys::DXGK_PAGE_FAULT_FLAGS(flags),
            FaultedVirtualAddress: address,
            PageTableLevel: (status >> regs::FAULT_LEVEL_SHIFT) & regs::FAULT_LEVEL_MASK,
            FaultErrorCode: error,
            FaultedProcessHandle: process,
            ..Default::default()
        };
        data
    }

    /// From the ISR after fence `completed`: answers a pending PreemptCommand with DMA_PREEMPTED
    /// once everything submitted has completed.
    fn answer_preemption(&self, s: &Started, completed: u32) {
        use core::sync::atomic::Ordering;
        let request = self.preempt_request.load(Ordering::Acquire);
        if request & PREEMPT_PENDING == 0
            || completed != self.submitted_fence.load(Ordering::Relaxed)
            || self
                .preempt_request
                .compare_exchange(request, 0, Ordering::AcqRel, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        let mut data = dxgk_sys::DXGKARGCB_NOTIFY_INTERRUPT_DATA {
            InterruptType: dxgk_sys::DXGK_INTERRUPT_DMA_PREEMPTED,
            ..Default::default()
        };
        data.u.DmaPreempted.PreemptionFenceId = request as u32;
        data.u.DmaPreempted.LastCompletedFenceId = completed;
        s.notify(&mut data);
    }

    /// DxgkDdiDpcRoutine (DISPATCH_LEVEL): tells Dxgkrnl the DPC ran.
    pub fn dpc(&self) {
        let Some(s) = &self.started else { return };
        if let Ok(notify_dpc) = s.iface.notify_dpc() {
            // SAFETY: DxgkCbNotifyDpc is called from the DPC with the adapter's handle.
            unsafe { notify_dpc(s.iface.device_handle()) };
        }
    }

    /// The last SubmissionFenceId reported completed (kept in software across resets).
    pub fn last_completed_fence(&self) -> u32 {
        self.completed_fence
            .load(core::sync::atomic::Ordering::Relaxed)
    }

    /// The last SubmissionFenceId queued on the ring.
    pub fn last_submitted_fence(&self) -> u32 {
        self.submitted_fence
            .load(core::sync::atomic::Ordering::Relaxed)
    }

    /// False when the engine is halted on a fault (or the adapter is stopped).
    pub fn engine_responsive(&self) -> bool {
        self.hardware()
            .as_ref()
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

/// Writes `entry` at the ring's tail and advances the driver's copy of the tail (the device sees
/// it at [`ring_doorbell`]). Fails with STATUS_DEVICE_NOT_READY when the ring is full.
fn push_ring_entry(s: &Started, ring: &mut Ring, entry: &rgpu_hw::ring::RingEntry) -> NtResult<()> {
    let head = s.mmio.read(regs::RING_HEAD);
    let next = (ring.tail + rgpu_hw::ring::ENTRY_SIZE as u32) % RING_BYTES as u32;
    if next == head {
        // The scheduler never queues more than the ring holds; a full ring means the device
        // stopped consuming (hung): the TDR path recovers.
        return Err(NtError::DEVICE_NOT_READY);
    }
    let at = ring.tail as usize;
    ring.mem
        .as_mut()
        .ok_or(NtError::INVALID_DEVICE_STATE)?
        .pages_mut()
        .write(at, &entry.encode())?;
    ring.tail = next;
    Ok(())
}

/// Publishes the driver's tail to the device and rings the doorbell.
fn ring_doorbell(s: &Started, ring: &Ring) {
    s.mmio.write(regs::RING_TAIL, ring.tail);
    s.mmio.write(regs::DOORBELL, 1);
}

/// Resets the device and checks its identity. Returns the VERSION register.
fn reset_and_identify(mmio: &Mmio) -> NtResult<u32> {
    // Identity first: it reads correctly in any state, and a BAR with no rgpu behind it (a
    // root-enumerated test device without hardware) must be told apart from a slow reset.
    let id = mmio.read(regs::ID);
    let version = mmio.read(regs::VERSION);
    if id != regs::ID_VALUE {
        rgpu_log!(
            error,
            "StartDevice: not an rgpu device (ID {:#010x}, expected {:#010x})",
            id,
            regs::ID_VALUE
        );
        return Err(NtError::DEVICE_HARDWARE_ERROR);
    }
    if version >> 16 != u32::from(regs::VERSION_MAJOR) {
        rgpu_log!(
            error,
            "StartDevice: unsupported rgpu programming model {:#x}",
            version
        );
        return Err(NtError::DEVICE_HARDWARE_ERROR);
    }
    mmio.write(regs::RESET, regs::RESET_ASSERT);
    // Reset completes within microseconds on the rgpu device; allow 10 ms.
    let ready = dxgk::time::poll_until(REGISTER_TIMEOUT_US, MAX_POLLS, || {
        mmio.read(regs::STATUS) & regs::STATUS_READY != 0
    });
    if !ready {
        rgpu_log!(error, "StartDevice: device not ready after reset");
        return Err(NtError::DEVICE_NOT_READY);
    }
    let caps = mmio.read(regs::CAPS);
    if caps & regs::CAPS_VA_BITS_MASK < rgpu_hw::pte::VA_BITS
        || (caps >> regs::CAPS_LEVELS_SHIFT) & 0xF != rgpu_hw::pte::LEVELS as u32
    {
        rgpu_log!(
            error,
            "StartDevice: device caps {:#x} do not match the rgpu page-table format",
            caps
        );
        return Err(NtError::DEVICE_HARDWARE_ERROR);
    }
    Ok(version)
}

impl Started {
    /// Interface version in use (min of Dxgkrnl's and rgpu's newest).
    pub fn interface_version(&self) -> u32 {
        self.interface_version
    }

    /// The VERSION register read at start.
    pub fn device_version(&self) -> u32 {
        self.device_version
    }

    /// The Dxgkrnl interface.
    pub fn interface(&self) -> &DxgkInterface {
        &self.iface
    }

    /// The mapped registers.
    pub fn mmio(&self) -> &Mmio {
        &self.mmio
    }

    /// DxgkCbNotifyInterrupt (from the ISR).
    fn notify(&self, data: &mut dxgk_sys::DXGKARGCB_NOTIFY_INTERRUPT_DATA) {
        if let Ok(notify) = self.iface.notify_interrupt() {
            // SAFETY: called from the ISR with a fully initialized notification.
            unsafe { notify(self.iface.device_handle(), data) };
        }
    }

    /// Programs ring and fence write-back and enables the ring and interrupts (spec §3).
    fn program_ring(&self) -> NtResult<()> {
        let mut r = self.ring.lock();
        // Enabling the ring zeroes the device's head and tail: start over with a clean ring.
        r.tail = 0;
        let mem = r.mem.as_mut().ok_or(NtError::INVALID_DEVICE_STATE)?;
        mem.pages_mut().fill(0, RING_BYTES, 0)?;
        let ring = mem
            .page_address(0)
            .ok_or(NtError::INSUFFICIENT_RESOURCES)?
            .0;
        drop(r);
        let fence = self
            .fence
            .as_ref()
            .and_then(|f| f.page_address(0))
            .ok_or(NtError::INSUFFICIENT_RESOURCES)?
            .0;
        let m = &self.mmio;
        m.write(regs::RING_BASE_LO, ring as u32);
        m.write(regs::RING_BASE_HI, (ring >> 32) as u32);
        m.write(regs::RING_SIZE, RING_BYTES as u32);
        m.write(regs::FENCE_ADDR_LO, fence as u32);
        m.write(regs::FENCE_ADDR_HI, (fence >> 32) as u32);
        m.write(
            regs::CONTROL,
            regs::CONTROL_RING_ENABLE | regs::CONTROL_FENCE_WB_ENABLE,
        );
        let enabled = dxgk::time::poll_until(REGISTER_TIMEOUT_US, MAX_POLLS, || {
            m.read(regs::STATUS) & regs::STATUS_RING_ENABLED != 0
        });
        let status = m.read(regs::STATUS);
        if !enabled {
            rgpu_log!(
                error,
                "StartDevice: the device refused the ring (STATUS {:#x})",
                status
            );
            return Err(NtError::DEVICE_HARDWARE_ERROR);
        }
        m.write(regs::INT_ENABLE, regs::INT_MASK);
        Ok(())
    }
}
