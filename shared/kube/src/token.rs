//! EKS bearer tokens, made the way aws-iam-authenticator makes them.
//!
//! A token is a SigV4 *presigned* STS `GetCallerIdentity` URL whose signature covers the
//! `x-k8s-aws-id: <cluster name>` header, base64url-encoded without padding and prefixed with
//! `k8s-aws-v1.`. The EKS authenticator replays the URL against STS to learn who we are; binding the
//! cluster name into the signature stops a token minted for one cluster from working on another.
//! EKS accepts a token for 15 minutes from its signing time, whatever `X-Amz-Expires` says, so
//! [`EksToken::refresh_due`] asks for a new one a minute early.

use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SignatureLocation, SigningSettings, sign};
use aws_sigv4::sign::v4;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::{Error, Result};

/// Prefix of every EKS token.
pub const TOKEN_PREFIX: &str = "k8s-aws-v1.";
/// The header that binds the token to one cluster.
pub const CLUSTER_ID_HEADER: &str = "x-k8s-aws-id";
/// How long EKS accepts a token after it was signed.
pub const TOKEN_LIFETIME: Duration = Duration::from_secs(15 * 60);
/// Refresh this long before the token stops being accepted.
pub const REFRESH_MARGIN: Duration = Duration::from_secs(60);
/// `X-Amz-Expires` in the presigned URL (what aws-iam-authenticator sends).
const PRESIGN_EXPIRES: Duration = Duration::from_secs(60);

/// A bearer token for one EKS cluster and the time it stops being accepted.
#[derive(Clone)]
pub struct EksToken {
    token: String,
    pub expires_at: SystemTime,
}

impl std::fmt::Debug for EksToken {
    // The token is a credential: never print it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EksToken")
            .field("token", &"<redacted>")
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

impl EksToken {
    /// Signs a token for `cluster` in `region` with `credentials` at `now`.
    pub fn sign(cluster: &str, region: &str, credentials: &Credentials, now: SystemTime) -> Result<EksToken> {
        let url = presigned_url(cluster, region, credentials, now)?;
        Ok(EksToken {
            token: format!("{TOKEN_PREFIX}{}", URL_SAFE_NO_PAD.encode(url)),
            expires_at: now + TOKEN_LIFETIME,
        })
    }

    /// The bearer token (`k8s-aws-v1.` + base64url of the presigned URL).
    pub fn as_str(&self) -> &str {
        &self.token
    }

    /// Whether a new token should be signed before the next call.
    pub fn refresh_due(&self, now: SystemTime) -> bool {
        now + REFRESH_MARGIN >= self.expires_at
    }
}

/// The STS endpoint the token names; regional, as current aws-iam-authenticator uses.
fn sts_host(region: &str) -> String {
    if region.starts_with("cn-") {
        format!("sts.{region}.amazonaws.com.cn")
    } else {
        format!("sts.{region}.amazonaws.com")
    }
}

/// The presigned `GetCallerIdentity` URL.
pub fn presigned_url(cluster: &str, region: &str, credentials: &Credentials, now: SystemTime) -> Result<String> {
    if cluster.is_empty() {
        return Err(Error::invalid("cluster", "empty cluster name"));
    }
    if region.is_empty() {
        return Err(Error::invalid("region", "empty region"));
    }
    let host = sts_host(region);
    let base = format!("https://{host}/?Action=GetCallerIdentity&Version=2011-06-15");
    let mut settings = SigningSettings::default();
    settings.signature_location = SignatureLocation::QueryParams;
    settings.expires_in = Some(PRESIGN_EXPIRES);
    let identity = credentials.clone().into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name("sts")
        .time(now)
        .settings(settings)
        .build()
        .map_err(|e| Error::invalid("credentials", e.to_string()))?
        .into();
    let headers = [("host", host.as_str()), (CLUSTER_ID_HEADER, cluster)];
    let request = SignableRequest::new("GET", base.clone(), headers.into_iter(), SignableBody::Bytes(&[]))
        .map_err(|e| Error::invalid("cluster", e.to_string()))?;
    let (instructions, _signature) = sign(request, &params)
        .map_err(|e| Error::invalid("credentials", e.to_string()))?
        .into_parts();
    let mut url = base;
    for (name, value) in instructions.params() {
        url.push('&');
        url.push_str(name);
        url.push('=');
        url.push_str(&percent_encode(value));
    }
    Ok(url)
}

/// RFC 3986 unreserved characters pass; everything else is %-encoded (as SigV4 canonicalizes).
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn creds() -> Credentials {
        Credentials::new(
            "AKIDEXAMPLE",
            "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
            Some("SESSION/TOKEN+x=".into()),
            None,
            "test",
        )
    }

    fn query(url: &str) -> BTreeMap<String, String> {
        let q = url.split_once('?').map(|(_, q)| q).unwrap_or("");
        q.split('&')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_string(), decode(v)))
            .collect()
    }

    fn decode(s: &str) -> String {
        let bytes = s.as_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] == b'%' && i + 2 < bytes.len() + 1 {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("00");
                out.push(u8::from_str_radix(hex, 16).unwrap_or(0));
                i += 3;
            } else {
                out.push(bytes[i]);
                i += 1;
            }
        }
        String::from_utf8(out).unwrap_or_default()
    }

    #[test]
    fn token_is_prefixed_base64url_of_a_presigned_sts_url() {
        // 2026-11-21T10:00:00Z
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_255_200);
        let token = EksToken::sign("prod-eks", "eu-west-1", &creds(), now).expect("sign");
        let encoded = token.as_str().strip_prefix(TOKEN_PREFIX).expect("prefix");
        assert!(
            !encoded.contains('=') && !encoded.contains('+') && !encoded.contains('/'),
            "base64url, no padding"
        );
        let url = String::from_utf8(URL_SAFE_NO_PAD.decode(encoded).expect("base64url")).expect("utf8");
        assert!(url.starts_with("https://sts.eu-west-1.amazonaws.com/?"), "{url}");

        let q = query(&url);
        assert_eq!(q["Action"], "GetCallerIdentity");
        assert_eq!(q["Version"], "2011-06-15");
        assert_eq!(q["X-Amz-Algorithm"], "AWS4-HMAC-SHA256");
        assert_eq!(q["X-Amz-Credential"], "AKIDEXAMPLE/20261121/eu-west-1/sts/aws4_request");
        assert_eq!(q["X-Amz-Date"], "20261121T100000Z");
        assert_eq!(q["X-Amz-Expires"], "60");
        assert_eq!(q["X-Amz-SignedHeaders"], "host;x-k8s-aws-id");
        assert_eq!(q["X-Amz-Security-Token"], "SESSION/TOKEN+x=");
        assert_eq!(q["X-Amz-Signature"].len(), 64);
        assert!(q["X-Amz-Signature"].bytes().all(|b| b.is_ascii_hexdigit()));

        // Valid for 15 minutes from signing; refreshed one minute early.
        assert_eq!(token.expires_at, now + Duration::from_secs(900));
        assert!(!token.refresh_due(now + Duration::from_secs(13 * 60)));
        assert!(token.refresh_due(now + Duration::from_secs(14 * 60)));
    }

    #[test]
    fn signature_binds_the_cluster_name_and_is_deterministic() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_255_200);
        let a = presigned_url("a", "us-east-1", &creds(), now).expect("a");
        let a2 = presigned_url("a", "us-east-1", &creds(), now).expect("a2");
        let b = presigned_url("b", "us-east-1", &creds(), now).expect("b");
        assert_eq!(a, a2);
        assert_ne!(query(&a)["X-Amz-Signature"], query(&b)["X-Amz-Signature"]);
    }

    #[test]
    fn debug_never_prints_the_token() {
        let token = EksToken::sign("c", "us-east-1", &creds(), SystemTime::UNIX_EPOCH).expect("sign");
        let shown = format!("{token:?}");
        assert!(!shown.contains(TOKEN_PREFIX) && shown.contains("redacted"));
    }

    #[test]
    fn empty_cluster_or_region_is_a_named_error() {
        let e = presigned_url("", "us-east-1", &creds(), SystemTime::UNIX_EPOCH).expect_err("empty");
        assert!(e.to_string().starts_with("cluster:"), "{e}");
        let e = presigned_url("c", "", &creds(), SystemTime::UNIX_EPOCH).expect_err("empty");
        assert!(e.to_string().starts_with("region:"), "{e}");
    }
}
