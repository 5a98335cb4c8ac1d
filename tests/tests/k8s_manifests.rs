//! Our own rules for the Kubernetes manifests (deploy/k8s), checked on what `kubectl kustomize`
//! renders for each overlay: every Deployment has gRPC readiness and liveness probes (distinct),
//! requests and limits on every container, the restricted securityContext, graceful
//! termination, and a NetworkPolicy of its own; in prod, a PodDisruptionBudget and an HPA for it,
//! at least two replicas, and no Secret carrying data. (Schema validity is `.ci/run`'s job,
//! with `kubernetes-validate --strict`.)
//!
//! Needs `kubectl` (for its built-in kustomize) and `python3` with PyYAML; `.ci/run` installs
//! both.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use serde_json::Value;

/// Longest drain a pod may need: preStop sleep + OVATION_SHUTDOWN_GRACE_MS (15 s) must fit in
/// terminationGracePeriodSeconds.
const SHUTDOWN_GRACE_SECS: i64 = 15;

/// The four services; each must have a Deployment in every overlay.
const SERVICES: [&str; 4] = ["catalog", "wallet", "gifting", "payout"];

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// `kubectl kustomize deploy/k8s/overlays/<overlay>`, as JSON documents.
fn render(overlay: &str) -> Vec<Value> {
    let dir = repo_root().join("deploy/k8s/overlays").join(overlay);
    let out = match Command::new("kubectl").arg("kustomize").arg(&dir).output() {
        Ok(out) => out,
        Err(e) => panic!(
            "cannot run `kubectl` ({e}): install it (Debian: `apt-get install -y kubectl`; \
             .ci/run does) to check the Kubernetes manifests"
        ),
    };
    assert!(
        out.status.success(),
        "`kubectl kustomize {}` failed:\n{}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    yaml_to_json(&out.stdout)
}

/// Every non-empty YAML document as JSON, through python3 + PyYAML.
fn yaml_to_json(yaml: &[u8]) -> Vec<Value> {
    const SCRIPT: &str = "import sys, yaml, json; \
        print(json.dumps([d for d in yaml.safe_load_all(sys.stdin) if d]))";
    let mut child = Command::new("python3")
        .args(["-c", SCRIPT])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run python3 ({e}): it converts YAML to JSON here"));
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(yaml)
        .expect("write YAML to python3");
    let out = child.wait_with_output().expect("python3 finishes");
    assert!(
        out.status.success(),
        "python3 could not convert the rendered YAML (is PyYAML installed? \
         `pip install pyyaml`; .ci/run does):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    match serde_json::from_slice(&out.stdout).expect("python3 printed JSON") {
        Value::Array(docs) => docs,
        other => panic!("expected a JSON array of documents, got {other}"),
    }
}

/// Rendered documents, once per overlay for all the tests.
fn rendered(overlay: &'static str) -> &'static [Value] {
    static DEV: OnceLock<Vec<Value>> = OnceLock::new();
    static PROD: OnceLock<Vec<Value>> = OnceLock::new();
    let cell = match overlay {
        "dev" => &DEV,
        "prod" => &PROD,
        other => panic!("no overlay {other}"),
    };
    cell.get_or_init(|| render(overlay))
}

fn kind(doc: &Value) -> &str {
    doc["kind"].as_str().unwrap_or("")
}

fn name(doc: &Value) -> &str {
    doc["metadata"]["name"].as_str().unwrap_or("<unnamed>")
}

fn namespace(doc: &Value) -> &str {
    doc["metadata"]["namespace"].as_str().unwrap_or("default")
}

fn of_kind<'a>(docs: &'a [Value], k: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
    docs.iter().filter(move |d| kind(d) == k)
}

/// Whether a label selector (`matchLabels` only; `matchExpressions` count as not matching)
/// selects pods with these labels. An empty selector selects every pod when `empty_matches`.
fn selects(selector: &Value, labels: &Value, empty_matches: bool) -> bool {
    if selector.get("matchExpressions").is_some() {
        return false;
    }
    let Some(wanted) = selector.get("matchLabels").and_then(Value::as_object) else {
        return empty_matches;
    };
    if wanted.is_empty() {
        return empty_matches;
    }
    wanted.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// Effective value of a securityContext field: the container's, else the pod's.
fn sc<'a>(pod: &'a Value, container: &'a Value, field: &str) -> &'a Value {
    match &container["securityContext"][field] {
        Value::Null => &pod["securityContext"][field],
        v => v,
    }
}

/// The rule violations of one workload's pod template (Deployment or Job), as messages.
fn check_pod_template(what: &str, template: &Value, probes: bool) -> Vec<String> {
    let mut bad = Vec::new();
    let pod = &template["spec"];
    let containers = pod["containers"].as_array().cloned().unwrap_or_default();
    if containers.is_empty() {
        bad.push(format!("{what}: has no containers"));
    }
    for c in &containers {
        let cname = c["name"].as_str().unwrap_or("<unnamed>");
        let at = format!("{what} container {cname}");
        if probes {
            for probe in ["readinessProbe", "livenessProbe"] {
                if !c[probe]["grpc"]["port"].is_number() {
                    bad.push(format!(
                        "{at}: {probe} must be a native gRPC probe (grpc.port set)"
                    ));
                }
            }
            if c["readinessProbe"] == c["livenessProbe"] {
                bad.push(format!(
                    "{at}: readinessProbe and livenessProbe must differ (readiness reacts \
                     fast, liveness slowly)"
                ));
            }
            if c["lifecycle"]["preStop"].is_null() {
                bad.push(format!(
                    "{at}: needs a preStop hook so endpoints update before SIGTERM"
                ));
            }
        }
        for section in ["requests", "limits"] {
            for resource in ["cpu", "memory"] {
                if c["resources"][section][resource].is_null() {
                    bad.push(format!("{at}: resources.{section}.{resource} must be set"));
                }
            }
        }
        if sc(pod, c, "runAsNonRoot") != &Value::Bool(true) {
            bad.push(format!("{at}: securityContext.runAsNonRoot must be true"));
        }
        match sc(pod, c, "runAsUser").as_i64() {
            Some(uid) if uid > 0 => {}
            _ => bad.push(format!(
                "{at}: securityContext.runAsUser must be a numeric non-root user"
            )),
        }
        if c["securityContext"]["readOnlyRootFilesystem"] != Value::Bool(true) {
            bad.push(format!(
                "{at}: securityContext.readOnlyRootFilesystem must be true"
            ));
        }
        if c["securityContext"]["allowPrivilegeEscalation"] != Value::Bool(false) {
            bad.push(format!(
                "{at}: securityContext.allowPrivilegeEscalation must be false"
            ));
        }
        let drops_all = c["securityContext"]["capabilities"]["drop"]
            .as_array()
            .is_some_and(|d| d.iter().any(|x| x == "ALL"));
        if !drops_all {
            bad.push(format!(
                "{at}: securityContext.capabilities.drop must contain ALL"
            ));
        }
        if sc(pod, c, "seccompProfile")["type"] != "RuntimeDefault" {
            bad.push(format!(
                "{at}: securityContext.seccompProfile.type must be RuntimeDefault"
            ));
        }
    }
    bad
}

/// Every rule that holds in every overlay, as violation messages (empty: all good).
fn check_common(docs: &[Value]) -> Vec<String> {
    let mut bad = Vec::new();
    let deployments: Vec<&Value> = of_kind(docs, "Deployment").collect();
    for svc in SERVICES {
        let want = format!("ovation-{svc}");
        if !deployments.iter().any(|d| name(d) == want) {
            bad.push(format!("there is no Deployment {want}"));
        }
        let job = format!("ovation-{svc}-migrate");
        if !of_kind(docs, "Job").any(|j| name(j) == job) {
            bad.push(format!("there is no migration Job {job}"));
        }
    }
    let default_deny = of_kind(docs, "NetworkPolicy").any(|p| {
        selects(&p["spec"]["podSelector"], &Value::Null, true)
            && p["spec"]["ingress"].is_null()
            && p["spec"]["egress"].is_null()
            && p["spec"]["policyTypes"]
                .as_array()
                .is_some_and(|t| t.contains(&"Ingress".into()) && t.contains(&"Egress".into()))
    });
    if !default_deny {
        bad.push(
            "there is no default-deny NetworkPolicy (empty podSelector, Ingress and Egress, \
             no rules)"
                .into(),
        );
    }
    for d in &deployments {
        let what = format!("Deployment {}", name(d));
        let template = &d["spec"]["template"];
        bad.extend(check_pod_template(&what, template, true));
        let grace = template["spec"]["terminationGracePeriodSeconds"]
            .as_i64()
            .unwrap_or(30);
        if grace < SHUTDOWN_GRACE_SECS * 2 {
            bad.push(format!(
                "{what}: terminationGracePeriodSeconds {grace} must be ≥ {} (preStop + the \
                 {SHUTDOWN_GRACE_SECS} s drain, with slack)",
                SHUTDOWN_GRACE_SECS * 2
            ));
        }
        let annotations = &template["metadata"]["annotations"];
        if annotations["prometheus.io/scrape"] != "true"
            || annotations["prometheus.io/port"] != "9090"
        {
            bad.push(format!(
                "{what}: pods need prometheus.io/scrape \"true\" and prometheus.io/port \"9090\""
            ));
        }
        let labels = &template["metadata"]["labels"];
        let own_policy = of_kind(docs, "NetworkPolicy").any(|p| {
            namespace(p) == namespace(d)
                && selects(&p["spec"]["podSelector"], labels, false)
                && p["spec"]["policyTypes"]
                    .as_array()
                    .is_some_and(|t| t.contains(&"Ingress".into()))
        });
        if !own_policy {
            bad.push(format!(
                "{what}: no NetworkPolicy selects its pods by label and governs their ingress \
                 (the namespace-wide default deny does not count)"
            ));
        }
        let headless = of_kind(docs, "Service").any(|s| {
            namespace(s) == namespace(d)
                && s["spec"]["clusterIP"] == "None"
                && selects(
                    &serde_json::json!({"matchLabels": s["spec"]["selector"]}),
                    labels,
                    false,
                )
                && ["grpc", "metrics"].iter().all(|port| {
                    s["spec"]["ports"]
                        .as_array()
                        .is_some_and(|ps| ps.iter().any(|p| p["name"] == *port))
                })
        });
        if !headless {
            bad.push(format!(
                "{what}: needs a headless Service (clusterIP: None) selecting it with ports \
                 named grpc and metrics"
            ));
        }
    }
    for j in of_kind(docs, "Job") {
        bad.extend(check_pod_template(
            &format!("Job {}", name(j)),
            &j["spec"]["template"],
            false,
        ));
    }
    bad
}

/// The rules only prod has, as violation messages.
fn check_prod(docs: &[Value]) -> Vec<String> {
    let mut bad = Vec::new();
    for d in of_kind(docs, "Deployment") {
        let what = format!("Deployment {}", name(d));
        let labels = &d["spec"]["template"]["metadata"]["labels"];
        match d["spec"]["replicas"].as_i64() {
            Some(n) if n >= 2 => {}
            other => bad.push(format!("{what}: prod needs replicas ≥ 2, has {other:?}")),
        }
        let pdb = of_kind(docs, "PodDisruptionBudget").any(|p| {
            namespace(p) == namespace(d)
                && selects(&p["spec"]["selector"], labels, false)
                && p["spec"]["minAvailable"].as_i64().is_some_and(|n| n >= 1)
        });
        if !pdb {
            bad.push(format!(
                "{what}: no PodDisruptionBudget (minAvailable ≥ 1) selects its pods"
            ));
        }
        let hpa = of_kind(docs, "HorizontalPodAutoscaler").any(|h| {
            h["spec"]["scaleTargetRef"]["kind"] == "Deployment"
                && h["spec"]["scaleTargetRef"]["name"] == name(d)
                && h["spec"]["minReplicas"].as_i64().is_some_and(|n| n >= 2)
        });
        if !hpa {
            bad.push(format!(
                "{what}: no HorizontalPodAutoscaler (minReplicas ≥ 2) targets it"
            ));
        }
        let spread = d["spec"]["template"]["spec"]["topologySpreadConstraints"]
            .as_array()
            .map(|cs| {
                cs.iter()
                    .filter_map(|c| c["topologyKey"].as_str())
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default();
        for key in ["kubernetes.io/hostname", "topology.kubernetes.io/zone"] {
            if !spread.contains(&key) {
                bad.push(format!("{what}: needs a topologySpreadConstraint on {key}"));
            }
        }
    }
    for s in of_kind(docs, "Secret") {
        for field in ["data", "stringData"] {
            if s[field].as_object().is_some_and(|m| !m.is_empty()) {
                bad.push(format!(
                    "Secret {}: prod must not carry secret values ({field} is set); create \
                     it outside the repository",
                    name(s)
                ));
            }
        }
    }
    bad
}

fn assert_clean(overlay: &str, bad: Vec<String>) {
    assert!(
        bad.is_empty(),
        "deploy/k8s/overlays/{overlay} breaks {} rule(s):\n  - {}",
        bad.len(),
        bad.join("\n  - ")
    );
}

#[test]
fn dev_overlay_follows_the_rules() {
    assert_clean("dev", check_common(rendered("dev")));
}

#[test]
fn prod_overlay_follows_the_rules() {
    let docs = rendered("prod");
    let mut bad = check_common(docs);
    bad.extend(check_prod(docs));
    assert_clean("prod", bad);
}

#[test]
fn dev_runs_one_replica_and_its_own_postgres() {
    let docs = rendered("dev");
    for d in of_kind(docs, "Deployment") {
        assert_eq!(
            d["spec"]["replicas"].as_i64(),
            Some(1),
            "dev Deployment {} should run one replica",
            name(d)
        );
    }
    assert!(
        of_kind(docs, "StatefulSet").any(|s| name(s) == "postgres"),
        "dev should bring an in-cluster PostgreSQL StatefulSet named postgres"
    );
}

/// The checker itself: a Deployment stripped of what the rules demand is reported on each
/// count, so a green run means the rules looked.
#[test]
fn the_rules_catch_a_broken_deployment() {
    let mut docs = rendered("prod").to_vec();
    let d = docs
        .iter_mut()
        .find(|d| kind(d) == "Deployment" && name(d) == "ovation-wallet")
        .expect("prod has ovation-wallet");
    d["spec"]["replicas"] = 1.into();
    d["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/name"] = "renamed".into();
    let c = &mut d["spec"]["template"]["spec"]["containers"][0];
    c.as_object_mut()
        .expect("container")
        .remove("livenessProbe");
    c["resources"]["limits"] = Value::Null;
    c["securityContext"]["readOnlyRootFilesystem"] = false.into();
    c["securityContext"]["capabilities"]["drop"] = serde_json::json!([]);
    docs.push(serde_json::json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "leaked", "namespace": "ovation"},
        "data": {"password": "aHVudGVyMg=="}
    }));
    let mut bad = check_common(&docs);
    bad.extend(check_prod(&docs));
    let report = bad.join("\n");
    for expected in [
        "livenessProbe must be a native gRPC probe",
        "resources.limits.cpu must be set",
        "readOnlyRootFilesystem must be true",
        "capabilities.drop must contain ALL",
        "no NetworkPolicy selects its pods",
        "no PodDisruptionBudget",
        "replicas ≥ 2",
        "Secret leaked: prod must not carry secret values",
    ] {
        assert!(
            report.contains(expected),
            "the rules should report {expected:?} for the broken wallet; they reported:\n{report}"
        );
    }
}
