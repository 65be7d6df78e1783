//! One set of SDK clients, built once per process (per Lambda container) and shared by every handler
//! invocation.

use std::time::Duration;

use aws_config::BehaviorVersion;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;

/// How to reach AWS. `endpoint_url` points every client at one endpoint (moto in tests, or
/// `AWS_ENDPOINT_URL` for local runs); `static_credentials` is for emulators only.
#[derive(Debug, Clone, Default)]
pub struct ClientOptions {
    pub region: Option<String>,
    pub endpoint_url: Option<String>,
    pub static_credentials: bool,
    /// Total attempts per call including the first (SDK standard retry with jittered backoff).
    pub max_attempts: Option<u32>,
}

/// The SDK clients the adapters use.
#[derive(Debug, Clone)]
pub struct AwsClients {
    pub dynamodb: aws_sdk_dynamodb::Client,
    pub ec2: aws_sdk_ec2::Client,
    pub autoscaling: aws_sdk_autoscaling::Client,
    pub ssm: aws_sdk_ssm::Client,
    /// Instance profiles for EC2NodeClasses that name a role.
    pub iam: aws_sdk_iam::Client,
    /// The Pricing API lives in us-east-1 (and a few other regions) whatever the cluster's region.
    pub pricing: aws_sdk_pricing::Client,
    /// The loaded configuration (region, credentials, endpoint) for clients of other services.
    pub sdk: aws_config::SdkConfig,
}

impl AwsClients {
    pub async fn load(options: &ClientOptions) -> Self {
        let retry = RetryConfig::standard()
            .with_max_attempts(options.max_attempts.unwrap_or(4))
            .with_initial_backoff(Duration::from_millis(100))
            .with_max_backoff(Duration::from_secs(5));
        let timeouts = TimeoutConfig::builder()
            .connect_timeout(Duration::from_secs(3))
            .operation_attempt_timeout(Duration::from_secs(20))
            .operation_timeout(Duration::from_secs(60))
            .build();
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .retry_config(retry)
            .timeout_config(timeouts);
        if let Some(region) = &options.region {
            loader = loader.region(aws_config::Region::new(region.clone()));
        }
        if let Some(url) = &options.endpoint_url {
            loader = loader.endpoint_url(url);
        }
        if options.static_credentials {
            loader = loader.credentials_provider(aws_sdk_dynamodb::config::Credentials::new(
                "testing", "testing", None, None, "emulator",
            ));
        }
        let config = loader.load().await;
        AwsClients {
            dynamodb: aws_sdk_dynamodb::Client::new(&config),
            ec2: aws_sdk_ec2::Client::new(&config),
            autoscaling: aws_sdk_autoscaling::Client::new(&config),
            ssm: aws_sdk_ssm::Client::new(&config),
            iam: aws_sdk_iam::Client::new(&config),
            pricing: aws_sdk_pricing::Client::from_conf(
                aws_sdk_pricing::config::Builder::from(&config)
                    .region(aws_sdk_pricing::config::Region::new("us-east-1"))
                    .build(),
            ),
            sdk: config,
        }
    }
}
