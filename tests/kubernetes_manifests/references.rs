//! Every manifest parses and every name it uses resolves; every container
//! has the hardening the examples promise.

use std::collections::BTreeSet;

use serde_json::Value;

use crate::VARIANTS;
use crate::k8s_dir;
use crate::variant::{Pod, Variant, pre_stop_seconds, resolve_port};
use crate::yaml::{array, labels_match, read, str_at, yaml_documents};

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
