//! A started adapter's hardware: the Dxgkrnl interface, the mapped registers and the memory
//! the device reads (ring, fence page, GART), acquired by [`Started::bring_up`] and released
//! by dropping in field order.

use dxgk::device::{DeviceInfo, Mmio};

use crate::ddi::AdapterContext;
use crate::soft::engine::Engine;
use crate::soft::memory::{PageEntry, Pages, SoftMemory};
use crate::soft::{Registers, SoftDevice};
use dxgk::aperture_views::ApertureViews;
use dxgk::device_memory::{MemoryPath, SystemMemory};
use dxgk::interface::{DxgkInterface, StartInfo};
use dxgk::irql::Passive;
use dxgk::page_pool::PagePool;
use dxgk::pool::Pool;
use dxgk::sync::SpinLock;
use dxgk::{NtError, NtResult};
use rgpu_hw::regs;

use super::ring::{Ring, RING_BYTES};
use crate::paging::{Aperture, APERTURE_PAGES};
use crate::version::NEWEST_INTERFACE_VERSION;

/// How long register waits (reset, ring enable) may take.
pub const REGISTER_TIMEOUT_US: u64 = 10_000;
/// Upper bound on polls of one register wait, whatever the performance counter does.
const MAX_POLLS: u32 = 100_000;
/// Pages the adapter's pool keeps (ring + fence page, and room for reuse).
const POOL_PAGES: usize = 4;
/// Pool tag of soft mode's page registry ("rgSV").
pub const VIEWS_TAG: dxgk::pool::PoolTag = dxgk::pool::PoolTag(u32::from_le_bytes(*b"rgSV"));
/// Bytes of the fence write-back page.
pub const FENCE_PAGE_BYTES: usize = 4096;
const _: () = assert!(
    RING_BYTES == dxgk::memory::PAGE_SIZE && FENCE_PAGE_BYTES == dxgk::memory::PAGE_SIZE,
    "ring and fence page come from the single-page pool"
);

/// Everything a started adapter holds. Field order is release order (the pool last: pages
/// returned to it are freed when it goes).
pub struct Started {
    /// Soft mode's engine thread (first: halted and joined before any memory it reaches goes).
    pub(super) engine: Option<Engine>,
    /// Soft mode's registry of the CPU views of aperture pages (MAP/UNMAP_APERTURE_SEGMENT feed
    /// it; dropped after the engine, releasing the MDL system mappings it made).
    pub(super) views: Option<ApertureViews>,
    pub(super) aperture: Aperture,
    /// The fence write-back page (from `pool`; `None` only while being returned at stop).
    pub(super) fence: Option<SystemMemory>,
    /// The ring page (from `pool`; `None` only while being returned at stop). Outside the
    /// ring's lock: the soft engine reads it while a submission holds that lock.
    pub(super) ring_page: Option<SystemMemory>,
    pub(super) ring: SpinLock<Ring>,
    /// The register interface: the mapped BAR (or, in soft mode, the in-driver model).
    pub(super) mmio: Registers,
    pub(super) iface: DxgkInterface,
    /// min(Dxgkrnl's interface, the newest rgpu supports).
    interface_version: u32,
    device_version: u32,
    /// Where the adapter's own memory comes from (WDDM 2.4 MDLs or 3.0 remapping).
    memory_path: MemoryPath,
    /// Reset the device when dropped (false after a surprise removal, or once stop did it).
    pub(super) quiesce_on_drop: bool,
    /// IOMMU-mapped pages for the ring and the fence page, kept for reuse across resets and
    /// trimmed at StopDevice (cf. Linux TTM's page pool).
    pub(super) pool: PagePool,
}

impl Drop for Started {
    fn drop(&mut self) {
        if self.quiesce_on_drop {
            // Stop all DMA before the memory it could reach is unmapped and freed.
            self.quiesce();
        }
    }
}

impl Started {
    /// Acquires the device for StartDevice (PASSIVE_LEVEL): finds and maps the register BAR,
    /// identifies and resets the device, allocates the ring, fence page and GART, programs the
    /// ring. On failure everything acquired so far is released (and the device reset).
    /// Memory comes from `path` ([`super::memory::select`]).
    ///
    /// Without a register BAR (a root-enumerated device) the adapter runs soft rgpu: the
    /// registers are the in-driver model (from `nonpaged`) and its engine thread, which reaches the
    /// adapter through `context`, is started last.
    pub fn bring_up(
        iface: DxgkInterface,
        info: StartInfo,
        passive: &Passive,
        path: MemoryPath,
        nonpaged: &Pool,
        context: AdapterContext,
    ) -> NtResult<Self> {
        let interface_version = iface.version().min(NEWEST_INTERFACE_VERSION);
        let device = DeviceInfo::query(&iface, passive).inspect_err(|e| {
            rgpu_log!(
                error,
                "StartDevice: DxgkCbGetDeviceInformation failed: {}",
                e
            )
        })?;
        let mmio = match device.first_memory {
            None => {
                rgpu_log!(
                    info,
                    "StartDevice: no register BAR in the translated resources: soft rgpu (the device model runs in the driver)"
                );
                Registers::Soft(SoftDevice::new(nonpaged, crate::POOL_TAG).inspect_err(|e| {
                    rgpu_log!(error, "StartDevice: soft device allocation failed: {}", e)
                })?)
            }
            Some(bar) => {
                if bar.length < regs::BAR_SIZE {
                    rgpu_log!(
                        error,
                        "StartDevice: register BAR of {} bytes, need {}",
                        bar.length,
                        regs::BAR_SIZE
                    );
                    return Err(NtError::DEVICE_HARDWARE_ERROR);
                }
                Registers::Mmio(Mmio::map(&iface, passive, bar).inspect_err(|e| {
                    rgpu_log!(error, "StartDevice: DxgkCbMapMemory failed: {}", e)
                })?)
            }
        };
        let device_version = reset_and_identify(&mmio)?;

        let pool = PagePool::new(
            &iface,
            path,
            dxgk_sys::DXGK_MEMORY_CACHING_TYPE_CACHED,
            POOL_PAGES,
        );
        let ring = pool
            .get(passive)
            .inspect_err(|e| rgpu_log!(error, "StartDevice: ring allocation failed: {}", e))?;
        let fence = pool.get(passive).inspect_err(|e| {
            rgpu_log!(error, "StartDevice: fence page allocation failed: {}", e)
        })?;
        let gart = SystemMemory::allocate_cpu_only(
            &iface,
            passive,
            path,
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
        let views = match mmio.soft() {
            Some(_) => Some(
                ApertureViews::new(nonpaged, VIEWS_TAG, APERTURE_PAGES).inspect_err(|e| {
                    rgpu_log!(
                        error,
                        "StartDevice: soft page registry ({} bytes) allocation failed: {}",
                        ApertureViews::block_bytes(APERTURE_PAGES).unwrap_or(0),
                        e
                    )
                })?,
            ),
            None => None,
        };
        let mut started = Started {
            engine: None,
            views,
            aperture: Aperture::new(gart)?,
            fence: Some(fence),
            ring_page: Some(ring),
            ring: SpinLock::new(Ring::default()),
            mmio,
            iface,
            interface_version,
            device_version,
            memory_path: path,
            quiesce_on_drop: true,
            pool,
        };
        // On failure `started` drops: device reset, memory and mapping released.
        started.program_ring()?;
        if started.mmio.soft().is_some() {
            started.engine = Some(Engine::spawn(nonpaged, passive, context).inspect_err(|e| {
                rgpu_log!(error, "StartDevice: soft engine thread failed: {}", e)
            })?);
        }
        rgpu_log!(
            info,
            "started: interface {:#x}, device version {:#x}, {} DMA queue entries",
            interface_version,
            device_version,
            info.required_dma_queue_entries
        );
        Ok(started)
    }

    /// Stops all device activity: interrupts off, device reset. Only register writes, so it is
    /// safe at any IRQL and on the bugcheck path. The one quiesce routine: stop, drop, power
    /// down, ResetDevice and ResetFromTimeout all come here.
    pub fn quiesce(&self) {
        self.mmio.write(regs::INT_ENABLE, 0);
        self.mmio.write(regs::RESET, regs::RESET_ASSERT);
    }

    /// Interface version in use (min of Dxgkrnl's and rgpu's newest).
    pub fn interface_version(&self) -> u32 {
        self.interface_version
    }

    /// Where the adapter's own memory comes from.
    pub fn memory_path(&self) -> MemoryPath {
        self.memory_path
    }

    /// The VERSION register read at start.
    pub fn device_version(&self) -> u32 {
        self.device_version
    }

    /// The Dxgkrnl interface.
    pub fn interface(&self) -> &DxgkInterface {
        &self.iface
    }

    /// The memory the soft engine may reach: the driver's own pages (ring, fence page) and the
    /// aperture pages VidMm mapped.
    pub(super) fn soft_memory(&self) -> SoftMemory<'_> {
        SoftMemory {
            own: self.own_pages(),
            views: self.views.as_ref(),
        }
    }

    /// The driver's own pages the soft engine reaches (ring, fence page).
    fn own_pages(&self) -> Pages<'_, 2> {
        let mut pages = Pages::new();
        for mem in [self.ring_page.as_ref(), self.fence.as_ref()]
            .into_iter()
            .flatten()
        {
            if let Some(logical) = mem.page_address(0) {
                pages.register(PageEntry {
                    logical: logical.0,
                    view: mem.shared(),
                    offset: 0,
                });
            }
        }
        pages
    }

    /// Wakes the soft engine after a doorbell write that asked for it.
    pub(super) fn wake_engine(&self, doorbell: bool) {
        if let (true, Some(engine)) = (doorbell, self.engine.as_ref()) {
            engine.wake();
        }
    }

    /// The register interface.
    pub fn mmio(&self) -> &Registers {
        &self.mmio
    }

    /// Programs ring and fence write-back and enables the ring and interrupts (spec §3).
    pub(super) fn program_ring(&self) -> NtResult<()> {
        let ring = self.ring.lock().reset(self.ring_page.as_ref())?;
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

/// Resets the device and checks its identity. Returns the VERSION register.
pub(super) fn reset_and_identify(mmio: &Registers) -> NtResult<u32> {
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
