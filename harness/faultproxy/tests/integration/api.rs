//! The HTTP API spoken raw: paths, JSON shapes and statuses as Toxiproxy 2.x answers them.

use serde_json::json;

use crate::support::*;

#[tokio::test]
async fn version_answers_with_the_crate_version() {
    let server = TestServer::start(1);
    let reply = get(server.api, "/version").await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json(), json!({ "version": faultproxy::VERSION }));
}

#[tokio::test]
async fn created_proxy_is_201_and_reports_its_bound_port() {
    let server = TestServer::start(1);
    let echo = echo_server().await;
    let body = format!(r#"{{"name":"db","listen":"127.0.0.1:0","upstream":"{echo}"}}"#);
    let reply = post(server.api, "/proxies", &body).await;
    assert_eq!(reply.status, 201);
    let proxy = reply.json();
    let listen: std::net::SocketAddr = proxy["listen"].as_str().unwrap().parse().unwrap();
    assert_ne!(listen.port(), 0, "the real port is reported");
    assert_eq!(
        proxy,
        json!({"name":"db","listen":listen.to_string(),"upstream":echo.to_string(),
               "enabled":true,"toxics":[],"protocol":"tcp"})
    );
    assert_eq!(get(server.api, "/proxies/db").await.json(), proxy);
    assert_eq!(
        get(server.api, "/proxies").await.json(),
        json!({ "db": proxy })
    );
    let mut stream = connect(listen).await;
    round_trip(&mut stream, b"hello").await;
}

#[tokio::test]
async fn errors_have_toxiproxy_shape_and_status() {
    let server = TestServer::start(1);
    let api = server.api;
    let echo = echo_server().await;
    create_proxy(api, "db", echo).await;
    let cases: Vec<(&str, &str, Option<&str>, u16, &str)> = vec![
        ("GET", "/proxies/nope", None, 404, "proxy not found"),
        (
            "POST",
            "/proxies/nope",
            Some(r#"{"enabled":false}"#),
            404,
            "proxy not found",
        ),
        ("DELETE", "/proxies/nope", None, 404, "proxy not found"),
        ("GET", "/proxies/nope/toxics", None, 404, "proxy not found"),
        (
            "POST",
            "/proxies/nope/toxics",
            Some(r#"{"type":"latency"}"#),
            404,
            "proxy not found",
        ),
        (
            "GET",
            "/proxies/db/toxics/nope",
            None,
            404,
            "toxic not found",
        ),
        (
            "POST",
            "/proxies/db/toxics/nope",
            Some("{}"),
            404,
            "toxic not found",
        ),
        (
            "DELETE",
            "/proxies/db/toxics/nope",
            None,
            404,
            "toxic not found",
        ),
        (
            "POST",
            "/proxies",
            Some(r#"{"name":"db","listen":"127.0.0.1:0","upstream":"127.0.0.1:1"}"#),
            409,
            "proxy already exists",
        ),
        (
            "POST",
            "/proxies",
            Some("{not json"),
            400,
            "bad request body",
        ),
        (
            "POST",
            "/proxies",
            Some(r#"{"name":"x"}"#),
            400,
            "missing required field",
        ),
        (
            "POST",
            "/populate",
            Some(r#"{"name":"x"}"#),
            400,
            "bad request body",
        ),
        (
            "POST",
            "/proxies/db",
            Some(r#"{"enabled":"yes"}"#),
            400,
            "bad request body",
        ),
        (
            "POST",
            "/proxies/db/toxics",
            Some(r#"{"type":"nope"}"#),
            400,
            "invalid toxic type",
        ),
        (
            "POST",
            "/proxies/db/toxics",
            Some(r#"{"type":"latency","stream":"sideways"}"#),
            400,
            "stream was invalid, can be either upstream or downstream",
        ),
        (
            "POST",
            "/proxies/db/toxics",
            Some(r#"{"type":"latency","attributes":{"latency":"slow"}}"#),
            400,
            "bad request body",
        ),
    ];
    for (method, path, body, status, message) in cases {
        let reply = http(api, method, path, body).await;
        assert_eq!(reply.status, status, "{method} {path}: {}", reply.body);
        let error = reply.json();
        assert_eq!(error["status"], json!(status), "{method} {path}");
        let text = error["error"].as_str().expect("error is a string");
        assert!(text.starts_with(message), "{method} {path}: {text:?}");
        assert_eq!(error.as_object().unwrap().len(), 2, "only error and status");
    }
    add_toxic(api, "db", r#"{"type":"latency"}"#).await;
    let reply = post(api, "/proxies/db/toxics", r#"{"type":"latency"}"#).await;
    assert_eq!(reply.status, 409);
    assert_eq!(
        reply.json(),
        json!({"error":"toxic already exists","status":409})
    );
}

#[tokio::test]
async fn toxic_lifecycle_follows_toxiproxy() {
    let server = TestServer::start(1);
    let api = server.api;
    create_proxy(api, "db", echo_server().await).await;
    let created = add_toxic(
        api,
        "db",
        r#"{"type":"latency","attributes":{"latency":5}}"#,
    )
    .await;
    assert_eq!(
        created,
        json!({"name":"latency_downstream","type":"latency","stream":"downstream","toxicity":1.0,
               "attributes":{"latency":5,"jitter":0}})
    );
    let named = add_toxic(
        api,
        "db",
        r#"{"name":"cut","type":"limit_data","stream":"upstream","toxicity":0.5,"attributes":{"bytes":9}}"#,
    )
    .await;
    assert_eq!(named["stream"], "upstream");
    assert_eq!(
        get(api, "/proxies/db/toxics").await.json(),
        json!([created, named])
    );
    assert_eq!(get(api, "/proxies/db/toxics/cut").await.json(), named);

    let updated = post(
        api,
        "/proxies/db/toxics/latency_downstream",
        r#"{"attributes":{"jitter":2}}"#,
    )
    .await;
    assert_eq!(updated.status, 200);
    assert_eq!(
        updated.json()["attributes"],
        json!({"latency":5,"jitter":2})
    );
    assert_eq!(
        get(api, "/proxies/db").await.json()["toxics"][0],
        updated.json()
    );

    let removed = delete(api, "/proxies/db/toxics/cut").await;
    assert_eq!((removed.status, removed.body.as_str()), (204, ""));
    assert_eq!(get(api, "/proxies/db/toxics/cut").await.status, 404);
}

#[tokio::test]
async fn every_toxic_type_is_accepted_with_its_attributes() {
    let server = TestServer::start(1);
    let api = server.api;
    create_proxy(api, "db", echo_server().await).await;
    let expected = [
        ("latency", json!({"latency":0,"jitter":0})),
        ("bandwidth", json!({"rate":0})),
        ("slow_close", json!({"delay":0})),
        ("timeout", json!({"timeout":0})),
        ("reset_peer", json!({"timeout":0})),
        (
            "slicer",
            json!({"average_size":0,"size_variation":0,"delay":0}),
        ),
        ("limit_data", json!({"bytes":0})),
    ];
    for (type_name, attributes) in expected {
        let body = format!(r#"{{"type":"{type_name}","toxicity":0}}"#);
        let toxic = add_toxic(api, "db", &body).await;
        assert_eq!(toxic["attributes"], attributes, "{type_name}");
    }
}

#[tokio::test]
async fn populate_creates_and_replaces_and_answers_201() {
    let server = TestServer::start(1);
    let api = server.api;
    let echo = echo_server().await;
    let other = echo_server().await;
    let body = format!(
        r#"[{{"name":"a","listen":"127.0.0.1:0","upstream":"{echo}"}},
            {{"name":"b","listen":"127.0.0.1:0","upstream":"{echo}","enabled":false}}]"#
    );
    let reply = post(api, "/populate", &body).await;
    assert_eq!(reply.status, 201, "{}", reply.body);
    let proxies = reply.json()["proxies"].as_array().unwrap().clone();
    assert_eq!(proxies.len(), 2);
    assert_eq!(
        (proxies[0]["name"].as_str(), proxies[0]["enabled"].as_bool()),
        (Some("a"), Some(true))
    );
    assert_eq!(
        (proxies[1]["name"].as_str(), proxies[1]["enabled"].as_bool()),
        (Some("b"), Some(false))
    );

    // Same listen and upstream: kept with its toxics. New upstream: replaced, toxics gone.
    add_toxic(api, "a", r#"{"type":"latency"}"#).await;
    add_toxic(api, "b", r#"{"type":"latency"}"#).await;
    let body = format!(
        r#"[{{"name":"a","listen":"{}","upstream":"{echo}"}},
            {{"name":"b","listen":"127.0.0.1:0","upstream":"{other}"}}]"#,
        proxies[0]["listen"].as_str().unwrap()
    );
    let reply = post(api, "/populate", &body).await;
    assert_eq!(reply.status, 201, "{}", reply.body);
    let all = get(api, "/proxies").await.json();
    assert_eq!(all["a"]["toxics"].as_array().unwrap().len(), 1);
    assert_eq!(all["b"]["toxics"], json!([]));
    assert_eq!(all["b"]["upstream"], other.to_string());
    assert_eq!(all["b"]["enabled"], true);
}

#[tokio::test]
async fn reset_enables_all_and_removes_toxics_of_both_streams() {
    let _machine = MACHINE.read().await;
    let server = TestServer::start(1);
    let api = server.api;
    let listen = create_proxy(api, "db", echo_server().await).await;
    add_toxic(
        api,
        "db",
        r#"{"type":"latency","stream":"upstream","attributes":{"latency":300}}"#,
    )
    .await;
    add_toxic(
        api,
        "db",
        r#"{"type":"latency","stream":"downstream","attributes":{"latency":300}}"#,
    )
    .await;
    let mut stream = connect(listen).await;
    assert!(round_trip(&mut stream, b"x").await >= 590 * MS);
    assert_eq!(
        post(api, "/proxies/db", r#"{"enabled":false}"#)
            .await
            .status,
        200
    );

    let reply = post(api, "/reset", "").await;
    assert_eq!(reply.status, 204);
    let proxy = get(api, "/proxies/db").await.json();
    assert_eq!(
        (proxy["enabled"].clone(), proxy["toxics"].clone()),
        (json!(true), json!([]))
    );
    let mut stream = connect(listen).await;
    let rtt = round_trip(&mut stream, b"x").await;
    assert!(rtt < 290 * MS, "no latency left on either stream: {rtt:?}");
}

#[tokio::test]
async fn deleted_proxy_is_204_and_stops_listening() {
    let server = TestServer::start(1);
    let api = server.api;
    let listen = create_proxy(api, "db", echo_server().await).await;
    let mut open = connect(listen).await;
    round_trip(&mut open, b"x").await;
    let reply = delete(api, "/proxies/db").await;
    assert_eq!((reply.status, reply.body.as_str()), (204, ""));
    assert_eq!(get(api, "/proxies").await.json(), json!({}));
    let (_, _) = read_until_end(&mut open).await;
    let refused = tokio::net::TcpStream::connect(listen).await;
    assert!(refused.is_err(), "nothing listens after delete");
}
