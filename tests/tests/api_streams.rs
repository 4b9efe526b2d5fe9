//! The EdgeServices, Telemetry and Status APIs, `grpc.health.v1` and reflection, through a
//! real tonic client over mTLS on loopback: service registration and its watch stream,
//! Publish into the engine's bounded queue (and RESOURCE_EXHAUSTED when it stays full),
//! Subscribe filtered to what the caller may see, health NOT_SERVING until ready and again
//! while draining, and message size limits.
//!
//! Needs root (CAP_BPF) for the fast path behind the API; CI runs as root.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{sync::Arc, time::Duration};

use futures::StreamExt as _;
use mecgw::{
    api::{
        ReleasedOutput,
        proto::{
            DeregisterServiceRequest, DiscoverServicesRequest, GetStatusRequest, PublishRequest,
            RegisterServiceRequest, ServiceChangeKind, SubscribeRequest, WatchServicesRequest,
            edge_services_service_client::EdgeServicesServiceClient,
            status_service_client::StatusServiceClient,
            telemetry_service_client::TelemetryServiceClient,
        },
    },
    datapath::Direction,
};
use mecgw_tests::api::{ApiTest, edge_service};
use tonic::{Code, transport::Channel};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

async fn next_within<S: futures::Stream + Unpin>(s: &mut S) -> Option<S::Item> {
    tokio::time::timeout(Duration::from_secs(10), s.next())
        .await
        .expect("no message within 10 s")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_register_update_deregister_discover_and_watch() {
    let t = ApiTest::start(16).await.unwrap();
    let mut video = EdgeServicesServiceClient::new(t.channel("video").await.unwrap());
    let mut op = EdgeServicesServiceClient::new(t.channel("operator").await.unwrap());

    let registered = video
        .register_service(RegisterServiceRequest {
            service: Some(edge_service("video", "1.0")),
        })
        .await
        .unwrap()
        .into_inner()
        .service
        .unwrap();
    assert_eq!(registered.owner, "video");

    // The operator's watch starts with what is registered, then follows every change.
    let mut watch = op
        .watch_services(WatchServicesRequest {})
        .await
        .unwrap()
        .into_inner();
    let w = next_within(&mut watch).await.unwrap().unwrap();
    assert_eq!(w.kind, ServiceChangeKind::Registered as i32);
    assert_eq!(w.service.unwrap().version, "1.0");

    video
        .register_service(RegisterServiceRequest {
            service: Some(edge_service("video", "1.1")),
        })
        .await
        .unwrap();
    let w = next_within(&mut watch).await.unwrap().unwrap();
    assert_eq!(w.kind, ServiceChangeKind::Updated as i32);
    assert_eq!(w.service.unwrap().version, "1.1");
    assert_eq!(w.missed, 0);

    let found = op
        .discover_services(DiscoverServicesRequest {
            name: "video".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .services;
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].version, "1.1");

    // Bad registrations name the field.
    let mut bad = edge_service("Video Analytics", "");
    bad.state = 0;
    let e = op
        .register_service(RegisterServiceRequest { service: Some(bad) })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    for field in ["service.name", "service.version", "service.state"] {
        assert!(e.message().contains(field), "{field}: {}", e.message());
    }

    video
        .deregister_service(DeregisterServiceRequest {
            name: "video".into(),
        })
        .await
        .unwrap();
    let w = next_within(&mut watch).await.unwrap().unwrap();
    assert_eq!(w.kind, ServiceChangeKind::Deregistered as i32);
    let e = video
        .deregister_service(DeregisterServiceRequest {
            name: "video".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);

    // Shutdown ends the watch instead of holding the server open.
    t.server.stop().await.unwrap();
    let end = next_within(&mut watch).await;
    assert!(
        !matches!(end, Some(Ok(_))),
        "the watch went on after shutdown: {end:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_feeds_the_engine_queue_and_refuses_with_resource_exhausted_when_it_stays_full() {
    let t = ApiTest::start(8).await.unwrap();
    let mut video = TelemetryServiceClient::new(t.channel("video").await.unwrap());
    let mut queue = t.backend.take_ingested().unwrap();

    // Five records fit: accepted, with the app's name and the declared kind, as sent.
    let batch = PublishRequest {
        kind: "app".into(),
        records_json: (0..5).map(|i| format!(r#"{{"cell":{i}}}"#)).collect(),
    };
    let accepted = video
        .publish(futures::stream::iter(vec![batch]))
        .await
        .unwrap()
        .into_inner()
        .accepted;
    assert_eq!(accepted, 5);
    for i in 0..5 {
        let r = queue.try_recv().unwrap();
        assert_eq!(&*r.app, "video");
        assert_eq!(&*r.kind, "app");
        assert_eq!(r.json, format!(r#"{{"cell":{i}}}"#));
    }
    assert!(queue.try_recv().is_err());

    // Nobody drains the queue now: 8 fit, then the engine is "behind".
    let batches: Vec<PublishRequest> = (0..4)
        .map(|_| PublishRequest {
            kind: "app".into(),
            records_json: (0..5).map(|i| format!(r#"{{"n":{i}}}"#)).collect(),
        })
        .collect();
    let e = video
        .publish(futures::stream::iter(batches))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
    assert!(
        e.message().contains("8 record(s) were accepted"),
        "{}",
        e.message()
    );
    let mut n = 0;
    while queue.try_recv().is_ok() {
        n += 1;
    }
    assert_eq!(n, 8, "exactly the accepted records are queued");

    // A kind the app may not publish, one the policy does not declare, and a bad record.
    for (kind, record, code, want) in [
        ("flow", "{}", Code::PermissionDenied, "may not publish"),
        ("gps", "{}", Code::InvalidArgument, "kind: \"gps\""),
        ("app", "[1,2]", Code::InvalidArgument, "records_json[0]"),
    ] {
        let e = video
            .publish(futures::stream::iter(vec![PublishRequest {
                kind: kind.into(),
                records_json: vec![record.into()],
            }]))
            .await
            .unwrap_err();
        assert_eq!(e.code(), code, "{kind}: {e:?}");
        assert!(e.message().contains(want), "{kind}: {}", e.message());
    }
    assert!(queue.try_recv().is_err(), "refused records were queued");
    t.server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_streams_only_the_releases_the_caller_may_see() {
    let t = ApiTest::start(8).await.unwrap();
    let mut video = TelemetryServiceClient::new(t.channel("video").await.unwrap());
    let mut op = TelemetryServiceClient::new(t.channel("operator").await.unwrap());
    let mut video_stream = video
        .subscribe(SubscribeRequest::default())
        .await
        .unwrap()
        .into_inner();
    let mut op_stream = op
        .subscribe(SubscribeRequest {
            releases: vec!["dwell_time".into()],
        })
        .await
        .unwrap()
        .into_inner();
    // The streams are open once the server has answered the call; releases now.
    for (release, json) in [
        ("dwell_time", r#"{"p50":12}"#),
        ("cell_load", r#"{"cell":"c1","load":0.4}"#),
    ] {
        t.backend
            .released
            .send(Arc::new(ReleasedOutput {
                release: release.into(),
                json: json.into(),
            }))
            .unwrap();
    }
    let v = next_within(&mut video_stream).await.unwrap().unwrap();
    assert_eq!(v.release, "cell_load", "video sees only cell_load");
    assert_eq!(v.output_json, r#"{"cell":"c1","load":0.4}"#);
    let o = next_within(&mut op_stream).await.unwrap().unwrap();
    assert_eq!(
        o.release, "dwell_time",
        "the operator asked for dwell_time only"
    );
    t.server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_is_serving_only_while_ready_and_not_draining() {
    let mut t = ApiTest::start_with(8, false, |_| {}).await.unwrap();
    let channel = t.channel("video").await.unwrap();
    let mut health = HealthClient::new(channel.clone());
    let status = |service: &str| HealthCheckRequest {
        service: service.into(),
    };
    let check = |r: tonic::Response<tonic_health::pb::HealthCheckResponse>| r.into_inner().status;

    // Not attached / no policy yet.
    for s in [
        "",
        "mecgw.v1.TrafficRulesService",
        "mecgw.v1.TelemetryService",
    ] {
        assert_eq!(
            check(health.check(status(s)).await.unwrap()),
            ServingStatus::NotServing as i32,
            "{s:?}"
        );
    }
    let mut watch = health.watch(status("")).await.unwrap().into_inner();
    assert_eq!(
        next_within(&mut watch).await.unwrap().unwrap().status,
        ServingStatus::NotServing as i32
    );
    t.backend.ready.send_replace(true);
    assert_eq!(
        next_within(&mut watch).await.unwrap().unwrap().status,
        ServingStatus::Serving as i32
    );
    assert_eq!(
        check(
            health
                .check(status("mecgw.v1.SessionsService"))
                .await
                .unwrap()
        ),
        ServingStatus::Serving as i32
    );

    // Shutdown: NOT_SERVING while the server drains (drain_ms = 200 in the test config).
    t.server.begin_shutdown();
    assert_eq!(
        next_within(&mut watch).await.unwrap().unwrap().status,
        ServingStatus::NotServing as i32
    );
    drop(watch);
    t.server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_reflection_and_message_limits() {
    let t = ApiTest::start_with(8, true, |c| c.max_message_bytes = 4096)
        .await
        .unwrap();
    let op = t.channel("operator").await.unwrap();

    // A packet through the fast path moves the counters the status reports.
    let before = StatusServiceClient::new(op.clone())
        .get_status(GetStatusRequest {})
        .await
        .unwrap()
        .into_inner();
    t.backend
        .fast_path
        .test_run(Direction::Uplink, &[0u8; 64], 1)
        .unwrap();
    let after = StatusServiceClient::new(op.clone())
        .get_status(GetStatusRequest {})
        .await
        .unwrap()
        .into_inner();
    let pass = |s: &mecgw::api::proto::GetStatusResponse| {
        s.verdicts
            .iter()
            .find(|c| c.name == "pass")
            .map(|c| c.packets)
            .unwrap()
    };
    assert_eq!(pass(&after), pass(&before) + 1);
    // The shared tables: three rules, one session.
    assert_eq!(after.rules, 3);
    assert_eq!(after.sessions, 1);
    assert_eq!(after.policy_hash, "sha256:test");
    assert_eq!(after.budgets[0].scope, "cell_load");
    assert_eq!(after.egress_backlog[0].destination, "central");
    assert!(after.reasons.iter().any(|r| r.name == "not_gtp"));

    // Reflection, both versions, list every mecgw.v1 service.
    for version in ["v1", "v1alpha"] {
        let names = reflection_services(op.clone(), version).await;
        for s in [
            "mecgw.v1.TrafficRulesService",
            "mecgw.v1.SessionsService",
            "mecgw.v1.EdgeServicesService",
            "mecgw.v1.TelemetryService",
            "mecgw.v1.StatusService",
            "grpc.health.v1.Health",
        ] {
            assert!(names.iter().any(|n| n == s), "{version}: {s} in {names:?}");
        }
    }

    // A request over the limit is refused, and the connection stays usable.
    let big = PublishRequest {
        kind: "app".into(),
        records_json: vec![format!(r#"{{"x":"{}"}}"#, "a".repeat(8192))],
    };
    let e = TelemetryServiceClient::new(op.clone())
        .publish(futures::stream::iter(vec![big]))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
    assert!(e.message().ends_with("limit of 4096 bytes"), "{e:?}");
    StatusServiceClient::new(op)
        .get_status(GetStatusRequest {})
        .await
        .unwrap();

    // Every call was counted by method and code, and renders for /metrics.
    let get = "/mecgw.v1.StatusService/GetStatus";
    assert_eq!(t.backend.metrics.calls(get, Code::Ok), 3);
    let text = t.backend.metrics.render();
    let line = format!("mecgw_api_requests_total{{method=\"{get}\",code=\"Ok\"}} 3");
    assert!(text.lines().any(|l| l == line), "{text}");
    assert!(
        text.contains(
            "mecgw_api_request_duration_seconds_count{method=\"/mecgw.v1.TelemetryService/Publish\""
        ),
        "{text}"
    );
    t.server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_over_its_size_limit_ends_resource_exhausted_naming_the_limit() {
    let t = ApiTest::start_with(8, true, |c| c.max_message_bytes = 4096)
        .await
        .unwrap();
    let op = t.channel("operator").await.unwrap();
    let exhausted = |e: &tonic::Status, limit: usize| {
        assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
        let says = format!("is over this method's limit of {limit} bytes");
        assert!(e.message().ends_with(&says), "{e:?}");
    };

    // Reflection (a bidi stream), both versions: a 100 KiB symbol name is over its 64 KiB
    // limit. The request stream stays open, as an interactive client's does; the call still
    // ends, with an error the caller sees (the timeout only guards against a hang).
    let symbol = "a".repeat(100 * 1024);
    for version in ["v1", "v1alpha"] {
        let e = tokio::time::timeout(
            Duration::from_secs(30),
            reflection_error(op.clone(), version, symbol.clone()),
        )
        .await
        .expect("the reflection call did not end within 30 s");
        exhausted(&e, 64 * 1024);
    }
    // A request within the limit on the same connection is answered.
    let names = reflection_services(op.clone(), "v1").await;
    assert!(
        names.iter().any(|n| n == "mecgw.v1.StatusService"),
        "{names:?}"
    );

    // Unary calls: health (64 KiB) and a mecgw.v1 method (the configured 4096 bytes).
    let e = HealthClient::new(op.clone())
        .check(HealthCheckRequest {
            service: symbol.clone(),
        })
        .await
        .unwrap_err();
    exhausted(&e, 64 * 1024);
    let mut service = edge_service("video", "1.0");
    service.endpoint = format!("https://{}.example:8443", "a".repeat(8192));
    let register = "/mecgw.v1.EdgeServicesService/RegisterService";
    let e = EdgeServicesServiceClient::new(op.clone())
        .register_service(RegisterServiceRequest {
            service: Some(service),
        })
        .await
        .unwrap_err();
    exhausted(&e, 4096);
    // The metrics count the code the caller saw.
    assert_eq!(
        t.backend.metrics.calls(register, Code::ResourceExhausted),
        1
    );
    assert_eq!(t.backend.metrics.calls(register, Code::OutOfRange), 0);
    t.server.stop().await.unwrap();
}

/// The status a reflection call (v1 or v1alpha) asking for the file of `symbol` ends with,
/// its request stream left open; panics if it ends with an answer or no error.
async fn reflection_error(channel: Channel, version: &str, symbol: String) -> tonic::Status {
    macro_rules! ask {
        ($($pb:ident)::+) => {{
            use $($pb)::+::{
                ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
                server_reflection_request::MessageRequest,
            };
            let req = ServerReflectionRequest {
                host: String::new(),
                message_request: Some(MessageRequest::FileContainingSymbol(symbol)),
            };
            let requests = futures::stream::iter(vec![req]).chain(futures::stream::pending());
            match ServerReflectionClient::new(channel)
                .server_reflection_info(requests)
                .await
            {
                Err(e) => e,
                Ok(answers) => match answers.into_inner().next().await {
                    Some(Err(e)) => e,
                    other => panic!("{version}: an error, not {other:?}"),
                },
            }
        }};
    }
    if version == "v1" {
        ask!(tonic_reflection::pb::v1)
    } else {
        ask!(tonic_reflection::pb::v1alpha)
    }
}

/// The services a reflection client of the generated module `$pb` (v1 or v1alpha) lists.
macro_rules! list_services {
    ($channel:expr, $($pb:ident)::+) => {{
        use $($pb)::+::{
            ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
            server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
        };
        let req = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let mut out = ServerReflectionClient::new($channel)
            .server_reflection_info(futures::stream::iter(vec![req]))
            .await
            .unwrap()
            .into_inner();
        match out.next().await.unwrap().unwrap().message_response {
            Some(MessageResponse::ListServicesResponse(l)) => {
                l.service.into_iter().map(|s| s.name).collect()
            }
            other => panic!("{other:?}"),
        }
    }};
}

async fn reflection_services(channel: Channel, version: &str) -> Vec<String> {
    if version == "v1" {
        list_services!(channel, tonic_reflection::pb::v1)
    } else {
        list_services!(channel, tonic_reflection::pb::v1alpha)
    }
}
