//! Karpenter's own v1 configuration examples (aws/karpenter-provider-aws `examples/v1/`, kept
//! verbatim in `tests/upstream/`): each validates, or is refused with an error that says why.
//! A file added upstream and copied here without an expectation fails the test, as does a file
//! whose outcome changes.

use std::path::PathBuf;

use nodewright_core::Config;
use nodewright_core::nodepool::UnknownFields;

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/upstream/karpenter-provider-aws/examples/v1")
}

/// Every file's expected outcome: None validates; Some(text) is refused with an error holding it.
const EXPECTED: &[(&str, Option<&str>)] = &[
    ("100-cpu-limit.yaml", None),
    ("al2-custom-ami.yaml", None),
    ("al2-custom-userdata.yaml", None),
    ("al2-kubelet-log-query.yaml", None),
    ("al2023-custom-userdata.yaml", None),
    ("bottlerocket.yaml", None),
    ("br-custom-userdata.yaml", None),
    ("custom-family-with-alias.yaml", None),
    ("custom-family.yaml", None),
    ("general-purpose.yaml", None),
    ("instance-store-ephemeral-storage.yaml", None),
    ("large-instances.yaml", None),
    ("max-node-lifetime.yaml", None),
    ("min-values-family.yaml", None),
    ("min-values-multiple-keys.yaml", None),
    ("multiple-arch.yaml", None),
    ("multiple-ebs.yaml", None),
    ("spot.yaml", None),
    ("windows-2019.yaml", Some("Windows nodes are not supported")),
    ("windows-2022.yaml", Some("Windows nodes are not supported")),
    ("windows-2025.yaml", Some("Windows nodes are not supported")),
    // Upstream's own mistake: the nodeClassRef group carries a version.
    (
        "windows-custom-userdata.yaml",
        Some("nodeClassRef.group: \"karpenter.k8s.aws/v1\" is not karpenter.k8s.aws"),
    ),
];

#[test]
fn every_upstream_v1_example_validates_or_is_refused_saying_why() {
    let mut files: Vec<String> = std::fs::read_dir(dir())
        .expect("the upstream examples are in the repository")
        .map(|e| e.expect("readable").file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yaml"))
        .collect();
    files.sort();
    let listed: Vec<&str> = EXPECTED.iter().map(|(f, _)| *f).collect();
    assert_eq!(
        files, listed,
        "every example has an expectation, and every expectation a file"
    );
    let mut wrong = Vec::new();
    for (file, expected) in EXPECTED {
        let text = std::fs::read_to_string(dir().join(file)).expect("readable");
        let (config, diags) = Config::parse_all_with(&[(text, file.to_string())], UnknownFields::Error);
        match (expected, &config) {
            (None, Some(c)) if diags.errors.is_empty() && !c.node_pools.is_empty() => {}
            (Some(why), None) if diags.errors.iter().any(|e| e.contains(why)) => {}
            _ => wrong.push(format!(
                "{file}: expected {}, got errors {:?}",
                expected.map_or("to validate".to_string(), |w| format!("an error with {w:?}")),
                diags.errors
            )),
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}
