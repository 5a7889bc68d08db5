//! Device models that plug into [`crate::SimDevice`]: the rgpu device (`rgpu-hw`'s executable
//! model) behind its BAR and the adapter's IOMMU. Enabled with the `rgpu-hw` feature, so the
//! simulator itself stays generic.

use rgpu_hw::device::Device;
use rgpu_hw::regs::BAR_SIZE;

use crate::dxgkrnl::dma::Dma;
use crate::SimDevice;

/// Work units the device may spend per synchronization (one per command or per ≤ 4 KiB of a
/// FILL/COPY): bounds the time one DDI return spends in the device.
pub const DEFAULT_BUDGET: u32 = 1 << 16;

/// The rgpu device. Register accesses go straight to the model; commands run when the
/// simulator synchronizes the device (whenever control returns to it from a DDI).
pub struct RgpuDevice {
    dev: Device,
    budget: u32,
}

impl Default for RgpuDevice {
    fn default() -> Self {
        Self::new()
    }
}

impl RgpuDevice {
    /// A powered-on rgpu device.
    pub fn new() -> Self {
        Self {
            dev: Device::new(),
            budget: DEFAULT_BUDGET,
        }
    }

    /// The model, for assertions in tests.
    pub fn model(&self) -> &Device {
        &self.dev
    }

    fn mirror(&self, mmio: &mut [u32]) {
        for (i, w) in mmio.iter_mut().enumerate().take(BAR_SIZE as usize / 4) {
            *w = self.dev.mmio_read((i * 4) as u32);
        }
    }
}

impl SimDevice for RgpuDevice {
    fn mmio_size(&self) -> usize {
        BAR_SIZE as usize
    }

    fn reset(&mut self, mmio: &mut [u32]) {
        self.dev.reset();
        self.mirror(mmio);
    }

    fn sync(&mut self, mmio: &mut [u32], dma: &mut Dma) {
        self.dev.run(dma, self.budget);
        self.mirror(mmio);
    }

    fn interrupt_pending(&self) -> bool {
        self.dev.irq_pending()
    }

    fn counters(&self) -> Vec<(&'static str, u64)> {
        let s = self.dev.stats();
        vec![
            ("commands", s.commands),
            ("ring_entries", s.ring_entries),
            ("doorbells", s.doorbells),
            ("bytes_filled", s.bytes_filled),
            ("bytes_copied", s.bytes_copied),
            ("bytes_written", s.bytes_written),
            ("ptes_written", s.ptes_written),
            ("fences", s.fences),
            ("interrupts", s.interrupts),
            ("faults", s.faults),
            ("resets", s.resets),
            ("tlb_hits", s.mmu.tlb_hits),
            ("tlb_misses", s.mmu.tlb_misses),
            ("pte_reads", s.mmu.pte_reads),
            ("tlb_flushes", s.mmu.flushes),
        ]
    }

    fn mmio_read(&mut self, offset: u32, _mmio: &mut [u32]) -> u32 {
        self.dev.mmio_read(offset)
    }

    fn mmio_write(&mut self, offset: u32, value: u32, mmio: &mut [u32]) {
        self.dev.mmio_write(offset, value);
        if let Some(w) = mmio.get_mut(offset as usize / 4) {
            *w = self.dev.mmio_read(offset);
        }
    }
}
