//! EC2 fixtures on moto for the adapter suites that need them (apart from `support`, which other
//! crates' tests include and which must not need the EC2 SDK).

#![allow(dead_code)]

/// An AMI moto knows, and the default subnets with their zones.
pub async fn ami_and_subnets(ec2: &aws_sdk_ec2::Client) -> (String, Vec<(String, String)>) {
    let images = ec2
        .describe_images()
        .owners("amazon")
        .filters(
            aws_sdk_ec2::types::Filter::builder()
                .name("architecture")
                .values("x86_64")
                .build(),
        )
        .send()
        .await
        .unwrap();
    let ami = images.images()[0].image_id().unwrap().to_string();
    let subnets = ec2
        .describe_subnets()
        .filters(
            aws_sdk_ec2::types::Filter::builder()
                .name("default-for-az")
                .values("true")
                .build(),
        )
        .send()
        .await
        .unwrap();
    let mut subnets: Vec<(String, String)> = subnets
        .subnets()
        .iter()
        .map(|s| {
            (
                s.subnet_id().unwrap().to_string(),
                s.availability_zone().unwrap().to_string(),
            )
        })
        .collect();
    subnets.sort_by(|a, b| a.1.cmp(&b.1));
    (ami, subnets)
}

/// A launch template of `instance_type` on `ami` (what a user's Auto Scaling group uses).
pub async fn launch_template(ec2: &aws_sdk_ec2::Client, ami: &str, instance_type: &str) -> String {
    let name = super::support::unique("lt");
    ec2.create_launch_template()
        .launch_template_name(name)
        .launch_template_data(
            aws_sdk_ec2::types::RequestLaunchTemplateData::builder()
                .image_id(ami)
                .instance_type(aws_sdk_ec2::types::InstanceType::from(instance_type))
                .build(),
        )
        .send()
        .await
        .unwrap()
        .launch_template()
        .unwrap()
        .launch_template_id()
        .unwrap()
        .to_string()
}

/// An instance of the account that carries none of our tags.
pub async fn foreign_instance(ec2: &aws_sdk_ec2::Client, ami: &str) -> String {
    ec2.run_instances()
        .image_id(ami)
        .min_count(1)
        .max_count(1)
        .send()
        .await
        .unwrap()
        .instances()[0]
        .instance_id()
        .unwrap()
        .to_string()
}
