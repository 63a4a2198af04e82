//! The msgpack writes of the span encoder, inlined into a `Vec<u8>` (the `rmp` functions
//! go through `io::Write` and error results: several times the instructions for a one-byte
//! integer). Same bytes as `rmp::encode` (smallest form), checked by the tests.

#[inline(always)]
pub(super) fn uint(buf: &mut Vec<u8>, v: u64) {
    if v < 128 {
        buf.push(v as u8);
    } else if v < 256 {
        buf.extend_from_slice(&[0xcc, v as u8]);
    } else if v < 65_536 {
        buf.push(0xcd);
        buf.extend_from_slice(&(v as u16).to_be_bytes());
    } else if v < 4_294_967_296 {
        buf.push(0xce);
        buf.extend_from_slice(&(v as u32).to_be_bytes());
    } else {
        buf.push(0xcf);
        buf.extend_from_slice(&v.to_be_bytes());
    }
}

#[inline(always)]
pub(super) fn sint(buf: &mut Vec<u8>, v: i64) {
    if v >= 0 {
        uint(buf, v as u64);
    } else if v >= -32 {
        buf.push(v as u8);
    } else if v >= -128 {
        buf.extend_from_slice(&[0xd0, v as u8]);
    } else if v >= -32_768 {
        buf.push(0xd1);
        buf.extend_from_slice(&(v as i16).to_be_bytes());
    } else if v >= -2_147_483_648 {
        buf.push(0xd2);
        buf.extend_from_slice(&(v as i32).to_be_bytes());
    } else {
        buf.push(0xd3);
        buf.extend_from_slice(&v.to_be_bytes());
    }
}

#[inline(always)]
fn len(buf: &mut Vec<u8>, n: u32, fix: u8, fix_max: u32, m16: u8, m32: u8) {
    if n < fix_max {
        buf.push(fix | n as u8);
    } else if n < 65_536 {
        buf.push(m16);
        buf.extend_from_slice(&(n as u16).to_be_bytes());
    } else {
        buf.push(m32);
        buf.extend_from_slice(&n.to_be_bytes());
    }
}

#[inline(always)]
pub(super) fn array_len(buf: &mut Vec<u8>, n: u32) {
    len(buf, n, 0x90, 16, 0xdc, 0xdd);
}

#[inline(always)]
pub(super) fn map_len(buf: &mut Vec<u8>, n: u32) {
    len(buf, n, 0x80, 16, 0xde, 0xdf);
}

#[inline(always)]
pub(super) fn f64(buf: &mut Vec<u8>, v: f64) {
    buf.push(0xcb);
    buf.extend_from_slice(&v.to_bits().to_be_bytes());
}

#[inline(always)]
pub(super) fn str(buf: &mut Vec<u8>, s: &str) {
    let n = u32::try_from(s.len()).unwrap_or(u32::MAX);
    if n < 32 {
        buf.push(0xa0 | n as u8);
    } else if n < 256 {
        buf.extend_from_slice(&[0xd9, n as u8]);
    } else {
        len(buf, n, 0, 0, 0xda, 0xdb);
    }
    buf.extend_from_slice(s.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_bytes_as_rmp() {
        let uints = [
            0u64,
            1,
            127,
            128,
            255,
            256,
            65_535,
            65_536,
            4_294_967_295,
            4_294_967_296,
            u64::MAX,
        ];
        for v in uints {
            let (mut a, mut b) = (Vec::new(), Vec::new());
            uint(&mut a, v);
            let _ = rmp::encode::write_uint(&mut b, v);
            assert_eq!(a, b, "uint {v}");
        }
        let sints = [
            0i64,
            1,
            127,
            128,
            300,
            70_000,
            5_000_000_000,
            -1,
            -32,
            -33,
            -128,
            -129,
            -32_768,
            -32_769,
            -2_147_483_648,
            -2_147_483_649,
            i64::MIN,
            i64::MAX,
        ];
        for v in sints {
            let (mut a, mut b) = (Vec::new(), Vec::new());
            sint(&mut a, v);
            let _ = rmp::encode::write_sint(&mut b, v);
            assert_eq!(a, b, "sint {v}");
        }
        for n in [0u32, 1, 15, 16, 255, 65_535, 65_536, u32::MAX] {
            let (mut a, mut b) = (Vec::new(), Vec::new());
            array_len(&mut a, n);
            let _ = rmp::encode::write_array_len(&mut b, n);
            assert_eq!(a, b, "array {n}");
            let (mut a, mut b) = (Vec::new(), Vec::new());
            map_len(&mut a, n);
            let _ = rmp::encode::write_map_len(&mut b, n);
            assert_eq!(a, b, "map {n}");
        }
        for s in [0usize, 1, 31, 32, 255, 256, 65_535, 65_536] {
            let text = "x".repeat(s);
            let (mut a, mut b) = (Vec::new(), Vec::new());
            str(&mut a, &text);
            let _ = rmp::encode::write_str(&mut b, &text);
            assert_eq!(a, b, "str of {s}");
        }
        let (mut a, mut b) = (Vec::new(), Vec::new());
        f64(&mut a, 0.25);
        let _ = rmp::encode::write_f64(&mut b, 0.25);
        assert_eq!(a, b);
    }
}
