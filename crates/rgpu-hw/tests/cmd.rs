//! Encoder/decoder tests: round trips, exact-fit and too-small buffers, malformed input.

use rgpu_hw::cmd::*;

fn all_commands<'a>(ptes: &'a [u8], data: &'a [u8]) -> Vec<Command<'a>> {
    vec![
        Command::Nop { dwords: 1 },
        Command::Nop { dwords: 4 },
        Command::Fill {
            dst: Target::Virtual(0x1_0000_0ff0),
            size: 0x2020,
            pattern: 0xDEAD_BEEF,
        },
        Command::Fill {
            dst: Target::Logical(0x8_0000_0000),
            size: 0,
            pattern: 1,
        },
        Command::Copy {
            dst: Target::Logical(0x8_0000_0003),
            src: Target::Virtual(0x7fff_ffff_ffff),
            size: 7,
        },
        Command::Copy {
            dst: Target::Virtual(8),
            src: Target::Logical(16),
            size: u64::MAX,
        },
        Command::WritePtes {
            dst: Target::Logical(0x8_0000_1ff8),
            entries: Qwords::new(ptes).unwrap(),
        },
        Command::WritePtes {
            dst: Target::Virtual(0x4000),
            entries: Qwords::new(ptes).unwrap(),
        },
        Command::WriteData {
            dst: Target::Virtual(0x1234_5670),
            data: Dwords::new(data).unwrap(),
        },
        Command::FlushTlb(FlushScope::All),
        Command::FlushTlb(FlushScope::Asid(15)),
        Command::FlushTlb(FlushScope::Range {
            asid: 3,
            va: 0x20_0000,
            size: 0x1_0000,
        }),
        Command::SetRoot {
            asid: 7,
            root: 0x9_1234_5000,
            entries: 512,
        },
        Command::SetRoot {
            asid: 0,
            root: 0,
            entries: 0,
        },
        Command::Fence {
            value: 0x0102_0304_0506_0708,
            irq: true,
        },
        Command::Fence {
            value: 0,
            irq: false,
        },
    ]
}

fn sample_payloads() -> (Vec<u8>, Vec<u8>) {
    let ptes: Vec<u8> = [0x8_0000_3001u64, 0, u64::MAX]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let data: Vec<u8> = [1u32, 2, 0xFFFF_FFFF]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    (ptes, data)
}

#[test]
fn round_trip_every_command() {
    let (ptes, data) = sample_payloads();
    let cmds = all_commands(&ptes, &data);
    let mut buf = vec![0u8; 4096];
    let mut enc = Encoder::new(&mut buf);
    let mut offsets = Vec::new();
    for c in &cmds {
        offsets.push(enc.position());
        let n = enc.push(c).unwrap();
        assert_eq!(n, c.bytes());
        assert_eq!(n % 4, 0);
    }
    let used = enc.position();
    let decoded: Vec<_> = Decoder::new(&buf[..used]).map(|r| r.unwrap()).collect();
    assert_eq!(decoded.len(), cmds.len());
    for ((off, d), (c, want_off)) in decoded.iter().zip(cmds.iter().zip(&offsets)) {
        assert_eq!(d, c);
        assert_eq!(off, want_off);
    }
}

#[test]
fn header_layout_is_as_specified() {
    let mut buf = [0u8; 64];
    let n = encode(
        &Command::Fill {
            dst: Target::Virtual(0x1000),
            size: 8,
            pattern: 0xAABBCCDD,
        },
        &mut buf,
    )
    .unwrap();
    assert_eq!(n, 24);
    let w = |i: usize| u32::from_le_bytes(buf[i * 4..i * 4 + 4].try_into().unwrap());
    assert_eq!(w(0), 0x0006_0101, "opcode 1, flag DST_VIRTUAL, 6 dwords");
    assert_eq!((w(1), w(2)), (0x1000, 0));
    assert_eq!((w(3), w(4)), (8, 0));
    assert_eq!(w(5), 0xAABBCCDD);
}

#[test]
fn convenience_methods_match_push() {
    let mut a = vec![0u8; 256];
    let mut b = vec![0u8; 256];
    let mut ea = Encoder::new(&mut a);
    ea.write_ptes(Target::Logical(0x10_0008), &[1, 2, 3])
        .unwrap();
    ea.write_data(Target::Virtual(0x44), &[9, 8]).unwrap();
    ea.fence(5, true).unwrap();
    let la = ea.position();
    let p: Vec<u8> = [1u64, 2, 3].iter().flat_map(|v| v.to_le_bytes()).collect();
    let d: Vec<u8> = [9u32, 8].iter().flat_map(|v| v.to_le_bytes()).collect();
    let mut eb = Encoder::new(&mut b);
    eb.push(&Command::WritePtes {
        dst: Target::Logical(0x10_0008),
        entries: Qwords::new(&p).unwrap(),
    })
    .unwrap();
    eb.push(&Command::WriteData {
        dst: Target::Virtual(0x44),
        data: Dwords::new(&d).unwrap(),
    })
    .unwrap();
    eb.push(&Command::Fence {
        value: 5,
        irq: true,
    })
    .unwrap();
    assert_eq!(la, eb.position());
    assert_eq!(a, b);
    assert_eq!(write_ptes_bytes(3), 36);
}

#[test]
fn too_small_buffer_writes_nothing_and_keeps_cursor() {
    let (ptes, data) = sample_payloads();
    for c in all_commands(&ptes, &data) {
        let need = c.bytes();
        // One byte short: error, untouched.
        let mut buf = vec![0xA5u8; need - 1];
        assert_eq!(
            encode(&c, &mut buf),
            Err(CmdError::BufferTooSmall {
                needed: need,
                available: need - 1
            })
        );
        assert!(
            buf.iter().all(|&b| b == 0xA5),
            "{c:?} wrote into a too-small buffer"
        );
        // Exact fit: ok.
        let mut buf = vec![0xA5u8; need];
        assert_eq!(encode(&c, &mut buf), Ok(need));
        // Encoder cursor unchanged after a failure.
        let mut buf = vec![0xA5u8; need + 3];
        let mut e = Encoder::new(&mut buf);
        e.nop(1).unwrap();
        assert_eq!(e.remaining(), need - 1);
        assert!(matches!(e.push(&c), Err(CmdError::BufferTooSmall { .. })));
        assert_eq!(e.position(), 4);
        assert!(buf[4..].iter().all(|&b| b == 0xA5));
    }
    // write_ptes_with never calls the producer when the command does not fit.
    let mut buf = [0u8; 27];
    let mut e = Encoder::new(&mut buf);
    let mut called = false;
    let r = e.write_ptes_with(Target::Logical(0), 2, |_| {
        called = true;
        1
    });
    assert_eq!(
        r,
        Err(CmdError::BufferTooSmall {
            needed: 28,
            available: 27
        })
    );
    assert!(!called);
    assert_eq!(ptes_fitting(27), 1);
    assert_eq!(ptes_fitting(28), 2);
    assert_eq!(ptes_fitting(11), 0);
    assert_eq!(ptes_fitting(1 << 20), MAX_PTES_PER_CMD);
    assert_eq!(write_ptes_bytes(MAX_PTES_PER_CMD) / 4, MAX_CMD_DWORDS - 1);
}

#[test]
fn encoder_rejects_invalid_operands() {
    let mut buf = [0u8; 256];
    let mut e = Encoder::new(&mut buf);
    assert_eq!(e.fill(Target::Logical(2), 4, 0), Err(CmdError::Misaligned));
    assert_eq!(e.fill(Target::Logical(4), 6, 0), Err(CmdError::Misaligned));
    assert_eq!(
        e.write_ptes(Target::Logical(4), &[1]),
        Err(CmdError::Misaligned)
    );
    assert_eq!(
        e.write_ptes(Target::Logical(8), &[]),
        Err(CmdError::BadPayload)
    );
    assert_eq!(
        e.write_data(Target::Logical(2), &[1]),
        Err(CmdError::Misaligned)
    );
    assert_eq!(e.set_root(16, 0, 1), Err(CmdError::BadAsid(16)));
    assert_eq!(e.set_root(1, 0x800, 1), Err(CmdError::Misaligned));
    assert_eq!(
        e.set_root(1, 0x1000, 513),
        Err(CmdError::BadRootEntries(513))
    );
    assert_eq!(
        e.flush_tlb(FlushScope::Asid(200)),
        Err(CmdError::BadAsid(200))
    );
    assert_eq!(
        e.nop(0),
        Err(CmdError::BadLength {
            opcode: OP_NOP,
            dwords: 0
        })
    );
    let too_many = vec![0u64; MAX_PTES_PER_CMD + 1];
    let mut big = vec![0u8; 64 * 1024];
    let mut e2 = Encoder::new(&mut big);
    assert_eq!(
        e2.write_ptes(Target::Logical(0), &too_many),
        Err(CmdError::BadPayload)
    );
    assert!(e2.write_ptes(Target::Logical(0), &too_many[1..]).is_ok());
    assert_eq!(e.position(), 0);
}

fn words(ws: &[u32]) -> Vec<u8> {
    ws.iter().flat_map(|w| w.to_le_bytes()).collect()
}

#[test]
fn decoder_rejects_malformed_commands() {
    assert_eq!(
        decode(&[1, 2]),
        Err(CmdError::BufferTooSmall {
            needed: 4,
            available: 2
        })
    );
    assert_eq!(
        decode(&words(&[0x0001_00FF])),
        Err(CmdError::BadOpcode(0xFF))
    );
    assert_eq!(
        decode(&words(&[0x0000_0000])),
        Err(CmdError::BadLength {
            opcode: 0,
            dwords: 0
        })
    );
    assert_eq!(
        decode(&words(&[0x0005_0001, 0, 0, 0, 0])),
        Err(CmdError::BadLength {
            opcode: 1,
            dwords: 5
        })
    );
    // Truncated FILL.
    assert_eq!(
        decode(&words(&[0x0006_0001, 0, 0])),
        Err(CmdError::BufferTooSmall {
            needed: 24,
            available: 12
        })
    );
    // Undefined flag.
    assert_eq!(
        decode(&words(&[0x0006_0401, 0, 0, 0, 0, 0])),
        Err(CmdError::BadFlags {
            opcode: 1,
            flags: 4
        })
    );
    // Misaligned FILL size.
    assert_eq!(
        decode(&words(&[0x0006_0001, 0, 0, 3, 0, 0])),
        Err(CmdError::Misaligned)
    );
    // WRITE_PTES with an even length (half an entry) and with no entries.
    assert_eq!(
        decode(&words(&[0x0006_0003, 0, 0, 1, 2, 3])),
        Err(CmdError::BadLength {
            opcode: 3,
            dwords: 6
        })
    );
    assert_eq!(
        decode(&words(&[0x0003_0003, 0, 0])),
        Err(CmdError::BadLength {
            opcode: 3,
            dwords: 3
        })
    );
    // Too long for the device.
    let long = (((MAX_CMD_DWORDS + 2) as u32) << 16) | 0x04;
    assert!(matches!(
        decode(&words(&[long])),
        Err(CmdError::BadLength { .. })
    ));
    // FLUSH_TLB: unknown scope, bad ASID.
    assert_eq!(
        decode(&words(&[0x0006_0305, 0, 0, 0, 0, 0])),
        Err(CmdError::BadFlags {
            opcode: 5,
            flags: 3
        })
    );
    assert_eq!(
        decode(&words(&[0x0006_0105, 16, 0, 0, 0, 0])),
        Err(CmdError::BadAsid(16))
    );
    assert_eq!(
        decode(&words(&[0x0006_0005, 1, 0, 0, 0, 0])),
        Err(CmdError::ReservedNonZero)
    );
    assert_eq!(
        decode(&words(&[0x0006_0105, 1, 0, 0, 4, 0])),
        Err(CmdError::ReservedNonZero)
    );
    // SET_ROOT: misaligned root, too many entries.
    assert_eq!(
        decode(&words(&[0x0005_0006, 1, 0x10, 0, 1])),
        Err(CmdError::Misaligned)
    );
    assert_eq!(
        decode(&words(&[0x0005_0006, 1, 0x1000, 0, 600])),
        Err(CmdError::BadRootEntries(600))
    );
    // A long NOP needs its whole body present, and the iterator stops after an error.
    let mut b = words(&[0x0003_0000, 0, 0]);
    b.extend(words(&[0x0001_00EE, 0x0001_0000]));
    let items: Vec<_> = Decoder::new(&b).collect();
    assert_eq!(
        items,
        vec![
            Ok((0, Command::Nop { dwords: 3 })),
            Err((12, CmdError::BadOpcode(0xEE)))
        ]
    );
}

#[test]
fn decoder_never_panics_on_garbage() {
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut ok = 0;
    for _ in 0..20_000 {
        let len = (next() % 64) as usize;
        let mut b: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        // Bias toward plausible headers so that the body paths are reached.
        if b.len() >= 4 && next() % 8 != 0 {
            b[0] = (next() % 9) as u8;
            b[1] = (next() % 4) as u8;
            b[2] = (next() % 12) as u8;
            b[3] = 0;
        }
        if let Ok((c, n)) = decode(&b) {
            ok += 1;
            assert_eq!(n, c.bytes());
            // Whatever decodes re-encodes to the same bytes (NOP bodies are zeroed).
            let mut out = vec![0u8; n];
            assert_eq!(encode(&c, &mut out), Ok(n));
            if !matches!(c, Command::Nop { .. }) {
                assert_eq!(out, b[..n]);
            }
        }
        for r in Decoder::new(&b) {
            if r.is_err() {
                break;
            }
        }
    }
    println!("{ok} of 20000 decoded");
    assert!(ok > 100, "the fuzz loop should reach valid commands ({ok})");
}
