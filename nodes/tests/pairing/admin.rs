use serde_json::json;

use crate::support::{timings, Sites, PA, PB, TOKEN};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pairing_commands_without_a_valid_token_get_401_and_change_nothing() {
    // Claim: every pairing command of the admin API needs the bearer token; without it, or with a wrong one, the
    // answer is 401 and the pairing state is as before.
    // Proof: the `pairing` section of `/status` is identical before and after the refused calls.
    let sites = Sites::start(timings(false)).await;
    sites.serving(&["pb1", "pb2"]).await;
    sites
        .until("pb read its pairing record", |s| {
            s.status("pb1")["pairing"]["as_backup"]["record_loaded"] == true
        })
        .await;
    let before = sites.status("pb1")["pairing"]["as_backup"].clone();
    let store_before = sites.status("pb1")["pairing"]["management_store"].clone();
    for (command, body) in [
        ("pool-failover", json!({"pool": PA})),
        ("pool-failback", json!({"pool": PA})),
        ("store-failover", json!({"to": PB})),
        ("backup-sync", json!({"pool": PA})),
    ] {
        for token in [None, Some("wrong"), Some(&TOKEN[1..])] {
            let (status, answer) = sites.command("pb1", command, body.clone(), token).await;
            assert_eq!(status, 401, "{command} with {token:?}: {answer}");
        }
    }
    let after = sites.status("pb1")["pairing"].clone();
    assert_eq!(after["as_backup"], before);
    assert_eq!(after["management_store"], store_before);
}
