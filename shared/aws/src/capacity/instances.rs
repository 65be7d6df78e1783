//! Instances by tag: the tags every Nodewright instance carries, paginated discovery for
//! reconciliation, and termination that refuses anything not tagged with this cluster.

use aws_sdk_ec2::types::Filter;

use super::{Fleet, InstanceSummary, TAG_CLAIM, TAG_CLUSTER, TAG_POOL};
use crate::error::FromSdk;
use crate::{Error, Result};

fn summary(i: &aws_sdk_ec2::types::Instance) -> InstanceSummary {
    let tag = |key: &str| {
        i.tags()
            .iter()
            .find(|t| t.key() == Some(key))
            .and_then(|t| t.value())
            .map(str::to_string)
    };
    InstanceSummary {
        instance_id: i.instance_id().unwrap_or_default().to_string(),
        instance_type: i.instance_type().map(|t| t.as_str().to_string()).unwrap_or_default(),
        zone: i
            .placement()
            .and_then(|p| p.availability_zone())
            .unwrap_or_default()
            .to_string(),
        state: i
            .state()
            .and_then(|s| s.name())
            .map(|n| n.as_str().to_string())
            .unwrap_or_default(),
        spot: i.instance_lifecycle().is_some_and(|l| l.as_str() == "spot"),
        claim_id: tag(TAG_CLAIM),
        pool: tag(TAG_POOL),
        cluster: tag(TAG_CLUSTER),
        launch_time_millis: i.launch_time().and_then(|t| t.to_millis().ok()),
        labels: tag(nodewright_core::ports::capacity::TAG_LABELS)
            .map(|t| nodewright_core::ports::capacity::labels_of_tag(&t))
            .unwrap_or_default(),
    }
}

impl Fleet {
    /// Instances matching `filters`, following pages.
    async fn describe(&self, filters: Vec<Filter>, ids: Option<Vec<String>>) -> Result<Vec<InstanceSummary>> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page = self
                .ec2
                .describe_instances()
                .set_filters(Some(filters.clone()))
                .set_instance_ids(ids.clone())
                .set_next_token(token.take())
                .send()
                .await
                .map_err(|e| Error::aws("DescribeInstances", e))?;
            for reservation in page.reservations() {
                out.extend(reservation.instances().iter().map(summary));
            }
            match page.next_token {
                Some(t) if !t.is_empty() => token = Some(t),
                _ => break,
            }
        }
        Ok(out)
    }

    /// Every live (not terminated) instance tagged with this cluster.
    pub async fn cluster_instances(&self) -> Result<Vec<InstanceSummary>> {
        self.describe(
            vec![
                Filter::builder()
                    .name(format!("tag:{TAG_CLUSTER}"))
                    .values(&self.cluster)
                    .build(),
                live_states(),
            ],
            None,
        )
        .await
    }

    /// The named instances, whatever their tags and state; ids EC2 does not know are left out
    /// (one unknown id makes DescribeInstances fail the whole call, so it is retried one by one).
    pub async fn describe_ids(&self, instance_ids: &[String]) -> Result<Vec<InstanceSummary>> {
        if instance_ids.is_empty() {
            return Ok(Vec::new());
        }
        match self.describe(Vec::new(), Some(instance_ids.to_vec())).await {
            Ok(found) => Ok(found),
            Err(Error::Aws { code, .. }) if code.starts_with("InvalidInstanceID") => {
                let mut out = Vec::new();
                for id in instance_ids {
                    match self.describe(Vec::new(), Some(vec![id.clone()])).await {
                        Ok(found) => out.extend(found),
                        Err(Error::Aws { code, .. }) if code.starts_with("InvalidInstanceID") => {}
                        Err(e) => return Err(e),
                    }
                }
                Ok(out)
            }
            Err(e) => Err(e),
        }
    }

    /// A live instance launched for `claim_id`, if one exists (adoption after a crash).
    pub async fn instance_for_claim(&self, claim_id: &str) -> Result<Option<InstanceSummary>> {
        let found = self
            .describe(
                vec![
                    Filter::builder()
                        .name(format!("tag:{TAG_CLUSTER}"))
                        .values(&self.cluster)
                        .build(),
                    Filter::builder()
                        .name(format!("tag:{TAG_CLAIM}"))
                        .values(claim_id)
                        .build(),
                    live_states(),
                ],
                None,
            )
            .await?;
        Ok(found.into_iter().next())
    }

    /// Terminates instances, all or none: refuses when any of them is not tagged with this cluster
    /// (the IAM policy enforces the same condition; this check gives a clear error first).
    pub async fn terminate(&self, instance_ids: &[String]) -> Result<()> {
        if instance_ids.is_empty() {
            return Ok(());
        }
        let found = self.describe(Vec::new(), Some(instance_ids.to_vec())).await?;
        for id in instance_ids {
            match found.iter().find(|i| &i.instance_id == id) {
                None => return Err(Error::Refused(format!("instance {id} not found"))),
                Some(i) if i.cluster.as_deref() != Some(self.cluster.as_str()) => {
                    return Err(Error::Refused(format!(
                        "instance {id} is not tagged {TAG_CLUSTER}={}; not terminating it",
                        self.cluster
                    )));
                }
                Some(_) => {}
            }
        }
        self.ec2
            .terminate_instances()
            .set_instance_ids(Some(instance_ids.to_vec()))
            .send()
            .await
            .map_err(|e| Error::aws("TerminateInstances", e))?;
        Ok(())
    }
}

fn live_states() -> Filter {
    Filter::builder()
        .name("instance-state-name")
        .set_values(Some(
            ["pending", "running", "stopping", "stopped"]
                .into_iter()
                .map(String::from)
                .collect(),
        ))
        .build()
}
