//! Sample requests for the policy loader: every shape the route table and
//! the MCP endpoints' protocol messages can produce, checked against the
//! schema before any real request arrives.

use std::collections::HashMap;

use cedar_policy::{Context, EntityId, EntityTypeName, EntityUid};

use super::{HttpRequest, Mapper, MappingError, with_approval};
use crate::policy::Probe;

/// The sample principals and contexts a route's probes combine.
pub(super) struct Samples {
    principals: Vec<EntityUid>,
    contexts: Vec<Context>,
}

impl Samples {
    /// A route's probes: every principal type with every context, for
    /// `action` on a resource of `resource_type`.
    pub(super) fn for_route<'s>(
        &'s self,
        label: &'s str,
        action: &'s EntityUid,
        resource_type: &EntityTypeName,
        unread_body: bool,
    ) -> impl Iterator<Item = Probe> + 's {
        let resource =
            EntityUid::from_type_name_and_id(resource_type.clone(), EntityId::new("probe"));
        self.principals.iter().flat_map(move |principal| {
            let resource = resource.clone();
            self.contexts.iter().map(move |context| Probe {
                label: label.to_owned(),
                principal: principal.clone(),
                action: action.clone(),
                resource: resource.clone(),
                context: context.clone(),
                unread_body,
            })
        })
    }
}

impl Mapper {
    /// Sample requests per route and principal type, with every optional
    /// part present and with none, for the policy loader to check against the
    /// schema before any real request arrives.
    pub fn probes(&self) -> Result<Vec<Probe>, MappingError> {
        let samples = self.samples()?;
        let mut targets: Vec<(String, &EntityUid, &EntityTypeName, bool)> = self
            .routes
            .specs()
            .map(|r| {
                let label = format!("route `{} {}`", r.method.as_deref().unwrap_or("*"), r.path);
                let carries = r
                    .method
                    .as_deref()
                    .is_none_or(|m| matches!(m, "POST" | "PUT" | "PATCH"));
                (label, &r.action, &r.resource_type, carries && !r.body)
            })
            .collect();
        // The default route cannot read bodies; a body there is refused per
        // call instead (see `Shown`).
        targets.push((
            "the default route".to_owned(),
            self.routes.default_action(),
            self.routes.default_resource_type(),
            false,
        ));
        let mut probes = Vec::new();
        for (label, action, resource_type, unread_body) in &targets {
            probes.extend(samples.for_route(label, action, resource_type, *unread_body));
        }
        // An MCP endpoint's protocol messages (tool calls take their actions
        // from the call, so only the schema can say which exist).
        let full_headers = self.full_headers();
        for endpoint in &self.mcp {
            let message =
                endpoint.resolve("POST", br#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#)?;
            let sample = sample(&full_headers, "https", "127.0.0.1", "probe");
            let parts = self.context(&sample, &endpoint.path, "", Some(&message))?;
            let context = with_approval(parts.pairs, false)?;
            let label = format!("MCP endpoint `{}`", endpoint.path);
            let actions =
                std::iter::once(&endpoint.protocol_action).chain(endpoint.methods.values());
            for action in actions {
                for principal in &samples.principals {
                    probes.push(Probe {
                        label: label.clone(),
                        principal: principal.clone(),
                        action: action.clone(),
                        resource: endpoint.server_resource.clone(),
                        context: context.clone(),
                        unread_body: false,
                    });
                }
            }
        }
        Ok(probes)
    }

    /// Every principal type the identity settings make, and a route's
    /// context with every optional part present and with none.
    pub(super) fn samples(&self) -> Result<Samples, MappingError> {
        let full_headers = self.full_headers();
        let full_query = self
            .context
            .query
            .iter()
            .map(|q| format!("{q}=x&"))
            .collect::<String>();
        let no_headers = HashMap::new();
        let samples = [
            self.context(
                &sample(&full_headers, "https", "127.0.0.1", "probe"),
                "/",
                &full_query,
                None,
            )?
            .pairs,
            self.context(&sample(&no_headers, "", "", ""), "/", "", None)?
                .pairs,
        ];
        let contexts = samples
            .into_iter()
            .map(|pairs| with_approval(pairs, false))
            .collect::<Result<Vec<_>, _>>()?;
        let mut principal_types = vec![&self.identity.user_type, &self.identity.workload_type];
        if let Some((_, ty)) = &self.identity.trusted_header {
            principal_types.push(ty);
        }
        let mut principals: Vec<EntityUid> = principal_types
            .into_iter()
            .map(|ty| EntityUid::from_type_name_and_id(ty.clone(), EntityId::new("probe")))
            .collect();
        principals.push(self.identity.anonymous.clone());
        Ok(Samples {
            principals,
            contexts,
        })
    }

    fn full_headers(&self) -> HashMap<String, String> {
        self.context
            .headers
            .iter()
            .map(|h| (h.clone(), "x".to_owned()))
            .collect()
    }
}

/// A request with the given optional parts, for a context to be built from.
fn sample<'a>(
    headers: &'a HashMap<String, String>,
    scheme: &'a str,
    source_address: &'a str,
    request_id: &'a str,
) -> HttpRequest<'a> {
    HttpRequest {
        method: "GET",
        path: "/",
        host: "localhost",
        scheme,
        headers,
        body: b"",
        source_address,
        source_principal: "",
        jwt_claims: None,
        request_id,
        time: Some(0),
    }
}
