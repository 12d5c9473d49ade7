//! A throw-away certificate authority for TLS tests, made with `openssl` (Debian's
//! `openssl`, in scripts/packages.txt): `ca.pem`/`ca.key` and, for each
//! `(name, subjectAltName)`, `name.pem`/`name.key` signed by it (P-256 keys, valid for
//! two days, CN "not the name" so that only the SANs can count).

use std::path::Path;
use std::process::Command;

/// Writes the CA and the certificates into `dir`.
pub fn make(dir: &Path, certs: &[(&str, &str)]) {
    let openssl = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl runs (scripts/setup.sh)");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    let mut ca = vec!["req", "-x509"];
    ca.extend(ec);
    ca.extend([
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=test CA",
    ]);
    openssl(&ca);
    for (name, san) in certs {
        let (key, csr, pem, ext) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.pem"),
            format!("{name}.ext"),
        );
        std::fs::write(dir.join(&ext), format!("subjectAltName={san}\n")).unwrap();
        let mut req = vec!["req"];
        req.extend(ec);
        req.extend(["-keyout", &key, "-out", &csr, "-subj", "/CN=not the name"]);
        openssl(&req);
        openssl(&[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            &pem,
            "-days",
            "2",
            "-extfile",
            &ext,
        ]);
    }
}
