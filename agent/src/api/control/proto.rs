//! The control protocol: one JSON object per line each way. Every request and every answer
//! carries `"protocol": PROTOCOL_VERSION` beside its fields, so a CLI and a daemon of
//! different versions say so instead of failing on a field they do not know.
use serde::{Deserialize, Serialize};

/// The protocol this build speaks. 1 was the unversioned protocol of xdpguard 0.1.
pub const PROTOCOL_VERSION: u32 = 2;
/// The key that carries it.
pub const PROTOCOL_KEY: &str = "protocol";

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    Block {
        prefixes: Vec<String>,
        /// Seconds; `None`: the configured default ban.
        duration_secs: Option<u64>,
        reason: Option<String>,
        /// Defaults to `manual`.
        source: Option<String>,
        /// Allow prefixes broader than the guard limit.
        force: bool,
    },
    Unblock {
        prefixes: Vec<String>,
    },
    Allow {
        prefixes: Vec<String>,
        reason: Option<String>,
    },
    Unallow {
        prefixes: Vec<String>,
    },
    List {
        source: Option<String>,
        /// Only entries whose prefix holds this address (`explain`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        covering: Option<String>,
    },
    Status,
    /// The volume engine's last interval: top prefixes, hot prefixes, totals.
    Top,
    /// Block every prefix AS `asn` announces as sole origin in the loaded origins table;
    /// the blocks follow the table as it is reloaded.
    BlockAsn {
        asn: u32,
        /// Seconds; `None`: the configured default ban.
        duration_secs: Option<u64>,
        reason: Option<String>,
        force: bool,
    },
    /// Remove every block `block_asn` made for `asn`, announced still or not.
    UnblockAsn {
        asn: u32,
    },
    /// Origin AS and announced prefix of each address, from the loaded table.
    Origins {
        addresses: Vec<String>,
    },
}

/// What the origins table says of one address.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OriginEntry {
    pub address: String,
    /// `AS64500`, or `{AS64500,AS64501}` for an AS_SET; `None`: no announcement covers it.
    pub origin: Option<String>,
    pub announced: Option<String>,
    /// RIS peers that saw the announcement.
    pub peers: u32,
    pub as_set: bool,
    /// Several origins announce the prefix; `origin` is the most seen.
    pub multiple_origins: bool,
}

/// The loaded origins table.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OriginsStatus {
    /// Whether `[origins]` is configured.
    pub configured: bool,
    /// Tables installed since start; 0: none yet.
    pub generation: u64,
    pub loaded_unix: u64,
    pub prefixes_v4: u64,
    pub prefixes_v6: u64,
    pub heap_bytes: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// Why one prefix of a request was not applied.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefusedPrefix {
    pub prefix: String,
    pub reason: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListEntry {
    pub kind: String,
    pub prefix: String,
    pub source: String,
    pub reason: String,
    pub created_unix: u64,
    /// 0 = never.
    pub expires_unix: u64,
    pub packets: u64,
    pub bytes: u64,
    /// The last log lines that scored it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub evidence: Vec<String>,
    /// Origin AS of the prefix's network (`AS64500`), where the origins table knows it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<String>,
    /// The announced prefix covering it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub announced: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InterfaceStatus {
    pub name: String,
    pub ifindex: u32,
    pub mode: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListStatus {
    pub list: String,
    pub entries: u64,
    pub capacity: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CounterStatus {
    /// An interface name, or `-` for frames not attributed to one (and expired hits).
    pub interface: String,
    pub counter: String,
    pub packets: u64,
    pub bytes: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    pub version: String,
    pub dry_run: bool,
    pub interfaces: Vec<InterfaceStatus>,
    pub lists: Vec<ListStatus>,
    pub counters: Vec<CounterStatus>,
    pub decisions: u64,
    /// Kernel entries no decision accounts for (seen at the last reconcile).
    pub unknown_entries: u64,
    /// Inserts refused because a list was full, since start.
    pub full_list_errors: u64,
    /// Log scoring per ruleset, since start.
    #[serde(default)]
    pub rulesets: Vec<RulesetStatus>,
    /// Peers the daemon takes decisions from (the fleet, CrowdSec), as they last reported.
    #[serde(default)]
    pub peers: Vec<PeerStatus>,
    #[serde(default)]
    pub origins: OriginsStatus,
}

/// A peer's state: whether it is connected and in step, what it holds, its last error.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerStatus {
    /// `fleet` or `crowdsec`.
    pub peer: String,
    /// Connected and its state read (the fleet), or its last poll answered (CrowdSec).
    pub up: bool,
    /// Decisions held on the peer's behalf.
    pub held: u64,
    /// One line: where, how many hosts, own decisions, writes pending.
    pub detail: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// One ruleset's counts: lines it matched, matches that scored an address, blocks it asked for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RulesetStatus {
    pub name: String,
    pub lines: u64,
    pub scored: u64,
    pub blocks: u64,
}

/// The volume engine's published snapshot is already plain text and numbers; the wire uses
/// it as it is (a downward dependency: the engine knows nothing of this protocol).
pub type Top = crate::detect::traffic::volume::engine::VolumeSnapshot;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Answer {
    Applied {
        applied: u64,
        refused: Vec<RefusedPrefix>,
    },
    Removed {
        removed: u64,
        /// Prefixes that had no such decision.
        missing: Vec<String>,
        refused: Vec<RefusedPrefix>,
    },
    List {
        entries: Vec<ListEntry>,
    },
    Status(Status),
    Top(Box<Top>),
    Origins {
        entries: Vec<OriginEntry>,
        table: OriginsStatus,
    },
    Error {
        message: String,
    },
}

/// `message` as one JSON line with the protocol version beside its fields.
///
/// # Errors
/// When `message` does not serialize to a JSON object.
pub fn encode<T: Serialize>(message: &T) -> Result<Vec<u8>, serde_json::Error> {
    let mut value = serde_json::to_value(message)?;
    if let serde_json::Value::Object(fields) = &mut value {
        let _: Option<_> = fields.insert(PROTOCOL_KEY.to_owned(), PROTOCOL_VERSION.into());
    }
    let mut line = serde_json::to_vec(&value)?;
    line.push(b'\n');
    Ok(line)
}

/// What one line said: its protocol version (1 when it names none) and the message.
pub struct Decoded<T> {
    pub protocol: u64,
    pub message: Result<T, serde_json::Error>,
}

/// Read one line written by [`encode`] (or by a peer of another version).
///
/// # Errors
/// When the line is not a JSON object.
pub fn decode<T: for<'de> Deserialize<'de>>(line: &[u8]) -> Result<Decoded<T>, serde_json::Error> {
    let mut value: serde_json::Value = serde_json::from_slice(line)?;
    let protocol = match &mut value {
        serde_json::Value::Object(fields) => fields
            .remove(PROTOCOL_KEY)
            .and_then(|v| v.as_u64())
            .unwrap_or(1),
        _ => 1,
    };
    Ok(Decoded {
        protocol,
        message: serde_json::from_value(value),
    })
}

/// What either side says when the other speaks another protocol.
pub fn mismatch(daemon: u64, cli: u64) -> String {
    let hint = if daemon < cli {
        "the daemon is older than this CLI: restart it after the upgrade"
    } else {
        "this CLI is older than the daemon: use the CLI of the daemon's version"
    };
    format!("the daemon speaks protocol {daemon}, this CLI protocol {cli}; {hint}")
}
