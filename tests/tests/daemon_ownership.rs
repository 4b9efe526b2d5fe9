//! Who owns what, through `mecgw run` and its operator API (issue 11, item 4): the tables
//! file owns what it defines and SIGHUP re-reads it; what is created through the API is the
//! API's, kept under the state directory, and survives SIGHUP and restarts. An id has one
//! owner: the API cannot delete or replace the file's entries (only switch a rule's state,
//! which also survives), and a file that starts defining an API-owned id is a rejected
//! reload naming both. Needs root (namespaces, XDP); CI runs as root.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use mecgw::api::proto::{
    CreateSessionRequest, CreateTrafficRuleRequest, DeleteSessionRequest, DeleteTrafficRuleRequest,
    GetTrafficRuleRequest, ListSessionsRequest, ReplaceTrafficRuleRequest, Session, TrafficRule,
    TrafficRuleAction, TrafficRuleState, UpdateTrafficRuleStateRequest,
    sessions_service_client::SessionsServiceClient,
    traffic_rules_service_client::TrafficRulesServiceClient,
};
use mecgw_tests::{
    api::{OPERATOR_URI, Site, connect},
    bed::{Bed, sample, tables},
};
use tonic::{Code, transport::Channel};

const API: &str = "127.0.0.1:50052";

/// The bed's config with the operator API on [`API`].
fn configure(bed: &Bed, site: &Site) -> std::path::PathBuf {
    let config = bed.write("");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(&format!(
        "\n[api]\nlisten = \"{API}\"\ncert = \"{d}/server.pem\"\nkey = \"{d}/server.key\"\n\
         client_ca = \"{d}/ca.pem\"\ndrain_ms = 50\n\n[api.apps.operator]\nrole = \"operator\"\n\
         sans = [\"{OPERATOR_URI}\"]\n",
        d = site.dir.path().display()
    ));
    std::fs::write(&config, text).unwrap();
    config
}

/// Runs `f` with an operator channel, inside the bed's `mec` namespace.
fn as_operator<T: Send>(bed: &Bed, site: &Site, f: impl AsyncFnOnce(Channel) -> T + Send) -> T {
    let operator = site.operator().unwrap();
    let ca = site.ca.cert_pem();
    mecgw_tests::in_netns(&bed.mec, move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(async move {
                let channel = connect(API.parse().unwrap(), &ca, Some(&operator))
                    .await
                    .unwrap();
                f(channel).await
            })
    })
    .unwrap()
}

fn api_session() -> Session {
    Session {
        id: 50,
        uplink_teid: 0x5000,
        downlink_teid: 0x6000,
        ue_ipv4: "198.19.0.50".into(),
        gnb: "198.18.0.1".into(),
        qfi: 9,
        imsi: "001010000000050".into(),
        ..Session::default()
    }
}

fn api_rule() -> TrafficRule {
    TrafficRule {
        id: 77,
        priority: 5,
        state: TrafficRuleState::Active as i32,
        action: TrafficRuleAction::Drop as i32,
        destination_prefixes: vec!["198.51.100.0/24".into()],
        ..TrafficRule::default()
    }
}

async fn session_ids(channel: Channel) -> Vec<u32> {
    let mut c = SessionsServiceClient::new(channel);
    let r = c
        .list_sessions(ListSessionsRequest::default())
        .await
        .unwrap()
        .into_inner();
    r.sessions.iter().map(|s| s.id).collect()
}

async fn rule(channel: Channel, id: u32) -> Result<TrafficRule, tonic::Status> {
    let mut c = TrafficRulesServiceClient::new(channel);
    let r = c.get_traffic_rule(GetTrafficRuleRequest { id }).await?;
    Ok(r.into_inner().rule.unwrap())
}

#[test]
fn api_entries_survive_reload_and_restart_and_each_id_has_one_owner() {
    let bed = Bed::new();
    let site = Site::new().unwrap();
    let config = configure(&bed, &site);
    let mut d = bed.start(&config);
    bed.wait_ready(&mut d);

    // Created through the API; rule 10 (the file's) switched off through it.
    as_operator(&bed, &site, async |ch| {
        let mut s = SessionsServiceClient::new(ch.clone());
        s.create_session(CreateSessionRequest {
            session: Some(api_session()),
        })
        .await
        .unwrap();
        let mut r = TrafficRulesServiceClient::new(ch.clone());
        r.create_traffic_rule(CreateTrafficRuleRequest {
            rule: Some(api_rule()),
        })
        .await
        .unwrap();
        let ten = rule(ch.clone(), 10).await.unwrap();
        r.update_traffic_rule_state(UpdateTrafficRuleStateRequest {
            id: 10,
            state: TrafficRuleState::Inactive as i32,
            etag: ten.etag,
        })
        .await
        .unwrap();
        // The file's entries are the file's: not deleted or replaced from here.
        let e = s
            .delete_session(DeleteSessionRequest { id: 1 })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
        assert!(e.message().contains("tables file"), "{}", e.message());
        let ten = rule(ch.clone(), 10).await.unwrap();
        let e = r
            .delete_traffic_rule(DeleteTrafficRuleRequest {
                id: 10,
                etag: ten.etag.clone(),
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
        let e = r
            .replace_traffic_rule(ReplaceTrafficRuleRequest {
                rule: Some(TrafficRule {
                    id: 10,
                    ..api_rule()
                }),
                etag: ten.etag,
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
        let e = s
            .create_session(CreateSessionRequest {
                session: Some(Session {
                    id: 1,
                    ..api_session()
                }),
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::AlreadyExists, "{e:?}");
        assert!(e.message().contains("tables file"), "{}", e.message());
    });
    let m = bed.http("/metrics").1;
    assert_eq!(sample(&m, "mecgw_sessions"), 2);
    assert_eq!(sample(&m, "mecgw_rules"), 2);

    // A reload of an unchanged file keeps what the API made, and the state it set.
    d.signal(libc::SIGHUP);
    let m = bed.wait_for_sample("mecgw_reloads_total{result=\"ok\"}", 1);
    assert_eq!(sample(&m, "mecgw_sessions"), 2, "{m}");
    assert_eq!(sample(&m, "mecgw_rules"), 2, "{m}");
    as_operator(&bed, &site, async |ch| {
        assert_eq!(session_ids(ch.clone()).await, vec![1, 50]);
        let ten = rule(ch.clone(), 10).await.unwrap();
        assert_eq!(ten.state, TrafficRuleState::Inactive as i32);
        assert_eq!(rule(ch, 77).await.unwrap().priority, 5);
    });

    // A file that starts defining the API's session: the reload is rejected, naming both.
    std::fs::write(
        bed.path("tables.toml"),
        tables(
            "\n[[sessions]]\nid = 50\nuplink_teid = 0x7000\ndownlink_teid = 0x7001\n\
             ue_ipv4 = \"198.19.0.70\"\ngnb = \"198.18.0.1\"\nqfi = 9\n",
        ),
    )
    .unwrap();
    d.signal(libc::SIGHUP);
    let m = bed.wait_for_sample("mecgw_reloads_total{result=\"rejected\"}", 1);
    assert_eq!(sample(&m, "mecgw_sessions"), 2, "{m}");
    std::fs::write(bed.path("tables.toml"), tables("")).unwrap();

    // Kill and start again: the API's entries and the state it set come back.
    assert!(d.stop().success());
    let log = d.stderr();
    assert!(
        log.contains("session 50: also created through the operator API"),
        "{log}"
    );
    let stored = std::fs::read_to_string(bed.path("state").join("api/tables.json")).unwrap();
    assert!(stored.contains("\"001010000000050\""), "{stored}");
    let mut d = bed.start(&config);
    bed.wait_ready(&mut d);
    let m = bed.http("/metrics").1;
    assert_eq!(sample(&m, "mecgw_sessions"), 2, "{m}");
    assert_eq!(sample(&m, "mecgw_rules"), 2, "{m}");
    as_operator(&bed, &site, async |ch| {
        assert_eq!(session_ids(ch.clone()).await, vec![1, 50]);
        let ten = rule(ch.clone(), 10).await.unwrap();
        assert_eq!(ten.state, TrafficRuleState::Inactive as i32);
        // The API's own entries are the API's to remove.
        let mut s = SessionsServiceClient::new(ch.clone());
        s.delete_session(DeleteSessionRequest { id: 50 })
            .await
            .unwrap();
        let seventy_seven = rule(ch.clone(), 77).await.unwrap();
        TrafficRulesServiceClient::new(ch.clone())
            .delete_traffic_rule(DeleteTrafficRuleRequest {
                id: 77,
                etag: seventy_seven.etag,
            })
            .await
            .unwrap();
        assert_eq!(session_ids(ch).await, vec![1]);
    });
    assert!(d.stop().success());
}

#[test]
fn a_damaged_api_store_stops_startup_with_its_position() {
    let bed = Bed::new();
    let site = Site::new().unwrap();
    let config = configure(&bed, &site);
    let store = bed.path("state").join("api");
    std::fs::create_dir_all(&store).unwrap();
    std::fs::write(
        store.join("tables.json"),
        "{\n  \"sessions\": [\n    {\"id\": 1,\n",
    )
    .unwrap();
    let mut d = bed.start(&config);
    let status = d.child.wait().unwrap();
    assert!(!status.success());
    let log = d.stderr();
    assert!(log.contains("tables.json:4:"), "{log}");
    assert!(log.contains("operator API"), "{log}");
}
