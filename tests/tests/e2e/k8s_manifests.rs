//! Our own rules for the Kubernetes manifests (deploy/k8s), checked on what `kubectl kustomize`
//! renders for each overlay: every Deployment has gRPC readiness and liveness probes (distinct)
//! on its plaintext probe port (never the gRPC port, which may speak TLS; never exposed by a
//! Service), requests and limits on every container, the restricted securityContext, graceful
//! termination, and a NetworkPolicy of its own; every `*_FILE` setting names a mounted file,
//! and TLS settings come in working combinations; in prod, a PodDisruptionBudget and an HPA,
//! at least two replicas, database egress, and no Secret carrying data. The example with every
//! optional component (deploy/k8s/examples/prod-with-components) follows the prod rules and
//! really turns on TLS and the ServiceMonitor. A documentation address range (the prod egress
//! placeholder) may appear in one file only. (Schema validity is `.ci/run`'s job, with
//! `kubernetes-validate --strict`.)
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

/// The one file that may hold a documentation address range (RFC 5737 / RFC 3849), and the
/// placeholder it ships with (deploy/k8s/README.md, "Production").
const EGRESS_PLACEHOLDER_FILE: &str = "deploy/k8s/overlays/prod/postgres-egress.yaml";
const EGRESS_PLACEHOLDER: &str = "192.0.2.0/24";
/// Address prefixes reserved for documentation: TEST-NET-1/2/3 and IPv6 2001:db8::/32.
const DOCUMENTATION_RANGES: [&str; 4] = ["192.0.2.", "198.51.100.", "203.0.113.", "2001:db8:"];

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// `kubectl kustomize deploy/k8s/<dir>`, as JSON documents.
fn render(dir: &str) -> Vec<Value> {
    let dir = repo_root().join("deploy/k8s").join(dir);
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

/// Where the example with every optional component lives, under deploy/k8s.
const COMPONENTS_EXAMPLE: &str = "examples/prod-with-components";

/// Rendered documents, once per overlay for all the tests: "dev", "prod", or "components"
/// (the example with every component).
fn rendered(overlay: &'static str) -> &'static [Value] {
    static DEV: OnceLock<Vec<Value>> = OnceLock::new();
    static PROD: OnceLock<Vec<Value>> = OnceLock::new();
    static COMPONENTS: OnceLock<Vec<Value>> = OnceLock::new();
    let (cell, dir) = match overlay {
        "dev" => (&DEV, "overlays/dev"),
        "prod" => (&PROD, "overlays/prod"),
        "components" => (&COMPONENTS, COMPONENTS_EXAMPLE),
        other => panic!("no overlay {other}"),
    };
    cell.get_or_init(|| render(dir))
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

/// The container's port named `port_name`, if it has one.
fn container_port(container: &Value, port_name: &str) -> Option<i64> {
    container["ports"]
        .as_array()?
        .iter()
        .find(|p| p["name"] == port_name)?["containerPort"]
        .as_i64()
}

/// The settings a container gets: its envFrom ConfigMaps' data, then its literal `env`
/// values (which win, as in Kubernetes). Values from Secrets are not included.
fn container_env(docs: &[Value], ns: &str, container: &Value) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = Vec::new();
    let mut set = |k: &str, v: &str| {
        env.retain(|(key, _)| key != k);
        env.push((k.to_string(), v.to_string()));
    };
    for from in container["envFrom"].as_array().into_iter().flatten() {
        let Some(cm_name) = from["configMapRef"]["name"].as_str() else {
            continue;
        };
        let cm = of_kind(docs, "ConfigMap").find(|c| name(c) == cm_name && namespace(c) == ns);
        if let Some(data) = cm.and_then(|c| c["data"].as_object()) {
            for (k, v) in data {
                set(k, v.as_str().unwrap_or_default());
            }
        }
    }
    for e in container["env"].as_array().into_iter().flatten() {
        if let (Some(k), Some(v)) = (e["name"].as_str(), e["value"].as_str()) {
            set(k, v);
        }
    }
    env
}

fn env_get<'a>(env: &'a [(String, String)], key: &str) -> Option<&'a str> {
    env.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

/// The rule violations of one container's settings: every `OVATION_*_FILE` names a file under
/// one of its volume mounts, and TLS settings come in combinations that start.
fn check_settings(
    at: &str,
    pod: &Value,
    container: &Value,
    env: &[(String, String)],
) -> Vec<String> {
    let mut bad = Vec::new();
    let mounts: Vec<&str> = container["volumeMounts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|m| {
            pod["volumes"]
                .as_array()
                .is_some_and(|vs| vs.iter().any(|v| v["name"] == m["name"]))
        })
        .filter_map(|m| m["mountPath"].as_str())
        .collect();
    for (key, value) in env {
        if key.starts_with("OVATION_") && key.ends_with("_FILE") {
            let mounted = mounts.iter().any(|m| {
                value
                    .strip_prefix(m.trim_end_matches('/'))
                    .is_some_and(|rest| rest.starts_with('/') && rest.len() > 1)
            });
            if !mounted {
                bad.push(format!(
                    "{at}: {key}={value} is not under any of its volume mounts {mounts:?}"
                ));
            }
        }
    }
    let cert = env_get(env, "OVATION_TLS_CERT_FILE").is_some();
    let key = env_get(env, "OVATION_TLS_KEY_FILE").is_some();
    if cert != key {
        bad.push(format!(
            "{at}: OVATION_TLS_CERT_FILE and OVATION_TLS_KEY_FILE must be set together"
        ));
    }
    if env_get(env, "OVATION_TLS_CLIENT_CA_FILE").is_some() && !cert {
        bad.push(format!(
            "{at}: OVATION_TLS_CLIENT_CA_FILE (mTLS) needs OVATION_TLS_CERT_FILE and \
             OVATION_TLS_KEY_FILE"
        ));
    }
    for peer in ["CATALOG", "WALLET", "PAYOUT"] {
        let Some(url) = env_get(env, &format!("OVATION_{peer}_URL")) else {
            continue;
        };
        let ca = env_get(env, &format!("OVATION_{peer}_TLS_CA_FILE")).is_some();
        if url.starts_with("https://") != ca {
            bad.push(format!(
                "{at}: OVATION_{peer}_URL={url} and OVATION_{peer}_TLS_CA_FILE disagree (https \
                 needs the CA file, and the CA file needs https)"
            ));
        }
    }
    bad
}

/// Effective value of a securityContext field: the container's, else the pod's.
fn sc<'a>(pod: &'a Value, container: &'a Value, field: &str) -> &'a Value {
    match &container["securityContext"][field] {
        Value::Null => &pod["securityContext"][field],
        v => v,
    }
}

/// The rule violations of one workload's pod template (Deployment or Job), as messages.
fn check_pod_template(
    docs: &[Value],
    ns: &str,
    what: &str,
    template: &Value,
    probes: bool,
) -> Vec<String> {
    let mut bad = Vec::new();
    let pod = &template["spec"];
    let containers = pod["containers"].as_array().cloned().unwrap_or_default();
    if containers.is_empty() {
        bad.push(format!("{what}: has no containers"));
    }
    for c in &containers {
        let cname = c["name"].as_str().unwrap_or("<unnamed>");
        let at = format!("{what} container {cname}");
        let env = container_env(docs, ns, c);
        bad.extend(check_settings(&at, pod, c, &env));
        if probes {
            let probe_port = container_port(c, "probe");
            let grpc_port = container_port(c, "grpc");
            let shown = |p: Option<i64>| p.map_or_else(|| "none".to_string(), |p| p.to_string());
            if probe_port.is_none() {
                bad.push(format!(
                    "{at}: needs a container port named probe (the plaintext health port)"
                ));
            }
            let probe_addr = env_get(&env, "OVATION_PROBE_ADDR");
            let probe_addr_port = probe_addr
                .and_then(|a| a.rsplit(':').next())
                .and_then(|p| p.parse::<i64>().ok());
            if probe_port.is_some() && probe_addr_port != probe_port {
                bad.push(format!(
                    "{at}: OVATION_PROBE_ADDR ({}) must listen on the container port named \
                     probe ({})",
                    probe_addr.unwrap_or("unset"),
                    shown(probe_port)
                ));
            }
            for probe in ["readinessProbe", "livenessProbe"] {
                let port = c[probe]["grpc"]["port"].as_i64();
                if port.is_none() {
                    bad.push(format!(
                        "{at}: {probe} must be a native gRPC probe (grpc.port set)"
                    ));
                } else if port == grpc_port || port != probe_port {
                    bad.push(format!(
                        "{at}: {probe} must target the probe port ({}), not the gRPC port \
                         ({}): the kubelet cannot speak TLS; it targets {}",
                        shown(probe_port),
                        shown(grpc_port),
                        shown(port)
                    ));
                }
            }
            if c["readinessProbe"]["grpc"]["service"] != ""
                || c["livenessProbe"]["grpc"]["service"] != "ovation.liveness"
            {
                bad.push(format!(
                    "{at}: readiness must ask for service \"\" (follows the database) and \
                     liveness for \"ovation.liveness\""
                ));
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
        bad.extend(check_pod_template(
            docs,
            namespace(d),
            &what,
            template,
            true,
        ));
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
        // The probe port is for the kubelet alone: no Service may lead to it.
        let probe_ports: Vec<i64> = template["spec"]["containers"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| container_port(c, "probe"))
            .collect();
        for s in of_kind(docs, "Service").filter(|s| {
            namespace(s) == namespace(d)
                && selects(
                    &serde_json::json!({"matchLabels": s["spec"]["selector"]}),
                    labels,
                    false,
                )
        }) {
            for p in s["spec"]["ports"].as_array().into_iter().flatten() {
                let target = p.get("targetPort").unwrap_or(&p["port"]);
                if p["name"] == "probe"
                    || target == "probe"
                    || target.as_i64().is_some_and(|t| probe_ports.contains(&t))
                {
                    bad.push(format!(
                        "Service {}: exposes the probe port of {what} (plaintext and \
                         unauthenticated: for the kubelet only)",
                        name(s)
                    ));
                }
            }
        }
    }
    for j in of_kind(docs, "Job") {
        bad.extend(check_pod_template(
            docs,
            namespace(j),
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
    // The external databases: allow-postgres must gain an ipBlock on 5432
    // (overlays/prod/postgres-egress.yaml).
    let db_egress = of_kind(docs, "NetworkPolicy")
        .filter(|p| name(p) == "allow-postgres")
        .flat_map(|p| p["spec"]["egress"].as_array().cloned().unwrap_or_default())
        .any(|rule| {
            rule["to"]
                .as_array()
                .is_some_and(|to| to.iter().any(|t| t["ipBlock"]["cidr"].is_string()))
                && rule["ports"]
                    .as_array()
                    .is_some_and(|ps| ps.iter().any(|p| p["port"] == 5432))
        });
    if !db_egress {
        bad.push(
            "NetworkPolicy allow-postgres: prod needs an ipBlock egress rule on 5432 for the \
             external databases (overlays/prod/postgres-egress.yaml)"
                .into(),
        );
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

/// What the optional components must have done (on top of the prod rules), as violation
/// messages: components/tls (and mtls) and components/servicemonitor.
fn check_components(docs: &[Value]) -> Vec<String> {
    let mut bad = Vec::new();
    let workloads = of_kind(docs, "Deployment").chain(of_kind(docs, "Job"));
    for w in workloads {
        let what = format!("{} {}", kind(w), name(w));
        let pod = &w["spec"]["template"]["spec"];
        let tls_volume = pod["volumes"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|v| v["secret"]["secretName"] == "ovation-tls");
        let Some(tls_volume) = tls_volume else {
            bad.push(format!(
                "{what}: components/tls must mount the Secret ovation-tls"
            ));
            continue;
        };
        for c in pod["containers"].as_array().into_iter().flatten() {
            let at = format!("{what} container {}", c["name"].as_str().unwrap_or("?"));
            let mounts_it = c["volumeMounts"]
                .as_array()
                .is_some_and(|ms| ms.iter().any(|m| m["name"] == tls_volume["name"]));
            if !mounts_it {
                bad.push(format!("{at}: does not mount the ovation-tls volume"));
            }
            let env = container_env(docs, namespace(w), c);
            for key in [
                "OVATION_TLS_CERT_FILE",
                "OVATION_TLS_KEY_FILE",
                "OVATION_TLS_CLIENT_CA_FILE",
            ] {
                if env_get(&env, key).is_none() {
                    bad.push(format!("{at}: components/tls and mtls should set {key}"));
                }
            }
            for peer in ["CATALOG", "WALLET", "PAYOUT"] {
                let Some(url) = env_get(&env, &format!("OVATION_{peer}_URL")) else {
                    continue;
                };
                if !url.starts_with("https://") {
                    bad.push(format!(
                        "{at}: with components/tls, OVATION_{peer}_URL must be https, is {url}"
                    ));
                }
                for key in ["CERT", "KEY"] {
                    let key = format!("OVATION_{peer}_TLS_{key}_FILE");
                    if env_get(&env, &key).is_none() {
                        bad.push(format!("{at}: components/mtls should set {key}"));
                    }
                }
            }
        }
    }
    let services: Vec<&Value> = of_kind(docs, "Service")
        .filter(|s| {
            SERVICES
                .iter()
                .any(|svc| name(s) == format!("ovation-{svc}"))
        })
        .collect();
    for s in &services {
        let h2c = s["spec"]["ports"]
            .as_array()
            .is_some_and(|ps| ps.iter().any(|p| p["appProtocol"] == "kubernetes.io/h2c"));
        if h2c {
            bad.push(format!(
                "Service {}: with TLS on, the gRPC port must not claim appProtocol \
                 kubernetes.io/h2c (cleartext)",
                name(s)
            ));
        }
    }
    let monitors: Vec<&Value> = of_kind(docs, "ServiceMonitor").collect();
    if monitors.is_empty() {
        bad.push("components/servicemonitor should add a ServiceMonitor".into());
    }
    for svc in SERVICES {
        let want = format!("ovation-{svc}");
        let Some(s) = services.iter().find(|s| name(s) == want) else {
            bad.push(format!("there is no Service {want}"));
            continue;
        };
        let scraped = monitors.iter().any(|m| {
            namespace(m) == namespace(s)
                && selects_with_expressions(&m["spec"]["selector"], &s["metadata"]["labels"])
                && m["spec"]["endpoints"].as_array().is_some_and(|es| {
                    es.iter().any(|e| {
                        s["spec"]["ports"]
                            .as_array()
                            .is_some_and(|ps| ps.iter().any(|p| p["name"] == e["port"]))
                            && e["port"] == "metrics"
                    })
                })
        });
        if !scraped {
            bad.push(format!(
                "Service {want}: no ServiceMonitor in its namespace selects it on its port \
                 named metrics"
            ));
        }
    }
    bad
}

/// Whether a label selector with `matchLabels` and `In`/`NotIn`/`Exists`/`DoesNotExist`
/// `matchExpressions` selects these labels (an empty selector selects nothing here).
fn selects_with_expressions(selector: &Value, labels: &Value) -> bool {
    let wanted = selector["matchLabels"].as_object();
    let expressions = selector["matchExpressions"].as_array();
    if wanted.is_none_or(|w| w.is_empty()) && expressions.is_none_or(|e| e.is_empty()) {
        return false;
    }
    let labels_ok = wanted.is_none_or(|w| w.iter().all(|(k, v)| labels.get(k) == Some(v)));
    let expressions_ok = expressions.into_iter().flatten().all(|e| {
        let value = e["key"].as_str().and_then(|k| labels.get(k));
        let listed = |v: &Value| {
            e["values"]
                .as_array()
                .is_some_and(|vs| vs.iter().any(|x| x == v))
        };
        match e["operator"].as_str() {
            Some("In") => value.is_some_and(listed),
            Some("NotIn") => !value.is_some_and(listed),
            Some("Exists") => value.is_some(),
            Some("DoesNotExist") => value.is_none(),
            _ => false,
        }
    });
    labels_ok && expressions_ok
}

/// Every file under `dir`, recursively, as paths relative to the repository root.
fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("read {}: {e}", dir.display()));
    for entry in entries {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            files_under(&path, out);
        } else {
            out.push(path);
        }
    }
}

fn assert_clean(overlay: &str, bad: Vec<String>) {
    assert!(
        bad.is_empty(),
        "deploy/k8s {overlay} breaks {} rule(s):\n  - {}",
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

/// The example with every optional component (what `components:` in an overlay gives) still
/// follows the prod rules, and the components did their job.
#[test]
fn components_example_follows_the_rules() {
    let docs = rendered("components");
    let mut bad = check_common(docs);
    bad.extend(check_prod(docs));
    bad.extend(check_components(docs));
    assert_clean(COMPONENTS_EXAMPLE, bad);
}

/// The prod egress placeholder is the one documentation range in the manifests: it lives in
/// overlays/prod/postgres-egress.yaml only, as the documented 192.0.2.0/24. Any other
/// documentation address (TEST-NET-1/2/3, 2001:db8::/32) in a manifest, a patch or a settings
/// file under deploy/ is a placeholder nobody is told to replace. Comments and Markdown may
/// mention it.
#[test]
fn the_egress_placeholder_is_in_one_documented_place() {
    let root = repo_root();
    let mut files = Vec::new();
    files_under(&root.join("deploy"), &mut files);
    let mut bad = Vec::new();
    for path in files {
        let rel = path
            .strip_prefix(&root)
            .expect("under the repository")
            .to_string_lossy()
            .replace('\\', "/");
        if rel.ends_with(".md") {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        for (i, line) in text.lines().enumerate() {
            // YAML, .env and Dockerfile comments: '#' starting a line or after a blank.
            let content = match line.find(" #") {
                _ if line.trim_start().starts_with('#') => "",
                Some(at) => &line[..at],
                None => line,
            };
            let lower = content.to_ascii_lowercase();
            if !DOCUMENTATION_RANGES.iter().any(|r| lower.contains(r)) {
                continue;
            }
            let documented = rel == EGRESS_PLACEHOLDER_FILE
                && lower.trim() == format!("cidr: {EGRESS_PLACEHOLDER}");
            if !documented {
                bad.push(format!("{rel}:{}: {}", i + 1, line.trim()));
            }
        }
    }
    assert!(
        bad.is_empty(),
        "documentation address ranges are placeholders; the only one allowed is `cidr: \
         {EGRESS_PLACEHOLDER}` in {EGRESS_PLACEHOLDER_FILE} (documented in deploy/k8s/README.md). \
         Found:\n  {}",
        bad.join("\n  ")
    );
    // Rendered, it lands where the guide says: prod's allow-postgres, no other object.
    for overlay in ["dev", "prod", "components"] {
        for d in rendered(overlay) {
            let text = d.to_string().to_ascii_lowercase();
            if DOCUMENTATION_RANGES.iter().any(|r| text.contains(r)) {
                assert!(
                    overlay != "dev" && kind(d) == "NetworkPolicy" && name(d) == "allow-postgres",
                    "{overlay}: {} {} holds a documentation address range; only prod's \
                     NetworkPolicy allow-postgres may (the egress placeholder)",
                    kind(d),
                    name(d)
                );
            }
        }
    }
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

/// Production never runs the sandbox: the wallet's rendered settings name no sandbox
/// provider and carry no OVATION_ALLOW_SANDBOX (a wallet configured with the sandbox without
/// it refuses to start); the dev overlay is where the sandbox is allowed.
#[test]
fn prod_runs_no_sandbox_and_dev_allows_it() {
    for (overlay, sandbox) in [("prod", false), ("components", false), ("dev", true)] {
        let docs = rendered(overlay);
        for doc in of_kind(docs, "Deployment").chain(of_kind(docs, "Job")) {
            for container in doc["spec"]["template"]["spec"]["containers"]
                .as_array()
                .into_iter()
                .flatten()
            {
                let env = container_env(docs, namespace(doc), container);
                let allowed = env_get(&env, "OVATION_ALLOW_SANDBOX");
                let providers = env_get(&env, "OVATION_PAYMENT_PROVIDERS");
                if !sandbox {
                    assert_eq!(
                        allowed,
                        None,
                        "{overlay}: {} sets OVATION_ALLOW_SANDBOX",
                        name(doc)
                    );
                    assert!(
                        !providers.is_some_and(|p| p.split(',').any(|p| p.trim() == "sandbox")),
                        "{overlay}: {} pays through the sandbox: {providers:?}",
                        name(doc)
                    );
                } else if name(doc) == "ovation-wallet" {
                    assert_eq!(
                        allowed,
                        Some("true"),
                        "{overlay}: the dev wallet allows the sandbox"
                    );
                    assert_eq!(providers, Some("sandbox"));
                }
            }
        }
        if overlay == "prod" {
            let wallet = of_kind(docs, "Deployment")
                .find(|d| name(d) == "ovation-wallet")
                .expect("prod has ovation-wallet");
            let env = container_env(
                docs,
                namespace(wallet),
                &wallet["spec"]["template"]["spec"]["containers"][0],
            );
            assert_eq!(env_get(&env, "OVATION_PAYMENT_PROVIDERS"), Some("stripe"));
            assert!(env_get(&env, "OVATION_WALLET_WEBHOOK_ADDR").is_some());
            let webhooks = of_kind(docs, "Service")
                .find(|s| name(s) == "ovation-wallet-webhooks")
                .expect("the wallet's webhook Service");
            assert_eq!(webhooks["spec"]["ports"][0]["targetPort"], "webhooks");
        }
    }
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
    // Readiness on the gRPC port, which the kubelet cannot reach once it speaks TLS.
    c["readinessProbe"]["grpc"]["port"] = 50051.into();
    c["resources"]["limits"] = Value::Null;
    c["securityContext"]["readOnlyRootFilesystem"] = false.into();
    c["securityContext"]["capabilities"]["drop"] = serde_json::json!([]);
    // A Service leading to catalog's probe port.
    let svc = docs
        .iter_mut()
        .find(|s| kind(s) == "Service" && name(s) == "ovation-catalog")
        .expect("prod has the Service ovation-catalog");
    svc["spec"]["ports"]
        .as_array_mut()
        .expect("ports")
        .push(serde_json::json!({"name": "health", "port": 8081, "targetPort": "probe"}));
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
        "readinessProbe must target the probe port",
        "Service ovation-catalog: exposes the probe port",
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

/// The `OVATION_*` variables `ovation-<service>`'s command line takes.
fn settings_taken_by(service: &str) -> Vec<String> {
    use clap::CommandFactory;
    let command = match service {
        "catalog" => ovation_catalog::CatalogArgs::command(),
        "wallet" => ovation_wallet::WalletArgs::command(),
        "gifting" => ovation_gifting::GiftingArgs::command(),
        "payout" => ovation_payout::PayoutArgs::command(),
        other => panic!("unknown service {other}"),
    };
    command
        .get_arguments()
        .filter_map(|a| a.get_env())
        .map(|e| e.to_string_lossy().into_owned())
        .collect()
}

/// The names of every variable a container is given: from ConfigMaps, literal values and
/// Secrets alike.
fn settings_given_to(docs: &[Value], ns: &str, container: &Value) -> Vec<String> {
    let mut names: Vec<String> = container_env(docs, ns, container)
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    names.extend(
        container["env"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| e["name"].as_str().map(str::to_owned)),
    );
    names.sort();
    names.dedup();
    names
}

/// The settings the manifests give each service are settings that service really takes
/// (its command line's `OVATION_*` variables) and are documented in README.md: a typo in a
/// ConfigMap would otherwise be ignored silently by the binary.
#[test]
fn every_setting_in_the_manifests_is_a_real_documented_setting() {
    let readme = std::fs::read_to_string(repo_root().join("README.md")).expect("README.md");
    let mut bad = Vec::new();
    for overlay in ["dev", "prod", "components"] {
        let docs = rendered(overlay);
        for deployment in of_kind(docs, "Deployment") {
            let Some(service) = name(deployment).strip_prefix("ovation-") else {
                continue;
            };
            if !SERVICES.contains(&service) {
                continue;
            }
            let takes = settings_taken_by(service);
            let ns = namespace(deployment);
            let containers = deployment["spec"]["template"]["spec"]["containers"]
                .as_array()
                .into_iter()
                .flatten();
            for container in containers {
                let names = settings_given_to(docs, ns, container);
                for setting in names.iter().filter(|n| n.starts_with("OVATION_")) {
                    if !takes.contains(setting) {
                        bad.push(format!(
                            "{overlay}: {} sets {setting}, which ovation-{service} does not take",
                            name(deployment)
                        ));
                    }
                    if !readme.contains(&format!("`{setting}`")) {
                        bad.push(format!(
                            "{overlay}: {setting} ({}) is not documented in README.md",
                            name(deployment)
                        ));
                    }
                }
            }
        }
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

/// The image and the manifests agree: every binary a Deployment or Job runs is one the
/// Dockerfile builds and copies into the image, and every container port is one it exposes.
/// (No container engine here: the image itself is never built in CI.)
#[test]
fn the_manifests_run_only_what_the_image_holds() {
    let dockerfile =
        std::fs::read_to_string(repo_root().join("deploy/Dockerfile")).expect("deploy/Dockerfile");
    let built: Vec<&str> = dockerfile
        .split_whitespace()
        .filter_map(|word| word.strip_prefix("target/release/"))
        .collect();
    let exposed: Vec<i64> = dockerfile
        .lines()
        .filter_map(|line| line.strip_prefix("EXPOSE "))
        .flat_map(|ports| ports.split_whitespace())
        .map(|port| port.parse().expect("EXPOSE lists port numbers"))
        .collect();
    assert!(
        built.len() >= 5,
        "the Dockerfile copies every binary: {built:?}"
    );
    let mut bad = Vec::new();
    for overlay in ["dev", "prod", "components"] {
        let docs = rendered(overlay);
        for doc in docs
            .iter()
            .filter(|d| matches!(kind(d), "Deployment" | "Job"))
        {
            if name(doc).contains("postgres") {
                continue; // the dev overlay's PostgreSQL runs its own image
            }
            let containers = doc["spec"]["template"]["spec"]["containers"]
                .as_array()
                .into_iter()
                .flatten();
            for container in containers {
                let program = container["command"][0].as_str().unwrap_or_default();
                match program.strip_prefix("/usr/local/bin/") {
                    Some(binary) if built.contains(&binary) => {}
                    _ => bad.push(format!(
                        "{overlay}: {} {} runs {program:?}, which the image does not hold",
                        kind(doc),
                        name(doc)
                    )),
                }
                for port in container["ports"].as_array().into_iter().flatten() {
                    let number = port["containerPort"].as_i64().unwrap_or_default();
                    if !exposed.contains(&number) {
                        bad.push(format!(
                            "{overlay}: {} uses port {number}, which the Dockerfile does not EXPOSE",
                            name(doc)
                        ));
                    }
                }
            }
        }
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

/// The ConfigMaps mirror the configuration surface: every setting a service's binary takes
/// is given to its Deployment in the base (with README's default, so an operator sees and
/// edits it in one place), except the few listed here, each for a stated reason.
#[test]
fn the_base_sets_every_setting_a_service_takes() {
    /// Settings deliberately absent from the base, and why.
    const NOT_IN_BASE: [(&str, &str); 10] = [
        (
            "OVATION_MIGRATE_ONLY",
            "the migration Job passes --migrate-only",
        ),
        (
            "OVATION_AUTH_AUDIENCE",
            "the identity provider's; the prod overlay sets it (auth.env), dev tokens carry none",
        ),
        ("OVATION_INSECURE_NO_AUTH", "never in a cluster"),
        (
            "OVATION_SERVICE_TOKEN_FILE",
            "the alternative to OVATION_SERVICE_KEYS_FILE, which the base uses",
        ),
        ("OVATION_TLS_CLIENT_CA_FILE", "set by the mtls component"),
        (
            "OVATION_STRIPE_RETURN_URL",
            "optional: only for redirect-based 3-D Secure, the platform's own page",
        ),
        // The base sells coins by card (stripe); a platform selling in its iOS app adds
        // app_store to OVATION_PAYMENT_PROVIDERS with these (README, "Payment providers").
        (
            "OVATION_APP_STORE_ROOT_CERTS_FILE",
            "only with the app_store provider, which the base does not run",
        ),
        (
            "OVATION_APP_STORE_BUNDLE_ID",
            "only with the app_store provider, which the base does not run",
        ),
        (
            "OVATION_APP_STORE_ENVIRONMENT",
            "only with the app_store provider, which the base does not run",
        ),
        (
            "OVATION_APP_STORE_PRODUCTS",
            "only with the app_store provider, which the base does not run",
        ),
    ];
    let docs = rendered("dev");
    let mut missing = Vec::new();
    for service in SERVICES {
        let deployment = of_kind(docs, "Deployment")
            .find(|d| name(d) == format!("ovation-{service}"))
            .unwrap_or_else(|| panic!("no Deployment ovation-{service}"));
        let container = &deployment["spec"]["template"]["spec"]["containers"][0];
        let given = settings_given_to(docs, namespace(deployment), container);
        for env in settings_taken_by(service) {
            let tls = env.starts_with("OVATION_TLS_") || env.contains("_TLS_");
            let excused = NOT_IN_BASE.iter().any(|(name, _)| *name == env)
                // TLS files come from the tls/mtls components, not the plaintext base.
                || tls;
            if !excused && !given.contains(&env) {
                missing.push(format!("ovation-{service}: {env}"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "settings the base does not set (add them to deploy/k8s/base/config, or to NOT_IN_BASE with a reason):\n{}",
        missing.join("\n")
    );
}

/// The alert rules (components/servicemonitor) ask only for metrics the services export: a
/// renamed metric would otherwise leave an alert that can never fire.
#[test]
fn alert_rules_use_only_metrics_that_exist() {
    // Every exported name; ovation-metrics' own test checks each is in the exposition.
    let exported = ovation_metrics::names::ALL;
    let docs = rendered("components");
    let rules: Vec<&Value> = of_kind(docs, "PrometheusRule")
        .flat_map(|r| r["spec"]["groups"].as_array().into_iter().flatten())
        .flat_map(|g| g["rules"].as_array().into_iter().flatten())
        .collect();
    assert!(rules.len() >= 5, "the alert rules are rendered: {rules:?}");
    for rule in rules {
        let alert = rule["alert"].as_str().unwrap_or("?");
        let expr = rule["expr"].as_str().unwrap_or_default();
        let used: Vec<&str> = expr
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|word| word.starts_with("ovation_"))
            .collect();
        assert!(!used.is_empty(), "{alert} uses no Ovation metric: {expr}");
        for metric in used {
            assert!(
                exported.contains(&metric),
                "{alert} uses {metric}, which no service exports"
            );
        }
        assert!(
            rule["labels"]["severity"].is_string() && rule["annotations"]["summary"].is_string(),
            "{alert} needs a severity and a summary"
        );
    }
}

/// The ConfigMap `name`'s data in the overlay `docs`.
fn config_map<'a>(docs: &'a [Value], config: &str) -> &'a serde_json::Map<String, Value> {
    of_kind(docs, "ConfigMap")
        .find(|c| name(c).starts_with(config))
        .and_then(|c| c["data"].as_object())
        .unwrap_or_else(|| panic!("no ConfigMap {config}"))
}

/// Payout's provider (issue 15): prod pays by Stripe Connect and never allows a sandbox;
/// dev runs the sandbox, allowed; both receive Stripe's webhooks through the Service
/// `ovation-payout-webhooks`.
#[test]
fn prod_pays_creators_by_stripe_connect_and_never_allows_a_sandbox() {
    let prod = config_map(rendered("prod"), "ovation-payout-config");
    assert_eq!(prod["OVATION_PAYOUT_PROVIDER"], "stripe_connect");
    assert!(!prod.contains_key("OVATION_ALLOW_SANDBOX"), "{prod:?}");
    for c in of_kind(rendered("prod"), "ConfigMap") {
        let data = c["data"].as_object();
        assert!(
            data.is_none_or(|d| !d.contains_key("OVATION_ALLOW_SANDBOX")),
            "{} allows a sandbox in prod",
            name(c)
        );
    }
    let dev = config_map(rendered("dev"), "ovation-payout-config");
    assert_eq!(dev["OVATION_ALLOW_SANDBOX"], "true");
    for overlay in ["dev", "prod"] {
        let service = of_kind(rendered(overlay), "Service")
            .find(|s| name(s) == "ovation-payout-webhooks")
            .expect("payout's webhooks Service");
        assert!(
            service["spec"]["ports"]
                .as_array()
                .is_some_and(|ports| ports
                    .iter()
                    .any(|p| p["name"] == "webhooks" && p["port"] == 8090)),
            "{overlay}: {service}"
        );
    }
}
