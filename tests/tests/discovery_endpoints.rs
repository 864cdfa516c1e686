//! L7 pools that read their backends from an endpoints file: the agent watches the file and
//! applies each save without a reload of the config (the config version stays); a malformed
//! file is rejected with its line and column and the last good set stays.

mod l7_support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use l7_support::admin::ADMIN;
use l7_support::client::{H1, get};
use l7_support::{Backend, Lab, Mode, forward_all, local, service};
use sluice_tests::{eventually, privileged};

const WAIT: Duration = Duration::from_secs(20);

fn answers(lab: &Lab, listen: SocketAddr, n: usize) -> BTreeMap<String, usize> {
    lab.run(async move {
        let mut counts = BTreeMap::new();
        for _ in 0..n {
            let reply = match H1::connect(listen).await {
                Ok(mut c) => c.send(get("x", "/")).await,
                Err(e) => Err(e),
            };
            let key = match reply {
                Ok(r) if r.status == 200 => r.text(),
                Ok(r) => format!("status {}", r.status.as_u16()),
                Err(e) => format!("error {e}"),
            };
            *counts.entry(key).or_default() += 1;
        }
        counts
    })
}

/// Waits until 40 requests split over the backends exactly as `want` says.
fn wait_for(lab: &Lab, listen: SocketAddr, want: &[(&str, usize)], what: &str) {
    let want: BTreeMap<String, usize> = want.iter().map(|(k, v)| (k.to_string(), *v)).collect();
    eventually(WAIT, || {
        let seen = answers(lab, listen, 40);
        if seen == want {
            Ok(())
        } else {
            Err(format!(
                "{what}: answers {seen:?}, want {want:?}; log:\n{}",
                lab.log()
            ))
        }
    });
}

/// Saves `text` to `path` the way careful tools do: a new file renamed over the old one.
fn save(path: &Path, text: &str) {
    let staged = path.with_extension("new");
    std::fs::write(&staged, text).unwrap_or_else(|e| panic!("writing {}: {e}", staged.display()));
    std::fs::rename(&staged, path)
        .unwrap_or_else(|e| panic!("renaming over {}: {e}", path.display()));
}

fn json(backends: &[(&Backend, u16)]) -> String {
    let items: Vec<String> = backends
        .iter()
        .map(|(b, weight)| {
            format!(
                "    {{\"address\": \"{}\", \"port\": {}, \"weight\": {weight}, \"name\": \"{}\"}}",
                b.addr.ip(),
                b.addr.port(),
                b.name
            )
        })
        .collect();
    format!("{{\"backend\": [\n{}\n]}}\n", items.join(",\n"))
}

fn discovery(lab: &Lab, pool: &str) -> serde_json::Value {
    let (ok, out) = lab.cli(&["discovery", "--admin", &ADMIN.to_string()]);
    assert!(ok, "sluice discovery: {out}");
    let report: serde_json::Value =
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"));
    report["pools"]
        .as_array()
        .and_then(|pools| pools.iter().find(|p| p["pool"] == pool).cloned())
        .unwrap_or_else(|| panic!("no pool {pool} in {out}"))
}

#[test]
fn saves_of_the_endpoints_file_add_reweight_and_remove_backends_and_a_bad_one_changes_nothing() {
    if !privileged() {
        return;
    }
    let mut lab = Lab::new();
    let one = Backend::start(&lab.ns, "one", local(9001), Mode::Echo);
    let two = Backend::start(&lab.ns, "two", local(9002), Mode::Echo);
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("temp dir: {e}"));
    let file = dir.path().join("app.json");
    save(&file, &json(&[(&one, 1)]));
    let listen = local(8080);
    lab.start(&format!(
        "[[pool]]\nname = \"app\"\npolicy = \"weighted\"\n[pool.health_check]\nkind = \"none\"\n\
         [pool.discovery]\nendpoints_file = \"{}\"\n{}{}",
        file.display(),
        service("web", listen, ""),
        forward_all("app")
    ));
    wait_for(&lab, listen, &[("one", 40)], "the file as it was at start");
    let version = lab.status()["config_version"].clone();

    save(&file, &json(&[(&one, 1), (&two, 1)]));
    wait_for(&lab, listen, &[("one", 20), ("two", 20)], "a backend added");
    save(&file, &json(&[(&one, 1), (&two, 3)]));
    wait_for(
        &lab,
        listen,
        &[("one", 10), ("two", 30)],
        "a backend reweighted",
    );
    save(&file, &json(&[(&two, 3)]));
    wait_for(&lab, listen, &[("two", 40)], "a backend removed");
    assert_eq!(
        lab.status()["config_version"],
        version,
        "file saves are not config reloads"
    );

    // A port out of range on line 2.
    save(
        &file,
        "{\"backend\": [\n  {\"address\": \"127.0.0.1\", \"port\": 70000}\n]}\n",
    );
    eventually(WAIT, || {
        let source = discovery(&lab, "app");
        let error = source["last_error"].as_str().unwrap_or("");
        if error.contains(&format!("{}:2:", file.display())) {
            Ok(())
        } else {
            Err(format!("no error at line 2 yet: {source}"))
        }
    });
    wait_for(
        &lab,
        listen,
        &[("two", 40)],
        "the last good set after a bad save",
    );
    let source = discovery(&lab, "app");
    assert_eq!(source["source"], "endpoints_file", "{source}");
    assert_eq!(source["backends"], 1, "{source}");
    let failed = lab.metric("sluice_discovery_updates_total{pool=\"app\",result=\"failed\"}");
    assert!(failed >= 1.0, "the bad file is counted: {failed}");

    save(&file, &json(&[(&one, 1)]));
    wait_for(
        &lab,
        listen,
        &[("one", 40)],
        "a good save after the bad one",
    );
    lab.stop();
}

#[test]
fn a_toml_endpoints_file_with_a_syntax_error_is_rejected_at_its_line_and_column() {
    if !privileged() {
        return;
    }
    let mut lab = Lab::new();
    let one = Backend::start(&lab.ns, "one", local(9001), Mode::Echo);
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("temp dir: {e}"));
    let file = dir.path().join("app.toml");
    let entry = |b: &Backend| {
        format!(
            "[[backend]]\naddress = \"{}\"\nport = {}\nname = \"{}\"\n",
            b.addr.ip(),
            b.addr.port(),
            b.name
        )
    };
    save(&file, &entry(&one));
    let listen = local(8080);
    lab.start(&format!(
        "[[pool]]\nname = \"app\"\n[pool.health_check]\nkind = \"none\"\n\
         [pool.discovery]\nendpoints_file = \"{}\"\n{}{}",
        file.display(),
        service("web", listen, ""),
        forward_all("app")
    ));
    wait_for(&lab, listen, &[("one", 40)], "the TOML file");
    save(&file, "[[backend]]\naddress = \"127.0.0.1\nport = 9002\n");
    eventually(WAIT, || {
        let source = discovery(&lab, "app");
        let error = source["last_error"].as_str().unwrap_or("");
        if error.contains(&format!("{}:2:", file.display())) {
            Ok(())
        } else {
            Err(format!("no error at line 2 yet: {source}"))
        }
    });
    wait_for(&lab, listen, &[("one", 40)], "the last good set");
    lab.stop();
}

#[test]
fn discovered_backends_are_health_checked_and_drained_like_listed_ones() {
    if !privileged() {
        return;
    }
    let mut lab = Lab::new();
    let one = Backend::start(&lab.ns, "one", local(9001), Mode::Echo);
    let two = Backend::start(&lab.ns, "two", local(9002), Mode::Echo);
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("temp dir: {e}"));
    let file = dir.path().join("app.json");
    // Nothing listens on 127.0.0.1:9009.
    let dead = "    {\"address\": \"127.0.0.1\", \"port\": 9009, \"name\": \"dead\"}";
    let listed = json(&[(&one, 1), (&two, 1)]).replace("\n]}", &format!(",\n{dead}\n]}}"));
    save(&file, &listed);
    let listen = local(8080);
    lab.start(&format!(
        "[[pool]]\nname = \"app\"\n[pool.health_check]\nkind = \"tcp\"\ninterval = \"300ms\"\n\
         timeout = \"200ms\"\nrise = 1\nfall = 1\n\
         [pool.discovery]\nendpoints_file = \"{}\"\n{}{}",
        file.display(),
        service("web", listen, ""),
        forward_all("app")
    ));
    eventually(WAIT, || match lab.backend_healthy("app", "dead") {
        Some(false) => Ok(()),
        other => Err(format!("dead is {other:?} in /status")),
    });
    assert_eq!(lab.backend_healthy("app", "one"), Some(true));
    wait_for(
        &lab,
        listen,
        &[("one", 20), ("two", 20)],
        "the healthy ones only",
    );
    let (ok, out) = lab.cli(&["drain", "app", "two", "--admin", &ADMIN.to_string()]);
    assert!(ok, "sluice drain of a discovered backend: {out}");
    wait_for(&lab, listen, &[("one", 40)], "two drained");
    lab.stop();
}
