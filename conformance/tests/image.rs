//! deploy/Containerfile builds the image with a real `podman build` (Debian's podman 4.3,
//! buildah inside), in a builder that has nothing of this machine's packages, and the
//! image holds and runs what the DaemonSet runs.
//!
//! What stands in for what (docs/testing.md, "The image"):
//! - the build stage's `rust:1.95-bookworm` cannot be pulled here (no container
//!   registry): `conformance/scripts/builder-image.sh` makes a stand-in of Debian 12
//!   (debootstrap) with the C toolchain and Rust 1.95.0 laid out as the official image
//!   has it, and no protoc; it is imported under the official name, so the
//!   Containerfile's `FROM` is used as written;
//! - crates.io is reached here only through this machine's TLS setup, which a container
//!   does not have: the crates of Cargo.lock are vendored into the build context (with a
//!   `.cargo/config.toml` pointing cargo at them), so `cargo build --locked` inside the
//!   build reads exactly the locked sources without a download. Everything else, the
//!   apt-get of protoc among it, runs inside the build as written.

use fjord_conformance::podman::PrivatePodman;
use fjord_conformance::TempDir;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// The Containerfile's build stage image, under its official name.
const BUILDER_IMAGE: &str = "docker.io/library/rust:1.95-bookworm";
const IMAGE: &str = "localhost/fjord:image-test";
/// What the official image sets (docker-library's rust image).
const BUILDER_ENV: [&str; 4] = [
    "ENV RUSTUP_HOME=/usr/local/rustup",
    "ENV CARGO_HOME=/usr/local/cargo",
    "ENV PATH=/usr/local/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "ENV RUST_VERSION=1.95.0",
];
const BINARIES: [&str; 3] = ["fjord", "fjord-ipam", "fjord-routed"];
const BIN_DIR: &str = "opt/fjord/bin";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .unwrap()
}

fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

fn run_ok(cmd: &mut Command) -> Output {
    let out = run(cmd);
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        tail(&out.stdout),
        tail(&out.stderr)
    );
    out
}

/// The last 6000 bytes: a failed build's reason is at its end.
fn tail(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let start = text.len().saturating_sub(6000);
    let start = (start..text.len())
        .find(|&i| text.is_char_boundary(i))
        .unwrap_or(0);
    text[start..].to_string()
}

/// The stand-in's rootfs tarball, made once by the project's script.
fn builder_tarball() -> PathBuf {
    let out = run_ok(&mut Command::new(
        repo().join("conformance/scripts/builder-image.sh"),
    ));
    let path = String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .unwrap_or_default()
        .to_string();
    assert!(
        Path::new(&path).is_file(),
        "builder-image.sh printed {path:?}"
    );
    PathBuf::from(path)
}

/// The repository's files as git knows them (tracked and new, not ignored: no target/),
/// copied to `context`, with the locked crates vendored beside them.
fn make_context(context: &Path) {
    let files = run_ok(Command::new("git").arg("-C").arg(repo()).args([
        "ls-files",
        "-z",
        "--cached",
        "--others",
        "--exclude-standard",
    ]));
    let list = context.with_extension("files");
    let existing: Vec<u8> = files
        .stdout
        .split(|b| *b == 0)
        .filter(|f| !f.is_empty() && repo().join(String::from_utf8_lossy(f).as_ref()).exists())
        .flat_map(|f| f.iter().copied().chain([0]))
        .collect();
    std::fs::write(&list, existing).unwrap();
    std::fs::create_dir_all(context).unwrap();
    run_ok(Command::new("sh").arg("-c").arg(format!(
        "tar -C '{}' --null -T '{}' -cf - | tar -C '{}' -xf -",
        repo().display(),
        list.display(),
        context.display()
    )));
    run_ok(
        Command::new("cargo")
            .current_dir(repo())
            .args(["vendor", "--locked", "--versioned-dirs", "--quiet"])
            .arg(context.join("vendor"))
            .stdout(Stdio::null()),
    );
    std::fs::create_dir_all(context.join(".cargo")).unwrap();
    std::fs::write(
        context.join(".cargo/config.toml"),
        "[source.crates-io]\nreplace-with = \"vendored-sources\"\n\n\
         [source.vendored-sources]\ndirectory = \"vendor\"\n",
    )
    .unwrap();
}

/// Regular files of the image's file system, from `podman export` of a container made
/// from it (never started).
fn image_files(podman: &PrivatePodman) -> BTreeSet<String> {
    let name = "fjord-image-test-files";
    run_ok(podman.command().args(["create", "--name", name, IMAGE]));
    let mut export = podman.command();
    export
        .args(["export", name])
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut child = export.spawn().expect("podman export");
    let list = run_ok(
        Command::new("tar")
            .args(["-tv", "-f", "-"])
            .stdin(child.stdout.take().unwrap()),
    );
    assert!(child.wait().unwrap().success(), "podman export failed");
    run_ok(podman.command().args(["rm", name]));
    String::from_utf8_lossy(&list.stdout)
        .lines()
        .filter(|l| l.starts_with('-'))
        .filter_map(|l| l.split_whitespace().last())
        .map(|p| p.trim_start_matches("./").to_string())
        .collect()
}

#[test]
fn the_containerfile_builds_the_image_in_a_builder_without_the_hosts_packages() {
    let tarball = builder_tarball();
    let dir = TempDir::new("img");
    let podman = PrivatePodman::new(&dir.join("podman"), None);
    let mut import = podman.command();
    import.arg("import");
    for change in BUILDER_ENV.iter().chain(&["CMD [\"bash\"]"]) {
        import.args(["--change", change]);
    }
    run_ok(
        import
            .arg(&tarball)
            .arg(BUILDER_IMAGE)
            .stdout(Stdio::null()),
    );

    // The builder is clean: no protoc, no well-known protos, only Rust 1.95.0.
    let probe = run(podman.command().args([
        "run",
        "--rm",
        "--network",
        "none",
        BUILDER_IMAGE,
        "sh",
        "-c",
        "cargo --version; command -v protoc || echo no-protoc; \
         ls /usr/include/google/protobuf 2>/dev/null || echo no-protos",
    ]));
    let probe_out = String::from_utf8_lossy(&probe.stdout);
    assert!(
        probe.status.success()
            && probe_out.contains("cargo 1.95.0")
            && probe_out.contains("no-protoc")
            && probe_out.contains("no-protos"),
        "the builder stand-in is not clean: {probe_out} {}",
        String::from_utf8_lossy(&probe.stderr)
    );

    let context = dir.join("context");
    make_context(&context);
    // The RUN steps reach Debian's mirror (apt-get) from the build container; nothing
    // else leaves the machine (the crates are in the context).
    let build = run(podman
        .command()
        .args(["build", "--pull=never", "--network", "host"])
        .arg("-f")
        .arg(context.join("deploy/Containerfile"))
        .arg("--ignorefile")
        .arg(context.join("deploy/Containerfile.dockerignore"))
        .args(["-t", IMAGE])
        .arg(&context));
    assert!(
        build.status.success(),
        "podman build -f deploy/Containerfile failed ({}):\n{}\n{}",
        build.status,
        tail(&build.stdout),
        tail(&build.stderr)
    );

    // The image: the three static binaries and nothing else, the daemon as entrypoint.
    let want: BTreeSet<String> = BINARIES.iter().map(|b| format!("{BIN_DIR}/{b}")).collect();
    assert_eq!(image_files(&podman), want);
    let config = run_ok(podman.command().args([
        "image",
        "inspect",
        "--format",
        "{{json .Config.Entrypoint}} {{json .Config.Cmd}}",
        IMAGE,
    ]));
    assert_eq!(
        String::from_utf8_lossy(&config.stdout).trim(),
        "[\"/opt/fjord/bin/fjord-routed\"] [\"run\"]"
    );
    // They run with no C library in the image: static, as the Containerfile checks.
    let version =
        run_ok(
            podman
                .command()
                .args(["run", "--rm", "--network", "none", IMAGE, "--version"]),
        );
    assert!(
        String::from_utf8_lossy(&version.stdout).starts_with("fjord-routed "),
        "{}",
        String::from_utf8_lossy(&version.stdout)
    );
    for plugin in ["fjord", "fjord-ipam"] {
        let out = run_ok(podman.command().args([
            "run",
            "--rm",
            "--network",
            "none",
            "-e",
            "CNI_COMMAND=VERSION",
            "--entrypoint",
            &format!("/{BIN_DIR}/{plugin}"),
            IMAGE,
        ]));
        let answer: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{plugin} VERSION is not JSON: {e}"));
        assert!(
            answer["supportedVersions"]
                .as_array()
                .is_some_and(|v| v.iter().any(|s| s == "1.0.0")),
            "{plugin}: {answer}"
        );
    }
    drop(podman);
}
