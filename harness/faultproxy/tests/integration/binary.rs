//! The binary as containers run it: one ready line on stdout, then the API.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use crate::support::*;

#[tokio::test]
async fn binary_prints_one_ready_line_then_serves_the_api() {
    // Claim: stdout's first line is `faultproxy ready api=<addr> seed=<n>` with the given seed,
    // and the address it names answers the API with the --config proxies already listening.
    let config = std::env::temp_dir().join(format!("faultproxy-test-{}.json", std::process::id()));
    std::fs::write(
        &config,
        r#"[{"name":"cfg","listen":"127.0.0.1:0","upstream":"127.0.0.1:9"}]"#,
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_faultproxy"))
        .args([
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--seed",
            "9",
            "--config",
        ])
        .arg(&config)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the binary");
    let stdout = child.stdout.take().unwrap();
    let line = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).unwrap();
        line
    })
    .await
    .unwrap();
    let api: std::net::SocketAddr = line
        .strip_prefix("faultproxy ready api=")
        .and_then(|rest| rest.strip_suffix(" seed=9\n"))
        .unwrap_or_else(|| panic!("ready line: {line:?}"))
        .parse()
        .expect("the ready line names an address");
    let proxies = get(api, "/proxies").await.json();
    assert_eq!(proxies["cfg"]["enabled"], true);
    assert!(!proxies["cfg"]["listen"].as_str().unwrap().ends_with(":0"));
    child.kill().unwrap();
    child.wait().unwrap();
    let _ = std::fs::remove_file(config);
}
