//! The control plane's dashboard in a real browser: headless Chromium loads `/` from a
//! control plane fed by three SDK instances, runs the page's script, and the numbers it
//! shows are compared with the control plane's own state and the page's JSON API: the
//! fleet, its tags and rules, and its instances (a page of them, paged on the server). A
//! screenshot is saved.
//!
//! The browser is `$WAITSTATE_CHROMIUM` (scripts/test installs Debian's `chromium` and sets
//! it): set, a browser that does not work fails the test; unset (a plain `cargo test`), the
//! test says so and skips. `$WAITSTATE_DASHBOARD_PNG` names where the screenshot also goes
//! (README's `docs/dashboard.png`); it always goes to this test's target directory.
//!
//! Time is real here (a browser is another process): every wait is a poll with a bound,
//! and only outcomes are asserted.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use waitstate_control::InstanceOrder;
use waitstate_core::{ControlPlane, Demand, WaitState};
use waitstate_tests::control::{self as common, ORG, PK, SK};

fn chromium() -> Option<PathBuf> {
    match std::env::var_os("WAITSTATE_CHROMIUM") {
        Some(p) if !p.is_empty() => Some(PathBuf::from(p)),
        _ => {
            eprintln!(
                "dashboard: skipped: WAITSTATE_CHROMIUM is not set (scripts/test installs \
                 chromium and sets it; or WAITSTATE_CHROMIUM=/usr/bin/chromium cargo test)"
            );
            None
        }
    }
}

/// Run the browser on `url` with `args`, in the blocking pool (the control plane keeps
/// serving on this runtime meanwhile). Its stdout; a browser that fails fails the test.
async fn browse(browser: &Path, url: &str, args: &[String]) -> String {
    let browser = browser.to_path_buf();
    let url = url.to_owned();
    let args = args.to_vec();
    let out = tokio::task::spawn_blocking(move || {
        let profile =
            std::env::temp_dir().join(format!("waitstate-chromium-{}", std::process::id()));
        Command::new(&browser)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--hide-scrollbars",
                "--run-all-compositor-stages-before-draw",
                // Scripts run: the page's first poll and one more, in virtual time.
                "--virtual-time-budget=5000",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .args(&args)
            .arg(&url)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", browser.display()))
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "chromium failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The attributes of every start tag in `html` that has `attr`, in document order.
fn tags_with(html: &str, attr: &str) -> Vec<BTreeMap<String, String>> {
    let mut found = Vec::new();
    let mut rest = html;
    while let Some(start) = rest.find('<') {
        rest = &rest[start + 1..];
        let end = rest.find('>').unwrap_or(rest.len());
        let tag = &rest[..end];
        let attrs = attributes(tag);
        if attrs.contains_key(attr) {
            found.push(attrs);
        }
        rest = &rest[end..];
    }
    found
}

/// `div class="a" data-v="1"` → {class: a, data-v: 1} (values as the DOM dump quotes them).
fn attributes(tag: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut rest = tag.split_once(' ').map_or("", |(_, r)| r);
    while let Some(eq) = rest.find("=\"") {
        let name = rest[..eq].trim().to_owned();
        let after = &rest[eq + 2..];
        let close = after.find('"').unwrap_or(after.len());
        let value = after[..close]
            .replace("&quot;", "\"")
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&amp;", "&");
        out.insert(name, value);
        rest = after.get(close + 1..).unwrap_or("");
    }
    out
}

/// The exact value (`data-v`) of the element with `id`.
#[track_caller]
fn value_of(html: &str, id: &str) -> String {
    tags_with(html, "id")
        .into_iter()
        .find(|a| a["id"] == id)
        .unwrap_or_else(|| panic!("no #{id} on the page"))
        .get("data-v")
        .cloned()
        .unwrap_or_default()
}

/// Per row of table `#id` keyed by `key` (`data-tag`): each cell's `data-k` → `data-v`.
fn rows(html: &str, table: &str, key: &str) -> BTreeMap<String, BTreeMap<String, String>> {
    let start = html
        .find(&format!("id=\"{table}\""))
        .unwrap_or_else(|| panic!("no #{table}"));
    let end = html[start..]
        .find("</table>")
        .map_or(html.len(), |e| start + e);
    let mut out = BTreeMap::new();
    for row in html[start..end].split("<tr").skip(1) {
        let head = attributes(&format!("tr{}", &row[..row.find('>').unwrap_or(0)]));
        let Some(name) = head.get(key) else { continue };
        let cells = tags_with(row, "data-k")
            .into_iter()
            .map(|a| {
                (
                    a["data-k"].clone(),
                    a.get("data-v").cloned().unwrap_or_default(),
                )
            })
            .collect();
        out.insert(name.clone(), cells);
    }
    out
}

fn instance(url: &str) -> WaitState {
    common::instance(
        ControlPlane::new(url, PK, SK)
            .pulse_interval(Duration::from_secs(1))
            .sync_interval(Duration::from_secs(1))
            .timeout(Duration::from_secs(10)),
    )
}

/// Poll `done` every 100 ms, at most `max` times.
async fn poll(max: usize, mut done: impl FnMut() -> bool) -> bool {
    for _ in 0..max {
        if done() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    done()
}

#[tokio::test]
async fn the_dashboard_shows_what_the_control_plane_holds() {
    let Some(browser) = chromium() else { return };
    let server = common::start(common::fleet_config(
        "pulse_interval = \"1s\"",
        "3s",
        "when p95_latency of free > 500ms then block free",
    ))
    .await;
    let url = server.url();
    let fleet: Vec<WaitState> = (0..3).map(|_| instance(&url)).collect();

    // free is slow everywhere: the fleet blocks it; enterprise is fast and passes.
    let traffic = |fleet: &[WaitState]| {
        for ws in fleet {
            for (tag, ms) in [("free", 900), ("free", 900), ("enterprise", 20)] {
                if let Ok(t) = ws.engine().admit(&Demand::new(tag), Duration::ZERO) {
                    t.finish(Duration::from_millis(ms), false);
                }
            }
        }
    };
    let mut blocked = false;
    for _ in 0..300 {
        traffic(&fleet);
        if fleet
            .iter()
            .all(|ws| ws.policy().tag_max_weights.get("free") == Some(&0.0))
        {
            blocked = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(blocked, "the fleet never blocked free");
    traffic(&fleet);

    // Traffic stops; wait until every instance's counts reached the control plane.
    let sum = |tag: &str, f: fn(&waitstate_core::TagCounters) -> u64| -> u64 {
        fleet
            .iter()
            .filter_map(|ws| ws.counters(tag))
            .map(|c| f(&c))
            .sum()
    };
    let shed = |c: &waitstate_core::TagCounters| c.rejected_total();
    let want_free_shed = sum("free", shed);
    assert!(want_free_shed > 0, "free was shed");
    let state = server.state().clone();
    let settled = poll(300, || {
        state.shard(ORG, "").is_some_and(|s| {
            s.instances == 3
                && ["free", "enterprise"].iter().all(|t| {
                    s.tags.get(*t).is_some_and(|c| {
                        c.admitted == sum(t, |c| c.admitted) && c.rejected_total() == sum(t, shed)
                    })
                })
        })
    })
    .await;
    assert!(
        settled,
        "the control plane never caught up: {:?}",
        state.shard(ORG, "")
    );

    // The page, after its scripts ran.
    let page = format!("{url}/");
    let dom = browse(&browser, &page, &["--dump-dom".into()]).await;
    let view = state.shard(ORG, "").unwrap();
    let api: serde_json::Value = reqwest::get(format!("{url}/dashboard/api/fleet"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();

    assert!(
        dom.contains("data-status=\"ok\""),
        "the page did not load its data:\n{dom}"
    );
    assert_eq!(value_of(&dom, "instances-count"), "3");
    assert_eq!(value_of(&dom, "sel-instances"), view.instances.to_string());
    assert_eq!(value_of(&dom, "fleets-count"), "1");
    let admitted: u64 = view.tags.values().map(|c| c.admitted).sum();
    let shed_total: u64 = view.tags.values().map(|c| c.rejected_total()).sum();
    assert_eq!(value_of(&dom, "admitted-total"), admitted.to_string());
    assert_eq!(value_of(&dom, "shed-total"), shed_total.to_string());
    assert_eq!(api["totals"]["admitted"], admitted);
    assert_eq!(api["totals"]["shed"], shed_total);

    let tags = rows(&dom, "tags", "data-tag");
    for (tag, c) in &view.tags {
        let row = tags
            .get(tag)
            .unwrap_or_else(|| panic!("no row for {tag}: {tags:?}"));
        assert_eq!(row["admitted"], c.admitted.to_string(), "{tag}");
        assert_eq!(row["shed"], c.rejected_total().to_string(), "{tag}");
        assert_eq!(row["errors"], c.errors.to_string(), "{tag}");
    }
    assert_eq!(tags["free"]["shed"], want_free_shed.to_string());
    assert_eq!(tags["free"]["priority"], "10");
    let rules = rows(&dom, "rules", "data-rule");
    let rule = "when p95_latency of free > 500ms then block free";
    let state_shown = &rules
        .get(rule)
        .unwrap_or_else(|| panic!("no rule row: {rules:?}"))["state"];
    assert!(
        ["firing", "cooling", "releasing", "idle", "pending"].contains(&state_shown.as_str()),
        "{state_shown}"
    );
    check_instances(&browser, &url, &state, &dom).await;

    // Nothing on the page came from elsewhere.
    for needle in ["http://", "https://", "//cdn"] {
        let outside: Vec<&str> = dom
            .match_indices(needle)
            .map(|(i, _)| &dom[i..(i + 60).min(dom.len())])
            .filter(|s| !s.starts_with(url.as_str()))
            .collect();
        assert!(outside.is_empty(), "links out of the page: {outside:?}");
    }

    // A screenshot, for people.
    let png = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("dashboard.png");
    browse(
        &browser,
        &page,
        &[
            format!("--screenshot={}", png.display()),
            "--window-size=1440,1340".into(),
        ],
    )
    .await;
    let bytes = std::fs::read(&png).expect("a screenshot");
    assert!(bytes.starts_with(b"\x89PNG"), "not a PNG");
    if let Some(to) = std::env::var_os("WAITSTATE_DASHBOARD_PNG") {
        std::fs::copy(&png, &to).unwrap();
    }
    eprintln!("dashboard: screenshot in {}", png.display());
    drop(fleet);
    server.shutdown().await.unwrap();
}

/// `/dashboard/api/instances?<query>` for the fleet `ORG`.
async fn instances_api(url: &str, query: &str) -> serde_json::Value {
    reqwest::get(format!(
        "{url}/dashboard/api/instances?org={ORG}&site=&{query}"
    ))
    .await
    .unwrap()
    .json()
    .await
    .unwrap()
}

/// Each item of an instances answer: id → (policy version, seconds since the last pulse,
/// lease left).
fn api_rows(api: &serde_json::Value) -> Vec<(String, String, f64, f64)> {
    api["instances"]["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["id"].as_str().unwrap().to_owned(),
                i["policy_version"].as_str().unwrap_or_default().to_owned(),
                i["last_pulse_seconds_ago"].as_f64().unwrap(),
                i["lease_left_seconds"].as_f64().unwrap(),
            )
        })
        .collect()
}

/// Issue 18: the page's instance rows are the API's, which are the control plane's; a
/// page of two shows two of the three, as the API's page of two does.
async fn check_instances(
    browser: &Path,
    url: &str,
    state: &waitstate_control::AppState,
    first_dom: &str,
) {
    let held = state
        .instances(ORG, "", InstanceOrder::Id, 0, 100)
        .await
        .unwrap()
        .expect("the fleet's instances");
    let ids: Vec<String> = held.items.iter().map(|i| i.id.clone()).collect();
    assert_eq!((held.total, ids.len()), (3, 3), "{held:?}");
    let lease = 300.0;

    // The page and the API are read a moment apart, and the instances pulse every second:
    // a fleet rule moving between the two reads changes a version. Read both again until
    // they were read alike (bounded).
    let mut dom = first_dom.to_owned();
    let mut agreed = false;
    for _ in 0..5 {
        let api = instances_api(url, "").await;
        let shown = rows(&dom, "instances", "data-instance");
        let from_api = api_rows(&api);
        assert_eq!(
            shown.keys().cloned().collect::<Vec<_>>(),
            ids,
            "the page's instances: {shown:?}"
        );
        assert_eq!(
            from_api.iter().map(|r| r.0.clone()).collect::<Vec<_>>(),
            ids
        );
        for (id, cells) in &shown {
            let ago: f64 = cells["last_pulse"].parse().unwrap();
            let left: f64 = cells["lease_left"].parse().unwrap();
            assert!((0.0..=60.0).contains(&ago), "{id}: last pulse {ago} s ago");
            assert!((ago + left - lease).abs() < 1e-6, "{id}: {ago} + {left}");
            assert_eq!(cells["policy_version"].len(), 8, "{id}: {cells:?}");
        }
        let versions_alike = from_api
            .iter()
            .all(|(id, version, _, _)| shown[id]["policy_version"] == *version);
        if versions_alike {
            agreed = true;
            break;
        }
        dom = browse(browser, &format!("{url}/"), &["--dump-dom".into()]).await;
    }
    assert!(agreed, "the page's policy versions never matched the API's");

    // Two a page: the page shows the server's first page of two.
    let dom = browse(
        browser,
        &format!("{url}/?instances_per_page=2"),
        &["--dump-dom".into()],
    )
    .await;
    let shown = rows(&dom, "instances", "data-instance");
    let api = instances_api(url, "per_page=2").await;
    let from_api: Vec<String> = api_rows(&api).into_iter().map(|r| r.0).collect();
    assert_eq!(api["instances"]["total"], 3);
    assert_eq!(from_api, ids[..2]);
    assert_eq!(shown.keys().cloned().collect::<Vec<_>>(), from_api);
    let total = tags_with(&dom, "id")
        .into_iter()
        .find(|a| a["id"] == "instances-range")
        .and_then(|a| a.get("data-total").cloned());
    assert_eq!(total.as_deref(), Some("3"));
}
