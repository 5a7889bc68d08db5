//! The small DDI argument views: NULL blocks are refused, inputs decode to typed values and
//! `complete` writes every output member (and nothing else).

use dxgk::args::{ContextInfo, CreateContext, CreateProcess, Engine, SubmitCommandVirtual};
use dxgk::handle::{ContextHandle, ProcessHandle};
use dxgk::NtError;
use dxgk_sim as _; // defines the kernel imports dxgk links against
use dxgk_sys as sys;

#[test]
fn null_argument_blocks_are_invalid_parameters() {
    // SAFETY: NULL is allowed by the contract and must be refused.
    let r = unsafe { CreateContext::from_raw(std::ptr::null_mut()) };
    assert_eq!(r.err(), Some(NtError::INVALID_PARAMETER));
    // SAFETY: as above.
    let r = unsafe { SubmitCommandVirtual::from_raw(std::ptr::null()) };
    assert_eq!(r.err(), Some(NtError::INVALID_PARAMETER));
}

#[test]
fn create_context_reads_flags_and_writes_every_output() {
    let mut raw = sys::DXGKARG_CREATECONTEXT {
        NodeOrdinal: 3,
        ..Default::default()
    };
    raw.Flags.set_SystemContext(1);
    raw.ContextInfo.Reserved = 0x5A5A;
    // SAFETY: a valid, exclusive block.
    let view = unsafe { CreateContext::from_raw(&mut raw) }.unwrap();
    assert_eq!((view.node(), view.system()), (3, true));
    let handle = ContextHandle::from_raw(std::ptr::without_provenance_mut(0x1230)).unwrap();
    let info = ContextInfo {
        dma_buffer_size: 1,
        dma_buffer_segment_set: 2,
        dma_buffer_private_data_size: 3,
        allocation_list_size: 4,
        patch_location_list_size: 5,
    };
    view.complete(handle, info);
    let c = raw.ContextInfo;
    assert_eq!(
        (
            c.DmaBufferSize,
            c.DmaBufferSegmentSet,
            c.DmaBufferPrivateDataSize,
            c.AllocationListSize,
            c.PatchLocationListSize
        ),
        (1, 2, 3, 4, 5)
    );
    assert_eq!(c.Reserved, 0x5A5A, "members the view does not own are kept");
    assert_eq!(raw.hContext, handle.as_raw());
}

#[test]
fn create_process_and_submit_decode_typed_values() {
    let mut raw = sys::DXGKARG_CREATEPROCESS {
        hDxgkProcess: std::ptr::without_provenance_mut(0x4000),
        ..Default::default()
    };
    // SAFETY: a valid, exclusive block.
    let view = unsafe { CreateProcess::from_raw(&mut raw) }.unwrap();
    assert!(!view.system());
    assert_eq!(
        view.dxgk_process().map(|h| h.as_raw()),
        Some(std::ptr::without_provenance_mut(0x4000))
    );
    view.complete(ProcessHandle::from_raw(std::ptr::without_provenance_mut(0x5000)).unwrap());
    assert_eq!(raw.hKmdProcess.addr(), 0x5000);

    let raw = sys::DXGKARG_SUBMITCOMMANDVIRTUAL {
        hContext: std::ptr::null_mut(),
        DmaBufferVirtualAddress: 0x10_0000,
        DmaBufferSize: 64,
        SubmissionFenceId: 7,
        NodeOrdinal: 1,
        EngineOrdinal: 2,
        ..Default::default()
    };
    // SAFETY: a valid block.
    let s = unsafe { SubmitCommandVirtual::from_raw(&raw) }.unwrap();
    assert_eq!(s.context, None, "a NULL hContext is no handle");
    assert_eq!(s.engine, Engine { node: 1, engine: 2 });
    assert_eq!(
        (s.dma_buffer_va, s.dma_buffer_size, s.fence),
        (0x10_0000, 64, 7)
    );
}
