//! `migbench tls-init DIR`: makes the files a TLS directory holds: a CA
//! (`ca.pem`, its key `ca-key.pem`) and one certificate signed by it
//! (`cert.pem`, `key.pem`) valid for localhost, 127.0.0.1 and the given
//! hosts, usable as the destination's server certificate and the source's
//! client certificate alike. Copy the directory to every host.

use crate::cli::TlsInitArgs;
use anyhow::{bail, Context, Result};
use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose};
use std::process::ExitCode;

/// `migbench tls-init`.
pub fn init(args: TlsInitArgs) -> Result<ExitCode> {
    let files = ["ca.pem", "ca-key.pem", "cert.pem", "key.pem"];
    for f in files {
        if args.dir.join(f).exists() {
            bail!("{} exists already; choose an empty directory", args.dir.join(f).display());
        }
    }
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).context("CA parameters")?;
    ca_params.distinguished_name.push(DnType::CommonName, "migbench migration CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_key = KeyPair::generate().context("generating the CA key")?;
    let ca = ca_params.self_signed(&ca_key).context("signing the CA")?;
    let issuer = rcgen::Issuer::from_params(&ca_params, &ca_key);

    let mut names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
    names.extend(args.host.iter().filter(|h| !h.is_empty()).cloned());
    let mut params = CertificateParams::new(names.clone()).context("certificate parameters (check --host)")?;
    params.distinguished_name.push(DnType::CommonName, "migbench VMM");
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
    let key = KeyPair::generate().context("generating the key")?;
    let cert = params.signed_by(&key, &issuer).context("signing the certificate")?;

    std::fs::create_dir_all(&args.dir).with_context(|| format!("creating {}", args.dir.display()))?;
    let write = |name: &str, text: String, private: bool| -> Result<()> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let path = args.dir.join(name);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(if private { 0o600 } else { 0o644 })
            .open(&path)
            .with_context(|| format!("creating {}", path.display()))?;
        f.write_all(text.as_bytes()).with_context(|| format!("writing {}", path.display()))
    };
    write("ca.pem", ca.pem(), false)?;
    write("ca-key.pem", ca_key.serialize_pem(), true)?;
    write("cert.pem", cert.pem(), false)?;
    write("key.pem", key.serialize_pem(), true)?;
    eprintln!("migbench: TLS directory {} for {}", args.dir.display(), names.join(", "));
    Ok(ExitCode::SUCCESS)
}
