//! Typed handles: what Dxgkrnl passes back to a miniport instead of `HANDLE` / `PVOID`.
//!
//! Two directions, two types:
//! * [`KmdHandle<K>`]: a handle the **driver** created and gave to Dxgkrnl (the
//!   `MiniportDeviceContext` / `hAdapter`, `hDevice`, `hContext`, `hKmdProcess`, an allocation's
//!   `hAllocation`). Dxgkrnl hands it back unchanged; only the driver knows what it points at,
//!   so turning it into a reference is the driver's DDI entry layer's (unsafe) job.
//! * [`DxgkHandle<K>`]: a handle **Dxgkrnl** created (`hDxgkProcess`, the adapter's
//!   `DeviceHandle`, ...). Opaque: the driver only stores it and passes it back.
//!
//! `K` is a kind marker from [`kind`], so an `hContext` cannot be used where an `hKmdProcess`
//! is expected. Both are never NULL: a NULL handle decodes to `None`.

use core::ffi::c_void;
use core::fmt;
use core::marker::PhantomData;
use core::ptr::NonNull;

use dxgk_sys::HANDLE;

/// Kind markers for typed handles (uninhabited: they only name the kind).
pub mod kind {
    /// An adapter (`MiniportDeviceContext`, `hAdapter`).
    pub enum Adapter {}
    /// A D3D device (`hDevice`).
    pub enum Device {}
    /// A scheduling context (`hContext`).
    pub enum Context {}
    /// A GPU VA space owner (`hKmdProcess` / `hDxgkProcess`).
    pub enum Process {}
    /// An allocation (`hAllocation`).
    pub enum Allocation {}
    /// A device's view of an allocation (`hDeviceSpecificAllocation`, from OpenAllocation).
    pub enum DeviceAllocation {}
}

/// A non-NULL handle of kind `K` that the driver created and Dxgkrnl passed back.
pub struct KmdHandle<K> {
    raw: NonNull<c_void>,
    _kind: PhantomData<fn() -> K>,
}

/// A non-NULL handle of kind `K` that Dxgkrnl created; opaque to the driver.
pub struct DxgkHandle<K> {
    raw: NonNull<c_void>,
    _kind: PhantomData<fn() -> K>,
}

macro_rules! handle_impls {
    ($ty:ident) => {
        impl<K> $ty<K> {
            /// The handle Dxgkrnl passed, or `None` for NULL.
            pub fn from_raw(raw: HANDLE) -> Option<Self> {
                NonNull::new(raw).map(|raw| Self {
                    raw,
                    _kind: PhantomData,
                })
            }

            /// A handle from a non-NULL pointer (the object it names, for a [`KmdHandle`]).
            pub fn from_non_null(raw: NonNull<c_void>) -> Self {
                Self {
                    raw,
                    _kind: PhantomData,
                }
            }

            /// The raw value, for the ABI.
            pub fn as_raw(self) -> HANDLE {
                self.raw.as_ptr()
            }

            /// The raw value as a non-NULL pointer (for the entry layer that made it).
            pub fn as_non_null(self) -> NonNull<c_void> {
                self.raw
            }
        }

        impl<K> Clone for $ty<K> {
            fn clone(&self) -> Self {
                *self
            }
        }

        impl<K> Copy for $ty<K> {}

        impl<K> PartialEq for $ty<K> {
            fn eq(&self, other: &Self) -> bool {
                self.raw == other.raw
            }
        }

        impl<K> Eq for $ty<K> {}

        impl<K> fmt::Debug for $ty<K> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(
                    f,
                    "{}<{}>({:p})",
                    stringify!($ty),
                    core::any::type_name::<K>()
                        .rsplit("::")
                        .next()
                        .unwrap_or("?"),
                    self.raw
                )
            }
        }
    };
}

handle_impls!(KmdHandle);
handle_impls!(DxgkHandle);

/// `hAdapter` / `MiniportDeviceContext`.
pub type AdapterHandle = KmdHandle<kind::Adapter>;
/// `hDevice`.
pub type DeviceHandle = KmdHandle<kind::Device>;
/// `hContext`.
pub type ContextHandle = KmdHandle<kind::Context>;
/// `hKmdProcess` (the `hProcess` of FLUSH_TLB and others).
pub type ProcessHandle = KmdHandle<kind::Process>;
/// An allocation handle the driver returned from CreateAllocation.
pub type AllocationHandle = KmdHandle<kind::Allocation>;
/// `hDeviceSpecificAllocation`: a device's handle of an opened allocation.
pub type DeviceAllocationHandle = KmdHandle<kind::DeviceAllocation>;
/// `hDxgkProcess`: Dxgkrnl's handle of a process, named back in DMA_PAGE_FAULTED.
pub type DxgkProcessHandle = DxgkHandle<kind::Process>;

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::format;

    #[test]
    fn null_is_no_handle_and_values_round_trip() {
        assert!(ProcessHandle::from_raw(core::ptr::null_mut()).is_none());
        let raw: HANDLE = core::ptr::without_provenance_mut(0x1000);
        let h = ContextHandle::from_raw(raw).unwrap();
        assert_eq!(h.as_raw(), raw);
        assert_eq!(h, ContextHandle::from_raw(raw).unwrap());
        assert!(format!("{h:?}").contains("Context"));
    }
}
