//! Connecting to the cluster: EKS (IAM token, endpoint and CA from configuration or
//! `DescribeCluster`) from Lambda, or a kubeconfig for local use.
//!
//! A Lambda execution environment outlives a 15-minute token, so [`Connection::client`] hands out a
//! cached client and rebuilds it with a fresh token shortly before the token expires.

use std::time::{Duration, SystemTime};

use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use tokio::sync::Mutex;

use crate::token::EksToken;
use crate::{Error, Result};

/// How the functions reach the API server.
#[derive(Debug, Clone)]
pub enum Access {
    /// An EKS cluster, authenticated with the caller's IAM identity. `endpoint` and `ca` (base64 of
    /// the PEM bundle, as EKS and CloudFormation report it) skip the `DescribeCluster` lookup.
    Eks {
        cluster: String,
        region: String,
        endpoint: Option<String>,
        ca: Option<String>,
    },
    /// A kubeconfig file: `path`, else `KUBECONFIG` or `~/.kube/config`; optionally a named context.
    Kubeconfig {
        path: Option<std::path::PathBuf>,
        context: Option<String>,
    },
}

/// Timeouts applied to every client built here.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const READ_TIMEOUT: Duration = Duration::from_secs(30);

/// A cluster connection that keeps its client (and token) fresh.
pub struct Connection {
    access: Access,
    credentials: Option<SharedCredentialsProvider>,
    eks: Option<aws_sdk_eks::Client>,
    cached: Mutex<Option<(kube::Client, Option<SystemTime>)>>,
}

/// Endpoint and CA of an EKS cluster.
#[derive(Debug, Clone)]
struct Endpoint {
    url: String,
    ca_der: Vec<Vec<u8>>,
}

impl Connection {
    /// `credentials` and `eks` are required for [`Access::Eks`] (the latter only when the endpoint
    /// is not configured).
    pub fn new(
        access: Access,
        credentials: Option<SharedCredentialsProvider>,
        eks: Option<aws_sdk_eks::Client>,
    ) -> Self {
        Connection {
            access,
            credentials,
            eks,
            cached: Mutex::new(None),
        }
    }

    /// A client with a token valid for at least another minute.
    pub async fn client(&self) -> Result<kube::Client> {
        let mut cached = self.cached.lock().await;
        let now = SystemTime::now();
        if let Some((client, expires)) = cached.as_ref()
            && expires.is_none_or(|e| now + crate::token::REFRESH_MARGIN < e)
        {
            return Ok(client.clone());
        }
        let (client, expires) = self.build(now).await?;
        *cached = Some((client.clone(), expires));
        Ok(client)
    }

    async fn build(&self, now: SystemTime) -> Result<(kube::Client, Option<SystemTime>)> {
        match &self.access {
            Access::Kubeconfig { path, context } => {
                let options = kube::config::KubeConfigOptions {
                    context: context.clone(),
                    ..Default::default()
                };
                let loaded = match path {
                    Some(p) => match kube::config::Kubeconfig::read_from(p) {
                        Ok(k) => kube::Config::from_custom_kubeconfig(k, &options).await,
                        Err(e) => Err(e),
                    },
                    None => kube::Config::from_kubeconfig(&options).await,
                };
                let mut config = loaded.map_err(|e| Error::invalid("kubeconfig", e.to_string()))?;
                config.default_retry = false;
                config.read_timeout = Some(READ_TIMEOUT);
                let client = kube::Client::try_from(config).map_err(|e| Error::Client {
                    operation: "build client".into(),
                    message: e.to_string(),
                })?;
                Ok((client, None))
            }
            Access::Eks {
                cluster,
                region,
                endpoint,
                ca,
            } => {
                let endpoint = match (endpoint, ca) {
                    (Some(url), Some(ca)) => Endpoint {
                        url: url.clone(),
                        ca_der: ca_from_base64_pem(ca)?,
                    },
                    (Some(_), None) => return Err(Error::invalid("ca", "an EKS endpoint needs its CA bundle too")),
                    _ => self.describe(cluster).await?,
                };
                let provider = self
                    .credentials
                    .as_ref()
                    .ok_or_else(|| Error::invalid("credentials", "no AWS credentials provider configured"))?;
                let credentials = provider.provide_credentials().await.map_err(|e| Error::Client {
                    operation: "load AWS credentials".into(),
                    message: e.to_string(),
                })?;
                let token = EksToken::sign(cluster, region, &credentials, now)?;
                let url = endpoint
                    .url
                    .parse()
                    .map_err(|e| Error::invalid("endpoint", format!("{:?}: {e}", endpoint.url)))?;
                let mut config = kube::Config::new(url);
                config.root_cert = Some(endpoint.ca_der);
                config.connect_timeout = Some(CONNECT_TIMEOUT);
                config.read_timeout = Some(READ_TIMEOUT);
                config.default_retry = false;
                config.auth_info.token = Some(token.as_str().to_string().into());
                let client = kube::Client::try_from(config).map_err(|e| Error::Client {
                    operation: "build client".into(),
                    message: e.to_string(),
                })?;
                Ok((client, Some(token.expires_at)))
            }
        }
    }

    async fn describe(&self, cluster: &str) -> Result<Endpoint> {
        let eks = self
            .eks
            .as_ref()
            .ok_or_else(|| Error::invalid("endpoint", "not configured and no EKS client to look it up"))?;
        let out = eks
            .describe_cluster()
            .name(cluster)
            .send()
            .await
            .map_err(|e| Error::Client {
                operation: "eks:DescribeCluster".into(),
                message: aws_sdk_eks::error::DisplayErrorContext(&e).to_string(),
            })?;
        let c = out
            .cluster
            .ok_or_else(|| Error::invalid("cluster", format!("{cluster:?} not returned by DescribeCluster")))?;
        let url = c.endpoint.ok_or_else(|| {
            Error::invalid(
                "cluster.endpoint",
                "DescribeCluster returned no endpoint (still creating?)",
            )
        })?;
        let ca = c
            .certificate_authority
            .and_then(|a| a.data)
            .ok_or_else(|| Error::invalid("cluster.certificateAuthority", "missing"))?;
        Ok(Endpoint {
            url,
            ca_der: ca_from_base64_pem(&ca)?,
        })
    }
}

/// Decodes a CA bundle given as base64 of PEM (EKS's `certificateAuthority.data`) into DER
/// certificates.
pub fn ca_from_base64_pem(b64: &str) -> Result<Vec<Vec<u8>>> {
    let pem = STANDARD
        .decode(b64.trim())
        .map_err(|e| Error::invalid("ca", format!("not base64: {e}")))?;
    let pem = String::from_utf8(pem).map_err(|_| Error::invalid("ca", "not a PEM bundle (not UTF-8)"))?;
    let mut certs = Vec::new();
    let mut body: Option<String> = None;
    for line in pem.lines().map(str::trim) {
        if line == "-----BEGIN CERTIFICATE-----" {
            body = Some(String::new());
        } else if line == "-----END CERTIFICATE-----" {
            let b = body
                .take()
                .ok_or_else(|| Error::invalid("ca", "END CERTIFICATE without BEGIN"))?;
            certs.push(
                STANDARD
                    .decode(b)
                    .map_err(|e| Error::invalid("ca", format!("certificate {} is not base64: {e}", certs.len() + 1)))?,
            );
        } else if let Some(b) = body.as_mut() {
            b.push_str(line);
        }
    }
    if body.is_some() {
        return Err(Error::invalid("ca", "BEGIN CERTIFICATE without END"));
    }
    if certs.is_empty() {
        return Err(Error::invalid("ca", "no certificate in the bundle"));
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ca_bundle_decodes_each_certificate() {
        let der1 = b"first-der".to_vec();
        let der2 = b"second-der".to_vec();
        let pem = format!(
            "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
            STANDARD.encode(&der1),
            STANDARD.encode(&der2)
        );
        let certs = ca_from_base64_pem(&STANDARD.encode(pem)).expect("decode");
        assert_eq!(certs, vec![der1, der2]);
    }

    #[test]
    fn bad_ca_names_the_field() {
        for bad in [
            "%%%",
            &STANDARD.encode("no certs here"),
            &STANDARD.encode("-----BEGIN CERTIFICATE-----\nAAAA\n"),
        ] {
            let e = ca_from_base64_pem(bad).expect_err("bad");
            assert!(e.to_string().starts_with("ca:"), "{e}");
        }
    }
}
