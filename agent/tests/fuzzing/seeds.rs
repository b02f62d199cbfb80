//! Real inputs the mutation loop (`agent/tests/mutation.rs`) and the fuzz targets (`fuzz/`,
//! through `cargo xtask fuzz`, which writes these as their seed corpora) start from: datagrams
//! of the testkit's NetFlow v9 / IPFIX encoder, the shipped rulesets, the example
//! configuration and a full one, and control requests and answers as the CLI and the daemon
//! write them. Only std and the testkit, so xtask can include this file too.
#![allow(dead_code, reason = "each includer uses its part")]

use std::{
    net::IpAddr,
    path::{Path, PathBuf},
};

use xdpguard_testkit::encode::{self, AddressFamily, V9Flow, V9Header, V9Template};

/// One flow-decoder input: datagrams, each as `[length: u16 BE][meta: u8][datagram]` (see
/// [`flow_input`]; `checks::flow_datagrams` reads it).
pub type FlowInput = Vec<u8>;

/// Frames `datagrams` for the flow_decode target: meta's low 2 bits pick one of 4 exporters,
/// its upper 6 bits advance the clock by that many minutes before the datagram (the template
/// timeout is 30 minutes, the hold time one).
pub fn flow_input(datagrams: &[(u8, Vec<u8>)]) -> FlowInput {
    let mut out = Vec::new();
    for (meta, datagram) in datagrams {
        let len = u16::try_from(datagram.len()).unwrap_or(u16::MAX);
        out.extend_from_slice(&len.to_be_bytes());
        out.push(*meta);
        out.extend_from_slice(&datagram[..usize::from(len)]);
    }
    out
}

fn flows(sources: &[&str]) -> Vec<V9Flow> {
    sources
        .iter()
        .zip(1u32..)
        .map(|(source, n)| V9Flow {
            source: source.parse::<IpAddr>().expect("seed address"),
            destination: "198.51.100.1".parse().expect("seed address"),
            bytes: u64::from(n) * 1500,
            packets: u64::from(n),
            source_port: 40_000,
            destination_port: 443,
            first_switched_ms: 1_000,
            last_switched_ms: 1_000 + n * 250,
            input_interface: 2,
            ..V9Flow::default()
        })
        .collect()
}

/// Single datagrams of every kind the encoder writes, each valid on its own or after the
/// template datagram before it.
pub fn flow_datagram_seeds() -> Vec<Vec<u8>> {
    let v4 = V9Template {
        template_id: 256,
        family: AddressFamily::V4,
        wide_counters: false,
    };
    let v6 = V9Template {
        template_id: 300,
        family: AddressFamily::V6,
        wide_counters: true,
    };
    let header = |source_id| V9Header {
        source_id,
        sys_uptime_ms: 60_000,
        unix_secs: 1_700_000_000,
        sequence: 1,
    };
    let v4_flows = flows(&["203.0.113.1", "203.0.113.2", "203.0.113.3"]);
    let v6_flows = flows(&["2001:db8:a::1", "::ffff:203.0.113.9"]);
    let mut out = Vec::new();
    let mut datagram = Vec::new();
    encode::v9_template(header(0), v4, &mut datagram);
    out.push(datagram.clone());
    let _: usize = encode::v9_data(header(0), v4, &v4_flows, &mut datagram);
    out.push(datagram.clone());
    encode::v9_template(header(1), v6, &mut datagram);
    out.push(datagram.clone());
    let _: usize = encode::v9_data(header(1), v6, &v6_flows, &mut datagram);
    out.push(datagram.clone());
    encode::v9_sampling_options(header(0), 257, 1, 100, &mut datagram);
    out.push(datagram.clone());
    encode::ipfix_template(header(5), v4, &mut datagram);
    out.push(datagram.clone());
    let _: usize = encode::ipfix_data(header(5), v4, &v4_flows, &mut datagram);
    out.push(datagram.clone());
    encode::ipfix_template(header(6), v6, &mut datagram);
    out.push(datagram.clone());
    let _: usize = encode::ipfix_data(header(6), v6, &v6_flows, &mut datagram);
    out.push(datagram);
    out
}

/// Flow inputs: template then data, data before its template, sampling, IPFIX, two exporters,
/// a template timeout, and a small flood of templates from many source ids.
pub fn flow_seeds() -> Vec<FlowInput> {
    let d = flow_datagram_seeds();
    let (v4_t, v4_d, v6_t, v6_d, options) = (&d[0], &d[1], &d[2], &d[3], &d[4]);
    let (ipfix_t, ipfix_d, ipfix6_t, ipfix6_d) = (&d[5], &d[6], &d[7], &d[8]);
    let pair = |meta: u8, a: &Vec<u8>, b: &Vec<u8>| vec![(meta, a.clone()), (meta, b.clone())];
    let mut flood = Vec::new();
    for source_id in 0..40u32 {
        let mut datagram = Vec::new();
        let template = V9Template {
            template_id: 256 + u16::try_from(source_id % 3).unwrap_or(0),
            family: AddressFamily::V4,
            wide_counters: false,
        };
        let header = V9Header {
            source_id: source_id.wrapping_mul(0x9e37_79b9),
            ..V9Header::default()
        };
        encode::v9_template(header, template, &mut datagram);
        flood.push((0, datagram));
    }
    flood.extend(pair(0, v4_t, v4_d));
    vec![
        flow_input(&pair(0, v4_t, v4_d)),
        flow_input(&pair(1, v4_d, v4_t)),
        flow_input(&pair(0, v6_t, v6_d)),
        flow_input(&[(0, options.clone()), (0, v4_t.clone()), (0, v4_d.clone())]),
        flow_input(&pair(2, ipfix_t, ipfix_d)),
        flow_input(&pair(3, ipfix6_t, ipfix6_d)),
        // The template times out (31 minutes later), then comes back.
        flow_input(&[
            (0, v4_t.clone()),
            (31 << 2, v4_d.clone()),
            (0, v4_t.clone()),
        ]),
        flow_input(&flood),
    ]
}

/// The repository root (this file is included by crates one level below it).
pub fn repository_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("a crate directory has a parent")
        .to_path_buf()
}

/// The shipped rulesets: (file name, text).
pub fn ruleset_seeds() -> Vec<(String, Vec<u8>)> {
    let dir = repository_root().join("rulesets");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|err| panic!("{}: {err}", dir.display()))
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "toml"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|path| {
            let name = path
                .file_name()
                .map(|name| name.to_string_lossy().into_owned())
                .unwrap_or_default();
            let text =
                std::fs::read(&path).unwrap_or_else(|err| panic!("{}: {err}", path.display()));
            (name, text)
        })
        .collect()
}

/// A configuration with every table and the optional ones filled in (valid: it names veth
/// interfaces and the documentation networks).
pub const FULL_CONFIG: &str = r#"dry_run = true
pin_dir = "/sys/fs/bpf/xdpguard-fuzz"
state_dir = "/tmp/xdpguard-fuzz/state"
control_socket = "/tmp/xdpguard-fuzz/control.sock"
reconcile_interval = "1m30s"
default_ban = "2d"

[[interfaces]]
name = "veth-fw"
mode = "native"

[[interfaces]]
name = "veth-b"

[metrics]
listen = "[::1]:9100"
top_blocked = 50

[allowlist]
prefixes = ["192.0.2.0/24", "2001:db8::/32", "::ffff:198.51.100.1"]
loopback = true

[guard]
min_prefix_len_v4 = 16
min_prefix_len_v6 = 48

[capacity]
allow_v4 = 1024
block_host_v4 = 65536
volume_v6 = 4096

[scoring]
threshold = 5
window = "10m"
ban = "1h"
ban_multiplier = 2
ban_max = "1w"

[volume]
interval = "5s"
xdp_accounting = true
top = 20

[volume.flow]
listen = "198.51.100.1:2055"
direction = "any"
ingress_interfaces = [2, 3]
exporters = ["198.51.100.2", "2001:db8:e::/48"]
sampling = [{ exporter = "198.51.100.2", rate = 1000 }]
template_timeout = "30m"

[[volume.detectors]]
name = "flood"
packets_per_second = 10000
prefix_len_v4 = [24, 32]
action = "block"
ban = "10m"
overrides = [{ prefix = "203.0.113.0/24", exempt = true }]

[[volume.detectors]]
name = "routers"
source = "flow"
bytes_per_second = 125000000
"#;

/// The example configuration shipped in packaging/, and [`FULL_CONFIG`]: (name, text).
pub fn config_seeds() -> Vec<(String, Vec<u8>)> {
    let example = repository_root().join("packaging/xdpguard.toml");
    let mut text =
        std::fs::read(&example).unwrap_or_else(|err| panic!("{}: {err}", example.display()));
    // As shipped it names no interface (an operator adds theirs): add one, as they would.
    text.extend_from_slice(b"\n[[interfaces]]\nname = \"eth0\"\n");
    vec![
        ("xdpguard.toml".to_owned(), text),
        ("full.toml".to_owned(), FULL_CONFIG.as_bytes().to_vec()),
    ]
}

/// Control lines as the CLI and the daemon write them (JSON, `"protocol": 2`); the mutation
/// test checks that each still decodes to a request or an answer.
pub const CONTROL_SEEDS: &[&str] = &[
    r#"{"op":"block","prefixes":["203.0.113.7","2001:db8::/64"],"duration_secs":3600,"reason":"manual","source":null,"force":false,"protocol":2}"#,
    r#"{"op":"block","prefixes":["198.51.100.0/24"],"duration_secs":null,"reason":null,"source":"file:blocklist","force":true,"protocol":2}"#,
    r#"{"op":"unblock","prefixes":["203.0.113.7"],"protocol":2}"#,
    r#"{"op":"allow","prefixes":["192.0.2.1"],"reason":"office","protocol":2}"#,
    r#"{"op":"unallow","prefixes":["192.0.2.1"],"protocol":2}"#,
    r#"{"op":"list","source":"ruleset:sshd","protocol":2}"#,
    r#"{"op":"status","protocol":2}"#,
    r#"{"op":"top","protocol":2}"#,
    r#"{"op":"status"}"#,
    r#"{"result":"applied","applied":2,"refused":[{"prefix":"0.0.0.0/0","reason":"too broad"}],"protocol":2}"#,
    r#"{"result":"removed","removed":1,"missing":["203.0.113.8/32"],"refused":[],"protocol":2}"#,
    r#"{"result":"list","entries":[{"kind":"block","prefix":"203.0.113.7/32","source":"manual","reason":"","created_unix":1700000000,"expires_unix":0,"packets":5,"bytes":300}],"protocol":2}"#,
    r#"{"result":"status","version":"0.1.0","dry_run":false,"interfaces":[{"name":"veth-fw","ifindex":3,"mode":"native"}],"lists":[{"list":"block_host_v4","entries":1,"capacity":1048576}],"counters":[{"interface":"veth-fw","counter":"dropped","packets":1,"bytes":60}],"decisions":1,"unknown_entries":0,"full_list_errors":0,"protocol":2}"#,
    r#"{"result":"top","interval_ms":1000,"ended_unix":1700000000,"totals":[],"top":[],"hot":[],"alerts":{},"hot_overflow":0,"exporters":[],"flow_rejected":0,"drain_errors":0,"protocol":2}"#,
    r#"{"result":"error","message":"the daemon speaks protocol 2, this CLI protocol 3","protocol":2}"#,
];

/// [`CONTROL_SEEDS`] as bytes, each a line.
pub fn control_seeds() -> Vec<Vec<u8>> {
    CONTROL_SEEDS
        .iter()
        .map(|line| format!("{line}\n").into_bytes())
        .collect()
}
