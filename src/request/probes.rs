//! Sample requests for the policy loader: every shape the route table and
//! the MCP endpoints' protocol messages can produce, checked against the
//! schema before any real request arrives.

use std::collections::HashMap;

use cedar_policy::{EntityId, EntityTypeName, EntityUid};

use super::{HttpRequest, Mapper, MappingError, with_approval};
use crate::policy::Probe;

impl Mapper {
    /// Sample requests per route and principal type, with every optional
    /// part present and with none, for the policy loader to check against the
    /// schema before any real request arrives.
    pub fn probes(&self) -> Result<Vec<Probe>, MappingError> {
        let full_headers: HashMap<String, String> = self
            .context
            .headers
            .iter()
            .map(|h| (h.clone(), "x".to_owned()))
            .collect();
        let full_query = self
            .context
            .query
            .iter()
            .map(|q| format!("{q}=x&"))
            .collect::<String>();
        let no_headers = HashMap::new();
        let sample = |headers, scheme, source_address, request_id| HttpRequest {
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
        };
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

        let mut targets: Vec<(String, &EntityUid, &EntityTypeName)> = self
            .routes
            .specs()
            .map(|r| {
                let label = format!("route `{} {}`", r.method.as_deref().unwrap_or("*"), r.path);
                (label, &r.action, &r.resource_type)
            })
            .collect();
        targets.push((
            "the default route".to_owned(),
            self.routes.default_action(),
            self.routes.default_resource_type(),
        ));
        let mut probes = Vec::new();
        for (label, action, resource_type) in targets {
            let resource =
                EntityUid::from_type_name_and_id(resource_type.clone(), EntityId::new("probe"));
            for principal in &principals {
                for context in &contexts {
                    probes.push(Probe {
                        label: label.clone(),
                        principal: principal.clone(),
                        action: action.clone(),
                        resource: resource.clone(),
                        context: context.clone(),
                    });
                }
            }
        }
        // An MCP endpoint's protocol messages (tool calls take their actions
        // from the call, so only the schema can say which exist).
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
                for principal in &principals {
                    probes.push(Probe {
                        label: label.clone(),
                        principal: principal.clone(),
                        action: action.clone(),
                        resource: endpoint.server_resource.clone(),
                        context: context.clone(),
                    });
                }
            }
        }
        Ok(probes)
    }
}
