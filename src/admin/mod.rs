//! The approvers' gRPC API (`countersign.admin.v1.Approvals`): authenticates
//! the caller and translates between protobuf and the approval lifecycle
//! ([`Lifecycle`]), which decides who may rule and records every ruling.

pub mod auth;

use std::pin::Pin;
use std::sync::Arc;

use futures_util::Stream;
use tonic::{Request as GrpcRequest, Response, Status as GrpcStatus};

use crate::approval::lifecycle::RuleError;
use crate::approval::store::ListFilter;
use crate::approval::{Approval, Lifecycle, Ruling, Status, StoreError};
use auth::Authenticator;

pub use crate::approval::approvers::APPROVE_ACTION;

/// Generated from proto/countersign/admin/v1/admin.proto.
pub mod pb {
    tonic::include_proto!("countersign.admin.v1");

    /// For gRPC server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/admin_descriptor.bin"));
}

use pb::approvals_server::Approvals;

/// The approvers' service.
#[derive(Clone)]
pub struct AdminService {
    approvals: Lifecycle,
    auth: Arc<Authenticator>,
}

impl AdminService {
    pub fn new(approvals: Lifecycle, auth: Authenticator) -> Self {
        Self {
            approvals,
            auth: Arc::new(auth),
        }
    }

    async fn decide(
        &self,
        req: GrpcRequest<pb::DecideRequest>,
        ruling: Ruling,
    ) -> Result<Response<pb::Approval>, GrpcStatus> {
        let approver = self.auth.authenticate(&req).await?;
        let pb::DecideRequest { id, reason } = req.into_inner();
        let a = self
            .approvals
            .rule(&approver, &id, ruling, &reason)
            .await
            .map_err(rule_status)?;
        Ok(Response::new(to_pb(a)))
    }
}

type EventStream = Pin<Box<dyn Stream<Item = Result<pb::Event, GrpcStatus>> + Send>>;

#[tonic::async_trait]
impl Approvals for AdminService {
    async fn list(
        &self,
        req: GrpcRequest<pb::ListRequest>,
    ) -> Result<Response<pb::ListResponse>, GrpcStatus> {
        self.auth.authenticate(&req).await?;
        let r = req.into_inner();
        let status = match r.status.as_str() {
            "" | "pending" => Some(Status::Pending),
            "all" => None,
            s => Some(Status::parse(s).ok_or_else(|| {
                GrpcStatus::invalid_argument(format!(
                    "status `{s}`: expected pending, approved, denied, revoked, consumed, expired or all"
                ))
            })?),
        };
        let filter = ListFilter {
            status,
            principal: (!r.principal.is_empty()).then_some(r.principal),
            action: (!r.action.is_empty()).then_some(r.action),
            limit: r.limit as usize,
        };
        let approvals = self.approvals.list(&filter).await.map_err(store_status)?;
        Ok(Response::new(pb::ListResponse {
            approvals: approvals.into_iter().map(to_pb).collect(),
        }))
    }

    async fn get(
        &self,
        req: GrpcRequest<pb::GetRequest>,
    ) -> Result<Response<pb::Approval>, GrpcStatus> {
        self.auth.authenticate(&req).await?;
        let id = req.into_inner().id;
        let a = self.approvals.get(&id).await.map_err(store_status)?;
        Ok(Response::new(to_pb(a)))
    }

    async fn approve(
        &self,
        req: GrpcRequest<pb::DecideRequest>,
    ) -> Result<Response<pb::Approval>, GrpcStatus> {
        self.decide(req, Ruling::Approve).await
    }

    async fn deny(
        &self,
        req: GrpcRequest<pb::DecideRequest>,
    ) -> Result<Response<pb::Approval>, GrpcStatus> {
        self.decide(req, Ruling::Deny).await
    }

    async fn revoke(
        &self,
        req: GrpcRequest<pb::DecideRequest>,
    ) -> Result<Response<pb::Approval>, GrpcStatus> {
        self.decide(req, Ruling::Revoke).await
    }

    async fn sign_in(
        &self,
        _req: GrpcRequest<pb::SignInRequest>,
    ) -> Result<Response<pb::SignInResponse>, GrpcStatus> {
        let Some(idp) = self.auth.identity_provider() else {
            return Err(GrpcStatus::failed_precondition(
                "this admin API has no identity provider ([admin.oidc] is not set): sign in with a client certificate (--cert/--key) or a configured token (--token)",
            ));
        };
        let c = idp.config();
        Ok(Response::new(pb::SignInResponse {
            issuer: c.issuer.clone(),
            client_id: c.client_id.clone(),
            scopes: c.scopes.clone(),
        }))
    }

    async fn who_am_i(
        &self,
        req: GrpcRequest<pb::WhoAmIRequest>,
    ) -> Result<Response<pb::WhoAmIResponse>, GrpcStatus> {
        let a = self.auth.identify(&req).await?;
        Ok(Response::new(pb::WhoAmIResponse {
            name: a.name,
            groups: a.groups,
            method: a.signed_in.method.as_str().into(),
            issuer: a.signed_in.issuer,
            subject: a.signed_in.subject,
        }))
    }

    type WatchStream = EventStream;

    async fn watch(
        &self,
        req: GrpcRequest<pb::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, GrpcStatus> {
        self.auth.authenticate(&req).await?;
        let store = self.approvals.store().clone();
        let mut events = store.subscribe().await;
        let stream = async_stream(move |tx| async move {
            loop {
                let ev = match events.recv().await {
                    Ok(ev) => ev,
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!("watch stream lagged; {n} events skipped");
                        continue;
                    }
                    Err(_) => return,
                };
                let item = match store.get(&ev.id).await {
                    Ok(Some(a)) => Ok(pb::Event {
                        kind: ev.kind.as_str().into(),
                        approval: Some(to_pb(a)),
                    }),
                    Ok(None) => continue,
                    Err(e) => Err(store_status(e)),
                };
                if tx.send(item).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(stream))
    }
}

/// A stream fed by a task; ends when the client goes away.
fn async_stream<F, Fut>(f: F) -> EventStream
where
    F: FnOnce(tokio::sync::mpsc::Sender<Result<pb::Event, GrpcStatus>>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(f(tx));
    Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))
}

/// A refused ruling as a gRPC status, once, here at the edge.
fn rule_status(e: RuleError) -> GrpcStatus {
    match e {
        RuleError::NotPermitted(why) => GrpcStatus::permission_denied(why),
        RuleError::ReasonRequired(_) => GrpcStatus::invalid_argument(e.to_string()),
        RuleError::Store(e) => store_status(e),
    }
}

/// Store errors as gRPC statuses, once, here at the edge.
fn store_status(e: StoreError) -> GrpcStatus {
    match &e {
        StoreError::Unavailable(_) | StoreError::NotReplicated { .. } | StoreError::Corrupt(_) => {
            GrpcStatus::unavailable(e.to_string())
        }
        StoreError::NotFound(_) => GrpcStatus::not_found(e.to_string()),
        // The admin API opens nothing; kept total for the compiler.
        StoreError::TooManyPending { .. } => GrpcStatus::resource_exhausted(e.to_string()),
        StoreError::NotPending { .. } | StoreError::NotApproved { .. } => {
            GrpcStatus::failed_precondition(e.to_string())
        }
        StoreError::AlreadyVoted { .. } => GrpcStatus::already_exists(e.to_string()),
    }
}

pub fn to_pb(a: Approval) -> pb::Approval {
    pb::Approval {
        id: a.id,
        status: a.status.as_str().into(),
        principal: a.info.principal,
        on_behalf_of: a.info.on_behalf_of.unwrap_or_default(),
        action: a.info.action,
        resource: a.info.resource,
        method: a.info.method,
        path: a.info.path,
        host: a.info.host,
        source_address: a.info.source_address,
        policies: a.info.policies,
        parameters: a.info.parameters.into_iter().collect(),
        created_at: a.created_at,
        expires_at: a.expires_at,
        use_until: a.use_until,
        uses_left: a.uses_left,
        quorum: a.info.quorum,
        approver_groups: a.info.approver_groups,
        reason_required: a.info.reason_required,
        mode: a.info.mode.as_str().into(),
        shadow: a.info.shadow,
        votes: a
            .votes
            .into_iter()
            .map(|v| pb::Vote {
                approver: v.approver,
                verdict: v.verdict.as_str().into(),
                reason: v.reason,
                at: v.at,
                method: v.method.map(|m| m.as_str().to_owned()).unwrap_or_default(),
                issuer: v.issuer,
                subject: v.subject,
            })
            .collect(),
    }
}
