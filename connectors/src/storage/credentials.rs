//! A domain's S3 keys, from the environment or from an AWS shared-credentials file.
//!
//! Secrets live only in the [`AwsCredential`]s handed to the S3 client (whose `Debug`
//! redacts them); errors name the variable or file, never a value.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use object_store::CredentialProvider;
use object_store::aws::{AwsCredential, AwsCredentialProvider};

use super::StorageConfigError;
use super::config::S3CredentialsConfig;

/// How often a credentials file is checked for a change.
const FILE_CHECK_INTERVAL: Duration = Duration::from_secs(5);

/// The keys of a domain, or none (unsigned requests).
pub(super) fn provider_for(
    domain: &str,
    config: &S3CredentialsConfig,
) -> Result<Option<AwsCredentialProvider>, StorageConfigError> {
    let invalid = |reason: String| StorageConfigError::Credentials {
        domain: domain.to_string(),
        reason,
    };
    let from_env = config.access_key_id_env.is_some()
        || config.secret_access_key_env.is_some()
        || config.session_token_env.is_some();
    let sources =
        usize::from(from_env) + usize::from(config.file.is_some()) + usize::from(config.anonymous);
    if sources != 1 {
        return Err(invalid(
            "give exactly one of access_key_id_env + secret_access_key_env, file, or \
             anonymous: true"
                .to_string(),
        ));
    }
    if config.anonymous {
        return Ok(None);
    }
    if let Some(path) = &config.file {
        let profile = config.profile.as_deref().unwrap_or("default");
        let provider = FileCredentials::open(path, profile).map_err(|e| invalid(e.to_string()))?;
        return Ok(Some(Arc::new(provider)));
    }
    let (Some(key_var), Some(secret_var)) =
        (&config.access_key_id_env, &config.secret_access_key_env)
    else {
        return Err(invalid(
            "access_key_id_env and secret_access_key_env go together".to_string(),
        ));
    };
    let read = |var: &str| {
        std::env::var(var)
            .ok()
            .filter(|v| !v.is_empty())
            .ok_or_else(|| invalid(format!("environment variable {var} is not set")))
    };
    let credential = AwsCredential {
        key_id: read(key_var)?,
        secret_key: read(secret_var)?,
        token: config.session_token_env.as_deref().map(read).transpose()?,
    };
    Ok(Some(Arc::new(StaticKeys(Arc::new(credential)))))
}

/// Keys read once, at start.
#[derive(Debug)]
struct StaticKeys(Arc<AwsCredential>);

#[async_trait]
impl CredentialProvider for StaticKeys {
    type Credential = AwsCredential;

    async fn get_credential(&self) -> object_store::Result<Arc<AwsCredential>> {
        Ok(Arc::clone(&self.0))
    }
}

/// Keys from a shared-credentials file, re-read when the file changes. A file that
/// stops being readable (or valid) mid-rotation keeps the last good keys serving, with
/// a warning.
#[derive(Debug)]
struct FileCredentials {
    path: PathBuf,
    profile: String,
    state: Mutex<FileState>,
}

#[derive(Debug)]
struct FileState {
    credential: Arc<AwsCredential>,
    modified: Option<SystemTime>,
    checked: Instant,
}

impl FileCredentials {
    fn open(path: &Path, profile: &str) -> Result<Self, CredentialsFileError> {
        let (credential, modified) = read_file(path, profile)?;
        Ok(Self {
            path: path.to_path_buf(),
            profile: profile.to_string(),
            state: Mutex::new(FileState {
                credential: Arc::new(credential),
                modified,
                checked: Instant::now(),
            }),
        })
    }
}

#[async_trait]
impl CredentialProvider for FileCredentials {
    type Credential = AwsCredential;

    async fn get_credential(&self) -> object_store::Result<Arc<AwsCredential>> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.checked.elapsed() >= FILE_CHECK_INTERVAL {
            state.checked = Instant::now();
            let modified = std::fs::metadata(&self.path)
                .and_then(|m| m.modified())
                .ok();
            if modified != state.modified {
                match read_file(&self.path, &self.profile) {
                    Ok((credential, modified)) => {
                        tracing::info!(file = %self.path.display(), "storage credentials re-read");
                        state.credential = Arc::new(credential);
                        state.modified = modified;
                    }
                    Err(reason) => tracing::warn!(
                        reason = %reason,
                        "storage credentials file unusable; the last good keys stay in use"
                    ),
                }
            }
        }
        Ok(Arc::clone(&state.credential))
    }
}

/// A credentials file that cannot serve: the message names the file and the profile,
/// never a key.
#[derive(Debug, thiserror::Error)]
pub(super) enum CredentialsFileError {
    /// The file cannot be read.
    #[error("credentials file {}: {source}", path.display())]
    Unreadable {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file does not hold the profile's keys.
    #[error("credentials file {}: {problem}", path.display())]
    Invalid {
        path: PathBuf,
        problem: ProfileError,
    },
}

/// What is wrong with a profile in a credentials file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(super) enum ProfileError {
    /// No section of that name.
    #[error("has no profile [{0}]")]
    Missing(String),
    /// The section lacks a key.
    #[error("profile [{0}] needs aws_access_key_id and aws_secret_access_key")]
    Incomplete(String),
}

fn read_file(
    path: &Path,
    profile: &str,
) -> Result<(AwsCredential, Option<SystemTime>), CredentialsFileError> {
    let text =
        std::fs::read_to_string(path).map_err(|source| CredentialsFileError::Unreadable {
            path: path.to_path_buf(),
            source,
        })?;
    let modified = std::fs::metadata(path).and_then(|m| m.modified()).ok();
    let credential =
        parse_profile(&text, profile).map_err(|problem| CredentialsFileError::Invalid {
            path: path.to_path_buf(),
            problem,
        })?;
    Ok((credential, modified))
}

/// The keys of `profile` in the text of an AWS shared-credentials file (INI: `[profile]`
/// sections of `key = value` lines, `#` and `;` comments).
fn parse_profile(text: &str, profile: &str) -> Result<AwsCredential, ProfileError> {
    let mut in_profile = false;
    let mut found = false;
    let (mut key_id, mut secret, mut token) = (None, None, None);
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(section) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            let section = section.trim();
            in_profile = section == profile || section == format!("profile {profile}");
            found |= in_profile;
            continue;
        }
        if !in_profile {
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let value = Some(value.trim().to_string()).filter(|v| !v.is_empty());
        match key.trim() {
            "aws_access_key_id" => key_id = value,
            "aws_secret_access_key" => secret = value,
            "aws_session_token" => token = value,
            _ => {}
        }
    }
    if !found {
        return Err(ProfileError::Missing(profile.to_string()));
    }
    match (key_id, secret) {
        (Some(key_id), Some(secret_key)) => Ok(AwsCredential {
            key_id,
            secret_key,
            token,
        }),
        _ => Err(ProfileError::Incomplete(profile.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_asked_profile_only() {
        let text = "\
# keys of the mesh
[default]
aws_access_key_id = DEFAULTKEY
aws_secret_access_key = defaultsecret

[profile clinical]
aws_access_key_id=CLINICALKEY
aws_secret_access_key = clinical/secret=
aws_session_token = tok
";
        let clinical = parse_profile(text, "clinical").unwrap();
        assert_eq!(clinical.key_id, "CLINICALKEY");
        assert_eq!(clinical.secret_key, "clinical/secret=");
        assert_eq!(clinical.token.as_deref(), Some("tok"));
        let default = parse_profile(text, "default").unwrap();
        assert_eq!(default.key_id, "DEFAULTKEY");
        assert!(default.token.is_none());
        assert_eq!(
            parse_profile(text, "billing").unwrap_err(),
            ProfileError::Missing("billing".into())
        );
        let half = parse_profile("[default]\naws_access_key_id = K\n", "default").unwrap_err();
        assert_eq!(half, ProfileError::Incomplete("default".into()));
        assert!(half.to_string().contains("needs"), "{half}");
    }

    #[test]
    fn errors_name_the_variable_never_a_value() {
        let config = S3CredentialsConfig {
            access_key_id_env: Some("MESHGATE_TEST_SURELY_UNSET_KEY".into()),
            secret_access_key_env: Some("MESHGATE_TEST_SURELY_UNSET_SECRET".into()),
            ..Default::default()
        };
        let err = provider_for("clinical", &config).unwrap_err().to_string();
        assert!(err.contains("MESHGATE_TEST_SURELY_UNSET_KEY"), "{err}");
        let both = S3CredentialsConfig {
            anonymous: true,
            file: Some("/nowhere".into()),
            ..Default::default()
        };
        assert!(
            provider_for("clinical", &both)
                .unwrap_err()
                .to_string()
                .contains("exactly one")
        );
    }
}
