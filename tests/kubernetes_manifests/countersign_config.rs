//! countersign's configuration as the pod mounts it: loaded by countersign's
//! own loader, its policies and TLS from the ConfigMap and Secrets, its
//! probes and Services on the addresses it listens on.

use std::collections::HashMap;
use std::path::Path;

use countersign::config::Config;
use serde_json::Value;

use crate::common::repo;
use crate::readme::Data;
use crate::variant::{Pod, Variant, arg_after, env_value, pre_stop_seconds, resolve_port};
use crate::yaml::{array, difference, labels_match, read, str_at};
use crate::{VARIANTS, k8s_dir};

/// Fields of `src/default-config.toml` a pod's countersign.toml may set
/// differently (a whole table, or `table.field`). Everything else must match,
/// so the route table cannot drift from the one the example policies are
/// written for.
const TOML_OVERRIDES: &[&str] = &[
    "server.listen",
    "server.metrics_listen",
    "server.log_format",
    "policy.dir",
    "redis",
    "admin",
];

/// The countersign container of a variant, with its configuration loaded by
/// countersign's own loader from what the pod mounts.
pub struct Countersign<'a> {
    pub pod: Pod<'a>,
    pub container: &'a Value,
    pub config: Config,
    /// The pod's files, as the container sees them.
    pub root: tempfile::TempDir,
}

pub fn countersign<'a>(v: &'a Variant) -> Countersign<'a> {
    let (pod, container) = v
        .pods()
        .into_iter()
        .find_map(|p| p.container("countersign").map(|c| (p, c)))
        .unwrap_or_else(|| panic!("{}: no container named `countersign`", v.name));
    let what = format!("{}: container `countersign`", pod.owner);
    let config_path = arg_after(container, &["--config"])
        .or_else(|| env_value(container, "COUNTERSIGN_CONFIG"))
        .unwrap_or_else(|| panic!("{what}: no --config: it would run the embedded default"));
    let root = tempfile::tempdir().unwrap();
    v.materialize(&pod, container, root.path());
    // The container's environment; Secret values as the README makes them.
    let mut env = HashMap::new();
    for e in array(container, "/env") {
        let name = str_at(e, "/name", &what).to_owned();
        let value = match e.get("value").and_then(Value::as_str) {
            Some(value) => value.to_owned(),
            None => {
                let r = e.pointer("/valueFrom/secretKeyRef").unwrap_or_else(|| {
                    panic!("{what}: env `{name}`: expected a value or a secretKeyRef")
                });
                let (n, k) = (str_at(r, "/name", &what), str_at(r, "/key", &what));
                let bytes = v
                    .secrets
                    .get(n)
                    .and_then(|(_, data)| data.get(k))
                    .unwrap_or_else(|| {
                        panic!("{what}: env `{name}`: Secret `{n}` has no key `{k}`")
                    });
                String::from_utf8(bytes.clone()).unwrap()
            }
        };
        env.insert(name, value);
    }
    let file = root.path().join(config_path.trim_start_matches('/'));
    assert!(
        file.is_file(),
        "{what}: `{config_path}` is not a file any volume mounts"
    );
    let config = Config::load(Some(&file), &env)
        .unwrap_or_else(|e| panic!("{what}: countersign refuses its configuration: {e}"));
    Countersign {
        pod,
        container,
        config,
        root,
    }
}

/// The data of the mount whose directory is `dir` in the pod's files.
fn mounted_at(v: &Variant, cs: &Countersign, dir: &Path) -> (String, Data) {
    let rel = dir.strip_prefix(cs.root.path()).unwrap_or_else(|_| {
        panic!(
            "{}: `{}` is outside the pod's mounts",
            v.name,
            dir.display()
        )
    });
    let rel = Path::new("/").join(rel);
    let rel = rel.to_str().unwrap();
    array(cs.container, "/volumeMounts")
        .iter()
        .find(|m| m.get("mountPath").and_then(Value::as_str) == Some(rel))
        .map(|m| {
            let vol = cs.pod.volume(str_at(m, "/name", v.name));
            let source = vol
                .pointer("/configMap/name")
                .or_else(|| vol.pointer("/secret/secretName"))
                .and_then(Value::as_str)
                .unwrap()
                .to_owned();
            (source, v.volume_data(&cs.pod, vol))
        })
        .unwrap_or_else(|| panic!("{}: nothing is mounted at `{rel}`", v.name))
}

/// countersign.toml loads with countersign's loader where the pod mounts it;
/// its policy directory is the policies ConfigMap, which holds policies/ and
/// loads against the route table; its admin TLS files are the Secrets'
/// (the server's a `kubernetes.io/tls` Secret); probes, ports and Services
/// use the addresses it listens on.
#[test]
fn countersign_config_loads_from_the_pod_mounts() {
    for v in VARIANTS.map(Variant::load) {
        let cs = countersign(&v);
        let c = &cs.config;
        let what = format!("{}: container `countersign`", cs.pod.owner);
        let image = str_at(cs.container, "/image", &what);
        assert_eq!(
            image, "countersign:dev",
            "{what}: the image the README builds"
        );

        // Policies: the ConfigMap made from policies/, loadable with the routes.
        let (source, data) = mounted_at(&v, &cs, &c.policy_dir);
        let mut expected = Data::new();
        for entry in std::fs::read_dir(repo().join("policies")).unwrap() {
            let p = entry.unwrap().path();
            // The policy test suite (`countersign policy test`) runs in CI,
            // not in the pods: the ConfigMap leaves it out.
            if p.is_dir() && p.file_name().is_some_and(|n| n == "tests") {
                continue;
            }
            assert!(
                p.is_file(),
                "policies/{} is not a file: kubectl create configmap --from-file skips directories, so the pods would not get it",
                p.file_name().unwrap().to_string_lossy()
            );
            let key = p.file_name().unwrap().to_str().unwrap().to_owned();
            assert!(
                !key.is_empty()
                    && key
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b)),
                "policies/{key}: not a valid ConfigMap key"
            );
            expected.insert(key, std::fs::read(&p).unwrap());
        }
        assert!(
            data == expected,
            "{what}: policy.dir is ConfigMap `{source}`, which does not hold exactly the files of policies/ (keys {:?}, expected {:?})",
            data.keys().collect::<Vec<_>>(),
            expected.keys().collect::<Vec<_>>()
        );
        assert!(
            v.configmaps.get(&source) == Some(&expected),
            "{what}: ConfigMap `{source}` differs from policies/"
        );
        let size: usize = expected.values().map(Vec::len).sum();
        assert!(
            size < 1 << 20,
            "policies/ is {size} bytes: over a ConfigMap's 1 MiB"
        );
        let probes = c.mapper.probes().expect("route table probes");
        if let Err(e) = countersign::policy::PolicyStore::open(&c.policy_dir, probes) {
            panic!(
                "{what}: the policies the pod mounts do not load with countersign.toml's routes: {e}"
            );
        }

        // Admin API: TLS from the Secrets, reachable through a Service.
        let admin = c
            .admin
            .as_ref()
            .unwrap_or_else(|| panic!("{what}: the admin API is off"));
        let (tls, (tls_type, tls_data)) = v
            .secrets
            .iter()
            .find(|(_, (_, d))| d.get("tls.crt") == Some(&admin.cert_pem))
            .unwrap_or_else(|| panic!("{what}: admin.tls_cert is not a mounted Secret's tls.crt"));
        assert_eq!(
            tls_type.as_deref(),
            Some("kubernetes.io/tls"),
            "{what}: Secret `{tls}` should be of type kubernetes.io/tls"
        );
        assert_eq!(
            tls_data.get("tls.key"),
            Some(&admin.key_pem),
            "{what}: admin.tls_key is not tls.key of `{tls}`"
        );
        let ca = admin.client_ca_pem.as_ref().expect("admin.client_ca");
        assert!(
            v.secrets.values().any(|(_, d)| d.get("ca.crt") == Some(ca)),
            "{what}: admin.client_ca is not a mounted Secret's ca.crt"
        );
        assert!(
            admin.listen.ip().is_unspecified(),
            "{what}: admin.listen must be 0.0.0.0 to be reachable"
        );
        assert!(
            v.of_kind("Service")
                .any(|svc| array(svc, "/spec/ports").iter().any(|p| {
                    v.service_target(svc, p).is_some_and(|(pod, c, n)| {
                        pod.owner == cs.pod.owner && c == cs.container && n == admin.listen.port()
                    })
                })),
            "{what}: no Service reaches admin.listen {}",
            admin.listen
        );

        // Probes on server.metrics_listen, reachable by the kubelet.
        let metrics = c
            .metrics_listen
            .unwrap_or_else(|| panic!("{what}: metrics_listen is off"));
        assert!(
            metrics.ip().is_unspecified(),
            "{what}: server.metrics_listen {metrics}: the kubelet probes the pod IP, so it must be 0.0.0.0"
        );
        for (probe, path) in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")] {
            let p = cs
                .container
                .get(probe)
                .unwrap_or_else(|| panic!("{what}: no {probe}"));
            assert_eq!(str_at(p, "/httpGet/path", &what), path, "{what}: {probe}");
            let port = resolve_port(cs.container, p.pointer("/httpGet/port").unwrap());
            assert_eq!(
                port,
                Some(metrics.port()),
                "{what}: {probe} is not on server.metrics_listen's port"
            );
        }

        // Shared by many Envoys: more than one replica, kept through drains.
        if cs.pod.container("envoy").is_none() {
            assert!(
                cs.pod.replicas >= 2,
                "{what}: a shared countersign needs replicas >= 2"
            );
            assert!(
                v.of_kind("PodDisruptionBudget").any(|pdb| pdb
                    .pointer("/spec/selector/matchLabels")
                    .is_some_and(|s| labels_match(s, cs.pod.labels))),
                "{what}: no PodDisruptionBudget keeps a shared countersign up through node drains"
            );
        }

        // Shutdown: the pod waits for the preStop hook and the drain.
        let grace = cs
            .pod
            .spec
            .get("terminationGracePeriodSeconds")
            .and_then(Value::as_u64)
            .unwrap_or(30);
        let needed = pre_stop_seconds(cs.container) + c.shutdown_grace.as_secs();
        assert!(
            grace > needed,
            "{what}: terminationGracePeriodSeconds {grace} does not cover preStop plus server.shutdown_grace_seconds ({needed} s)"
        );
    }
}

/// The pod's countersign.toml is src/default-config.toml but for the fields
/// a pod must set (TOML_OVERRIDES).
#[test]
fn countersign_toml_matches_the_default_config() {
    let table = |path: &Path| {
        let t: toml::Table = toml::from_str(&read(path)).unwrap();
        let mut j = serde_json::to_value(t).unwrap();
        for o in TOML_OVERRIDES {
            match o.split_once('.') {
                Some((table, field)) => {
                    if let Some(t) = j.get_mut(table).and_then(Value::as_object_mut) {
                        t.remove(field);
                    }
                }
                None => {
                    j.as_object_mut().unwrap().remove(*o);
                }
            }
        }
        j
    };
    let default = table(&repo().join("src/default-config.toml"));
    for v in VARIANTS {
        let pod = table(&k8s_dir().join(v).join("countersign.toml"));
        if let Some(d) = difference(&pod, &default, "") {
            panic!(
                "{v}/countersign.toml differs from src/default-config.toml at {d}\n\
                 run: python3 deploy/kubernetes/refresh.py (fields above its marker line are set by hand)"
            );
        }
    }
}
