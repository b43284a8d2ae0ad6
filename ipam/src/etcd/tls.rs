//! The TLS side of the etcd client: PEM files into tonic's client config, and errors
//! told with their causes (tonic's "transport error" alone does not say that the
//! server's certificate was signed by another CA).

use crate::config::EtcdTls;
use crate::error::IpamError;
use etcd_client::{Certificate, Identity, TlsOptions};
use std::path::Path;

/// The client config for `files`: the CA as the only trust anchor, and the client
/// identity when there is one.
pub fn client_config(files: &EtcdTls) -> Result<TlsOptions, IpamError> {
    let ca = read_pem(
        &files.ca_cert_file,
        "CERTIFICATE",
        "the etcd CA certificate",
    )?;
    let mut config = TlsOptions::new().ca_certificate(Certificate::from_pem(ca));
    if let Some(client) = &files.client {
        let cert = read_pem(
            &client.cert_file,
            "CERTIFICATE",
            "the etcd client certificate",
        )?;
        let key = read_pem(&client.key_file, "PRIVATE KEY", "the etcd client key")?;
        config = config.identity(Identity::from_pem(cert, key));
    }
    Ok(config)
}

/// The file's bytes, if it holds a PEM block whose label ends in `label`
/// (`CERTIFICATE`; `PRIVATE KEY` also matches `RSA PRIVATE KEY`, `EC PRIVATE KEY`).
fn read_pem(path: &Path, label: &str, what: &str) -> Result<Vec<u8>, IpamError> {
    let bytes = std::fs::read(path)
        .map_err(|e| IpamError::Config(format!("{what} {} cannot be read: {e}", path.display())))?;
    let text = String::from_utf8_lossy(&bytes);
    let has_block = text
        .lines()
        .any(|l| l.starts_with("-----BEGIN ") && l.ends_with(&format!("{label}-----")));
    if !has_block {
        return Err(IpamError::Config(format!(
            "{what} {} is not PEM: it has no \"-----BEGIN ...{label}-----\" line",
            path.display()
        )));
    }
    Ok(bytes)
}

/// What a failure may be owed to in this configuration: etcd with `--client-cert-auth`
/// (how real clusters run) closes the connection of a client without a certificate,
/// which the client sees only as "connection closed".
pub fn hint(tls: Option<&EtcdTls>) -> &'static str {
    match tls {
        Some(EtcdTls { client: None, .. }) => {
            " (no client certificate is configured: an etcd with --client-cert-auth closes \
             connections without one; set the client certificate and key)"
        }
        _ => "",
    }
}

/// `e` and each of its sources, joined with ": ", repeats left out.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = vec![e.to_string()];
    let mut source = e.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = cause.source();
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ClientIdentity;

    fn scratch(tag: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("fjord-etcd-tls-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn unreadable_or_non_pem_files_are_configuration_errors_naming_the_file() {
        let dir = scratch("pem");
        let ca = dir.join("ca.crt");
        let missing = ca_only(&dir.join("missing.crt"));
        let err = client_config(&missing).unwrap_err();
        assert!(matches!(err, IpamError::Config(_)), "{err}");
        assert!(
            err.to_string().contains("missing.crt cannot be read"),
            "{err}"
        );
        std::fs::write(&ca, b"not a certificate\n").unwrap();
        let err = client_config(&ca_only(&ca)).unwrap_err();
        assert!(err.to_string().contains("is not PEM"), "{err}");
        std::fs::write(
            &ca,
            b"-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        client_config(&ca_only(&ca)).unwrap();
        let with_bad_key = EtcdTls {
            ca_cert_file: ca.clone(),
            client: Some(ClientIdentity {
                cert_file: ca.clone(),
                key_file: ca.clone(),
            }),
        };
        let err = client_config(&with_bad_key).unwrap_err();
        assert!(err.to_string().contains("the etcd client key"), "{err}");
        std::fs::remove_dir_all(dir).unwrap();
    }

    fn ca_only(path: &Path) -> EtcdTls {
        EtcdTls {
            ca_cert_file: path.to_path_buf(),
            client: None,
        }
    }

    #[test]
    fn the_chain_names_every_cause_once() {
        let inner = std::io::Error::other("invalid peer certificate: UnknownIssuer");
        let outer = std::io::Error::other(OuterError(inner));
        let text = error_chain(&outer);
        assert!(
            text.contains("transport error") && text.contains("UnknownIssuer"),
            "{text}"
        );
        assert_eq!(text.matches("UnknownIssuer").count(), 1, "{text}");
    }

    #[derive(Debug)]
    struct OuterError(std::io::Error);

    impl std::fmt::Display for OuterError {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("transport error")
        }
    }

    impl std::error::Error for OuterError {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }
}
