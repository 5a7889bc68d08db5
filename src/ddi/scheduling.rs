//! Paging, submission, preemption, TDR, engine queries and IOMMU exclusive access.

use dxgk::args::{
    Engine, PreemptCommand, QueryDependentEngineGroup, QueryEngineStatus, ResetEngine,
    SubmitCommandVirtual,
};
use dxgk::handle::ProcessHandle;
use dxgk::NtError;
use dxgk_sys as sys;
use dxgk_sys::{HANDLE, NTSTATUS};

use super::{adapter, finish, object};
use crate::adapter::Adapter;
use crate::objects::{Context, Process};

/// rgpu has one node with one engine: anything but node 0, engine 0 is an invalid parameter.
fn only_engine_0(engine: Engine) -> Result<(), NtError> {
    if engine == (Engine { node: 0, engine: 0 }) {
        Ok(())
    } else {
        Err(NtError::INVALID_PARAMETER)
    }
}

pub(super) unsafe extern "system" fn ddi_build_paging_buffer(
    h_adapter: HANDLE,
    args: *mut sys::DXGKARG_BUILDPAGINGBUFFER,
) -> NTSTATUS {
    // SAFETY: Dxgkrnl passes the adapter handle from AddDevice.
    let a = match unsafe { adapter(h_adapter) } {
        Ok(a) => a,
        Err(e) => return finish("BuildPagingBuffer", Err(e)),
    };
    let r = (|| {
        a.counters.paging_build();
        // SAFETY: Dxgkrnl's argument block (or NULL), ours for this call, with the DMA buffer,
        // entry and range arrays, CPU table and MDLs in it valid as the DDI documents.
        let req = unsafe {
            dxgk::paging::BuildPagingBuffer::from_raw(args, crate::paging::MAX_TABLE_ENTRIES)
        }
        .map_err(|e| crate::paging::report(e.into()))?;
        let asid_of = |h: ProcessHandle| {
            // SAFETY: a non-NULL hProcess in FLUSH_TLB is the process object rgpu returned from
            // CreateProcess, alive until DestroyProcess (VidMm's contract).
            Some(unsafe { object::<_, Process>(h) }.asid)
        };
        let ctx = crate::paging::PagingContext {
            aperture: a.aperture(),
            views: a.aperture_views(),
            asid_of: Some(&asid_of),
        };
        ctx.build(req)
    })();
    // Failures were logged once, with their cause, by `paging::report`;
    // INSUFFICIENT_DMA_BUFFER is the multipass protocol, not a failure.
    dxgk::status::into_ntstatus(r)
}

pub(super) unsafe extern "system" fn ddi_submit_command_virtual(
    h_adapter: HANDLE,
    args: *const sys::DXGKARG_SUBMITCOMMANDVIRTUAL,
) -> NTSTATUS {
    let r = (|| {
        // SAFETY: Dxgkrnl passes the adapter handle from AddDevice.
        let a = unsafe { adapter(h_adapter) }?;
        // SAFETY: Dxgkrnl's argument block.
        let args = unsafe { SubmitCommandVirtual::from_raw(args) }?;
        let ctx = args.context.ok_or(NtError::INVALID_PARAMETER)?;
        // SAFETY: a live context from CreateContext.
        let ctx: &Context = unsafe { object(ctx) };
        only_engine_0(args.engine)?;
        if args.dma_buffer_size % 4 != 0 {
            return Err(NtError::INVALID_PARAMETER);
        }
        a.submit(
            args.dma_buffer_va,
            args.dma_buffer_size,
            ctx.asid,
            ctx.system,
            u64::from(args.fence),
        )?;
        a.counters.submitted();
        Ok(())
    })();
    finish("SubmitCommandVirtual", r)
}

/// DISPATCH_LEVEL. See [`Adapter::preempt`]: answered with DMA_PREEMPTED once the ring drains.
pub(super) unsafe extern "system" fn ddi_preempt_command(
    h_adapter: HANDLE,
    args: *const sys::DXGKARG_PREEMPTCOMMAND,
) -> NTSTATUS {
    let r = (|| {
        // SAFETY: Dxgkrnl passes the adapter handle from AddDevice.
        let a = unsafe { adapter(h_adapter) }?;
        // SAFETY: Dxgkrnl's argument block.
        let args = unsafe { PreemptCommand::from_raw(args) }?;
        if only_engine_0(args.engine).is_err() {
            rgpu_log!(
                error,
                "PreemptCommand: node {} engine {}: rgpu has one node with one engine",
                args.engine.node,
                args.engine.engine
            );
            return Err(NtError::INVALID_PARAMETER);
        }
        a.preempt(args.fence)
    })();
    finish("PreemptCommand", r)
}

pub(super) unsafe extern "system" fn ddi_format_history_buffer(
    _h_context: HANDLE,
    _a: *mut sys::DXGKARG_FORMATHISTORYBUFFER,
) -> NTSTATUS {
    sys::STATUS_NOT_SUPPORTED
}

pub(super) unsafe extern "system" fn ddi_reset_from_timeout(h_adapter: HANDLE) -> NTSTATUS {
    // SAFETY: Dxgkrnl passes the adapter handle from AddDevice. PASSIVE_LEVEL (it may join the
    // soft engine's thread).
    let r = unsafe { adapter(h_adapter) }.map(Adapter::reset_from_timeout);
    finish("ResetFromTimeout", r)
}

pub(super) unsafe extern "system" fn ddi_restart_from_timeout(h_adapter: HANDLE) -> NTSTATUS {
    // SAFETY: Dxgkrnl passes the adapter handle from AddDevice.
    let r = unsafe { adapter(h_adapter) }.and_then(Adapter::restart_from_timeout);
    finish("RestartFromTimeout", r)
}

pub(super) unsafe extern "system" fn ddi_reset_engine(
    h_adapter: HANDLE,
    args: *mut sys::DXGKARG_RESETENGINE,
) -> NTSTATUS {
    let r = (|| {
        // SAFETY: Dxgkrnl passes the adapter handle from AddDevice.
        let a = unsafe { adapter(h_adapter) }?;
        // SAFETY: Dxgkrnl's argument block.
        let args = unsafe { ResetEngine::from_raw(args) }?;
        only_engine_0(args.engine())?;
        // Everything queued and not completed is aborted by the reset: the last aborted fence
        // is the last one submitted (equal to the last completed one when nothing was lost).
        let last_submitted = a.last_submitted_fence();
        a.reset_hardware();
        a.restart_hardware()?;
        args.complete(last_submitted);
        Ok(())
    })();
    finish("ResetEngine", r)
}

pub(super) unsafe extern "system" fn ddi_query_dependent_engine_group(
    _h_adapter: HANDLE,
    args: *mut sys::DXGKARG_QUERYDEPENDENTENGINEGROUP,
) -> NTSTATUS {
    let r = (|| {
        // SAFETY: Dxgkrnl's argument block.
        let args = unsafe { QueryDependentEngineGroup::from_raw(args) }?;
        only_engine_0(args.engine())?;
        // One engine: it depends on nothing else.
        args.complete(0);
        Ok(())
    })();
    finish("QueryDependentEngineGroup", r)
}

pub(super) unsafe extern "system" fn ddi_query_engine_status(
    h_adapter: HANDLE,
    args: *mut sys::DXGKARG_QUERYENGINESTATUS,
) -> NTSTATUS {
    let r = (|| {
        // SAFETY: Dxgkrnl passes the adapter handle from AddDevice.
        let a = unsafe { adapter(h_adapter) }?;
        // SAFETY: Dxgkrnl's argument block.
        let args = unsafe { QueryEngineStatus::from_raw(args) }?;
        only_engine_0(args.engine())?;
        args.complete(a.engine_responsive());
        Ok(())
    })();
    finish("QueryEngineStatus", r)
}

// IOMMU isolation: between Begin and End the device must not touch system memory.

pub(super) unsafe extern "system" fn ddi_begin_exclusive_access(
    h_adapter: HANDLE,
    _args: *mut sys::DXGKARG_BEGINEXCLUSIVEACCESS,
) -> NTSTATUS {
    // SAFETY: Dxgkrnl passes the adapter handle from AddDevice.
    let r = unsafe { adapter(h_adapter) }.map(Adapter::begin_exclusive_access);
    finish("BeginExclusiveAccess", r)
}

pub(super) unsafe extern "system" fn ddi_end_exclusive_access(
    h_adapter: HANDLE,
    _args: *mut sys::DXGKARG_ENDEXCLUSIVEACCESS,
) -> NTSTATUS {
    // SAFETY: Dxgkrnl passes the adapter handle from AddDevice.
    let r = unsafe { adapter(h_adapter) }.map(Adapter::end_exclusive_access);
    finish("EndExclusiveAccess", r)
}
