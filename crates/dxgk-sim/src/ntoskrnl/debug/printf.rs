//! The printf subset `DbgPrintEx` formats when it runs as Rust (under Miri; see the parent
//! module). Kept separate from the argument source so that normal builds test it against the C
//! shim's `vsnprintf`.
//!
//! Supported: flags `-` and `0`, a decimal width and precision, the length modifiers `h`, `hh`
//! (read as `int`, as C promotes them), `l` (32 bits: kernel code is LLP64), `ll`, `I64`, `I`,
//! `z` (64 bits), and the conversions `d i u x X c s p %`. Anything else (`*`, floats, `%ws`,
//! `%wZ`) ends formatting: the rest of the format is copied verbatim, because the type of the
//! argument it would read is unknown.

/// The C type of one variadic argument. Signedness matters: C (and Miri) only allow reading a
/// value as the other signedness when it is representable in both.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Arg {
    /// `int` (also `char` and `short`, promoted).
    Int,
    /// `unsigned int`.
    Unsigned,
    /// A signed 64-bit integer (`long long`, `__int64`, `ptrdiff_t`).
    Long,
    /// An unsigned 64-bit integer (`unsigned long long`, `size_t`).
    UnsignedLong,
    /// A pointer printed by `%p`.
    Pointer,
}

/// Where the formatter takes its arguments from, in order.
pub(crate) trait Args {
    /// The next argument, of C type `arg`, extended to 64 bits (signed types sign-extended).
    fn next(&mut self, arg: Arg) -> u64;
    /// The next `%s` argument: the string's bytes without the NUL, or `None` for NULL.
    fn next_str(&mut self) -> Option<&[u8]>;
}

struct Spec {
    left: bool,
    zero: bool,
    width: usize,
    precision: Option<usize>,
    long: bool,
}

/// Formats `fmt` (without its NUL) with `args`, keeping at most `max` bytes, as `snprintf`
/// into a buffer of `max + 1` bytes does.
pub(crate) fn format(fmt: &[u8], args: &mut dyn Args, max: usize) -> Vec<u8> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < fmt.len() {
        if fmt[i] != b'%' {
            out.push(fmt[i]);
            i += 1;
            continue;
        }
        let start = i;
        i += 1;
        match conversion(fmt, &mut i, args, &mut out) {
            Some(()) => {}
            None => {
                out.extend_from_slice(&fmt[start..]);
                break;
            }
        }
    }
    out.truncate(max);
    out
}

/// Formats the conversion after the `%` at `fmt[*i - 1]`; `None` if it is not supported.
fn conversion(fmt: &[u8], i: &mut usize, args: &mut dyn Args, out: &mut Vec<u8>) -> Option<()> {
    let mut spec = Spec {
        left: false,
        zero: false,
        width: 0,
        precision: None,
        long: false,
    };
    while let Some(&c @ (b'-' | b'0')) = fmt.get(*i) {
        spec.left |= c == b'-';
        spec.zero |= c == b'0';
        *i += 1;
    }
    spec.width = digits(fmt, i);
    if fmt.get(*i) == Some(&b'.') {
        *i += 1;
        spec.precision = Some(digits(fmt, i));
    }
    let rest = &fmt[*i..];
    let (skip, long) = match rest {
        [b'I', b'6', b'4', ..] => (3, true),
        [b'I', b'3', b'2', ..] => (3, false),
        [b'l', b'l', ..] | [b'h', b'h', ..] => (2, rest[0] == b'l'),
        [b'I' | b'z', ..] => (1, true),
        [b'l' | b'h', ..] => (1, false),
        _ => (0, false),
    };
    spec.long = long;
    *i += skip;
    let conv = *fmt.get(*i)?;
    *i += 1;
    let (signed, unsigned) = if spec.long {
        (Arg::Long, Arg::UnsignedLong)
    } else {
        (Arg::Int, Arg::Unsigned)
    };
    // Integers: (negative, digits), padded by `number`; the rest is text padded by `pad`.
    let (negative, digits) = match conv {
        b'd' | b'i' => {
            let v = args.next(signed);
            let v = if spec.long {
                v as i64
            } else {
                i64::from(v as u32 as i32)
            };
            (v < 0, v.unsigned_abs().to_string())
        }
        b'u' => (false, args.next(unsigned).to_string()),
        b'x' => (false, format!("{:x}", args.next(unsigned))),
        b'X' => (false, format!("{:X}", args.next(unsigned))),
        _ => {
            let body = match conv {
                b'%' => b"%".to_vec(),
                b'c' => vec![args.next(Arg::Int) as u8],
                b's' => {
                    let s = args.next_str().unwrap_or(b"(null)");
                    s[..spec.precision.map_or(s.len(), |p| p.min(s.len()))].to_vec()
                }
                b'p' => match args.next(Arg::Pointer) {
                    0 => b"(nil)".to_vec(),
                    p => format!("0x{p:x}").into_bytes(),
                },
                _ => return None,
            };
            pad(out, &spec, &body, false);
            return Some(());
        }
    };
    number(out, &spec, negative, digits);
    Some(())
}

fn digits(fmt: &[u8], i: &mut usize) -> usize {
    let mut n = 0usize;
    while let Some(d @ b'0'..=b'9') = fmt.get(*i) {
        n = n.saturating_mul(10).saturating_add(usize::from(d - b'0'));
        *i += 1;
    }
    n
}

/// An integer conversion: precision is the minimum digit count; `0` pads after the sign
/// (and is ignored with `-` or a precision, as in C).
fn number(out: &mut Vec<u8>, spec: &Spec, negative: bool, digits: String) {
    let mut body = Vec::new();
    if negative {
        body.push(b'-');
    }
    match spec.precision {
        Some(0) if digits == "0" => {}
        Some(p) => {
            body.resize(body.len() + p.saturating_sub(digits.len()), b'0');
            body.extend_from_slice(digits.as_bytes());
        }
        None => body.extend_from_slice(digits.as_bytes()),
    }
    let zeros = spec.zero && !spec.left && spec.precision.is_none();
    pad(out, spec, &body, zeros);
}

/// Pads `body` to the width: spaces on the left (or right with `-`), or zeros after the sign.
fn pad(out: &mut Vec<u8>, spec: &Spec, body: &[u8], zeros: bool) {
    let fill = spec.width.saturating_sub(body.len());
    if spec.left {
        out.extend_from_slice(body);
        out.resize(out.len() + fill, b' ');
    } else if zeros {
        let sign = usize::from(body.first() == Some(&b'-'));
        out.extend_from_slice(&body[..sign]);
        out.resize(out.len() + fill, b'0');
        out.extend_from_slice(&body[sign..]);
    } else {
        out.resize(out.len() + fill, b' ');
        out.extend_from_slice(body);
    }
}

#[cfg(test)]
mod tests {
    use super::{format, Arg, Args};

    /// Arguments as a test lists them; records the C type each read asked for.
    struct Listed<'a> {
        values: &'a [u64],
        strings: &'a [Option<&'a [u8]>],
        reads: Vec<Arg>,
    }

    impl Args for Listed<'_> {
        fn next(&mut self, arg: Arg) -> u64 {
            self.reads.push(arg);
            let (v, rest) = self
                .values
                .split_first()
                .expect("format read too many values");
            self.values = rest;
            *v
        }
        fn next_str(&mut self) -> Option<&[u8]> {
            let (s, rest) = self
                .strings
                .split_first()
                .expect("format read too many strings");
            self.strings = rest;
            *s
        }
    }

    fn run(fmt: &str, values: &[u64], strings: &[Option<&[u8]>]) -> (String, Vec<Arg>) {
        let mut args = Listed {
            values,
            strings,
            reads: Vec::new(),
        };
        let out = format(fmt.as_bytes(), &mut args, 1023);
        (String::from_utf8(out).unwrap(), args.reads)
    }

    #[test]
    fn integers_follow_c_flags_width_and_precision() {
        let minus_five = (-5i32) as u32 as u64;
        let (out, _) = run(
            "[%d|%5d|%-5d|%05d|%.3u|%x|%08X|%i]",
            &[42, 42, 42, minus_five, 7, 0xbeef, 0xbeef, minus_five],
            &[],
        );
        assert_eq!(out, "[42|   42|42   |-0005|007|beef|0000BEEF|-5]");
    }

    #[test]
    fn length_modifiers_pick_the_llp64_argument_size() {
        let (out, reads) = run(
            "%lu %llx %I64d %zu %hu %p %p",
            &[7, 0x1_0000_0000, u64::MAX, 9, 3, 0, 0x1000],
            &[],
        );
        assert_eq!(out, "7 100000000 -1 9 3 (nil) 0x1000");
        use Arg::{Long, Pointer, Unsigned, UnsignedLong};
        assert_eq!(
            reads,
            [
                Unsigned,
                UnsignedLong,
                Long,
                UnsignedLong,
                Unsigned,
                Pointer,
                Pointer
            ]
        );
    }

    #[test]
    fn signed_and_unsigned_conversions_read_their_own_type() {
        let (_, reads) = run("%d %u %x %c %lld %llu", &[1, 2, 3, 4, 5, 6], &[]);
        use Arg::{Int, Long, Unsigned, UnsignedLong};
        assert_eq!(reads, [Int, Unsigned, Unsigned, Int, Long, UnsignedLong]);
    }

    #[test]
    fn strings_chars_and_percent() {
        let (out, _) = run(
            "%s|%.2s|%6s|%s|%c|100%%",
            &[u64::from(b'Z')],
            &[Some(b"abc"), Some(b"abc"), Some(b"abc"), None],
        );
        assert_eq!(out, "abc|ab|   abc|(null)|Z|100%");
    }

    #[test]
    fn an_unsupported_conversion_stops_and_keeps_the_rest_verbatim() {
        let (out, reads) = run("a=%u %ws b=%u", &[1], &[]);
        assert_eq!(out, "a=1 %ws b=%u");
        assert_eq!(reads.len(), 1, "no argument of unknown type is read");
    }

    #[test]
    fn output_is_cut_at_the_buffer_size() {
        let mut args = Listed {
            values: &[],
            strings: &[Some(&[b'x'; 2000])],
            reads: Vec::new(),
        };
        assert_eq!(format(b"%s", &mut args, 1023).len(), 1023);
    }
}
