//! `[scoring]` and `[[inputs]]`: the log side's tables.
use std::path::{Path, PathBuf};

use toml::Spanned;

use crate::{
    config::{
        Config, ConfigError,
        locate::ConfigText,
        raw::{RawConfig, RawInput, RawRulesetLimits, RawScoring},
    },
    detect::logs::config::{InputConfig, InputSource},
    detect::logs::correlate::SessionLimits,
    detect::logs::offenders::{Aggregate, ScoringConfig},
    detect::logs::ruleset::{self, Limit, Ruleset, RulesetLimits},
    detect::logs::score::ScoringPolicy,
};

/// How many ruleset names an error about a missing one lists.
const NAMES_SHOWN: usize = 12;

impl ConfigText<'_> {
    pub(super) fn scoring(&self, raw: &RawScoring) -> Result<ScoringConfig, ConfigError> {
        if let Some(mode) = &raw.mode {
            return Err(self.invalid(
                "scoring.mode",
                mode.span(),
                "a mode is chosen per ruleset ([scoring.rulesets.NAME] mode) or per input ([[inputs]] mode)",
            ));
        }
        let mut scoring = self.scoring_over(raw, &ScoringConfig::default(), "scoring")?;
        for (name, table) in &raw.rulesets {
            let key = format!("scoring.rulesets.{}", name.get_ref());
            if let Some((nested, _)) = table.get_ref().rulesets.first_key_value() {
                return Err(self.invalid(
                    &key,
                    nested.span(),
                    "a ruleset's scoring table holds the [scoring] keys, not more rulesets",
                ));
            }
            let mut own = self.scoring_over(table.get_ref(), &scoring, &key)?;
            own.mode = table.get_ref().mode.as_ref().map(|m| m.get_ref().clone());
            let _ = scoring.per_ruleset.insert(name.get_ref().clone(), own);
        }
        Ok(scoring)
    }

    /// The keys of a `[scoring]` table at `prefix`, over `d` for what it leaves out.
    fn scoring_over(
        &self,
        raw: &RawScoring,
        d: &ScoringConfig,
        prefix: &str,
    ) -> Result<ScoringConfig, ConfigError> {
        let key = |name: &str| format!("{prefix}.{name}");
        let max_tracked: u32 = self.integer(
            &key("max_tracked"),
            raw.max_tracked.as_ref(),
            1,
            16 << 20,
            u32::try_from(d.board.max_tracked).unwrap_or(u32::MAX),
            "sources",
        )?;
        Ok(ScoringConfig {
            board: ScoringPolicy {
                threshold: self.integer(
                    &key("threshold"),
                    raw.threshold.as_ref(),
                    0,
                    1 << 40,
                    d.board.threshold,
                    "points",
                )?,
                window: match &raw.window {
                    Some(value) => self.duration(&key("window"), value, "")?,
                    None => d.board.window,
                },
                score_min: self.integer(
                    &key("score_min"),
                    raw.score_min.as_ref(),
                    -(1 << 40),
                    0,
                    d.board.score_min,
                    "points",
                )?,
                max_tracked: usize::try_from(max_tracked).unwrap_or(usize::MAX),
                exclude_local: raw.exclude_local.unwrap_or(d.board.exclude_local),
            },
            ban: match &raw.ban {
                Some(value) => self.duration(&key("ban"), value, "")?,
                None => d.ban,
            },
            ban_multiplier: self.integer(
                &key("ban_multiplier"),
                raw.ban_multiplier.as_ref(),
                1,
                100,
                d.ban_multiplier,
                "times",
            )?,
            ban_max: match &raw.ban_max {
                Some(value) => self.duration(&key("ban_max"), value, "")?,
                None => d.ban_max,
            },
            aggregate_min: self.integer(
                &key("aggregate_min"),
                raw.aggregate_min.as_ref(),
                0,
                65_536,
                d.aggregate_min,
                "addresses",
            )?,
            aggregate_len_v4: self.integer(
                &key("aggregate_len_v4"),
                raw.aggregate_len_v4.as_ref(),
                8,
                31,
                d.aggregate_len_v4,
                "bits",
            )?,
            aggregate_len_v6: self.integer(
                &key("aggregate_len_v6"),
                raw.aggregate_len_v6.as_ref(),
                32,
                127,
                d.aggregate_len_v6,
                "bits",
            )?,
            aggregate: match &raw.aggregate {
                Some(value) => Aggregate::from_name(value.get_ref()).ok_or_else(|| {
                    self.invalid(
                        &key("aggregate"),
                        value.span(),
                        format_args!(
                            "{:?} is none of \"prefix\", \"announced\" and \"both\"",
                            value.get_ref()
                        ),
                    )
                })?,
                None => d.aggregate,
            },
            // Broader announcements hold far more than the addresses that were seen; the
            // [guard] still refuses anything broader than its own limits.
            aggregate_announced_max_v4: self.integer(
                &key("aggregate_announced_max_v4"),
                raw.aggregate_announced_max_v4.as_ref(),
                8,
                32,
                d.aggregate_announced_max_v4,
                "bits",
            )?,
            aggregate_announced_max_v6: self.integer(
                &key("aggregate_announced_max_v6"),
                raw.aggregate_announced_max_v6.as_ref(),
                16,
                128,
                d.aggregate_announced_max_v6,
                "bits",
            )?,
            sessions: SessionLimits {
                max_sessions: usize::try_from(self.integer(
                    &key("max_sessions"),
                    raw.max_sessions.as_ref(),
                    0_u32,
                    16 << 20,
                    u32::try_from(d.sessions.max_sessions).unwrap_or(u32::MAX),
                    "sessions",
                )?)
                .unwrap_or(usize::MAX),
                ttl: self.duration_within(
                    &key("session_ttl"),
                    raw.session_ttl.as_ref(),
                    std::time::Duration::from_secs(1),
                    std::time::Duration::from_secs(86_400),
                    d.sessions.ttl,
                )?,
            },
            mode: None,
            per_ruleset: std::collections::BTreeMap::new(),
        })
    }

    pub(super) fn inputs(
        &self,
        raw: &[Spanned<RawInput>],
    ) -> Result<Vec<InputConfig>, ConfigError> {
        let mut out: Vec<InputConfig> = Vec::new();
        for input in raw {
            let input = input.get_ref();
            let name = input.name.get_ref();
            if name.is_empty() || out.iter().any(|i| &i.name == name) {
                return Err(self.invalid(
                    "inputs.name",
                    input.name.span(),
                    format_args!("{name:?} is empty or names another input too"),
                ));
            }
            let start_at_end = match &input.start {
                None => true,
                Some(start) if start.get_ref() == "end" => true,
                Some(start) if start.get_ref() == "beginning" => false,
                Some(start) => {
                    return Err(self.invalid(
                        "inputs.start",
                        start.span(),
                        format_args!("{:?} is neither \"end\" nor \"beginning\"", start.get_ref()),
                    ));
                }
            };
            let source = match (&input.file, &input.pipe, input.stdin, input.journal) {
                (Some(file), None, false, false) => {
                    InputSource::File(self.absolute_path("inputs.file", Some(file), "")?)
                }
                (None, Some(pipe), false, false) => {
                    InputSource::Pipe(self.absolute_path("inputs.pipe", Some(pipe), "")?)
                }
                (None, None, true, false) => InputSource::Stdin,
                (None, None, false, true) => InputSource::Journal {
                    unit: input.journal_unit.clone(),
                    file: match &input.journal_file {
                        Some(file) => {
                            Some(self.absolute_path("inputs.journal_file", Some(file), "")?)
                        }
                        None => None,
                    },
                },
                _ => {
                    return Err(self.invalid(
                        "inputs",
                        input.name.span(),
                        format_args!(
                            "input {name:?}: name exactly one of file, pipe, stdin = true or journal = true"
                        ),
                    ));
                }
            };
            out.push(InputConfig {
                name: name.clone(),
                source,
                rulesets: input
                    .rulesets
                    .iter()
                    .map(|name| name.get_ref().clone())
                    .collect(),
                start_at_end,
                mode: input.mode.as_ref().map(|m| m.get_ref().clone()),
            });
        }
        Ok(out)
    }
}

impl ConfigText<'_> {
    pub(super) fn ruleset_limits(
        &self,
        raw: &RawRulesetLimits,
    ) -> Result<RulesetLimits, ConfigError> {
        let mut limits = RulesetLimits::default();
        for (limit, value) in [
            (Limit::Files, &raw.max_files),
            (Limit::FileBytes, &raw.max_file_bytes),
            (Limit::Rules, &raw.max_rules),
            (Limit::PatternBytes, &raw.max_pattern_bytes),
            (Limit::RegexBytes, &raw.max_regex_bytes),
            (Limit::CompiledBytes, &raw.max_compiled_bytes),
        ] {
            let key = format!("rulesets.{}", limit.key());
            let set: u32 = self.integer(
                &key,
                value.as_ref(),
                1,
                limit.ceiling(),
                limit.of(&limits),
                limit.unit(),
            )?;
            limits.set(limit, set);
        }
        Ok(limits)
    }
}

impl ConfigText<'_> {
    /// What `config` (validated from this text) names in its rulesets directory: the files
    /// read within its `[rulesets]` limits, and every ruleset an input names there and enabled.
    /// Compiled too when `compile`; else the result is empty.
    pub(in crate::config) fn rulesets(
        &self,
        config: &Config,
        compile: bool,
    ) -> Result<Vec<Ruleset>, ConfigError> {
        // Validation kept no spans: the raw file again has them (it parsed once already).
        let raw: RawConfig = toml::from_str(self.text).map_err(|err| self.toml_error(&err))?;
        let mut named = raw.inputs.iter().flat_map(|input| {
            let input = input.get_ref();
            input
                .rulesets
                .iter()
                .map(move |name| (input.name.get_ref(), name))
        });
        let (false, Some(dir_value)) = (config.rulesets_dirs.is_empty(), &raw.rulesets_dir) else {
            return match named.next() {
                Some((input, name)) => Err(self.invalid(
                    "inputs.rulesets",
                    name.span(),
                    format_args!(
                        "input {input:?} names ruleset {:?}, but no rulesets_dir is set",
                        name.get_ref()
                    ),
                )),
                None => Ok(Vec::new()),
            };
        };
        let dir = config
            .rulesets_dirs
            .iter()
            .map(|d| d.display().to_string())
            .collect::<Vec<_>>()
            .join(" + ");
        let files = ruleset_files(&config.rulesets_dirs, &config.ruleset_limits)
            .map_err(|err| self.invalid("rulesets_dir", dir_value.span(), err))?;
        let scanned = ruleset::scan(&files, &config.ruleset_limits)
            .map_err(|err| self.invalid("rulesets_dir", dir_value.span(), err))?;
        for (input, name) in named {
            let wanted = name.get_ref();
            match scanned.names().find(|found| found.name == wanted) {
                Some(found) if found.enabled => {}
                Some(found) => {
                    return Err(self.invalid(
                        "inputs.rulesets",
                        name.span(),
                        format_args!(
                            "input {input:?} names ruleset {wanted:?}, which is disabled (enabled = false) in {}:{}",
                            found.file.display(),
                            found.line
                        ),
                    ));
                }
                None => {
                    let mut there: Vec<&str> = scanned
                        .names()
                        .filter(|found| found.enabled)
                        .map(|found| found.name)
                        .collect();
                    let more = there.len().saturating_sub(NAMES_SHOWN);
                    there.truncate(NAMES_SHOWN);
                    let there = match (there.is_empty(), more) {
                        (true, _) => "it has none".to_owned(),
                        (false, 0) => format!("it has {}", there.join(", ")),
                        (false, more) => format!("it has {} and {more} more", there.join(", ")),
                    };
                    return Err(self.invalid(
                        "inputs.rulesets",
                        name.span(),
                        format_args!(
                            "input {input:?} names ruleset {wanted:?}, which is not in {dir} ({there})"
                        ),
                    ));
                }
            }
        }
        for (name, table) in &raw.scoring.rulesets {
            let key = format!("scoring.rulesets.{}", name.get_ref());
            let Some(found) = scanned.names().find(|found| found.name == name.get_ref()) else {
                return Err(self.invalid(
                    &key,
                    name.span(),
                    format_args!("no ruleset {:?} in {dir}", name.get_ref()),
                ));
            };
            if let Some(mode) = &table.get_ref().mode
                && !found.modes.contains(&mode.get_ref().as_str())
            {
                return Err(self.invalid(
                    &format!("{key}.mode"),
                    mode.span(),
                    format_args!(
                        "ruleset {:?} has no mode {:?} (it has: {})",
                        name.get_ref(),
                        mode.get_ref(),
                        if found.modes.is_empty() {
                            "none".to_owned()
                        } else {
                            found.modes.join(", ")
                        }
                    ),
                ));
            }
        }
        for input in &raw.inputs {
            let input = input.get_ref();
            let Some(mode) = &input.mode else {
                continue;
            };
            let wanted: Vec<&str> = input
                .rulesets
                .iter()
                .map(|n| n.get_ref().as_str())
                .collect();
            let mut read = scanned
                .names()
                .filter(|found| found.enabled)
                .filter(|found| wanted.is_empty() || wanted.contains(&found.name));
            if !read.any(|found| found.modes.iter().any(|m| m == mode.get_ref())) {
                return Err(self.invalid(
                    "inputs.mode",
                    mode.span(),
                    format_args!(
                        "input {:?}: none of its rulesets has mode {:?}",
                        input.name.get_ref(),
                        mode.get_ref()
                    ),
                ));
            }
        }
        if !compile {
            return Ok(Vec::new());
        }
        scanned
            .compile()
            .map_err(|err| self.invalid("rulesets_dir", dir_value.span(), err))
    }
}

/// What to load from `dirs`: one directory as it is; several merged by file name, a later
/// directory's `NAME.toml` replacing an earlier one's, and an empty file or a symlink to
/// `/dev/null` there removing it (systemd's masking). Later directories may be missing.
pub(in crate::config) fn ruleset_files(
    dirs: &[PathBuf],
    limits: &RulesetLimits,
) -> Result<Vec<PathBuf>, String> {
    let [first, later @ ..] = dirs else {
        return Ok(Vec::new());
    };
    if later.is_empty() {
        return Ok(vec![first.clone()]);
    }
    let max = usize::try_from(limits.max_files).unwrap_or(usize::MAX);
    let mut by_name: std::collections::BTreeMap<std::ffi::OsString, PathBuf> =
        std::collections::BTreeMap::new();
    for (index, dir) in dirs.iter().enumerate() {
        let entries = match std::fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(err) if index > 0 && err.kind() == std::io::ErrorKind::NotFound => continue,
            Err(err) => return Err(format!("{}: {err}", dir.display())),
        };
        let mut seen = 0usize;
        for entry in entries {
            let entry = entry.map_err(|err| format!("{}: {err}", dir.display()))?;
            let name = entry.file_name();
            if Path::new(&name).extension().is_none_or(|ext| ext != "toml") {
                continue;
            }
            seen += 1;
            if seen > max {
                return Err(format!(
                    "{}: more than {max} ruleset files (rulesets.max_files)",
                    dir.display()
                ));
            }
            let path = entry.path();
            if index > 0 && masks(&path) {
                let _: Option<PathBuf> = by_name.remove(&name);
            } else {
                let _: Option<PathBuf> = by_name.insert(name, path);
            }
        }
    }
    Ok(by_name.into_values().collect())
}

/// An empty file, or a symlink to /dev/null.
fn masks(path: &Path) -> bool {
    if std::fs::read_link(path).is_ok_and(|target| target == Path::new("/dev/null")) {
        return true;
    }
    std::fs::symlink_metadata(path).is_ok_and(|m| m.is_file() && m.len() == 0)
}

#[cfg(test)]
mod tests {
    use std::{path::PathBuf, time::Duration};

    use crate::{
        config::{Config, testing::*},
        detect::logs::config::{InputConfig, InputSource},
    };

    #[test]
    fn a_ruleset_scoring_table_overrides_the_global_keys_it_names() {
        let text = format!(
            "{}[scoring]\nthreshold = 20\nban = \"2h\"\n[scoring.rulesets.sshd]\nthreshold = 5\n[scoring.rulesets.nginx-access]\nban = \"1d\"\nwindow = \"1m\"\n",
            with_top("")
        );
        let config = parse(&text).unwrap();
        let sshd = config.scoring.for_ruleset("sshd");
        assert_eq!(
            (sshd.board.threshold, sshd.ban),
            (20 - 15, Duration::from_secs(7200))
        );
        let web = config.scoring.for_ruleset("nginx-access");
        assert_eq!(web.board.threshold, 20);
        assert_eq!(web.ban, Duration::from_secs(86_400));
        assert_eq!(web.board.window, Duration::from_secs(60));
        // Not named: the global policy.
        assert_eq!(config.scoring.for_ruleset("postfix").board.threshold, 20);
        let bad = format!(
            "{}[scoring]\n[scoring.rulesets.sshd]\nthreshold = -1\n",
            with_top("")
        );
        let message = parse(&bad).unwrap_err().to_string();
        assert!(
            message.contains("scoring.rulesets.sshd.threshold: -1 is out of range"),
            "{message}"
        );
        let nested = format!(
            "{}[scoring.rulesets.sshd.rulesets.x]\nthreshold = 1\n",
            with_top("")
        );
        let message = parse(&nested).unwrap_err().to_string();
        assert!(message.contains("not more rulesets"), "{message}");
    }

    #[test]
    fn announced_aggregation_is_read_per_ruleset_and_checked() {
        use crate::detect::logs::offenders::Aggregate;
        let config = parse(MINIMAL).unwrap();
        assert_eq!(
            (
                config.scoring.aggregate,
                config.scoring.aggregate_announced_max_v4,
                config.scoring.aggregate_announced_max_v6
            ),
            (Aggregate::Prefix, 16, 32)
        );
        let text = with_section(
            "[scoring]\naggregate = \"both\"\naggregate_announced_max_v4 = 20\n[scoring.rulesets.sshd]\naggregate = \"announced\"\naggregate_announced_max_v6 = 40\n",
        );
        let config = parse(&text).unwrap();
        assert_eq!(config.scoring.aggregate, Aggregate::Both);
        let sshd = config.scoring.for_ruleset("sshd");
        assert_eq!(
            (
                sshd.aggregate,
                sshd.aggregate_announced_max_v4,
                sshd.aggregate_announced_max_v6
            ),
            (Aggregate::Announced, 20, 40)
        );
        assert_errors(
            &[
                (
                    "[scoring]\naggregate = \"asn\"\n",
                    "4:13: scoring.aggregate: \"asn\" is none of \"prefix\", \"announced\" and \"both\"",
                ),
                (
                    "[scoring]\naggregate_announced_max_v4 = 4\n",
                    "4:30: scoring.aggregate_announced_max_v4: 4 is out of range: 8 to 32 bits",
                ),
                (
                    "[scoring.rulesets.sshd]\naggregate_announced_max_v6 = 129\n",
                    "4:30: scoring.rulesets.sshd.aggregate_announced_max_v6: 129 is out of range: 16 to 128 bits",
                ),
            ],
            with_section,
        );
    }

    #[test]
    fn scoring_and_inputs_are_read_and_checked() {
        let config = parse(&with_top("rulesets_dir = \"/etc/xdpguard/rulesets\"\n")).unwrap();
        assert_eq!(
            config.rulesets_dirs,
            [PathBuf::from("/etc/xdpguard/rulesets")]
        );
        let text = format!(
            "{}[scoring]\nthreshold = 20\nwindow = \"5m\"\nban = \"2h\"\n[[inputs]]\nname = \"auth\"\nfile = \"/var/log/auth.log\"\nrulesets = [\"sshd\"]\nstart = \"beginning\"\n",
            with_top("")
        );
        let config = parse(&text).unwrap();
        assert_eq!(config.scoring.board.threshold, 20);
        assert_eq!(config.scoring.board.window, Duration::from_secs(300));
        assert_eq!(config.scoring.ban, Duration::from_secs(7200));
        assert_eq!(
            config.inputs,
            vec![InputConfig {
                name: "auth".into(),
                source: InputSource::File(PathBuf::from("/var/log/auth.log")),
                rulesets: vec!["sshd".into()],
                start_at_end: false,
                mode: None,
            }]
        );
        let bad = text.replace("\"beginning\"", "\"middle\"");
        let err = parse(&bad).unwrap_err().to_string();
        assert!(
            err.contains("inputs.start") && err.contains("middle"),
            "{err}"
        );
        let bad = text.replace("/var/log/auth.log", "auth.log");
        assert!(parse(&bad).unwrap_err().to_string().contains("inputs.file"));
        let both = text.replace("file = ", "pipe = \"/run/p\"\nfile = ");
        assert!(
            parse(&both)
                .unwrap_err()
                .to_string()
                .contains("exactly one of")
        );
        let journal = text.replace(
            "file = \"/var/log/auth.log\"",
            "journal = true\njournal_unit = \"ssh.service\"",
        );
        assert_eq!(
            parse(&journal).unwrap().inputs[0].source,
            InputSource::Journal {
                unit: Some("ssh.service".into()),
                file: None
            }
        );
        let pipe = text.replace("file = ", "pipe = ");
        assert_eq!(
            parse(&pipe).unwrap().inputs[0].source,
            InputSource::Pipe(PathBuf::from("/var/log/auth.log"))
        );
    }

    #[test]
    fn ruleset_limits_are_read_and_range_checked() {
        use crate::detect::logs::ruleset::RulesetLimits;
        assert_eq!(
            parse(MINIMAL).unwrap().ruleset_limits,
            RulesetLimits::default()
        );
        let config = parse(&with_section(
            "[rulesets]\nmax_files = 500\nmax_file_bytes = 1000\nmax_rules = 3\nmax_pattern_bytes = 4\nmax_regex_bytes = 5\nmax_compiled_bytes = 6\n",
        ))
        .unwrap();
        assert_eq!(
            config.ruleset_limits,
            RulesetLimits {
                max_files: 500,
                max_file_bytes: 1000,
                max_rules: 3,
                max_pattern_bytes: 4,
                max_regex_bytes: 5,
                max_compiled_bytes: 6,
            }
        );
        let message = error_at(&with_section("[rulesets]\nmax_files = 0\n"), 4);
        assert!(
            message.contains("rulesets.max_files: 0 is out of range: 1 to 65536 files"),
            "{message}"
        );
        let message = error_at(&with_section("[rulesets]\nmax_rulez = 1\n"), 4);
        assert!(message.contains("unknown field `max_rulez`"), "{message}");
    }

    /// A scratch directory with a rulesets directory holding `sshd` and a disabled `off`, and
    /// a configuration whose input names `wanted` on line 7.
    fn config_naming(tag: &str, wanted: &str) -> (PathBuf, PathBuf) {
        let dir = std::env::temp_dir().join(format!("xdpguard-cfg-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("rulesets")).unwrap();
        let shipped =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../rulesets/sshd.toml");
        std::fs::copy(shipped, dir.join("rulesets/sshd.toml")).unwrap();
        std::fs::write(
            dir.join("rulesets/off.toml"),
            "[[ruleset]]\nname = \"off\"\nmatch = '('\nenabled = false\n",
        )
        .unwrap();
        let path = dir.join("xdpguard.toml");
        std::fs::write(
            &path,
            format!(
                "rulesets_dir = \"{}\"\n[[interfaces]]\nname = \"eth1\"\n[[inputs]]\nname = \"auth\"\nfile = \"/var/log/auth.log\"\nrulesets = [\"sshd\", \"{wanted}\"]\n",
                dir.join("rulesets").display()
            ),
        )
        .unwrap();
        (dir, path)
    }

    #[test]
    fn an_input_mode_must_be_a_mode_of_one_of_its_rulesets() {
        let (dir, path) = config_naming("mode", "sshd");
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(
            dir.join("rulesets/moded.toml"),
            "[[ruleset]]\nname = \"moded\"\nprograms = [\"x\"]\n[ruleset.modes]\nnormal = []\nloud = [\"loud\"]\n[[ruleset.rule]]\nname = \"r\"\ntags = [\"loud\"]\nmatch = '^(?P<address>[0-9.]+)$'\nscore = 1\n",
        )
        .unwrap();
        std::fs::write(&path, format!("{text}mode = \"nosuch\"\n")).unwrap();
        let err = Config::load(&path).unwrap_err().to_string();
        assert!(err.starts_with(&format!("{}:8:", path.display())), "{err}");
        assert!(
            err.contains("inputs.mode: input \"auth\": none of its rulesets has mode \"nosuch\""),
            "{err}"
        );
        // `loud` is a mode of `moded`, which the input does not read; with it, it loads.
        std::fs::write(&path, format!("{text}mode = \"loud\"\n")).unwrap();
        assert!(Config::load(&path).is_err());
        let text = text.replace(
            "rulesets = [\"sshd\", \"sshd\"]",
            "rulesets = [\"sshd\", \"moded\"]",
        );
        std::fs::write(&path, format!("{text}mode = \"loud\"\n")).unwrap();
        let (config, _) = Config::load_with_rulesets(&path).unwrap();
        assert_eq!(config.inputs[0].mode.as_deref(), Some("loud"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_input_naming_a_missing_or_disabled_ruleset_is_refused_at_its_line() {
        let (dir, path) = config_naming("missing", "sshx");
        let err = Config::load(&path).unwrap_err().to_string();
        assert!(err.starts_with(&format!("{}:7:", path.display())), "{err}");
        assert!(
            err.contains("inputs.rulesets: input \"auth\" names ruleset \"sshx\", which is not in")
                && err.contains("(it has sshd)"),
            "{err}"
        );
        // The file alone is fine: only loading looks at the rulesets.
        Config::read(&path).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();

        let (dir, path) = config_naming("disabled", "off");
        let err = Config::load(&path).unwrap_err().to_string();
        assert!(err.contains("which is disabled (enabled = false)"), "{err}");
        assert!(err.contains("off.toml:2"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();

        let (dir, path) = config_naming("present", "sshd");
        // `sshd` twice is fine; every name is there.
        let (config, rulesets) = Config::load_with_rulesets(&path).unwrap();
        assert_eq!(config.inputs[0].rulesets, ["sshd", "sshd"]);
        assert_eq!(
            rulesets.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(),
            ["sshd"]
        );
        std::fs::remove_dir_all(&dir).unwrap();

        let text = format!(
            "{MINIMAL}[[inputs]]\nname = \"auth\"\nfile = \"/var/log/auth.log\"\nrulesets = [\"sshd\"]\n"
        );
        let dir = std::env::temp_dir().join(format!("xdpguard-cfg-nodir-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("xdpguard.toml");
        std::fs::write(&path, text).unwrap();
        let err = Config::load(&path).unwrap_err().to_string();
        assert!(
            err.starts_with(&format!("{}:6:", path.display()))
                && err.contains("but no rulesets_dir is set"),
            "{err}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn ruleset_errors_and_limits_are_config_errors_at_rulesets_dir() {
        let (dir, path) = config_naming("limit", "sshd");
        let text = std::fs::read_to_string(&path).unwrap() + "[rulesets]\nmax_files = 1\n";
        std::fs::write(&path, text).unwrap();
        let err = Config::load(&path).unwrap_err().to_string();
        assert!(err.starts_with(&format!("{}:1:", path.display())), "{err}");
        assert!(
            err.contains("rulesets_dir: ")
                && err.contains("2 ruleset files, more than rulesets.max_files = 1"),
            "{err}"
        );
        std::fs::write(
            dir.join("rulesets/off.toml"),
            "[[ruleset]]\nname = \"off\"\nmatch = 'a'\nscroe = 1\n",
        )
        .unwrap();
        let text = std::fs::read_to_string(&path)
            .unwrap()
            .replace("max_files = 1", "");
        std::fs::write(&path, text).unwrap();
        let err = Config::load(&path).unwrap_err().to_string();
        assert!(
            err.contains("off.toml:4: ruleset \"off\": unknown key `scroe`"),
            "{err}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
