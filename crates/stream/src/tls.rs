//! HTTPS for the streaming server: a rustls acceptor (aws-lc-rs provider,
//! as the rest of the workspace) from PEM certificate and key files.

use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;

use crate::config::TlsFiles;
use crate::error::StartError;

pub(crate) fn acceptor(files: &TlsFiles) -> Result<TlsAcceptor, StartError> {
    let cert_pem = std::fs::read(&files.cert_file).map_err(|source| StartError::TlsFile {
        what: "certificate",
        path: files.cert_file.clone(),
        source,
    })?;
    let key_pem = std::fs::read(&files.key_file).map_err(|source| StartError::TlsFile {
        what: "key",
        path: files.key_file.clone(),
        source,
    })?;
    let certs = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| StartError::TlsPem {
            what: "certificate",
            path: files.cert_file.clone(),
            reason: err.to_string(),
        })?;
    if certs.is_empty() {
        return Err(StartError::TlsPem {
            what: "certificate",
            path: files.cert_file.clone(),
            reason: "no CERTIFICATE block".into(),
        });
    }
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|err| StartError::TlsPem {
        what: "key",
        path: files.key_file.clone(),
        reason: err.to_string(),
    })?;
    let mut config = ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|err| StartError::Tls(err.to_string()))?;
    // HTTP/1.1 only: upgrades don't exist in HTTP/2.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}
