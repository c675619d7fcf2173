//! The small services: `ServerFeatures` (version and supported methods) and `Gossip` (a one-node
//! cluster).

use std::time::{SystemTime, UNIX_EPOCH};

use tonic::{Request, Response, Status};

use crate::Authority;
use annals_proto::gossip::gossip_server::Gossip;
use annals_proto::gossip::{ClusterInfo, EndPoint, MemberInfo, member_info};
use annals_proto::server_features::server_features_server::ServerFeatures;
use annals_proto::server_features::{SupportedMethod, SupportedMethods};
use annals_proto::shared::Empty;

const STREAMS_SERVICE: &str = "event_store.client.streams.streams";
const FEATURES_SERVICE: &str = "event_store.client.server_features.serverfeatures";
const GOSSIP_SERVICE: &str = "event_store.client.gossip.gossip";
const USERS_SERVICE: &str = "event_store.client.users.users";
const PERSISTENT_SERVICE: &str =
    "event_store.client.persistent_subscriptions.persistentsubscriptions";

/// Port reported by gossip when the request did not say which it was sent to.
const DEFAULT_PORT: u16 = 2113;

#[derive(Clone, Copy, Debug)]
pub(crate) struct FeaturesService;

fn method(service: &str, name: &str, features: &[&str]) -> SupportedMethod {
    SupportedMethod {
        method_name: name.to_owned(),
        service_name: service.to_owned(),
        features: features.iter().map(|f| (*f).to_owned()).collect(),
    }
}

/// The methods this server implements, as clients expect them listed.
fn supported_methods() -> SupportedMethods {
    SupportedMethods {
        methods: vec![
            method(STREAMS_SERVICE, "read", &["position", "events"]),
            method(STREAMS_SERVICE, "append", &[]),
            method(STREAMS_SERVICE, "delete", &[]),
            method(STREAMS_SERVICE, "tombstone", &[]),
            method(STREAMS_SERVICE, "batchappend", &["deadline_duration"]),
            method(FEATURES_SERVICE, "getsupportedmethods", &[]),
            method(GOSSIP_SERVICE, "read", &[]),
            // Every persistent-subscription method serves groups on streams and on $all; clients
            // (the Rust one) use gRPC rather than their HTTP fallback only when all are listed.
            method(PERSISTENT_SERVICE, "create", &["stream", "all"]),
            method(PERSISTENT_SERVICE, "update", &["stream", "all"]),
            method(PERSISTENT_SERVICE, "delete", &["stream", "all"]),
            method(PERSISTENT_SERVICE, "read", &["stream", "all"]),
            method(PERSISTENT_SERVICE, "getinfo", &["stream", "all"]),
            method(PERSISTENT_SERVICE, "replayparked", &["stream", "all"]),
            method(PERSISTENT_SERVICE, "list", &["stream", "all"]),
            method(PERSISTENT_SERVICE, "restartsubsystem", &["stream", "all"]),
            method(USERS_SERVICE, "create", &[]),
            method(USERS_SERVICE, "update", &[]),
            method(USERS_SERVICE, "delete", &[]),
            method(USERS_SERVICE, "disable", &[]),
            method(USERS_SERVICE, "enable", &[]),
            method(USERS_SERVICE, "details", &[]),
            method(USERS_SERVICE, "changepassword", &[]),
            method(USERS_SERVICE, "resetpassword", &[]),
        ],
        event_store_server_version: crate::SERVER_VERSION.to_owned(),
    }
}

#[tonic::async_trait]
impl ServerFeatures for FeaturesService {
    async fn get_supported_methods(
        &self,
        _request: Request<Empty>,
    ) -> Result<Response<SupportedMethods>, Status> {
        Ok(Response::new(supported_methods()))
    }
}

#[derive(Clone, Copy, Debug)]
pub(crate) struct GossipService;

/// Splits `host:port` (or `[v6]:port`, or a bare host); the port defaults to 2113.
fn split_authority(authority: &str) -> (String, u16) {
    if let Some((host, port)) = authority.rsplit_once(':')
        && !host.is_empty()
        && (!host.contains(':') || host.starts_with('['))
        && let Ok(port) = port.parse::<u16>()
    {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        return (host.to_owned(), port);
    }
    (authority.to_owned(), DEFAULT_PORT)
}

#[tonic::async_trait]
impl Gossip for GossipService {
    async fn read(&self, request: Request<Empty>) -> Result<Response<ClusterInfo>, Status> {
        let (address, port) = request
            .extensions()
            .get::<Authority>()
            .map(|a| split_authority(&a.0))
            .unwrap_or_else(|| ("127.0.0.1".to_owned(), DEFAULT_PORT));
        let ticks = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_nanos() / 100).unwrap_or(i64::MAX))
            .unwrap_or(0);
        let member = MemberInfo {
            instance_id: Some(crate::convert::wire_uuid(uuid::Uuid::nil(), false)),
            time_stamp: ticks,
            state: member_info::VNodeState::Leader as i32,
            is_alive: true,
            http_end_point: Some(EndPoint {
                address,
                port: u32::from(port),
            }),
        };
        Ok(Response::new(ClusterInfo {
            members: vec![member],
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authority_forms() {
        assert_eq!(split_authority("db.local:2113"), ("db.local".into(), 2113));
        assert_eq!(split_authority("db.local"), ("db.local".into(), 2113));
        assert_eq!(split_authority("[::1]:9000"), ("::1".into(), 9000));
        assert!(!supported_methods().event_store_server_version.is_empty());
    }
}
