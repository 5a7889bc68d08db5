//! User mode's path into rgpu through dxgk-sim's D3DKMT front end (`dxgk_sim::kmt`): devices,
//! allocations created by DxgkDdiCreateAllocation from rgpu-abi private data, GPU VA, Lock2,
//! submissions and fences, shared allocations across processes, the escape interface — and
//! untrusted input from user mode, each refused with a precise status, nothing created or
//! leaked, verifier clean. Every test runs on both machines (identity and remapped IOMMU).

mod support;

use dxgk_sim::kmt::{
    self, ClientId, CreateAllocation2, CreateContextVirtual, CreateDevice,
    CreateSynchronizationObject2, D3dkmtHandle, DestroyAllocation2, Escape, Kmt, Lock2,
    MapGpuVirtualAddress, OpenAdapterFromLuid, OpenResource, ReserveGpuVirtualAddress,
    SignalSynchronizationObjectFromGpu2, SubmitCommand, Unlock2,
    WaitForSynchronizationObjectFromCpu,
};
use dxgk_sim::{Machine, MachineConfig, Vidmm};
use dxgk_sys as sys;
use rgpu_abi::escape::{EscapeRequest, COUNTERS_BYTES, IDENTITY_BYTES};
use rgpu_abi::{AllocationData, AllocationKind, Counters, CpuAccess, Identity};
use rgpu_hw::cmd::{Encoder, Target};

/// A booted machine with the front end and one client that has an adapter and a device.
struct Client {
    m: Machine,
    id: dxgk_sim::AdapterId,
    k: Kmt,
    c: ClientId,
    adapter: D3dkmtHandle,
    device: D3dkmtHandle,
}

fn open_client(k: &mut Kmt) -> (ClientId, D3dkmtHandle, D3dkmtHandle) {
    let c = k.create_client();
    let adapters = k.enum_adapters2(c).unwrap();
    assert_eq!(adapters.len(), 1);
    let mut open = OpenAdapterFromLuid {
        adapter_luid: adapters[0].adapter_luid,
        ..Default::default()
    };
    k.open_adapter_from_luid(c, &mut open).unwrap();
    let mut dev = CreateDevice {
        h_adapter: open.h_adapter,
        ..Default::default()
    };
    k.create_device(c, &mut dev).unwrap();
    (c, open.h_adapter, dev.h_device)
}

fn start(config: MachineConfig) -> Client {
    let (m, id) = support::boot(config);
    let mut k = Kmt::new(Vidmm::new(&m, id).unwrap());
    let (c, adapter, device) = open_client(&mut k);
    Client {
        m,
        id,
        k,
        c,
        adapter,
        device,
    }
}

impl Client {
    fn create(&mut self, data: &[u8]) -> Result<D3dkmtHandle, i32> {
        let mut a = CreateAllocation2 {
            h_device: self.device,
            allocations: vec![kmt::AllocationInfo2 {
                private_driver_data: data.to_vec(),
                h_allocation: 0,
            }],
            ..Default::default()
        };
        self.k.create_allocation2(self.c, &mut a)?;
        Ok(a.allocations[0].h_allocation)
    }

    fn destroy(&mut self, h: D3dkmtHandle) -> Result<(), i32> {
        self.k.destroy_allocation2(
            self.c,
            &DestroyAllocation2 {
                h_device: self.device,
                allocations: vec![h],
                flags: Default::default(),
            },
        )
    }

    fn escape(&mut self, data: Vec<u8>) -> Result<Vec<u8>, i32> {
        let mut e = Escape {
            h_adapter: self.adapter,
            h_device: 0,
            private_driver_data: data,
        };
        self.k.escape(self.c, &mut e)?;
        Ok(e.private_driver_data)
    }

    fn counters(&mut self) -> Counters {
        let mut req = vec![0u8; COUNTERS_BYTES];
        EscapeRequest::Counters.encode_into(&mut req).unwrap();
        Counters::decode(&self.escape(req).unwrap()).unwrap()
    }

    fn reserve(&mut self, size: u64) -> u64 {
        let mut r = ReserveGpuVirtualAddress {
            h_adapter: self.adapter,
            size,
            ..Default::default()
        };
        self.k.reserve_gpu_virtual_address(self.c, &mut r).unwrap();
        r.virtual_address
    }

    fn map(&mut self, h: D3dkmtHandle, va: u64) -> Result<(), i32> {
        let pages = self.k.placement(self.c, self.device, h)?.size / 4096;
        let mut mp = MapGpuVirtualAddress {
            h_device: self.device,
            base_address: va,
            h_allocation: h,
            size_in_pages: pages,
            ..Default::default()
        };
        self.k.map_gpu_virtual_address(self.c, &mut mp)
    }

    /// A virtual context on node 0 and a monitored fence at 0 on the client's device.
    fn context_and_fence(&mut self) -> (D3dkmtHandle, D3dkmtHandle) {
        let mut ctx = CreateContextVirtual {
            h_device: self.device,
            ..Default::default()
        };
        self.k.create_context_virtual(self.c, &mut ctx).unwrap();
        let mut fence = CreateSynchronizationObject2 {
            h_device: self.device,
            ..Default::default()
        };
        self.k
            .create_synchronization_object2(self.c, &mut fence)
            .unwrap();
        (ctx.h_context, fence.h_sync_object)
    }

    /// D3DKMTSubmitCommand of `len` bytes at `commands` on `ctx`, then `fence` signalled to
    /// `value` from the GPU behind it.
    fn submit_and_signal(
        &mut self,
        ctx: D3dkmtHandle,
        commands: u64,
        len: u32,
        fence: D3dkmtHandle,
        value: u64,
    ) {
        let submit = SubmitCommand {
            commands,
            command_length: len,
            broadcast_contexts: vec![ctx],
        };
        self.k.submit_command(self.c, &submit).unwrap();
        let signal = SignalSynchronizationObjectFromGpu2 {
            broadcast_contexts: vec![ctx],
            objects: vec![fence],
            fence_value: value,
        };
        self.k
            .signal_synchronization_object_from_gpu2(self.c, &signal)
            .unwrap();
    }

    fn unlock(&mut self, h: D3dkmtHandle) {
        let args = Unlock2 {
            h_device: self.device,
            h_allocation: h,
        };
        self.k.unlock2(self.c, &args).unwrap();
    }

    /// Lock2, a CPU write of `data` at offset 0, Unlock2.
    fn write_through_lock(&mut self, h: D3dkmtHandle, data: &[u8]) {
        let mut lock = Lock2 {
            h_device: self.device,
            h_allocation: h,
            ..Default::default()
        };
        self.k.lock2(self.c, &mut lock).unwrap();
        self.k.write_locked(self.c, h, 0, data).unwrap();
        self.unlock(h);
    }

    /// Destroys everything, stops, removes, unloads; asserts the verifier is clean.
    fn finish(mut self) {
        assert_eq!(self.counters().values[2], 0, "allocations live at the end");
        let v = self.k.destroy().unwrap();
        v.destroy().unwrap();
        assert_eq!(self.m.stop_adapter(self.id), sys::STATUS_SUCCESS);
        assert_eq!(self.m.remove_adapter(self.id), sys::STATUS_SUCCESS);
        self.m.unload_driver();
        self.m.assert_clean();
    }
}

fn staging(bytes: u64) -> Vec<u8> {
    AllocationData::staging(bytes).encode().to_vec()
}

fn buffer(bytes: u64) -> Vec<u8> {
    AllocationData::buffer(bytes).encode().to_vec()
}

#[test]
fn a_client_allocates_maps_fills_copies_and_reads_back_every_byte() {
    for config in support::machines() {
        let mut t = start(config);
        const N: u64 = 192 * 1024;
        let buf = t.create(&buffer(N)).unwrap();
        let readback = t.create(&staging(N)).unwrap();
        let cmds = t.create(&staging(4096)).unwrap();
        let p = t.k.placement(t.c, t.device, buf).unwrap();
        assert_eq!((p.size, p.alignment, p.segment), (N, 64 * 1024, 2));
        assert!(
            !p.cpu_visible,
            "a buffer without CPU access is not CpuVisible"
        );
        assert!(t.k.placement(t.c, t.device, readback).unwrap().cpu_visible);

        let base = t.reserve(1 << 20);
        t.map(buf, base).unwrap();
        t.map(readback, base + N).unwrap();
        t.map(cmds, base + 2 * N).unwrap();

        // FILL the buffer, COPY it into the staging allocation, on the client's context.
        let mut bytes = vec![0u8; 64];
        let mut enc = Encoder::new(&mut bytes);
        enc.fill(Target::Virtual(base), N, 0xC0DE_0001).unwrap();
        enc.copy(
            Target::Virtual(base + N + 4096),
            Target::Virtual(base),
            N - 8192,
        )
        .unwrap();
        let cmd_bytes = enc.written().to_vec();
        t.write_through_lock(cmds, &cmd_bytes);
        let (ctx, fence) = t.context_and_fence();
        let wait = WaitForSynchronizationObjectFromCpu {
            h_device: t.device,
            objects: vec![fence],
            fence_values: vec![1],
        };
        assert_eq!(
            t.k.wait_for_synchronization_object_from_cpu(t.c, &wait),
            Ok(kmt::WaitOutcome::TimedOut)
        );
        t.submit_and_signal(ctx, base + 2 * N, cmd_bytes.len() as u32, fence, 1);
        assert_eq!(
            t.k.wait_for_synchronization_object_from_cpu(t.c, &wait),
            Ok(kmt::WaitOutcome::Reached)
        );

        let mut lock = Lock2 {
            h_device: t.device,
            h_allocation: readback,
            ..Default::default()
        };
        t.k.lock2(t.c, &mut lock).unwrap();
        assert_eq!(lock.locked_bytes, N);
        let got = t.k.read_locked(t.c, readback, 0, N as usize).unwrap();
        let word = 0xC0DE_0001u32.to_le_bytes();
        for (i, b) in got.iter().enumerate() {
            let i = i as u64;
            let want = if (4096..N - 4096).contains(&i) {
                word[(i % 4) as usize]
            } else {
                0
            };
            assert_eq!(*b, want, "read-back byte {i:#x}");
        }
        t.k.unlock2(
            t.c,
            &Unlock2 {
                h_device: t.device,
                h_allocation: readback,
            },
        )
        .unwrap();

        let c = t.counters();
        assert_eq!(c.values[0..5], [3, 0, 3, 2 * N + 4096, 3], "{c:?}");
        assert!(
            c.values[5] > 0 && c.values[6] > 0,
            "paging and submissions counted"
        );
        for h in [buf, readback, cmds] {
            t.destroy(h).unwrap();
        }
        let c = t.counters();
        assert_eq!(c.values[0..5], [3, 3, 0, 0, 0], "{c:?}");
        assert_eq!(t.k.live_allocations(), 0);
        t.finish();
    }
}

/// Placement follows the driver's DXGK_ALLOCATIONINFO: an allocation that prefers the aperture
/// lives in it (MAP_APERTURE_SEGMENT or MAP_APERTURE_SEGMENT2), and the client's own FILL
/// reaches it through the aperture; a ring-visible one prefers system memory and stays there.
#[test]
fn an_allocation_that_prefers_the_aperture_lives_there_and_the_device_reaches_it() {
    for config in support::machines() {
        let mut t = start(config);
        // The paging buffer lives in the aperture already.
        let buffer_pages = t.k.vidmm().aperture_mapped_pages(1);
        let mut d = AllocationData::staging(8192);
        d.segment = rgpu_abi::SegmentPreference::Aperture;
        let ap = t.create(&d.encode()).unwrap();
        let mut r = AllocationData::buffer(4096);
        r.kind = AllocationKind::RingVisible;
        let ring = t.create(&r.encode()).unwrap();
        let cmds = t.create(&staging(4096)).unwrap();
        let p = t.k.placement(t.c, t.device, ap).unwrap();
        assert_eq!(
            (p.preferred_segment, p.read_segments, p.segment),
            (1, 0b11, 1)
        );
        let p = t.k.placement(t.c, t.device, ring).unwrap();
        assert_eq!(
            (p.read_segments, p.segment),
            (0b11, 2),
            "prefers system memory"
        );
        let a = t.k.vidmm_allocation(t.c, t.device, ap).unwrap();
        assert_eq!(
            t.k.vidmm().aperture_range(a).map(|r| (r.0, r.2)),
            Some((1, 2))
        );
        let base = t.reserve(1 << 20);
        t.map(ap, base).unwrap();
        t.map(cmds, base + 0x10000).unwrap();
        let mut bytes = vec![0u8; 64];
        let mut enc = Encoder::new(&mut bytes);
        enc.fill(Target::Virtual(base), 8192, 0xA9E7_0001).unwrap();
        let cmd_bytes = enc.written().to_vec();
        t.write_through_lock(cmds, &cmd_bytes);
        let (ctx, fence) = t.context_and_fence();
        t.submit_and_signal(ctx, base + 0x10000, cmd_bytes.len() as u32, fence, 1);
        let mut lock = Lock2 {
            h_device: t.device,
            h_allocation: ap,
            ..Default::default()
        };
        t.k.lock2(t.c, &mut lock).unwrap();
        let got = t.k.read_locked(t.c, ap, 0, 8192).unwrap();
        assert_eq!(got, 0xA9E7_0001u32.to_le_bytes().repeat(2048));
        t.k.unlock2(
            t.c,
            &Unlock2 {
                h_device: t.device,
                h_allocation: ap,
            },
        )
        .unwrap();
        for h in [ap, ring, cmds] {
            t.destroy(h).unwrap();
        }
        assert_eq!(t.k.vidmm().aperture_mapped_pages(1), buffer_pages);
        t.finish();
    }
}

#[test]
fn bad_private_data_is_refused_precisely_and_creates_nothing() {
    for config in support::machines() {
        let mut t = start(config);
        let good = AllocationData::buffer(4096).encode();
        let with = |at: usize, v: u32| {
            let mut b = good;
            b[at..at + 4].copy_from_slice(&v.to_le_bytes());
            b.to_vec()
        };
        let mut long = good.to_vec();
        long.push(0);
        let mut huge = AllocationData::buffer(4096);
        huge.size_bytes = rgpu_abi::allocation::MAX_ALLOCATION_BYTES + 1;
        let mut no_cpu_staging = AllocationData::staging(4096);
        no_cpu_staging.cpu_access = CpuAccess::NONE;
        let cases: Vec<(&str, Vec<u8>, i32)> = vec![
            ("no private data", vec![], sys::STATUS_BUFFER_TOO_SMALL),
            (
                "47 bytes",
                good[..47].to_vec(),
                sys::STATUS_BUFFER_TOO_SMALL,
            ),
            ("49 bytes", long, sys::STATUS_INVALID_PARAMETER),
            ("version 2", with(0, 2), sys::STATUS_REVISION_MISMATCH),
            ("header size 40", with(4, 40), sys::STATUS_INVALID_PARAMETER),
            ("kind 0", with(8, 0), sys::STATUS_INVALID_PARAMETER),
            (
                "cpu access bit 2",
                with(12, 4),
                sys::STATUS_INVALID_PARAMETER,
            ),
            ("size 0", with(16, 0), sys::STATUS_INVALID_PARAMETER),
            (
                "alignment 3 KiB",
                with(24, 3072),
                sys::STATUS_INVALID_PARAMETER,
            ),
            ("segment 7", with(28, 7), sys::STATUS_INVALID_PARAMETER),
            ("reserved", with(36, 1), sys::STATUS_INVALID_PARAMETER),
            (
                "65 GiB",
                huge.encode().to_vec(),
                sys::STATUS_INVALID_PARAMETER,
            ),
            (
                "staging without CPU access",
                no_cpu_staging.encode().to_vec(),
                sys::STATUS_INVALID_PARAMETER,
            ),
        ];
        for (what, data, want) in cases {
            assert_eq!(t.create(&data), Err(want), "{what}");
        }
        // One bad element in a batch: the good ones are not created either.
        let mut batch = CreateAllocation2 {
            h_device: t.device,
            allocations: [buffer(4096), with(0, 9), buffer(8192)]
                .into_iter()
                .map(|d| kmt::AllocationInfo2 {
                    private_driver_data: d,
                    h_allocation: 0,
                })
                .collect(),
            ..Default::default()
        };
        assert_eq!(
            t.k.create_allocation2(t.c, &mut batch),
            Err(sys::STATUS_REVISION_MISMATCH)
        );
        assert!(batch.allocations.iter().all(|a| a.h_allocation == 0));
        assert_eq!(t.counters().values[0], 0, "nothing was ever created");
        assert_eq!(t.k.live_allocations(), 0);
        t.finish();
    }
}

#[test]
fn foreign_stale_and_misused_handles_are_refused() {
    for config in support::machines() {
        let mut t = start(config);
        let (other, other_adapter, other_device) = open_client(&mut t.k);
        let a = t.create(&buffer(8192)).unwrap();
        let s = t.create(&staging(4096)).unwrap();
        let inv = Err(sys::STATUS_INVALID_PARAMETER);
        // Another process's handles.
        let foreign = DestroyAllocation2 {
            h_device: t.device,
            allocations: vec![a],
            flags: Default::default(),
        };
        assert_eq!(t.k.destroy_allocation2(other, &foreign), inv);
        let mut lock = Lock2 {
            h_device: other_device,
            h_allocation: s,
            ..Default::default()
        };
        assert_eq!(
            t.k.lock2(other, &mut lock),
            inv,
            "another process's allocation"
        );
        let mut e = Escape {
            h_adapter: t.adapter,
            ..Default::default()
        };
        assert_eq!(t.k.escape(other, &mut e), inv, "another process's adapter");
        // Another device's allocation in this process's call.
        let theirs = {
            let mut ca = CreateAllocation2 {
                h_device: other_device,
                allocations: vec![kmt::AllocationInfo2 {
                    private_driver_data: buffer(4096),
                    h_allocation: 0,
                }],
                ..Default::default()
            };
            t.k.create_allocation2(other, &mut ca).unwrap();
            ca.allocations[0].h_allocation
        };
        assert_eq!(
            t.k.destroy_allocation2(
                other,
                &DestroyAllocation2 {
                    h_device: other_device,
                    allocations: vec![a],
                    flags: Default::default(),
                }
            ),
            inv
        );
        // The wrong type: a device handle as an allocation, an adapter as a device.
        assert_eq!(t.destroy(t.device), inv);
        let mut cd = CreateAllocation2 {
            h_device: t.adapter,
            allocations: vec![kmt::AllocationInfo2::default()],
            ..Default::default()
        };
        assert_eq!(t.k.create_allocation2(t.c, &mut cd), inv);
        // Locking an allocation that is not CpuVisible; locking twice.
        let mut lock = Lock2 {
            h_device: t.device,
            h_allocation: a,
            ..Default::default()
        };
        assert_eq!(t.k.lock2(t.c, &mut lock), inv, "buffer without CPU access");
        lock.h_allocation = s;
        t.k.lock2(t.c, &mut lock).unwrap();
        assert_eq!(t.k.lock2(t.c, &mut lock), inv, "already locked");
        // Destroying a mapped allocation unmaps it first; the VA can be mapped again.
        let va = t.reserve(1 << 20);
        t.map(a, va).unwrap();
        assert_eq!(t.map(s, va), inv, "over an existing mapping");
        t.destroy(a).unwrap();
        // Double destroy, and a destroy list naming one handle twice.
        assert_eq!(t.destroy(a), inv);
        assert_eq!(
            t.k.destroy_allocation2(
                t.c,
                &DestroyAllocation2 {
                    h_device: t.device,
                    allocations: vec![s, s],
                    flags: Default::default(),
                }
            ),
            inv
        );
        t.map(s, va).unwrap();
        t.destroy(s).unwrap();
        assert_eq!(t.k.close_adapter(t.c, other_adapter), inv);
        t.k.destroy_allocation2(
            other,
            &DestroyAllocation2 {
                h_device: other_device,
                allocations: vec![theirs],
                flags: Default::default(),
            },
        )
        .unwrap();
        t.k.destroy_client(other).unwrap();
        t.finish();
    }
}

#[test]
fn a_shared_allocation_is_opened_by_a_second_process_and_outlives_its_creator_handle() {
    for config in support::machines() {
        let mut t = start(config);
        let (b, _b_adapter, b_device) = open_client(&mut t.k);
        let mut ca = CreateAllocation2 {
            h_device: t.device,
            create_shared: true,
            allocations: vec![kmt::AllocationInfo2 {
                private_driver_data: staging(16 * 1024),
                h_allocation: 0,
            }],
            ..Default::default()
        };
        t.k.create_allocation2(t.c, &mut ca).unwrap();
        let mine = ca.allocations[0].h_allocation;
        assert_ne!(ca.h_global_share, 0);
        // The creator writes through Lock2.
        let mut lock = Lock2 {
            h_device: t.device,
            h_allocation: mine,
            ..Default::default()
        };
        t.k.lock2(t.c, &mut lock).unwrap();
        t.k.write_locked(t.c, mine, 100, b"shared bytes").unwrap();
        t.k.unlock2(
            t.c,
            &Unlock2 {
                h_device: t.device,
                h_allocation: mine,
            },
        )
        .unwrap();
        // Process B opens it; a wrong share handle is refused.
        let mut open = OpenResource {
            h_device: b_device,
            h_global_share: ca.h_global_share + 1,
            ..Default::default()
        };
        assert_eq!(
            t.k.open_resource(b, &mut open),
            Err(sys::STATUS_INVALID_PARAMETER)
        );
        open.h_global_share = ca.h_global_share;
        t.k.open_resource(b, &mut open).unwrap();
        assert_eq!(open.allocations.len(), 1);
        assert_eq!(open.allocations[0].private_driver_data, staging(16 * 1024));
        let theirs = open.allocations[0].h_allocation;
        assert_eq!(t.counters().values[4], 2, "opened on two devices");
        // The creator lets go; B still reads the bytes.
        t.destroy(mine).unwrap();
        assert_eq!(t.counters().values[2], 1, "the allocation lives on");
        let mut lock = Lock2 {
            h_device: b_device,
            h_allocation: theirs,
            ..Default::default()
        };
        t.k.lock2(b, &mut lock).unwrap();
        assert_eq!(
            t.k.read_locked(b, theirs, 100, 12).unwrap(),
            b"shared bytes"
        );
        t.k.unlock2(
            b,
            &Unlock2 {
                h_device: b_device,
                h_allocation: theirs,
            },
        )
        .unwrap();
        t.k.destroy_allocation2(
            b,
            &DestroyAllocation2 {
                h_device: b_device,
                allocations: vec![theirs],
                flags: Default::default(),
            },
        )
        .unwrap();
        assert_eq!(t.counters().values[0..5], [1, 1, 0, 0, 0]);
        t.k.destroy_client(b).unwrap();
        t.finish();
    }
}

#[test]
fn escapes_answer_identity_and_refuse_malformed_buffers_untouched() {
    for config in support::machines() {
        let version = config.max_interface_version;
        let mut t = start(config);
        let mut req = vec![0u8; IDENTITY_BYTES];
        EscapeRequest::Identity.encode_into(&mut req).unwrap();
        let id = Identity::decode(&t.escape(req.clone()).unwrap()).unwrap();
        assert_eq!(id.interface_version, version);
        assert_eq!(id.device_id, rgpu_hw::regs::ID_VALUE);
        assert_eq!(id.flags & rgpu_abi::escape::IDENTITY_STARTED, 1);
        assert_eq!((id.segment_count, id.aperture_bytes), (1, 1 << 30));
        let with = |at: usize, v: u32| {
            let mut b = req.clone();
            b[at..at + 4].copy_from_slice(&v.to_le_bytes());
            b
        };
        let cases: Vec<(&str, Vec<u8>, i32)> = vec![
            ("empty", vec![], sys::STATUS_BUFFER_TOO_SMALL),
            ("8 bytes", req[..8].to_vec(), sys::STATUS_BUFFER_TOO_SMALL),
            ("version 0", with(0, 0), sys::STATUS_REVISION_MISMATCH),
            ("size says 65", with(4, 65), sys::STATUS_INVALID_PARAMETER),
            ("unknown code", with(8, 77), sys::STATUS_NOT_SUPPORTED),
            (
                "header reserved",
                with(12, 1),
                sys::STATUS_INVALID_PARAMETER,
            ),
            ("request body", with(60, 5), sys::STATUS_INVALID_PARAMETER),
            (
                "counters code in 64 bytes",
                with(8, 2),
                sys::STATUS_BUFFER_TOO_SMALL,
            ),
        ];
        for (what, data, want) in cases {
            let mut e = Escape {
                h_adapter: t.adapter,
                h_device: t.device,
                private_driver_data: data.clone(),
            };
            assert_eq!(t.k.escape(t.c, &mut e), Err(want), "{what}");
            assert_eq!(e.private_driver_data, data, "{what}: buffer untouched");
        }
        assert_eq!(
            t.counters().values[8],
            1,
            "only the good escapes are answered"
        );
        t.finish();
    }
}

#[test]
fn allocations_a_process_leaves_behind_are_destroyed_at_exit() {
    for config in support::machines() {
        let mut t = start(config);
        let (b, _, b_device) = open_client(&mut t.k);
        let mut ca = CreateAllocation2 {
            h_device: b_device,
            allocations: (0..3)
                .map(|i| kmt::AllocationInfo2 {
                    private_driver_data: AllocationData {
                        kind: AllocationKind::RingVisible,
                        ..AllocationData::buffer(4096 << i)
                    }
                    .encode()
                    .to_vec(),
                    h_allocation: 0,
                })
                .collect(),
            ..Default::default()
        };
        t.k.create_allocation2(b, &mut ca).unwrap();
        let p =
            t.k.placement(b, b_device, ca.allocations[0].h_allocation)
                .unwrap();
        assert_eq!(
            (p.read_segments, p.segment),
            (0b11, 2),
            "ring-visible: aperture allowed"
        );
        assert_eq!(t.counters().values[2], 3);
        t.k.destroy_client(b).unwrap();
        assert_eq!(t.counters().values[0..5], [3, 3, 0, 0, 0]);
        t.finish();
    }
}

/// A FILL of `src` and a COPY of it into `dst`, queued (held by the scheduler) on `ctx`, with
/// `fence` signalled to `value` behind it.
fn queue_fill_and_copy(
    t: &mut Client,
    ctx: D3dkmtHandle,
    fence: D3dkmtHandle,
    value: u64,
    pattern: u32,
) -> Queued {
    const N: u64 = QUEUED_BYTES;
    let src = t.create(&buffer(N)).unwrap();
    let dst = t.create(&staging(N)).unwrap();
    let cmds = t.create(&staging(4096)).unwrap();
    let base = t.reserve(1 << 20);
    t.map(src, base).unwrap();
    t.map(dst, base + N).unwrap();
    t.map(cmds, base + 2 * N).unwrap();
    let mut bytes = vec![0u8; 64];
    let mut enc = Encoder::new(&mut bytes);
    enc.fill(Target::Virtual(base), N, pattern).unwrap();
    enc.copy(Target::Virtual(base + N), Target::Virtual(base), N)
        .unwrap();
    let cmd_bytes = enc.written().to_vec();
    t.write_through_lock(cmds, &cmd_bytes);
    t.k.hold_submissions(true).unwrap();
    t.submit_and_signal(ctx, base + 2 * N, cmd_bytes.len() as u32, fence, value);
    assert_eq!(
        t.k.held_work(),
        2,
        "the submission and its signal are queued"
    );
    Queued {
        src,
        dst,
        cmds,
        src_va: base,
    }
}

struct Queued {
    src: D3dkmtHandle,
    dst: D3dkmtHandle,
    cmds: D3dkmtHandle,
    src_va: u64,
}

const QUEUED_BYTES: u64 = 64 * 1024;

impl Client {
    fn destroy_with(
        &mut self,
        h: D3dkmtHandle,
        flags: kmt::DestroyAllocation2Flags,
    ) -> Result<(), i32> {
        self.k.destroy_allocation2(
            self.c,
            &DestroyAllocation2 {
                h_device: self.device,
                allocations: vec![h],
                flags,
            },
        )
    }

    /// Every byte of `h` (a staging allocation) is `pattern`.
    fn assert_filled(&mut self, h: D3dkmtHandle, pattern: u32) {
        let mut lock = Lock2 {
            h_device: self.device,
            h_allocation: h,
            ..Default::default()
        };
        self.k.lock2(self.c, &mut lock).unwrap();
        let got = self
            .k
            .read_locked(self.c, h, 0, QUEUED_BYTES as usize)
            .unwrap();
        let word = pattern.to_le_bytes();
        for (i, b) in got.iter().enumerate() {
            assert_eq!(*b, word[i % 4], "byte {i:#x}");
        }
        self.unlock(h);
    }

    fn fence_wait(&mut self, fence: D3dkmtHandle, value: u64) -> Result<kmt::WaitOutcome, i32> {
        let wait = WaitForSynchronizationObjectFromCpu {
            h_device: self.device,
            objects: vec![fence],
            fence_values: vec![value],
        };
        self.k
            .wait_for_synchronization_object_from_cpu(self.c, &wait)
    }
}

/// D3DKMTDestroyAllocation2 of an allocation that queued GPU work still reads and writes
/// (Learn, D3DDDICB_DESTROYALLOCATION2FLAGS): by default the destruction waits for that work
/// (the handle is gone at once, the memory and its GPU VA stay until the work ran);
/// SynchronousDestroy waits before returning; AssumeNotInUse destroys at once, and the queued
/// work then faults on the device — which is why the default must defer. The device never
/// faults in the first two, nothing leaks, the verifier stays clean.
#[test]
fn destroying_an_allocation_queued_work_uses_defers_until_the_work_ran() {
    for config in support::machines() {
        let mut t = start(config);
        let (ctx, fence) = t.context_and_fence();
        let inv = Err(sys::STATUS_INVALID_PARAMETER);
        let faults = |t: &mut Client| t.k.vidmm().stats().device_faults;

        // Default flags: deferred. The destroyed (and still mapped) source is filled and
        // copied by the work queued before the destroy.
        let q = queue_fill_and_copy(&mut t, ctx, fence, 1, 0xD1E5_0001);
        let before = t.counters();
        t.destroy_with(q.src, Default::default()).unwrap();
        assert_eq!((t.k.held_work(), t.k.deferred_destructions()), (2, 1));
        assert_eq!(t.destroy(q.src), inv, "the handle is gone at once");
        let mut lock = Lock2 {
            h_device: t.device,
            h_allocation: q.src,
            ..Default::default()
        };
        assert_eq!(t.k.lock2(t.c, &mut lock), inv);
        let after = t.counters();
        assert_eq!(
            (after.values[1], after.values[2]),
            (before.values[1], before.values[2]),
            "DxgkDdiDestroyAllocation not called yet: {after:?}"
        );
        let other = t.create(&staging(4096)).unwrap();
        assert_eq!(t.map(other, q.src_va), inv, "its GPU VA is still mapped");
        assert_eq!(t.fence_wait(fence, 1), Ok(kmt::WaitOutcome::Reached));
        assert_eq!((t.k.held_work(), t.k.deferred_destructions()), (0, 0));
        let after = t.counters();
        assert_eq!(
            after.values[1],
            before.values[1] + 1,
            "destroyed after the work: {after:?}"
        );
        t.assert_filled(q.dst, 0xD1E5_0001);
        t.map(other, q.src_va).unwrap();
        assert_eq!(faults(&mut t), 0);

        // SynchronousDestroy: the call itself waits for the work and the reclamation.
        let q2 = queue_fill_and_copy(&mut t, ctx, fence, 2, 0xD1E5_0002);
        let before = t.counters();
        t.destroy_with(
            q2.src,
            kmt::DestroyAllocation2Flags {
                synchronous_destroy: true,
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!((t.k.held_work(), t.k.deferred_destructions()), (0, 0));
        assert_eq!(
            t.k.fence_value(t.c, fence),
            Ok(2),
            "the work ran before the return"
        );
        assert_eq!(t.counters().values[1], before.values[1] + 1);
        t.assert_filled(q2.dst, 0xD1E5_0002);
        assert_eq!(faults(&mut t), 0);

        // AssumeNotInUse: destroyed and unmapped at once, under the queued work, which
        // faults when it runs (the client's bug); the adapter recovers.
        let q3 = queue_fill_and_copy(&mut t, ctx, fence, 3, 0xD1E5_0003);
        t.destroy_with(
            q3.src,
            kmt::DestroyAllocation2Flags {
                assume_not_in_use: true,
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!((t.k.held_work(), t.k.deferred_destructions()), (2, 0));
        assert_eq!(
            t.fence_wait(fence, 3),
            Err(sys::STATUS_GRAPHICS_GPU_EXCEPTION_ON_DEVICE)
        );
        assert_eq!(faults(&mut t), 1, "the queued FILL hit the unmapped VA");
        t.k.hold_submissions(false).unwrap();

        for h in [q.dst, q.cmds, q2.dst, q2.cmds, q3.dst, q3.cmds, other] {
            t.destroy(h).unwrap();
        }
        assert!(t.m.iommu_faults().is_empty(), "{:?}", t.m.iommu_faults());
        assert_eq!(t.k.live_allocations(), 0);
        t.finish();
    }
}

impl Client {
    /// Lock2, a CPU read of `len` bytes at offset 0, Unlock2.
    fn read_through_lock(&mut self, h: D3dkmtHandle, len: usize) -> Result<Vec<u8>, i32> {
        let mut lock = Lock2 {
            h_device: self.device,
            h_allocation: h,
            ..Default::default()
        };
        self.k.lock2(self.c, &mut lock)?;
        let got = self.k.read_locked(self.c, h, 0, len);
        self.unlock(h);
        got
    }

    /// A GPU COPY of `len` bytes from `src` to `dst` (GPU VAs), its command buffer written into
    /// `cmds` (mapped at `cmds_va`), submitted on `ctx` and waited for through `fence` = `value`.
    fn copy_on_gpu(
        &mut self,
        (ctx, fence, value): (D3dkmtHandle, D3dkmtHandle, u64),
        (cmds, cmds_va): (D3dkmtHandle, u64),
        dst: u64,
        src: u64,
        len: u64,
    ) {
        let mut bytes = vec![0u8; 64];
        let mut enc = Encoder::new(&mut bytes);
        enc.copy(Target::Virtual(dst), Target::Virtual(src), len)
            .unwrap();
        let cmd_bytes = enc.written().to_vec();
        self.write_through_lock(cmds, &cmd_bytes);
        self.submit_and_signal(ctx, cmds_va, cmd_bytes.len() as u32, fence, value);
        let wait = WaitForSynchronizationObjectFromCpu {
            h_device: self.device,
            objects: vec![fence],
            fence_values: vec![value],
        };
        assert_eq!(
            self.k
                .wait_for_synchronization_object_from_cpu(self.c, &wait),
            Ok(kmt::WaitOutcome::Reached)
        );
    }

    fn evict(&mut self, hs: &[D3dkmtHandle]) -> Result<u64, i32> {
        let mut e = kmt::Evict {
            h_device: self.device,
            allocations: hs.to_vec(),
            ..Default::default()
        };
        self.k.evict(self.c, &mut e)?;
        Ok(e.num_bytes_to_trim)
    }

    fn make_resident(&mut self, hs: &[D3dkmtHandle]) -> Result<u64, i32> {
        let mut r = kmt::MakeResident {
            h_device: self.device,
            allocations: hs.to_vec(),
            ..Default::default()
        };
        self.k.make_resident(self.c, &mut r)?;
        Ok(r.paging_fence_value)
    }
}

/// Bytes no fill pattern produces: byte `i` of a `len`-byte run.
fn pattern(len: u64, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31) ^ ((i >> 8) as u8) ^ seed)
        .collect()
}

#[test]
fn an_evicted_allocation_is_made_resident_with_its_contents_and_mappings_back() {
    for config in support::machines() {
        let mut t = start(config);
        const N: u64 = 128 * 1024;
        let src = t.create(&staging(N)).unwrap();
        let dst = t.create(&staging(N)).unwrap();
        let cmds = t.create(&staging(4096)).unwrap();
        let base = t.reserve(1 << 20);
        t.map(src, base).unwrap();
        t.map(dst, base + N).unwrap();
        t.map(cmds, base + 2 * N).unwrap();
        let data = pattern(N, 0x5A);
        t.write_through_lock(src, &data);

        // Resident already: MakeResident changes nothing.
        assert_eq!(t.make_resident(&[src]), Ok(0));
        assert_eq!(t.evict(&[src]), Ok(N));
        assert_eq!(
            t.evict(&[src]),
            Ok(0),
            "evicting an evicted allocation trims nothing"
        );
        assert_eq!(
            t.read_through_lock(src, 16),
            Err(sys::STATUS_INVALID_PARAMETER),
            "an evicted allocation has nothing to lock"
        );

        // A failed re-acquire: still evicted, nothing leaked, precise status.
        let before = t.m.vidmm_allocations();
        t.k.vidmm().fail_next_acquire();
        assert_eq!(t.make_resident(&[src]), Err(sys::STATUS_NO_MEMORY));
        assert_eq!(
            t.m.vidmm_allocations(),
            before,
            "the failed make-resident leaked"
        );
        assert_eq!(
            t.read_through_lock(src, 16),
            Err(sys::STATUS_INVALID_PARAMETER)
        );
        let b = t.k.vidmm_allocation(t.c, t.device, src).unwrap();
        assert!(!t.k.vidmm().is_resident(b).unwrap());

        // Paged back in: synchronous, so the paging fence value is 0 (reached).
        assert_eq!(t.make_resident(&[src, dst]), Ok(0));
        assert!(t.k.vidmm().is_resident(b).unwrap());
        assert_eq!(t.read_through_lock(src, N as usize).unwrap(), data);
        // The GPU reads it through the mapping made before the eviction: PTEs restored.
        let (ctx, fence) = t.context_and_fence();
        t.copy_on_gpu((ctx, fence, 1), (cmds, base + 2 * N), base + N, base, N);
        let got = t.read_through_lock(dst, N as usize).unwrap();
        for (i, (g, w)) in got.iter().zip(&data).enumerate() {
            assert_eq!(g, w, "byte {i:#x} copied from the re-resident allocation");
        }

        for h in [src, dst, cmds] {
            t.destroy(h).unwrap();
        }
        assert_eq!(t.k.live_allocations(), 0);
        t.finish();
    }
}

#[test]
fn a_partial_map_maps_exactly_its_range_and_out_of_range_is_refused() {
    for config in support::machines() {
        let mut t = start(config);
        const N: u64 = 64 * 1024;
        const PAGE: u64 = 4096;
        let src = t.create(&staging(N)).unwrap();
        let dst = t.create(&staging(N)).unwrap();
        let cmds = t.create(&staging(PAGE)).unwrap();
        let base = t.reserve(1 << 20);
        let data = pattern(N, 0xA5);
        t.write_through_lock(src, &data);
        let mut partial = MapGpuVirtualAddress {
            h_device: t.device,
            base_address: base,
            h_allocation: src,
            ..Default::default()
        };
        for (offset, size) in [(0, 0), (14, 3), (16, 1), (u64::MAX, 2), (1, u64::MAX)] {
            partial.offset_in_pages = offset;
            partial.size_in_pages = size;
            assert_eq!(
                t.k.map_gpu_virtual_address(t.c, &mut partial),
                Err(sys::STATUS_INVALID_PARAMETER),
                "pages {offset}+{size} of a 16-page allocation"
            );
        }
        // Pages 3..8 of src at `base`; the next page of the reservation stays free for a map.
        partial.offset_in_pages = 3;
        partial.size_in_pages = 5;
        t.k.map_gpu_virtual_address(t.c, &mut partial).unwrap();
        assert_eq!(partial.virtual_address, base);
        t.map(cmds, base + 5 * PAGE).unwrap();
        t.map(dst, base + N).unwrap();
        let (ctx, fence) = t.context_and_fence();
        t.copy_on_gpu(
            (ctx, fence, 1),
            (cmds, base + 5 * PAGE),
            base + N,
            base,
            5 * PAGE,
        );
        let got = t.read_through_lock(dst, N as usize).unwrap();
        let want = &data[(3 * PAGE) as usize..(8 * PAGE) as usize];
        assert_eq!(&got[..want.len()], want, "the partial map shows pages 3..8");
        assert!(
            got[want.len()..].iter().all(|&b| b == 0),
            "copied past the range"
        );

        for h in [src, dst, cmds] {
            t.destroy(h).unwrap();
        }
        t.finish();
    }
}
