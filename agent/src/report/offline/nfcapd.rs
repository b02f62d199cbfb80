//! A [`Summary`] from nfcapd flow files, read with Debian's `nfdump` (1.7): every flow as a
//! [`FlowRecord`], then per bin the traffic split into local and external, the range's top
//! source prefixes (and origin ASes) by bytes, and the unanswered flows [`FlowPairing`] finds.
//!
//! - Time: a flow counts in the bin of its end (last packet seen), which is about when a
//!   collector gets it and when the daemon's history would have counted it. The range ends at
//!   the newest flow end.
//! - `traffic`: split as the daemon splits flows ([`LocalNets::add_flow`]): from a source
//!   outside `--local` it is `inbound_external` (whatever the destination: to us, to no
//!   address, or transit); from a local source to outside it is `outbound_external`; from a
//!   local source to a local destination or to no address it is `inbound_local`;
//!   `outbound_local` stays 0. Without `--local` everything is `inbound_external`.
//! - `packets` stays 0: a flow export says what passed a router, not what the firewall
//!   dropped or passed. `decisions` and `rulesets` stay empty: flows score no one.
//! - `top`: `prefix_by_volume` over every flow's source /24 or /64 by bytes, with the origin
//!   and announced prefix when an announcement holds the whole prefix; with an origins table
//!   also `origin_by_volume`, every flow's source summed per origin AS.
//! - `anomalies`: [`FlowPairing`] with its default settings and `--local` as ours, fed the
//!   flows in order of their end (its "arrival" clock), its intervals taken at each bin's end,
//!   summed over the range.
//! - TCP flags: nfdump prints none as `........`, which is also what it prints when the
//!   exporter sent no flags; a TCP flow with no flag at all is taken as "flags unknown"
//!   (pairing then treats it as a possible request).
use std::{
    collections::HashMap,
    io::{self, BufRead, BufReader, Read as _},
    net::IpAddr,
    path::Path,
    process::{Command, Stdio},
};

use super::{Bins, OfflineError, Range, network_of, top_by_bytes};
use crate::{
    detect::traffic::{
        flow::{FlowPairing, FlowRecord, PairingSettings},
        volume::LocalNets,
    },
    history::model::{Anomaly, AnomalyKind, Ranking, Summary, TopRow},
    origins::OriginTable,
    prefix::Prefix,
};

/// What nfdump prints per flow (`-o`), with `-q` (no header, no summary), `-N` (plain numbers:
/// protocols as numbers, no `1.2 M`) and `-6` (whole IPv6 addresses, not `2001:db..1`):
/// start and end as fractional Unix seconds, protocol, source address and port, destination
/// address and port (`type.code` for ICMP), TCP flags, input packets and bytes.
pub const NFDUMP_FORMAT: &str = "fmt:%tsr,%ter,%pr,%sa,%sp,%da,%dp,%flg,%ipkt,%ibyt";
/// More flows than this (about 0.6 GB held) is not a report for one run: name fewer files.
pub const MAX_FLOWS: usize = 10_000_000;
/// A line of [`NFDUMP_FORMAT`] is under 200 bytes; a longer one is not ours.
const MAX_LINE_BYTES: usize = 4096;
/// What is kept of nfdump's standard error for an error message.
const MAX_STDERR_BYTES: u64 = 16 << 10;

const TCP: u8 = 6;

/// Fractional seconds (`1796312911.250`) as milliseconds.
fn milliseconds(text: &str) -> Option<u64> {
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    if whole.is_empty() || !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let seconds: u64 = whole.parse().ok()?;
    let mut millis = 0;
    for (i, digit) in fraction.bytes().take(3).enumerate() {
        let scale = [100, 10, 1][i];
        millis += u64::from(digit - b'0') * scale;
    }
    seconds.checked_mul(1000)?.checked_add(millis)
}

/// nfdump's flags (`...A..S.`: CWR ECE URG ACK PSH RST SYN FIN, a dot for each not set).
fn tcp_flags(text: &str) -> Option<u8> {
    if text.len() != 8 {
        return None;
    }
    text.bytes()
        .enumerate()
        .try_fold(0u8, |flags, (i, b)| match b {
            b'.' => Some(flags),
            b'A'..=b'Z' => Some(flags | (0x80 >> i)),
            _ => None,
        })
}

/// A port, or for ICMP nfdump's `type.code` as the exporters' `type << 8 | code`.
fn port(text: &str) -> Option<u16> {
    match text.split_once('.') {
        Some((icmp_type, code)) => Some(
            u16::from(icmp_type.parse::<u8>().ok()?) << 8 | u16::from(code.parse::<u8>().ok()?),
        ),
        None => text.parse().ok(),
    }
}

fn address(text: &str) -> Result<IpAddr, String> {
    if text.contains("..") {
        return Err(format!("shortened address {text} (nfdump without -6)"));
    }
    text.parse::<IpAddr>()
        .map(|address| address.to_canonical())
        .map_err(|_| format!("not an address: {text}"))
}

/// One line of nfdump's output in [`NFDUMP_FORMAT`] as a flow record.
///
/// # Errors
/// What does not fit the format, named.
pub fn parse_flow(line: &str) -> Result<FlowRecord, String> {
    let fields: Vec<&str> = line.split(',').map(str::trim).collect();
    let [
        start,
        end,
        protocol,
        source,
        source_port,
        destination,
        destination_port,
        flags,
        packets,
        bytes,
    ] = fields[..]
    else {
        return Err(format!("{} fields, not 10", fields.len()));
    };
    let number = |text: &str, what: &str| -> Result<u64, String> {
        text.parse()
            .map_err(|_| format!("{what} is not a number: {text}"))
    };
    let start_ms = milliseconds(start).ok_or_else(|| format!("start time {start}"))?;
    let end_ms = milliseconds(end).ok_or_else(|| format!("end time {end}"))?;
    let protocol: u8 = protocol
        .parse()
        .map_err(|_| format!("protocol {protocol} (nfdump without -N)"))?;
    let flags = tcp_flags(flags).ok_or_else(|| format!("TCP flags {flags}"))?;
    Ok(FlowRecord {
        source: address(source)?,
        destination: address(destination)?,
        source_port: port(source_port).ok_or_else(|| format!("source port {source_port}"))?,
        destination_port: port(destination_port)
            .ok_or_else(|| format!("destination port {destination_port}"))?,
        protocol,
        tcp_flags: (protocol == TCP && flags != 0).then_some(flags),
        bytes: number(bytes, "bytes")?,
        packets: number(packets, "packets")?,
        duration_ms: u32::try_from(end_ms.saturating_sub(start_ms)).unwrap_or(u32::MAX),
        end_unix_ms: (end_ms > 0).then_some(end_ms),
    })
}

/// Every flow of nfdump's output (blank lines skipped), at most `max_flows`.
///
/// # Errors
/// Reading, a line that does not parse (with its number), or too many flows.
pub fn parse_flows<R: BufRead>(
    mut input: R,
    max_flows: usize,
) -> Result<Vec<FlowRecord>, OfflineError> {
    let mut flows = Vec::new();
    let mut line = Vec::new();
    let mut number = 0u64;
    let read_error = |source| OfflineError::Read {
        path: "nfdump's output".into(),
        source,
    };
    loop {
        line.clear();
        let limit = u64::try_from(MAX_LINE_BYTES).unwrap_or(u64::MAX) + 1;
        let read = io::Read::take(&mut input, limit)
            .read_until(b'\n', &mut line)
            .map_err(read_error)?;
        if read == 0 {
            return Ok(flows);
        }
        number += 1;
        let bad = |problem: String, text: &[u8]| OfflineError::NfdumpOutput {
            line: number,
            problem,
            text: String::from_utf8_lossy(&text[..text.len().min(200)]).into_owned(),
        };
        if line.len() > MAX_LINE_BYTES {
            return Err(bad(format!("longer than {MAX_LINE_BYTES} bytes"), &line));
        }
        let text = std::str::from_utf8(&line).map_err(|_| bad("not UTF-8".into(), &line))?;
        let text = text.trim();
        if text.is_empty() {
            continue;
        }
        if flows.len() == max_flows {
            return Err(OfflineError::TooManyFlows { max: max_flows });
        }
        flows.push(parse_flow(text).map_err(|problem| bad(problem, text.as_bytes()))?);
    }
}

/// Every flow of the nfcapd files under `dir`, as `nfdump -R DIR` prints them.
///
/// # Errors
/// nfdump missing, failing (with its standard error), or printing what does not parse.
pub fn read_dir(dir: &Path) -> Result<Vec<FlowRecord>, OfflineError> {
    let mut child = Command::new("nfdump")
        .arg("-R")
        .arg(dir)
        .args(["-q", "-N", "-6", "-o", NFDUMP_FORMAT])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| match source.kind() {
            io::ErrorKind::NotFound => OfflineError::NfdumpMissing { source },
            _ => OfflineError::NfdumpSpawn { source },
        })?;
    // Standard error in its own thread, so neither pipe can fill and stall nfdump; only its
    // start is kept, the rest read and dropped.
    let stderr = child.stderr.take().map(|mut pipe| {
        std::thread::spawn(move || {
            let mut kept = Vec::new();
            let _ = (&mut pipe).take(MAX_STDERR_BYTES).read_to_end(&mut kept);
            let _ = io::copy(&mut pipe, &mut io::sink());
            String::from_utf8_lossy(&kept).trim().to_owned()
        })
    });
    let parsed = match child.stdout.take() {
        Some(stdout) => parse_flows(BufReader::with_capacity(256 << 10, stdout), MAX_FLOWS),
        None => Ok(Vec::new()),
    };
    if parsed.is_err() {
        // What is left is not read: stop it rather than wait for it to finish.
        let _ = child.kill();
    }
    let status = child
        .wait()
        .map_err(|source| OfflineError::NfdumpSpawn { source })?;
    let stderr = stderr
        .and_then(|thread| thread.join().ok())
        .unwrap_or_default();
    let flows = parsed?;
    if !status.success() {
        return Err(OfflineError::NfdumpFailed {
            dir: dir.to_owned(),
            status,
            stderr,
        });
    }
    Ok(flows)
}

/// What a summary of flows covers.
#[derive(Clone, Copy)]
pub struct FlowSummaryOptions<'a> {
    /// How far back from the newest flow end, in seconds.
    pub span_seconds: u64,
    pub bin_seconds: u64,
    /// Rows per top list.
    pub top_limit: usize,
    /// This site's prefixes: the traffic split and the pairing's "us".
    pub local: &'a [Prefix],
    pub origins: Option<&'a OriginTable>,
}

/// The summary of `flows` (from `from`, e.g. `nfcapd:DIR`) over the span ending at their
/// newest end.
///
/// # Errors
/// No flow with an end time, a zero bin or far too many bins.
pub fn summarize(
    from: String,
    mut flows: Vec<FlowRecord>,
    options: &FlowSummaryOptions<'_>,
) -> Result<Summary, OfflineError> {
    let latest = flows
        .iter()
        .filter_map(|flow| flow.end_unix_ms)
        .max()
        .ok_or_else(|| OfflineError::NoTimes { what: from.clone() })?;
    let range = Range::ending_at(latest / 1000, options.span_seconds, options.bin_seconds);
    let mut bins = Bins::new(range)?;
    flows.retain(|flow| flow.end_unix_ms.is_some_and(|ms| range.contains(ms / 1000)));
    flows.sort_by_key(|flow| flow.end_unix_ms);

    let local = LocalNets::new(options.local);
    let settings = PairingSettings {
        local: options.local.to_vec(),
        ..PairingSettings::default()
    };
    let answer_window_ms = settings.answer_window_ms;
    let mut pairing = FlowPairing::new(settings)?;
    let mut anomalies: HashMap<(String, AnomalyKind), (u64, u64)> = HashMap::new();
    let mut take = |pairing: &mut FlowPairing, now_ms: u64| {
        for anomaly in pairing.take_interval(now_ms).anomalies {
            let sum = anomalies.entry((anomaly.prefix, anomaly.kind)).or_default();
            sum.0 = sum.0.saturating_add(anomaly.flows);
            sum.1 = sum.1.saturating_add(anomaly.bytes);
        }
    };
    let mut by_prefix: HashMap<(IpAddr, u8), (u64, u64)> = HashMap::new();
    let mut by_origin: HashMap<String, (u64, u64)> = HashMap::new();
    let mut current: Option<usize> = None;
    for flow in &flows {
        let end_ms = flow.end_unix_ms.unwrap_or(0);
        let Some(index) = bins.index(end_ms / 1000) else {
            continue;
        };
        if let Some(previous) = current.filter(|&previous| previous != index) {
            let bin = &bins.bins[previous];
            take(&mut pairing, (bin.start + bin.seconds) * 1000);
        }
        current = Some(index);
        local.add_flow(&mut bins.bins[index].traffic, flow);
        pairing.observe(std::slice::from_ref(flow), end_ms);
        let add = |sum: &mut (u64, u64)| {
            sum.0 = sum.0.saturating_add(flow.packets);
            sum.1 = sum.1.saturating_add(flow.bytes);
        };
        add(by_prefix.entry(network_of(flow.source)).or_default());
        if let Some(found) = options.origins.and_then(|table| table.lookup(flow.source)) {
            add(by_origin.entry(found.origin.to_string()).or_default());
        }
    }
    // Every flow's window ends after the last one: all are judged.
    let last_ms = flows.last().and_then(|flow| flow.end_unix_ms).unwrap_or(0);
    take(
        &mut pairing,
        last_ms.saturating_add(answer_window_ms).saturating_add(1),
    );

    let prefix_rows = by_prefix
        .into_iter()
        .filter_map(|((network, len), (packets, bytes))| {
            let prefix = Prefix::new(network, len).ok()?;
            let announcement = options
                .origins
                .and_then(|table| table.lookup(network))
                .filter(|found| found.prefix.prefix_len() <= len);
            Some(TopRow {
                ranking: Ranking::PrefixByVolume,
                key: prefix.to_string(),
                packets,
                bytes,
                origin: announcement.map(|found| found.origin.to_string()),
                announced: announcement.map(|found| found.prefix.to_string()),
            })
        })
        .collect();
    let origin_rows = by_origin
        .into_iter()
        .map(|(key, (packets, bytes))| TopRow {
            ranking: Ranking::OriginByVolume,
            key,
            packets,
            bytes,
            origin: None,
            announced: None,
        })
        .collect();
    let mut top = top_by_bytes(prefix_rows, options.top_limit);
    top.extend(top_by_bytes(origin_rows, options.top_limit));
    let mut anomalies: Vec<Anomaly> = anomalies
        .into_iter()
        .map(|((prefix, kind), (flows, bytes))| Anomaly {
            prefix,
            kind,
            flows,
            bytes,
        })
        .collect();
    anomalies.sort_by(|a, b| {
        (b.flows, b.bytes)
            .cmp(&(a.flows, a.bytes))
            .then_with(|| (&a.prefix, a.kind).cmp(&(&b.prefix, b.kind)))
    });
    Ok(Summary {
        from,
        since: range.since,
        until: range.until,
        bin_seconds: range.bin_seconds,
        bins: bins.bins,
        rulesets: Vec::new(),
        top,
        anomalies,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// nfdump 1.7.1's `-q -N -6 -o NFDUMP_FORMAT` over nfcapd files of our own: NetFlow v5
    /// and v9 datagrams written for this test and sent to nfcapd on 127.0.0.1 (an ICMP echo
    /// request, a TCP handshake's two directions, an NTP answer nobody asked for, a v9 IPv6
    /// flow).
    const SAMPLE: &str = "\
1796312960.000,1796312960.000,1    ,                             192.0.2.77,     0,                           198.51.100.1,   8.0,........,       1,      84
1796312958.000,1796312962.000,6    ,                            203.0.113.5, 40000,                           198.51.100.1,    22,......S.,       3,     180
1796312958.000,1796312962.000,6    ,                           198.51.100.1,    22,                            203.0.113.5, 40000,...A..S.,       2,     120
1796312960.000,1796312960.000,17   ,                              192.0.2.9,   123,                           198.51.100.1,  5555,........,       1,     468
1796312931.000,1796312933.000,6    , 2001:db8:aaaa:bbbb:cccc:dddd:eeee:1234, 50000,                          2001:db8:1::1,   443,........,      10,    1000
";

    fn parsed() -> Vec<FlowRecord> {
        parse_flows(SAMPLE.as_bytes(), 100).unwrap()
    }

    #[test]
    fn nfdump_lines_become_flow_records() {
        let flows = parsed();
        assert_eq!(flows.len(), 5);
        assert_eq!(
            flows[0],
            FlowRecord {
                source: "192.0.2.77".parse().unwrap(),
                destination: "198.51.100.1".parse().unwrap(),
                source_port: 0,
                destination_port: 0x0800,
                protocol: 1,
                tcp_flags: None,
                bytes: 84,
                packets: 1,
                duration_ms: 0,
                end_unix_ms: Some(1_796_312_960_000),
            }
        );
        assert_eq!(flows[1].tcp_flags, Some(0x02));
        assert_eq!(flows[2].tcp_flags, Some(0x12));
        assert_eq!(
            (flows[1].duration_ms, flows[1].packets, flows[1].bytes),
            (4000, 3, 180)
        );
        assert_eq!(flows[3].tcp_flags, None);
        // A TCP flow without any flag printed: unknown, not "no SYN".
        assert_eq!(flows[4].tcp_flags, None);
        assert_eq!(
            flows[4].source,
            "2001:db8:aaaa:bbbb:cccc:dddd:eeee:1234"
                .parse::<IpAddr>()
                .unwrap()
        );
    }

    #[test]
    fn what_is_not_nfdumps_format_is_an_error_naming_the_line() {
        for (line, problem) in [
            (
                "1.000,2.000,6,2001:db..ee:1234,1,::1,2,........,1,1",
                "shortened address",
            ),
            (
                "1.000,2.000,TCP,192.0.2.1,1,192.0.2.2,2,........,1,1",
                "protocol TCP",
            ),
            (
                "1.000,2.000,6,192.0.2.1,1,192.0.2.2,2,........,1",
                "9 fields",
            ),
            (
                "1.000,2.000,6,192.0.2.1,1,192.0.2.2,2,........,1,1.2 M",
                "bytes",
            ),
            (
                "1.000,2.000,6,192.0.2.1,1,192.0.2.2,2,..x.....,1,1",
                "TCP flags",
            ),
        ] {
            let input = format!("{}\n\n{line}\n", SAMPLE.lines().next().unwrap());
            match parse_flows(input.as_bytes(), 100) {
                Err(OfflineError::NfdumpOutput {
                    line: 3,
                    problem: found,
                    ..
                }) => {
                    assert!(found.contains(problem), "{line}: {found}");
                }
                other => panic!("{line}: {other:?}"),
            }
        }
        assert!(matches!(
            parse_flows(SAMPLE.as_bytes(), 4),
            Err(OfflineError::TooManyFlows { max: 4 })
        ));
        assert_eq!(milliseconds("12.5"), Some(12_500));
        assert_eq!(milliseconds("12.3456"), Some(12_345));
        assert_eq!(milliseconds("x"), None);
    }

    fn summary(local: &[Prefix], span_seconds: u64, bin_seconds: u64) -> Summary {
        summarize(
            "nfcapd:/x".into(),
            parsed(),
            &FlowSummaryOptions {
                span_seconds,
                bin_seconds,
                top_limit: 10,
                local,
                origins: None,
            },
        )
        .unwrap()
    }

    #[test]
    fn traffic_by_end_time_split_by_the_local_prefixes() {
        let local: Vec<Prefix> = vec!["198.51.100.0/24".parse().unwrap()];
        // Minutes: the IPv6 flow ends at 1796312933 (minute 29938548), the others at
        // 1796312960 and 1796312962 (minute 29938549).
        let summary = summary(&local, 120, 60);
        assert_eq!(summary.until, 1_796_312_963);
        let traffic: Vec<(u64, u64, u64, u64)> = summary
            .bins
            .iter()
            .map(|b| {
                (
                    b.traffic.inbound_local,
                    b.traffic.inbound_external,
                    b.traffic.outbound_external,
                    b.packets.passed_v4 + b.packets.dropped_v4,
                )
            })
            .collect();
        let starts: Vec<u64> = summary.bins.iter().map(|b| b.start).collect();
        assert_eq!(starts, [1_796_312_820, 1_796_312_880, 1_796_312_940]);
        // The handshake's answer (198.51.100.1 → 203.0.113.5) goes out; the rest comes in.
        assert_eq!(
            traffic,
            [(0, 0, 0, 0), (0, 1000, 0, 0), (0, 84 + 180 + 468, 120, 0)]
        );
        assert!(summary.rulesets.is_empty());
    }

    #[test]
    fn top_source_prefixes_by_bytes_and_unanswered_flows() {
        let local: Vec<Prefix> = vec![
            "198.51.100.0/24".parse().unwrap(),
            "2001:db8:1::/48".parse().unwrap(),
        ];
        let summary = summary(&local, 3600, 3600);
        let top: Vec<(&str, u64, u64)> = summary
            .top
            .iter()
            .map(|row| (row.key.as_str(), row.packets, row.bytes))
            .collect();
        assert_eq!(
            top,
            [
                ("2001:db8:aaaa:bbbb::/64", 10, 1000),
                ("192.0.2.0/24", 2, 552),
                ("203.0.113.0/24", 3, 180),
                ("198.51.100.0/24", 2, 120),
            ]
        );
        assert!(
            summary
                .top
                .iter()
                .all(|row| row.ranking == Ranking::PrefixByVolume)
        );
        // The handshake paired; the echo request and the IPv6 flow were never answered; the
        // NTP answer came unasked.
        let anomalies: Vec<(&str, AnomalyKind, u64, u64)> = summary
            .anomalies
            .iter()
            .map(|a| (a.prefix.as_str(), a.kind, a.flows, a.bytes))
            .collect();
        assert_eq!(
            anomalies,
            [
                ("2001:db8:aaaa:bbbb::/64", AnomalyKind::OneWay, 1, 1000),
                ("192.0.2.0/24", AnomalyKind::Reflection(123), 1, 468),
                ("192.0.2.0/24", AnomalyKind::OneWay, 1, 84),
            ]
        );
    }

    #[test]
    fn with_origins_prefix_rows_name_their_announcement_and_origins_are_ranked() {
        let mut builder = crate::origins::TableBuilder::new();
        // Holds 192.0.2.0/24 whole; 203.0.113.5 only inside a /25: no announcement on its row.
        builder.add(
            "192.0.0.0/16".parse().unwrap(),
            crate::origins::OriginAs::Single(64500),
            50,
        );
        builder.add(
            "203.0.113.0/25".parse().unwrap(),
            crate::origins::OriginAs::Single(64501),
            50,
        );
        let table = builder.build();
        let summary = summarize(
            "nfcapd:/x".into(),
            parsed(),
            &FlowSummaryOptions {
                span_seconds: 3600,
                bin_seconds: 3600,
                top_limit: 10,
                local: &[],
                origins: Some(&table),
            },
        )
        .unwrap();
        let row = |key: &str| summary.top.iter().find(|r| r.key == key).unwrap();
        assert_eq!(row("192.0.2.0/24").origin.as_deref(), Some("AS64500"));
        assert_eq!(
            row("192.0.2.0/24").announced.as_deref(),
            Some("192.0.0.0/16")
        );
        assert_eq!(row("203.0.113.0/24").origin, None);
        let origins: Vec<(&str, u64)> = summary
            .top
            .iter()
            .filter(|r| r.ranking == Ranking::OriginByVolume)
            .map(|r| (r.key.as_str(), r.bytes))
            .collect();
        assert_eq!(origins, [("AS64500", 552), ("AS64501", 180)]);
    }
}
