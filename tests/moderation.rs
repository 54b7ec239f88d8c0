//! The moderation view with the real pipeline (cdc, fraud, verdicts, stats): a review the
//! heuristic model flags for its link shows in GET /moderation with its reason, in headless
//! Chromium (tests/browser/moderation.js), which passes axe-core and does not scroll sideways
//! on a phone; the moderator overturns it with the page's button, and its verdict becomes
//! valid with reason `moderator`, course_stats counts it, and `verify` finds the table exact,
//! the decision counted as the pipeline counts it. With API_TOKEN set, the view, the history
//! and the decision refuse a request without the token (401) and take it as Bearer or as
//! Basic's password (how the browser sends it). Screenshots: target/screenshots/moderation*.png.

mod common;

use common::browser::{self, Script};
use common::pipeline::Pipeline;
use reqwest::header::WWW_AUTHENTICATE;
use reqwest::StatusCode;
use reviewflow::api::{self, ApiToken, AppState};
use serde_json::{json, Value};

const TOKEN: &str = "moderator-t0ken";
const COURSE: i64 = 5101;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_moderator_overturns_a_flagged_review_and_the_figures_follow() {
    let p = Pipeline::new("moderation_view").await;
    let _cdc = p.spawn_cdc(None);
    let _fraud = p.spawn("fraud", None, &[]);
    let _verdicts = p.spawn("verdicts", None, &[]);
    let _stats = p.spawn("stats", None, &[]);
    let db = p.db().await;
    let ids: Vec<i64> = db
        .query(
            "INSERT INTO reviews (course_id, user_id, rating, title, content) VALUES
               ($1, 1, 4.5, 'Patient', 'a clear and patient course, well paced'),
               ($1, 2, 5.0, 'Great', 'great course, more like it at http://spam.example.com')
             RETURNING id",
            &[&COURSE],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let (honest, spam) = (ids[0], ids[1]);

    let pool = reviewflow::db::pool(&p.url, 4).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let state = AppState::new(pool, &p.url);
    let token: ApiToken = TOKEN.parse().unwrap();
    tokio::spawn(
        async move { axum::serve(listener, api::router_with_token(state, Some(token))).await },
    );

    // The model flags the link; only the honest review counts.
    common::eventually("the link is judged fraud", 60, || async {
        newest_verdict(&db, spam).await.0 == "fraud"
    })
    .await;
    common::eventually("the honest review counts", 60, || async {
        review_count(&db).await == Some(1)
    })
    .await;
    let (_, reasons) = newest_verdict(&db, spam).await;
    assert!(reasons.contains(&"link".to_string()), "{reasons:?}");

    the_view_needs_the_token(&base, spam).await;

    // The moderator, in a browser that asked for the token (Basic), overturns it.
    let flagged = browser::screenshot("moderation");
    let history = browser::screenshot("moderation-history");
    let mut script = Script::start(
        "moderation.js",
        &[
            &base,
            TOKEN,
            &spam.to_string(),
            flagged.to_str().unwrap(),
            history.to_str().unwrap(),
        ],
    );
    let shown = script.next_line(60).await;
    assert!(
        shown.starts_with("flagged ") && shown.contains("link"),
        "{shown}"
    );
    assert_eq!(script.next_line(30).await, "saved valid");
    // The history page shows the new verdict once the pipeline has judged the new version.
    assert_eq!(script.next_line(60).await, "history valid moderator");
    script.finish().await;
    assert!(flagged.exists() && history.exists());

    let (verdict, reasons) = newest_verdict(&db, spam).await;
    assert_eq!(verdict, "valid");
    assert_eq!(reasons.first().map(String::as_str), Some("moderator"));
    assert!(reasons.contains(&"link".to_string()), "{reasons:?}");
    common::eventually("the overturned review counts", 60, || async {
        review_count(&db).await == Some(2)
    })
    .await;

    // And the other way: an API client (Bearer) judges the honest review fraud.
    let http = reqwest::Client::new();
    let answer = http
        .post(format!("{base}/reviews/{honest}/moderation"))
        .bearer_auth(TOKEN)
        .json(&json!({"decision": "fraud"}))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::OK);
    assert_eq!(
        answer.json::<Value>().await.unwrap(),
        json!({"review_id": honest, "moderation": "fraud", "changed": true})
    );
    common::eventually("the review judged fraud stops counting", 60, || async {
        review_count(&db).await == Some(1)
    })
    .await;
    // The verdict sink runs beside the stats worker: its row may land a moment later.
    common::eventually("the moderator's fraud verdict is stored", 60, || async {
        newest_verdict(&db, honest).await == ("fraud".into(), vec!["moderator".into()])
    })
    .await;
    let listed = http
        .get(format!(
            "{base}/moderation?course={COURSE}&reason=moderator"
        ))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        listed.contains(&format!("id=\"review-{honest}\""))
            && !listed.contains(&format!("id=\"review-{spam}\"")),
        "{listed}"
    );

    p.wait_until_caught_up().await;
    p.assert_exact().await;
}

/// Without the token (or with another) the view, the history and the decision are 401, and a
/// refused decision stores nothing; with it, as Bearer or Basic, they answer.
async fn the_view_needs_the_token(base: &str, spam: i64) {
    let http = reqwest::Client::new();
    let decide = || {
        http.post(format!("{base}/reviews/{spam}/moderation"))
            .json(&json!({"decision": "valid"}))
    };
    for path in [
        "/moderation".to_string(),
        format!("/reviews/{spam}/history"),
        format!("/reviews/{spam}/verdicts"),
    ] {
        for (what, request) in [
            ("no token", http.get(format!("{base}{path}"))),
            (
                "another token",
                http.get(format!("{base}{path}")).bearer_auth("nope"),
            ),
            (
                "another password",
                http.get(format!("{base}{path}"))
                    .basic_auth("moderator", Some("nope")),
            ),
        ] {
            let answer = request.send().await.unwrap();
            assert_eq!(answer.status(), StatusCode::UNAUTHORIZED, "{path}: {what}");
            let challenges: Vec<&str> = answer
                .headers()
                .get_all(WWW_AUTHENTICATE)
                .iter()
                .map(|v| v.to_str().unwrap())
                .collect();
            assert!(
                challenges[0].starts_with("Basic") && challenges[1].starts_with("Bearer"),
                "{path}: {challenges:?}"
            );
        }
        let bearer = http
            .get(format!("{base}{path}"))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(bearer.status(), StatusCode::OK, "{path}");
        let basic = http
            .get(format!("{base}{path}"))
            .basic_auth("anyone", Some(TOKEN))
            .send()
            .await
            .unwrap();
        assert_eq!(basic.status(), StatusCode::OK, "{path}");
    }
    for request in [decide(), decide().bearer_auth("nope")] {
        let answer = request.send().await.unwrap();
        assert_eq!(answer.status(), StatusCode::UNAUTHORIZED);
    }
    // With the token: bad input names the field, an unknown review is a 404.
    let with = |path: String, body: Value| {
        http.post(format!("{base}{path}"))
            .bearer_auth(TOKEN)
            .json(&body)
    };
    for (body, field) in [
        (json!({"decision": "maybe"}), "decision"),
        (json!({}), "decision"),
        (json!({"decision": null, "note": "x"}), "note"),
    ] {
        let answer = with(format!("/reviews/{spam}/moderation"), body)
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(answer.json::<Value>().await.unwrap()["field"], json!(field));
    }
    let unknown = with(
        "/reviews/987654321/moderation".into(),
        json!({"decision": "fraud"}),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
    let history: Value = http
        .get(format!("{base}/reviews/{spam}/verdicts"))
        .basic_auth("moderator", Some(TOKEN))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        history["moderation"],
        Value::Null,
        "a refused decision stored nothing"
    );
    assert_eq!(
        history["verdicts"][0]["verdict"],
        json!("fraud"),
        "{history}"
    );
    // Other reads stay open.
    let open = http
        .get(format!("{base}/reviews/{spam}"))
        .send()
        .await
        .unwrap();
    assert_eq!(open.status(), StatusCode::OK);
}

/// The verdict and reasons of the review's newest version.
async fn newest_verdict(db: &tokio_postgres::Client, review: i64) -> (String, Vec<String>) {
    db.query_opt(
        "SELECT verdict, reasons FROM review_verdicts WHERE review_id = $1
         ORDER BY version DESC, position DESC LIMIT 1",
        &[&review],
    )
    .await
    .unwrap()
    .map_or((String::new(), Vec::new()), |r| (r.get(0), r.get(1)))
}

async fn review_count(db: &tokio_postgres::Client) -> Option<i64> {
    db.query_opt(
        "SELECT review_count FROM course_stats WHERE course_id = $1",
        &[&COURSE],
    )
    .await
    .unwrap()
    .map(|r| r.get(0))
}
