// Guest trust of the sandbox's msb CA (INIT.ca): the host's TLS interceptor issues certificates
// under that CA, so the agent installs it where the guest's TLS clients look: the distro CA
// bundles (Debian/Alpine, Fedora/RHEL, BSD-style cert.pem), its own /etc/msb/ca.pem, and the
// environment variables that OpenSSL, Python requests, curl and Node read.

use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::json::Value;
use crate::message::{env_get, env_set};

/// Largest INIT.ca accepted: a CA chain is a few KiB; this leaves room without inviting abuse.
pub const MAX_CA: usize = 64 * 1024;
/// The msb CA alone, for tools that take one extra CA file (NODE_EXTRA_CA_CERTS).
pub const CA_FILE: &str = "/etc/msb/ca.pem";
/// The bundles TLS libraries read by default, in the order the env variables prefer them.
pub const BUNDLES: [&str; 3] = ["/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt", "/etc/ssl/cert.pem"];
/// Created (holding just the msb CA) when the image has none of BUNDLES.
const DEFAULT_BUNDLE: &str = BUNDLES[0];
/// A bundle is read whole to look for the CA; a real one is well under 1 MiB. The bound keeps a
/// hostile image's giant file from exhausting guest memory.
const MAX_BUNDLE: u64 = 16 * 1024 * 1024;

const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
const END: &str = "-----END CERTIFICATE-----";

/// Parses INIT.ca: one or more PEM certificate blocks and whitespace, nothing else. Returns the
/// blocks re-emitted with `\n` line ends, so "already in the bundle" is an exact text match
/// whatever line ends the host used.
pub fn parse(v: &Value) -> Result<String, String> {
    let pem = v.as_str().ok_or_else(|| format!("INIT.ca must be a PEM string, got {}", v.kind()))?;
    parse_pem(pem)
}

pub fn parse_pem(pem: &str) -> Result<String, String> {
    if pem.len() > MAX_CA {
        return Err(format!("INIT.ca is {} bytes; at most {MAX_CA} (64 KiB) of PEM certificates", pem.len()));
    }
    if pem.contains('\0') {
        return Err("INIT.ca contains a NUL byte; it must be PEM text".into());
    }
    let mut out = String::with_capacity(pem.len());
    let mut blocks = 0;
    // Base64 characters of the open block; None outside a block.
    let mut body: Option<usize> = None;
    let mut padded = false;
    for (i, line) in pem.lines().enumerate() {
        let n = i + 1;
        let line = line.trim();
        match body {
            None if line.is_empty() => {}
            None if line == BEGIN => {
                body = Some(0);
                padded = false;
                out.push_str(BEGIN);
                out.push('\n');
            }
            // Only the header line is named: anything else could be key material sent by mistake.
            None if line.starts_with("-----BEGIN ") && line.len() <= 64 => {
                return Err(format!("INIT.ca line {n}: only CERTIFICATE blocks are accepted, got {line:?}"))
            }
            None => return Err(format!("INIT.ca line {n}: expected {BEGIN} or a blank line outside a certificate")),
            Some(0) if line == END => return Err(format!("INIT.ca line {n}: certificate block {} is empty", blocks + 1)),
            Some(len) if line == END => {
                if len % 4 != 0 {
                    return Err(format!("INIT.ca certificate block {} is not valid base64 (length {len})", blocks + 1));
                }
                body = None;
                blocks += 1;
                out.push_str(END);
                out.push('\n');
            }
            Some(len) => {
                let valid = !line.is_empty()
                    && !padded
                    && line.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/' || b == b'=')
                    && !line.trim_end_matches('=').contains('=');
                if !valid {
                    return Err(format!("INIT.ca line {n} inside certificate block {} is not base64", blocks + 1));
                }
                padded = line.ends_with('=');
                body = Some(len + line.len());
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    if body.is_some() {
        return Err(format!("INIT.ca ends inside certificate block {} (no {END} line)", blocks + 1));
    }
    if blocks == 0 {
        return Err(format!("INIT.ca holds no certificate; expected one or more {BEGIN} blocks"));
    }
    Ok(out)
}

/// What `install` did: the bundle the env variables should name.
#[derive(Debug, PartialEq)]
pub struct Installed {
    /// The first of BUNDLES that now holds the CA (appended now or by an earlier boot), or the
    /// one created; a path inside the sandbox.
    pub bundle: String,
    /// Sandbox paths the CA was appended to (or created) on this call.
    pub written: Vec<String>,
}

/// Installs `pem` (as `parse` returned it) under `root`, the sandbox root as seen from here ("/"
/// once the agent has entered it). Errors name the file.
pub fn install(root: &Path, pem: &str) -> Result<Installed, String> {
    let at = |p: &str| -> PathBuf { root.join(p.trim_start_matches('/')) };
    let ca = at(CA_FILE);
    if let Some(dir) = ca.parent() {
        fs::create_dir_all(dir).map_err(|e| format!("cannot create {} for the msb CA: {e}", parent_of(CA_FILE)))?;
    }
    write_new(&ca, pem.as_bytes()).map_err(|e| format!("cannot write the msb CA to {CA_FILE}: {e}"))?;

    let mut bundle = None;
    let mut written = Vec::new();
    for path in BUNDLES {
        let file = at(path);
        // metadata follows symlinks, as the TLS libraries will; a dangling link is no bundle, and
        // a directory or device there is not one either (reading a FIFO would block forever).
        match fs::metadata(&file) {
            Ok(m) if m.is_file() => {}
            _ => continue,
        }
        let text = read_bounded(&file).map_err(|e| format!("cannot read the CA bundle {path}: {e}"))?;
        // A restarted persistent sandbox already has it, and on many distros one of these paths
        // is a link to another, already updated in this loop.
        if !contains(&text, pem.as_bytes()) {
            let mut add = Vec::with_capacity(pem.len() + 1);
            if !text.is_empty() && !text.ends_with(b"\n") {
                add.push(b'\n');
            }
            add.extend_from_slice(pem.as_bytes());
            append(&file, &add).map_err(|e| format!("cannot add the msb CA to the bundle {path}: {e}"))?;
            written.push(path.to_string());
        }
        bundle.get_or_insert(path);
    }
    let bundle = match bundle {
        Some(b) => b,
        None => {
            let file = at(DEFAULT_BUNDLE);
            if let Some(dir) = file.parent() {
                fs::create_dir_all(dir).map_err(|e| format!("cannot create {} for the CA bundle: {e}", parent_of(DEFAULT_BUNDLE)))?;
            }
            write_new(&file, pem.as_bytes()).map_err(|e| format!("cannot create the CA bundle {DEFAULT_BUNDLE}: {e}"))?;
            written.push(DEFAULT_BUNDLE.to_string());
            DEFAULT_BUNDLE
        }
    };
    Ok(Installed { bundle: bundle.to_string(), written })
}

/// Points the TLS clients' CA variables at the installed files in the base exec environment,
/// leaving any the host's INIT.env set itself (the user's choice wins).
pub fn set_env(env: &mut Vec<(String, String)>, bundle: &str) {
    for (key, value) in [
        ("SSL_CERT_FILE", bundle),
        ("REQUESTS_CA_BUNDLE", bundle),
        ("CURL_CA_BUNDLE", bundle),
        ("NODE_EXTRA_CA_CERTS", CA_FILE),
    ] {
        if env_get(env, key).is_none() {
            env_set(env, key, value);
        }
    }
}

fn parent_of(path: &str) -> &str {
    path.rsplit_once('/').map_or("/", |(dir, _)| dir)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Creates or truncates `path` with mode 0644 exactly (not masked by the umask).
fn write_new(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut f = fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o644).open(path)?;
    f.write_all(bytes)?;
    f.set_permissions(fs::Permissions::from_mode(0o644))?;
    f.sync_all()
}

fn append(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut f = fs::OpenOptions::new().append(true).open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

fn read_bounded(path: &Path) -> std::io::Result<Vec<u8>> {
    let mut text = Vec::new();
    fs::File::open(path)?.take(MAX_BUNDLE + 1).read_to_end(&mut text)?;
    if text.len() as u64 > MAX_BUNDLE {
        return Err(std::io::Error::other(format!("larger than {} MiB; not a CA bundle", MAX_BUNDLE >> 20)));
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    // Not a real certificate: the agent checks PEM shape, not DER (the host made the CA).
    const CERT_A: &str = "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIUQUFB\nQUFBQUFBQUFBQUFBQUFBQQ==\n-----END CERTIFICATE-----\n";
    const CERT_B: &str = "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIUQkJC\n-----END CERTIFICATE-----\n";
    const DEBIAN_BUNDLE: &str = "# a distro bundle\n-----BEGIN CERTIFICATE-----\nTUlJRGRE\n-----END CERTIFICATE-----";

    /// A fresh directory standing in for the sandbox root.
    struct Root(PathBuf);

    impl Root {
        fn new(name: &str) -> Root {
            let dir = std::env::temp_dir().join(format!("msb-trust-{name}-{}", std::process::id()));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(&dir).unwrap();
            Root(dir)
        }
        fn path(&self, p: &str) -> PathBuf {
            self.0.join(p.trim_start_matches('/'))
        }
        fn write(&self, p: &str, text: &str) {
            fs::create_dir_all(self.path(p).parent().unwrap()).unwrap();
            fs::write(self.path(p), text).unwrap();
        }
        fn read(&self, p: &str) -> String {
            fs::read_to_string(self.path(p)).unwrap()
        }
        fn link(&self, p: &str, target: &str) {
            fs::create_dir_all(self.path(p).parent().unwrap()).unwrap();
            symlink(target, self.path(p)).unwrap();
        }
    }

    impl Drop for Root {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn appends_to_an_existing_bundle_and_writes_the_ca_alone() {
        let root = Root::new("exists");
        root.write("/etc/pki/tls/certs/ca-bundle.crt", DEBIAN_BUNDLE);
        let pem = parse_pem(CERT_A).unwrap();
        let got = install(&root.0, &pem).unwrap();
        assert_eq!(got, Installed { bundle: "/etc/pki/tls/certs/ca-bundle.crt".into(), written: vec!["/etc/pki/tls/certs/ca-bundle.crt".into()] });
        // The bundle had no final newline: one is added so the BEGIN line starts a line.
        assert_eq!(root.read("/etc/pki/tls/certs/ca-bundle.crt"), format!("{DEBIAN_BUNDLE}\n{CERT_A}"));
        assert_eq!(root.read(CA_FILE), CERT_A);
        assert_eq!(mode(&root.path(CA_FILE)), 0o644);
        // Paths that did not exist are not created when one bundle did.
        assert!(!root.path("/etc/ssl/certs/ca-certificates.crt").exists());
        assert!(!root.path("/etc/ssl/cert.pem").exists());
    }

    #[test]
    fn linked_bundles_get_one_copy() {
        let root = Root::new("links");
        root.write("/etc/ssl/certs/ca-certificates.crt", &format!("{DEBIAN_BUNDLE}\n"));
        root.link("/etc/ssl/cert.pem", "certs/ca-certificates.crt");
        root.link("/etc/pki/tls/certs/ca-bundle.crt", "../../../ssl/certs/ca-certificates.crt");
        let got = install(&root.0, &parse_pem(CERT_A).unwrap()).unwrap();
        assert_eq!(got.bundle, "/etc/ssl/certs/ca-certificates.crt");
        assert_eq!(got.written, ["/etc/ssl/certs/ca-certificates.crt"]);
        let text = root.read("/etc/ssl/cert.pem");
        assert_eq!(text, format!("{DEBIAN_BUNDLE}\n{CERT_A}"));
        assert_eq!(text.matches(BEGIN).count(), 2);
        assert!(fs::symlink_metadata(root.path("/etc/ssl/cert.pem")).unwrap().file_type().is_symlink(), "the link stays a link");
    }

    #[test]
    fn a_bundle_that_already_holds_the_ca_is_left_alone() {
        let root = Root::new("again");
        root.write("/etc/ssl/certs/ca-certificates.crt", DEBIAN_BUNDLE);
        let pem = parse_pem(CERT_A).unwrap();
        install(&root.0, &pem).unwrap();
        let once = root.read("/etc/ssl/certs/ca-certificates.crt");
        // A persistent sandbox boots again with its upper layer: nothing is added twice, yet the
        // bundle is still the one the env variables name.
        let again = install(&root.0, &pem).unwrap();
        assert_eq!(again, Installed { bundle: "/etc/ssl/certs/ca-certificates.crt".into(), written: vec![] });
        assert_eq!(root.read("/etc/ssl/certs/ca-certificates.crt"), once);
        // Written by the host with CRLF line ends, it is still recognised as the same CA.
        let crlf = parse_pem(&CERT_A.replace('\n', "\r\n")).unwrap();
        assert_eq!(install(&root.0, &crlf).unwrap().written, Vec::<String>::new());
        // A different CA (say a new MSB_HOME) is added.
        assert_eq!(install(&root.0, &parse_pem(CERT_B).unwrap()).unwrap().written, ["/etc/ssl/certs/ca-certificates.crt"]);
        assert_eq!(root.read("/etc/ssl/certs/ca-certificates.crt"), format!("{once}{CERT_B}"));
    }

    #[test]
    fn no_bundle_creates_the_default_one() {
        let root = Root::new("none");
        // A dangling link and a directory are not bundles.
        root.link("/etc/ssl/cert.pem", "/nowhere/cert.pem");
        fs::create_dir_all(root.path("/etc/pki/tls/certs/ca-bundle.crt")).unwrap();
        let pem = parse_pem(&format!("{CERT_A}\n{CERT_B}")).unwrap();
        let got = install(&root.0, &pem).unwrap();
        assert_eq!(got, Installed { bundle: DEFAULT_BUNDLE.into(), written: vec![DEFAULT_BUNDLE.into()] });
        assert_eq!(root.read(DEFAULT_BUNDLE), format!("{CERT_A}{CERT_B}"));
        assert_eq!(mode(&root.path(DEFAULT_BUNDLE)), 0o644);
        assert_eq!(root.read(CA_FILE), format!("{CERT_A}{CERT_B}"));
    }

    #[test]
    fn an_unwritable_file_is_named_in_the_error() {
        let root = Root::new("ro");
        // A directory where the CA file must go stands in for a read-only root (tests run as
        // root, for whom permission bits do not stop a write).
        fs::create_dir_all(root.path(CA_FILE)).unwrap();
        let e = install(&root.0, &parse_pem(CERT_A).unwrap()).unwrap_err();
        assert!(e.contains(CA_FILE), "{e}");
        fs::remove_dir(root.path(CA_FILE)).unwrap();
        root.write("/etc/ssl", "a file where a directory must be");
        let e = install(&root.0, &parse_pem(CERT_A).unwrap()).unwrap_err();
        assert!(e.contains(DEFAULT_BUNDLE) || e.contains("/etc/ssl/certs"), "{e}");
    }

    #[test]
    fn env_points_at_the_bundle_unless_init_env_chose() {
        let mut env = vec![("PATH".to_string(), "/bin".to_string()), ("CURL_CA_BUNDLE".to_string(), "/mine.pem".to_string())];
        set_env(&mut env, "/etc/pki/tls/certs/ca-bundle.crt");
        assert_eq!(env_get(&env, "SSL_CERT_FILE"), Some("/etc/pki/tls/certs/ca-bundle.crt"));
        assert_eq!(env_get(&env, "REQUESTS_CA_BUNDLE"), Some("/etc/pki/tls/certs/ca-bundle.crt"));
        assert_eq!(env_get(&env, "CURL_CA_BUNDLE"), Some("/mine.pem"), "the user's choice wins");
        assert_eq!(env_get(&env, "NODE_EXTRA_CA_CERTS"), Some(CA_FILE));
        assert_eq!(env.len(), 5);
    }

    #[test]
    fn pem_is_checked_and_normalised() {
        assert_eq!(parse_pem(&format!("\n  {}\r\n\t\n", CERT_A.replace('\n', "\r\n"))).unwrap(), CERT_A);
        assert_eq!(parse_pem(&format!("{CERT_A}{CERT_B}")).unwrap(), format!("{CERT_A}{CERT_B}"));
        let huge = format!("{BEGIN}\n{}\n{END}\n", "QUFB".repeat(MAX_CA / 4));
        for (pem, why) in [
            ("", "no certificate"),
            ("  \n\n", "no certificate"),
            (huge.as_str(), "at most 65536"),
            ("-----BEGIN CERTIFICATE-----\nQUFB\0\n-----END CERTIFICATE-----\n", "NUL"),
            ("-----BEGIN PRIVATE KEY-----\nQUFB\n-----END PRIVATE KEY-----\n", "only CERTIFICATE blocks"),
            ("hello\n", "line 1: expected"),
            ("-----BEGIN CERTIFICATE-----\nQUFB\n", "no -----END CERTIFICATE----- line"),
            ("-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n", "is empty"),
            ("-----BEGIN CERTIFICATE-----\nQU*B\n-----END CERTIFICATE-----\n", "line 2 inside certificate block 1 is not base64"),
            ("-----BEGIN CERTIFICATE-----\nQUFBQ\n-----END CERTIFICATE-----\n", "not valid base64"),
            ("-----BEGIN CERTIFICATE-----\nQU=B\n-----END CERTIFICATE-----\n", "not base64"),
            ("-----BEGIN CERTIFICATE-----\nQUE=\nQUFB\n-----END CERTIFICATE-----\n", "not base64"),
            ("-----BEGIN CERTIFICATE-----\nQUFB\n\n-----END CERTIFICATE-----\n", "not base64"),
        ] {
            let e = parse_pem(pem).unwrap_err();
            assert!(e.contains(why), "{pem:?}: {e}");
            assert!(e.starts_with("INIT.ca"), "{e}");
        }
        let e = parse_pem(&format!("{CERT_A}MIIsecretkeymaterial\n")).unwrap_err();
        assert!(!e.contains("secret"), "a stray line is not echoed: {e}");
        assert!(parse(&Value::Number(1.0)).unwrap_err().contains("must be a PEM string"));
    }
}
