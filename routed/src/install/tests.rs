use super::*;

const TEMPLATE: &str = r#"{
  "cniVersion": "1.0.0",
  "name": "fjord",
  "plugins": [{
    "type": "fjord",
    "ipam": {
      "type": "fjord-ipam",
      "nodeName": "__FJORD_NODE_NAME__",
      "store": "__FJORD_STORE__",
      "pools": ["10.244.0.0/16"]
    }
  }]
}
"#;

/// A directory under the system temp dir, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Scratch {
        let path = std::env::temp_dir().join(format!(
            "fjord-install-{tag}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).unwrap();
        Scratch(path)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn plan(root: &Path) -> InstallPlan {
    let source = root.join("image-bin");
    fs::create_dir_all(&source).unwrap();
    fs::write(source.join("fjord"), b"\x7fELF plugin").unwrap();
    fs::write(source.join("fjord-ipam"), b"\x7fELF ipam").unwrap();
    InstallPlan {
        source_bin_dir: source,
        cni_bin_dir: root.join("opt/cni/bin"),
        cni_conf_dir: root.join("etc/cni/net.d"),
        conflist_name: DEFAULT_CONFLIST_NAME.into(),
        template: TEMPLATE.into(),
        node_name: "node-1".into(),
        store: "dir:/var/lib/fjord/ipam".into(),
        exclusive: true,
    }
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

#[test]
fn render_fills_placeholders_and_nothing_else() {
    let out = render_conflist(TEMPLATE, "node-1", "dir:/srv/ipam").unwrap();
    let expected = TEMPLATE
        .replace("__FJORD_NODE_NAME__", "node-1")
        .replace("__FJORD_STORE__", "dir:/srv/ipam");
    assert_eq!(out, expected);
}

#[test]
fn render_refuses_what_would_break_the_conflist() {
    let cases = [
        (TEMPLATE.to_string(), "node\"1", "dir:/x", "quotes"),
        (TEMPLATE.to_string(), "", "dir:/x", "non-empty"),
        (TEMPLATE.to_string(), "n1", "nfs:/x", "ipam"),
        (
            TEMPLATE.replace("10.244.0.0/16", "10.244.0.1/16"),
            "n1",
            "dir:/x",
            "host bits",
        ),
        (
            TEMPLATE.replace("__FJORD_STORE__", "__FJORD_STOR__"),
            "n1",
            "dir:/x",
            "placeholder",
        ),
        (
            TEMPLATE.replace("\"fjord\",\n    \"ipam\"", "\"ptp\",\n    \"ipam\""),
            "n1",
            "dir:/x",
            "\"type\": \"fjord\"",
        ),
        (
            TEMPLATE.replace("\"plugins\"", "\"plugin\""),
            "n1",
            "dir:/x",
            "plugins",
        ),
        (
            "{\"cniVersion\": \"1.0.0\",".to_string(),
            "n1",
            "dir:/x",
            "not JSON",
        ),
    ];
    for (template, node, store, needle) in cases {
        let err = render_conflist(&template, node, store)
            .unwrap_err()
            .to_string();
        assert!(err.contains(needle), "{needle:?} not in {err:?}");
    }
}

#[test]
fn install_writes_exact_bytes_and_modes_and_leaves_no_temp_files() {
    let scratch = Scratch::new("exact");
    let plan = plan(&scratch.0);
    let report = install(&plan).unwrap();
    assert_eq!(report.files.len(), 3);
    assert!(report.files.iter().all(|f| f.changed));
    for name in CNI_BINARIES {
        let installed = plan.cni_bin_dir.join(name);
        assert_eq!(
            fs::read(&installed).unwrap(),
            fs::read(plan.source_bin_dir.join(name)).unwrap()
        );
        assert_eq!(mode(&installed), 0o755);
    }
    let conflist = plan.cni_conf_dir.join(DEFAULT_CONFLIST_NAME);
    assert_eq!(
        fs::read_to_string(&conflist).unwrap(),
        render_conflist(TEMPLATE, "node-1", "dir:/var/lib/fjord/ipam").unwrap()
    );
    assert_eq!(mode(&conflist), 0o644);
    for dir in [&plan.cni_bin_dir, &plan.cni_conf_dir] {
        for entry in fs::read_dir(dir).unwrap() {
            let name = entry.unwrap().file_name();
            assert!(
                !name.to_string_lossy().starts_with('.'),
                "{name:?} left in {dir:?}"
            );
        }
    }
}

#[test]
fn a_second_run_changes_nothing_and_an_upgrade_replaces_the_inode() {
    let scratch = Scratch::new("again");
    let plan = plan(&scratch.0);
    install(&plan).unwrap();
    let again = install(&plan).unwrap();
    assert!(again.files.iter().all(|f| !f.changed), "{again:?}");

    use std::os::unix::fs::MetadataExt;
    let plugin = plan.cni_bin_dir.join("fjord");
    let old_inode = fs::metadata(&plugin).unwrap().ino();
    // A running old binary stays intact: the new one is a new file renamed over it.
    let running_old = File::open(&plugin).unwrap();
    fs::write(plan.source_bin_dir.join("fjord"), b"\x7fELF plugin v2").unwrap();
    let upgrade = install(&plan).unwrap();
    assert_eq!(
        upgrade.files.iter().filter(|f| f.changed).count(),
        1,
        "{upgrade:?}"
    );
    assert_eq!(fs::read(&plugin).unwrap(), b"\x7fELF plugin v2");
    assert_ne!(fs::metadata(&plugin).unwrap().ino(), old_inode);
    assert_eq!(running_old.metadata().unwrap().ino(), old_inode);
}

#[test]
fn leftovers_of_a_killed_run_are_removed_and_a_wrong_mode_is_fixed() {
    let scratch = Scratch::new("leftover");
    let plan = plan(&scratch.0);
    fs::create_dir_all(&plan.cni_conf_dir).unwrap();
    let leftover = plan
        .cni_conf_dir
        .join(format!("{TEMP_PREFIX}{DEFAULT_CONFLIST_NAME}.999999"));
    fs::write(&leftover, b"{\"cniVers").unwrap();
    install(&plan).unwrap();
    assert!(!leftover.exists());

    let plugin = plan.cni_bin_dir.join("fjord");
    fs::set_permissions(&plugin, fs::Permissions::from_mode(0o644)).unwrap();
    let report = install(&plan).unwrap();
    assert!(report.files[0].changed);
    assert_eq!(mode(&plugin), 0o755);
}

#[test]
fn a_bad_template_or_missing_binary_installs_nothing() {
    let scratch = Scratch::new("bad");
    let mut bad_template = plan(&scratch.0);
    bad_template.template = TEMPLATE.replace("10.244.0.0/16", "not-a-cidr");
    let err = install(&bad_template).unwrap_err().to_string();
    assert!(err.contains("not-a-cidr"), "{err}");
    assert!(!bad_template.cni_bin_dir.exists());
    assert!(!bad_template.cni_conf_dir.exists());

    let missing = plan(&scratch.0);
    fs::remove_file(missing.source_bin_dir.join("fjord-ipam")).unwrap();
    let err = install(&missing).unwrap_err().to_string();
    assert!(err.contains("fjord-ipam"), "{err}");
    assert!(!missing.cni_bin_dir.exists());
    assert!(!missing.cni_conf_dir.exists());
}

/// What a node migrating from another network has in /etc/cni/net.d.
const OTHER_NETWORKS: [&str; 5] = [
    "10-calico.conflist",
    "10-flannel.conflist",
    "10-containerd-net.conflist",
    "05-cilium.conf",
    "99-loopback.json",
];

fn write_other_networks(dir: &Path) {
    fs::create_dir_all(dir).unwrap();
    for name in OTHER_NETWORKS {
        fs::write(dir.join(name), format!("{{\"name\": \"{name}\"}}")).unwrap();
    }
    // Not network configs: left alone in every mode.
    for name in ["00-notes.txt", ".hidden.conf", "10-calico.conflist.bak"] {
        fs::write(dir.join(name), b"{}").unwrap();
    }
    fs::create_dir_all(dir.join("multus.d.conf")).unwrap();
}

fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn the_default_name_sorts_before_every_other_networks_config() {
    for other in OTHER_NETWORKS.iter().chain(&[
        "10-weave.conflist",
        "10-kuberouter.conflist",
        "87-podman-bridge.conflist",
    ]) {
        assert!(DEFAULT_CONFLIST_NAME < *other, "{other} sorts first");
    }
    // Multus is a meta-plugin that must come first and delegates to the next config.
    assert!("00-multus.conf" < DEFAULT_CONFLIST_NAME);
}

#[test]
fn exclusive_mode_moves_every_other_network_config_aside_and_says_so() {
    let scratch = Scratch::new("exclusive");
    let plan = plan(&scratch.0);
    write_other_networks(&plan.cni_conf_dir);
    let report = install(&plan).unwrap();
    let mut moved: Vec<(String, String)> = report
        .moved_aside
        .iter()
        .map(|m| (m.from.clone(), m.to.clone()))
        .collect();
    moved.sort();
    let mut want: Vec<(String, String)> = OTHER_NETWORKS
        .iter()
        .map(|n| (n.to_string(), format!("{n}{DISABLED_SUFFIX}")))
        .collect();
    want.sort();
    assert_eq!(moved, want);
    assert!(report
        .moved_aside
        .iter()
        .all(|m| m.reason == MoveReason::Exclusive));
    assert!(report.shadowing_configs.is_empty(), "{report:?}");
    // What a runtime would pick now is Fjord's, and every moved file keeps its bytes.
    let configs = network_configs(&plan.cni_conf_dir).unwrap();
    assert_eq!(configs, vec![DEFAULT_CONFLIST_NAME.to_string()]);
    for name in OTHER_NETWORKS {
        let aside = plan.cni_conf_dir.join(format!("{name}{DISABLED_SUFFIX}"));
        assert_eq!(
            fs::read_to_string(aside).unwrap(),
            format!("{{\"name\": \"{name}\"}}")
        );
    }
    for untouched in [
        "00-notes.txt",
        ".hidden.conf",
        "10-calico.conflist.bak",
        "multus.d.conf",
    ] {
        assert!(plan.cni_conf_dir.join(untouched).exists(), "{untouched}");
    }

    // Reversible: renaming back restores the directory; a second move of a config that
    // came back keeps the first copy too.
    fs::rename(
        plan.cni_conf_dir
            .join(format!("10-calico.conflist{DISABLED_SUFFIX}")),
        plan.cni_conf_dir.join("10-calico.conflist"),
    )
    .unwrap();
    fs::write(plan.cni_conf_dir.join("10-flannel.conflist"), b"{\"v\": 2}").unwrap();
    let again = install(&plan).unwrap();
    let again: Vec<(String, String)> = again
        .moved_aside
        .into_iter()
        .map(|m| (m.from, m.to))
        .collect();
    assert_eq!(
        again,
        vec![
            (
                "10-calico.conflist".into(),
                format!("10-calico.conflist{DISABLED_SUFFIX}")
            ),
            (
                "10-flannel.conflist".into(),
                format!("10-flannel.conflist{DISABLED_SUFFIX}.1")
            ),
        ]
    );
    let first = plan
        .cni_conf_dir
        .join(format!("10-flannel.conflist{DISABLED_SUFFIX}"));
    assert!(fs::read_to_string(first).unwrap().contains("10-flannel"));
}

#[test]
fn without_exclusive_mode_others_stay_and_those_sorting_first_are_reported() {
    let scratch = Scratch::new("shadow");
    let mut plan = plan(&scratch.0);
    plan.exclusive = false;
    plan.conflist_name = "10-fjord.conflist".into();
    write_other_networks(&plan.cni_conf_dir);
    let before = names_in(&plan.cni_conf_dir);
    let report = install(&plan).unwrap();
    assert!(report.moved_aside.is_empty(), "{report:?}");
    assert_eq!(
        report.shadowing_configs,
        vec![
            "05-cilium.conf".to_string(),
            "10-calico.conflist".into(),
            "10-containerd-net.conflist".into()
        ]
    );
    let mut after = names_in(&plan.cni_conf_dir);
    after.retain(|n| n != "10-fjord.conflist");
    assert_eq!(after, before);
}

#[test]
fn an_earlier_releases_fjord_conflist_is_moved_aside_in_every_mode() {
    for exclusive in [true, false] {
        let scratch = Scratch::new(&format!("upgrade-{exclusive}"));
        let mut plan = plan(&scratch.0);
        plan.exclusive = exclusive;
        fs::create_dir_all(&plan.cni_conf_dir).unwrap();
        let old = render_conflist(TEMPLATE, "node-1", "dir:/var/lib/fjord/ipam").unwrap();
        fs::write(plan.cni_conf_dir.join("10-fjord.conflist"), old).unwrap();
        fs::write(plan.cni_conf_dir.join("10-calico.conflist"), b"{}").unwrap();
        let report = install(&plan).unwrap();
        let old_moved = report
            .moved_aside
            .iter()
            .find(|m| m.from == "10-fjord.conflist")
            .unwrap_or_else(|| panic!("exclusive={exclusive}: {report:?}"));
        assert_eq!(old_moved.reason, MoveReason::OldFjordConflist);
        assert_eq!(
            plan.cni_conf_dir.join("10-calico.conflist").exists(),
            !exclusive
        );
    }
}

#[test]
fn a_chained_plugin_missing_from_the_bin_dir_installs_nothing() {
    let scratch = Scratch::new("chain");
    let mut plan = plan(&scratch.0);
    plan.template = TEMPLATE.replace(
        "  }]\n}",
        "  }, {\"type\": \"portmap\", \"capabilities\": {\"portMappings\": true}}]\n}",
    );
    assert_ne!(plan.template, TEMPLATE);
    let err = install(&plan).unwrap_err().to_string();
    assert!(
        err.contains("\"portmap\", which is not an executable in")
            && err.contains("containernetworking-plugins"),
        "{err}"
    );
    assert!(!plan.cni_conf_dir.exists(), "installed anyway");

    fs::create_dir_all(&plan.cni_bin_dir).unwrap();
    let portmap = plan.cni_bin_dir.join("portmap");
    fs::write(&portmap, b"\x7fELF portmap").unwrap();
    fs::set_permissions(&portmap, fs::Permissions::from_mode(0o755)).unwrap();
    install(&plan).unwrap();
    let installed: Value =
        serde_json::from_slice(&fs::read(plan.cni_conf_dir.join(DEFAULT_CONFLIST_NAME)).unwrap())
            .unwrap();
    assert_eq!(installed["plugins"][1]["type"], "portmap");
}

#[test]
fn the_conflist_name_must_be_one_a_runtime_reads() {
    let scratch = Scratch::new("name");
    for bad in [
        "../10-fjord.conflist",
        "sub/10-fjord.conflist",
        "10-fjord.json5",
        ".conflist",
        "",
    ] {
        let mut plan = plan(&scratch.0);
        plan.conflist_name = bad.into();
        let err = install(&plan).unwrap_err().to_string();
        assert!(
            err.contains("must be a file name ending in .conflist"),
            "{bad}: {err}"
        );
        assert!(
            !plan.cni_bin_dir.exists(),
            "{bad}: binaries installed anyway"
        );
    }
}

/// The ConfigMap's template for the kubernetes store: no pools, the node's podCIDRs are.
const KUBERNETES_TEMPLATE: &str = r#"{
  "cniVersion": "1.0.0",
  "name": "fjord",
  "plugins": [{
    "type": "fjord",
    "ipam": {"type": "fjord-ipam", "nodeName": "__FJORD_NODE_NAME__", "store": "__FJORD_STORE__"}
  }]
}"#;

#[test]
fn the_kubernetes_store_renders_without_pools() {
    for store in ["kubernetes", "kubernetes:/srv/fjord/k8s"] {
        let out = render_conflist(KUBERNETES_TEMPLATE, "node-1", store).unwrap();
        let conf: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(conf["plugins"][0]["ipam"]["store"], store);
        assert_eq!(conf["plugins"][0]["ipam"]["nodeName"], "node-1");
    }
    // A pool the podCIDRs must lie in is still allowed, and still checked.
    let bounded = KUBERNETES_TEMPLATE.replace(
        "\"__FJORD_STORE__\"",
        "\"__FJORD_STORE__\", \"pools\": [\"10.244.0.0/33\"]",
    );
    let err = render_conflist(&bounded, "node-1", "kubernetes").unwrap_err();
    assert!(err.to_string().contains("10.244.0.0/33"), "{err}");
}

#[test]
fn a_spelled_out_store_or_node_must_be_the_daemons() {
    let literal_store = KUBERNETES_TEMPLATE.replace("__FJORD_STORE__", "kubernetes");
    // The same store in another spelling is the same store.
    render_conflist(
        &literal_store,
        "node-1",
        "kubernetes:/var/lib/fjord/kubernetes",
    )
    .unwrap();
    let cases = [
        (
            literal_store.clone(),
            "kubernetes:/srv/k8s",
            "is not the daemon's store",
        ),
        (
            KUBERNETES_TEMPLATE.replace(
                "__FJORD_STORE__",
                "dir:/var/lib/fjord/ipam\", \"pools\": [\"10.244.0.0/16\"], \"x\": \"",
            ),
            "kubernetes",
            "is not the daemon's store",
        ),
        (
            KUBERNETES_TEMPLATE.replace("__FJORD_NODE_NAME__", "node-2"),
            "kubernetes",
            "is not this node \"node-1\"",
        ),
        (
            literal_store.clone(),
            "nfs:/x",
            "the daemon's store \"nfs:/x\" (FJORD_STORE)",
        ),
    ];
    for (template, store, needle) in cases {
        let err = render_conflist(&template, "node-1", store)
            .unwrap_err()
            .to_string();
        assert!(err.contains(needle), "{needle:?} not in {err:?}");
    }
}
