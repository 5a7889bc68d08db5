//! DriverEntry → DxgkInitialize → AddDevice → RemoveDevice through dxgk-sim, on the Windows
//! versions rgpu must load on and one it must refuse.

use dxgk_sim::{AdapterConfig, Machine, MachineConfig};
use dxgk_sys as sys;

/// Storage standing in for the kernel objects the I/O manager passes to DriverEntry.
struct FakeIoObjects {
    driver: sys::DRIVER_OBJECT,
    path_buf: Vec<u16>,
    path: sys::UNICODE_STRING,
}

impl FakeIoObjects {
    fn new() -> Box<Self> {
        let mut me = Box::new(Self {
            driver: sys::DRIVER_OBJECT::default(),
            path_buf: "\\Registry\\Machine\\System\\CurrentControlSet\\Services\\rgpu\0"
                .encode_utf16()
                .collect(),
            path: sys::UNICODE_STRING::default(),
        });
        me.path.Length = ((me.path_buf.len() - 1) * 2) as u16;
        me.path.MaximumLength = (me.path_buf.len() * 2) as u16;
        me.path.Buffer = me.path_buf.as_mut_ptr();
        me
    }

    fn driver_entry(&mut self) -> sys::NTSTATUS {
        // SAFETY: both objects are valid for the call, as the I/O manager guarantees.
        unsafe { rgpu::ddi::DriverEntry(&mut self.driver, &mut self.path) }
    }
}

#[test]
fn registers_with_the_newest_version_the_os_accepts_and_manages_the_adapter_context() {
    for (config, expected) in [
        (
            MachineConfig::windows_10_1803(),
            sys::DXGKDDI_INTERFACE_VERSION_WDDM2_4,
        ),
        (
            MachineConfig::windows_11_22h2(),
            sys::DXGKDDI_INTERFACE_VERSION_WDDM3_1,
        ),
    ] {
        let m = Machine::new(config);
        let mut io = FakeIoObjects::new();
        m.enter(|| {
            assert_eq!(
                io.driver_entry(),
                sys::STATUS_SUCCESS,
                "{}",
                m.config().name
            );
            let ddis = m
                .registered_driver()
                .expect("DxgkInitialize kept the DDI table");
            assert_eq!(ddis.Version, expected, "{}", m.config().name);

            let pdo = m.pdo(m.add_adapter(AdapterConfig { device: None }));
            let mut context: sys::PVOID = std::ptr::null_mut();
            let add = ddis.DxgkDdiAddDevice.unwrap();
            // SAFETY: a valid PDO and context slot, as Dxgkrnl passes them.
            assert_eq!(unsafe { add(pdo, &mut context) }, sys::STATUS_SUCCESS);
            assert!(!context.is_null());
            assert_eq!(
                m.pool_in_use(),
                vec![("Rgpu".to_string(), size_of::<rgpu::adapter::Adapter>())]
            );

            let remove = ddis.DxgkDdiRemoveDevice.unwrap();
            // SAFETY: the context AddDevice returned, used once.
            assert_eq!(unsafe { remove(context) }, sys::STATUS_SUCCESS);
            let unload = ddis.DxgkDdiUnload.unwrap();
            // SAFETY: no adapters remain.
            unsafe { unload() };
        });
        assert!(m.debug_contains(&format!("rgpu: registered with interface {expected:#x}")));
        m.check_pool_leaks();
        m.assert_clean();
    }
}

#[test]
fn refuses_to_load_on_wddm_2_3_cleanly() {
    let m = Machine::new(MachineConfig::windows_10_1709());
    let mut io = FakeIoObjects::new();
    let status = m.enter(|| io.driver_entry());
    assert_eq!(status, sys::STATUS_REVISION_MISMATCH);
    assert!(m.registered_driver().is_none());
    // Every supported version was offered, newest first, and none older than 2.4.
    assert_eq!(
        m.offered_interface_versions(),
        rgpu::ddi::SUPPORTED_INTERFACE_VERSIONS
    );
    assert!(m.debug_contains("no supported interface version (WDDM 2.4 or newer) was accepted"));
    m.check_pool_leaks();
    m.assert_clean();
}

#[test]
fn add_device_rejects_null_arguments_without_allocating() {
    let m = Machine::new(MachineConfig::windows_11_22h2());
    let mut io = FakeIoObjects::new();
    m.enter(|| {
        assert_eq!(io.driver_entry(), sys::STATUS_SUCCESS);
        let add = m.registered_driver().unwrap().DxgkDdiAddDevice.unwrap();
        let mut context: sys::PVOID = std::ptr::null_mut();
        // SAFETY: NULL PDO is the malformed input under test; the DDI must reject it.
        let r = unsafe { add(std::ptr::null_mut(), &mut context) };
        assert_eq!(r, sys::STATUS_INVALID_PARAMETER);
    });
    assert_eq!(m.pool_allocation_count(), 0);
    m.assert_clean();
}
