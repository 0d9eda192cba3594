//! The sign-ins `countersign login` keeps: one JSON file per admin address
//! under `<cache dir>/countersign/tokens/` (or `$COUNTERSIGN_CACHE_DIR/tokens/`),
//! readable by the user alone, replaced whole so no reader sees half a file.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Overrides `<cache dir>/countersign` (tests, and users who keep it elsewhere).
pub(crate) const CACHE_DIR_ENV: &str = "COUNTERSIGN_CACHE_DIR";

/// A token is renewed when it expires within this many seconds, so that a
/// call started with it does not arrive with an expired one.
pub(crate) const REFRESH_MARGIN_SECS: u64 = 30;

/// A token: serialized as is, never shown by `Debug`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub(crate) struct Secret(String);

impl Secret {
    pub(crate) fn new(s: String) -> Self {
        Self(s)
    }

    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// One admin API's sign-in, as cached.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SignIn {
    /// The admin address, as [`crate::cli::approvals::connect::Server::address`] writes it.
    pub admin: String,
    pub issuer: String,
    pub client_id: String,
    pub id_token: Secret,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<Secret>,
    /// The ID token's `exp` (Unix seconds).
    pub expires_at: u64,
}

impl SignIn {
    /// Whether the ID token expires within [`REFRESH_MARGIN_SECS`] of `now`
    /// (Unix seconds), or already has.
    pub(crate) fn needs_refresh(&self, now: u64) -> bool {
        self.expires_at <= now.saturating_add(REFRESH_MARGIN_SECS)
    }
}

/// The `exp` of a JWT, read without verifying it: only to know when to
/// renew; the admin API verifies every token it is sent.
pub(crate) fn expiry(jwt: &str) -> Option<u64> {
    let exp = crate::idp::unverified_claims(jwt)?.remove("exp")?;
    exp.as_u64()
        .or_else(|| exp.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64))
}

/// Seconds since the Unix epoch, as the cache keeps them.
pub(crate) fn now() -> u64 {
    crate::clock::now_secs().max(0) as u64
}

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error(
        "no cache directory for sign-ins on this system: set {CACHE_DIR_ENV} to a directory of your own"
    )]
    NoDirectory,
    #[error("cannot read the cached sign-in `{path}`: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "the cached sign-in `{path}` cannot be read ({why}): run `countersign login` again, or delete it"
    )]
    Invalid { path: PathBuf, why: String },
    #[error("cannot save the sign-in in `{path}`: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot remove the cached sign-in `{path}`: {source}")]
    Remove {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The directory of cached sign-ins.
#[derive(Debug, Clone)]
pub(crate) struct Cache {
    dir: PathBuf,
}

impl Cache {
    /// Under `base` if given (from [`CACHE_DIR_ENV`]), else under the
    /// platform's cache directory.
    pub(crate) fn locate(base: Option<PathBuf>) -> Result<Self, CacheError> {
        let base = match base {
            Some(b) if !b.as_os_str().is_empty() => b,
            _ => dirs::cache_dir()
                .ok_or(CacheError::NoDirectory)?
                .join("countersign"),
        };
        Ok(Self {
            dir: base.join("tokens"),
        })
    }

    /// As [`Self::locate`] with the override from the environment.
    pub(crate) fn from_env() -> Result<Self, CacheError> {
        Self::locate(std::env::var_os(CACHE_DIR_ENV).map(PathBuf::from))
    }

    /// The file for `admin`: a hash, so that any address is a safe name.
    pub(crate) fn path(&self, admin: &str) -> PathBuf {
        let hash = hex::encode(Sha256::digest(admin.as_bytes()));
        self.dir.join(format!("{}.json", &hash[..32]))
    }

    /// The sign-in cached for `admin`, if any.
    pub(crate) fn load(&self, admin: &str) -> Result<Option<SignIn>, CacheError> {
        let path = self.path(admin);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(CacheError::Read { path, source }),
        };
        let s: SignIn = serde_json::from_slice(&bytes).map_err(|e| CacheError::Invalid {
            path: path.clone(),
            why: e.to_string(),
        })?;
        // A file copied from another address's name would present a
        // sign-in to a server it was not made for.
        if s.admin != admin {
            return Err(CacheError::Invalid {
                path,
                why: format!("it is for `{}`", s.admin),
            });
        }
        Ok(Some(s))
    }

    /// Saves `s` for its admin address, replacing what was there; the path.
    pub(crate) fn store(&self, s: &SignIn) -> Result<PathBuf, CacheError> {
        let path = self.path(&s.admin);
        let write = |source| CacheError::Write {
            path: path.clone(),
            source,
        };
        private_dir(&self.dir).map_err(write)?;
        let json = serde_json::to_vec_pretty(s).map_err(|e| write(e.into()))?;
        // A temporary file beside it, then a rename: a reader sees the old
        // file or the new one, never part of one.
        let tmp = self.dir.join(format!(
            ".{}.{}.{:x}.tmp",
            path.file_name()
                .map_or_else(String::new, |n| n.to_string_lossy().into_owned()),
            std::process::id(),
            rand::random::<u32>()
        ));
        let written = private_file(&tmp)
            .and_then(|mut f| f.write_all(&json).and_then(|()| f.sync_all()))
            .and_then(|()| std::fs::rename(&tmp, &path));
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            return Err(write(e));
        }
        Ok(path)
    }

    /// Removes the sign-in cached for `admin`; its path if there was one.
    pub(crate) fn remove(&self, admin: &str) -> Result<Option<PathBuf>, CacheError> {
        let path = self.path(admin);
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(Some(path)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(CacheError::Remove { path, source }),
        }
    }
}

/// `dir` and its missing parents, `dir` itself for the user alone.
fn private_dir(dir: &Path) -> std::io::Result<()> {
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
    b.create(dir)?;
    // It may have been made before, with the umask's mode.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

/// A new file that only the user may read, from its first byte.
fn private_file(path: &Path) -> std::io::Result<std::fs::File> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;

    fn jwt(claims: serde_json::Value) -> String {
        let part = |v: &serde_json::Value| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
        };
        format!(
            "{}.{}.c2ln",
            part(&serde_json::json!({"alg": "RS256"})),
            part(&claims)
        )
    }

    fn sign_in(admin: &str, expires_at: u64, refresh: bool) -> SignIn {
        SignIn {
            admin: admin.into(),
            issuer: "https://login.example.com".into(),
            client_id: "countersign".into(),
            id_token: Secret::new("id-token-secret".into()),
            refresh_token: refresh.then(|| Secret::new("refresh-token-secret".into())),
            expires_at,
        }
    }

    #[test]
    fn a_sign_in_round_trips_per_admin_address() {
        let base = tempfile::tempdir().unwrap();
        let cache = Cache::locate(Some(base.path().to_owned())).unwrap();
        let a = sign_in("https://127.0.0.1:9192", 1_900_000_000, true);
        let b = sign_in("https://admin.example.com:9192", 1_900_000_100, false);
        let path = cache.store(&a).unwrap();
        cache.store(&b).unwrap();
        assert!(path.starts_with(base.path().join("tokens")));
        let name = path.file_name().unwrap().to_str().unwrap();
        assert_eq!(name.len(), 32 + ".json".len(), "{name}");
        assert_eq!(cache.load(&a.admin).unwrap(), Some(a.clone()));
        assert_eq!(cache.load(&b.admin).unwrap(), Some(b.clone()));
        // Stored again: replaced, and no temporary file left behind.
        let mut a2 = a.clone();
        a2.id_token = Secret::new("newer".into());
        cache.store(&a2).unwrap();
        assert_eq!(cache.load(&a.admin).unwrap(), Some(a2));
        assert_eq!(
            std::fs::read_dir(base.path().join("tokens"))
                .unwrap()
                .count(),
            2
        );
        assert_eq!(cache.remove(&a.admin).unwrap(), Some(path));
        assert_eq!(cache.load(&a.admin).unwrap(), None);
        assert_eq!(cache.remove(&a.admin).unwrap(), None);
    }

    #[cfg(unix)]
    #[test]
    fn only_the_user_may_read_the_directory_and_files() {
        use std::os::unix::fs::PermissionsExt;
        let base = tempfile::tempdir().unwrap();
        let dir = base.path().join("tokens");
        // A directory left open by an earlier tool is closed again.
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let cache = Cache::locate(Some(base.path().to_owned())).unwrap();
        let path = cache.store(&sign_in("https://a:1", 1, false)).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&path), 0o600);
    }

    #[test]
    fn a_file_for_another_address_or_not_json_is_refused() {
        let base = tempfile::tempdir().unwrap();
        let cache = Cache::locate(Some(base.path().to_owned())).unwrap();
        let other = cache.store(&sign_in("https://a:1", 1, false)).unwrap();
        std::fs::rename(&other, cache.path("https://b:1")).unwrap();
        let e = cache.load("https://b:1").unwrap_err().to_string();
        assert!(e.contains("it is for `https://a:1`"), "{e}");
        std::fs::write(cache.path("https://c:1"), "{").unwrap();
        let e = cache.load("https://c:1").unwrap_err().to_string();
        assert!(e.contains("run `countersign login` again"), "{e}");
    }

    #[test]
    fn renewal_is_due_30_seconds_before_expiry() {
        let s = sign_in("https://a:1", 1_000, true);
        assert!(!s.needs_refresh(969));
        assert!(s.needs_refresh(970));
        assert!(s.needs_refresh(2_000));
        assert!(sign_in("https://a:1", 0, true).needs_refresh(0));
    }

    #[test]
    fn expiry_is_the_id_tokens_exp() {
        assert_eq!(
            expiry(&jwt(serde_json::json!({"exp": 1_700_000_000}))),
            Some(1_700_000_000)
        );
        assert_eq!(
            expiry(&jwt(serde_json::json!({"exp": 1.5e9}))),
            Some(1_500_000_000)
        );
        assert_eq!(expiry(&jwt(serde_json::json!({"sub": "dora"}))), None);
        assert_eq!(expiry("not-a-jwt"), None);
    }

    #[test]
    fn debug_shows_no_token() {
        let shown = format!("{:?}", sign_in("https://a:1", 1, true));
        assert!(!shown.contains("secret"), "{shown}");
        assert!(
            shown.contains("<redacted>") && shown.contains("https://a:1"),
            "{shown}"
        );
    }
}
