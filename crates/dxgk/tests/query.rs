//! The QueryAdapterInfo view: every decode refuses the malformed requests it guards against
//! with the status a Windows engineer expects, writes nothing when it refuses, and its writers
//! never write past the window the size rules allow.

use core::mem::size_of;

use dxgk::query::{physical_adapter_caps_size, Request, SegmentInfo};
use dxgk::NtError;
use dxgk_sim as _; // defines the kernel imports dxgk links against
use dxgk_sys as sys;

const V31: u32 = sys::DXGKDDI_INTERFACE_VERSION_WDDM3_1;
const FILL: u8 = 0xAA;

/// Decodes a request over `input` / `output` (NULL when `None`) and, when it decodes, runs
/// `answer` on it. Returns the decode status.
fn with_request(
    ty: sys::DXGK_QUERYADAPTERINFOTYPE,
    interface: u32,
    input: Option<&mut [u8]>,
    output: Option<&mut [u8]>,
    answer: impl FnOnce(Request<'_>),
) -> Result<(), NtError> {
    let (p_in, n_in) = input.map_or((std::ptr::null_mut(), 0), |b| (b.as_mut_ptr(), b.len()));
    let (p_out, n_out) = output.map_or((std::ptr::null_mut(), 0), |b| (b.as_mut_ptr(), b.len()));
    let args = sys::DXGKARG_QUERYADAPTERINFO {
        Type: ty,
        pInputData: p_in.cast(),
        InputDataSize: n_in as u32,
        pOutputData: p_out.cast(),
        OutputDataSize: n_out as u32,
        ..Default::default()
    };
    // SAFETY: the buffers are valid for the sizes passed and outlive the request.
    let request = unsafe { Request::decode(&args, interface) }?;
    answer(request);
    Ok(())
}

/// Decode only.
fn decode(
    ty: sys::DXGK_QUERYADAPTERINFOTYPE,
    input: Option<&mut [u8]>,
    output: Option<&mut [u8]>,
) -> Result<(), NtError> {
    with_request(ty, V31, input, output, |_| {})
}

/// A valid input for the types that need one.
fn input_for(ty: sys::DXGK_QUERYADAPTERINFOTYPE) -> Option<Vec<u8>> {
    if ty == sys::DXGKQAITYPE_GPUMMUCAPS {
        Some(vec![0; size_of::<sys::DXGK_QUERYGPUMMUCAPSIN>()])
    } else if ty == sys::DXGKQAITYPE_PAGETABLELEVELDESC {
        Some(vec![0; size_of::<sys::DXGK_QUERYPAGETABLELEVELDESCIN>()])
    } else {
        None
    }
}

#[test]
fn output_sizes_are_checked_for_every_decoded_type() {
    let smallest_caps = sys::DXGK_DRIVERCAPS_SIZE_BY_VERSION
        .iter()
        .map(|&(_, s)| s)
        .min()
        .unwrap();
    let caps = size_of::<sys::DXGK_DRIVERCAPS>();
    // (type, output size, expected decode result)
    let table: Vec<(sys::DXGK_QUERYADAPTERINFOTYPE, usize, Result<(), NtError>)> = vec![
        (sys::DXGKQAITYPE_DRIVERCAPS, caps, Ok(())),
        (sys::DXGKQAITYPE_DRIVERCAPS, smallest_caps, Ok(())),
        (
            sys::DXGKQAITYPE_DRIVERCAPS,
            0,
            Err(NtError::BUFFER_TOO_SMALL),
        ),
        (
            sys::DXGKQAITYPE_DRIVERCAPS,
            smallest_caps - 1,
            Err(NtError::BUFFER_TOO_SMALL),
        ),
        (
            sys::DXGKQAITYPE_DRIVERCAPS,
            caps - 3,
            Err(NtError::INVALID_PARAMETER),
        ),
        (
            sys::DXGKQAITYPE_DRIVERCAPS,
            caps + 8,
            Err(NtError::INVALID_PARAMETER),
        ),
        (
            sys::DXGKQAITYPE_GPUMMUCAPS,
            size_of::<sys::DXGK_GPUMMUCAPS>(),
            Ok(()),
        ),
        (
            sys::DXGKQAITYPE_GPUMMUCAPS,
            size_of::<sys::DXGK_GPUMMUCAPS>() - 1,
            Err(NtError::BUFFER_TOO_SMALL),
        ),
        (
            sys::DXGKQAITYPE_PAGETABLELEVELDESC,
            size_of::<sys::DXGK_PAGE_TABLE_LEVEL_DESC>() - 1,
            Err(NtError::BUFFER_TOO_SMALL),
        ),
        (
            sys::DXGKQAITYPE_QUERYSEGMENT4,
            size_of::<sys::DXGK_QUERYSEGMENTOUT4>() - 1,
            Err(NtError::BUFFER_TOO_SMALL),
        ),
        (
            sys::DXGKQAITYPE_PHYSICALADAPTERCAPS,
            physical_adapter_caps_size(V31) - 1,
            Err(NtError::BUFFER_TOO_SMALL),
        ),
        (
            sys::DXGKQAITYPE_NUMPOWERCOMPONENTS,
            3,
            Err(NtError::BUFFER_TOO_SMALL),
        ),
        (sys::DXGKQAITYPE_NUMPOWERCOMPONENTS, 4, Ok(())),
        (
            sys::DXGKQAITYPE_FRAMEBUFFERSAVESIZE,
            size_of::<sys::DXGK_FRAMEBUFFERSAVEAREA>() - 1,
            Err(NtError::BUFFER_TOO_SMALL),
        ),
        (
            sys::DXGKQAITYPE_HARDWARERESERVEDRANGES,
            size_of::<sys::DXGK_HARDWARERESERVEDRANGES>() - 1,
            Err(NtError::BUFFER_TOO_SMALL),
        ),
        (
            sys::DXGKQAITYPE_PHYSICAL_MEMORY_CAPS,
            size_of::<sys::DXGK_PHYSICAL_MEMORY_CAPS>() - 1,
            Err(NtError::BUFFER_TOO_SMALL),
        ),
        (
            sys::DXGKQAITYPE_PHYSICAL_MEMORY_CAPS,
            size_of::<sys::DXGK_PHYSICAL_MEMORY_CAPS>(),
            Ok(()),
        ),
        (
            sys::DXGKQAITYPE_IOMMU_CAPS,
            size_of::<sys::DXGK_IOMMU_CAPS>() - 1,
            Err(NtError::BUFFER_TOO_SMALL),
        ),
        (
            sys::DXGKQAITYPE_IOMMU_CAPS,
            size_of::<sys::DXGK_IOMMU_CAPS>(),
            Ok(()),
        ),
    ];
    for (ty, size, expected) in table {
        let mut input = input_for(ty);
        let mut out = vec![FILL; size];
        let got = decode(ty, input.as_deref_mut(), Some(&mut out));
        assert_eq!(got, expected, "type {} with {} output bytes", ty.0, size);
        assert!(
            out.iter().all(|&b| b == FILL),
            "decoding type {} wrote to the output",
            ty.0
        );
        // A NULL output is refused for every type that has one.
        let mut input = input_for(ty);
        assert_eq!(
            decode(ty, input.as_deref_mut(), None),
            Err(NtError::INVALID_PARAMETER),
            "type {} with a NULL output",
            ty.0
        );
    }
}

#[test]
fn missing_or_short_inputs_are_invalid() {
    for ty in [
        sys::DXGKQAITYPE_GPUMMUCAPS,
        sys::DXGKQAITYPE_PAGETABLELEVELDESC,
    ] {
        let mut out = vec![0u8; 256];
        assert_eq!(
            decode(ty, None, Some(&mut out)),
            Err(NtError::INVALID_PARAMETER)
        );
        let mut short = input_for(ty).unwrap();
        short.pop();
        assert_eq!(
            decode(ty, Some(&mut short), Some(&mut out)),
            Err(NtError::INVALID_PARAMETER)
        );
    }
}

#[test]
fn writers_stop_at_the_window_the_version_allows() {
    // DRIVERCAPS in an old Windows' size: exactly that many bytes.
    let (_, old) = sys::DXGK_DRIVERCAPS_SIZE_BY_VERSION[0];
    let mut out = vec![FILL; old];
    with_request(
        sys::DXGKQAITYPE_DRIVERCAPS,
        V31,
        None,
        Some(&mut out),
        |r| {
            let Request::DriverCaps(w) = r else {
                panic!("not DriverCaps: {r:?}")
            };
            assert_eq!(w.len(), old);
            w.write(&sys::DXGK_DRIVERCAPS::default());
        },
    )
    .unwrap();
    assert!(
        out.iter().all(|&b| b == 0),
        "the whole old-size window written"
    );

    // PHYSICALADAPTERCAPS on the oldest interface: only that version's size, even in a larger
    // buffer.
    let v24 = sys::DXGKDDI_INTERFACE_VERSION_WDDM2_4;
    let size = physical_adapter_caps_size(v24);
    let mut out = vec![FILL; size_of::<sys::DXGK_PHYSICALADAPTERCAPS>() + 16];
    with_request(
        sys::DXGKQAITYPE_PHYSICALADAPTERCAPS,
        v24,
        None,
        Some(&mut out),
        |r| {
            let Request::PhysicalAdapterCaps(w) = r else {
                panic!("not PhysicalAdapterCaps: {r:?}")
            };
            w.write(&sys::DXGK_PHYSICALADAPTERCAPS::default());
        },
    )
    .unwrap();
    assert!(out[..size].iter().all(|&b| b == 0));
    assert!(
        out[size..].iter().all(|&b| b == FILL),
        "nothing written past the 2.4 size ({size} bytes)"
    );
}

/// A QUERYSEGMENT4 output buffer as VidMm's second call passes it.
fn segment_out(descriptors: *mut u8, count: u32, stride: usize) -> Vec<u8> {
    let q = sys::DXGK_QUERYSEGMENTOUT4 {
        NbSegment: count,
        pSegmentDescriptor: descriptors,
        SegmentDescriptorStride: stride,
        ..Default::default()
    };
    let mut out = vec![0u8; size_of::<sys::DXGK_QUERYSEGMENTOUT4>()];
    // SAFETY: `out` holds exactly one DXGK_QUERYSEGMENTOUT4, written unaligned.
    unsafe {
        out.as_mut_ptr()
            .cast::<sys::DXGK_QUERYSEGMENTOUT4>()
            .write_unaligned(q)
    };
    out
}

#[test]
fn segment_descriptor_arrays_are_validated_and_written_within_their_stride() {
    let d = size_of::<sys::DXGK_SEGMENTDESCRIPTOR4>();
    let mut array = vec![FILL; 2 * d];
    // A zero stride, and a count × stride that overflows, are refused.
    for (count, stride) in [(1, 0), (u32::MAX, usize::MAX / 2)] {
        let mut out = segment_out(array.as_mut_ptr(), count, stride);
        assert_eq!(
            decode(sys::DXGKQAITYPE_QUERYSEGMENT4, None, Some(&mut out)),
            Err(NtError::INVALID_PARAMETER),
            "count {count} stride {stride}"
        );
    }
    // A short stride: only `stride` bytes of each slot are written; slot 1 stays untouched and
    // a slot past the array is refused.
    let stride = d - 8;
    let mut out = segment_out(array.as_mut_ptr(), 1, stride);
    with_request(
        sys::DXGKQAITYPE_QUERYSEGMENT4,
        V31,
        None,
        Some(&mut out),
        |r| {
            let Request::QuerySegment(mut q) = r else {
                panic!("not QuerySegment: {r:?}")
            };
            let slots = q.descriptors.as_mut().expect("second call");
            assert_eq!(slots.count(), 1);
            let desc = sys::DXGK_SEGMENTDESCRIPTOR4::default();
            slots.write(0, &desc).unwrap();
            assert_eq!(slots.write(1, &desc), Err(NtError::INVALID_PARAMETER));
            q.reply(SegmentInfo {
                segment_count: 1,
                paging_buffer_segment_id: 1,
                paging_buffer_size: 4096,
                paging_buffer_private_data_size: 0,
            });
        },
    )
    .unwrap();
    assert!(array[..stride].iter().all(|&b| b == 0));
    assert!(array[stride..].iter().all(|&b| b == FILL));
    // The reply keeps VidMm's pointer and stride.
    // SAFETY: `out` holds one DXGK_QUERYSEGMENTOUT4, read unaligned.
    let q = unsafe {
        out.as_ptr()
            .cast::<sys::DXGK_QUERYSEGMENTOUT4>()
            .read_unaligned()
    };
    assert_eq!(
        (q.NbSegment, q.PagingBufferSegmentId, q.PagingBufferSize),
        (1, 1, 4096)
    );
    assert_eq!(q.pSegmentDescriptor, array.as_mut_ptr());
    assert_eq!(q.SegmentDescriptorStride, stride);
}

#[test]
fn remapping_caps_decode_before_any_interface_is_known_and_write_only_their_size() {
    // Dxgkrnl asks both before StartDevice: the driver may not know the interface yet (0).
    for interface in [0, V31] {
        let mut out = vec![FILL; 16];
        with_request(
            sys::DXGKQAITYPE_IOMMU_CAPS,
            interface,
            None,
            Some(&mut out),
            |r| {
                let Request::IommuCaps(o) = r else {
                    panic!("{r:?}")
                };
                assert_eq!(o.len(), 4);
                o.write(&sys::DXGK_IOMMU_CAPS { Value: 0x0403_0201 });
            },
        )
        .unwrap();
        assert_eq!(&out[..4], &[1, 2, 3, 4]);
        assert!(out[4..].iter().all(|&b| b == FILL));
        let mut out = vec![FILL; 16];
        with_request(
            sys::DXGKQAITYPE_PHYSICAL_MEMORY_CAPS,
            interface,
            None,
            Some(&mut out),
            |r| {
                let Request::PhysicalMemoryCaps(o) = r else {
                    panic!("{r:?}")
                };
                assert_eq!(o.len(), 8);
                o.write(&sys::DXGK_PHYSICAL_MEMORY_CAPS {
                    HighestVisibleAddress: sys::PHYSICAL_ADDRESS { QuadPart: -1 },
                });
            },
        )
        .unwrap();
        assert!(out[..8].iter().all(|&b| b == 0xFF));
        assert!(out[8..].iter().all(|&b| b == FILL));
    }
}

#[test]
fn types_the_view_does_not_decode_come_back_as_other() {
    for ty in [
        sys::DXGKQAITYPE_QUERYSEGMENT3,
        sys::DXGK_QUERYADAPTERINFOTYPE(999),
    ] {
        let mut out = vec![FILL; 8];
        with_request(ty, V31, None, Some(&mut out), |r| {
            assert!(matches!(r, Request::Other(t) if t == ty), "{r:?}");
        })
        .unwrap();
        assert!(out.iter().all(|&b| b == FILL));
    }
}
