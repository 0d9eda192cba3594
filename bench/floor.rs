//! The floor: an ext_authz server that allows everything and does nothing
//! else, so that a benchmark can tell the cost of one gRPC hop from the cost
//! of countersign's decision. It can also stand in as an OTLP/gRPC trace
//! collector that discards what it receives, so that runs with telemetry on
//! export spans for real.
//!
//! `cargo run --release --example floor -- --listen 127.0.0.1:9291 --otlp 127.0.0.1:4317`

use std::net::SocketAddr;

use clap::Parser;
use envoy_types::ext_authz::v3::pb::{
    Authorization, AuthorizationServer, CheckRequest, CheckResponse,
};
use envoy_types::pb::google::rpc::Status;
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

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    if args.listen.is_none() && args.otlp.is_none() {
        return Err("give --listen, --otlp or both".into());
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
    while let Some(done) = tasks.join_next().await {
        done??;
    }
    Ok(())
}
