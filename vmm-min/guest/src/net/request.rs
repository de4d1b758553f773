//! The HTTP/1.1 request-head parser of the guest's server: pure, with no
//! network stack in it, so the host's property tests compile this same
//! file (`vmm-min/tests/properties.rs`) and feed it arbitrary bytes.

use alloc::vec::Vec;

/// Most header lines a request may have.
const MAX_HEADERS: usize = 64;

/// A request method, as far as the server cares.
#[derive(Debug, PartialEq, Eq)]
pub enum Method {
    /// GET.
    Get,
    /// HEAD.
    Head,
    /// POST (only `/upload` takes it).
    Post,
    /// Any other method (answered 405).
    Other,
}

/// What the bytes received so far hold.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    /// Not a whole request head yet.
    Incomplete,
    /// Not HTTP/1.x: answer 400 and close.
    Bad,
    /// A request whose head is `consumed` bytes long.
    Request {
        /// The method.
        method: Method,
        /// Where the target ends in the buffer.
        target_end: usize,
        /// Where it starts.
        target_start: usize,
        /// Whether the connection stays open after the answer.
        keep_alive: bool,
        /// Bytes of the head.
        consumed: usize,
        /// Bytes of the body that follows (to discard).
        body: u64,
    },
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn trim(s: &[u8]) -> &[u8] {
    let start = s.iter().position(|&b| b != b' ' && b != b'\t').unwrap_or(s.len());
    let end = s.iter().rposition(|&b| b != b' ' && b != b'\t').map_or(start, |e| e + 1);
    &s[start..end.max(start)]
}

fn contains_token(v: &[u8], tok: &[u8]) -> bool {
    v.split(|&b| b == b',').any(|t| trim(t).eq_ignore_ascii_case(tok))
}

/// Parses one request head from the start of `buf`.
pub fn parse(buf: &[u8]) -> Parsed {
    // Skip empty lines before the request line (RFC 9112 2.2).
    let mut start = 0;
    while buf[start..].starts_with(b"\r\n") || buf[start..].starts_with(b"\n") {
        start += if buf[start] == b'\r' { 2 } else { 1 };
    }
    let mut lines = Vec::new();
    let mut pos = start;
    let end = loop {
        let Some(nl) = buf[pos..].iter().position(|&b| b == b'\n') else {
            return Parsed::Incomplete;
        };
        let mut line = &buf[pos..pos + nl];
        if let Some(l) = line.strip_suffix(b"\r") {
            line = l;
        }
        pos += nl + 1;
        if line.is_empty() {
            break pos;
        }
        if lines.len() > MAX_HEADERS {
            return Parsed::Bad;
        }
        lines.push((pos - nl - 1, line.len()));
    };
    let Some(&(l0, n0)) = lines.first() else { return Parsed::Bad };
    let req = &buf[l0..l0 + n0];
    let mut parts = req.split(|&b| b == b' ');
    let (Some(method), Some(target), Some(version), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Parsed::Bad;
    };
    if method.is_empty() || method.len() > 16 || !method.iter().all(|&b| is_tchar(b)) {
        return Parsed::Bad;
    }
    if !target.starts_with(b"/") || target.len() > 2048 || target.iter().any(|&b| b <= b' ' || b == 0x7f) {
        return Parsed::Bad;
    }
    let mut keep_alive = match version {
        b"HTTP/1.1" => true,
        b"HTTP/1.0" => false,
        _ => return Parsed::Bad,
    };
    let mut body: Option<u64> = None;
    for &(l, n) in &lines[1..] {
        let line = &buf[l..l + n];
        let Some(colon) = line.iter().position(|&b| b == b':') else { return Parsed::Bad };
        let (name, value) = (&line[..colon], trim(&line[colon + 1..]));
        if name.is_empty()
            || !name.iter().all(|&b| is_tchar(b))
            || value.iter().any(|&b| (b < b' ' && b != b'\t') || b == 0x7f)
        {
            return Parsed::Bad;
        }
        if name.eq_ignore_ascii_case(b"connection") {
            if contains_token(value, b"close") {
                keep_alive = false;
            } else if contains_token(value, b"keep-alive") {
                keep_alive = true;
            }
        } else if name.eq_ignore_ascii_case(b"content-length") {
            if value.is_empty() || value.len() > 12 || !value.iter().all(u8::is_ascii_digit) {
                return Parsed::Bad;
            }
            let v = value.iter().fold(0u64, |a, &d| a * 10 + u64::from(d - b'0'));
            if body.is_some_and(|b| b != v) {
                return Parsed::Bad;
            }
            body = Some(v);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            return Parsed::Bad;
        }
    }
    let m = match method {
        b"GET" => Method::Get,
        b"HEAD" => Method::Head,
        b"POST" => Method::Post,
        _ => Method::Other,
    };
    let target_start = l0 + method.len() + 1;
    Parsed::Request {
        method: m,
        target_start,
        target_end: target_start + target.len(),
        keep_alive,
        consumed: end,
        body: body.unwrap_or(0),
    }
}
