//! The `pod-pending` Lambda function: configuration and clients from the environment, then the
//! shared handler (nodewright-handlers) for every invocation.

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    nodewright_lambda::run(nodewright_handlers::Function::PodPending).await
}
