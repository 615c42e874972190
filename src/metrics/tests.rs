use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;

use super::*;

/// A source that answers whatever snapshot the test put in it.
struct Fixed(Mutex<Snapshot>);

impl Source for Fixed {
    fn snapshot(&self) -> BoxFuture<'_, Snapshot> {
        let s = lock(&self.0).clone();
        Box::pin(async move { s })
    }
}

fn vm(id: &str, user: &str) -> VmSample {
    VmSample {
        id: id.into(),
        user: user.into(),
        ..VmSample::default()
    }
}

/// The sample lines (no comments) of `text`.
fn samples(text: &str) -> Vec<&str> {
    text.lines().filter(|l| !l.starts_with('#')).collect()
}

fn has(text: &str, line: &str) -> bool {
    text.lines().any(|l| l == line)
}

#[tokio::test]
async fn a_new_registry_has_every_fixed_series_at_zero() {
    let m = Metrics::new();
    let t = m.render(Format::Prometheus).await;
    // Every kind and status class exists before any request, so rate() works from the start.
    for kind in ["api", "site", "other"] {
        for code in ["1xx", "2xx", "3xx", "4xx", "5xx"] {
            let l = format!("roost_http_requests_total{{kind=\"{kind}\",code=\"{code}\"}} 0");
            assert!(has(&t, &l), "{l} missing:\n{t}");
            let c = format!(
                "roost_http_request_duration_seconds_count{{kind=\"{kind}\",code=\"{code}\"}} 0"
            );
            assert!(has(&t, &c), "{c} missing:\n{t}");
        }
    }
    for result in ["accepted", "rate_limited", "port_full", "address_full"] {
        let l = format!("roost_ssh_connections_total{{result=\"{result}\"}} 0");
        assert!(has(&t, &l), "{l} missing:\n{t}");
    }
    for l in [
        "# TYPE roost_http_requests_total counter",
        "# TYPE roost_http_request_duration_seconds histogram",
        "# TYPE roost_hosting_boot_duration_seconds histogram",
        "# TYPE roost_hosting_create_duration_seconds histogram",
        "roost_hosting_boot_duration_seconds_count 0",
        "roost_hosting_create_duration_seconds_count 0",
        "# TYPE roost_hosting_crashes_total counter",
        "roost_hosting_crashes_total 0",
        "roost_ssh_forwards 0",
        "roost_ssh_open_connections 0",
        concat!(
            "roost_build_info{version=\"",
            env!("CARGO_PKG_VERSION"),
            "\"} 1"
        ),
    ] {
        assert!(has(&t, l), "{l} missing:\n{t}");
    }
    let start = t
        .lines()
        .find_map(|l| l.strip_prefix("roost_process_start_time_seconds "))
        .and_then(|v| v.parse::<f64>().ok())
        .expect("start time");
    assert!(start > 1.6e9, "{start}");
    // No source yet: no snapshot series at all.
    for family in [
        "roost_vm_",
        "roost_hostings",
        "roost_capacity_",
        "roost_state_dir_",
        "roost_tls_",
    ] {
        assert!(!t.contains(family), "{family}:\n{t}");
    }
    // Prometheus text has no EOF marker; OpenMetrics ends with one.
    assert!(!t.contains("# EOF"));
}

#[tokio::test]
async fn requests_are_counted_by_kind_and_class() {
    let m = Metrics::new();
    let h = m.http();
    h.observe(HttpKind::Api, 200, Duration::from_millis(3));
    h.observe(HttpKind::Api, 204, Duration::from_millis(3));
    h.observe(HttpKind::Site, 502, Duration::from_secs(2));
    h.observe(HttpKind::Site, 101, Duration::from_millis(1));
    h.observe(HttpKind::Other, 308, Duration::ZERO);
    let t = m.render(Format::Prometheus).await;
    for l in [
        "roost_http_requests_total{kind=\"api\",code=\"2xx\"} 2",
        "roost_http_requests_total{kind=\"site\",code=\"5xx\"} 1",
        "roost_http_requests_total{kind=\"site\",code=\"1xx\"} 1",
        "roost_http_requests_total{kind=\"other\",code=\"3xx\"} 1",
        "roost_http_requests_total{kind=\"api\",code=\"4xx\"} 0",
        "roost_http_request_duration_seconds_bucket{kind=\"api\",code=\"2xx\",le=\"0.0025\"} 0",
        "roost_http_request_duration_seconds_bucket{kind=\"api\",code=\"2xx\",le=\"0.005\"} 2",
        "roost_http_request_duration_seconds_bucket{kind=\"site\",code=\"5xx\",le=\"1\"} 0",
        "roost_http_request_duration_seconds_bucket{kind=\"site\",code=\"5xx\",le=\"2.5\"} 1",
        "roost_http_request_duration_seconds_bucket{kind=\"site\",code=\"5xx\",le=\"+Inf\"} 1",
        "roost_http_request_duration_seconds_count{kind=\"api\",code=\"2xx\"} 2",
    ] {
        assert!(has(&t, l), "{l} missing:\n{t}");
    }
}

#[test]
fn status_classes() {
    use instruments::class;
    assert_eq!(
        [100, 199, 200, 301, 404, 499, 500, 599, 999].map(class),
        [0, 0, 1, 2, 3, 3, 4, 4, 4]
    );
}

#[tokio::test]
async fn ssh_connections_are_open_until_their_guard_drops() {
    let m = Metrics::new();
    let s = m.ssh();
    s.set_forwards(3);
    let a = s.accepted();
    let b = s.accepted();
    s.refused(SshRefusal::RateLimited);
    s.refused(SshRefusal::AddressFull);
    drop(a);
    let t = m.render(Format::Prometheus).await;
    for l in [
        "roost_ssh_forwards 3",
        "roost_ssh_open_connections 1",
        "roost_ssh_connections_total{result=\"accepted\"} 2",
        "roost_ssh_connections_total{result=\"rate_limited\"} 1",
        "roost_ssh_connections_total{result=\"port_full\"} 0",
        "roost_ssh_connections_total{result=\"address_full\"} 1",
    ] {
        assert!(has(&t, l), "{l} missing:\n{t}");
    }
    drop(b);
    let t = m.render(Format::Prometheus).await;
    assert!(has(&t, "roost_ssh_open_connections 0"), "{t}");
}

#[tokio::test]
async fn boots_and_creations_are_timed() {
    let m = Metrics::new();
    let l = m.lifecycle();
    l.booted(Duration::from_secs(12), Some(Duration::from_secs(40)));
    l.booted(Duration::from_secs(3), None);
    let t = m.render(Format::Prometheus).await;
    for line in [
        "roost_hosting_boot_duration_seconds_count 2",
        "roost_hosting_boot_duration_seconds_sum 15.0",
        "roost_hosting_boot_duration_seconds_bucket{le=\"5\"} 1",
        "roost_hosting_boot_duration_seconds_bucket{le=\"15\"} 2",
        "roost_hosting_create_duration_seconds_count 1",
        "roost_hosting_create_duration_seconds_bucket{le=\"30\"} 0",
        "roost_hosting_create_duration_seconds_bucket{le=\"45\"} 1",
    ] {
        assert!(has(&t, line), "{line} missing:\n{t}");
    }
}

#[tokio::test]
async fn crashes_are_counted() {
    let m = Metrics::new();
    let l = m.lifecycle();
    l.crashed();
    l.crashed();
    // Every clone counts into the same counter.
    m.lifecycle().crashed();
    let t = m.render(Format::Prometheus).await;
    assert!(has(&t, "roost_hosting_crashes_total 3"), "{t}");
    let t = m.render(Format::OpenMetrics).await;
    assert!(has(&t, "# TYPE roost_hosting_crashes counter"), "{t}");
    assert!(has(&t, "roost_hosting_crashes_total 3"), "{t}");
}

#[tokio::test]
async fn state_dir_space_and_certificate_expiry_are_read_at_each_scrape() {
    let m = Metrics::new();
    let hostings = Arc::new(Fixed(Mutex::new(Snapshot {
        states: vec![("running", 0)],
        state_dir: Some(StateDir {
            free_bytes: 5 << 30,
            size_bytes: 50 << 30,
        }),
        ..Snapshot::default()
    })));
    m.add_source(hostings.clone());
    let served = Arc::new(Mutex::new(vec![
        ("domain".to_owned(), 1_900_000_000i64),
        ("shop.example.org".to_owned(), 1_800_000_000),
    ]));
    let list = served.clone();
    m.add_source(certificates(move || lock(&list).clone()));
    let t = m.render(Format::Prometheus).await;
    for l in [
        "# TYPE roost_state_dir_free_bytes gauge",
        "roost_state_dir_free_bytes 5368709120",
        "# TYPE roost_state_dir_size_bytes gauge",
        "roost_state_dir_size_bytes 53687091200",
        "# TYPE roost_tls_certificate_expiry_timestamp_seconds gauge",
        "roost_tls_certificate_expiry_timestamp_seconds{slot=\"domain\"} 1900000000",
        "roost_tls_certificate_expiry_timestamp_seconds{slot=\"shop.example.org\"} 1800000000",
        // The first source's part is still there.
        "roost_hostings{state=\"running\"} 0",
    ] {
        assert!(has(&t, l), "{l} missing:\n{t}");
    }
    let t = m.render(Format::OpenMetrics).await;
    for l in [
        "# UNIT roost_state_dir_free_bytes bytes",
        "# UNIT roost_tls_certificate_expiry_timestamp_seconds seconds",
        "roost_tls_certificate_expiry_timestamp_seconds{slot=\"domain\"} 1900000000",
    ] {
        assert!(has(&t, l), "{l} missing:\n{t}");
    }

    // A renewal and a custom domain gone; the file system unreadable: read again.
    *lock(&served) = vec![("domain".to_owned(), 1_950_000_000)];
    lock(&hostings.0).state_dir = None;
    let t = m.render(Format::Prometheus).await;
    assert!(
        has(
            &t,
            "roost_tls_certificate_expiry_timestamp_seconds{slot=\"domain\"} 1950000000"
        ),
        "{t}"
    );
    assert!(!t.contains("shop.example.org"), "{t}");
    assert!(!t.contains("roost_state_dir_"), "{t}");
    // No certificate served (HTTPS off or nothing loaded yet): no family at all.
    lock(&served).clear();
    let t = m.render(Format::Prometheus).await;
    assert!(!t.contains("roost_tls_"), "{t}");
}

#[test]
fn snapshots_of_several_sources_merge_in_order() {
    let capacity = |vms| {
        Some(Capacity {
            vms,
            ..Capacity::default()
        })
    };
    let mut a = Snapshot {
        vms: vec![vm("01AAA", "alice")],
        states: vec![("running", 1)],
        capacity: capacity(1),
        ..Snapshot::default()
    };
    a.merge(Snapshot {
        vms: vec![vm("01BBB", "bob")],
        capacity: capacity(9),
        state_dir: Some(StateDir {
            free_bytes: 1,
            size_bytes: 2,
        }),
        certificates: vec![Certificate {
            slot: "file".into(),
            not_after: 7,
        }],
        ..Snapshot::default()
    });
    let ids: Vec<&str> = a.vms.iter().map(|v| v.id.as_str()).collect();
    assert_eq!(ids, ["01AAA", "01BBB"]);
    assert_eq!(a.states, [("running", 1)]);
    assert_eq!(a.capacity, capacity(1), "the first source's figure stays");
    assert_eq!(
        a.state_dir,
        Some(StateDir {
            free_bytes: 1,
            size_bytes: 2
        }),
        "taken where the first had none"
    );
    assert_eq!(
        a.certificates,
        [Certificate {
            slot: "file".into(),
            not_after: 7
        }]
    );
}

#[tokio::test]
async fn vm_series_follow_the_live_list_of_hostings() {
    let m = Metrics::new();
    let full = VmSample {
        cpu_seconds: Some(12.5),
        memory_bytes: Some(300 << 20),
        disk_bytes: Some(1 << 30),
        tap_rx_bytes: Some(1000),
        tap_tx_bytes: Some(2000),
        ..vm("01AAA", "alice")
    };
    // Stopped: only its disk.
    let stopped = VmSample {
        disk_bytes: Some(4096),
        ..vm("01BBB", "bob")
    };
    let states: Vec<(&'static str, u64)> = vec![("running", 1), ("stopped", 1), ("failed", 0)];
    let source = Arc::new(Fixed(Mutex::new(Snapshot {
        vms: vec![full, stopped],
        states: states.clone(),
        capacity: Some(Capacity {
            vms: 2,
            max_vms: None,
            snapshots: 1,
            memory_bytes: 2 * (768 << 20),
            memory_budget_bytes: 8 << 30,
            disk_bytes: 8 << 30,
            disk_budget_bytes: 100 << 30,
        }),
        ..Snapshot::default()
    })));
    m.add_source(source.clone());
    let t = m.render(Format::Prometheus).await;
    for l in [
        "# TYPE roost_vm_cpu_seconds_total counter",
        "roost_vm_cpu_seconds_total{vm=\"01AAA\",user=\"alice\"} 12.5",
        "# TYPE roost_vm_memory_bytes gauge",
        "roost_vm_memory_bytes{vm=\"01AAA\",user=\"alice\"} 314572800",
        "roost_vm_disk_allocated_bytes{vm=\"01AAA\",user=\"alice\"} 1073741824",
        "roost_vm_disk_allocated_bytes{vm=\"01BBB\",user=\"bob\"} 4096",
        "roost_vm_tap_receive_bytes_total{vm=\"01AAA\",user=\"alice\"} 1000",
        "roost_vm_tap_transmit_bytes_total{vm=\"01AAA\",user=\"alice\"} 2000",
        "roost_hostings{state=\"running\"} 1",
        "roost_hostings{state=\"stopped\"} 1",
        "roost_hostings{state=\"failed\"} 0",
        "roost_capacity_vms 2",
        "roost_capacity_snapshots 1",
        "roost_capacity_memory_reserved_bytes 1610612736",
        "roost_capacity_memory_budget_bytes 8589934592",
        "roost_capacity_disk_reserved_bytes 8589934592",
        "roost_capacity_disk_budget_bytes 107374182400",
    ] {
        assert!(has(&t, l), "{l} missing:\n{t}");
    }
    // Bob's VM runs no QEMU: no CPU, memory or tap series for it; no limit, no limit series.
    let bob: Vec<&str> = samples(&t)
        .into_iter()
        .filter(|l| l.contains("vm=\"01BBB\""))
        .collect();
    assert_eq!(bob.len(), 1, "{bob:?}");
    assert!(!t.contains("roost_capacity_vms_limit"), "{t}");

    // Alice's hosting is deleted: her series are gone at the next scrape, and a family
    // with no sample left is not described either.
    *lock(&source.0) = Snapshot {
        vms: vec![VmSample {
            disk_bytes: Some(4096),
            ..vm("01BBB", "bob")
        }],
        states,
        ..Snapshot::default()
    };
    let t = m.render(Format::Prometheus).await;
    assert!(!t.contains("01AAA"), "{t}");
    assert!(!t.contains("roost_vm_cpu_seconds"), "{t}");
    assert!(!t.contains("roost_capacity_"), "{t}");
    assert!(has(
        &t,
        "roost_vm_disk_allocated_bytes{vm=\"01BBB\",user=\"bob\"} 4096"
    ));
}

#[tokio::test]
async fn openmetrics_when_the_scraper_asks_for_it() {
    let prom = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
    assert_eq!(Format::from_accept(Some(prom)), Format::OpenMetrics);
    assert_eq!(Format::from_accept(Some("text/plain")), Format::Prometheus);
    assert_eq!(Format::from_accept(None), Format::Prometheus);
    assert_eq!(
        Format::Prometheus.content_type(),
        "text/plain; version=0.0.4; charset=utf-8"
    );

    let m = Metrics::new();
    m.add_source(Arc::new(Fixed(Mutex::new(Snapshot {
        vms: vec![VmSample {
            cpu_seconds: Some(1.0),
            ..vm("01AAA", "alice")
        }],
        ..Snapshot::default()
    }))));
    let t = m.render(Format::OpenMetrics).await;
    assert!(t.ends_with("# EOF\n"), "{t}");
    for l in [
        "# TYPE roost_vm_cpu_seconds counter",
        "# UNIT roost_vm_cpu_seconds seconds",
        "roost_vm_cpu_seconds_total{vm=\"01AAA\",user=\"alice\"} 1.0",
        "# TYPE roost_http_requests counter",
    ] {
        assert!(has(&t, l), "{l} missing:\n{t}");
    }

    let mut headers = HeaderMap::new();
    headers.insert(header::ACCEPT, HeaderValue::from_static(prom));
    let r = response(&m, &headers).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()[header::CONTENT_TYPE], OPENMETRICS_CONTENT_TYPE);
}

#[tokio::test]
async fn every_family_is_described_once_and_every_sample_belongs_to_one() {
    // What promtool checks, in short: one HELP and one TYPE per family, samples only of
    // described families (histograms through their suffixes), no name twice.
    let m = Metrics::new();
    m.add_source(Arc::new(Fixed(Mutex::new(Snapshot {
        vms: vec![VmSample {
            cpu_seconds: Some(1.0),
            memory_bytes: Some(1),
            disk_bytes: Some(1),
            tap_rx_bytes: Some(1),
            tap_tx_bytes: Some(1),
            ..vm("01AAA", "alice")
        }],
        states: vec![("running", 1)],
        asleep: 0,
        capacity: Some(Capacity {
            max_vms: Some(10),
            ..Capacity::default()
        }),
        state_dir: Some(StateDir {
            free_bytes: 1,
            size_bytes: 2,
        }),
        certificates: vec![Certificate {
            slot: "domain".into(),
            not_after: 1,
        }],
    }))));
    let t = m.render(Format::Prometheus).await;
    let mut typed = std::collections::HashMap::new();
    let mut helps = std::collections::HashSet::new();
    for l in t.lines() {
        if let Some(rest) = l.strip_prefix("# HELP ") {
            let name = rest.split(' ').next().expect("name");
            assert!(helps.insert(name.to_owned()), "HELP twice: {name}");
            assert!(name.starts_with("roost_"), "{name}");
        } else if let Some(rest) = l.strip_prefix("# TYPE ") {
            let (name, ty) = rest.split_once(' ').expect("type");
            assert!(
                typed.insert(name.to_owned(), ty.to_owned()).is_none(),
                "TYPE twice: {name}"
            );
            if ty == "counter" {
                assert!(name.ends_with("_total"), "{name}");
            }
        }
    }
    assert_eq!(helps.len(), typed.len());
    for s in samples(&t) {
        let name = s.split(['{', ' ']).next().expect("name");
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suf| {
                name.strip_suffix(suf)
                    .filter(|f| typed.get(*f).is_some_and(|t| t == "histogram"))
            })
            .unwrap_or(name);
        assert!(typed.contains_key(family), "sample of no family: {s}");
        let value = s.rsplit(' ').next().expect("value");
        assert!(value.parse::<f64>().is_ok() || value == "+Inf", "{s}");
    }
}
