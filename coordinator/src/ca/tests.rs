//! Unit tests: issue, then read the identity back; name validation; no overwrites; key modes.

use std::os::unix::fs::PermissionsExt;

use super::*;

fn new_ca() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("ca");
    create(&dir, &CreateOptions::default()).expect("create CA");
    (tmp, dir)
}

fn der_of(path: &Path) -> Vec<u8> {
    let pem = std::fs::read_to_string(path).expect("read cert");
    let (_, pem) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).expect("pem");
    pem.contents
}

#[test]
fn agent_identity_round_trips() {
    let (_tmp, dir) = new_ca();
    let id = Identity::agent("prod-eu-1").unwrap();
    let files = issue(&dir, &id, Validity::days(30)).unwrap();
    assert_eq!(files.cert, dir.join("agent-prod-eu-1.pem"));
    assert_eq!(files.key, dir.join("agent-prod-eu-1-key.pem"));
    let der = der_of(&files.cert);
    assert_eq!(
        identity_of(&der).unwrap(),
        Identity::Agent {
            cluster: "prod-eu-1".into()
        }
    );

    let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
    let cn = cert
        .subject()
        .iter_common_name()
        .next()
        .unwrap()
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(cn, "agent:prod-eu-1");
    let eku = cert.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.client_auth && !eku.server_auth);
    assert!(!cert.is_ca());
}

#[test]
fn operator_identity_round_trips() {
    let (_tmp, dir) = new_ca();
    for (name, role) in [("alice", Role::Viewer), ("bob", Role::Operator)] {
        let id = Identity::operator(name, role.as_str()).unwrap();
        let files = issue(&dir, &id, Validity::days(1)).unwrap();
        assert_eq!(files.cert, dir.join(format!("operator-{name}.pem")));
        let got = identity_of(&der_of(&files.cert)).unwrap();
        assert_eq!(
            got,
            Identity::Operator {
                name: name.into(),
                role
            }
        );
    }
}

#[test]
fn server_cert_has_default_and_extra_sans() {
    let tmp = tempfile::tempdir().unwrap();
    let opts = CreateOptions {
        sans: vec!["coord.example.com".into(), "10.0.0.7".into()],
        ..CreateOptions::default()
    };
    let (ca_files, server) = create(tmp.path(), &opts).unwrap();
    let der = der_of(&server.cert);
    let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
    let names: Vec<String> = cert
        .subject_alternative_name()
        .unwrap()
        .unwrap()
        .value
        .general_names
        .iter()
        .map(|n| n.to_string())
        .collect();
    for want in ["DNSName(localhost)", "DNSName(coord.example.com)"] {
        assert!(names.iter().any(|n| n == want), "{want} missing from {names:?}");
    }
    assert_eq!(
        names.iter().filter(|n| n.starts_with("IPAddress")).count(),
        2,
        "{names:?}"
    );
    assert!(cert.extended_key_usage().unwrap().unwrap().value.server_auth);
    // The server certificate names no Flotilla identity.
    assert!(matches!(identity_of(&der), Err(CaError::NoIdentity(_))));

    let ca_der = der_of(&ca_files.cert);
    let (_, ca) = x509_parser::parse_x509_certificate(&ca_der).unwrap();
    assert!(ca.is_ca());
    let years = (ca.validity().not_after.timestamp() - ca.validity().not_before.timestamp()) / 86_400 / 365;
    assert_eq!(years, 10);
}

#[test]
fn names_are_validated_with_the_flag() {
    for bad in ["", "Prod", "-a", "a-", "a_b", "a.b", &"a".repeat(64)] {
        let err = Identity::agent(bad).unwrap_err();
        assert!(
            matches!(err, CaError::InvalidName { flag: "--agent", .. }),
            "{bad:?}: {err}"
        );
        assert!(err.to_string().contains("DNS-1123"));
    }
    assert!(Identity::agent(&"a".repeat(63)).is_ok());
    assert!(Identity::agent("0-a").is_ok());
    let err = Identity::operator("Alice", "viewer").unwrap_err();
    assert!(err.to_string().starts_with("invalid --operator `Alice`"), "{err}");
    let err = Identity::operator("alice", "admin").unwrap_err();
    assert!(matches!(err, CaError::InvalidRole(ref r) if r == "admin"));
    assert!(err.to_string().contains("--role"));

    let tmp = tempfile::tempdir().unwrap();
    for bad in ["", "a..b", "-x.com", "a b", "spiffe://x"] {
        let opts = CreateOptions {
            sans: vec![bad.into()],
            ..CreateOptions::default()
        };
        let err = create(tmp.path(), &opts).unwrap_err();
        assert!(matches!(err, CaError::InvalidSan(_)), "{bad:?}: {err}");
    }
    // Nothing was written by the failed attempts.
    assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0);
}

#[test]
fn refuses_to_overwrite() {
    let (_tmp, dir) = new_ca();
    let before = std::fs::read(dir.join(CA_KEY)).unwrap();
    let err = create(&dir, &CreateOptions::default()).unwrap_err();
    assert!(
        matches!(err, CaError::AlreadyExists(ref p) if p == &dir.join(CA_CERT)),
        "{err}"
    );
    assert!(err.to_string().contains("refusing to overwrite"));
    assert_eq!(std::fs::read(dir.join(CA_KEY)).unwrap(), before);

    let id = Identity::agent("c1").unwrap();
    issue(&dir, &id, Validity::days(1)).unwrap();
    let err = issue(&dir, &id, Validity::days(1)).unwrap_err();
    assert!(matches!(err, CaError::AlreadyExists(_)), "{err}");
}

#[test]
fn issue_without_ca_says_how_to_create_one() {
    let tmp = tempfile::tempdir().unwrap();
    let err = issue(tmp.path(), &Identity::agent("c1").unwrap(), Validity::days(1)).unwrap_err();
    assert!(matches!(err, CaError::NoCa { .. }));
    assert!(err.to_string().contains("ca init --dir"), "{err}");
}

#[test]
fn keys_are_0600() {
    let (_tmp, dir) = new_ca();
    let files = issue(&dir, &Identity::agent("c1").unwrap(), Validity::days(1)).unwrap();
    for key in [dir.join(CA_KEY), dir.join("coordinator-key.pem"), files.key] {
        let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", key.display());
    }
    let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700);
}

#[test]
fn identity_of_rejects_garbage_and_foreign_uris() {
    assert!(matches!(
        identity_of(b"not a cert"),
        Err(CaError::BadCertificate(_))
    ));
    assert_eq!(Identity::from_uri("spiffe://flotilla/agent/Bad"), None);
    assert_eq!(Identity::from_uri("spiffe://flotilla/operator/admin/x"), None);
    assert_eq!(Identity::from_uri("spiffe://other/agent/x"), None);
    assert_eq!(Identity::from_uri("spiffe://flotilla/agent/a/b"), None);
}
