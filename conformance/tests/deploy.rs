//! deploy/: every manifest validates offline against the Kubernetes schemas
//! (kubernetes-validate, strict), the DaemonSet keeps what docs/kubeadm.md promises (not
//! privileged, only the network capabilities, probes, settings from the ConfigMap and the
//! downward API, RBAC get/list/watch on nodes), and the conflist the init container
//! installs is one the real `fjord` accepts: `fjord-routed install-cni` runs on temp
//! directories, the result is checked byte for byte, and the installed `fjord` runs VERSION,
//! ADD and DEL with it in a throwaway node namespace. Two real `fjord-routed`, confined
//! by `setpriv` to the DaemonSet's capabilities, mesh and program a route.
//!
//! No API server or kubelet runs here: what the cluster itself would do with the manifests
//! is not checked (docs/kubeadm.md says so).

use fjord_conformance::fake_apiserver::{node_json, FakeApiServer};
use fjord_conformance::lab::{spawn_in_netns, stop_child, Lab, LabSpec, RoutedStatus, STOP_GRACE};
use fjord_conformance::store::fjord_dir_allocations;
use fjord_conformance::{
    fjord_bin, fjord_bin_dir, poll_until, result_ipv4, result_ipv6, Netns, PluginCall, Pod, TempDir,
};
use ipnetwork::IpNetwork;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::os::fd::AsFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Kubernetes versions the manifests are checked against: the oldest the guide supports
/// and the newest the validator bundles.
const KUBERNETES_VERSIONS: [&str; 2] = ["1.28.0", "1.37.0"];
const MANIFEST: &str = "fjord.yaml";
/// Files in deploy/ that are not manifests or conflists, each checked elsewhere.
const OTHER_FILES: [&str; 3] = [
    "Containerfile",
    "Containerfile.dockerignore",
    "build-static.sh",
];
const ROUTED_CAPABILITIES: [&str; 3] = ["NET_ADMIN", "NET_BIND_SERVICE", "NET_RAW"];
/// The name the DaemonSet installs the conflist under (routed/src/install.rs says why).
const CONFLIST_NAME: &str = "01-fjord.conflist";
/// The reference plugins the conflists chain after fjord; a kubeadm node has them in
/// /opt/cni/bin, this machine in /usr/lib/cni (containernetworking-plugins).
const CHAINED_PLUGINS: [&str; 2] = ["portmap", "bandwidth"];
const REFERENCE_PLUGIN_DIR: &str = "/usr/lib/cni";

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

/// The venv install-test-deps.sh makes, with kubernetes-validate and PyYAML.
fn venv() -> PathBuf {
    let dir = std::env::var_os("FJORD_TEST_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/opt/fjord-test-venv"));
    assert!(
        dir.join("bin/kubernetes-validate").is_file(),
        "{}/bin/kubernetes-validate is missing: run conformance/scripts/install-test-deps.sh \
         (it makes the venv and installs kubernetes-validate from PyPI)",
        dir.display()
    );
    dir
}

fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

fn text(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Every file in deploy/ by kind; an unknown file fails, so nothing escapes the checks.
fn deploy_files(ext: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(deploy_dir()).expect("deploy/ exists") {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let known = name.ends_with(".yaml") || name.ends_with(".conflist");
        assert!(
            known || OTHER_FILES.contains(&name.as_str()),
            "deploy/{name} is neither a manifest (.yaml) nor a conflist: teach tests/deploy.rs to check it"
        );
        if name.ends_with(ext) {
            found.push(path);
        }
    }
    found.sort();
    found
}

fn validate(path: &Path, version: &str) -> Output {
    run(Command::new(venv().join("bin/kubernetes-validate"))
        .args(["--strict", "--quiet", "-k", version])
        .arg(path))
}

/// The documents of a YAML file as JSON, read by PyYAML from the same venv.
fn yaml_documents(path: &Path) -> Vec<Value> {
    let script = "import json, sys, yaml\n\
                  docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d is not None]\n\
                  json.dump(docs, sys.stdout)";
    let out = run(Command::new(venv().join("bin/python"))
        .args(["-c", script])
        .arg(path));
    assert!(out.status.success(), "{}: {}", path.display(), text(&out));
    serde_json::from_slice(&out.stdout).expect("PyYAML's output is JSON")
}

fn manifest() -> Vec<Value> {
    yaml_documents(&deploy_dir().join(MANIFEST))
}

fn object<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    let found: Vec<&Value> = docs.iter().filter(|d| d["kind"] == kind).collect();
    assert_eq!(found.len(), 1, "{MANIFEST} must hold one {kind}");
    found[0]
}

fn pod_spec(docs: &[Value]) -> &Value {
    &object(docs, "DaemonSet")["spec"]["template"]["spec"]
}

fn container<'a>(spec: &'a Value, list: &str, name: &str) -> &'a Value {
    spec[list]
        .as_array()
        .and_then(|l| l.iter().find(|c| c["name"] == name))
        .unwrap_or_else(|| panic!("no {list} entry named {name}"))
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|l| {
            l.iter()
                .filter_map(|s| s.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

fn env<'a>(container: &'a Value, name: &str) -> &'a Value {
    container["env"]
        .as_array()
        .and_then(|l| l.iter().find(|e| e["name"] == name))
        .unwrap_or_else(|| panic!("{} has no env {name}", container["name"]))
}

fn config_data(docs: &[Value], key: &str) -> String {
    object(docs, "ConfigMap")["data"][key]
        .as_str()
        .unwrap_or_else(|| panic!("the ConfigMap has no key {key}"))
        .to_string()
}

#[test]
fn every_manifest_validates_against_the_kubernetes_schemas() {
    let manifests = deploy_files(".yaml");
    assert!(
        manifests.iter().any(|p| p.ends_with(MANIFEST)),
        "{manifests:?}"
    );
    for path in &manifests {
        for version in KUBERNETES_VERSIONS {
            let out = validate(path, version);
            assert!(
                out.status.success(),
                "{} against Kubernetes {version}: {}",
                path.display(),
                text(&out)
            );
        }
    }
}

#[test]
fn the_validator_catches_a_broken_manifest() {
    // Without this, a validator that accepted anything would make the test above pass.
    let good = std::fs::read_to_string(deploy_dir().join(MANIFEST)).unwrap();
    let dir = TempDir::new("k");
    for (what, broken) in [
        (
            "a wrong type",
            good.replace("hostNetwork: true", "hostNetwork: \"yes\""),
        ),
        (
            "an unknown field",
            good.replace("dnsPolicy:", "dnsPolicyy:"),
        ),
    ] {
        assert_ne!(
            broken, good,
            "{what}: the replacement must change the manifest"
        );
        let path = dir.join("broken.yaml");
        std::fs::write(&path, broken).unwrap();
        let out = validate(&path, KUBERNETES_VERSIONS[1]);
        assert!(!out.status.success(), "{what} passed: {}", text(&out));
    }
}

#[test]
fn containers_are_unprivileged_with_only_the_network_capabilities() {
    let docs = manifest();
    let spec = pod_spec(&docs);
    assert_eq!(spec["hostNetwork"], true);
    assert_eq!(spec["priorityClassName"], "system-node-critical");
    for list in ["initContainers", "containers"] {
        for c in spec[list].as_array().expect("containers") {
            let sc = &c["securityContext"];
            assert_ne!(sc["privileged"], true, "{} is privileged", c["name"]);
            assert_eq!(sc["allowPrivilegeEscalation"], false, "{}", c["name"]);
            assert_eq!(sc["readOnlyRootFilesystem"], true, "{}", c["name"]);
            assert_eq!(
                strings(&sc["capabilities"]["drop"]),
                ["ALL"],
                "{}",
                c["name"]
            );
            assert!(
                c["resources"]["requests"]["cpu"].is_string(),
                "{}",
                c["name"]
            );
            assert!(
                c["resources"]["requests"]["memory"].is_string(),
                "{}",
                c["name"]
            );
        }
    }
    let routed = container(spec, "containers", "fjord-routed");
    let mut added = strings(&routed["securityContext"]["capabilities"]["add"]);
    added.sort();
    assert_eq!(added, ROUTED_CAPABILITIES);
    let install = container(spec, "initContainers", "install-cni");
    assert!(strings(&install["securityContext"]["capabilities"]["add"]).is_empty());
}

#[test]
fn it_tolerates_every_taint_so_it_runs_on_every_node() {
    let docs = manifest();
    let tolerations = pod_spec(&docs)["tolerations"].as_array().unwrap().clone();
    for effect in ["NoSchedule", "NoExecute"] {
        assert!(
            tolerations
                .iter()
                .any(|t| t["effect"] == effect && t["operator"] == "Exists" && t["key"].is_null()),
            "no toleration of every {effect} taint (the control plane's among them)"
        );
    }
}

#[test]
fn probes_ask_the_daemon_on_the_socket_it_serves() {
    let docs = manifest();
    let routed = container(pod_spec(&docs), "containers", "fjord-routed");
    let socket = env(routed, "FJORD_SOCKET")["value"]
        .as_str()
        .unwrap()
        .to_string();
    let image_binary = routed["command"][0].as_str().unwrap().to_string();
    for probe in ["livenessProbe", "readinessProbe"] {
        let command = strings(&routed[probe]["exec"]["command"]);
        assert_eq!(
            command,
            [image_binary.as_str(), "status", "--socket", socket.as_str()],
            "{probe}"
        );
    }
    // The probe's arguments are ones fjord-routed takes: with no daemon it says it cannot
    // reach one (exit 1), where a flag it did not know would be a usage error (exit 2).
    let dir = TempDir::new("s");
    let out = run(Command::new(fjord_bin("fjord-routed"))
        .args(["status", "--socket"])
        .arg(dir.join("routed.sock")));
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot reach fjord-routed"));
}

#[test]
fn settings_come_from_the_configmap_and_the_downward_api() {
    let docs = manifest();
    let spec = pod_spec(&docs);
    let routed = container(spec, "containers", "fjord-routed");
    let install = container(spec, "initContainers", "install-cni");
    for c in [routed, install] {
        assert_eq!(
            env(c, "FJORD_NODE_NAME")["valueFrom"]["fieldRef"]["fieldPath"],
            "spec.nodeName"
        );
        assert_eq!(
            env(c, "FJORD_STORE")["valueFrom"]["configMapKeyRef"]["key"],
            "store"
        );
    }
    let address = &env(routed, "FJORD_NODE_ADDRESS")["valueFrom"]["fieldRef"]["fieldPath"];
    assert!(
        address == "status.hostIP" || address == "status.hostIPs",
        "{address}"
    );
    // Every key the containers read exists in the ConfigMap.
    let config_name = object(&docs, "ConfigMap")["metadata"]["name"].clone();
    for c in [routed, install] {
        for e in c["env"].as_array().unwrap() {
            let key_ref = &e["valueFrom"]["configMapKeyRef"];
            if key_ref.is_object() {
                assert_eq!(key_ref["name"], config_name, "{e}");
                config_data(&docs, key_ref["key"].as_str().unwrap());
            }
        }
    }
    assert_eq!(config_data(&docs, "store"), "kubernetes");
    // The kubernetes store's credentials are the pod's service account.
    assert_ne!(spec["automountServiceAccountToken"], false);
    assert!(routed["env"]
        .as_array()
        .unwrap()
        .iter()
        .all(|e| e["name"] != "FJORD_KUBECONFIG"));
}

#[test]
fn host_paths_are_mounted_where_the_host_plugin_looks_for_them() {
    let docs = manifest();
    let spec = pod_spec(&docs);
    let host_path = |volume: &str| -> String {
        spec["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == volume)
            .and_then(|v| v["hostPath"]["path"].as_str())
            .unwrap_or_else(|| panic!("no hostPath volume {volume}"))
            .to_string()
    };
    let mounts = |c: &Value| -> Vec<(String, String)> {
        c["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                let (name, path) = (
                    m["name"].as_str().unwrap(),
                    m["mountPath"].as_str().unwrap(),
                );
                (name.to_string(), path.to_string())
            })
            .collect()
    };
    // The plugin runs on the host and the daemon in the container: the socket, the MTU
    // file and the store's directory must have one path in both.
    let routed = mounts(container(spec, "containers", "fjord-routed"));
    let store_dir = kubernetes_store_dir(&config_data(&docs, "store"));
    for dir in ["/run/fjord", store_dir.as_str(), "/var/log/fjord"] {
        assert!(
            routed
                .iter()
                .any(|(vol, at)| at == dir && host_path(vol) == dir),
            "fjord-routed does not mount host {dir} at {dir}: {routed:?}"
        );
    }
    let install = mounts(container(spec, "initContainers", "install-cni"));
    let install_env = container(spec, "initContainers", "install-cni");
    for (var, host) in [
        ("FJORD_CNI_BIN_DIR", "/opt/cni/bin"),
        ("FJORD_CNI_CONF_DIR", "/etc/cni/net.d"),
    ] {
        let at = env(install_env, var)["value"].as_str().unwrap();
        assert!(
            install
                .iter()
                .any(|(vol, m)| m == at && host_path(vol) == host),
            "{var}={at} is not the host's {host}: {install:?}"
        );
    }
}

/// The directory of a `kubernetes[:DIR]` store: where fjord-routed writes the podCIDRs
/// file and the plugin reads it (the default is ipam/src/config.rs's
/// DEFAULT_KUBERNETES_DIR).
fn kubernetes_store_dir(store: &str) -> String {
    match store.strip_prefix("kubernetes") {
        Some("") => "/var/lib/fjord/kubernetes".into(),
        Some(dir) if dir.starts_with(':') => dir[1..].into(),
        _ => panic!("the ConfigMap's store {store:?} is not kubernetes[:DIR]"),
    }
}

#[test]
fn rbac_grants_get_list_watch_on_nodes_and_nothing_else() {
    let docs = manifest();
    for kind in ["Role", "RoleBinding"] {
        assert!(
            docs.iter().all(|d| d["kind"] != kind),
            "{MANIFEST} has a {kind}"
        );
    }
    let role = object(&docs, "ClusterRole");
    let rules = role["rules"].as_array().unwrap();
    assert_eq!(rules.len(), 1, "{rules:?}");
    assert_eq!(strings(&rules[0]["apiGroups"]), [""]);
    assert_eq!(strings(&rules[0]["resources"]), ["nodes"]);
    let verbs: BTreeSet<String> = strings(&rules[0]["verbs"]).into_iter().collect();
    assert_eq!(
        verbs,
        BTreeSet::from(["get", "list", "watch"].map(String::from))
    );
    assert!(rules[0].get("resourceNames").is_none() && rules[0].get("nonResourceURLs").is_none());

    let binding = object(&docs, "ClusterRoleBinding");
    assert_eq!(binding["roleRef"]["name"], role["metadata"]["name"]);
    let account = object(&docs, "ServiceAccount");
    let subjects = binding["subjects"].as_array().unwrap();
    assert_eq!(subjects.len(), 1);
    assert_eq!(subjects[0]["name"], account["metadata"]["name"]);
    assert_eq!(subjects[0]["namespace"], account["metadata"]["namespace"]);
    assert_eq!(
        pod_spec(&docs)["serviceAccountName"],
        account["metadata"]["name"]
    );
}

/// One node set up by the installer: temp CNI directories filled by the real
/// `fjord-routed install-cni`, as the init container fills the host's.
struct InstalledNode {
    dir: TempDir,
    /// The node's namespace, where the plugin runs (the host's, on a real node).
    node: Netns,
    /// What the installer gets as FJORD_NODE_NAME: the namespace's name unless a test
    /// says otherwise.
    node_name: String,
    template: String,
    /// What the installer gets as FJORD_STORE.
    store: String,
}

impl InstalledNode {
    /// With the store `store` makes of the test's directory.
    fn with_store(template: &str, store: impl FnOnce(&Path) -> String) -> InstalledNode {
        let dir = TempDir::new("i");
        std::fs::write(dir.join("template.conflist"), template).unwrap();
        // The node's own reference plugins, as kubeadm's kubernetes-cni package puts them.
        let bin = dir.join("opt/cni/bin");
        std::fs::create_dir_all(&bin).unwrap();
        for plugin in CHAINED_PLUGINS {
            let source = Path::new(REFERENCE_PLUGIN_DIR).join(plugin);
            assert!(
                source.is_file(),
                "{} is missing: conformance/scripts/install-test-deps.sh installs \
                 containernetworking-plugins",
                source.display()
            );
            std::os::unix::fs::symlink(&source, bin.join(plugin)).unwrap();
        }
        let store = store(dir.path());
        let node = Netns::new("n");
        InstalledNode {
            dir,
            node_name: node.name().to_string(),
            node,
            template: template.to_string(),
            store,
        }
    }

    fn bin_dir(&self) -> PathBuf {
        self.dir.join("opt/cni/bin")
    }

    fn conf_dir(&self) -> PathBuf {
        self.dir.join("etc/cni/net.d")
    }

    fn store(&self) -> String {
        self.store.clone()
    }

    /// Runs the installer with the settings the DaemonSet gives it (env, not flags).
    fn install(&self) -> Output {
        self.install_with(&[])
    }

    /// The installer with more variables (FJORD_CNI_EXCLUSIVE).
    fn install_with(&self, extra: &[(&str, &str)]) -> Output {
        run(Command::new(fjord_bin("fjord-routed"))
            .arg("install-cni")
            .env("FJORD_NODE_NAME", &self.node_name)
            .env("FJORD_STORE", self.store())
            .env("FJORD_CNI_SOURCE_BIN_DIR", fjord_bin_dir())
            .env("FJORD_CNI_BIN_DIR", self.bin_dir())
            .env("FJORD_CNI_CONF_DIR", self.conf_dir())
            .env(
                "FJORD_CNI_CONFLIST_TEMPLATE",
                self.dir.join("template.conflist"),
            )
            .env("FJORD_CNI_CONFLIST_NAME", CONFLIST_NAME)
            .envs(extra.iter().copied()))
    }

    /// The conflist exactly as the template says, with the two placeholders filled.
    fn expected_conflist(&self) -> String {
        self.template
            .replace("__FJORD_NODE_NAME__", &self.node_name)
            .replace("__FJORD_STORE__", &self.store())
    }

    /// What a runtime passes `fjord` from the installed conflist (libcni: the plugin's
    /// object with the list's `cniVersion` and `name`). The two host paths outside the
    /// store, the log and the MTU file, point into the test's directory.
    fn plugin_config(&self) -> Value {
        let text = std::fs::read_to_string(self.conf_dir().join(CONFLIST_NAME)).unwrap();
        let list: Value = serde_json::from_str(&text).expect("the installed conflist is JSON");
        let mut conf = list["plugins"]
            .as_array()
            .and_then(|p| p.iter().find(|p| p["type"] == "fjord"))
            .expect("a fjord plugin")
            .clone();
        conf["cniVersion"] = list["cniVersion"].clone();
        conf["name"] = list["name"].clone();
        conf["logFile"] = json!(self.dir.join("cni.log"));
        conf["mtuFile"] = json!(self.dir.join("mtu"));
        conf
    }

    fn call(&self, command: &str, pod: &Pod) -> PluginCall {
        PluginCall::new(
            self.bin_dir().join("fjord"),
            command,
            &pod.container_id,
            &pod.netns_path(),
            &pod.ifname,
            &self.bin_dir().display().to_string(),
            &self.plugin_config(),
        )
    }
}

#[test]
fn the_installer_writes_the_configmaps_conflist_byte_for_byte() {
    // With the ConfigMap's own store, exactly as the init container gets it.
    let docs = manifest();
    let template = config_data(&docs, "cni_network_config");
    let node = InstalledNode::with_store(&template, |_| config_data(&docs, "store"));
    let out = node.install();
    assert!(out.status.success(), "{}", text(&out));
    for name in ["fjord", "fjord-ipam"] {
        let installed = node.bin_dir().join(name);
        assert_eq!(
            std::fs::read(&installed).unwrap(),
            std::fs::read(fjord_bin(name)).unwrap(),
            "{name} differs from the built binary"
        );
        let mode = std::fs::metadata(&installed).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o755, "{name}");
    }
    let conflist = std::fs::read_to_string(node.conf_dir().join(CONFLIST_NAME)).unwrap();
    assert_eq!(conflist, node.expected_conflist());
    // docs/kubernetes.md's plugin config: the kubernetes store, this node, no pools.
    assert_eq!(
        node.plugin_config()["ipam"],
        json!({"type": "fjord-ipam", "nodeName": node.node_name, "store": "kubernetes"})
    );
    for dir in [node.bin_dir(), node.conf_dir()] {
        let names: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(
            names.iter().all(|n| !n.starts_with('.')),
            "temp files left: {names:?}"
        );
    }
    // A second run (the init container after a node reboot) leaves the files alone.
    let again = node.install();
    assert!(again.status.success(), "{}", text(&again));
    assert_eq!(
        String::from_utf8_lossy(&again.stdout)
            .matches("unchanged")
            .count(),
        3,
        "{}",
        text(&again)
    );
}

/// The configs a node migrating from another network has in /etc/cni/net.d; every one
/// sorts before `10-fjord.conflist`, the name of earlier releases.
const OTHER_NETWORKS: [&str; 3] = [
    "10-calico.conflist",
    "10-flannel.conflist",
    "10-containerd-net.conflist",
];

fn network_configs_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| {
            !n.starts_with('.')
                && [".conf", ".conflist", ".json"]
                    .iter()
                    .any(|x| n.ends_with(x))
        })
        .collect();
    names.sort();
    names
}

#[test]
fn migrating_from_another_network_the_installed_conflist_is_the_one_a_runtime_uses() {
    let docs = manifest();
    let install = container(pod_spec(&docs), "initContainers", "install-cni");
    assert_eq!(
        env(install, "FJORD_CNI_CONFLIST_NAME")["value"],
        CONFLIST_NAME
    );
    let exclusive = &env(install, "FJORD_CNI_EXCLUSIVE")["valueFrom"]["configMapKeyRef"];
    assert_eq!(exclusive["key"], "cni_exclusive");
    assert_eq!(config_data(&docs, "cni_exclusive"), "true");
    for other in OTHER_NETWORKS.iter().chain(&["05-cilium.conflist"]) {
        assert!(
            CONFLIST_NAME < *other,
            "{other} sorts before {CONFLIST_NAME}"
        );
    }

    let template = config_data(&docs, "cni_network_config");
    let store = config_data(&docs, "store");
    let node = InstalledNode::with_store(&template, |_| store);
    std::fs::create_dir_all(node.conf_dir()).unwrap();
    for name in OTHER_NETWORKS {
        std::fs::write(
            node.conf_dir().join(name),
            format!("{{\"name\": \"{name}\"}}"),
        )
        .unwrap();
    }
    let out = node.install_with(&[("FJORD_CNI_EXCLUSIVE", "true")]);
    assert!(out.status.success(), "{}", text(&out));
    // A runtime takes the first network config by name: now the only one is Fjord's.
    assert_eq!(network_configs_in(&node.conf_dir()), [CONFLIST_NAME]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    for name in OTHER_NETWORKS {
        let aside = node.conf_dir().join(format!("{name}.fjord-disabled"));
        assert_eq!(
            std::fs::read_to_string(&aside).unwrap(),
            format!("{{\"name\": \"{name}\"}}"),
            "{name} was not kept as {}",
            aside.display()
        );
        assert!(
            stdout.contains(&format!(
                "moved aside {}",
                node.conf_dir().join(name).display()
            )),
            "no log line for {name}: {}",
            text(&out)
        );
    }

    // The ConfigMap's "false": the others stay, and the installer warns about each.
    let store = config_data(&docs, "store");
    let kept = InstalledNode::with_store(&template, |_| store);
    std::fs::create_dir_all(kept.conf_dir()).unwrap();
    std::fs::write(kept.conf_dir().join("00-multus.conf"), b"{}").unwrap();
    let out = kept.install_with(&[("FJORD_CNI_EXCLUSIVE", "false")]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        network_configs_in(&kept.conf_dir()),
        ["00-multus.conf", CONFLIST_NAME]
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("warning: 00-multus.conf sorts before"),
        "{}",
        text(&out)
    );
}

#[test]
fn the_conflists_chain_portmap_and_bandwidth_with_their_capabilities() {
    // What Calico's and Flannel's conflists chain: hostPort (portMappings) and the
    // bandwidth annotations reach the plugins only through declared capabilities.
    let want = json!([
        {"type": "portmap", "snat": true, "capabilities": {"portMappings": true}},
        {"type": "bandwidth", "capabilities": {"bandwidth": true}},
    ]);
    let mut conflists = vec![(
        "the ConfigMap's cni_network_config".to_string(),
        config_data(&manifest(), "cni_network_config"),
    )];
    for path in deploy_files(".conflist") {
        conflists.push((
            path.display().to_string(),
            std::fs::read_to_string(&path).unwrap(),
        ));
    }
    for (what, text) in conflists {
        let list: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{what}: {e}"));
        let plugins = list["plugins"].as_array().expect("plugins");
        assert_eq!(plugins[0]["type"], "fjord", "{what}");
        assert_eq!(json!(plugins[1..]), want, "{what}");
    }
}

/// The test Node's `spec.podCIDRs`, as a controller manager with
/// `--cluster-cidr=10.244.0.0/16,fd00:244::/56` (kubeadm's --pod-network-cidr) assigns them.
const NODE_POD_CIDRS: [&str; 2] = ["10.244.7.0/24", "fd00:244:0:7::/64"];

/// A TCP listener bound inside `ns`: only the binding thread enters the namespace.
fn listener_in(ns: &Netns, address: SocketAddr) -> TcpListener {
    let path = ns.path();
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("open {path:?}: {e}"));
        nix::sched::setns(file.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
            .expect("setns into the node's namespace");
        TcpListener::bind(address).expect("bind the stand-in API server in the node")
    })
    .join()
    .expect("binding thread")
}

#[test]
fn the_installed_fjord_takes_pod_addresses_from_the_pod_cidrs_fjord_routed_wrote() {
    // The DaemonSet's chain on one node: install-cni with the ConfigMap's template and
    // store, then fjord-routed (confined to the DaemonSet's capabilities, its settings in
    // the env as the DaemonSet gives them) watches its Node on a stand-in API server and
    // writes the podCIDRs file, then the installed fjord attaches a pod with the installed
    // conflist. The store is the ConfigMap's `kubernetes` with its directory in the test's.
    let docs = manifest();
    let template = config_data(&docs, "cni_network_config");
    let configmap_store = config_data(&docs, "store");
    assert_eq!(configmap_store, "kubernetes");
    let routed = container(pod_spec(&docs), "containers", "fjord-routed");
    let caps = strings(&routed["securityContext"]["capabilities"]["add"]);
    let node = InstalledNode::with_store(&template, |dir| {
        format!("{configmap_store}:{}", dir.join("kubernetes").display())
    });
    let state = node.dir.join("kubernetes");
    let out = node.install();
    assert!(out.status.success(), "{}", text(&out));
    let installed = node.plugin_config();
    assert_eq!(installed["ipam"]["store"], json!(node.store()));
    assert!(
        installed["ipam"].get("pools").is_none(),
        "{installed}: the podCIDRs are the pools"
    );

    // The host: one lab node. The plugin runs in its namespace, as on a real node.
    let lab = Lab::new(LabSpec::nodes(1));
    let host = lab.node(0);
    let name = node.node_name.clone();
    let add = |pod: &Pod| node.call("ADD", pod).run_in(host.netns());

    // Before fjord-routed has written the node's podCIDRs: "try again later".
    let early = Pod::new();
    add(&early).expect_error_mentioning(
        11,
        "fjord-routed has not written the node's podCIDRs yet: is it running?",
    );
    node.call("DEL", &early).run_in(host.netns()).expect_ok();

    let server = FakeApiServer::on(listener_in(
        host.netns(),
        SocketAddr::new(IpAddr::V4(host.address_v4()), 0),
    ));
    let (v4, v6) = (host.address_v4().to_string(), host.address_v6().to_string());
    server.apply(node_json(&name, &[&v4, &v6], &NODE_POD_CIDRS));
    let kubeconfig = node.dir.join("kubeconfig");
    server.write_kubeconfig(&kubeconfig);
    let env = [
        ("FJORD_NODE_NAME", name.clone()),
        ("FJORD_NODE_ADDRESS", host.node_address_arg()),
        ("FJORD_STORE", node.store()),
        ("FJORD_KUBECONFIG", kubeconfig.display().to_string()),
        ("FJORD_SOCKET", lab.socket(0).display().to_string()),
        ("FJORD_MTU_FILE", lab.mtu_file(0).display().to_string()),
    ];
    let mut daemon = ConfinedDaemon::start_with_env(&lab, 0, &caps, &env);
    let pod_cidrs_file = state.join(format!("{name}.json"));
    let deadline = Instant::now() + Duration::from_secs(40);
    while !pod_cidrs_file.exists() {
        let exited = daemon.0.try_wait().ok().flatten();
        assert!(
            exited.is_none() && Instant::now() < deadline,
            "fjord-routed ({exited:?}) wrote no {}\n--- daemon log ---\n{}",
            pod_cidrs_file.display(),
            lab.routed_log_tail(0)
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    let pod = Pod::new();
    let result = add(&pod).expect_ok();
    let pod_cidrs: Vec<IpNetwork> = NODE_POD_CIDRS.iter().map(|c| c.parse().unwrap()).collect();
    let addresses = [result_ipv4(&result).ip(), result_ipv6(&result).ip()];
    for (address, pod_cidr) in addresses.iter().zip(&pod_cidrs) {
        assert!(
            pod_cidr.contains(*address),
            "{address} is not in the Node's podCIDR {pod_cidr}"
        );
        assert!(
            pod.netns
                .global_addresses("eth0")
                .iter()
                .any(|a| a.ip() == *address),
            "the pod's eth0 lacks {address}"
        );
    }
    // Recorded in the kubernetes store's local allocations, under this node's name.
    let held = fjord_dir_allocations(&state.join("ipam"));
    for address in addresses {
        assert!(
            held.iter().any(|a| a.address == address
                && a.container_id == pod.container_id
                && a.node.as_deref() == Some(name.as_str())),
            "{address} of {} is not recorded for node {name}: {held:?}",
            pod.container_id
        );
    }
    node.call("DEL", &pod).run_in(host.netns()).expect_ok();
    let held = fjord_dir_allocations(&state.join("ipam"));
    assert!(
        held.iter().all(|a| a.container_id != pod.container_id),
        "DEL left {held:?}"
    );
    drop(daemon);
}

#[test]
fn the_standalone_conflist_is_one_fjord_accepts() {
    // deploy/01-fjord.conflist is for nodes set up by hand; as the template has no
    // placeholders, the installer copies it unchanged, and fjord must take it. It names
    // its store and leaves the node name to the host name, so the installer (which
    // refuses a conflist that disagrees with the daemon) gets those.
    let host_name = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    for path in deploy_files(".conflist") {
        let template = std::fs::read_to_string(&path).unwrap();
        let list: Value = serde_json::from_str(&template).unwrap();
        let own_store = list["plugins"][0]["ipam"]["store"]
            .as_str()
            .unwrap()
            .to_string();
        let mut node = InstalledNode::with_store(&template, |_| own_store);
        node.node_name = host_name.trim().to_string();
        let out = node.install();
        assert!(out.status.success(), "{}: {}", path.display(), text(&out));
        let installed = std::fs::read_to_string(node.conf_dir().join(CONFLIST_NAME)).unwrap();
        assert_eq!(installed, template, "{}", path.display());
        let pod = Pod::new();
        let mut call = node.call("ADD", &pod);
        let mut conf = node.plugin_config();
        // Its store is a shared etcd cluster (docs/etcd-store.md): the test's own
        // directory instead, without the etcd TLS files.
        let ipam = conf["ipam"].as_object_mut().unwrap();
        for key in ["etcdCACertFile", "etcdCertFile", "etcdKeyFile"] {
            ipam.remove(key);
        }
        conf["ipam"]["store"] = json!(format!("dir:{}", node.dir.join("ipam").display()));
        conf["ipam"]["nodeName"] = json!(node.node.name());
        call.stdin = serde_json::to_vec(&conf).unwrap();
        let result = call.run_in(&node.node).expect_ok();
        result_ipv4(&result);
        let mut del = call.clone();
        del.command = Some("DEL".into());
        del.run_in(&node.node).expect_ok();
    }
}

#[test]
fn the_installer_refuses_a_broken_template_and_installs_nothing() {
    let template = config_data(&manifest(), "cni_network_config");
    let broken = template.replace(
        "\"store\": \"__FJORD_STORE__\"",
        "\"store\": \"__FJORD_STORE__\", \"pools\": [\"10.244.0.0/33\"]",
    );
    assert_ne!(broken, template);
    let node = InstalledNode::with_store(&broken, |_| "kubernetes".into());
    let out = node.install();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("10.244.0.0/33"),
        "{}",
        text(&out)
    );
    // The bin dir holds only the node's own reference plugins, as before.
    assert!(!node.bin_dir().join("fjord").exists() && !node.bin_dir().join("fjord-ipam").exists());
    assert!(!node.conf_dir().exists());
}

/// Capability numbers (linux/capability.h) of the ones the DaemonSet may add.
fn capability_bit(name: &str) -> u32 {
    match name {
        "NET_BIND_SERVICE" => 10,
        "NET_ADMIN" => 12,
        "NET_RAW" => 13,
        other => panic!("tests/deploy.rs does not know capability {other}"),
    }
}

/// A `fjord-routed` confined as the DaemonSet's container is: only `caps` in its bounding
/// set (so root gets no others), none inheritable, no new privileges. Stopped on drop.
struct ConfinedDaemon(Child);

impl ConfinedDaemon {
    fn start(lab: &Lab, i: usize, caps: &[String]) -> ConfinedDaemon {
        let log_path = lab.routed_log(i);
        let log = std::fs::File::create(&log_path).unwrap();
        let mut cmd = confined(caps);
        cmd.arg(fjord_bin("fjord-routed"))
            .args(lab.routed_args(i))
            .args(["--hold-time", "9", "--graceful-restart-time", "9"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        ConfinedDaemon(spawn_in_netns(lab.node(i).netns(), &mut cmd))
    }

    /// `fjord-routed run` with its settings in the environment, as the DaemonSet gives
    /// them, and no flags.
    fn start_with_env(lab: &Lab, i: usize, caps: &[String], env: &[(&str, String)]) -> Self {
        let log_path = lab.routed_log(i);
        let log = std::fs::File::create(&log_path).unwrap();
        let mut cmd = confined(caps);
        cmd.arg(fjord_bin("fjord-routed"))
            .arg("run")
            .env_remove("KUBERNETES_SERVICE_HOST")
            .env("RUST_LOG", "info")
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        ConfinedDaemon(spawn_in_netns(lab.node(i).netns(), &mut cmd))
    }

    /// The daemon's effective capabilities, from /proc (setpriv execs it in place).
    fn effective_caps(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.0.id())).unwrap();
        let hex = status
            .lines()
            .find_map(|l| l.strip_prefix("CapEff:"))
            .expect("CapEff in /proc/PID/status")
            .trim();
        u64::from_str_radix(hex, 16).unwrap()
    }
}

/// Waits until node `i`'s confined daemon has every other node as an Established peer;
/// panics with its log when it exits or takes longer than 30 s.
fn wait_established(lab: &Lab, i: usize, daemon: &mut ConfinedDaemon) {
    let mut want = lab.mesh_peers_of(i);
    want.sort();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let last = lab
            .try_status_json(i)
            .and_then(|v| serde_json::from_value::<RoutedStatus>(v).map_err(|e| e.to_string()));
        if let Ok(status) = &last {
            let mut have: Vec<IpAddr> = status.peers.iter().map(|p| p.address).collect();
            have.sort();
            if have == want && status.peers.iter().all(|p| p.state == "Established") {
                return;
            }
        }
        let exited = daemon.0.try_wait().ok().flatten();
        assert!(
            exited.is_none() && Instant::now() < deadline,
            "confined fjord-routed on node {i} ({exited:?}) has no Established peers {want:?}\n\
             last status: {last:?}\n--- daemon log ---\n{}",
            lab.routed_log_tail(i)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

impl Drop for ConfinedDaemon {
    fn drop(&mut self) {
        stop_child(&mut self.0, STOP_GRACE);
    }
}

/// `setpriv` with the bounding set reduced to `caps`, as a container runtime sets it.
fn confined(caps: &[String]) -> Command {
    let bounding: Vec<String> = std::iter::once("-all".to_string())
        .chain(caps.iter().map(|c| format!("+{}", c.to_lowercase())))
        .collect();
    let mut cmd = Command::new("setpriv");
    cmd.args(["--no-new-privs", "--inh-caps", "-all", "--bounding-set"])
        .arg(bounding.join(","))
        .arg("--");
    cmd
}

#[test]
fn the_daemon_does_its_work_with_only_the_capabilities_the_daemonset_gives_it() {
    let docs = manifest();
    let routed = container(pod_spec(&docs), "containers", "fjord-routed");
    let caps = strings(&routed["securityContext"]["capabilities"]["add"]);
    let want_mask = caps.iter().fold(0u64, |m, c| m | 1 << capability_bit(c));

    let lab = Lab::new(LabSpec::nodes(2));
    let mut daemons: Vec<ConfinedDaemon> = (0..2)
        .map(|i| ConfinedDaemon::start(&lab, i, &caps))
        .collect();
    for (i, daemon) in daemons.iter_mut().enumerate() {
        wait_established(&lab, i, daemon);
    }
    for d in &daemons {
        assert_eq!(
            d.effective_caps(),
            want_mask,
            "the daemon runs with other capabilities"
        );
    }
    // It claims nothing itself: a pod on node 0 makes a block, which node 1's confined
    // daemon must learn over BGP and write into its kernel.
    let pod = lab.add_pod(0);
    poll_until(
        Duration::from_secs(15),
        "node 1 routes node 0's pod block",
        || {
            lab.node(1)
                .fjord_routes()
                .iter()
                .any(|r| r.dst.contains(pod.ipv4) && r.gateway == Some(lab.node(0).address(false)))
        },
    );
    let mtu = std::fs::read_to_string(lab.mtu_file(0)).unwrap_or_default();
    assert!(
        mtu.trim().parse::<u32>().is_ok(),
        "no pod MTU recorded: {mtu:?}"
    );

    // The probe, confined the same way, passes against the running daemon.
    let probe = strings(&routed["readinessProbe"]["exec"]["command"]);
    assert_eq!(probe[1..3], ["status", "--socket"]);
    let out = run(confined(&caps)
        .arg(fjord_bin("fjord-routed"))
        .args(&probe[1..3])
        .arg(lab.socket(0)));
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("Established"),
        "{}",
        text(&out)
    );
    lab.del_pod(&pod);
}

#[test]
fn the_image_holds_what_the_manifest_runs() {
    // The text of the Containerfile against the DaemonSet; tests/image.rs builds it and
    // checks the image itself.
    let containerfile = std::fs::read_to_string(deploy_dir().join("Containerfile")).unwrap();
    let script = std::fs::read_to_string(deploy_dir().join("build-static.sh")).unwrap();
    for needle in [
        "FROM scratch",
        "-C target-feature=+crt-static",
        "--target x86_64-unknown-linux-gnu",
    ] {
        assert!(
            containerfile.contains(needle),
            "Containerfile lacks {needle:?}"
        );
    }
    assert!(
        script.contains("-C target-feature=+crt-static") && script.contains("--target \"$TARGET\"")
    );
    let docs = manifest();
    let spec = pod_spec(&docs);
    let install = container(spec, "initContainers", "install-cni");
    let source = env(install, "FJORD_CNI_SOURCE_BIN_DIR")["value"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        containerfile.contains(&format!("/out{source}")),
        "the image has no {source}"
    );
    for c in [install, container(spec, "containers", "fjord-routed")] {
        let program = c["command"][0].as_str().unwrap();
        assert_eq!(program, format!("{source}/fjord-routed"), "{}", c["name"]);
    }
    assert!(
        containerfile.contains("for bin in fjord fjord-ipam fjord-routed"),
        "the image must hold the three binaries"
    );
    let syntax = run(Command::new("bash")
        .arg("-n")
        .arg(deploy_dir().join("build-static.sh")));
    assert!(syntax.status.success(), "{}", text(&syntax));
}
