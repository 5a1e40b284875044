//! The `toxiproxy_rust` 0.1.6 client against our server, for every call it has. The client is
//! blocking (reqwest blocking), so it runs inside `spawn_blocking`; it takes any address.

use toxiproxy_rust::client::Client;
use toxiproxy_rust::proxy::ProxyPack;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn toxiproxy_rust_client_drives_every_call() {
    let server = TestServer::start(1);
    let api = server.api;
    let echo = echo_server().await;
    let listen = tokio::task::spawn_blocking(move || {
        let client = Client::new(api);
        assert!(client.is_running());
        let version = client.version().expect("version");
        assert!(version.contains(faultproxy::VERSION), "{version}");

        let proxies = client
            .populate(vec![ProxyPack::new(
                "db".into(),
                "127.0.0.1:0".into(),
                echo.to_string(),
            )])
            .expect("populate");
        assert_eq!(proxies.len(), 1);
        let listen = proxies[0].proxy_pack.listen.clone();
        assert!(
            !listen.ends_with(":0"),
            "the bound port is reported: {listen}"
        );

        let all = client.all().expect("all");
        assert_eq!(all.keys().collect::<Vec<_>>(), vec!["db"]);

        let proxy = client.find_proxy("db").expect("find_proxy");
        proxy
            .with_latency("downstream".into(), 10, 2, 1.0)
            .with_bandwidth("upstream".into(), 1000, 1.0)
            .with_slow_close("upstream".into(), 10, 0.5)
            .with_timeout("upstream".into(), 5000, 0.0)
            .with_slicer("downstream".into(), 100, 10, 5, 1.0)
            .with_limit_data("downstream".into(), 1_000_000, 1.0);
        let toxics = proxy.toxics().expect("toxics");
        let mut names: Vec<_> = toxics.iter().map(|t| t.name.as_str()).collect();
        names.sort();
        assert_eq!(
            names,
            vec![
                "bandwidth_upstream",
                "latency_downstream",
                "limit_data_downstream",
                "slicer_downstream",
                "slow_close_upstream",
                "timeout_upstream"
            ]
        );
        let latency = toxics.iter().find(|t| t.r#type == "latency").unwrap();
        assert_eq!(latency.attributes["latency"], 10);
        assert_eq!(latency.attributes["jitter"], 2);

        proxy.delete_all_toxics().expect("delete_all_toxics");
        assert!(proxy.toxics().expect("toxics").is_empty());

        proxy.disable().expect("disable");
        assert!(!client.find_proxy("db").expect("find").proxy_pack.enabled);
        proxy.enable().expect("enable");
        assert!(client.find_proxy("db").expect("find").proxy_pack.enabled);

        let mut was_down = false;
        proxy
            .with_down(|| {
                was_down = std::net::TcpStream::connect(&listen).is_err();
            })
            .expect("with_down");
        assert!(was_down, "nothing listens inside with_down");

        proxy
            .with_latency("upstream".into(), 1, 0, 1.0)
            .apply(|| {})
            .expect("apply removes the toxics after the closure");
        assert!(proxy.toxics().expect("toxics").is_empty());

        proxy.with_latency("upstream".into(), 1, 0, 1.0);
        proxy.disable().expect("disable");
        let reset = client
            .find_and_reset_proxy("db")
            .expect("find_and_reset_proxy");
        assert!(reset.toxics().expect("toxics").is_empty());
        assert!(client.find_proxy("db").expect("find").proxy_pack.enabled);

        proxy.with_latency("downstream".into(), 1, 0, 1.0);
        proxy.disable().expect("disable");
        client.reset().expect("reset");
        let after = client.find_proxy("db").expect("find");
        assert!(after.proxy_pack.enabled && after.proxy_pack.toxics.is_empty());

        let listen = after.proxy_pack.listen.clone();
        after.delete().expect("delete");
        assert!(client.all().expect("all").is_empty());
        assert!(client.find_proxy("db").is_err(), "a 404 body is no proxy");
        listen
    })
    .await
    .expect("client calls succeed");
    assert!(tokio::net::TcpStream::connect(&listen).await.is_err());
}
