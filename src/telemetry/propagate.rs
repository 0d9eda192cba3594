//! Finding the caller's trace: W3C `traceparent`/`tracestate`, else B3
//! (`b3` single header or `x-b3-*`).

use opentelemetry::Context;
use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use opentelemetry_sdk::propagation::TraceContextPropagator;

/// The parent of a check span. Envoy's gRPC client puts its own span (a child
/// of the request's span) in the call's metadata, so that comes first; then
/// the HTTP request's own headers.
pub fn parent_from(grpc: &dyn Extractor, http: &dyn Extractor) -> Context {
    for carrier in [grpc, http] {
        if let Some(sc) = w3c(carrier).or_else(|| b3(carrier)) {
            return Context::new().with_remote_span_context(sc);
        }
    }
    Context::new()
}

fn w3c(carrier: &dyn Extractor) -> Option<SpanContext> {
    carrier.get("traceparent")?;
    let cx = TraceContextPropagator::new().extract(carrier);
    let sc = cx.span().span_context().clone();
    sc.is_valid().then_some(sc)
}

fn b3(carrier: &dyn Extractor) -> Option<SpanContext> {
    let (trace, span, sampled) = match carrier.get("b3") {
        // traceid-spanid[-sampled[-parentspanid]]
        Some(single) => {
            let mut parts = single.split('-');
            (parts.next()?, parts.next()?, parts.next())
        }
        None => (
            carrier.get("x-b3-traceid")?,
            carrier.get("x-b3-spanid")?,
            carrier.get("x-b3-sampled"),
        ),
    };
    // 64-bit B3 trace ids are left-padded to 128 bits.
    let trace = TraceId::from_hex(&format!("{trace:0>32}")).ok()?;
    let span = SpanId::from_hex(span).ok()?;
    let flags = match sampled {
        Some("0") | Some("false") => TraceFlags::default(),
        _ => TraceFlags::SAMPLED,
    };
    let sc = SpanContext::new(trace, span, flags, true, TraceState::default());
    sc.is_valid().then_some(sc)
}

/// A span context as a W3C `traceparent` value, for storing with an approval.
pub fn traceparent(sc: &SpanContext) -> String {
    format!(
        "00-{}-{}-{:02x}",
        sc.trace_id(),
        sc.span_id(),
        sc.trace_flags().to_u8()
    )
}

/// The inverse of [`traceparent`].
/// Read by hand: these are values countersign wrote (version `00`, no
/// trace state), and the propagator's carrier and parser cost a guarded
/// check more than the rest of its span work.
pub fn parse_traceparent(v: &str) -> Option<SpanContext> {
    let mut parts = v.split('-');
    let (version, trace, span, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let hex = |s: &str, len: usize| {
        s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    };
    if version != "00"
        || parts.next().is_some()
        || !hex(trace, 32)
        || !hex(span, 16)
        || !hex(flags, 2)
    {
        return None;
    }
    let flags = TraceFlags::new(u8::from_str_radix(flags, 16).ok()?) & TraceFlags::SAMPLED;
    let sc = SpanContext::new(
        TraceId::from_hex(trace).ok()?,
        SpanId::from_hex(span).ok()?,
        flags,
        true,
        TraceState::default(),
    );
    sc.is_valid().then_some(sc)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn map(kv: &[(&str, &str)]) -> HashMap<String, String> {
        kv.iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn grpc_metadata_wins_over_http_headers() {
        let grpc = map(&[(
            "traceparent",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        )]);
        let http = map(&[(
            "traceparent",
            "00-11111111111111111111111111111111-2222222222222222-01",
        )]);
        let cx = parent_from(&grpc, &http);
        let sc = cx.span().span_context().clone();
        assert_eq!(
            sc.trace_id().to_string(),
            "0af7651916cd43dd8448eb211c80319c"
        );
        assert_eq!(sc.span_id().to_string(), "b7ad6b7169203331");
        assert!(sc.is_remote());
    }

    #[test]
    fn b3_single_and_multi_header_are_understood() {
        let none = map(&[]);
        let single = map(&[("b3", "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1")]);
        let sc = parent_from(&none, &single).span().span_context().clone();
        assert_eq!(
            sc.trace_id().to_string(),
            "80f198ee56343ba864fe8b2a57d3eff7"
        );
        assert!(sc.is_sampled());
        let multi = map(&[
            ("x-b3-traceid", "64fe8b2a57d3eff7"),
            ("x-b3-spanid", "e457b5a2e4d86bd1"),
            ("x-b3-sampled", "0"),
        ]);
        let sc = parent_from(&none, &multi).span().span_context().clone();
        assert_eq!(
            sc.trace_id().to_string(),
            "000000000000000064fe8b2a57d3eff7"
        );
        assert!(!sc.is_sampled());
    }

    #[test]
    fn garbage_gives_a_new_root() {
        let none = map(&[]);
        let bad = map(&[("traceparent", "00-zz-yy-01"), ("b3", "nope")]);
        assert!(!parent_from(&none, &bad).span().span_context().is_valid());
    }

    #[test]
    fn traceparent_round_trips() {
        let v = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        assert_eq!(traceparent(&parse_traceparent(v).unwrap()), v);
        let unsampled = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00";
        assert!(!parse_traceparent(unsampled).unwrap().is_sampled());
        assert_eq!(
            traceparent(&parse_traceparent(unsampled).unwrap()),
            unsampled
        );
    }

    #[test]
    fn a_stored_traceparent_that_is_not_one_is_no_span() {
        for bad in [
            "",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-x",
            "01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319-b7ad6b7169203331-01",
            "00-00000000000000000000000000000000-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-+1",
        ] {
            assert!(parse_traceparent(bad).is_none(), "{bad}");
        }
    }
}
