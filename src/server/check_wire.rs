//! The ext_authz service on the wire. The same as envoy-types' generated
//! `AuthorizationServer` but for one thing: a request that does not decode
//! (bytes that are not a CheckRequest, a string that is not UTF-8) gets a
//! 400 denial naming the decoder's complaint, like any other bad input,
//! instead of an INTERNAL error with no CheckResponse.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use envoy_types::ext_authz::v3::pb::{CheckRequest, CheckResponse};
use prost::Message;
use prost::bytes::Buf;
use tonic::codec::{Codec, DecodeBuf, Decoder};
use tonic::codegen::{Body, BoxFuture, Service, StdError, http};
use tonic::server::{Grpc, NamedService, UnaryService};

use crate::authz::AuthzService;

/// Serves `envoy.service.auth.v3.Authorization`.
#[derive(Debug, Clone)]
pub struct CheckServer(pub Arc<AuthzService>);

impl NamedService for CheckServer {
    const NAME: &'static str = crate::server::AUTHZ_SERVICE;
}

const CHECK: &str = "/envoy.service.auth.v3.Authorization/Check";

impl<B> Service<http::Request<B>> for CheckServer
where
    B: Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        if req.uri().path() != CHECK {
            return Box::pin(async { Ok(tonic::Status::unimplemented("").into_http()) });
        }
        let method = Check(Arc::clone(&self.0));
        Box::pin(async move { Ok(Grpc::new(LenientCodec).unary(method, req).await) })
    }
}

struct Check(Arc<AuthzService>);

impl UnaryService<Decoded> for Check {
    type Response = CheckResponse;
    type Future = BoxFuture<tonic::Response<CheckResponse>, tonic::Status>;

    fn call(&mut self, request: tonic::Request<Decoded>) -> Self::Future {
        let svc = Arc::clone(&self.0);
        Box::pin(async move { Ok(tonic::Response::new(check(&svc, request).await)) })
    }
}

/// One ext_authz call as it came off the wire.
async fn check(svc: &AuthzService, request: tonic::Request<Decoded>) -> CheckResponse {
    // Envoy says how long it will wait; a held call must answer before.
    let envoy_waits = request
        .metadata()
        .get("grpc-timeout")
        .and_then(|v| v.to_str().ok())
        .and_then(parse_grpc_timeout);
    match request.get_ref() {
        Ok(check) => {
            let grpc = Metadata(request.metadata());
            svc.decide_within(check, envoy_waits, &grpc).await
        }
        Err(e) => svc.undecodable(e),
    }
}

/// gRPC metadata as a trace-context carrier.
struct Metadata<'a>(&'a tonic::metadata::MetadataMap);

impl opentelemetry::propagation::Extractor for Metadata<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0
            .keys()
            .filter_map(|k| match k {
                tonic::metadata::KeyRef::Ascii(k) => Some(k.as_str()),
                tonic::metadata::KeyRef::Binary(_) => None,
            })
            .collect()
    }
}

/// gRPC's `grpc-timeout` header: at most 8 digits and a unit (H, M, S, m,
/// u, n).
pub fn parse_grpc_timeout(v: &str) -> Option<std::time::Duration> {
    use std::time::Duration;
    let (n, unit) = v.split_at(v.len().checked_sub(1)?);
    if n.len() > 8 {
        return None;
    }
    let n: u64 = n.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.saturating_mul(3600)),
        "M" => Duration::from_secs(n.saturating_mul(60)),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// A CheckRequest, or why the bytes were not one.
pub type Decoded = Result<CheckRequest, prost::DecodeError>;

/// Prost's encoding; a decoding that reports failure as a value.
#[derive(Debug, Default)]
struct LenientCodec;

impl Codec for LenientCodec {
    type Encode = CheckResponse;
    type Decode = Decoded;
    type Encoder = <tonic_prost::ProstCodec<CheckResponse, CheckRequest> as Codec>::Encoder;
    type Decoder = LenientDecoder;

    fn encoder(&mut self) -> Self::Encoder {
        tonic_prost::ProstCodec::<CheckResponse, CheckRequest>::default().encoder()
    }

    fn decoder(&mut self) -> Self::Decoder {
        LenientDecoder
    }
}

#[derive(Debug)]
struct LenientDecoder;

impl Decoder for LenientDecoder {
    type Item = Decoded;
    type Error = tonic::Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<Decoded>, tonic::Status> {
        let decoded = CheckRequest::decode(&mut *buf);
        // A failed decode may stop mid-message; the frame is spent either way.
        buf.advance(buf.remaining());
        Ok(Some(decoded))
    }
}
