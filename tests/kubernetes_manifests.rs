//! The Kubernetes examples in `deploy/kubernetes/`: every manifest parses and
//! names what it refers to; countersign's configuration loads with
//! countersign's own loader from the files the pod mounts (the Secrets and
//! the policies ConfigMap made as the README's commands make them); Envoy's
//! configuration passes `envoy --mode validate` with the container's own
//! arguments and matches `envoy/envoy.yaml` but for what a pod must change;
//! probes, Services and Envoy's clusters point at the ports countersign
//! listens on. No cluster and no kubectl are needed.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{envoy_bin, output_text, repo};
use countersign::config::Config;
use serde::Deserialize;
use serde_json::Value;

const VARIANTS: [&str; 2] = ["sidecar", "shared"];

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

/// Cluster fields that may differ from `envoy/envoy.yaml`: where the
/// endpoints are and how Envoy finds and checks them.
const CLUSTER_ADDRESS_FIELDS: &[&str] = &[
    "type",
    "load_assignment",
    "dns_refresh_rate",
    "dns_lookup_family",
    "health_checks",
];

fn k8s_dir() -> PathBuf {
    repo().join("deploy/kubernetes")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// Every YAML document in `text`; empty documents are skipped, as kubectl does.
fn yaml_documents(text: &str, origin: &str) -> Vec<Value> {
    serde_yaml_ng::Deserializer::from_str(text)
        .map(|doc| Value::deserialize(doc).unwrap_or_else(|e| panic!("{origin}: not YAML: {e}")))
        .filter(|v| !v.is_null())
        .collect()
}

fn yaml(path: &Path) -> Value {
    let origin = path.display().to_string();
    let mut docs = yaml_documents(&read(path), &origin);
    assert_eq!(docs.len(), 1, "{origin}: expected one YAML document");
    docs.remove(0)
}

fn str_at<'a>(v: &'a Value, pointer: &str, what: &str) -> &'a str {
    v.pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("{what}: `{pointer}` is missing or not a string"))
}

fn array<'a>(v: &'a Value, pointer: &str) -> &'a [Value] {
    v.pointer(pointer)
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

fn labels_match(selector: &Value, labels: &Value) -> bool {
    let Some(selector) = selector.as_object() else {
        return false;
    };
    !selector.is_empty() && selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// The first place where `a` and `b` differ, as a JSON pointer with both values.
fn difference(a: &Value, b: &Value, at: &str) -> Option<String> {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            keys.into_iter().find_map(|k| match (x.get(k), y.get(k)) {
                (Some(p), Some(q)) => difference(p, q, &format!("{at}/{k}")),
                (p, q) => Some(format!("{at}/{k}: {p:?} here, {q:?} there")),
            })
        }
        (Value::Array(x), Value::Array(y)) => x
            .iter()
            .zip(y)
            .enumerate()
            .find_map(|(i, (p, q))| difference(p, q, &format!("{at}/{i}")))
            .or_else(|| {
                (x.len() != y.len())
                    .then(|| format!("{at}: {} items here, {} there", x.len(), y.len()))
            }),
        _ if a == b => None,
        _ => Some(format!("{at}: {a} here, {b} there")),
    }
}

/// What a ConfigMap or Secret holds: key -> bytes.
type Data = BTreeMap<String, Vec<u8>>;

/// A ConfigMap or Secret the README's commands create by hand.
#[derive(Debug)]
struct Created {
    kind: &'static str,
    /// `kubernetes.io/tls` for `kubectl create secret tls`.
    secret_type: Option<&'static str>,
    data: Data,
}

/// One of `deploy/kubernetes/<variant>/`, with every ConfigMap and Secret its
/// pods can mount: those its kustomization generates and those the README
/// creates.
struct Variant {
    name: &'static str,
    namespace: Option<String>,
    /// (file, document) for every resource the kustomization lists.
    docs: Vec<(String, Value)>,
    configmaps: BTreeMap<String, Data>,
    /// name -> (type, data).
    secrets: BTreeMap<String, (Option<String>, Data)>,
}

impl Variant {
    fn load(name: &'static str) -> Variant {
        let dir = k8s_dir().join(name);
        let kustomization = yaml(&dir.join("kustomization.yaml"));
        let origin = format!("{name}/kustomization.yaml");
        assert_eq!(
            str_at(&kustomization, "/kind", &origin),
            "Kustomization",
            "{origin}"
        );
        let namespace = kustomization
            .get("namespace")
            .and_then(Value::as_str)
            .map(str::to_owned);

        let mut docs = Vec::new();
        let mut listed = BTreeSet::from(["kustomization.yaml".to_owned()]);
        for r in array(&kustomization, "/resources") {
            let file = r.as_str().expect("resources are file names");
            assert!(
                dir.join(file).is_file(),
                "{origin}: resource `{file}` is not a file in {name}/"
            );
            listed.insert(file.to_owned());
            for doc in yaml_documents(&read(&dir.join(file)), &format!("{name}/{file}")) {
                docs.push((file.to_owned(), doc));
            }
        }

        let mut configmaps = BTreeMap::new();
        let mut secrets = BTreeMap::new();
        for g in array(&kustomization, "/configMapGenerator") {
            let cm = str_at(g, "/name", &origin).to_owned();
            let mut data = Data::new();
            for f in array(g, "/files") {
                let f = f.as_str().expect("generator files are strings");
                let (key, path) = f
                    .split_once('=')
                    .unwrap_or((Path::new(f).file_name().unwrap().to_str().unwrap(), f));
                let full = dir.join(path);
                assert!(
                    full.starts_with(&dir) && !path.contains(".."),
                    "{origin}: `{f}`: kustomize reads only files below the kustomization"
                );
                data.insert(key.to_owned(), read(&full).into_bytes());
                listed.insert(path.to_owned());
            }
            assert!(!data.is_empty(), "{origin}: generator `{cm}` has no files");
            assert!(
                configmaps.insert(cm.clone(), data).is_none(),
                "{origin}: ConfigMap `{cm}` is defined twice"
            );
        }

        // Nothing in the directory that the kustomization ignores.
        for entry in std::fs::read_dir(&dir).unwrap() {
            let f = entry.unwrap().file_name().to_string_lossy().into_owned();
            assert!(
                listed.contains(&f),
                "{name}/{f} is neither a resource nor a generated ConfigMap's file in {origin}"
            );
        }

        let work = tempfile::tempdir().unwrap();
        for (obj, created) in readme_objects(work.path()) {
            match created.kind {
                "configmap" => {
                    assert!(
                        configmaps.insert(obj.clone(), created.data).is_none(),
                        "ConfigMap `{obj}` is both generated in {name}/ and created by the README"
                    );
                }
                _ => {
                    let t = created.secret_type.map(str::to_owned);
                    secrets.insert(obj, (t, created.data));
                }
            }
        }
        Variant {
            name,
            namespace,
            docs,
            configmaps,
            secrets,
        }
    }

    fn of_kind<'a>(&'a self, kind: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
        self.docs
            .iter()
            .map(|(_, d)| d)
            .filter(move |d| d.get("kind").and_then(Value::as_str) == Some(kind))
    }

    fn pods(&self) -> Vec<Pod<'_>> {
        self.of_kind("Deployment")
            .map(|d| Pod {
                owner: format!(
                    "{}: Deployment `{}`",
                    self.name,
                    str_at(d, "/metadata/name", self.name)
                ),
                replicas: d
                    .pointer("/spec/replicas")
                    .and_then(Value::as_u64)
                    .unwrap_or(1),
                labels: d
                    .pointer("/spec/template/metadata/labels")
                    .unwrap_or(&Value::Null),
                spec: d
                    .pointer("/spec/template/spec")
                    .expect("a Deployment has a pod template"),
            })
            .collect()
    }

    /// The contents of a pod volume, as its files will be (key -> bytes).
    fn volume_data(&self, pod: &Pod, volume: &Value) -> Data {
        let vname = str_at(volume, "/name", &pod.owner);
        let what = format!("{}: volume `{vname}`", pod.owner);
        let (data, items) = if let Some(cm) = volume.get("configMap") {
            let n = str_at(cm, "/name", &what);
            let data = self.configmaps.get(n).unwrap_or_else(|| {
                panic!(
                    "{what}: ConfigMap `{n}` is neither generated by the kustomization nor created by the README"
                )
            });
            (data.clone(), cm.get("items"))
        } else if let Some(s) = volume.get("secret") {
            let n = str_at(s, "/secretName", &what);
            let (_, data) = self
                .secrets
                .get(n)
                .unwrap_or_else(|| panic!("{what}: Secret `{n}` is created by no README command"));
            (data.clone(), s.get("items"))
        } else {
            panic!("{what}: only configMap and secret volumes are expected here");
        };
        match items.and_then(Value::as_array) {
            None => data,
            Some(items) => items
                .iter()
                .map(|i| {
                    let key = str_at(i, "/key", &what);
                    let bytes = data
                        .get(key)
                        .unwrap_or_else(|| panic!("{what}: item key `{key}` is not in its source"));
                    (str_at(i, "/path", &what).to_owned(), bytes.clone())
                })
                .collect(),
        }
    }

    /// Writes what `container` sees through its volume mounts under `root`,
    /// directories laid out as the kubelet lays out ConfigMap and Secret
    /// volumes (files are symlinks through `..data`).
    fn materialize(&self, pod: &Pod, container: &Value, root: &Path) {
        for m in array(container, "/volumeMounts") {
            let what = format!("{}: volumeMount {m}", pod.owner);
            let volume = pod.volume(str_at(m, "/name", &what));
            let data = self.volume_data(pod, volume);
            let target = root.join(str_at(m, "/mountPath", &what).trim_start_matches('/'));
            if let Some(sub) = m.get("subPath").and_then(Value::as_str) {
                let bytes = data.get(sub).unwrap_or_else(|| {
                    panic!("{what}: subPath `{sub}` is not a key of its volume")
                });
                std::fs::create_dir_all(target.parent().unwrap()).unwrap();
                std::fs::write(&target, bytes).unwrap();
            } else {
                let stamp = target.join("..2026_01_01_00_00_00.000000001");
                std::fs::create_dir_all(&stamp).unwrap();
                std::os::unix::fs::symlink(stamp.file_name().unwrap(), target.join("..data"))
                    .unwrap();
                for (key, bytes) in &data {
                    std::fs::write(stamp.join(key), bytes).unwrap();
                    std::os::unix::fs::symlink(Path::new("..data").join(key), target.join(key))
                        .unwrap();
                }
            }
        }
    }

    /// The pod container a Service port sends to: (pod, container, port).
    fn service_target<'a>(
        &'a self,
        svc: &Value,
        port: &Value,
    ) -> Option<(Pod<'a>, &'a Value, u16)> {
        let selector = svc.pointer("/spec/selector")?;
        let target = port.get("targetPort").or_else(|| port.get("port"))?;
        self.pods()
            .into_iter()
            .filter(|p| labels_match(selector, p.labels))
            .find_map(|p| {
                p.containers()
                    .iter()
                    .find_map(|c| resolve_port(c, target).map(|n| (c, n)))
                    .map(|(c, n)| (p, c, n))
            })
    }
}

struct Pod<'a> {
    owner: String,
    /// The Deployment's `spec.replicas` (1 when unset).
    replicas: u64,
    labels: &'a Value,
    spec: &'a Value,
}

impl<'a> Pod<'a> {
    fn containers(&self) -> &'a [Value] {
        array(self.spec, "/containers")
    }

    fn container(&self, name: &str) -> Option<&'a Value> {
        self.containers()
            .iter()
            .find(|c| c.get("name").and_then(Value::as_str) == Some(name))
    }

    fn volume(&self, name: &str) -> &'a Value {
        array(self.spec, "/volumes")
            .iter()
            .find(|v| v.get("name").and_then(Value::as_str) == Some(name))
            .unwrap_or_else(|| panic!("{}: no volume `{name}`", self.owner))
    }
}

/// A probe's or Service's port (a number or a port name) as one of
/// `container`'s declared port numbers.
fn resolve_port(container: &Value, port: &Value) -> Option<u16> {
    let ports = array(container, "/ports");
    let found = match port {
        Value::String(name) => ports
            .iter()
            .find(|p| p.get("name").and_then(Value::as_str) == Some(name)),
        Value::Number(n) => ports
            .iter()
            .find(|p| p.get("containerPort").and_then(Value::as_u64) == n.as_u64()),
        _ => None,
    };
    found
        .and_then(|p| p.get("containerPort"))
        .and_then(Value::as_u64)
        .map(|n| u16::try_from(n).unwrap())
}

fn env_value(container: &Value, name: &str) -> Option<String> {
    array(container, "/env")
        .iter()
        .find(|e| e.get("name").and_then(Value::as_str) == Some(name))
        .and_then(|e| e.get("value"))
        .and_then(Value::as_str)
        .map(str::to_owned)
}

fn arg_after(container: &Value, flags: &[&str]) -> Option<String> {
    let args: Vec<&str> = array(container, "/command")
        .iter()
        .chain(array(container, "/args"))
        .filter_map(Value::as_str)
        .collect();
    args.windows(2)
        .find(|w| flags.contains(&w[0]))
        .map(|w| w[1].to_owned())
}

/// Seconds a container's preStop hook waits (`sleep N` or the sleep action).
fn pre_stop_seconds(container: &Value) -> u64 {
    if let Some(s) = container
        .pointer("/lifecycle/preStop/sleep/seconds")
        .and_then(Value::as_u64)
    {
        return s;
    }
    match array(container, "/lifecycle/preStop/exec/command") {
        [cmd, n] if cmd == "sleep" => n.as_str().and_then(|n| n.parse().ok()).unwrap_or(0),
        _ => 0,
    }
}

/// The objects the README's `kubectl create configmap|secret` commands make,
/// run from the repository root after `countersign dev-certs dev-certs`
/// (made here with countersign's own code, in `work`).
fn readme_objects(work: &Path) -> BTreeMap<String, Created> {
    countersign::cli::devcerts::write_all(&work.join("dev-certs"), &["dora".to_owned()]).unwrap();
    let readme = read(&k8s_dir().join("README.md"));
    // Shell lines of the fenced blocks, `\` continuations joined.
    let mut lines = Vec::new();
    let mut in_block = false;
    let mut pending = String::new();
    for line in readme.lines() {
        if line.trim_start().starts_with("```") {
            in_block = !in_block;
            continue;
        }
        if !in_block {
            continue;
        }
        match line.trim_end().strip_suffix('\\') {
            Some(head) => pending.push_str(head),
            None => {
                pending.push_str(line);
                lines.push(std::mem::take(&mut pending));
            }
        }
    }
    let resolve = |p: &str| {
        let in_work = work.join(p);
        if in_work.exists() {
            in_work
        } else {
            repo().join(p)
        }
    };
    let mut objects = BTreeMap::new();
    for line in lines {
        let words: Vec<String> = line
            .split_whitespace()
            .take_while(|w| *w != "|" && !w.starts_with('#'))
            .map(|w| w.trim_matches(|c| c == '\'' || c == '"').to_owned())
            .collect();
        if words.first().map(String::as_str) != Some("kubectl") {
            continue;
        }
        // Drop namespace flags, wherever they are.
        let mut rest = Vec::new();
        let mut it = words[1..].iter();
        while let Some(w) = it.next() {
            if w == "-n" || w == "--namespace" {
                it.next();
            } else if !w.starts_with("--namespace=") {
                rest.push(w.as_str());
            }
        }
        let (kind, secret_type, name, opts) = match rest.as_slice() {
            ["create", "secret", "tls", name, opts @ ..] => {
                ("secret", Some("kubernetes.io/tls"), *name, opts)
            }
            ["create", "secret", "generic", name, opts @ ..] => ("secret", None, *name, opts),
            ["create", "configmap", name, opts @ ..] => ("configmap", None, *name, opts),
            _ => continue,
        };
        let mut created = Created {
            kind,
            secret_type,
            data: Data::new(),
        };
        for o in opts {
            let read_bytes = |p: &str| {
                std::fs::read(resolve(p))
                    .unwrap_or_else(|e| panic!("README: `{line}`: cannot read `{p}`: {e}"))
            };
            if let Some(p) = o.strip_prefix("--cert=") {
                created.data.insert("tls.crt".into(), read_bytes(p));
            } else if let Some(p) = o.strip_prefix("--key=") {
                created.data.insert("tls.key".into(), read_bytes(p));
            } else if let Some(kv) = o.strip_prefix("--from-literal=") {
                let (k, v) = kv.split_once('=').expect("--from-literal=KEY=VALUE");
                created.data.insert(k.into(), v.as_bytes().to_vec());
            } else if let Some(spec) = o.strip_prefix("--from-file=") {
                let (key, p) = match spec.split_once('=') {
                    Some((k, p)) => (Some(k), p),
                    None => (None, spec),
                };
                let path = resolve(p);
                if path.is_dir() {
                    // kubectl takes the directory's regular files, by name.
                    for entry in std::fs::read_dir(&path).unwrap() {
                        let entry = entry.unwrap();
                        if entry.path().is_file() {
                            let k = entry.file_name().to_string_lossy().into_owned();
                            created.data.insert(k, std::fs::read(entry.path()).unwrap());
                        }
                    }
                } else {
                    let k = key.map_or_else(
                        || path.file_name().unwrap().to_string_lossy().into_owned(),
                        str::to_owned,
                    );
                    created.data.insert(k, read_bytes(p));
                }
            }
        }
        if let Some(old) = objects.insert(name.to_owned(), created) {
            // The same command for another variant's namespace must make the
            // same object.
            let new = &objects[name];
            assert_eq!(
                (old.kind, old.secret_type, &old.data),
                (new.kind, new.secret_type, &new.data),
                "README: `{name}` is created twice, differently"
            );
        }
    }
    objects
}

/// Manifests parse, name themselves, and every name they use resolves:
/// volumes, mounts, Secret and ConfigMap keys, probe ports, Service
/// selectors and target ports, PodDisruptionBudget and NetworkPolicy
/// selectors.
#[test]
fn manifests_parse_and_their_references_resolve() {
    // Every YAML document anywhere under deploy/kubernetes parses, and every
    // directory there is an example this test knows.
    let mut dirs = vec![k8s_dir()];
    while let Some(dir) = dirs.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                let rel = p.strip_prefix(k8s_dir()).unwrap().to_str().unwrap();
                assert!(
                    VARIANTS.contains(&rel),
                    "deploy/kubernetes/{rel}: not an example this test checks (VARIANTS)"
                );
                dirs.push(p);
            } else if p.extension().is_some_and(|x| x == "yaml" || x == "yml") {
                let docs = yaml_documents(&read(&p), &p.display().to_string());
                assert!(!docs.is_empty(), "{}: no YAML document", p.display());
            }
        }
    }

    for v in VARIANTS.map(Variant::load) {
        let mut seen = BTreeSet::new();
        for (file, doc) in &v.docs {
            let what = format!("{}/{file}", v.name);
            let kind = str_at(doc, "/kind", &what);
            str_at(doc, "/apiVersion", &what);
            let name = str_at(doc, "/metadata/name", &what);
            assert!(
                seen.insert((kind.to_owned(), name.to_owned())),
                "{what}: {kind} `{name}` is defined twice"
            );
        }
        let pods = v.pods();
        assert!(!pods.is_empty(), "{}: no Deployment", v.name);
        for d in v.of_kind("Deployment") {
            let name = str_at(d, "/metadata/name", v.name);
            let selector = d
                .pointer("/spec/selector/matchLabels")
                .unwrap_or(&Value::Null);
            let labels = d
                .pointer("/spec/template/metadata/labels")
                .unwrap_or(&Value::Null);
            assert!(
                labels_match(selector, labels),
                "{}: Deployment `{name}`: spec.selector does not match its pod labels",
                v.name
            );
        }
        for pod in &pods {
            check_pod(&v, pod);
        }
        for svc in v.of_kind("Service") {
            let name = str_at(svc, "/metadata/name", v.name);
            let ports = array(svc, "/spec/ports");
            assert!(
                !ports.is_empty(),
                "{}: Service `{name}` has no ports",
                v.name
            );
            for port in ports {
                assert!(
                    v.service_target(svc, port).is_some(),
                    "{}: Service `{name}` port {port}: no pod matching its selector has that target port",
                    v.name
                );
            }
        }
        for pdb in v.of_kind("PodDisruptionBudget") {
            let name = str_at(pdb, "/metadata/name", v.name);
            let selector = pdb
                .pointer("/spec/selector/matchLabels")
                .unwrap_or(&Value::Null);
            assert!(
                pods.iter().any(|p| labels_match(selector, p.labels)),
                "{}: PodDisruptionBudget `{name}` selects no pod",
                v.name
            );
        }
        for np in v.of_kind("NetworkPolicy") {
            let name = str_at(np, "/metadata/name", v.name);
            let what = format!("{}: NetworkPolicy `{name}`", v.name);
            let selector = np
                .pointer("/spec/podSelector/matchLabels")
                .unwrap_or(&Value::Null);
            let selected: Vec<&Pod> = pods
                .iter()
                .filter(|p| labels_match(selector, p.labels))
                .collect();
            assert!(!selected.is_empty(), "{what}: selects no pod");
            for rule in array(np, "/spec/ingress") {
                for port in array(rule, "/ports") {
                    let port = port.get("port").expect("a port");
                    assert!(
                        selected.iter().any(|p| p
                            .containers()
                            .iter()
                            .any(|c| resolve_port(c, port).is_some())),
                        "{what}: port {port} is not a port of the pods it selects"
                    );
                }
                for from in array(rule, "/from") {
                    if let Some(sel) = from.pointer("/podSelector/matchLabels") {
                        assert!(
                            pods.iter().any(|p| labels_match(sel, p.labels)),
                            "{what}: `from` selects no pod of this example"
                        );
                    }
                }
            }
        }
    }
}

/// Names, mounts, ports and the hardening every container of the examples
/// should have.
fn check_pod(v: &Variant, pod: &Pod) {
    let volumes: Vec<&str> = array(pod.spec, "/volumes")
        .iter()
        .map(|vol| str_at(vol, "/name", &pod.owner))
        .collect();
    let unique: BTreeSet<&str> = volumes.iter().copied().collect();
    assert_eq!(
        unique.len(),
        volumes.len(),
        "{}: volume names repeat",
        pod.owner
    );
    for vol in array(pod.spec, "/volumes") {
        v.volume_data(pod, vol);
    }
    let mut mounted = BTreeSet::new();
    let grace = pod
        .spec
        .get("terminationGracePeriodSeconds")
        .and_then(Value::as_u64)
        .unwrap_or(30);
    let run_as_non_root =
        pod.spec.pointer("/securityContext/runAsNonRoot") == Some(&Value::Bool(true));
    let mut port_names = BTreeSet::new();
    for c in pod.containers() {
        let cname = str_at(c, "/name", &pod.owner);
        let what = format!("{}: container `{cname}`", pod.owner);
        str_at(c, "/image", &what);
        for m in array(c, "/volumeMounts") {
            let n = str_at(m, "/name", &what);
            assert!(
                volumes.contains(&n),
                "{what}: mounts `{n}`, which is not a volume"
            );
            mounted.insert(n);
            if let Some(sub) = m.get("subPath").and_then(Value::as_str) {
                assert!(
                    v.volume_data(pod, pod.volume(n)).contains_key(sub),
                    "{what}: subPath `{sub}` is not a key of volume `{n}`"
                );
            }
        }
        for e in array(c, "/env") {
            let (r, reference) = match e.get("valueFrom") {
                None => continue,
                Some(from) => from
                    .as_object()
                    .and_then(|o| o.iter().next())
                    .expect("valueFrom names its source"),
            };
            let n = str_at(reference, "/name", &what);
            let k = str_at(reference, "/key", &what);
            let data = match r.as_str() {
                "secretKeyRef" => v.secrets.get(n).map(|(_, d)| d),
                "configMapKeyRef" => v.configmaps.get(n),
                _ => panic!("{what}: env from `{r}`: not expected here"),
            };
            let data =
                data.unwrap_or_else(|| panic!("{what}: {r} names `{n}`, which nothing creates"));
            assert!(data.contains_key(k), "{what}: `{n}` has no key `{k}`");
        }
        for p in array(c, "/ports") {
            if let Some(n) = p.get("name").and_then(Value::as_str) {
                assert!(
                    port_names.insert(n.to_owned()),
                    "{what}: port name `{n}` repeats in the pod"
                );
            }
        }
        for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
            if let Some(pr) = c.get(probe) {
                let port = ["/httpGet/port", "/tcpSocket/port", "/grpc/port"]
                    .iter()
                    .find_map(|ptr| pr.pointer(ptr))
                    .unwrap_or_else(|| panic!("{what}: {probe} has no port"));
                assert!(
                    resolve_port(c, port).is_some(),
                    "{what}: {probe} port {port} is not one of the container's ports"
                );
            }
        }
        let sc = c.get("securityContext").unwrap_or(&Value::Null);
        assert!(
            run_as_non_root || sc.get("runAsNonRoot") == Some(&Value::Bool(true)),
            "{what}: not runAsNonRoot"
        );
        assert_eq!(
            sc.get("readOnlyRootFilesystem"),
            Some(&Value::Bool(true)),
            "{what}: root fs writable"
        );
        assert_eq!(
            sc.get("allowPrivilegeEscalation"),
            Some(&Value::Bool(false)),
            "{what}: privilege escalation allowed"
        );
        assert!(
            array(sc, "/capabilities/drop").iter().any(|d| d == "ALL"),
            "{what}: capabilities not dropped"
        );
        for bound in ["requests", "limits"] {
            for r in ["cpu", "memory"] {
                assert!(
                    c.pointer(&format!("/resources/{bound}/{r}")).is_some(),
                    "{what}: no resources.{bound}.{r}"
                );
            }
        }
        assert!(
            pre_stop_seconds(c) < grace,
            "{what}: the preStop wait outlasts terminationGracePeriodSeconds ({grace})"
        );
    }
    for n in &volumes {
        assert!(
            mounted.contains(n),
            "{}: volume `{n}` is mounted by no container",
            pod.owner
        );
    }
}

/// The countersign container of a variant, with its configuration loaded by
/// countersign's own loader from what the pod mounts.
struct Countersign<'a> {
    pod: Pod<'a>,
    container: &'a Value,
    config: Config,
    /// The pod's files, as the container sees them.
    root: tempfile::TempDir,
}

fn countersign<'a>(v: &'a Variant) -> Countersign<'a> {
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

/// The README says how to build the image the manifests use.
#[test]
fn readme_builds_the_image() {
    let readme = read(&k8s_dir().join("README.md"));
    assert!(repo().join("Dockerfile").is_file());
    assert!(
        readme.contains("docker build -t countersign:dev ."),
        "README: how to build countersign:dev"
    );
}
