//! Adapters behind the ports: the real services, an in-process stand-in, and fault injection
//! around either.

pub mod aws;
pub mod faults;
pub mod kube;
pub mod memory;
