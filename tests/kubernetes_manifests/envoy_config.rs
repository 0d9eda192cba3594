//! Envoy's configuration in the ConfigMap: valid for the real Envoy with the
//! container's arguments, the same as envoy/envoy.yaml but for what a pod
//! must change, and pointing at countersign.

use std::net::SocketAddr;
use std::process::Command;

use serde_json::Value;

use crate::VARIANTS;
use crate::common::{envoy_bin, output_text, repo};
use crate::countersign_config::countersign;
use crate::variant::{Variant, arg_after, env_value, resolve_port};
use crate::yaml::{array, difference, labels_match, str_at, yaml};

/// Cluster fields that may differ from `envoy/envoy.yaml`: where the
/// endpoints are and how Envoy finds and checks them.
const CLUSTER_ADDRESS_FIELDS: &[&str] = &[
    "type",
    "load_assignment",
    "dns_refresh_rate",
    "dns_lookup_family",
    "health_checks",
];

fn named<'a>(list: &'a [Value], name: &str) -> Option<&'a Value> {
    list.iter()
        .find(|x| x.get("name").and_then(Value::as_str) == Some(name))
}

/// The one endpoint of an Envoy cluster: (host, port).
fn endpoint(cluster: &Value) -> (String, u16) {
    let eps: Vec<&Value> = array(cluster, "/load_assignment/endpoints")
        .iter()
        .flat_map(|e| array(e, "/lb_endpoints"))
        .collect();
    assert_eq!(
        eps.len(),
        1,
        "cluster {}: expected one endpoint",
        cluster["name"]
    );
    let sa = eps[0]
        .pointer("/endpoint/address/socket_address")
        .expect("socket_address");
    (
        str_at(sa, "/address", "endpoint").to_owned(),
        u16::try_from(sa["port_value"].as_u64().unwrap()).unwrap(),
    )
}

fn hcm(listener: &Value) -> &Value {
    listener
        .pointer("/filter_chains/0/filters/0/typed_config")
        .expect("an http_connection_manager")
}

/// Envoy's config in the ConfigMap passes `envoy --mode validate` with the
/// container's arguments, and matches envoy/envoy.yaml: the same `ingress`
/// listener (filters, routes) but for its address, the same clusters but
/// for their endpoints, the same admin and overload settings. Its
/// ext_authz cluster reaches countersign's `server.listen`; its collector is
/// countersign's; its probes reach the admin interface's /ready only.
#[test]
fn envoy_config_validates_and_matches_the_reference() {
    let reference = yaml(&repo().join("envoy/envoy.yaml"));
    for v in VARIANTS.map(Variant::load) {
        let cs = countersign(&v);
        let pods = v.pods();
        let (pod, container) = pods
            .iter()
            .find_map(|p| p.container("envoy").map(|c| (p, c)))
            .unwrap_or_else(|| panic!("{}: no container named `envoy`", v.name));
        let what = format!("{}: container `envoy`", pod.owner);
        let image = str_at(container, "/image", &what);
        assert!(
            image.starts_with("envoyproxy/envoy:v1.40."),
            "{what}: image `{image}`, expected envoyproxy/envoy:v1.40.x"
        );

        // The config file through the container's mounts, validated with
        // the container's own arguments.
        let root = tempfile::tempdir().unwrap();
        v.materialize(pod, container, root.path());
        let config_path = arg_after(container, &["-c", "--config-path"])
            .unwrap_or_else(|| panic!("{what}: no -c"));
        let file = root.path().join(config_path.trim_start_matches('/'));
        assert!(
            file.is_file(),
            "{what}: `{config_path}` is not a file any volume mounts"
        );
        let mut args: Vec<String> = array(container, "/command")
            .iter()
            .chain(array(container, "/args"))
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect();
        assert_eq!(
            args.first().map(String::as_str),
            Some("envoy"),
            "{what}: command"
        );
        args.remove(0);
        for a in &mut args {
            if *a == config_path {
                *a = file.display().to_string();
            }
        }
        let out = Command::new(envoy_bin())
            .args(&args)
            .args(["--mode", "validate", "--log-level", "warn"])
            .output()
            .expect("run envoy");
        assert!(
            out.status.success(),
            "{what}: envoy --mode validate refuses {config_path}:\n{}",
            output_text(&out)
        );
        let envoy = yaml(&file);
        let origin = format!("{}/envoy.yaml", v.name);

        for top in ["admin", "overload_manager"] {
            assert_eq!(
                envoy.get(top),
                reference.get(top),
                "{origin}: `{top}` differs from envoy/envoy.yaml"
            );
        }
        let listeners = array(&envoy, "/static_resources/listeners");
        let ref_listeners = array(&reference, "/static_resources/listeners");
        let ingress = named(listeners, "ingress")
            .unwrap_or_else(|| panic!("{origin}: no listener `ingress`"));
        let ref_ingress =
            named(ref_listeners, "ingress").expect("envoy/envoy.yaml: listener `ingress`");
        let strip = |l: &Value| {
            let mut l = l.clone();
            l.as_object_mut().unwrap().remove("address");
            l
        };
        if let Some(d) = difference(&strip(ingress), &strip(ref_ingress), "listener ingress") {
            panic!(
                "{origin}: listener `ingress` differs from envoy/envoy.yaml's at {d}\nrun: python3 deploy/kubernetes/refresh.py"
            );
        }
        assert_eq!(
            str_at(ingress, "/address/socket_address/address", &origin),
            "0.0.0.0",
            "{origin}: the ingress must listen on the pod's interfaces"
        );
        let ingress_port = ingress
            .pointer("/address/socket_address/port_value")
            .and_then(Value::as_u64);
        let app_services: Vec<&Value> = v
            .of_kind("Service")
            .filter(|svc| {
                array(svc, "/spec/ports").iter().any(|p| {
                    v.service_target(svc, p).is_some_and(|(p, c, n)| {
                        p.owner == pod.owner && c == container && Some(u64::from(n)) == ingress_port
                    })
                })
            })
            .collect();
        assert!(
            !app_services.is_empty(),
            "{what}: no Service sends to the ingress listener's port"
        );
        for l in ref_listeners {
            let n = str_at(l, "/name", "envoy/envoy.yaml");
            assert!(
                n == "demo_upstream" || named(listeners, n).is_some(),
                "{origin}: listener `{n}` of envoy/envoy.yaml is missing"
            );
        }

        // What the ext_authz filters require (docs/SECURITY.md, section 2),
        // stated here as well as by the comparison above.
        let manager = hcm(ingress);
        let filters = array(manager, "/http_filters");
        for f in ["envoy.filters.http.ext_authz", "countersign.hold"] {
            let cfg = named(filters, f)
                .and_then(|x| x.get("typed_config"))
                .unwrap_or_else(|| panic!("{origin}: no http filter `{f}`"));
            assert_eq!(
                cfg["failure_mode_allow"],
                Value::Bool(false),
                "{origin}: {f} must fail closed"
            );
            assert_eq!(
                cfg.pointer("/status_on_error/code").and_then(Value::as_u64),
                Some(503),
                "{origin}: {f}"
            );
            assert_eq!(
                cfg.pointer("/grpc_service/envoy_grpc/cluster_name")
                    .and_then(Value::as_str),
                Some("countersign"),
                "{origin}: {f}"
            );
            assert!(
                array(cfg, "/metadata_context_namespaces")
                    .iter()
                    .any(|n| n == "envoy.filters.http.jwt_authn"),
                "{origin}: {f} must forward jwt_authn's metadata"
            );
        }
        let jwt = named(filters, "envoy.filters.http.jwt_authn").expect("jwt_authn");
        for (p, provider) in jwt
            .pointer("/typed_config/providers")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
        {
            assert_eq!(
                provider.get("payload_in_metadata").and_then(Value::as_str),
                Some(cs.config.jwt_metadata_key.as_str()),
                "{origin}: jwt provider `{p}` must put the claims where identity.jwt_metadata_key reads them"
            );
        }
        for vh in array(manager, "/route_config/virtual_hosts") {
            for route in array(vh, "/routes") {
                let per = route.get("typed_per_filter_config").unwrap_or(&Value::Null);
                let main_off = per.pointer("/envoy.filters.http.ext_authz/disabled")
                    == Some(&Value::Bool(true));
                let hold_on = per
                    .get("countersign.hold")
                    .is_some_and(|h| h.get("disabled") != Some(&Value::Bool(true)));
                assert!(
                    !main_off || hold_on,
                    "{origin}: route {} is checked by neither filter",
                    route["match"]
                );
                for f in ["envoy.filters.http.ext_authz", "countersign.hold"] {
                    if let Some(n) = per
                        .pointer(&format!(
                            "/{f}/check_settings/with_request_body/max_request_bytes"
                        ))
                        .and_then(Value::as_u64)
                    {
                        assert!(
                            n <= cs.config.mapper.context.max_body_bytes as u64,
                            "{origin}: route {} buffers {n} bytes, above request.max_body_bytes",
                            route["match"]
                        );
                    }
                }
            }
        }

        // Clusters: the reference's but for where their endpoints are.
        let clusters = array(&envoy, "/static_resources/clusters");
        for rc in array(&reference, "/static_resources/clusters") {
            let n = str_at(rc, "/name", "envoy/envoy.yaml");
            let c =
                named(clusters, n).unwrap_or_else(|| panic!("{origin}: cluster `{n}` is missing"));
            let strip = |c: &Value| {
                let mut c = c.clone();
                for f in CLUSTER_ADDRESS_FIELDS {
                    c.as_object_mut().unwrap().remove(*f);
                }
                c
            };
            if let Some(d) = difference(&strip(c), &strip(rc), &format!("cluster {n}")) {
                panic!("{origin}: cluster `{n}` differs from envoy/envoy.yaml's at {d}");
            }
            assert_eq!(
                c.pointer("/load_assignment/cluster_name"),
                rc.pointer("/load_assignment/cluster_name"),
                "{origin}: cluster `{n}`"
            );
        }
        for c in clusters {
            let n = str_at(c, "/name", &origin);
            assert!(
                n == "envoy_admin"
                    || named(array(&reference, "/static_resources/clusters"), n).is_some(),
                "{origin}: cluster `{n}` is not in envoy/envoy.yaml"
            );
        }
        let upstream = endpoint(named(clusters, "upstream").unwrap());
        assert_eq!(
            upstream.0, "127.0.0.1",
            "{origin}: the app is reached on loopback, in the pod"
        );

        // ext_authz reaches countersign's server.listen.
        let authz = named(clusters, "countersign").unwrap();
        let (host, port) = endpoint(authz);
        let listen = cs.config.listen;
        if cs.pod.owner == pod.owner {
            assert!(
                listen.ip().is_loopback(),
                "{}: a sidecar's ext_authz must stay on loopback, got {listen}",
                v.name
            );
            assert_eq!(
                format!("{host}:{port}").parse::<SocketAddr>().ok(),
                Some(listen),
                "{origin}: cluster `countersign` does not point at server.listen"
            );
        } else {
            assert!(
                listen.ip().is_unspecified(),
                "{}: server.listen {listen} is not reachable from other pods",
                v.name
            );
            let ns = v.namespace.as_deref().unwrap_or_else(|| {
                panic!("{}: the kustomization must set the namespace that envoy.yaml's Service name contains", v.name)
            });
            let svc = v
                .of_kind("Service")
                .find(|s| {
                    format!(
                        "{}.{ns}.svc.cluster.local",
                        s["metadata"]["name"].as_str().unwrap()
                    ) == host
                })
                .unwrap_or_else(|| {
                    panic!(
                        "{origin}: cluster `countersign` names `{host}`, no Service of this example"
                    )
                });
            let sport = array(svc, "/spec/ports")
                .iter()
                .find(|p| p.get("port").and_then(Value::as_u64) == Some(u64::from(port)))
                .unwrap_or_else(|| panic!("{origin}: Service `{host}` has no port {port}"));
            let (tpod, tc, n) = v.service_target(svc, sport).expect("resolved above");
            assert!(
                tpod.owner == cs.pod.owner && tc == cs.container && n == listen.port(),
                "{origin}: `{host}:{port}` does not reach countersign's server.listen {listen}"
            );
            assert_eq!(
                svc.pointer("/spec/clusterIP").and_then(Value::as_str),
                Some("None"),
                "{origin}: the Service should be headless, so Envoy balances over all pods"
            );
            assert_eq!(
                authz["type"], "STRICT_DNS",
                "{origin}: cluster `countersign` should resolve every pod"
            );
            // Unauthenticated port: NetworkPolicies select the countersign
            // pods (isolating them), and every rule of theirs that opens the
            // port admits only the Envoy pods. Rules add up, so all must.
            let policies: Vec<&Value> = v
                .of_kind("NetworkPolicy")
                .filter(|np| {
                    let sel = np.pointer("/spec/podSelector/matchLabels");
                    let types = array(np, "/spec/policyTypes");
                    sel.is_some_and(|s| labels_match(s, cs.pod.labels))
                        && (types.is_empty() || types.iter().any(|t| t == "Ingress"))
                })
                .collect();
            let only_envoys = |rule: &Value| {
                let ports = array(rule, "/ports");
                let opens = ports.is_empty()
                    || ports
                        .iter()
                        .any(|p| resolve_port(cs.container, &p["port"]) == Some(listen.port()));
                let from = array(rule, "/from");
                !opens
                    || (!from.is_empty()
                        && from.iter().all(|f| {
                            f.pointer("/podSelector/matchLabels")
                                .is_some_and(|s| labels_match(s, pod.labels))
                        }))
            };
            assert!(
                !policies.is_empty()
                    && policies
                        .iter()
                        .all(|np| array(np, "/spec/ingress").iter().all(only_envoys)),
                "{}: countersign's ext_authz port {} must be open to the Envoy pods only (NetworkPolicy)",
                v.name,
                listen.port()
            );
        }

        // Traces: Envoy's collector is countersign's.
        let (oh, op) = endpoint(named(clusters, "otel_collector").unwrap());
        assert_eq!(
            env_value(cs.container, "OTEL_EXPORTER_OTLP_ENDPOINT"),
            Some(format!("http://{oh}:{op}")),
            "{}: countersign and Envoy should send spans to the same collector",
            v.name
        );

        // Probes: /ready of the admin interface, and nothing else of it.
        let admin = reference.pointer("/admin/address/socket_address").unwrap();
        let admin_cluster = named(clusters, "envoy_admin")
            .unwrap_or_else(|| panic!("{origin}: no cluster envoy_admin"));
        assert_eq!(
            endpoint(admin_cluster),
            (
                admin["address"].as_str().unwrap().to_owned(),
                admin["port_value"].as_u64().unwrap() as u16
            ),
            "{origin}: envoy_admin is not the admin interface"
        );
        let mut ready_port = None;
        for l in listeners {
            for vh in array(hcm(l), "/route_config/virtual_hosts") {
                for route in array(vh, "/routes") {
                    if route.pointer("/route/cluster").and_then(Value::as_str)
                        == Some("envoy_admin")
                    {
                        assert_eq!(
                            route.get("match"),
                            Some(&serde_json::json!({"path": "/ready"})),
                            "{origin}: only the path /ready may reach the admin interface"
                        );
                        ready_port = l
                            .pointer("/address/socket_address/port_value")
                            .and_then(Value::as_u64);
                    }
                }
            }
        }
        let probe = container
            .get("readinessProbe")
            .unwrap_or_else(|| panic!("{what}: no readinessProbe"));
        assert_eq!(
            str_at(probe, "/httpGet/path", &what),
            "/ready",
            "{what}: readinessProbe"
        );
        assert_eq!(
            resolve_port(container, &probe["httpGet"]["port"]).map(u64::from),
            ready_port,
            "{what}: readinessProbe is not on the listener that serves /ready"
        );
    }
}
