//! `report.html` in a real headless browser (Debian's `chromium`, from file://, no network).
//!
//! Claim: the page draws its charts without script or network. Proof: chromium's DOM holds a percentile curve
//! and the availability path as SVG paths, and its screenshot has many colours where the charts are — a blank or
//! broken page would be one or two.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use poolchaos::checker::{Composed, ImDelivery, RegistrationContinuity};
use poolchaos::history::{Fault, History, Op, OpRecord, Phase, Record, RunInfo};
use poolchaos::report::{Bound, Report};

const WIDTH: u32 = 1000;
const HEIGHT: u32 = 1400;

/// Six users; fe-a1 is killed at 10 s and two of them come back between 11 and 14 s; IMs flow all along.
fn history() -> History {
    let users = ["u1", "u2", "u3", "u4", "u5", "u6"];
    let mut records = vec![Record::Run(RunInfo {
        scenario: "fe_kill".into(),
        seed: 7,
        users: users.iter().map(|u| u.to_string()).collect(),
        ..RunInfo::default()
    })];
    let mut id = 0;
    let mut op =
        |records: &mut Vec<Record>, user: &str, op: Op, invoke_ms: Option<u64>, ok_ms: u64| {
            id += 1;
            if let Some(at) = invoke_ms {
                records.push(Record::Op(OpRecord {
                    id,
                    phase: Phase::Invoke,
                    at_us: at * 1000,
                    user: user.into(),
                    op: op.clone(),
                    error: None,
                }));
            }
            records.push(Record::Op(OpRecord {
                id,
                phase: Phase::Ok,
                at_us: ok_ms * 1000,
                user: user.into(),
                op,
                error: None,
            }));
        };
    let register = Op::Register {
        registrar: None,
        resiliency: false,
        attachment: Default::default(),
    };
    for (i, user) in users.iter().enumerate() {
        op(
            &mut records,
            user,
            register.clone(),
            Some(100 * i as u64),
            100 * i as u64 + 50,
        );
    }
    for (user, lost_ms, back_ms) in [("u1", 10_300, 11_400), ("u2", 10_350, 13_900)] {
        op(
            &mut records,
            user,
            Op::RegistrationLost {
                reason: "reset".into(),
            },
            None,
            lost_ms,
        );
        op(
            &mut records,
            user,
            register.clone(),
            Some(back_ms - 200),
            back_ms,
        );
    }
    for seq in 0..40u64 {
        let at = 1_000 + seq * 700;
        op(
            &mut records,
            "u3",
            Op::ImSend {
                to: "u4".into(),
                seq,
            },
            Some(at),
            at + 20 + seq % 7 * 5,
        );
        op(
            &mut records,
            "u4",
            Op::ImReceived {
                from: "u3".into(),
                seq,
            },
            None,
            at + 10 + seq % 9 * 3,
        );
    }
    records.sort_by_key(|r| match r {
        Record::Op(o) => o.at_us,
        _ => 0,
    });
    records.push(Record::End { at_us: 30_000_000 });
    let fault = Fault {
        id: 0,
        kind: "kill".into(),
        target: "fe-a1".into(),
        cuts: Vec::new(),
        requested_at_us: 10_000_000,
        verified_at_us: Some(10_200_000),
        undone_at_us: Some(20_000_000),
        undo_requested_at_us: None,
    };
    History::from_records(records, vec![fault])
}

fn write_report(dir: &Path) {
    let checkers = Composed::new()
        .with(RegistrationContinuity::default())
        .with(ImDelivery::default());
    let bounds = Bound::parse_all(&[r#"reregister.p99 <= "10s""#]).unwrap();
    let report = Report::build(&history(), &checkers, &bounds, 5_000);
    assert_eq!(report.summary.verdict, "valid", "{:?}", report.verdict);
    report.write(dir).unwrap();
}

fn chromium(binary: &Path, dir: &Path, args: &[String]) -> std::process::Output {
    let url = format!("file://{}", dir.join("report.html").display());
    Command::new(binary)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-extensions",
        ])
        // The page must need nothing from outside: route every host nowhere.
        .arg("--host-resolver-rules=MAP * ~NOTFOUND")
        .arg(format!(
            "--user-data-dir={}",
            dir.join("chromium-profile").display()
        ))
        .args(args)
        .arg(url)
        .output()
        .expect("run chromium")
}

#[test]
fn report_html_draws_its_charts_in_a_headless_browser() {
    let binary = poolchaos_tests::ensure_tool("chromium", "chromium");
    let dir = std::env::temp_dir().join(format!("poolchaos-report-html-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    write_report(&dir);

    let dom = chromium(&binary, &dir, &["--dump-dom".into()]);
    let dom = String::from_utf8_lossy(&dom.stdout);
    assert!(
        dom.contains(r#"class="chart timeline""#),
        "no timeline in the DOM:\n{dom}"
    );
    assert!(
        dom.contains(r#"<path class="availability" d="M"#),
        "no availability path in the DOM"
    );
    assert!(dom.contains(r#"data-metric="reregister""#));
    let curves = dom.matches(r#"<path class="curve" d="M"#).count();
    assert!(
        curves >= 2,
        "expected the reregister and im_delivery curves, found {curves}"
    );

    let shot = dir.join("report.png");
    let out = chromium(
        &binary,
        &dir,
        &[
            format!("--screenshot={}", shot.display()),
            format!("--window-size={WIDTH},{HEIGHT}"),
            "--hide-scrollbars".into(),
        ],
    );
    assert!(
        shot.is_file(),
        "chromium wrote no screenshot: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let decoder = png::Decoder::new(std::fs::File::open(&shot).unwrap());
    let mut reader = decoder.read_info().unwrap();
    let mut pixels = vec![0; reader.output_buffer_size()];
    let frame = reader.next_frame(&mut pixels).unwrap();
    let channels = frame.color_type.samples();
    let (width, height) = (frame.width as usize, frame.height as usize);
    // The timeline sits in the top part of the page, the percentile charts below it: sample both.
    let mut colours = BTreeSet::new();
    for y in (height / 10..height * 3 / 4).step_by(2) {
        for x in (0..width).step_by(2) {
            let at = (y * width + x) * channels;
            colours.insert(pixels[at..at + 3.min(channels)].to_vec());
        }
    }
    assert!(
        colours.len() > 20,
        "the chart area has only {} colours: blank or broken page",
        colours.len()
    );
    // The curves are blue (#1565c0) and the availability line green (#2e7d32): both must be on screen.
    let near = |c: &Vec<u8>, r: u8, g: u8, b: u8| {
        c.len() >= 3 && c[0].abs_diff(r) < 40 && c[1].abs_diff(g) < 40 && c[2].abs_diff(b) < 40
    };
    assert!(
        colours.iter().any(|c| near(c, 0x15, 0x65, 0xc0)),
        "no percentile curve drawn"
    );
    assert!(
        colours.iter().any(|c| near(c, 0x2e, 0x7d, 0x32)),
        "no availability line drawn"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
