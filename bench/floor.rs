//! The floor: an ext_authz server that allows everything and does nothing
//! else, so that a benchmark can tell the cost of one gRPC hop from the cost
//! of countersign's decision. It can also stand in as an OTLP/gRPC trace
//! collector that discards what it receives, so that runs with telemetry on
//! export spans for real. With `--http` it is also the floor of Envoy's
//! HTTP ext_authz (`http_service`): any 2xx answer allows, so it answers 200
//! to every request, over HTTP/1.1.
//!
//! `cargo run --release --example floor -- --listen 127.0.0.1:9291 --otlp 127.0.0.1:4317`

use std::convert::Infallible;
use std::net::SocketAddr;

use clap::Parser;
use envoy_types::ext_authz::v3::pb::{
    Authorization, AuthorizationServer, CheckRequest, CheckResponse,
};
use envoy_types::pb::google::rpc::Status;
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use tonic::{Request, Response};

#[derive(Parser)]
struct Args {
    /// Serve ext_authz (allow everything) here.
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Serve an OTLP/gRPC trace sink that discards spans here.
    #[arg(long)]
    otlp: Option<SocketAddr>,
    /// Serve HTTP ext_authz (200 to everything, HTTP/1.1) here.
    #[arg(long)]
    http: Option<SocketAddr>,
}

struct Allow;

#[tonic::async_trait]
impl Authorization for Allow {
    async fn check(
        &self,
        _request: Request<CheckRequest>,
    ) -> Result<Response<CheckResponse>, tonic::Status> {
        Ok(Response::new(CheckResponse {
            status: Some(Status::default()),
            ..Default::default()
        }))
    }
}

struct Sink;

#[tonic::async_trait]
impl TraceService for Sink {
    async fn export(
        &self,
        _request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, tonic::Status> {
        Ok(Response::new(ExportTraceServiceResponse::default()))
    }
}

/// HTTP ext_authz that allows everything: reads the request (Envoy may send
/// the body), answers 200 with no body.
/// Runs until the process ends (the result type is the gRPC servers').
async fn serve_http(listener: tokio::net::TcpListener) -> Result<(), tonic::transport::Error> {
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        // As tonic does for gRPC: small answers go out at once.
        let _ = tcp.set_nodelay(true);
        tokio::spawn(async move {
            let allow = hyper::service::service_fn(
                |req: hyper::Request<hyper::body::Incoming>| async move {
                    let _ = req.into_body().collect().await;
                    Ok::<_, Infallible>(hyper::Response::new(String::new()))
                },
            );
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tcp), allow)
                .await;
        });
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    if args.listen.is_none() && args.otlp.is_none() && args.http.is_none() {
        return Err("give one or more of --listen, --otlp and --http".into());
    }
    let mut tasks = tokio::task::JoinSet::new();
    if let Some(addr) = args.listen {
        let server = tonic::transport::Server::builder()
            .add_service(AuthorizationServer::new(Allow))
            .serve(addr);
        tasks.spawn(server);
        eprintln!("floor: ext_authz on {addr}");
    }
    if let Some(addr) = args.otlp {
        let server = tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(Sink))
            .serve(addr);
        tasks.spawn(server);
        eprintln!("floor: OTLP sink on {addr}");
    }
    if let Some(addr) = args.http {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        tasks.spawn(serve_http(listener));
        eprintln!("floor: HTTP ext_authz on {addr}");
    }
    while let Some(done) = tasks.join_next().await {
        done??;
    }
    Ok(())
}
