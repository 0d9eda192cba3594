//! The approvers' gRPC API (`countersign.admin.v1.Approvals`): translates
//! between protobuf and the approval domain, and enforces who may decide.

pub mod auth;

use std::pin::Pin;
use std::str::FromStr;
use std::sync::Arc;

use cedar_policy::{
    Context, Entities, Entity, EntityId, EntityTypeName, EntityUid, Request, RestrictedExpression,
};
use futures_util::Stream;
use tonic::{Request as GrpcRequest, Response, Status as GrpcStatus};

use crate::approval::notify::Notifier;
use crate::approval::store::{ListFilter, Verdict as Vote};
use crate::approval::{Approval, RedisStore, Status, StoreError};
use crate::metrics::Metrics;
use crate::policy::{Outcome, PolicyStore};
use crate::telemetry::{Telemetry, approval_attributes, attr, parse_traceparent};
use auth::{Approver, Authenticator};
use opentelemetry::KeyValue;

/// Generated from proto/countersign/admin/v1/admin.proto.
pub mod pb {
    tonic::include_proto!("countersign.admin.v1");

    /// For gRPC server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/admin_descriptor.bin"));
}

use pb::approvals_server::Approvals;

/// The Cedar action an approver must be permitted.
pub const APPROVE_ACTION: &str = r#"Action::"approve""#;

/// The approvers' service.
#[derive(Clone)]
pub struct AdminService {
    store: Arc<RedisStore>,
    policies: Arc<PolicyStore>,
    auth: Arc<Authenticator>,
    user_type: EntityTypeName,
    group_type: EntityTypeName,
    notifier: Option<Arc<Notifier>>,
    telemetry: Option<Telemetry>,
    metrics: Metrics,
}

impl AdminService {
    /// Announces decisions to the webhooks.
    pub fn with_notifier(mut self, notifier: Arc<Notifier>) -> Self {
        self.notifier = Some(notifier);
        self
    }

    pub fn new(
        store: Arc<RedisStore>,
        policies: Arc<PolicyStore>,
        auth: Authenticator,
        user_type: EntityTypeName,
        group_type: EntityTypeName,
    ) -> Self {
        Self {
            store,
            policies,
            auth: Arc::new(auth),
            user_type,
            group_type,
            notifier: None,
            telemetry: None,
            metrics: Metrics::default(),
        }
    }

    /// Records approval events as spans and counts them.
    pub fn with_telemetry(mut self, telemetry: Option<Telemetry>, metrics: Metrics) -> Self {
        self.telemetry = telemetry;
        self.metrics = metrics;
        self
    }

    fn approver_uid(&self, a: &Approver) -> EntityUid {
        EntityUid::from_type_name_and_id(self.user_type.clone(), EntityId::new(&a.name))
    }

    /// Separation of duties and the approver's right to decide this request.
    fn check_may_decide(&self, approver: &Approver, a: &Approval) -> Result<(), GrpcStatus> {
        let me = self.approver_uid(approver).to_string();
        if me == a.info.principal {
            return Err(GrpcStatus::permission_denied(format!(
                "`{me}` asked for this call and cannot decide its approval; another approver must"
            )));
        }
        if a.info.on_behalf_of.as_deref() == Some(me.as_str()) {
            return Err(GrpcStatus::permission_denied(format!(
                "this call acts on behalf of `{me}`, who cannot decide its approval; another approver must"
            )));
        }
        let groups = &a.info.approver_groups;
        if !groups.is_empty() && !approver.groups.iter().any(|g| groups.contains(g)) {
            return Err(GrpcStatus::permission_denied(format!(
                "approval `{}` needs an approver in {}; `{}` is in {}",
                a.id,
                list(groups),
                approver.name,
                if approver.groups.is_empty() {
                    "no group".to_owned()
                } else {
                    list(&approver.groups)
                }
            )));
        }
        if !self.cedar_allows(approver, a) {
            return Err(GrpcStatus::permission_denied(format!(
                "no policy permits `{me}` to {APPROVE_ACTION} `{}` on `{}`",
                a.info.action, a.info.resource
            )));
        }
        Ok(())
    }

    /// Policies decide who may approve what: `Action::"approve"` on the
    /// request's resource, with the request's principal and action in context.
    fn cedar_allows(&self, approver: &Approver, a: &Approval) -> bool {
        let uid = self.approver_uid(approver);
        let parents = approver
            .groups
            .iter()
            .map(|g| EntityUid::from_type_name_and_id(self.group_type.clone(), EntityId::new(g)))
            .collect();
        let (Ok(action), Ok(resource)) = (
            EntityUid::from_str(APPROVE_ACTION),
            EntityUid::from_str(&a.info.resource),
        ) else {
            return false;
        };
        let requested = EntityUid::from_str(&a.info.action).map(|u| u.id().unescaped().to_owned());
        let Ok(requested) = requested else {
            return false;
        };
        let context = Context::from_pairs([
            (
                "requester".to_owned(),
                RestrictedExpression::new_string(a.info.principal.clone()),
            ),
            (
                "requested_action".to_owned(),
                RestrictedExpression::new_string(requested),
            ),
        ]);
        let Ok(context) = context else { return false };
        let Ok(request) = Request::new(uid.clone(), action, resource, context, None) else {
            return false;
        };
        let Ok(entities) = Entities::from_entities([Entity::new_no_attrs(uid, parents)], None)
        else {
            return false;
        };
        self.policies.evaluate(&request, &entities).outcome == Outcome::Allow
    }

    async fn load(&self, id: &str) -> Result<Approval, GrpcStatus> {
        self.store
            .get(id)
            .await
            .map_err(store_status)?
            .ok_or_else(|| store_status(StoreError::NotFound(id.into())))
    }

    async fn decide(
        &self,
        req: GrpcRequest<pb::DecideRequest>,
        vote: Vote,
    ) -> Result<Response<pb::Approval>, GrpcStatus> {
        let approver = self.auth.authenticate(&req)?;
        let pb::DecideRequest { id, reason } = req.into_inner();
        let a = self.load(&id).await?;
        // Authorise first: someone who may not decide learns nothing more.
        self.check_may_decide(&approver, &a)?;
        if vote != Vote::Revoke && a.info.reason_required && reason.trim().is_empty() {
            return Err(GrpcStatus::invalid_argument(format!(
                "approval `{id}` requires a reason (--reason TEXT)"
            )));
        }
        let a = self
            .store
            .vote(&id, &approver.name, vote, reason.trim())
            .await
            .map_err(store_status)?;
        tracing::info!(approval = %id, approver = %approver.name, verdict = ?vote, status = %a.status, "approval decided");
        let event = match (vote, a.status) {
            (Vote::Revoke, _) => "revoked",
            (Vote::Deny, _) => "denied",
            (Vote::Approve, Status::Approved) => "approved",
            (Vote::Approve, _) => "voted",
        };
        self.metrics.approval_event(event);
        if let Some(t) = &self.telemetry {
            let mut attributes = approval_attributes(&a);
            attributes.push(KeyValue::new(attr::APPROVER, approver.name.clone()));
            if !reason.trim().is_empty() {
                attributes.push(KeyValue::new(
                    attr::APPROVAL_REASON,
                    reason.trim().to_owned(),
                ));
            }
            let opened_by = parse_traceparent(&a.opened_by);
            t.approval_event(event, None, opened_by.as_ref(), attributes);
        }
        if let Some(n) = &self.notifier
            && matches!(
                a.status,
                Status::Approved | Status::Denied | Status::Revoked
            )
        {
            n.notify(a.status.as_str(), &a);
        }
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
        self.auth.authenticate(&req)?;
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
        let approvals = self.store.list(&filter).await.map_err(store_status)?;
        Ok(Response::new(pb::ListResponse {
            approvals: approvals.into_iter().map(to_pb).collect(),
        }))
    }

    async fn get(
        &self,
        req: GrpcRequest<pb::GetRequest>,
    ) -> Result<Response<pb::Approval>, GrpcStatus> {
        self.auth.authenticate(&req)?;
        Ok(Response::new(to_pb(self.load(&req.into_inner().id).await?)))
    }

    async fn approve(
        &self,
        req: GrpcRequest<pb::DecideRequest>,
    ) -> Result<Response<pb::Approval>, GrpcStatus> {
        self.decide(req, Vote::Approve).await
    }

    async fn deny(
        &self,
        req: GrpcRequest<pb::DecideRequest>,
    ) -> Result<Response<pb::Approval>, GrpcStatus> {
        self.decide(req, Vote::Deny).await
    }

    async fn revoke(
        &self,
        req: GrpcRequest<pb::DecideRequest>,
    ) -> Result<Response<pb::Approval>, GrpcStatus> {
        self.decide(req, Vote::Revoke).await
    }

    type WatchStream = EventStream;

    async fn watch(
        &self,
        req: GrpcRequest<pb::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, GrpcStatus> {
        self.auth.authenticate(&req)?;
        let mut events = self.store.subscribe().await;
        let store = self.store.clone();
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
                        kind: ev.kind,
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

fn list(items: &[String]) -> String {
    items
        .iter()
        .map(|g| format!("`{g}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Store errors as gRPC statuses, once, here at the edge.
fn store_status(e: StoreError) -> GrpcStatus {
    match &e {
        StoreError::Unavailable(_) | StoreError::NotReplicated { .. } | StoreError::Corrupt(_) => {
            GrpcStatus::unavailable(e.to_string())
        }
        StoreError::NotFound(_) => GrpcStatus::not_found(e.to_string()),
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
        votes: a
            .votes
            .into_iter()
            .map(|v| pb::Vote {
                approver: v.approver,
                verdict: v.verdict,
                reason: v.reason,
                at: v.at,
            })
            .collect(),
    }
}
