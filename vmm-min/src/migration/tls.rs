//! Authenticated, encrypted migration: mutual TLS (rustls) on the
//! migration socket, like Cloud Hypervisor's `tls_dir` and QEMU's
//! `tls-creds`. A TLS directory holds `ca.pem` (the CA both sides trust),
//! `cert.pem` (this side's certificate chain, signed by that CA) and
//! `key.pem` (its private key); the same files serve as a server
//! certificate on the destination and a client certificate on the source.
//! The frames' CRC stays inside TLS, for accidents.
//!
//! rustls needs the one connection for both directions, while the
//! migration code reads and writes through separate halves; [`Shared`]
//! gives each half a handle on the same session (both halves live on one
//! thread, so a `RefCell` suffices).

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use std::cell::RefCell;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;

/// TLS credentials that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file is missing or unreadable.
    #[error("TLS: {}: {source}; a TLS directory holds ca.pem, cert.pem and key.pem (see `migbench tls-init`)", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    /// The files do not make a usable configuration.
    #[error("TLS: {0}")]
    Config(String),
}

/// Loaded credentials: client and server configurations for mutual TLS.
#[derive(Clone)]
pub struct TlsCredentials {
    dir: PathBuf,
    client: Arc<rustls::ClientConfig>,
    server: Arc<rustls::ServerConfig>,
}

impl std::fmt::Debug for TlsCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsCredentials").field("dir", &self.dir).finish_non_exhaustive()
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl TlsCredentials {
    /// Loads `dir/ca.pem`, `dir/cert.pem` and `dir/key.pem`.
    pub fn load(dir: &Path) -> Result<Self, TlsError> {
        let read = |name: &str| dir.join(name);
        let certs = |path: PathBuf| -> Result<Vec<CertificateDer<'static>>, TlsError> {
            CertificateDer::pem_file_iter(&path)
                .and_then(|it| it.collect::<Result<Vec<_>, _>>())
                .map_err(|source| TlsError::Read { path, source })
        };
        let ca = certs(read("ca.pem"))?;
        let chain = certs(read("cert.pem"))?;
        let key_path = read("key.pem");
        let key =
            PrivateKeyDer::from_pem_file(&key_path).map_err(|source| TlsError::Read { path: key_path, source })?;
        let mut roots = rustls::RootCertStore::empty();
        for c in ca {
            roots.add(c).map_err(|e| TlsError::Config(format!("ca.pem: {e}")))?;
        }
        let roots = Arc::new(roots);
        let cfg = |e: rustls::Error| TlsError::Config(e.to_string());
        let client = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(cfg)?
            .with_root_certificates(roots.clone())
            .with_client_auth_cert(chain.clone(), key.clone_key())
            .map_err(cfg)?;
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(roots, provider())
            .build()
            .map_err(|e| TlsError::Config(format!("client verifier: {e}")))?;
        let server = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(cfg)?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, key)
            .map_err(cfg)?;
        Ok(Self { dir: dir.to_owned(), client: Arc::new(client), server: Arc::new(server) })
    }

    /// The directory they came from.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A client session to `host` (a name or an IP address in the
    /// destination's certificate).
    pub fn client(&self, host: &str) -> Result<rustls::ClientConnection, TlsError> {
        let name = ServerName::try_from(host.to_owned())
            .map_err(|e| TlsError::Config(format!("destination name '{host}': {e}")))?;
        rustls::ClientConnection::new(self.client.clone(), name).map_err(|e| TlsError::Config(e.to_string()))
    }

    /// A server session.
    pub fn server(&self) -> Result<rustls::ServerConnection, TlsError> {
        rustls::ServerConnection::new(self.server.clone()).map_err(|e| TlsError::Config(e.to_string()))
    }
}

/// The reading and writing halves of a migration connection.
pub type Halves = (Box<dyn Read>, Box<dyn Write>);

/// One TLS session over `S`, shared by a reader and a writer half.
pub struct Shared<C, S: Read + Write>(Rc<RefCell<rustls::StreamOwned<C, S>>>);

impl<C, S: Read + Write> Shared<C, S> {
    /// Wraps a session into two handles.
    pub fn new(stream: rustls::StreamOwned<C, S>) -> (Self, Self) {
        let rc = Rc::new(RefCell::new(stream));
        (Self(rc.clone()), Self(rc))
    }
}

impl<C, S, D> Read for Shared<C, S>
where
    C: std::ops::DerefMut<Target = rustls::ConnectionCommon<D>>,
    S: Read + Write,
    D: rustls::SideData,
{
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.borrow_mut().read(buf)
    }
}

impl<C, S, D> Write for Shared<C, S>
where
    C: std::ops::DerefMut<Target = rustls::ConnectionCommon<D>>,
    S: Read + Write,
    D: rustls::SideData,
{
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.borrow_mut().write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.borrow_mut().flush()
    }
}
