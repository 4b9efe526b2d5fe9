//! The TrafficRules and Sessions APIs through a real tonic client over mTLS on loopback,
//! against a real loaded fast path: every method, roles and ownership, optimistic
//! concurrency, field-named validation errors, and that a change made through the API
//! changes what a packet gets from the XDP program (BPF_PROG_TEST_RUN) before the call
//! returns.
//!
//! Needs root (CAP_BPF). CI runs as root, so this is never skipped there.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use mecgw::{
    api::proto::{
        CreateSessionRequest, CreateTrafficRuleRequest, DeleteSessionRequest,
        DeleteTrafficRuleRequest, GetTrafficRuleRequest, ListSessionsRequest,
        ListTrafficRulesRequest, PortRange, ReplaceTrafficRuleRequest, Session, TrafficRule,
        TrafficRuleAction, TrafficRuleState, UpdateTrafficRuleStateRequest,
        sessions_service_client::SessionsServiceClient,
        traffic_rules_service_client::TrafficRulesServiceClient,
    },
    datapath::Direction,
};
use mecgw_ebpf::{Reason, Verdict};
use mecgw_tests::{
    api::{ApiTest, FastPathBackend},
    packet::*,
};
use tonic::{Code, transport::Channel};

/// An uplink G-PDU of session 1 of [`mecgw_tests::api::TABLE_ENTRIES`] (TEID 0x100, UE 10.45.0.1) to `dst`,
/// UDP port 443.
fn uplink(dst: &str) -> Vec<u8> {
    let inner = ipv4(
        v4("10.45.0.1"),
        v4(dst),
        17,
        64,
        0,
        &udp(40000, 443, b"to the edge"),
    );
    n3_v4(
        v4("198.18.1.1"),
        v4("198.18.0.1"),
        &gtp(255, 0x100, None, &[], &inner),
    )
}

/// What these tests ask of the API test world beyond [`ApiTest`].
trait RulesTest {
    /// A TrafficRules client as `who`.
    async fn rules(&self, who: &str) -> TrafficRulesServiceClient<Channel>;
    /// What the XDP program does with [`uplink`]`(dst)`: verdict, reason, rule.
    fn judge(&self, dst: &str) -> (Verdict, Reason, Option<u32>);
}

impl RulesTest for ApiTest {
    async fn rules(&self, who: &str) -> TrafficRulesServiceClient<Channel> {
        TrafficRulesServiceClient::new(self.channel(who).await.unwrap())
    }

    fn judge(&self, dst: &str) -> (Verdict, Reason, Option<u32>) {
        let j = self
            .backend
            .fast_path
            .judge(Direction::Uplink, &uplink(dst))
            .unwrap();
        (j.verdict, j.reason, j.rule)
    }
}

fn drop_rule(id: u32, dst: &str) -> TrafficRule {
    TrafficRule {
        id,
        priority: 1,
        state: TrafficRuleState::Active as i32,
        action: TrafficRuleAction::Drop as i32,
        destination_prefixes: vec![dst.to_string()],
        protocols: vec![17],
        destination_ports: vec![PortRange {
            low: 443,
            high: 443,
        }],
        ..TrafficRule::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_creates_replaces_and_deletes_a_rule_and_each_change_is_in_the_fast_path() {
    let bench = ApiTest::start(16).await.unwrap();
    let mut op = bench.rules("operator").await;

    // Before: no rule speaks for 198.51.100.7.
    assert_eq!(
        bench.judge("198.51.100.7"),
        (Verdict::Pass, Reason::NoRule, None)
    );

    let created = op
        .create_traffic_rule(CreateTrafficRuleRequest {
            rule: Some(drop_rule(50, "198.51.100.0/24")),
        })
        .await
        .unwrap()
        .into_inner()
        .rule
        .unwrap();
    assert_eq!(created.id, 50);
    assert_eq!(created.etag.len(), 16);
    // In force as soon as the call returned.
    assert_eq!(
        bench.judge("198.51.100.7"),
        (Verdict::Drop, Reason::RuleDrop, Some(50))
    );

    let again = op
        .create_traffic_rule(CreateTrafficRuleRequest {
            rule: Some(drop_rule(50, "198.51.100.0/24")),
        })
        .await
        .unwrap_err();
    assert_eq!(again.code(), Code::AlreadyExists, "{again:?}");

    let got = op
        .get_traffic_rule(GetTrafficRuleRequest { id: 50 })
        .await
        .unwrap()
        .into_inner()
        .rule
        .unwrap();
    assert_eq!(got, created);

    let mut local = drop_rule(50, "198.51.100.0/24");
    local.action = TrafficRuleAction::Passthrough as i32;
    let replaced = op
        .replace_traffic_rule(ReplaceTrafficRuleRequest {
            rule: Some(local.clone()),
            etag: created.etag.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .rule
        .unwrap();
    assert_ne!(replaced.etag, created.etag);
    assert_eq!(
        bench.judge("198.51.100.7"),
        (Verdict::Pass, Reason::RulePassthrough, Some(50))
    );

    // The etag from before the replacement is stale now.
    let stale = op
        .replace_traffic_rule(ReplaceTrafficRuleRequest {
            rule: Some(drop_rule(50, "198.51.100.0/24")),
            etag: created.etag.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(stale.code(), Code::FailedPrecondition, "{stale:?}");
    assert!(stale.message().contains("etag"), "{}", stale.message());
    let stale = op
        .delete_traffic_rule(DeleteTrafficRuleRequest {
            id: 50,
            etag: created.etag.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(stale.code(), Code::FailedPrecondition, "{stale:?}");
    // ...and the stale calls changed nothing.
    assert_eq!(
        bench.judge("198.51.100.7"),
        (Verdict::Pass, Reason::RulePassthrough, Some(50))
    );

    op.delete_traffic_rule(DeleteTrafficRuleRequest {
        id: 50,
        etag: replaced.etag.clone(),
    })
    .await
    .unwrap();
    assert_eq!(
        bench.judge("198.51.100.7"),
        (Verdict::Pass, Reason::NoRule, None)
    );
    let gone = op
        .get_traffic_rule(GetTrafficRuleRequest { id: 50 })
        .await
        .unwrap_err();
    assert_eq!(gone.code(), Code::NotFound);

    let all = op
        .list_traffic_rules(ListTrafficRulesRequest {})
        .await
        .unwrap()
        .into_inner()
        .rules;
    assert_eq!(
        all.iter().map(|r| r.id).collect::<Vec<_>>(),
        vec![10, 20, 30]
    );
    bench.server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_rules_get_invalid_argument_naming_the_field_and_change_nothing() {
    let bench = ApiTest::start(16).await.unwrap();
    let mut op = bench.rules("operator").await;
    let cases: Vec<(TrafficRule, &str)> = vec![
        (
            TrafficRule {
                destination_prefixes: vec!["198.51.100.1/24".into()],
                ..drop_rule(60, "198.51.100.0/24")
            },
            "rule.destination_prefixes[0]",
        ),
        (
            TrafficRule {
                priority: 256,
                ..drop_rule(60, "198.51.100.0/24")
            },
            "rule.priority",
        ),
        (
            TrafficRule {
                action: 0,
                ..drop_rule(60, "198.51.100.0/24")
            },
            "rule.action",
        ),
        (
            TrafficRule {
                qfi: Some(64),
                ..drop_rule(60, "198.51.100.0/24")
            },
            "rule.qfi",
        ),
        (
            TrafficRule {
                destination_ports: vec![
                    PortRange { low: 1, high: 1 },
                    PortRange { low: 2, high: 2 },
                    PortRange { low: 3, high: 3 },
                    PortRange { low: 4, high: 4 },
                    PortRange { low: 5, high: 5 },
                ],
                ..drop_rule(60, "198.51.100.0/24")
            },
            "rule.destination_ports: 5 ranges, at most 4",
        ),
    ];
    for (rule, field) in cases {
        let e = op
            .create_traffic_rule(CreateTrafficRuleRequest { rule: Some(rule) })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{field}: {e:?}");
        assert!(e.message().contains(field), "{field}: {}", e.message());
    }
    let e = op
        .create_traffic_rule(CreateTrafficRuleRequest { rule: None })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().starts_with("rule"), "{}", e.message());
    let ids: Vec<u32> = bench.backend.tables_ids();
    assert_eq!(ids, vec![10, 20, 30]);
    bench.server.stop().await.unwrap();
}

trait Ids {
    fn tables_ids(&self) -> Vec<u32>;
}
impl Ids for FastPathBackend {
    fn tables_ids(&self) -> Vec<u32> {
        use mecgw::api::ApiBackend as _;
        self.tables().rules.iter().map(|r| r.id).collect()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_sees_and_switches_only_its_own_rules() {
    let bench = ApiTest::start(16).await.unwrap();
    let mut video = bench.rules("video").await;

    let mine = video
        .list_traffic_rules(ListTrafficRulesRequest {})
        .await
        .unwrap()
        .into_inner()
        .rules;
    assert_eq!(mine.iter().map(|r| r.id).collect::<Vec<_>>(), vec![10, 30]);

    // Rule 30 drops traffic to 203.0.113.0/24; video owns it and switches it off.
    assert_eq!(
        bench.judge("203.0.113.5"),
        (Verdict::Drop, Reason::RuleDrop, Some(30))
    );
    let r30 = video
        .get_traffic_rule(GetTrafficRuleRequest { id: 30 })
        .await
        .unwrap()
        .into_inner()
        .rule
        .unwrap();
    let off = video
        .update_traffic_rule_state(UpdateTrafficRuleStateRequest {
            id: 30,
            state: TrafficRuleState::Inactive as i32,
            etag: r30.etag.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .rule
        .unwrap();
    assert_eq!(off.state, TrafficRuleState::Inactive as i32);
    assert_eq!(
        bench.judge("203.0.113.5"),
        (Verdict::Pass, Reason::NoRule, None)
    );
    // The old etag is stale.
    let e = video
        .update_traffic_rule_state(UpdateTrafficRuleStateRequest {
            id: 30,
            state: TrafficRuleState::Active as i32,
            etag: r30.etag.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    // No etag at all is a bad request, naming the field.
    let e = video
        .update_traffic_rule_state(UpdateTrafficRuleStateRequest {
            id: 30,
            state: TrafficRuleState::Active as i32,
            etag: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(e.message().starts_with("etag"), "{}", e.message());

    // Rule 20 belongs to maps: video can neither read nor switch it, nor learn if it exists.
    for id in [20, 999] {
        let e = video
            .get_traffic_rule(GetTrafficRuleRequest { id })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::PermissionDenied, "{id}: {e:?}");
    }
    let e = video
        .update_traffic_rule_state(UpdateTrafficRuleStateRequest {
            id: 20,
            state: TrafficRuleState::Inactive as i32,
            etag: "0000000000000000".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");

    // Create, replace and delete are the operator's, even for the app's own rules.
    let e = video
        .create_traffic_rule(CreateTrafficRuleRequest {
            rule: Some(drop_rule(10, "198.51.100.0/24")),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    let e = video
        .replace_traffic_rule(ReplaceTrafficRuleRequest {
            rule: Some(drop_rule(30, "198.51.100.0/24")),
            etag: off.etag.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    let e = video
        .delete_traffic_rule(DeleteTrafficRuleRequest {
            id: 30,
            etag: off.etag.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    assert_eq!(bench.backend.tables_ids(), vec![10, 20, 30]);
    bench.server.stop().await.unwrap();
}

fn session(id: u32, teid: u32, ue: &str) -> Session {
    Session {
        id,
        uplink_teid: teid,
        downlink_teid: teid + 0x100,
        ue_ipv4: ue.into(),
        ue_ipv6: String::new(),
        gnb: "198.18.1.1".into(),
        qfi: 9,
        imsi: format!("0010100000{id:05}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_manages_sessions_and_the_fast_path_follows() {
    let bench = ApiTest::start(16).await.unwrap();
    let mut op = SessionsServiceClient::new(bench.channel("operator").await.unwrap());

    // TEID 0x101 is unknown: passed as unknown_teid.
    let inner = ipv4(
        v4("10.45.0.2"),
        v4("203.0.113.9"),
        17,
        64,
        0,
        &udp(1, 443, b"x"),
    );
    let frame = n3_v4(
        v4("198.18.1.1"),
        v4("198.18.0.1"),
        &gtp(255, 0x101, None, &[], &inner),
    );
    let judge = || {
        let j = bench
            .backend
            .fast_path
            .judge(Direction::Uplink, &frame)
            .unwrap();
        (j.verdict, j.reason, j.session)
    };
    assert_eq!(judge(), (Verdict::Pass, Reason::UnknownTeid, None));

    let s = op
        .create_session(CreateSessionRequest {
            session: Some(session(2, 0x101, "10.45.0.2")),
        })
        .await
        .unwrap()
        .into_inner()
        .session
        .unwrap();
    assert_eq!(s, session(2, 0x101, "10.45.0.2"));
    // Now the session's traffic hits rule 30 (DROP 203.0.113.0/24).
    assert_eq!(judge(), (Verdict::Drop, Reason::RuleDrop, Some(2)));

    // A duplicate id, a duplicate TEID and a bad address are refused, naming what is wrong.
    let e = op
        .create_session(CreateSessionRequest {
            session: Some(session(2, 0x102, "10.45.0.3")),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::AlreadyExists, "{e:?}");
    let e = op
        .create_session(CreateSessionRequest {
            session: Some(session(3, 0x101, "10.45.0.3")),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("uplink_teid"), "{}", e.message());
    let e = op
        .create_session(CreateSessionRequest {
            session: Some(Session {
                gnb: "gnb.example".into(),
                qfi: 70,
                ..session(3, 0x103, "10.45.0.300")
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    for field in ["session.ue_ipv4", "session.gnb", "session.qfi"] {
        assert!(e.message().contains(field), "{field}: {}", e.message());
    }

    // Paging: three sessions, pages of two.
    op.create_session(CreateSessionRequest {
        session: Some(session(7, 0x107, "10.45.0.7")),
    })
    .await
    .unwrap();
    let p1 = op
        .list_sessions(ListSessionsRequest {
            page_size: 2,
            page_token: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        p1.sessions.iter().map(|s| s.id).collect::<Vec<_>>(),
        vec![1, 2]
    );
    assert!(!p1.next_page_token.is_empty());
    let p2 = op
        .list_sessions(ListSessionsRequest {
            page_size: 2,
            page_token: p1.next_page_token,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        p2.sessions.iter().map(|s| s.id).collect::<Vec<_>>(),
        vec![7]
    );
    assert!(p2.next_page_token.is_empty());
    let e = op
        .list_sessions(ListSessionsRequest {
            page_size: 2,
            page_token: "garbage".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().starts_with("page_token"), "{}", e.message());

    op.delete_session(DeleteSessionRequest { id: 2 })
        .await
        .unwrap();
    assert_eq!(judge(), (Verdict::Pass, Reason::UnknownTeid, None));
    let e = op
        .delete_session(DeleteSessionRequest { id: 2 })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);

    // Sessions are the operator's alone.
    let mut video = SessionsServiceClient::new(bench.channel("video").await.unwrap());
    let e = video
        .list_sessions(ListSessionsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    let e = video
        .create_session(CreateSessionRequest {
            session: Some(session(9, 0x109, "10.45.0.9")),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    let e = video
        .delete_session(DeleteSessionRequest { id: 1 })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    bench.server.stop().await.unwrap();
}
