//! `[scoring]` and `[[inputs]]`: the log side's tables.
use toml::Spanned;

use crate::{
    config::{
        ConfigError,
        locate::ConfigText,
        raw::{RawInput, RawScoring},
    },
    detect::logs::config::{InputConfig, InputSource},
    detect::logs::offenders::ScoringConfig,
    detect::logs::score::ScoringPolicy,
};

impl ConfigText<'_> {
    pub(super) fn scoring(&self, raw: &RawScoring) -> Result<ScoringConfig, ConfigError> {
        let d = ScoringConfig::default();
        let max_tracked: u32 = self.integer(
            "scoring.max_tracked",
            raw.max_tracked.as_ref(),
            1,
            16 << 20,
            u32::try_from(d.board.max_tracked).unwrap_or(u32::MAX),
            "sources",
        )?;
        Ok(ScoringConfig {
            board: ScoringPolicy {
                threshold: self.integer(
                    "scoring.threshold",
                    raw.threshold.as_ref(),
                    0,
                    1 << 40,
                    d.board.threshold,
                    "points",
                )?,
                window: match &raw.window {
                    Some(value) => self.duration("scoring.window", value, "")?,
                    None => d.board.window,
                },
                score_min: self.integer(
                    "scoring.score_min",
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
                Some(value) => self.duration("scoring.ban", value, "")?,
                None => d.ban,
            },
            ban_multiplier: self.integer(
                "scoring.ban_multiplier",
                raw.ban_multiplier.as_ref(),
                1,
                100,
                d.ban_multiplier,
                "times",
            )?,
            ban_max: match &raw.ban_max {
                Some(value) => self.duration("scoring.ban_max", value, "")?,
                None => d.ban_max,
            },
            aggregate_min: self.integer(
                "scoring.aggregate_min",
                raw.aggregate_min.as_ref(),
                0,
                65_536,
                d.aggregate_min,
                "addresses",
            )?,
            aggregate_len_v4: self.integer(
                "scoring.aggregate_len_v4",
                raw.aggregate_len_v4.as_ref(),
                8,
                31,
                d.aggregate_len_v4,
                "bits",
            )?,
            aggregate_len_v6: self.integer(
                "scoring.aggregate_len_v6",
                raw.aggregate_len_v6.as_ref(),
                32,
                127,
                d.aggregate_len_v6,
                "bits",
            )?,
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
                rulesets: input.rulesets.clone(),
                start_at_end,
            });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use std::{path::PathBuf, time::Duration};

    use crate::{
        config::testing::*,
        detect::logs::config::{InputConfig, InputSource},
    };

    #[test]
    fn scoring_and_inputs_are_read_and_checked() {
        let config = parse(&with_top("rulesets_dir = \"/etc/xdpguard/rulesets\"\n")).unwrap();
        assert_eq!(
            config.rulesets_dir,
            Some(PathBuf::from("/etc/xdpguard/rulesets"))
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
}
