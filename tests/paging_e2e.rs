//! rgpu's paging driven end to end as Windows drives it: dxgk-sim's VidMm ([`dxgk_sim::Vidmm`])
//! creates the system paging process (page tables initialized with CPU_VIRTUAL updates and a
//! NULL DMA buffer), user processes with their own roots, allocations in system memory behind
//! the IOMMU or in rgpu's aperture segment (MAP_APERTURE_SEGMENT / MAP_APERTURE_SEGMENT2), and
//! asks the REAL driver's DxgkDdiBuildPagingBuffer for every page-table update,
//! TLB flush, fill and transfer; the rgpu device model executes the paging buffers. Both IOMMU
//! modes: WDDM 2.4 isolation (identity) and WDDM 3.x DMA remapping.

use dxgk_sim::{
    AdapterId, AllocId, AllocSpec, ApertureMode, IommuMode, Machine, MachineConfig, ProcessId,
    Rule, Vidmm, VidmmConfig, VidmmError,
};
use dxgk_sys as sys;
use proptest::prelude::*;
use rgpu_hw::cmd::{Encoder, Target};

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;

mod support;
use support::{boot, boot_soft, boot_with, long_fill, machines, soft_machines};

fn shutdown(m: &Machine, id: AdapterId, vidmm: Vidmm) {
    vidmm.destroy().expect("VidMm teardown");
    assert_eq!(m.vidmm_allocations(), 0, "VidMm freed all its memory");
    assert_eq!(m.stop_adapter(id), sys::STATUS_SUCCESS);
    assert_eq!(m.remove_adapter(id), sys::STATUS_SUCCESS);
    m.unload_driver();
}

fn small_buffers() -> VidmmConfig {
    VidmmConfig {
        // Smaller than one full-table WRITE_PTES (4108 bytes): forces multipass.
        dma_buffer_size: 4096,
        ..VidmmConfig::default()
    }
}

/// Asserts `[offset, offset + len)` of `a` holds `pattern` (LE dwords, aligned to the
/// allocation), comparing page-sized slices.
fn expect_pattern(v: &Vidmm, a: AllocId, offset: u64, len: u64, pattern: u32, what: &str) {
    let page: Vec<u8> = pattern.to_le_bytes().repeat(1024);
    let mut at = offset;
    while at < offset + len {
        let n = (offset + len - at).min(4096 - at % 4096);
        let got = v.read(a, at, n as usize).expect("read");
        let s = (at % 4) as usize;
        assert!(
            got[..] == page[s..s + n as usize],
            "{what}: bytes at {at:#x}+{n:#x} differ from pattern {pattern:#010x}"
        );
        at += n;
    }
}

/// A UMD-style command buffer: a COPY in the process's own address space.
fn copy_commands(dst_va: u64, src_va: u64, size: u64) -> Vec<u8> {
    let mut buf = vec![0u8; 64];
    let mut enc = Encoder::new(&mut buf);
    enc.copy(Target::Virtual(dst_va), Target::Virtual(src_va), size)
        .expect("encode COPY");
    enc.written().to_vec()
}

/// Writes a command buffer into `cmd` (mapped at `cmd_va` in `p`) and submits it on `p`'s
/// context.
fn run_user_copy(
    v: &mut Vidmm,
    p: ProcessId,
    cmd: AllocId,
    cmd_va: u64,
    dst_va: u64,
    src_va: u64,
    size: u64,
) -> Result<(), VidmmError> {
    let cmds = copy_commands(dst_va, src_va, size);
    v.write(cmd, 0, &cmds).expect("write command buffer");
    v.submit_user(p, cmd_va, cmds.len() as u32)
}

const CMD_VA: u64 = 0x10_0000;

#[test]
fn fill_and_transfer_end_to_end_in_three_processes_with_multipass() {
    // (size, GPU VA): one page, odd sizes, one crossing a leaf table (2 MiB) and one crossing a
    // level-2 entry (1 GiB boundary) and a root entry (512 GiB boundary).
    let cases: [(u64, u64); 4] = [
        (4 * KIB, 0x20_0000),
        (68 * KIB, 0x1F_F000),
        (2 * MIB + 12 * KIB, 0x3FFF_0000),
        (3 * MIB, 0x7F_FFF0_0000),
    ];
    for config in machines() {
        let name = config.name.clone();
        let (m, id) = boot(config);
        let mut v = Vidmm::with_config(&m, id, small_buffers()).expect("VidMm init");
        let procs: Vec<ProcessId> = (0..3)
            .map(|_| v.create_process().expect("process"))
            .collect();
        for (pi, &p) in procs.iter().enumerate() {
            let cmd = v.allocate(4096).unwrap();
            v.map(p, cmd, CMD_VA).unwrap();
            for (ci, &(size, va)) in cases.iter().enumerate() {
                let pattern = 0x5A00_0000 | (pi as u32) << 16 | (ci as u32) << 8 | 0x3C;
                let src = v.allocate(size).unwrap();
                let dst = v.allocate(size).unwrap();
                let dst2 = v.allocate(size).unwrap();
                // Each process maps at the same VAs: only its own root tells them apart.
                let dst_va = va + 0x100_0000_0000;
                let dst2_va = va + 0x200_0000_0000;
                v.map(p, src, va).unwrap();
                v.map(p, dst, dst_va).unwrap();
                v.map(p, dst2, dst2_va).unwrap();
                v.fill(src, 0, size, pattern).unwrap();
                v.transfer(src, dst, size).unwrap();
                expect_pattern(&v, dst, 0, size, pattern, &format!("{name}: transfer"));
                // A partial, unaligned-in-page fill leaves its neighbours alone.
                let part = if size > 8192 { 4096 + 8 } else { 8 };
                v.fill(dst, part, 100, 0xDEAD_BEEF).unwrap();
                expect_pattern(&v, dst, 0, part, pattern, "before the partial fill");
                expect_pattern(&v, dst, part, 100, 0xDEAD_BEEF, "partial fill");
                expect_pattern(&v, dst, part + 100, size - part - 100, pattern, "after");
                // The process's own page tables: a command buffer running in its ASID copies
                // src → dst2 through its mappings.
                run_user_copy(&mut v, p, cmd, CMD_VA, dst2_va, va, size).unwrap();
                expect_pattern(&v, dst2, 0, size, pattern, &format!("{name}: user copy"));
                expect_pattern(&v, src, 0, size, pattern, "source intact");
            }
        }
        let s = v.stats();
        println!("{name}: {s:?}");
        assert!(
            s.multipass_resumes > 0,
            "4 KiB paging buffers must have forced multipass"
        );
        assert!(s.paging_submissions > s.multipass_resumes);
        assert_eq!((s.device_faults, s.resets), (0, 0));
        shutdown(&m, id, v);
        m.assert_clean();
    }
}

#[test]
fn a_256_mib_allocation_is_filled_transferred_and_mapped() {
    let (m, id) = boot(MachineConfig::windows_11_22h2().with_iommu(IommuMode::Remapped));
    let mut v = Vidmm::new(&m, id).expect("VidMm init");
    let p = v.create_process().unwrap();
    let size = 256 * MIB;
    let src = v.allocate(size).unwrap();
    let dst = v.allocate(size).unwrap();
    v.map(p, src, 0x40_0000_0000).unwrap();
    v.fill(src, 0, size, 0xC0FF_EE11).unwrap();
    // Distinct bytes at both ends, so that chunking mistakes show.
    v.fill(src, 0, 8, 0x0102_0304).unwrap();
    v.fill(src, size - 8, 8, 0xA1B2_C3D4).unwrap();
    v.transfer(src, dst, size).unwrap();
    expect_pattern(&v, dst, 0, 8, 0x0102_0304, "head");
    expect_pattern(&v, dst, 8, size - 16, 0xC0FF_EE11, "body");
    expect_pattern(&v, dst, size - 8, 8, 0xA1B2_C3D4, "tail");
    let s = v.stats();
    println!("256 MiB: {s:?}");
    assert!(
        s.multipass_resumes > 0,
        "64 KiB paging buffers cannot hold 256 MiB of PTEs"
    );
    shutdown(&m, id, v);
    m.assert_clean();
}

fn device_counter(m: &Machine, id: AdapterId, name: &str) -> u64 {
    m.device_counters(id)
        .iter()
        .find(|c| c.0 == name)
        .map(|c| c.1)
        .expect("device counter")
}

/// Device TLB misses taken by a user COPY of `size` bytes (and its command fetch).
#[allow(clippy::too_many_arguments)]
fn user_copy_misses(
    m: &Machine,
    id: AdapterId,
    v: &mut Vidmm,
    p: ProcessId,
    cmd: AllocId,
    dst_va: u64,
    src_va: u64,
    size: u64,
) -> u64 {
    let before = device_counter(m, id, "tlb_misses");
    run_user_copy(v, p, cmd, CMD_VA, dst_va, src_va, size).expect("user copy");
    device_counter(m, id, "tlb_misses") - before
}

#[test]
fn sixty_four_kib_pages_end_to_end_and_in_tables_shared_with_4_kib_pages() {
    for config in machines() {
        let name = config.name.clone();
        let (m, id) = boot(config);
        let mut v = Vidmm::with_config(&m, id, small_buffers()).expect("VidMm init");
        let p = v.create_process().unwrap();
        let cmd = v.allocate(4096).unwrap();
        v.map(p, cmd, CMD_VA).unwrap();
        // One 2 MiB leaf table: 1 MiB + 512 KiB in 64 KiB pages, then 8 KiB in 4 KiB pages.
        let region = 0x40_0000_0000u64;
        let (src_va, dst_va, small_va) = (region, region + MIB, region + MIB + 512 * KIB);
        let src = v.allocate(MIB).unwrap();
        let dst = v.allocate(512 * KIB).unwrap();
        let small = v.allocate(8 * KIB).unwrap();
        for a in [src, dst] {
            let pages = v.logical_pages(a).unwrap();
            assert!(
                pages
                    .chunks(16)
                    .all(|r| r[0] % 16 == 0
                        && r.iter().enumerate().all(|(i, &l)| l == r[0] + i as u64)),
                "{name}: VidMm backs 64 KiB-multiple allocations with 64 KiB runs"
            );
        }
        v.map(p, src, src_va).unwrap();
        v.map(p, dst, dst_va).unwrap();
        let s = v.stats();
        // The first mapping rewrites the fresh table in 64 KiB form (all 32 entries), the
        // second writes its 8: one entry per 64 KiB page.
        assert_eq!(s.ptes_64k_written, 32 + 8, "{name}: 64 KiB entries written");
        assert_eq!(
            s.leaf_kind_changes, 1,
            "{name}: the new table became a 64 KiB table"
        );

        // Filled by the paging process, copied by the process through its 64 KiB pages.
        v.fill(src, 0, MIB, 0x6464_0001).unwrap();
        v.fill(src, 1020 * KIB, 4 * KIB, 0x6464_0002).unwrap();
        let misses = user_copy_misses(
            &m,
            id,
            &mut v,
            p,
            cmd,
            dst_va,
            src_va + 512 * KIB,
            512 * KIB,
        );
        assert!(
            (16..=20).contains(&misses),
            "{name}: {misses} walks for 2 × 8 64 KiB pages (4 KiB pages would take 256)"
        );
        expect_pattern(&v, dst, 0, 508 * KIB, 0x6464_0001, "64 KiB copy");
        expect_pattern(&v, dst, 508 * KIB, 4 * KIB, 0x6464_0002, "64 KiB copy tail");

        // A 4 KiB-page allocation in the same table turns it into a 4 KiB-page table; the 64 KiB
        // allocations keep working through 4 KiB entries.
        v.map(p, small, small_va).unwrap();
        assert_eq!(
            v.stats().leaf_kind_changes,
            2,
            "{name}: table now 4 KiB pages"
        );
        v.fill(src, 0, 512 * KIB, 0x0404_0003).unwrap();
        let misses = user_copy_misses(&m, id, &mut v, p, cmd, dst_va, src_va, 512 * KIB);
        assert!(
            misses >= 256,
            "{name}: {misses} walks: 4 KiB entries now (2 × 128 pages)"
        );
        expect_pattern(
            &v,
            dst,
            0,
            512 * KIB,
            0x0404_0003,
            "copy through 4 KiB entries",
        );
        run_user_copy(&mut v, p, cmd, CMD_VA, small_va, src_va + 4 * KIB, 8 * KIB).unwrap();
        expect_pattern(&v, small, 0, 8 * KIB, 0x0404_0003, "into the 4 KiB pages");

        // Unmapping it makes the table a 64 KiB-page table again.
        v.unmap(p, small, small_va).unwrap();
        assert_eq!(v.stats().leaf_kind_changes, 3, "{name}: 64 KiB pages again");
        v.fill(src, 0, 512 * KIB, 0x6464_0004).unwrap();
        let misses = user_copy_misses(&m, id, &mut v, p, cmd, dst_va, src_va, 512 * KIB);
        assert!((16..=20).contains(&misses), "{name}: {misses} walks");
        expect_pattern(&v, dst, 0, 512 * KIB, 0x6464_0004, "64 KiB pages again");
        // The unmapped range faults; nothing was written there.
        let r = run_user_copy(&mut v, p, cmd, CMD_VA, small_va, src_va, 4 * KIB);
        assert!(
            matches!(r, Err(VidmmError::DeviceFault { .. })),
            "{name}: {r:?}"
        );
        expect_pattern(&v, small, 0, 8 * KIB, 0x0404_0003, "unmapped, untouched");
        assert_eq!(v.stats().device_faults, 1);
        shutdown(&m, id, v);
        // The fault is a GPU page fault: nothing reached the IOMMU.
        assert!(m.findings().is_empty(), "{:#?}", m.findings());
    }
}

#[test]
fn without_64_kib_page_support_vidmm_uses_4_kib_pages_only() {
    let (m, id) = boot(MachineConfig::windows_11_22h2());
    let config = VidmmConfig {
        pages_64k: false,
        ..VidmmConfig::default()
    };
    let mut v = Vidmm::with_config(&m, id, config).expect("VidMm init");
    let p = v.create_process().unwrap();
    let a = v.allocate(MIB).unwrap();
    v.map(p, a, 0x40_0000_0000).unwrap();
    v.fill(a, 0, MIB, 0x0404_0404).unwrap();
    expect_pattern(&v, a, 0, MIB, 0x0404_0404, "4 KiB pages");
    let s = v.stats();
    assert_eq!((s.ptes_64k_written, s.leaf_kind_changes), (0, 0));
    shutdown(&m, id, v);
    m.assert_clean();
}

/// A logical page no IOMMU mapping covers on this machine.
fn unmapped_logical_page(m: &Machine, id: AdapterId) -> u64 {
    let page = 0x7_FFFF_F000u64 >> 12;
    assert!(!m.dma(id).is_mapped(page << 12));
    page
}

#[test]
fn the_device_cannot_reach_unmapped_evicted_or_foreign_memory() {
    for config in machines() {
        let name = config.name.clone();
        let (m, id) = boot(config);
        let mut v = Vidmm::new(&m, id).expect("VidMm init");
        let p = v.create_process().unwrap();
        let q = v.create_process().unwrap();
        let cmd_p = v.allocate(4096).unwrap();
        let cmd_q = v.allocate(4096).unwrap();
        v.map(p, cmd_p, CMD_VA).unwrap();
        v.map(q, cmd_q, CMD_VA).unwrap();
        let (a_va, b_va, x_va) = (0x100_0000u64, 0x200_0000u64, 0x300_0000u64);
        let a = v.allocate(8192).unwrap();
        let b = v.allocate(8192).unwrap();
        let keep = v.allocate(8192).unwrap();
        v.map(p, a, a_va).unwrap();
        v.map(p, b, b_va).unwrap();
        v.fill(a, 0, 8192, 0xAAAA_AAAA).unwrap();
        v.fill(b, 0, 8192, 0xBBBB_BBBB).unwrap();
        v.fill(keep, 0, 8192, 0x1234_5678).unwrap();
        run_user_copy(&mut v, p, cmd_p, CMD_VA, b_va, a_va, 4096).unwrap();
        expect_pattern(&v, b, 0, 4096, 0xAAAA_AAAA, "mapped copy works");
        let faults_before = m.interrupt_notifications(id).len();

        let mut errors = Vec::new();
        // Faults in an address space are GPU page faults: DMA_PAGE_FAULTED naming the VA, the
        // level of the invalid entry, the access and the process, asking for an engine reset.
        let in_process = sys::DXGK_PAGE_FAULT_ENGINE_RESET_REQUIRED.0
            | sys::DXGK_PAGE_FAULT_PROCESS_HANDLE_VALID.0;
        let page_fault = |e: &VidmmError| match e {
            VidmmError::DeviceFault { notification, .. } => {
                assert_eq!(
                    notification.kind,
                    sys::DXGK_INTERRUPT_DMA_PAGE_FAULTED.0,
                    "{name}: {e:?}"
                );
                let f = notification.page_fault.expect("page-fault fields");
                assert_eq!(f.error_code, 0, "GeneralErrorCode PAGE_FAULT");
                f
            }
            other => panic!("{name}: {other:?}"),
        };
        // 1. A VA never mapped: the source's 1 GiB region has no level-1 table (level 2 entry).
        let e = run_user_copy(&mut v, p, cmd_p, CMD_VA, b_va, 0x7000_0000, 4096).unwrap_err();
        let f = page_fault(&e);
        assert_eq!((f.address, f.level, f.flags), (0x7000_0000, 2, in_process));
        assert_eq!(f.process, v.dxgk_process_handle(p).unwrap() as usize);
        errors.push(e);
        // ... and as the destination: the same fault, as a write.
        let e = run_user_copy(&mut v, p, cmd_p, CMD_VA, 0x7000_0000, b_va, 4096).unwrap_err();
        let f = page_fault(&e);
        let write = sys::DXGK_PAGE_FAULT_WRITE.0;
        assert_eq!(
            (f.address, f.level, f.flags),
            (0x7000_0000, 2, in_process | write)
        );
        errors.push(e);
        // 2. Another process's memory: q has no mapping at b_va / a_va (q's only 2 MiB table
        // covers CMD_VA, so the level-1 entry for a_va is invalid).
        let e = run_user_copy(&mut v, q, cmd_q, CMD_VA, b_va, a_va, 4096).unwrap_err();
        let f = page_fault(&e);
        assert_eq!((f.address, f.level, f.flags), (a_va, 1, in_process));
        assert_eq!(f.process, v.dxgk_process_handle(q).unwrap() as usize);
        errors.push(e);
        // 3. An evicted allocation: its VA is invalid again and its pages are gone.
        v.evict(a).unwrap();
        assert_eq!(v.fill(a, 0, 4, 1), Err(VidmmError::Evicted(a)));
        let e = run_user_copy(&mut v, p, cmd_p, CMD_VA, b_va + 4096, a_va, 4096).unwrap_err();
        let f = page_fault(&e);
        assert_eq!((f.address, f.flags), (a_va, in_process));
        assert!(f.level <= 1, "{name}: {f:?}");
        errors.push(e);
        assert!(
            m.iommu_faults().is_empty(),
            "GPU page faults stop at the page tables: {:?}",
            m.iommu_faults()
        );
        // 4. A PTE naming a logical page the IOMMU does not map: an IOMMU fault, no access.
        let bogus = unmapped_logical_page(&m, id);
        v.map_logical(p, x_va, &[Some(bogus)], true).unwrap();
        let e = run_user_copy(&mut v, p, cmd_p, CMD_VA, b_va, x_va, 4096).unwrap_err();
        let f = page_fault(&e);
        // The address is the logical one the IOMMU refused; no VA, so no process is named.
        let iommu_flags =
            sys::DXGK_PAGE_FAULT_ENGINE_RESET_REQUIRED.0 | sys::DXGK_PAGE_FAULT_IOMMU.0;
        assert_eq!(
            (f.address, f.flags, f.process),
            (bogus << 12, iommu_flags, 0)
        );
        errors.push(e);
        let iommu = m.iommu_faults();
        assert_eq!(iommu.len(), 1, "{name}: {iommu:?}");
        assert_eq!(iommu[0].logical_addr, bogus << 12);
        assert!(!iommu[0].write);

        // Every fault went through the driver's fault path, one DMA_PAGE_FAULTED each, naming
        // the submission that faulted (also after the resets that followed earlier faults).
        for e in &errors {
            match e {
                VidmmError::DeviceFault {
                    fence,
                    faulted_fence,
                    ..
                } => assert_eq!(fence, faulted_fence, "{name}: FaultedFenceId"),
                other => panic!("{name}: {other:?}"),
            }
        }
        let faulted: Vec<_> = m.interrupt_notifications(id)[faults_before..]
            .iter()
            .filter(|n| {
                n.kind == sys::DXGK_INTERRUPT_DMA_FAULTED.0
                    || n.kind == sys::DXGK_INTERRUPT_DMA_PAGE_FAULTED.0
            })
            .copied()
            .collect();
        assert_eq!(faulted.len(), 5, "{name}: {faulted:?}");
        assert_eq!(v.stats().device_faults, 5);
        // Nothing else was touched.
        expect_pattern(&v, b, 0, 4096, 0xAAAA_AAAA, "b page 0");
        expect_pattern(&v, b, 4096, 4096, 0xBBBB_BBBB, "b page 1");
        expect_pattern(&v, keep, 0, 8192, 0x1234_5678, "unrelated allocation");
        // After the resets (TDR) every address space works again.
        v.fill(keep, 0, 4096, 0x7777_7777).unwrap();
        expect_pattern(&v, keep, 0, 4096, 0x7777_7777, "paging after TDR");
        run_user_copy(&mut v, p, cmd_p, CMD_VA, b_va + 4096, b_va, 4096).unwrap();
        expect_pattern(&v, b, 4096, 4096, 0xAAAA_AAAA, "user copy after TDR");

        shutdown(&m, id, v);
        let findings = m.findings();
        assert!(
            findings.iter().all(|f| f.rule == Rule::IommuFault),
            "{name}: only the provoked IOMMU fault: {findings:#?}"
        );
        assert_eq!(findings.len(), 1);
    }
}

#[test]
fn a_pte_change_without_flush_tlb_is_stale_until_flushed() {
    for config in machines() {
        let name = config.name.clone();
        let (m, id) = boot(config);
        let mut v = Vidmm::new(&m, id).expect("VidMm init");
        let p = v.create_process().unwrap();
        let cmd = v.allocate(4096).unwrap();
        v.map(p, cmd, CMD_VA).unwrap();
        let (va, out_va) = (0x100_0000u64, 0x200_0000u64);
        let a = v.allocate(4096).unwrap();
        let b = v.allocate(4096).unwrap();
        let out = v.allocate(4096).unwrap();
        v.fill(a, 0, 4096, 0xAAAA_0001).unwrap();
        v.fill(b, 0, 4096, 0xBBBB_0002).unwrap();
        v.map(p, a, va).unwrap();
        v.map(p, out, out_va).unwrap();
        run_user_copy(&mut v, p, cmd, CMD_VA, out_va, va, 4096).unwrap();
        expect_pattern(&v, out, 0, 4096, 0xAAAA_0001, "through a");
        // Point the PTE at b but skip FLUSH_TLB: the device keeps the cached translation.
        let b_page = v.logical_pages(b).unwrap()[0];
        v.map_logical(p, va, &[Some(b_page)], false).unwrap();
        run_user_copy(&mut v, p, cmd, CMD_VA, out_va, va, 4096).unwrap();
        expect_pattern(&v, out, 0, 4096, 0xAAAA_0001, &format!("{name}: stale TLB"));
        // With the flush, the new translation is used.
        v.map_logical(p, va, &[Some(b_page)], true).unwrap();
        run_user_copy(&mut v, p, cmd, CMD_VA, out_va, va, 4096).unwrap();
        expect_pattern(
            &v,
            out,
            0,
            4096,
            0xBBBB_0002,
            &format!("{name}: after FLUSH_TLB"),
        );
        shutdown(&m, id, v);
        m.assert_clean();
    }
}

#[test]
fn a_submission_that_does_not_complete_in_bounded_time_is_a_possible_hang() {
    let (m, id) = boot(MachineConfig::windows_11_22h2());
    let mut v = Vidmm::new(&m, id).expect("VidMm init");
    let work = long_fill(&mut v, CMD_VA, 0x4242_4242);
    v.set_max_service_rounds(0);
    let e = v
        .submit_user(work.process, work.cmd_va, work.len)
        .unwrap_err();
    assert!(matches!(e, VidmmError::Hang { .. }), "{e:?}");
    let hangs = m.findings_of(Rule::PossibleHang);
    assert_eq!(hangs.len(), 1, "{hangs:?}");
    assert_eq!(v.stats().resets, 1, "TDR after the hang");
    // The adapter works after the TDR.
    v.set_max_service_rounds(VidmmConfig::default().max_service_rounds);
    v.fill(work.page, 0, 4096, 0x1111_2222).unwrap();
    expect_pattern(&v, work.page, 0, 4096, 0x1111_2222, "after TDR");
    shutdown(&m, id, v);
    assert_eq!(m.findings().len(), 1, "{:#?}", m.findings());
}

// ---- property test -------------------------------------------------------------------------

const PROCS: usize = 2;
/// 64 KiB (64 KiB pages), 36 KiB (4 KiB pages) in the same leaf table as the first — so
/// mapping and unmapping it switches that table's kind — and 128 KiB (64 KiB pages).
const ALLOC_PAGES: [u64; 3] = [16, 9, 32];

#[derive(Clone, Debug)]
enum Op {
    Map {
        p: usize,
        a: usize,
    },
    Unmap {
        p: usize,
        a: usize,
    },
    Fill {
        a: usize,
        off: u64,
        len: u64,
        pattern: u32,
    },
    Transfer {
        src: usize,
        dst: usize,
        so: u64,
        d_o: u64,
        len: u64,
    },
    Evict {
        a: usize,
    },
    MakeResident {
        a: usize,
    },
    UserCopy {
        p: usize,
        src: usize,
        dst: usize,
        len: u64,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let p = 0..PROCS;
    let a = 0..ALLOC_PAGES.len();
    prop_oneof![
        (p.clone(), a.clone()).prop_map(|(p, a)| Op::Map { p, a }),
        (p.clone(), a.clone()).prop_map(|(p, a)| Op::Unmap { p, a }),
        (a.clone(), 0u64..9216, 0u64..9216, any::<u32>()).prop_map(|(a, off, len, pattern)| {
            Op::Fill {
                a,
                off: off * 4,
                len: len * 4,
                pattern,
            }
        }),
        (a.clone(), a.clone(), 0u64..36864, 0u64..36864, 0u64..36864).prop_map(
            |(src, dst, so, d_o, len)| Op::Transfer {
                src,
                dst,
                so,
                d_o,
                len
            }
        ),
        a.clone().prop_map(|a| Op::Evict { a }),
        a.clone().prop_map(|a| Op::MakeResident { a }),
        (p, a.clone(), a, 1u64..36864).prop_map(|(p, src, dst, len)| Op::UserCopy {
            p,
            src,
            dst,
            len
        }),
    ]
}

fn va_of(a: usize) -> u64 {
    0x1000_0000 + a as u64 * 0x10_0000
}

/// The reference: bytes of each allocation (None once evicted) and what each process maps.
struct Model {
    /// Contents of resident allocations (None: evicted).
    mem: Vec<Option<Vec<u8>>>,
    /// Contents an eviction paged out.
    paged_out: Vec<Option<Vec<u8>>>,
    /// Mapping recorded at `va_of(a)` in process `p` (kept across an eviction; the GPU reaches
    /// it only while resident).
    mapped: [[bool; 3]; PROCS],
}

/// Runs `ops` on a hardware adapter, or (`soft`) on a soft one with every allocation in the
/// aperture.
fn run_ops(config: MachineConfig, soft: bool, ops: &[Op]) -> Result<(), TestCaseError> {
    let (m, id) = if soft {
        boot_soft(config)
    } else {
        boot(config)
    };
    let place = |bytes: u64| {
        if soft {
            in_aperture(bytes)
        } else {
            AllocSpec::system(bytes)
        }
    };
    let mut v = Vidmm::with_config(
        &m,
        id,
        VidmmConfig {
            // A handful of PTEs per buffer: most operations resume through MultipassOffset.
            dma_buffer_size: 64,
            ..VidmmConfig::default()
        },
    )
    .expect("VidMm init");
    let procs: Vec<ProcessId> = (0..PROCS).map(|_| v.create_process().unwrap()).collect();
    let mut cmds = Vec::new();
    for &p in &procs {
        let c = v.allocate_placed(place(4096)).unwrap();
        v.map(p, c, CMD_VA).unwrap();
        cmds.push(c);
    }
    let allocs: Vec<AllocId> = ALLOC_PAGES
        .iter()
        .map(|&n| v.allocate_placed(place(n * 4096)).unwrap())
        .collect();
    let mut model = Model {
        mem: ALLOC_PAGES
            .iter()
            .map(|&n| Some(vec![0u8; (n * 4096) as usize]))
            .collect(),
        paged_out: vec![None; ALLOC_PAGES.len()],
        mapped: [[false; 3]; PROCS],
    };
    for op in ops {
        match *op {
            Op::Map { p, a } => {
                if model.mem[a].is_none() {
                    prop_assert_eq!(
                        v.map(procs[p], allocs[a], va_of(a)),
                        Err(VidmmError::Evicted(allocs[a]))
                    );
                } else if !model.mapped[p][a] {
                    v.map(procs[p], allocs[a], va_of(a)).unwrap();
                    model.mapped[p][a] = true;
                }
            }
            Op::Unmap { p, a } => {
                if model.mapped[p][a] {
                    v.unmap(procs[p], allocs[a], va_of(a)).unwrap();
                    model.mapped[p][a] = false;
                } else {
                    prop_assert!(v.unmap(procs[p], allocs[a], va_of(a)).is_err());
                }
            }
            Op::Fill {
                a,
                off,
                len,
                pattern,
            } => {
                let size = ALLOC_PAGES[a] * 4096;
                let (off, len) = (off % size, len.min(size - off % size));
                let r = v.fill(allocs[a], off, len, pattern);
                match &mut model.mem[a] {
                    None => prop_assert_eq!(r, Err(VidmmError::Evicted(allocs[a]))),
                    Some(bytes) => {
                        r.unwrap();
                        for i in (off..off + len).step_by(4) {
                            bytes[i as usize..i as usize + 4]
                                .copy_from_slice(&pattern.to_le_bytes());
                        }
                    }
                }
            }
            Op::Transfer {
                src,
                dst,
                so,
                d_o,
                len,
            } => {
                if src == dst {
                    continue; // COPY of overlapping ranges is unspecified
                }
                let (ss, ds) = (ALLOC_PAGES[src] * 4096, ALLOC_PAGES[dst] * 4096);
                let (so, d_o) = (so % ss, d_o % ds);
                let len = len.min(ss - so).min(ds - d_o);
                let r = v.transfer_at(allocs[src], so, allocs[dst], d_o, len);
                if model.mem[src].is_none() || model.mem[dst].is_none() {
                    prop_assert!(matches!(r, Err(VidmmError::Evicted(_))), "{:?}", r);
                } else {
                    r.unwrap();
                    let chunk =
                        model.mem[src].as_ref().unwrap()[so as usize..(so + len) as usize].to_vec();
                    model.mem[dst].as_mut().unwrap()[d_o as usize..(d_o + len) as usize]
                        .copy_from_slice(&chunk);
                }
            }
            Op::Evict { a } => {
                let r = v.evict(allocs[a]);
                match model.mem[a].take() {
                    None => prop_assert_eq!(r, Err(VidmmError::Evicted(allocs[a]))),
                    Some(bytes) => {
                        r.unwrap();
                        model.paged_out[a] = Some(bytes);
                    }
                }
            }
            Op::MakeResident { a } => {
                let r = v.make_resident(allocs[a]);
                let paged_in = model.mem[a].is_none();
                prop_assert_eq!(r, Ok(paged_in));
                if paged_in {
                    model.mem[a] = model.paged_out[a].take();
                }
            }
            Op::UserCopy { p, src, dst, len } => {
                if src == dst {
                    continue;
                }
                let len = len
                    .min(ALLOC_PAGES[src] * 4096)
                    .min(ALLOC_PAGES[dst] * 4096);
                let r = run_user_copy(
                    &mut v,
                    procs[p],
                    cmds[p],
                    CMD_VA,
                    va_of(dst),
                    va_of(src),
                    len,
                );
                let reaches = |a: usize| model.mapped[p][a] && model.mem[a].is_some();
                if reaches(src) && reaches(dst) {
                    r.unwrap();
                    let chunk = model.mem[src].as_ref().unwrap()[..len as usize].to_vec();
                    model.mem[dst].as_mut().unwrap()[..len as usize].copy_from_slice(&chunk);
                } else {
                    prop_assert!(matches!(r, Err(VidmmError::DeviceFault { .. })), "{:?}", r);
                }
            }
        }
        for (i, bytes) in model.mem.iter().enumerate() {
            if let Some(bytes) = bytes {
                let got = v.read(allocs[i], 0, bytes.len()).unwrap();
                prop_assert!(got == *bytes, "allocation {} differs after {:?}", i, op);
            }
        }
    }
    shutdown(&m, id, v);
    // Faults are GPU page faults (PTE_INVALID): nothing reaches the IOMMU.
    let findings = m.findings();
    prop_assert!(findings.is_empty(), "{:#?}", findings);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 32,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// Device 0: hardware, WDDM 2.4 identity; 1: hardware, 3.1 remapped; 2: soft rgpu, 3.1
    /// identity, allocations in the aperture (evicted by UNMAP_APERTURE_SEGMENT with their
    /// pages kept, made resident in a new aperture range).
    #[test]
    fn random_paging_sequences_agree_with_a_reference_model(
        device in 0u8..3,
        ops in prop::collection::vec(op(), 1..=20),
    ) {
        let soft = device == 2;
        let config = match device {
            0 => MachineConfig::windows_10_1803().with_iommu(IommuMode::Identity),
            1 => MachineConfig::windows_11_22h2().with_iommu(IommuMode::Remapped),
            _ => MachineConfig::windows_11_22h2().with_iommu(IommuMode::Identity),
        };
        run_ops(config, soft, &ops)?;
    }
}

// ---- the aperture segment ----------------------------------------------------------------------

const APERTURE: u32 = rgpu::caps::APERTURE_SEGMENT_ID;

fn in_aperture(bytes: u64) -> AllocSpec {
    AllocSpec {
        segment: APERTURE,
        ..AllocSpec::system(bytes)
    }
}

/// Whether the DXGK_ADL of aperture allocation `a` is one contiguous run.
fn adl_is_contiguous(v: &Vidmm, a: AllocId) -> bool {
    let adl = v.aperture_adl(a).expect("an ADL on the remapping path");
    // SAFETY: a live ADL VidMm holds for `a` (Dxgkrnl's storage, freed only when `a` leaves
    // the aperture).
    let adl = unsafe { adl.read() };
    adl.Flags.Contiguous() != 0
}

/// Aperture allocations on both memory paths (WDDM 2.4: MAP_APERTURE_SEGMENT with MDLs; 3.1
/// remapped: MAP_APERTURE_SEGMENT2 with contiguous and page-list ADLs): every byte written by
/// the device through the MMU → aperture → GART → IOMMU (VIRTUAL_FILL, VIRTUAL_TRANSFER and a
/// user COPY), UNMAP_APERTURE_SEGMENT at evict and destroy, a new aperture range at
/// MakeResident, with 4 KiB paging buffers (multipass).
#[test]
fn aperture_allocations_are_mapped_used_evicted_remapped_and_unmapped_on_both_paths() {
    let mut runs = Vec::new();
    for config in machines() {
        let remapped = config.iommu == IommuMode::Remapped;
        runs.push((config.clone(), true));
        if remapped {
            runs.push((config, false));
        }
    }
    for (config, contiguous) in runs {
        let name = format!("{} (contiguous ADLs: {contiguous})", config.name);
        let remapped = config.iommu == IommuMode::Remapped;
        let (m, id) = boot(config);
        let cfg = VidmmConfig {
            contiguous_adls: contiguous,
            ..small_buffers()
        };
        let mut v = Vidmm::with_config(&m, id, cfg).expect("VidMm init");
        let want = if remapped {
            ApertureMode::Adl { cpu_visible: true }
        } else {
            ApertureMode::Mdl
        };
        assert_eq!(v.aperture_mode(), &want, "{name}");
        // The paging buffer lives in the aperture (rgpu's PagingBufferSegmentId).
        let buffer_pages = v.aperture_mapped_pages(APERTURE);
        assert_eq!(buffer_pages, 1, "{name}: the 4 KiB paging buffer is mapped");
        let p = v.create_process().unwrap();
        let cmd = v.allocate(4096).unwrap();
        v.map(p, cmd, CMD_VA).unwrap();
        let size = 2 * MIB + 12 * KIB;
        let a = v.allocate_placed(in_aperture(size)).unwrap();
        let b = v.allocate(size).unwrap();
        let c = v.allocate_placed(in_aperture(size)).unwrap();
        assert_eq!((v.segment_of(a), v.segment_of(b)), (Ok(APERTURE), Ok(0)));
        let pages = size / 4096;
        assert_eq!(v.aperture_mapped_pages(APERTURE), buffer_pages + 2 * pages);
        if remapped {
            assert_eq!(adl_is_contiguous(&v, a), contiguous, "{name}: ADL form");
        } else {
            assert!(v.aperture_adl(a).is_none(), "{name}: MDL path, no ADL");
        }
        // Across a leaf table.
        let (va, vb, vc) = (0x3FF0_0000, 0x100_3FF0_0000, 0x200_3FF0_0000);
        v.map(p, a, va).unwrap();
        v.map(p, b, vb).unwrap();
        v.map(p, c, vc).unwrap();
        v.fill(a, 0, size, 0x1357_9BDF).unwrap();
        expect_pattern(&v, a, 0, size, 0x1357_9BDF, &format!("{name}: fill"));
        v.transfer(a, b, size).unwrap();
        expect_pattern(&v, b, 0, size, 0x1357_9BDF, &format!("{name}: transfer"));
        v.fill(b, 4096 + 8, 100, 0xDEAD_BEEF).unwrap();
        run_user_copy(&mut v, p, cmd, CMD_VA, vc, vb, size).unwrap();
        expect_pattern(
            &v,
            c,
            0,
            4096 + 8,
            0x1357_9BDF,
            &format!("{name}: user copy"),
        );
        expect_pattern(&v, c, 4096 + 8, 100, 0xDEAD_BEEF, "user copy, middle");
        expect_pattern(
            &v,
            c,
            4096 + 108,
            size - 4096 - 108,
            0x1357_9BDF,
            "user copy, end",
        );
        // Evict: PTEs invalidated, aperture range unmapped, and nothing paged out: the backing
        // store of an aperture allocation is system memory already, so its pages are kept and
        // the device copies nothing (no VIRTUAL_TRANSFER) on the way out or back in.
        let copied = |m: &Machine| {
            m.device_counters(id)
                .into_iter()
                .find(|(k, _)| *k == "bytes_copied")
                .map(|(_, n)| n)
                .unwrap()
        };
        let (unmaps, copied_before) = (v.stats().aperture_unmaps, copied(&m));
        v.evict(c).unwrap();
        assert_eq!(v.stats().aperture_unmaps, unmaps + 1);
        assert_eq!(
            copied(&m),
            copied_before,
            "{name}: eviction from the aperture copies nothing"
        );
        assert_eq!(v.aperture_mapped_pages(APERTURE), buffer_pages + pages);
        assert_eq!(v.aperture_range(c), None);
        // Something else takes c's old range; MakeResident maps c somewhere new.
        let d = v.allocate_placed(in_aperture(size)).unwrap();
        assert!(v.make_resident(c).unwrap());
        assert_eq!(copied(&m), copied_before, "{name}: nor does MakeResident");
        let (_, first, n) = v.aperture_range(c).unwrap();
        assert_eq!(n, pages);
        assert_ne!(Some(first), v.aperture_range(d).map(|r| r.1));
        expect_pattern(&v, c, 0, 4096 + 8, 0x1357_9BDF, "paged back in");
        // Its GPU VA mapping now names the new aperture pages: the device reads it there.
        run_user_copy(&mut v, p, cmd, CMD_VA, va, vc, size).unwrap();
        expect_pattern(
            &v,
            a,
            4096 + 8,
            100,
            0xDEAD_BEEF,
            &format!("{name}: after remap"),
        );
        // Destroy: GPU VA unmapped, aperture range unmapped.
        for x in [a, b, c, d] {
            v.free(x).unwrap();
        }
        assert_eq!(v.aperture_mapped_pages(APERTURE), buffer_pages);
        let s = v.stats();
        println!("{name}: {s:?}");
        assert!(
            s.multipass_resumes > 0,
            "4 KiB paging buffers force multipass"
        );
        let chunks = if remapped { 1 } else { pages.div_ceil(4089) };
        assert_eq!(
            s.aperture_maps,
            1 + 4 * chunks,
            "{name}: paging buffer + 4 mappings"
        );
        assert_eq!(s.aperture_unmaps, 4, "{name}: evict + 3 frees … and d");
        assert_eq!((s.device_faults, s.resets), (0, 0));
        shutdown(&m, id, v);
        assert_eq!(m.live_adls(), 0, "{name}: every ADL freed");
        m.assert_clean();
    }
}

#[test]
fn the_verifier_flags_an_adl_used_after_free_and_an_unmap_of_a_range_never_mapped() {
    let config = MachineConfig::windows_11_22h2().with_iommu(IommuMode::Remapped);
    let (m, id) = boot(config);
    let mut v = Vidmm::new(&m, id).unwrap();
    let a = v.allocate_placed(in_aperture(8192)).unwrap();
    let adl = v.aperture_adl(a).unwrap();
    v.map_aperture_adl(APERTURE, 900, adl, 1, 1)
        .expect("a live ADL maps");
    v.unmap_aperture_range(APERTURE, 900, 1)
        .expect("a mapped range unmaps");
    assert!(m.findings().is_empty(), "{:?}", m.findings());
    // Evicting `a` frees its ADL; the stale pointer must not reach the driver again.
    v.evict(a).unwrap();
    assert!(v.map_aperture_adl(APERTURE, 900, adl, 0, 1).is_err());
    let f = m.findings_of(Rule::MdlMisuse);
    assert_eq!(f.len(), 1, "{f:?}");
    assert!(
        f[0].detail.contains("after DxgkCbFreeAdl"),
        "{}",
        f[0].detail
    );
    // Pages 900.. were unmapped already; 950 was never mapped.
    for (first, pages) in [(900, 1), (950, 2)] {
        assert!(v.unmap_aperture_range(APERTURE, first, pages).is_err());
    }
    let f = m.findings_of(Rule::MdlMisuse);
    assert_eq!(f.len(), 3, "{f:?}");
    assert!(f[1..]
        .iter()
        .all(|f| f.detail.contains("which no MAP_APERTURE_SEGMENT")));
    v.destroy().unwrap();
}

// ---- interposing on the driver's DDIs ----

static ORIGINAL_QAI: std::sync::OnceLock<sys::PFN_DXGKDDI_QUERYADAPTERINFO> =
    std::sync::OnceLock::new();
static ORIGINAL_BPB: std::sync::OnceLock<sys::PFN_DXGKDDI_BUILDPAGINGBUFFER> =
    std::sync::OnceLock::new();
/// `CpuVisibleAddress` of every MAP_APERTURE_SEGMENT2 the spy saw (non-NULL or not).
static SEEN_CPU_VISIBLE: std::sync::Mutex<Vec<bool>> = std::sync::Mutex::new(Vec::new());

/// rgpu's DxgkDdiQueryAdapterInfo (kept in [`ORIGINAL_QAI`]), then `edit` on its answer when
/// the query is of type `ty`, whose output is a `T`.
///
/// # Safety
/// As DxgkDdiQueryAdapterInfo; `T` must be the output type of `ty`.
unsafe fn qai_rewriting<T>(
    h: sys::HANDLE,
    q: *const sys::DXGKARG_QUERYADAPTERINFO,
    ty: sys::DXGK_QUERYADAPTERINFOTYPE,
    edit: impl FnOnce(&mut T),
) -> sys::NTSTATUS {
    let original = ORIGINAL_QAI.get().expect("installed");
    // SAFETY: forwarded as Dxgkrnl called it (caller).
    let status = unsafe { original(h, q) };
    // SAFETY: Dxgkrnl's argument block, valid for the call.
    let q = unsafe { &*q };
    if status == 0 && q.Type == ty {
        let out = q.pOutputData.cast::<T>();
        // SAFETY: the output buffer of type `T` (caller) the driver just filled.
        let mut v = unsafe { out.read_unaligned() };
        edit(&mut v);
        // SAFETY: as above.
        unsafe { out.write_unaligned(v) };
    }
    status
}

/// rgpu's DxgkDdiQueryAdapterInfo, with MapAperture2Supported cleared from DRIVERCAPS.
unsafe extern "system" fn qai_without_map_aperture2(
    h: sys::HANDLE,
    q: *const sys::DXGKARG_QUERYADAPTERINFO,
) -> sys::NTSTATUS {
    let ty = sys::DXGKQAITYPE_DRIVERCAPS;
    // SAFETY: as Dxgkrnl called us; DRIVERCAPS answers a DXGK_DRIVERCAPS.
    unsafe {
        qai_rewriting(h, q, ty, |c: &mut sys::DXGK_DRIVERCAPS| {
            c.MemoryManagementCaps.set_MapAperture2Supported(0)
        })
    }
}

/// rgpu's DxgkDdiBuildPagingBuffer, recording MAP_APERTURE_SEGMENT2's CpuVisibleAddress.
unsafe extern "system" fn bpb_spy(
    h: sys::HANDLE,
    a: *mut sys::DXGKARG_BUILDPAGINGBUFFER,
) -> sys::NTSTATUS {
    // SAFETY: VidMm's argument block, valid for the call.
    let args = unsafe { &*a };
    if args.Operation == sys::DXGK_OPERATION_MAP_APERTURE_SEGMENT2 {
        // SAFETY: the operation selects this member of the union.
        let cpu = unsafe { args.u.MapApertureSegment2.CpuVisibleAddress };
        SEEN_CPU_VISIBLE.lock().unwrap().push(!cpu.is_null());
    }
    let original = ORIGINAL_BPB.get().expect("installed");
    // SAFETY: forwarded as VidMm called it.
    unsafe { original(h, a) }
}

/// Learn (IOMMU DMA remapping; DXGK_BUILDPAGINGBUFFER_MAPAPERTURESEGMENT2): a remapping driver
/// gets MAP_APERTURE_SEGMENT2; its CpuVisibleAddress is non-NULL only for an allocation with
/// MapApertureCpuVisible (and AccessedPhysically) on a driver that declared
/// MapAperture2Supported. Without the cap the operation is the same, with a NULL address.
#[test]
fn cpu_visible_address_needs_map_aperture2_supported_and_the_allocation_flag() {
    for declared in [true, false] {
        let config = MachineConfig::windows_11_22h2().with_iommu(IommuMode::Remapped);
        let (m, id) = boot_with(config, |d| {
            let _ = ORIGINAL_BPB.set(d.DxgkDdiBuildPagingBuffer.unwrap());
            d.DxgkDdiBuildPagingBuffer = Some(bpb_spy);
            if !declared {
                let _ = ORIGINAL_QAI.set(d.DxgkDdiQueryAdapterInfo.unwrap());
                d.DxgkDdiQueryAdapterInfo = Some(qai_without_map_aperture2);
            }
        });
        let mut v = Vidmm::new(&m, id).unwrap();
        assert_eq!(
            v.aperture_mode(),
            &ApertureMode::Adl {
                cpu_visible: declared
            }
        );
        SEEN_CPU_VISIBLE.lock().unwrap().clear();
        let plain = v.allocate_placed(in_aperture(4096)).unwrap();
        let visible = v
            .allocate_placed(AllocSpec {
                map_cpu_visible: true,
                ..in_aperture(4096)
            })
            .unwrap();
        assert_eq!(*SEEN_CPU_VISIBLE.lock().unwrap(), [false, declared]);
        v.fill(visible, 0, 4096, 0x2468_ACE0).unwrap();
        expect_pattern(
            &v,
            visible,
            0,
            4096,
            0x2468_ACE0,
            "the operation still maps",
        );
        v.free(plain).unwrap();
        shutdown(&m, id, v);
        m.assert_clean();
    }
}

static ORIGINAL_BPB_MULTIPASS: std::sync::OnceLock<sys::PFN_DXGKDDI_BUILDPAGINGBUFFER> =
    std::sync::OnceLock::new();
/// The multipass spy acts only while armed (after VidMm's init).
static MULTIPASS_ARMED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
/// Aperture operations the spy saw resumed with its MultipassOffset, by operation code.
static RESUMED: std::sync::Mutex<Vec<i32>> = std::sync::Mutex::new(Vec::new());
const SPY_MULTIPASS_OFFSET: u32 = 0xA9;

/// rgpu's DxgkDdiBuildPagingBuffer behind a driver that needs two passes for every aperture
/// operation: the first pass writes a NOP, records its progress in MultipassOffset and returns
/// STATUS_GRAPHICS_INSUFFICIENT_DMA_BUFFER; the resumed call must come back with that offset.
unsafe extern "system" fn bpb_two_pass_aperture(
    h: sys::HANDLE,
    a: *mut sys::DXGKARG_BUILDPAGINGBUFFER,
) -> sys::NTSTATUS {
    // SAFETY: VidMm's argument block, valid and exclusively ours for the call.
    let args = unsafe { &mut *a };
    let op = args.Operation;
    let aperture_op = [
        sys::DXGK_OPERATION_MAP_APERTURE_SEGMENT,
        sys::DXGK_OPERATION_MAP_APERTURE_SEGMENT2,
        sys::DXGK_OPERATION_UNMAP_APERTURE_SEGMENT,
    ]
    .contains(&op);
    if aperture_op && MULTIPASS_ARMED.load(std::sync::atomic::Ordering::SeqCst) {
        match args.MultipassOffset {
            0 if args.DmaSize >= 4 => {
                // SAFETY: VidMm's paging buffer has DmaSize bytes from pDmaBuffer.
                let buf =
                    unsafe { std::slice::from_raw_parts_mut(args.pDmaBuffer.cast::<u8>(), 4) };
                let n = Encoder::new(buf).nop(1).expect("a 1-dword NOP fits");
                // SAFETY: `n` ≤ DmaSize bytes on: still inside the buffer.
                args.pDmaBuffer = unsafe { args.pDmaBuffer.cast::<u8>().add(n) }.cast();
                args.MultipassOffset = SPY_MULTIPASS_OFFSET;
                return sys::STATUS_GRAPHICS_INSUFFICIENT_DMA_BUFFER;
            }
            SPY_MULTIPASS_OFFSET => RESUMED.lock().unwrap().push(op.0),
            _ => {}
        }
    }
    let original = ORIGINAL_BPB_MULTIPASS.get().expect("installed");
    // SAFETY: forwarded as VidMm called it.
    unsafe { original(h, a) }
}

/// Aperture operations go through VidMm's multipass loop like any other: a driver that returns
/// STATUS_GRAPHICS_INSUFFICIENT_DMA_BUFFER for MAP_APERTURE_SEGMENT(2) or
/// UNMAP_APERTURE_SEGMENT gets its buffer submitted and the operation again with the preserved
/// MultipassOffset (rgpu itself never needs a second pass: its GART is CPU memory).
#[test]
fn aperture_operations_resume_with_their_multipass_offset() {
    for config in machines() {
        let name = config.name.clone();
        let remapped = config.iommu == IommuMode::Remapped;
        let (m, id) = boot_with(config, |d| {
            let _ = ORIGINAL_BPB_MULTIPASS.set(d.DxgkDdiBuildPagingBuffer.unwrap());
            d.DxgkDdiBuildPagingBuffer = Some(bpb_two_pass_aperture);
        });
        let mut v = Vidmm::new(&m, id).unwrap();
        RESUMED.lock().unwrap().clear();
        MULTIPASS_ARMED.store(true, std::sync::atomic::Ordering::SeqCst);
        let before = v.stats().multipass_resumes;
        let p = v.create_process().unwrap();
        let a = v.allocate_placed(in_aperture(3 * 4096)).unwrap();
        v.map(p, a, 0x20_0000).unwrap();
        v.fill(a, 0, 3 * 4096, 0x600D_CAFE).unwrap();
        v.evict(a).unwrap();
        v.make_resident(a).unwrap();
        expect_pattern(
            &v,
            a,
            0,
            3 * 4096,
            0x600D_CAFE,
            &format!("{name}: paged back in"),
        );
        v.free(a).unwrap();
        MULTIPASS_ARMED.store(false, std::sync::atomic::Ordering::SeqCst);
        let map = if remapped {
            sys::DXGK_OPERATION_MAP_APERTURE_SEGMENT2
        } else {
            sys::DXGK_OPERATION_MAP_APERTURE_SEGMENT
        };
        let unmap = sys::DXGK_OPERATION_UNMAP_APERTURE_SEGMENT;
        assert_eq!(
            *RESUMED.lock().unwrap(),
            [map.0, unmap.0, map.0, unmap.0],
            "{name}: map, evict, MakeResident, free — each resumed once"
        );
        assert_eq!(v.stats().multipass_resumes - before, 4);
        shutdown(&m, id, v);
        m.assert_clean();
    }
}

/// rgpu's DxgkDdiQueryAdapterInfo, with every page-table level placed in the aperture segment
/// (what a driver whose in-driver engine must see every page as an MDL answers).
unsafe extern "system" fn qai_tables_in_aperture(
    h: sys::HANDLE,
    q: *const sys::DXGKARG_QUERYADAPTERINFO,
) -> sys::NTSTATUS {
    let ty = sys::DXGKQAITYPE_PAGETABLELEVELDESC;
    // SAFETY: as Dxgkrnl called us; PAGETABLELEVELDESC answers a DXGK_PAGE_TABLE_LEVEL_DESC.
    unsafe {
        qai_rewriting(h, q, ty, |d: &mut sys::DXGK_PAGE_TABLE_LEVEL_DESC| {
            d.PageTableSegmentId = APERTURE;
            d.PagingProcessPageTableSegmentId = APERTURE;
        })
    }
}

/// Page tables in the aperture (PageTableSegmentId = PagingProcessPageTableSegmentId = the
/// aperture, on both memory paths): each table is mapped into the aperture, parent entries,
/// the page-table window and DxgkDdiSetRootPageTable name it by aperture segment + offset,
/// CPU_VIRTUAL updates still get its CPU address; every byte still moves through the device.
#[test]
fn page_tables_in_the_aperture_segment_work_on_both_paths() {
    for config in machines() {
        let name = config.name.clone();
        let (m, id) = boot_with(config, |d| {
            let _ = ORIGINAL_QAI.set(d.DxgkDdiQueryAdapterInfo.unwrap());
            d.DxgkDdiQueryAdapterInfo = Some(qai_tables_in_aperture);
        });
        let levels = m.adapter(id).info.page_table_levels.clone();
        assert!(levels.iter().all(|l| l.PageTableSegmentId == APERTURE));
        let mut v = Vidmm::with_config(&m, id, small_buffers()).expect("VidMm init");
        let paging_tables = v.aperture_mapped_pages(APERTURE) - 1;
        assert!(
            paging_tables >= 4,
            "{name}: the paging process's tables are in the aperture"
        );
        let p = v.create_process().unwrap();
        let cmd = v.allocate(4096).unwrap();
        v.map(p, cmd, CMD_VA).unwrap();
        let size = 68 * KIB;
        let a = v.allocate(size).unwrap();
        let b = v.allocate_placed(in_aperture(size)).unwrap();
        let (va, vb) = (0x1F_F000, 0x0100_001F_F000);
        v.map(p, a, va).unwrap();
        v.map(p, b, vb).unwrap();
        let with_tables = v.aperture_mapped_pages(APERTURE);
        v.fill(a, 0, size, 0x7E57_AB1E).unwrap();
        run_user_copy(&mut v, p, cmd, CMD_VA, vb, va, size).unwrap();
        expect_pattern(&v, b, 0, size, 0x7E57_AB1E, &format!("{name}: user copy"));
        v.evict(b).unwrap();
        v.make_resident(b).unwrap();
        run_user_copy(&mut v, p, cmd, CMD_VA, va, vb, size).unwrap();
        expect_pattern(&v, a, 0, size, 0x7E57_AB1E, &format!("{name}: after remap"));
        assert_eq!(v.aperture_mapped_pages(APERTURE), with_tables);
        v.free(b).unwrap();
        // The process's tables leave the aperture with it.
        v.destroy_process(p).unwrap();
        assert_eq!(v.aperture_mapped_pages(APERTURE), 1 + paging_tables);
        assert_eq!(v.stats().device_faults, 0);
        shutdown(&m, id, v);
        assert_eq!(m.live_adls(), 0);
        m.assert_clean();
    }
}

// ---- low resources ---------------------------------------------------------------------------

fn paging_scenario(m: &Machine) -> i32 {
    if m.load_driver(rgpu::ddi::DriverEntry) != sys::STATUS_SUCCESS {
        return sys::STATUS_UNSUCCESSFUL;
    }
    let id = m.add_adapter(support::rgpu_adapter());
    let s = m.start_adapter(id);
    if s != sys::STATUS_SUCCESS {
        m.unload_driver();
        return s;
    }
    let status = match paging_work(m, id) {
        Ok(()) => sys::STATUS_SUCCESS,
        Err(VidmmError::Ddi { status, .. }) => status,
        Err(e) => panic!("unexpected VidMm failure: {e:?}"),
    };
    m.stop_adapter(id);
    m.remove_adapter(id);
    m.unload_driver();
    status
}

fn paging_work(m: &Machine, id: AdapterId) -> Result<(), VidmmError> {
    let mut v = Vidmm::with_config(m, id, small_buffers())?;
    let r = (|| {
        let p = v.create_process()?;
        let a = v.allocate(3 * 4096)?;
        let b = v.allocate(3 * 4096)?;
        v.map(p, a, 0x10_0000)?;
        v.fill(a, 0, 3 * 4096, 0x0BAD_F00D)?;
        v.transfer(a, b, 3 * 4096)?;
        assert_eq!(v.read(b, 8192, 4)?, 0x0BAD_F00Du32.to_le_bytes());
        // 64 KiB pages in the same leaf table: the table changes kind on the way.
        let c = v.allocate(64 * 1024)?;
        v.map(p, c, 0x12_0000)?;
        v.transfer_at(a, 0, c, 0x8000, 3 * 4096)?;
        assert_eq!(v.read(c, 0x8000 + 8192, 4)?, 0x0BAD_F00Du32.to_le_bytes());
        v.unmap(p, a, 0x10_0000)?;
        // An aperture allocation: mapped, filled through the aperture, evicted, made
        // resident again.
        let d = v.allocate_placed(in_aperture(2 * 4096))?;
        v.map(p, d, 0x14_0000)?;
        v.fill(d, 0, 2 * 4096, 0x0D15_EA5E)?;
        v.evict(d)?;
        v.make_resident(d)?;
        assert_eq!(v.read(d, 4096, 4)?, 0x0D15_EA5Eu32.to_le_bytes());
        v.free(d)?;
        Ok(())
    })();
    let d = v.destroy();
    r.and(d)
}

#[test]
fn a_paging_scenario_survives_every_low_resources_failure() {
    for config in machines() {
        let report = dxgk_sim::fault::systematic_on(config.clone(), paging_scenario);
        println!(
            "{}: {} injection points, every run clean",
            config.name, report.injection_points
        );
        assert!(report.injection_points > 0);
    }
}

// ---- soft rgpu --------------------------------------------------------------------------------

/// Paging on a soft adapter (a root-enumerated device: the driver runs the model on its own
/// engine thread): every allocation, the paging buffer and the page tables live in the aperture,
/// and the engine reaches each page through the MDL VidMm passed in MAP_APERTURE_SEGMENT
/// (docs/soft-rgpu.md). VIRTUAL_FILL, VIRTUAL_TRANSFER and a user COPY move every byte, with
/// 4 KiB paging buffers (multipass); VidMm's own system-memory allocation, which the driver
/// never saw an MDL of, faults, and the TDR that follows leaves the adapter working. Both
/// interface generations (both on the WDDM 2.4 MDL path: no remapping opt-in).
#[test]
fn a_soft_adapter_pages_through_the_aperture_and_faults_outside_it() {
    for config in soft_machines() {
        let name = config.name.clone();
        let (m, id) = boot_soft(config);
        assert!(m.debug_contains("soft rgpu"), "{name}: started soft");
        assert!(
            m.debug_contains("WDDM 2.4 MDL pages"),
            "{name}: no remapping on a soft adapter"
        );
        let mut v = Vidmm::with_config(&m, id, small_buffers()).expect("VidMm init");
        let p = v.create_process().expect("process");
        let cmd = v.allocate_placed(in_aperture(4096)).unwrap();
        v.map(p, cmd, CMD_VA).unwrap();
        for (ci, &(size, va)) in [(4 * KIB, 0x20_0000u64), (2 * MIB + 12 * KIB, 0x3FFF_0000)]
            .iter()
            .enumerate()
        {
            let pattern = 0x50F7_0000 | (ci as u32) << 8 | 0x11;
            let src = v.allocate_placed(in_aperture(size)).unwrap();
            let dst = v.allocate_placed(in_aperture(size)).unwrap();
            let dst2 = v.allocate_placed(in_aperture(size)).unwrap();
            let (dst_va, dst2_va) = (va + 0x100_0000_0000, va + 0x200_0000_0000);
            v.map(p, src, va).unwrap();
            v.map(p, dst, dst_va).unwrap();
            v.map(p, dst2, dst2_va).unwrap();
            v.fill(src, 0, size, pattern).unwrap();
            v.transfer(src, dst, size).unwrap();
            expect_pattern(&v, dst, 0, size, pattern, &format!("{name}: transfer"));
            run_user_copy(&mut v, p, cmd, CMD_VA, dst2_va, va, size).unwrap();
            expect_pattern(&v, dst2, 0, size, pattern, &format!("{name}: user copy"));
        }
        assert!(v.stats().multipass_resumes > 0, "{name}: multipass");
        // VidMm's own system memory: no MDL ever reached the driver, so the engine faults.
        let foreign = v.allocate(4096).unwrap();
        v.map(p, foreign, 0x7000_0000).unwrap();
        let err = v.fill(foreign, 0, 4096, 0x1234_5678).unwrap_err();
        assert!(
            matches!(err, VidmmError::DeviceFault { .. }),
            "{name}: expected a device fault, got {err:?}"
        );
        assert_eq!(
            v.stats().resets,
            1,
            "{name}: the fault was recovered by a TDR"
        );
        // After the TDR the aperture still works.
        let after = v.allocate_placed(in_aperture(8192)).unwrap();
        v.map(p, after, 0x9000_0000).unwrap();
        v.fill(after, 0, 8192, 0xC0DE_0001).unwrap();
        expect_pattern(
            &v,
            after,
            0,
            8192,
            0xC0DE_0001,
            &format!("{name}: after TDR"),
        );
        shutdown(&m, id, v);
        m.assert_clean();
    }
}

/// Systematic fault injection over a small paging run on a soft adapter (start, VidMm's paging
/// process, one process, an aperture allocation mapped, filled and read back, teardown): every
/// pool block, page allocation, IOMMU map, MmMapLockedPagesSpecifyCache of a MAP_APERTURE_SEGMENT
/// MDL and thread creation fails in turn, and each run ends without a crash, a hang, a leak or
/// a protocol violation (a MAP whose MDL cannot be mapped leaves its pages without a CPU view:
/// the engine faults on them and the TDR recovers).
#[test]
fn every_injected_failure_in_a_soft_paging_run_is_clean() {
    let config = soft_machines().remove(0);
    let report = dxgk_sim::fault::systematic_on(config, |m| {
        support::soft_sweep_run(m, |m, id| {
            // A small paging process (a 4 MiB scratch window: two leaf tables) keeps the
            // number of aperture-mapped page tables, hence injection points, small.
            let cfg = VidmmConfig {
                scratch_bytes: 4 << 20,
                page_table_slots: 64,
                ..small_buffers()
            };
            if let Ok(mut v) = Vidmm::with_config(m, id, cfg) {
                let run = (|| -> Result<(), VidmmError> {
                    let p = v.create_process()?;
                    let a = v.allocate_placed(in_aperture(8192))?;
                    v.map(p, a, 0x20_0000)?;
                    v.fill(a, 0, 8192, 0x0BAD_F00D)?;
                    v.read(a, 0, 8).map(|_| ())
                })();
                let _ = run;
                let _ = v.destroy();
            }
        })
    });
    println!("{}", report.summary().lines().next().unwrap_or(""));
    assert!(report.injection_points >= 10, "{}", report.injection_points);
}
