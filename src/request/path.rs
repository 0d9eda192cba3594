//! Path checks: what a normalising Envoy never forwards.

/// Every `%` must start a two-digit hex escape.
pub(super) fn check_percent_encoding(s: &str) -> Result<(), ()> {
    let b = s.as_bytes();
    let mut i = 0;
    while let Some(off) = b[i..].iter().position(|&c| c == b'%') {
        let at = i + off;
        let ok = b.len() > at + 2 && b[at + 1].is_ascii_hexdigit() && b[at + 2].is_ascii_hexdigit();
        if !ok {
            return Err(());
        }
        i = at + 3;
    }
    Ok(())
}

/// What a normalising Envoy never forwards (see
/// [`MappingError::PathNotNormalised`]); `Err` says which. Expects a path
/// whose percent-encoding was checked.
pub(super) fn check_normalised(path: &str) -> Result<(), &'static str> {
    let mut segments = path.split('/').skip(1).peekable();
    while let Some(segment) = segments.next() {
        // A trailing `/` is an empty last segment, which Envoy keeps.
        if segment.is_empty() && segments.peek().is_some() {
            return Err("an empty segment (`//`)");
        }
        if segment.contains('\\') {
            return Err("a backslash");
        }
        let b = segment.as_bytes();
        let escaped = |w: &[u8]| {
            w[0] == b'%'
                && ((w[1] == b'2' && w[2].eq_ignore_ascii_case(&b'f'))
                    || (w[1] == b'5' && w[2].eq_ignore_ascii_case(&b'c')))
        };
        if b.windows(3).any(escaped) {
            return Err("an encoded slash or backslash (`%2F`, `%5C`)");
        }
        if is_dot_segment(segment) {
            return Err("a dot segment (`.` or `..`)");
        }
    }
    Ok(())
}

/// `.` or `..`, any dot possibly written `%2e` or `%2E`.
fn is_dot_segment(s: &str) -> bool {
    fn dot(s: &str) -> Option<&str> {
        s.strip_prefix('.').or_else(|| {
            s.get(..3)
                .filter(|p| p.eq_ignore_ascii_case("%2e"))
                .and_then(|_| s.get(3..))
        })
    }
    match dot(s) {
        Some("") => true,
        Some(rest) => dot(rest) == Some(""),
        None => false,
    }
}
