//! Adapters behind the ports: the real services and an in-process stand-in.

pub mod aws;
pub mod kube;
pub mod memory;
