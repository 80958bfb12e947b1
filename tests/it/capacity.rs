//! Capacity-aware weights (`policy.weights = "capacity"`): mock masters
//! report different JRuby figures on jruby-metrics; srvd's answer is then
//! fed many times to Puppet's own weighted SRV choice
//! (Puppet::HTTP::DNS#each_srv_record, through tests/puppet/srv_order.rb),
//! and the agents' first choices must follow spare capacity.

use crate::common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::mock_master::{METRICS_PATH, MockMaster, TestCa};
use common::puppet_order::puppet_order;
use common::{BASE_CONFIG, TestDaemon};
use srvd::control::proto::NameExplain;

const PM1: &str = "pm1.dc1.puppet.example.test";
const PM2: &str = "pm2.dc1.puppet.example.test";
const PM3: &str = "pm3.dc1.puppet.example.test";
const PM4: &str = "pm4.dc2.puppet.example.test";
const PM5: &str = "pm5.dc2.puppet.example.test";
const LIMIT: Duration = Duration::from_secs(30);

fn config(period: &str) -> String {
    format!(
        "{BASE_CONFIG}\n[health]\ninterval = \"300ms\"\nfast_interval = \"100ms\"\ntimeout = \"500ms\"\nca_file = \"{{dir}}/ca.pem\"\n\n[policy]\nweights = \"capacity\"\nweights_period = \"{period}\"\n"
    )
}

async fn start(ca: &TestCa, period: &str, registry: &str) -> TestDaemon {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ca.pem"), &ca.cert_pem).unwrap();
    TestDaemon::start_in(dir, &config(period), registry).await.expect("daemon starts")
}

fn explain_of(d: &TestDaemon, site: &str, role: &str) -> NameExplain {
    let e = d.running.as_ref().unwrap().control.explain(Some(site)).unwrap();
    e.names.into_iter().find(|n| n.role == role).unwrap()
}

/// host -> published weight of the local tier of `site`'s puppet answer.
fn weights(d: &TestDaemon, site: &str) -> HashMap<String, u16> {
    let recs = explain_of(d, site, "puppet").records;
    let local = recs.first().map(|r| r.priority);
    recs.into_iter().filter(|r| Some(r.priority) == local).map(|r| (r.target, r.weight)).collect()
}

async fn wait_weights(d: &TestDaemon, site: &str, want: &[(&str, u16)]) {
    let want: HashMap<String, u16> = want.iter().map(|(h, w)| (h.to_string(), *w)).collect();
    let t0 = Instant::now();
    loop {
        let got = weights(d, site);
        if got == want {
            return;
        }
        assert!(t0.elapsed() < LIMIT, "{site}: weights {got:?}, want {want:?}\n{:#?}", explain_of(d, site, "puppet"));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_runs_spread_in_proportion_to_spare_capacity() {
    let ca = TestCa::new();
    let mut ms = Vec::new();
    for h in [PM1, PM2, PM3, PM4, PM5] {
        ms.push(MockMaster::start(&ca, h).await);
    }
    // 8, 4 and 0 of 8 JRubies spare (pm3: 2 free, but 2 requests queued).
    ms[0].set_jrubies(8, 8, 0);
    ms[1].set_jrubies(8, 4, 0);
    ms[2].set_jrubies(8, 2, 2);
    // dc2: one master whose metrics answer is garbage.
    ms[3].serve(METRICS_PATH, 200, "<html>login required</html>");
    ms[4].set_jrubies(4, 4, 0);
    let reg: String = ms.iter().map(|m| m.registry_entry(if m.host.contains("dc1") { "dc1" } else { "dc2" }, &["puppet"])).collect();
    let d = start(&ca, "1s", &reg).await;

    wait_weights(&d, "dc1", &[(PM1, 100), (PM2, 50), (PM3, 1)]).await;
    // explain shows the inputs of each weight.
    let e = explain_of(&d, "dc1", "puppet");
    let v = |h: &str| e.masters.iter().find(|m| m.master.starts_with(h)).unwrap().clone();
    let w2 = v(PM2).weight_inputs.unwrap();
    assert!(w2.contains("4.0 of 8 JRubies spare") && w2.contains("level 5/10") && w2.contains("(8.0)"), "{w2}");
    assert!(v(PM3).weight_inputs.unwrap().contains("0.0 of 8 JRubies spare"), "saturated: {:?}", v(PM3));
    // dc2: no usable figures for pm4, so the tier keeps the registry weights, and says why.
    wait_weights(&d, "dc2", &[(PM4, 10), (PM5, 10)]).await;
    let e2 = explain_of(&d, "dc2", "puppet");
    let pm4 = e2.masters.iter().find(|m| m.master.starts_with(PM4)).unwrap();
    assert!(pm4.weight_inputs.as_deref().unwrap().contains(&format!("no fresh JRuby figures for {PM4}:")), "{pm4:?}");
    let st = d.running.as_ref().unwrap().control.status();
    let j4 = st.masters.iter().find(|m| m.master.host == PM4).unwrap().jrubies.clone().unwrap();
    assert_eq!(j4.error.as_deref(), Some("jruby-metrics: the answer is not JSON"));
    let j2 = st.masters.iter().find(|m| m.master.host == PM2).unwrap().jrubies.clone().unwrap();
    assert_eq!((j2.total, j2.free, j2.borrowed, j2.queued), (Some(8), Some(4), Some(4), Some(0)));

    // Puppet's own weighted choice over srvd's real answer, many times.
    let runs = 2000;
    let o = puppet_order(d.addr, &["dc1.puppet.example.test:puppet".to_string()], runs).await.remove(0);
    // dc1's three, then dc2's two (failover tier).
    assert_eq!(o.used().len(), 5, "the saturated master stays in the answer: {:?}", o.used());
    let mut firsts: HashMap<String, usize> = HashMap::new();
    for order in &o.orders {
        assert_eq!(order.len(), 5, "every run can reach every master");
        *firsts.entry(order[0].0.trim_end_matches('.').to_string()).or_default() += 1;
    }
    let share = |h: &str| firsts.get(h).copied().unwrap_or(0) as f64 / runs as f64;
    // Spare capacity 8 : 4 : 0 -> 2/3, 1/3 and (almost) nothing.
    let (s1, s2, s3) = (share(PM1), share(PM2), share(PM3));
    eprintln!("first choices over {runs} runs: pm1 {s1:.3}, pm2 {s2:.3}, pm3 {s3:.4}");
    assert!((s1 - 2.0 / 3.0).abs() < 0.05, "pm1 {s1}");
    assert!((s2 - 1.0 / 3.0).abs() < 0.05, "pm2 {s2}");
    assert!(s3 < 0.02, "pm3 {s3}");
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weights_change_at_most_once_per_period() {
    let ca = TestCa::new();
    let pm1 = MockMaster::start(&ca, PM1).await;
    let pm2 = MockMaster::start(&ca, PM2).await;
    pm1.set_jrubies(8, 8, 0);
    pm2.set_jrubies(8, 8, 0);
    let reg = format!("{}{}", pm1.registry_entry("dc1", &["puppet"]), pm2.registry_entry("dc1", &["puppet"]));
    let period = Duration::from_secs(2);
    let d = start(&ca, "2s", &reg).await;
    wait_weights(&d, "dc1", &[(PM1, 100), (PM2, 100)]).await;

    // pm2's load swings every 150 ms between idle and saturated for 8 s:
    // the published weights may follow only once per period.
    let t0 = Instant::now();
    let mut changes: Vec<(Duration, u32)> = Vec::new();
    let mut serial = d.serial();
    let mut flip = false;
    let mut weights_seen = std::collections::BTreeSet::new();
    while t0.elapsed() < Duration::from_secs(8) {
        flip = !flip;
        pm2.set_jrubies(8, if flip { 0 } else { 8 }, 0);
        for _ in 0..3 {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let s = d.serial();
            if s != serial {
                changes.push((t0.elapsed(), s));
                serial = s;
                weights_seen.insert(weights(&d, "dc1").get(PM2).copied().unwrap_or(0));
            }
        }
    }
    eprintln!("serial changes at {:?}; pm2 weights seen {weights_seen:?}", changes.iter().map(|c| c.0).collect::<Vec<_>>());
    assert!(!changes.is_empty(), "the swinging load moved the weights at least once");
    for w in changes.windows(2) {
        let gap = w[1].0.saturating_sub(w[0].0);
        // Slack for the polling of this loop and a busy machine.
        assert!(gap + Duration::from_millis(500) >= period, "serial changed twice within {gap:?}: {changes:?}");
    }
    assert!(changes.len() <= 5, "{changes:?}");
    assert!(weights(&d, "dc1").values().all(|w| *w >= 1), "never 0");
    d.stop().await;
}
