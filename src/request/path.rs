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

/// What a normalising Envoy never forwards, or an upstream may resolve or
/// decode into another path than the one judged (see
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
        let escapes = escapes(segment);
        if escapes.clone().any(|(e, _)| e == b'/' || e == b'\\') {
            return Err("an encoded slash or backslash (`%2F`, `%5C`)");
        }
        if is_dot_segment(segment) {
            return Err("a dot segment (`.` or `..`)");
        }
        // A normalising Envoy refuses it; an upstream in C may end the
        // path there (`/export%00` read as `/export`).
        if escapes.clone().any(|(e, _)| e == 0) {
            return Err("an encoded NUL (`%00`)");
        }
        // Tomcat and Spring drop `;` parameters, then resolve the segment.
        if segment
            .split_once(';')
            .is_some_and(|(before, _)| is_dot_segment(before))
        {
            return Err("a dot segment with parameters (`..;`, `.;`)");
        }
        // Envoy's `normalize_path` decodes these: seeing one means Envoy
        // does not normalise, and an upstream decodes it after the policy
        // judged the path as written.
        if escapes.clone().any(|(e, _)| unreserved(e)) {
            return Err(
                "a percent-encoded unreserved character (a letter, digit, `-`, `.`, `_` or `~` written as `%XX`)",
            );
        }
        // `%25` is `%`: a second decoding turns `%252F` into `/`.
        let double = |(e, rest): (u8, &[u8])| {
            let again = match rest {
                [h, l, ..] => decode(&[b'%', *h, *l]),
                _ => None,
            };
            e == b'%' && again.is_some_and(|d| d == b'/' || d == b'\\' || unreserved(d))
        };
        if escapes.clone().any(double) {
            return Err(
                "a double-encoded slash, backslash, dot or other unreserved character (such as `%252F` or `%252E`)",
            );
        }
    }
    Ok(())
}

/// Each `%XX` escape in `segment`: the byte it encodes and what follows it.
fn escapes(segment: &str) -> impl Iterator<Item = (u8, &[u8])> + Clone {
    let b = segment.as_bytes();
    b.iter()
        .enumerate()
        .filter(|(_, c)| **c == b'%')
        .filter_map(move |(i, _)| Some((decode(&b[i..])?, &b[i + 3..])))
}

/// The byte `%XX` at the start of `b` encodes, if it is one.
fn decode(b: &[u8]) -> Option<u8> {
    let hex = |c: u8| (c as char).to_digit(16);
    match b {
        [b'%', h, l, ..] => Some((hex(*h)? * 16 + hex(*l)?) as u8),
        _ => None,
    }
}

/// RFC 3986 unreserved characters: ALPHA, DIGIT, `-`, `.`, `_`, `~`.
fn unreserved(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~')
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
