//! Who may call the gRPC APIs: mTLS is required, the certificate must come from the client
//! CA, its SAN must name exactly one configured app, and an app cannot read or change another
//! app's rules, services or streams. Plaintext only with `insecure`, and then the app header
//! is required. A real tonic client over loopback.
//!
//! Needs root (CAP_BPF) for the fast path behind the API; CI runs as root.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use futures::StreamExt as _;
use mecgw::api::{
    ApiBackend as _,
    proto::{
        DeregisterServiceRequest, DiscoverServicesRequest, GetStatusRequest, GetTrafficRuleRequest,
        ListTrafficRulesRequest, RegisterServiceRequest, SubscribeRequest, TrafficRuleState,
        UpdateTrafficRuleStateRequest, WatchServicesRequest,
        edge_services_service_client::EdgeServicesServiceClient,
        status_service_client::StatusServiceClient,
        telemetry_service_client::TelemetryServiceClient,
        traffic_rules_service_client::TrafficRulesServiceClient,
    },
};
use mecgw_tests::api::{
    ApiTest, Ca, FastPathBackend, Pem, Running, Site, connect, edge_service, exclusive,
};
use tonic::Code;

async fn backend() -> Arc<FastPathBackend> {
    let b = FastPathBackend::with_test_tables(16).unwrap();
    b.ready.send_replace(true);
    b
}

/// Connects with `identity` and lists rules: the whole path a client takes.
async fn list_rules(
    server: &Running,
    ca_pem: &str,
    identity: Option<&Pem>,
) -> Result<Vec<u32>, String> {
    let channel = connect(server.addr, ca_pem, identity)
        .await
        .map_err(|e| format!("connect: {e:#}"))?;
    let rules = TrafficRulesServiceClient::new(channel)
        .list_traffic_rules(ListTrafficRulesRequest {})
        .await
        .map_err(|s| format!("{:?}: {}", s.code(), s.message()))?;
    Ok(rules.into_inner().rules.iter().map(|r| r.id).collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_without_a_certificate_from_the_client_ca_are_refused() {
    let t = ApiTest::start(16).await.unwrap();
    let ca = t.site.ca.cert_pem();

    // The operator with its certificate gets through: the refusals below are not an accident
    // of the set-up.
    let op = t.site.operator().unwrap();
    assert_eq!(
        list_rules(&t.server, &ca, Some(&op)).await,
        Ok(vec![10, 20, 30])
    );

    // No client certificate.
    let e = list_rules(&t.server, &ca, None).await.unwrap_err();
    assert!(
        !e.contains("PermissionDenied"),
        "refused at TLS, not later: {e}"
    );

    // A certificate naming the operator, from another CA.
    let rogue = Ca::new("rogue CA").unwrap();
    let forged = rogue
        .client(&[], &[mecgw_tests::api::OPERATOR_URI])
        .unwrap();
    let e = list_rules(&t.server, &ca, Some(&forged)).await.unwrap_err();
    assert!(
        !e.contains("PermissionDenied"),
        "refused at TLS, not later: {e}"
    );

    // The right CA, but the SAN names no configured app; and one naming two apps.
    let nobody = t.site.ca.client(&["nobody.example"], &[]).unwrap();
    let e = list_rules(&t.server, &ca, Some(&nobody)).await.unwrap_err();
    assert!(e.starts_with("PermissionDenied"), "{e}");
    assert!(e.contains("nobody.example"), "{e}");
    let both = t.site.ca.client(&["video", "maps"], &[]).unwrap();
    let e = list_rules(&t.server, &ca, Some(&both)).await.unwrap_err();
    assert!(e.starts_with("PermissionDenied"), "{e}");
    assert!(e.contains("more than one app"), "{e}");
    t.server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_cannot_touch_another_apps_rules_services_or_streams() {
    let t = ApiTest::start(16).await.unwrap();
    let video = t.channel("video").await.unwrap();
    let maps = t.channel("maps").await.unwrap();

    // Rules: rule 10 is video's; maps (which owns rule 20) can neither read nor switch it.
    let mut video_rules = TrafficRulesServiceClient::new(video.clone());
    let etag = video_rules
        .get_traffic_rule(GetTrafficRuleRequest { id: 10 })
        .await
        .unwrap()
        .into_inner()
        .rule
        .unwrap()
        .etag;
    let mut maps_rules = TrafficRulesServiceClient::new(maps.clone());
    let e = maps_rules
        .get_traffic_rule(GetTrafficRuleRequest { id: 10 })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    let e = maps_rules
        .update_traffic_rule_state(UpdateTrafficRuleStateRequest {
            id: 10,
            state: TrafficRuleState::Inactive as i32,
            etag: etag.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    let listed: Vec<u32> = maps_rules
        .list_traffic_rules(ListTrafficRulesRequest {})
        .await
        .unwrap()
        .into_inner()
        .rules
        .iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(listed, vec![20]);
    assert_eq!(
        t.backend.tables().rules[0].state,
        mecgw::datapath::tables::RuleState::Active
    );

    // Services: video registers its own; maps cannot register, deregister or discover it,
    // and a watch by maps never shows it.
    let mut maps_services = EdgeServicesServiceClient::new(maps.clone());
    let mut watch = maps_services
        .watch_services(WatchServicesRequest {})
        .await
        .unwrap()
        .into_inner();
    let mut video_services = EdgeServicesServiceClient::new(video.clone());
    video_services
        .register_service(RegisterServiceRequest {
            service: Some(edge_service("video", "1.0")),
        })
        .await
        .unwrap();
    let e = maps_services
        .register_service(RegisterServiceRequest {
            service: Some(edge_service("video", "1.0")),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    let e = maps_services
        .deregister_service(DeregisterServiceRequest {
            name: "video".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    let e = maps_services
        .discover_services(DiscoverServicesRequest {
            name: "video".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    let seen = maps_services
        .discover_services(DiscoverServicesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .services;
    assert!(seen.is_empty(), "{seen:?}");
    // maps registers its own: the watch shows that one, and only that one.
    maps_services
        .register_service(RegisterServiceRequest {
            service: Some(edge_service("maps", "1.0")),
        })
        .await
        .unwrap();
    let first = watch.next().await.unwrap().unwrap();
    assert_eq!(first.service.unwrap().name, "maps");
    // video may discover maps (its configuration says so).
    let seen = video_services
        .discover_services(DiscoverServicesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .services;
    let names: Vec<&str> = seen.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, vec!["maps", "video"]);

    // Streams: maps may not subscribe to video's release.
    let e = TelemetryServiceClient::new(maps.clone())
        .subscribe(SubscribeRequest {
            releases: vec!["cell_load".into()],
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");

    // Status is the operator's.
    let e = StatusServiceClient::new(video.clone())
        .get_status(GetStatusRequest {})
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    drop(watch);
    t.server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plaintext_needs_the_insecure_flag_and_then_the_app_header() {
    let _x = exclusive().await;
    let site = Site::new().unwrap();

    // Without TLS material and without `insecure`, the server does not start.
    let mut config = site.config();
    config.cert = None;
    let e = Running::start(backend().await, config)
        .await
        .unwrap()
        .stop()
        .await
        .unwrap_err();
    assert!(format!("{e:#}").contains("api.cert is required"), "{e:#}");

    let mut config = site.config();
    config.insecure = true;
    config.cert = None;
    config.key = None;
    config.client_ca = None;
    let server = Running::start(backend().await, config).await.unwrap();
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", server.addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut rules = TrafficRulesServiceClient::new(channel);
    let e = rules
        .list_traffic_rules(ListTrafficRulesRequest {})
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
    assert!(e.message().contains("mecgw-app"), "{}", e.message());
    let mut request = tonic::Request::new(ListTrafficRulesRequest {});
    request
        .metadata_mut()
        .insert("mecgw-app", "maps".parse().unwrap());
    let ids: Vec<u32> = rules
        .list_traffic_rules(request)
        .await
        .unwrap()
        .into_inner()
        .rules
        .iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(ids, vec![20]);
    server.stop().await.unwrap();
}
