//! `/v1/schedules` through real HTTP: every route, its refusals and its scopes, an upsert that
//! changes nothing, a paused schedule's skips in the ledger, a trigger whose webhook runs, and
//! `explain` around Berlin's clock changes.

use std::time::Duration;

use punctual_server::auth::Scope;
use serde_json::{Value, json};

use crate::harness::{Answer, Backend, Receiver, Server, eventually};

crate::on_every_store!(
    schedules_are_created_read_listed_changed_and_deleted,
    an_upsert_of_the_same_definition_is_unchanged,
    bad_input_is_a_problem_and_changes_nothing,
    a_paused_schedule_records_its_occurrences_as_skipped,
    a_trigger_makes_a_job_that_runs,
);

/// The tests that need no store of their own kind run once.
mod once {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn routes_need_their_scopes() {
        super::routes_need_their_scopes(crate::harness::Backend::Memory).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn explain_answers_berlin_clock_changes_and_outages() {
        super::explain_answers_berlin_clock_changes_and_outages(crate::harness::Backend::Memory)
            .await;
    }
}

fn nightly(name: &str) -> Value {
    json!({
        "name": name,
        "cron": "30 2 * * *",
        "time_zone": "Europe/Berlin",
        "kind": "report",
        "payload": {"format": "pdf"},
    })
}

async fn put(server: &Server, path: &str, body: &Value) -> Answer {
    server
        .request("PUT", path, Some(&server.admin), Some(body))
        .await
}

async fn patch(server: &Server, path: &str, body: &Value) -> Answer {
    server
        .request("PATCH", path, Some(&server.admin), Some(body))
        .await
}

async fn delete(server: &Server, path: &str) -> Answer {
    server
        .request("DELETE", path, Some(&server.admin), None)
        .await
}

fn names(answer: &Answer) -> Vec<String> {
    answer.body["schedules"]
        .as_array()
        .expect("schedules")
        .iter()
        .map(|schedule| schedule["name"].as_str().expect("a name").to_owned())
        .collect()
}

pub async fn schedules_are_created_read_listed_changed_and_deleted(backend: Backend) {
    let server = Server::start(backend).await;
    let created = server.post("/v1/schedules", &nightly("nightly")).await;
    assert_eq!(created.status, 201, "{created:?}");
    let id = created.body["id"].as_str().expect("an id").to_owned();
    assert_eq!(created.headers["location"], format!("/v1/schedules/{id}"));
    let view = &created.body;
    assert_eq!(view["name"], "nightly");
    assert_eq!(view["status"], "active");
    assert_eq!(view["cron"], "30 2 * * *");
    assert_eq!(view["time_zone"], "Europe/Berlin");
    assert_eq!(view["kind"], "report");
    assert_eq!(view["payload"], json!({"format": "pdf"}));
    assert_eq!(view["queue"], "default");
    assert_eq!(view["overlap"], "allow");
    assert_eq!(
        view["misfire"],
        json!({"policy": "latest", "grace_ms": 60000, "catch_up_window_ms": 86400000})
    );
    assert_eq!(
        (view["fired"].as_u64(), view["skipped"].as_u64()),
        (Some(0), Some(0))
    );
    assert!(view["next_occurrence"].is_string(), "{view}");
    assert!(view["high_water"].is_string(), "{view}");

    let again = server.post("/v1/schedules", &nightly("nightly")).await;
    assert_eq!(
        (again.status, again.code()),
        (409, "already_exists"),
        "{again:?}"
    );

    let by_name = server.get("/v1/schedules/nightly").await;
    let by_id = server.get(&format!("/v1/schedules/{id}")).await;
    assert_eq!(by_name.status, 200, "{by_name:?}");
    assert_eq!(by_name.body["id"], id);
    assert_eq!(by_id.body["name"], "nightly");
    let missing = server.get("/v1/schedules/weekly").await;
    assert_eq!((missing.status, missing.code()), (404, "not_found"));
    let unknown_id = server
        .get("/v1/schedules/0193f0e4-0000-7000-8000-000000000000")
        .await;
    assert_eq!((unknown_id.status, unknown_id.code()), (404, "not_found"));

    // A name with a slash is one path segment, percent-encoded.
    for name in ["a-first", "team/zeta", "b-second"] {
        let answer = server.post("/v1/schedules", &nightly(name)).await;
        assert_eq!(answer.status, 201, "{answer:?}");
    }
    let slashed = server.get("/v1/schedules/team%2Fzeta").await;
    assert_eq!(slashed.status, 200, "{slashed:?}");
    let first = server.get("/v1/schedules?limit=2").await;
    assert_eq!(first.status, 200, "{first:?}");
    assert_eq!(names(&first), ["a-first", "b-second"]);
    let cursor = first.body["next_cursor"]
        .as_str()
        .expect("a cursor")
        .to_owned();
    let second = server
        .get(&format!("/v1/schedules?limit=2&cursor={cursor}"))
        .await;
    assert_eq!(names(&second), ["nightly", "team/zeta"]);
    assert!(second.body.get("next_cursor").is_none(), "{second:?}");
    let whole = server.get("/v1/schedules").await;
    assert_eq!(names(&whole).len(), 4);

    // PATCH: the fields given change, the others stay.
    let changed = patch(
        &server,
        "/v1/schedules/nightly",
        &json!({
            "time_zone": "America/New_York",
            "misfire": {"policy": "all", "limit": 3},
            "overlap": "skip",
            "end_at": "2030-01-01T00:00:00Z",
            "queue": "reports",
        }),
    )
    .await;
    assert_eq!(changed.status, 200, "{changed:?}");
    let view = &changed.body;
    assert_eq!(view["id"], id);
    assert_eq!(view["cron"], "30 2 * * *");
    assert_eq!(view["time_zone"], "America/New_York");
    assert_eq!(view["misfire"]["policy"], "all");
    assert_eq!(view["misfire"]["limit"], 3);
    assert_eq!(view["misfire"]["grace_ms"], 60000);
    assert_eq!(view["overlap"], "skip");
    assert_eq!(view["end_at"], "2030-01-01T00:00:00Z");
    assert_eq!(view["queue"], "reports");
    assert_eq!(view["kind"], "report");
    assert_eq!(view["payload"], json!({"format": "pdf"}));
    assert!(view["version"].as_u64() > created.body["version"].as_u64());
    let cleared = patch(
        &server,
        &format!("/v1/schedules/{id}"),
        &json!({"end_at": null, "interval_ms": 3_600_000}),
    )
    .await;
    assert_eq!(cleared.status, 200, "{cleared:?}");
    assert!(cleared.body.get("end_at").is_none(), "{cleared:?}");
    assert!(cleared.body.get("cron").is_none(), "{cleared:?}");
    assert_eq!(cleared.body["interval_ms"], 3_600_000);
    let taken = patch(
        &server,
        "/v1/schedules/nightly",
        &json!({"name": "a-first"}),
    )
    .await;
    assert_eq!(
        (taken.status, taken.code()),
        (409, "already_exists"),
        "{taken:?}"
    );
    let renamed = patch(&server, "/v1/schedules/nightly", &json!({"name": "hourly"})).await;
    assert_eq!(renamed.status, 200, "{renamed:?}");
    assert_eq!(renamed.body["name"], "hourly");
    assert_eq!(renamed.body["id"], id);
    let gone = patch(&server, "/v1/schedules/nightly", &json!({"queue": "x"})).await;
    assert_eq!((gone.status, gone.code()), (404, "not_found"));

    // Pause and resume say so in the status.
    let paused = server.post("/v1/schedules/hourly/pause", &json!({})).await;
    assert_eq!(paused.status, 200, "{paused:?}");
    assert_eq!(
        (
            paused.body["status"].as_str(),
            paused.body["paused"].as_bool()
        ),
        (Some("paused"), Some(true))
    );
    let resumed = server.post("/v1/schedules/hourly/resume", &json!({})).await;
    assert_eq!(resumed.body["status"], "active");

    let deleted = delete(&server, "/v1/schedules/hourly").await;
    assert_eq!(deleted.status, 200, "{deleted:?}");
    assert_eq!(deleted.body["id"], id);
    let after = server.get(&format!("/v1/schedules/{id}")).await;
    assert_eq!((after.status, after.code()), (404, "not_found"));
    let twice = delete(&server, "/v1/schedules/hourly").await;
    assert_eq!((twice.status, twice.code()), (404, "not_found"));
    let ledger = server.get(&format!("/v1/schedules/{id}/occurrences")).await;
    assert_eq!((ledger.status, ledger.code()), (404, "not_found"));
    server.stop().await;
}

pub async fn an_upsert_of_the_same_definition_is_unchanged(backend: Backend) {
    let server = Server::start(backend).await;
    let body = json!({
        "cron": "0 9 * * 1-5",
        "time_zone": "Europe/Berlin",
        "kind": "digest",
        "misfire": {"policy": "skip"},
        "overlap": "buffer_one",
        "jitter_ms": 5000,
    });
    let first = put(&server, "/v1/schedules/digest", &body).await;
    assert_eq!(first.status, 201, "{first:?}");
    assert_eq!(first.body["outcome"], "created");
    assert_eq!(first.body["schedule"]["name"], "digest");
    let id = first.body["schedule"]["id"]
        .as_str()
        .expect("an id")
        .to_owned();
    assert_eq!(first.headers["location"], format!("/v1/schedules/{id}"));

    let second = put(&server, "/v1/schedules/digest", &body).await;
    assert_eq!(second.status, 200, "{second:?}");
    assert_eq!(second.body["outcome"], "unchanged");
    assert_eq!(second.body["schedule"]["id"], id);
    assert_eq!(
        second.body["schedule"]["version"],
        first.body["schedule"]["version"]
    );
    // The same with its name in the body too.
    let mut named = body.clone();
    named["name"] = json!("digest");
    let third = put(&server, "/v1/schedules/digest", &named).await;
    assert_eq!(third.body["outcome"], "unchanged", "{third:?}");

    let mut changed = body.clone();
    changed["time_zone"] = json!("Asia/Tokyo");
    let updated = put(&server, "/v1/schedules/digest", &changed).await;
    assert_eq!(updated.status, 200, "{updated:?}");
    assert_eq!(updated.body["outcome"], "updated");
    assert_eq!(updated.body["schedule"]["id"], id);
    assert_eq!(updated.body["schedule"]["time_zone"], "Asia/Tokyo");
    // A replacement: what it omits takes its default again.
    let mut plain = changed.clone();
    plain.as_object_mut().expect("an object").remove("overlap");
    let reset = put(&server, "/v1/schedules/digest", &plain).await;
    assert_eq!(reset.body["schedule"]["overlap"], "allow", "{reset:?}");

    let mismatch = put(
        &server,
        "/v1/schedules/digest",
        &json!({"name": "other", "interval_ms": 60000, "kind": "x"}),
    )
    .await;
    assert_eq!(
        (mismatch.status, mismatch.code()),
        (422, "validation_failed")
    );
    let by_id = put(&server, &format!("/v1/schedules/{id}"), &body).await;
    assert_eq!(
        (by_id.status, by_id.code()),
        (422, "validation_failed"),
        "{by_id:?}"
    );
    server.stop().await;
}

pub async fn bad_input_is_a_problem_and_changes_nothing(backend: Backend) {
    let server = Server::start(backend).await;
    let stored = server.post("/v1/schedules", &nightly("kept")).await;
    assert_eq!(stored.status, 201, "{stored:?}");
    let before = server.get("/v1/schedules/kept").await.body;
    let base = nightly("fresh");
    let with = |changes: Value| {
        let mut body = base.clone();
        for (key, value) in changes.as_object().expect("an object") {
            if value.is_null() {
                body.as_object_mut().expect("an object").remove(key);
            } else {
                body[key] = value.clone();
            }
        }
        body
    };
    let cases: Vec<(Value, u16, &str, &str)> = vec![
        (
            with(json!({"name": null})),
            422,
            "validation_failed",
            "name",
        ),
        (
            with(json!({"name": "explain"})),
            422,
            "validation_failed",
            "reserved",
        ),
        (
            with(json!({"name": "0193f0e4-0000-7000-8000-000000000000"})),
            422,
            "validation_failed",
            "UUID",
        ),
        (
            with(json!({"name": "with space"})),
            422,
            "validation_failed",
            "name",
        ),
        (
            with(json!({"cron": null})),
            422,
            "validation_failed",
            "cron",
        ),
        (
            with(json!({"interval_ms": 60000})),
            422,
            "validation_failed",
            "not both",
        ),
        (
            with(json!({"cron": "61 * * * *"})),
            422,
            "validation_failed",
            "cron",
        ),
        (
            with(json!({"cron": "0 0 31 2 *"})),
            422,
            "validation_failed",
            "never fires",
        ),
        (
            with(json!({"time_zone": "Mars/Olympus"})),
            422,
            "validation_failed",
            "time_zone",
        ),
        (
            with(json!({"cron": null, "time_zone": null, "interval_ms": 10})),
            422,
            "validation_failed",
            "interval_ms",
        ),
        (
            with(json!({"cron": null, "interval_ms": 60000})),
            422,
            "validation_failed",
            "time_zone",
        ),
        (
            with(json!({"cron": null, "time_zone": null, "interval_ms": 2000, "jitter_ms": 5000})),
            422,
            "validation_failed",
            "jitter_ms",
        ),
        (
            with(json!({"jitter_ms": 100_000_000})),
            422,
            "validation_failed",
            "jitter_ms",
        ),
        (
            with(json!({"start_at": "2030-01-01T00:00:00Z", "end_at": "2029-01-01T00:00:00Z"})),
            422,
            "validation_failed",
            "end_at",
        ),
        (
            with(json!({"start_at": "tomorrow"})),
            422,
            "validation_failed",
            "start_at",
        ),
        (
            with(json!({"misfire": {"policy": "sometimes"}})),
            422,
            "validation_failed",
            "misfire.policy",
        ),
        (
            with(json!({"misfire": {"policy": "skip", "limit": 3}})),
            422,
            "validation_failed",
            "misfire.limit",
        ),
        (
            with(json!({"misfire": {"policy": "all", "limit": 0}})),
            422,
            "validation_failed",
            "misfire.limit",
        ),
        (
            with(json!({"misfire": {"grace_ms": 40_000_000_000u64}})),
            422,
            "validation_failed",
            "misfire.grace_ms",
        ),
        (
            with(json!({"overlap": "sometimes"})),
            422,
            "validation_failed",
            "overlap",
        ),
        (
            with(json!({"kind": "punctual.webhook"})),
            422,
            "validation_failed",
            "reserved",
        ),
        (
            with(json!({"kind": null})),
            422,
            "validation_failed",
            "kind",
        ),
        (
            with(json!({"webhook": {"url": "http://127.0.0.1:9/x"}})),
            422,
            "validation_failed",
            "not both",
        ),
        (
            with(json!({"kind": null, "webhook": {"url": "http://10.1.2.3/x"}})),
            422,
            "webhook_target_refused",
            "webhook.url",
        ),
        (
            with(json!({"attempt_max": 0})),
            422,
            "validation_failed",
            "attempt_max",
        ),
        (
            with(json!({"priority": 12})),
            422,
            "validation_failed",
            "priority",
        ),
        (
            with(json!({"colour": "blue"})),
            400,
            "bad_request",
            "colour",
        ),
        (
            with(json!({"jitter_ms": "soon"})),
            400,
            "bad_request",
            "jitter_ms",
        ),
        (json!([1, 2]), 400, "bad_request", "object"),
    ];
    for (body, status, code, mentions) in &cases {
        let answer = server.post("/v1/schedules", body).await;
        assert_eq!(
            (answer.status, answer.code()),
            (*status, *code),
            "{body}: {answer:?}"
        );
        assert_eq!(answer.headers["content-type"], "application/problem+json");
        let detail = answer.body["detail"].as_str().unwrap_or_default();
        assert!(detail.contains(mentions), "{body}: {detail}");
    }
    let not_json = server
        .client
        .post(format!("{}/v1/schedules", server.base))
        .bearer_auth(&server.admin)
        .header("content-type", "application/json")
        .body("{nope")
        .send()
        .await
        .expect("answers");
    assert_eq!(not_json.status(), 400);

    // A change that breaks a rule changes nothing either.
    for (change, field) in [
        (json!({"cron": "bad"}), "cron"),
        (
            json!({"end_at": "2000-01-01T00:00:00Z", "start_at": "2001-01-01T00:00:00Z"}),
            "end_at",
        ),
        (json!({"time_zone": "Nowhere/City"}), "time_zone"),
        (
            json!({"cron": "0 * * * *", "interval_ms": 60000}),
            "not both",
        ),
        (json!({"misfire": {"limit": 4}}), "misfire.limit"),
        (json!({"name": ".."}), "reserved"),
        (
            json!({"kind": "x", "webhook": {"url": "http://127.0.0.1:9/"}}),
            "not both",
        ),
        (
            json!({"webhook": {"url": "http://10.1.2.3/"}}),
            "webhook.url",
        ),
    ] {
        let answer = patch(&server, "/v1/schedules/kept", &change).await;
        assert!(matches!(answer.status, 400 | 422), "{change}: {answer:?}");
        let detail = answer.body["detail"].as_str().unwrap_or_default();
        assert!(detail.contains(field), "{change}: {detail}");
    }
    for (path, code) in [
        ("/v1/schedules?limit=0", "validation_failed"),
        ("/v1/schedules?limit=5000", "validation_failed"),
        ("/v1/schedules?cursor=a%20b", "validation_failed"),
        ("/v1/schedules?colour=blue", "bad_request"),
        (
            "/v1/schedules/kept/occurrences?cursor=abc",
            "validation_failed",
        ),
        (
            "/v1/schedules/kept/occurrences?limit=0",
            "validation_failed",
        ),
    ] {
        let answer = server.get(path).await;
        assert_eq!(answer.code(), code, "{path}: {answer:?}");
    }
    let unreadable = server.get("/v1/schedules/%FF").await;
    assert!(matches!(unreadable.status, 400 | 404), "{unreadable:?}");

    let listed = server.get("/v1/schedules").await;
    assert_eq!(names(&listed), ["kept"]);
    assert_eq!(server.get("/v1/schedules/kept").await.body, before);
    assert_eq!(server.job_count().await, 0);
    server.stop().await;
}

/// Occurrences of `name`, newest first.
async fn ledger(server: &Server, name: &str) -> Vec<Value> {
    let answer = server
        .get(&format!("/v1/schedules/{name}/occurrences?limit=1000"))
        .await;
    assert_eq!(answer.status, 200, "{answer:?}");
    answer.body["occurrences"]
        .as_array()
        .expect("occurrences")
        .clone()
}

pub async fn a_paused_schedule_records_its_occurrences_as_skipped(backend: Backend) {
    let server = Server::start(backend).await;
    let created = server
        .post(
            "/v1/schedules",
            &json!({"name": "tick", "interval_ms": 1000, "kind": "tick"}),
        )
        .await;
    assert_eq!(created.status, 201, "{created:?}");
    eventually(Duration::from_secs(10), "a first firing", || async {
        ledger(&server, "tick")
            .await
            .iter()
            .any(|entry| entry["outcome"] == "fired")
    })
    .await;
    let paused = server.post("/v1/schedules/tick/pause", &json!({})).await;
    assert_eq!(paused.body["status"], "paused", "{paused:?}");
    eventually(
        Duration::from_secs(10),
        "skips recorded as paused",
        || async {
            ledger(&server, "tick").await.iter().any(|entry| {
                entry["outcome"] == "skipped"
                    && entry["reason"] == "paused"
                    && entry["count"].as_u64() >= Some(2)
            })
        },
    )
    .await;
    let entries = ledger(&server, "tick").await;
    let seqs: Vec<u64> = entries
        .iter()
        .map(|entry| entry["seq"].as_u64().expect("a seq"))
        .collect();
    assert!(
        seqs.windows(2).all(|pair| pair[0] > pair[1]),
        "newest first: {seqs:?}"
    );
    let fired = &entries
        .iter()
        .find(|entry| entry["outcome"] == "fired")
        .expect("a fired entry");
    assert!(fired["job_id"].is_string(), "{fired}");
    assert_eq!(fired["manual"], false);
    let job = server
        .job(fired["job_id"].as_str().expect("a job id"))
        .await;
    assert_eq!(job["kind"], "tick");

    // Pages of one, by cursor, newest first and each once.
    let mut paged = Vec::new();
    let mut path = "/v1/schedules/tick/occurrences?limit=1".to_owned();
    for _ in 0..entries.len() + 1 {
        let page = server.get(&path).await;
        assert_eq!(page.status, 200, "{page:?}");
        for entry in page.body["occurrences"].as_array().expect("occurrences") {
            paged.push(entry["seq"].as_u64().expect("a seq"));
        }
        match page.body["next_cursor"].as_str() {
            Some(cursor) => {
                path = format!("/v1/schedules/tick/occurrences?limit=1&cursor={cursor}")
            }
            None => break,
        }
    }
    assert!(paged.len() >= seqs.len(), "{paged:?} {seqs:?}");
    assert!(paged.windows(2).all(|pair| pair[0] > pair[1]), "{paged:?}");

    let view = server.get("/v1/schedules/tick").await.body;
    assert!(view["skipped"].as_u64() >= Some(2), "{view}");
    assert!(view["fired"].as_u64() >= Some(1), "{view}");
    let resumed = server.post("/v1/schedules/tick/resume", &json!({})).await;
    assert_eq!(resumed.body["status"], "active");
    server.stop().await;
}

pub async fn a_trigger_makes_a_job_that_runs(backend: Backend) {
    let server = Server::start(backend).await;
    let receiver = Receiver::start().await;
    let created = server
        .post(
            "/v1/schedules",
            &json!({
                "name": "new-year",
                "cron": "0 0 1 1 *",
                "webhook": {"url": receiver.url("hooks/new-year"), "headers": {"X-Team": "ops"}},
                "payload": {"greeting": "happy"},
            }),
        )
        .await;
    assert_eq!(created.status, 201, "{created:?}");
    assert!(created.body.get("kind").is_none(), "{created:?}");
    assert_eq!(
        created.body["webhook"]["url"],
        receiver.url("hooks/new-year")
    );
    assert_eq!(created.body["payload"], json!({"greeting": "happy"}));
    // Paused, it still fires when triggered.
    server
        .post("/v1/schedules/new-year/pause", &json!({}))
        .await;

    let triggered = server
        .post("/v1/schedules/new-year/trigger", &json!({}))
        .await;
    assert_eq!(triggered.status, 201, "{triggered:?}");
    let job = triggered.body["job_id"]
        .as_str()
        .expect("a job id")
        .to_owned();
    assert_eq!(triggered.body["name"], "new-year");
    assert_eq!(triggered.body["schedule_id"], created.body["id"]);
    assert_eq!(triggered.headers["location"], format!("/v1/jobs/{job}"));
    let got = receiver
        .wait_for("hooks/new-year", 1, Duration::from_secs(10))
        .await;
    assert!(got[0].signed);
    assert_eq!(got[0].headers["x-team"], "ops");
    let body: Value = serde_json::from_slice(&got[0].body).expect("JSON");
    assert_eq!(body, json!({"greeting": "happy"}));
    server
        .wait_for_state(&job, "succeeded", Duration::from_secs(10))
        .await;
    let entries = ledger(&server, "new-year").await;
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert_eq!(entries[0]["outcome"], "fired");
    assert_eq!(entries[0]["manual"], true);
    assert_eq!(entries[0]["job_id"], job);
    assert_eq!(
        server.get("/v1/schedules/new-year").await.body["last_job"],
        job
    );

    // A PATCH of the payload alone keeps the webhook target, headers included.
    let changed = patch(
        &server,
        "/v1/schedules/new-year",
        &json!({"payload": {"greeting": "again"}}),
    )
    .await;
    assert_eq!(changed.status, 200, "{changed:?}");
    let again = server
        .post("/v1/schedules/new-year/trigger", &json!({}))
        .await;
    assert_eq!(again.status, 201, "{again:?}");
    let got = receiver
        .wait_for("hooks/new-year", 2, Duration::from_secs(10))
        .await;
    assert_eq!(got[1].headers["x-team"], "ops");
    let body: Value = serde_json::from_slice(&got[1].body).expect("JSON");
    assert_eq!(body, json!({"greeting": "again"}));
    let missing = server
        .post("/v1/schedules/nothing/trigger", &json!({}))
        .await;
    assert_eq!((missing.status, missing.code()), (404, "not_found"));
    server.stop().await;
}

pub async fn routes_need_their_scopes(backend: Backend) {
    let server = Server::start(backend).await;
    let created = server.post("/v1/schedules", &nightly("scoped")).await;
    assert_eq!(created.status, 201, "{created:?}");
    let reader = server.token(&[Scope::Read]).await;
    let writer = server.token(&[Scope::Write]).await;
    let worker = server.token(&[Scope::Worker]).await;
    let explain = json!({"cron": "0 * * * *", "from": "2026-01-01", "count": 1});
    let reads: Vec<(&str, &str, Option<Value>)> = vec![
        ("GET", "/v1/schedules", None),
        ("GET", "/v1/schedules/scoped", None),
        ("GET", "/v1/schedules/scoped/occurrences", None),
        ("POST", "/v1/schedules/explain", Some(explain.clone())),
    ];
    let writes: Vec<(&str, &str, Option<Value>)> = vec![
        ("POST", "/v1/schedules", Some(nightly("by-writer"))),
        ("PUT", "/v1/schedules/by-put", Some(nightly("by-put"))),
        ("PATCH", "/v1/schedules/scoped", Some(json!({"queue": "q"}))),
        ("POST", "/v1/schedules/scoped/pause", None),
        ("POST", "/v1/schedules/scoped/resume", None),
        ("POST", "/v1/schedules/scoped/trigger", None),
        ("DELETE", "/v1/schedules/by-put", None),
    ];
    for (method, path, body) in reads.iter().chain(&writes) {
        let anonymous = server.request(method, path, None, body.as_ref()).await;
        assert_eq!(
            (anonymous.status, anonymous.code()),
            (401, "unauthorized"),
            "{method} {path}"
        );
        let refused = server
            .request(method, path, Some(&worker), body.as_ref())
            .await;
        assert_eq!(
            (refused.status, refused.code()),
            (403, "forbidden"),
            "{method} {path}"
        );
    }
    for (method, path, body) in &reads {
        let answer = server
            .request(method, path, Some(&reader), body.as_ref())
            .await;
        assert_eq!(answer.status, 200, "{method} {path}: {answer:?}");
    }
    for (method, path, body) in &writes {
        let refused = server
            .request(method, path, Some(&reader), body.as_ref())
            .await;
        assert_eq!(
            (refused.status, refused.code()),
            (403, "forbidden"),
            "{method} {path}"
        );
        let answer = server
            .request(method, path, Some(&writer), body.as_ref())
            .await;
        assert!(
            matches!(answer.status, 200 | 201),
            "{method} {path}: {answer:?}"
        );
    }
    // Every route is in the document, under its tag.
    let document = server.request("GET", "/v1/openapi.json", None, None).await;
    let paths = &document.body["paths"];
    for (path, methods) in [
        ("/v1/schedules", vec!["get", "post"]),
        ("/v1/schedules/explain", vec!["post"]),
        ("/v1/schedules/{key}", vec!["get", "put", "patch", "delete"]),
        ("/v1/schedules/{key}/pause", vec!["post"]),
        ("/v1/schedules/{key}/resume", vec!["post"]),
        ("/v1/schedules/{key}/trigger", vec!["post"]),
        ("/v1/schedules/{key}/occurrences", vec!["get"]),
    ] {
        for method in methods {
            assert_eq!(
                paths[path][method]["tags"],
                json!(["schedules"]),
                "{method} {path} in {paths}"
            );
        }
    }
    let health = server.request("GET", "/healthz", None, None).await;
    assert_eq!(health.body["tzdb_version"], punctual_core::tzdb_version());
    server.stop().await;
}

pub async fn explain_answers_berlin_clock_changes_and_outages(backend: Backend) {
    let server = Server::start(backend).await;
    let spring = server
        .post(
            "/v1/schedules/explain",
            &json!({"cron": "30 2 * * *", "time_zone": "Europe/Berlin", "from": "2026-03-28", "count": 3}),
        )
        .await;
    assert_eq!(spring.status, 200, "{spring:?}");
    assert_eq!(spring.body["from"], "2026-03-27T23:00:00Z");
    assert_eq!(spring.body["fixed_time"], true);
    assert_eq!(spring.body["tzdb_version"], punctual_core::tzdb_version());
    let occurrences = spring.body["occurrences"].as_array().expect("occurrences");
    assert_eq!(occurrences.len(), 3);
    assert_eq!(occurrences[0]["utc"], "2026-03-28T01:30:00Z");
    assert_eq!(occurrences[0]["local"], "2026-03-28T02:30:00+01:00");
    assert_eq!(occurrences[0]["moved"], false);
    let moved = &occurrences[1];
    assert_eq!(moved["utc"], "2026-03-29T01:00:00Z");
    assert_eq!(moved["local"], "2026-03-29T03:00:00+02:00");
    assert_eq!(moved["offset"], "+02:00");
    assert_eq!(moved["abbreviation"], "CEST");
    assert_eq!(moved["moved"], true);
    assert_eq!(moved["named_local"], "2026-03-29T02:30:00");
    assert_eq!(
        moved["note"],
        "moved: 02:30 does not exist (spring forward)"
    );
    assert_eq!(occurrences[2]["utc"], "2026-03-30T00:30:00Z");

    let autumn = server
        .post(
            "/v1/schedules/explain",
            &json!({"cron": "30 2 * * *", "time_zone": "Europe/Berlin", "from": "2026-10-25", "count": 2}),
        )
        .await;
    assert_eq!(autumn.status, 200, "{autumn:?}");
    let occurrences = autumn.body["occurrences"].as_array().expect("occurrences");
    let once = &occurrences[0];
    assert_eq!(once["utc"], "2026-10-25T00:30:00Z");
    assert_eq!(once["local"], "2026-10-25T02:30:00+02:00");
    assert_eq!(once["abbreviation"], "CEST");
    assert_eq!(once["repeat_not_fired"], "2026-10-25T01:30:00Z");
    assert_eq!(
        once["note"],
        "02:30 happens again at 01:30Z (fall back): not fired again"
    );
    assert_eq!(occurrences[1]["utc"], "2026-10-26T01:30:00Z");
    assert_eq!(occurrences[1]["abbreviation"], "CET");

    // An outage over the night of the clock change, under misfire latest.
    let outage = server
        .post(
            "/v1/schedules/explain",
            &json!({
                "cron": "0 * * * *", "time_zone": "Europe/Berlin", "from": "2026-03-29", "count": 1,
                "outage": {"from": "2026-03-29T00:30:00+01:00", "to": "2026-03-29T05:10:00+02:00"},
                "misfire": {"policy": "latest"},
            }),
        )
        .await;
    assert_eq!(outage.status, 200, "{outage:?}");
    let recovery = &outage.body["recovery"];
    assert_eq!(recovery["complete"], true, "{recovery}");
    assert_eq!(recovery["fired"], 1, "{recovery}");
    // 01:00, 03:00, 04:00 and 05:00 local (02:00 does not exist), all more than the grace
    // late: three skipped, the latest fired.
    assert_eq!(recovery["skipped"], 3, "{recovery}");
    let entries = recovery["entries"].as_array().expect("entries");
    assert_eq!(entries[0]["outcome"], "skipped");
    assert_eq!(entries[0]["reason"], "misfire");
    assert_eq!(entries[0]["count"], 3);
    assert_eq!(entries[0]["at"], "2026-03-29T00:00:00Z");
    assert_eq!(entries[0]["last_at"], "2026-03-29T02:00:00Z");
    assert_eq!(entries[1]["outcome"], "fired");
    assert_eq!(entries[1]["at"], "2026-03-29T03:00:00Z");
    assert_eq!(entries[1]["run_at"], "2026-03-29T03:10:00Z");
    assert!(
        entries[1]["why"].as_str().expect("why").contains("latest"),
        "{entries:?}"
    );

    for (question, field) in [
        (json!({"cron": "30 2 * * *", "count": 0}), "count"),
        (json!({"cron": "30 2 * * *", "count": 1001}), "count"),
        (json!({"cron": "30 2 * * *", "from": "soon"}), "from"),
        (
            json!({"cron": "30 2 * * *", "time_zone": "Nowhere/City"}),
            "time_zone",
        ),
        (
            json!({"cron": "30 2 * * *", "misfire": {"policy": "skip"}}),
            "outage",
        ),
        (
            json!({"cron": "30 2 * * *", "outage": {"from": "2026-01-02", "to": "2026-01-01"}}),
            "outage.to",
        ),
        (
            json!({"cron": "30 2 * * *", "outage": {"from": "2024-01-01", "to": "2026-01-01"}}),
            "outage",
        ),
        (json!({"interval_ms": 500}), "interval_ms"),
    ] {
        let answer = server.post("/v1/schedules/explain", &question).await;
        assert_eq!(
            (answer.status, answer.code()),
            (422, "validation_failed"),
            "{question}: {answer:?}"
        );
        let detail = answer.body["detail"].as_str().unwrap_or_default();
        assert!(detail.starts_with(field), "{question}: {detail}");
    }
    server.stop().await;
}
