//! A small SVG chart builder for the report: stacked areas and stacked bars over time, and
//! horizontal bars for a ranking. Colours are never written here: every element carries a
//! class, and the page's stylesheet gives the class its colour in the light and dark themes.
use std::fmt::Write as _;

use super::markup::{Utc, bytes, escape, si};

/// Colours in the palette (`s0` .. `s7`); series beyond it are folded into `other`.
pub const PALETTE_SIZE: usize = 8;

/// The class of the folded series.
pub const OTHER_CLASS: &str = "other";

const WIDTH: f64 = 960.0;
const MARGIN_LEFT: f64 = 64.0;
const MARGIN_RIGHT: f64 = 20.0;
const TITLE_BASELINE: f64 = 22.0;
const LEGEND_TOP: f64 = 36.0;
const LEGEND_ROW: f64 = 18.0;
const PLOT_HEIGHT: f64 = 220.0;
/// Room under the plot for two lines of time labels.
const TIME_AXIS_ROOM: f64 = 40.0;
/// A rough width of one character of the 12px chart font, to wrap legends and cut labels.
const CHAR_WIDTH: f64 = 7.0;
const EMPTY_TEXT: &str = "no data in this range";

/// One named row of values, one per bin, drawn in the colour of `class`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Series {
    pub name: String,
    pub class: String,
    pub values: Vec<u64>,
}

impl Series {
    pub fn total(&self) -> u64 {
        self.values
            .iter()
            .fold(0, |sum, value| sum.saturating_add(*value))
    }
}

/// The palette class of the `index`th series.
pub fn palette_class(index: usize) -> String {
    format!("s{}", index % PALETTE_SIZE)
}

/// `named` (name, values per bin) as series with palette colours, at most [`PALETTE_SIZE`] of
/// them: when there are more, the `PALETTE_SIZE - 1` largest by total keep their place and
/// the rest are summed into one `other` series named after how many it holds (`noun` says
/// what they are: `rulesets`, `source kinds`).
pub fn fold_series(named: Vec<(String, Vec<u64>)>, noun: &str) -> Vec<Series> {
    let bins = named
        .iter()
        .map(|(_, values)| values.len())
        .max()
        .unwrap_or(0);
    let kept: Vec<bool> = if named.len() <= PALETTE_SIZE {
        vec![true; named.len()]
    } else {
        let mut by_total: Vec<(usize, u64)> = named
            .iter()
            .enumerate()
            .map(|(index, (_, values))| {
                let total = values.iter().fold(0u64, |sum, v| sum.saturating_add(*v));
                (index, total)
            })
            .collect();
        // Largest first; ties keep their order, so the choice is stable.
        by_total.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        let mut kept = vec![false; named.len()];
        for (index, _) in by_total.iter().take(PALETTE_SIZE - 1) {
            kept[*index] = true;
        }
        kept
    };
    let mut series = Vec::new();
    let mut other = vec![0u64; bins];
    let mut folded = 0usize;
    for ((name, values), keep) in named.into_iter().zip(kept) {
        if keep {
            let class = palette_class(series.len());
            series.push(Series {
                name,
                class,
                values,
            });
        } else {
            folded += 1;
            for (sum, value) in other.iter_mut().zip(values) {
                *sum = sum.saturating_add(value);
            }
        }
    }
    if folded > 0 {
        series.push(Series {
            name: format!("other ({folded} more {noun})"),
            class: OTHER_CLASS.to_owned(),
            values: other,
        });
    }
    series
}

/// Each series' band per bin, `(lower, upper)`, stacked in order: the first series sits on
/// zero and the last one's `upper` is the bin's total.
pub fn stack(series: &[Series]) -> Vec<Vec<(u64, u64)>> {
    let bins = series.iter().map(|s| s.values.len()).max().unwrap_or(0);
    let mut floor = vec![0u64; bins];
    series
        .iter()
        .map(|s| {
            floor
                .iter_mut()
                .enumerate()
                .map(|(bin, level)| {
                    let lower = *level;
                    *level = level.saturating_add(s.values.get(bin).copied().unwrap_or(0));
                    (lower, *level)
                })
                .collect()
        })
        .collect()
}

/// Ticks for a value axis from 0 to at least `max`: a step of 1, 2 or 5 times a power of ten,
/// about five steps, the last tick at or above `max`. Never fewer than two ticks.
pub fn value_ticks(max: u64) -> Vec<u64> {
    const STEPS_WANTED: u128 = 5;
    let max = u128::from(max.max(1));
    let raw = max.div_ceil(STEPS_WANTED);
    let mut magnitude = 1u128;
    while magnitude * 10 <= raw {
        magnitude *= 10;
    }
    let step = [1, 2, 5, 10]
        .into_iter()
        .map(|m| m * magnitude)
        .find(|step| *step >= raw)
        .unwrap_or(magnitude * 10);
    let mut ticks = Vec::new();
    let mut tick = 0u128;
    // Past u64::MAX the axis ends at the largest tick that fits.
    while let Ok(value) = u64::try_from(tick) {
        ticks.push(value);
        if tick >= max {
            break;
        }
        tick += step;
    }
    ticks
}

/// Steps a time axis may use, in seconds: whole minutes, hours, days and weeks.
const TIME_STEPS: [u64; 19] = [
    60, 120, 300, 600, 900, 1800, 3600, 7200, 10_800, 21_600, 43_200, 86_400, 172_800, 345_600,
    604_800, 1_209_600, 2_419_200, 4_838_400, 9_676_800,
];
const TIME_TICKS_WANTED: u64 = 8;

/// A tick on a time axis: where it is, and its label in one or two lines (the second names
/// the date under an hour).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TimeTick {
    pub at: u64,
    pub label: String,
    pub date: Option<String>,
}

/// Ticks for `[since, until)`: the smallest step from [`TIME_STEPS`] not under the bin size
/// that gives at most eight ticks, at multiples of the step in UTC. Under a day the labels are
/// hours, with the date under the first tick and under each midnight; from a day up they are
/// dates.
pub fn time_ticks(since: u64, until: u64, bin_seconds: u64) -> Vec<TimeTick> {
    if until <= since {
        return Vec::new();
    }
    let span = until - since;
    let step = TIME_STEPS
        .into_iter()
        .find(|step| *step >= bin_seconds && span / step <= TIME_TICKS_WANTED)
        .unwrap_or_else(|| {
            // A range of years: whole multiples of the largest step.
            let largest = TIME_STEPS[TIME_STEPS.len() - 1];
            span.div_ceil(TIME_TICKS_WANTED).div_ceil(largest) * largest
        });
    let mut ticks = Vec::new();
    let mut at = since.div_ceil(step) * step;
    while at <= until {
        let utc = Utc::of(at);
        let tick = if step >= 86_400 {
            TimeTick {
                at,
                // Over more than half a year the year matters.
                label: if span > 183 * 86_400 {
                    utc.date()
                } else {
                    utc.month_day()
                },
                date: None,
            }
        } else {
            let first = ticks.is_empty();
            TimeTick {
                at,
                label: utc.hour_minute(),
                date: (first || at.is_multiple_of(86_400)).then(|| utc.month_day()),
            }
        };
        ticks.push(tick);
        at = match at.checked_add(step) {
            Some(next) => next,
            None => break,
        };
    }
    ticks
}

/// How a chart's values read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    Count,
    Bytes,
}

impl Unit {
    fn label(self, value: u64) -> String {
        match self {
            Self::Count => si(value),
            Self::Bytes => bytes(value),
        }
    }
}

/// How a time chart draws its series.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    /// A stacked step area: each bin's value is flat over the bin.
    Area,
    /// Stacked bars, one per bin.
    Bars,
}

/// A chart of series over time bins.
pub struct TimeChart<'a> {
    /// The element id, stable: `chart-sources`.
    pub id: &'a str,
    pub title: &'a str,
    pub unit: Unit,
    pub shape: Shape,
    /// The x axis covers `[since, until)`.
    pub since: u64,
    pub until: u64,
    pub bin_seconds: u64,
    /// Each bin's start and length; the series have one value per bin, in this order.
    pub bins: &'a [(u64, u64)],
    pub series: &'a [Series],
    /// A line under the legend (for example that some counts are a floor).
    pub note: Option<&'a str>,
}

/// Where a legend ends, and its markup.
struct Legend {
    markup: String,
    bottom: f64,
}

fn legend(entries: &[(&str, &str)], top: f64) -> Legend {
    let mut markup = String::from(r#"<g class="legend">"#);
    let (mut x, mut y) = (MARGIN_LEFT, top);
    for (name, class) in entries {
        let width = 14.0 + 6.0 + CHAR_WIDTH * chars(name) + 18.0;
        if x + width > WIDTH - MARGIN_RIGHT && x > MARGIN_LEFT {
            x = MARGIN_LEFT;
            y += LEGEND_ROW;
        }
        let _ = write!(
            markup,
            r#"<rect class="swatch {class}" x="{x:.1}" y="{:.1}" width="14" height="10"/><text x="{:.1}" y="{:.1}">{}</text>"#,
            y + 1.0,
            x + 20.0,
            y + 10.0,
            escape(name)
        );
        x += width;
    }
    markup.push_str("</g>");
    let bottom = if entries.is_empty() {
        top
    } else {
        y + LEGEND_ROW
    };
    Legend { markup, bottom }
}

fn chars(text: &str) -> f64 {
    text.chars().count() as f64
}

/// The opening of a chart's `<svg>`, with its title (also as the accessible name).
fn open(id: &str, title: &str, height: f64) -> String {
    let id = escape(id);
    let title = escape(title);
    format!(
        r#"<svg class="chart" id="{id}" xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height:.0}" viewBox="0 0 {WIDTH} {height:.0}" role="img" aria-labelledby="{id}-title"><title id="{id}-title">{title}</title><text class="chart-title" x="{MARGIN_LEFT}" y="{TITLE_BASELINE}">{title}</text>"#
    )
}

/// The plot's frame with "no data in this range" in its middle.
fn empty_plot(out: &mut String, left: f64, top: f64, width: f64, height: f64) {
    let _ = write!(
        out,
        r#"<rect class="frame" x="{left:.1}" y="{top:.1}" width="{width:.1}" height="{height:.1}"/><text class="empty" x="{:.1}" y="{:.1}" text-anchor="middle">{EMPTY_TEXT}</text>"#,
        left + width / 2.0,
        top + height / 2.0
    );
}

impl TimeChart<'_> {
    /// The chart as one `<svg class="chart">` element.
    pub fn render(&self) -> String {
        let entries: Vec<(&str, &str)> = self
            .series
            .iter()
            .map(|s| (s.name.as_str(), s.class.as_str()))
            .collect();
        let legend = legend(&entries, LEGEND_TOP);
        let mut top = legend.bottom + 8.0;
        let note = self.note.map(|note| {
            let markup = format!(
                r#"<text class="note" x="{MARGIN_LEFT}" y="{:.1}">{}</text>"#,
                top + 4.0,
                escape(note)
            );
            top += LEGEND_ROW;
            markup
        });
        top += 6.0;
        let height = top + PLOT_HEIGHT + TIME_AXIS_ROOM;
        let (left, width) = (MARGIN_LEFT, WIDTH - MARGIN_LEFT - MARGIN_RIGHT);
        let bottom = top + PLOT_HEIGHT;

        let mut out = open(self.id, self.title, height);
        out.push_str(&legend.markup);
        if let Some(note) = note {
            out.push_str(&note);
        }

        let bands = stack(self.series);
        let max = bands.last().map_or(0, |last| {
            last.iter().map(|(_, upper)| *upper).max().unwrap_or(0)
        });
        let (since, until) = self.x_range();
        if max == 0 || until <= since {
            empty_plot(&mut out, left, top, width, PLOT_HEIGHT);
            out.push_str("</svg>");
            return out;
        }
        let ticks = value_ticks(max);
        let ceiling = ticks.last().copied().unwrap_or(1).max(1) as f64;
        let y = |value: u64| bottom - value as f64 / ceiling * PLOT_HEIGHT;
        let span = (until - since) as f64;
        let x = |at: u64| left + (at.clamp(since, until) - since) as f64 / span * width;

        // Grid and value labels under the data.
        out.push_str(r#"<g class="axis">"#);
        for tick in &ticks {
            let at = y(*tick);
            let _ = write!(
                out,
                r#"<line class="grid" x1="{left:.1}" x2="{:.1}" y1="{at:.1}" y2="{at:.1}"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
                left + width,
                left - 6.0,
                at + 4.0,
                self.unit.label(*tick)
            );
        }
        out.push_str("</g>");

        out.push_str(r#"<g class="data">"#);
        match self.shape {
            Shape::Area => self.areas(&mut out, &bands, &x, &y),
            Shape::Bars => self.bars(&mut out, &bands, &x, &y),
        }
        out.push_str("</g>");

        // The time axis over the data.
        let _ = write!(
            out,
            r#"<g class="axis"><line class="baseline" x1="{left:.1}" x2="{:.1}" y1="{bottom:.1}" y2="{bottom:.1}"/>"#,
            left + width
        );
        for tick in time_ticks(since, until, self.bin_seconds) {
            let at = x(tick.at);
            let _ = write!(
                out,
                r#"<line class="tick" x1="{at:.1}" x2="{at:.1}" y1="{bottom:.1}" y2="{:.1}"/><text x="{at:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
                bottom + 5.0,
                bottom + 18.0,
                escape(&tick.label)
            );
            if let Some(date) = tick.date {
                let _ = write!(
                    out,
                    r#"<text class="date" x="{at:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
                    bottom + 32.0,
                    escape(&date)
                );
            }
        }
        out.push_str("</g></svg>");
        out
    }

    /// The x axis: the summary's range, or the bins' when the range is unset.
    fn x_range(&self) -> (u64, u64) {
        if self.until > self.since {
            return (self.since, self.until);
        }
        let since = self.bins.iter().map(|(start, _)| *start).min().unwrap_or(0);
        let until = self
            .bins
            .iter()
            .map(|(start, seconds)| start.saturating_add(*seconds))
            .max()
            .unwrap_or(0);
        (since, until)
    }

    fn areas(
        &self,
        out: &mut String,
        bands: &[Vec<(u64, u64)>],
        x: &impl Fn(u64) -> f64,
        y: &impl Fn(u64) -> f64,
    ) {
        for (series, band) in self.series.iter().zip(bands) {
            if series.total() == 0 {
                continue;
            }
            // Upper edge left to right, lower edge back: a closed band, flat over each bin.
            let mut upper = String::new();
            let mut lower = Vec::new();
            for ((start, seconds), (low, high)) in self.bins.iter().zip(band) {
                let (x0, x1) = (x(*start), x(start.saturating_add(*seconds)));
                let command = if upper.is_empty() { 'M' } else { 'L' };
                let _ = write!(
                    upper,
                    "{command}{x0:.1},{:.1}L{x1:.1},{:.1}",
                    y(*high),
                    y(*high)
                );
                lower.push(format!("L{x1:.1},{:.1}L{x0:.1},{:.1}", y(*low), y(*low)));
            }
            lower.reverse();
            let _ = write!(
                out,
                r#"<path class="series {}" d="{upper}{}Z"><title>{}</title></path>"#,
                series.class,
                lower.concat(),
                escape(&series.name)
            );
        }
    }

    fn bars(
        &self,
        out: &mut String,
        bands: &[Vec<(u64, u64)>],
        x: &impl Fn(u64) -> f64,
        y: &impl Fn(u64) -> f64,
    ) {
        for (series, band) in self.series.iter().zip(bands) {
            for ((start, seconds), (low, high)) in self.bins.iter().zip(band) {
                if high <= low {
                    continue;
                }
                let (x0, x1) = (x(*start), x(start.saturating_add(*seconds)));
                let slot = x1 - x0;
                // A gap between bars, never wider than a fifth of the slot.
                let gap = (slot * 0.2).min(2.0);
                let (top, bottom) = (y(*high), y(*low));
                let _ = write!(
                    out,
                    r#"<rect class="series {}" x="{:.1}" y="{top:.1}" width="{:.1}" height="{:.1}"><title>{}: {} at {}</title></rect>"#,
                    series.class,
                    x0 + gap / 2.0,
                    (slot - gap).max(0.5),
                    (bottom - top).max(0.5),
                    escape(&series.name),
                    self.unit.label(high - low),
                    Utc::of(*start).full()
                );
            }
        }
    }
}

/// A ranking as horizontal bars, largest on top.
pub struct BarChart<'a> {
    pub id: &'a str,
    pub title: &'a str,
    pub unit: Unit,
    /// What the bars measure, for the legend: `packets dropped`.
    pub measure: &'a str,
    pub class: &'a str,
    /// Label and value, in the order drawn.
    pub rows: &'a [(String, u64)],
}

const BAR_LABEL_CHARS: usize = 24;
const BAR_ROW: f64 = 22.0;
const BAR_LABEL_ROOM: f64 = 190.0;
/// Room right of the longest bar for its value.
const BAR_VALUE_ROOM: f64 = 60.0;

impl BarChart<'_> {
    pub fn render(&self) -> String {
        let legend = legend(&[(self.measure, self.class)], LEGEND_TOP);
        let top = legend.bottom + 8.0;
        let rows_height = if self.rows.is_empty() {
            PLOT_HEIGHT / 2.0
        } else {
            BAR_ROW * self.rows.len() as f64
        };
        let height = top + rows_height + 30.0;
        let left = BAR_LABEL_ROOM;
        let width = WIDTH - left - MARGIN_RIGHT - BAR_VALUE_ROOM;
        let bottom = top + rows_height;

        let mut out = open(self.id, self.title, height);
        out.push_str(&legend.markup);
        let max = self.rows.iter().map(|(_, value)| *value).max().unwrap_or(0);
        if max == 0 {
            empty_plot(&mut out, left, top, width, rows_height);
            out.push_str("</svg>");
            return out;
        }
        let ticks = value_ticks(max);
        let ceiling = ticks.last().copied().unwrap_or(1).max(1) as f64;
        let x = |value: u64| left + value as f64 / ceiling * width;

        out.push_str(r#"<g class="axis">"#);
        for tick in &ticks {
            let at = x(*tick);
            let _ = write!(
                out,
                r#"<line class="grid" x1="{at:.1}" x2="{at:.1}" y1="{top:.1}" y2="{bottom:.1}"/><text x="{at:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
                bottom + 18.0,
                self.unit.label(*tick)
            );
        }
        out.push_str("</g><g class=\"data\">");
        for (index, (label, value)) in self.rows.iter().enumerate() {
            let row_top = top + BAR_ROW * index as f64;
            let shown: String = if label.chars().count() > BAR_LABEL_CHARS {
                let cut: String = label.chars().take(BAR_LABEL_CHARS - 1).collect();
                format!("{cut}\u{2026}")
            } else {
                label.clone()
            };
            let end = x(*value);
            let _ = write!(
                out,
                r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{}<title>{}</title></text><rect class="series {}" x="{left:.1}" y="{:.1}" width="{:.1}" height="{:.1}"><title>{}: {}</title></rect><text class="value" x="{:.1}" y="{:.1}">{}</text>"#,
                left - 8.0,
                row_top + 15.0,
                escape(&shown),
                escape(label),
                self.class,
                row_top + 3.0,
                (end - left).max(1.0),
                BAR_ROW - 6.0,
                escape(label),
                self.unit.label(*value),
                end + 6.0,
                row_top + 15.0,
                self.unit.label(*value)
            );
        }
        let _ = write!(
            out,
            r#"</g><g class="axis"><line class="baseline" x1="{left:.1}" x2="{left:.1}" y1="{top:.1}" y2="{bottom:.1}"/></g></svg>"#
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn named(values: &[&[u64]]) -> Vec<(String, Vec<u64>)> {
        values
            .iter()
            .enumerate()
            .map(|(index, values)| (format!("r{index}"), values.to_vec()))
            .collect()
    }

    #[test]
    fn value_ticks_are_round_and_cover_the_maximum() {
        for max in [
            0,
            1,
            7,
            10,
            99,
            101,
            999,
            1234,
            56_789,
            1_000_001,
            u64::MAX / 3,
            u64::MAX,
        ] {
            let ticks = value_ticks(max);
            assert!(ticks.len() >= 2, "{max}: {ticks:?}");
            assert!(ticks.len() <= 7, "{max}: {ticks:?}");
            assert_eq!(ticks[0], 0);
            let step = ticks[1];
            // The step is 1, 2 or 5 times a power of ten.
            let mut mantissa = step;
            while mantissa >= 10 && mantissa.is_multiple_of(10) {
                mantissa /= 10;
            }
            assert!([1, 2, 5].contains(&mantissa), "{max}: step {step}");
            assert!(ticks.windows(2).all(|pair| pair[1] - pair[0] == step));
            if max < u64::MAX / 2 {
                assert!(*ticks.last().unwrap() >= max, "{max}: {ticks:?}");
                // The tick before the last is under the maximum: no empty step on top.
                assert!(ticks[ticks.len() - 2] < max.max(1), "{max}: {ticks:?}");
            }
        }
        assert_eq!(value_ticks(1234), vec![0, 500, 1000, 1500]);
    }

    #[test]
    fn time_ticks_follow_the_bin_size() {
        // 2024-05-01 00:00 UTC, a day of hourly bins: ticks every three hours, hours as labels
        // and the date under midnight.
        let day = 1_714_521_600;
        let ticks = time_ticks(day, day + 86_400, 3600);
        assert!(ticks.len() >= 5 && ticks.len() <= 9, "{ticks:?}");
        assert!(ticks.iter().all(|t| t.at % 3600 == 0 && t.at >= day));
        assert_eq!(ticks[0].label, "00:00");
        assert_eq!(ticks[0].date.as_deref(), Some("05-01"));
        assert!(ticks[1].date.is_none());
        assert!(
            ticks
                .iter()
                .all(|t| t.label.len() == 5 && t.label.contains(':'))
        );
        // A month of daily bins: dates only, never finer than a day.
        let ticks = time_ticks(day, day + 31 * 86_400, 86_400);
        assert!(ticks.len() <= 9 && ticks.len() >= 3, "{ticks:?}");
        assert!(ticks.windows(2).all(|p| p[1].at - p[0].at >= 86_400));
        assert!(ticks.iter().all(|t| t.date.is_none() && t.label.len() == 5));
        // An hour of one-minute bins starting off a round time: ticks on round minutes.
        let ticks = time_ticks(day + 95, day + 95 + 3600, 60);
        assert!(ticks.iter().all(|t| t.at % 600 == 0), "{ticks:?}");
        assert!(ticks[0].at >= day + 95);
        // Years of weekly bins still give a bounded axis.
        let ticks = time_ticks(0, 10 * 365 * 86_400, 604_800);
        assert!(ticks.len() <= 9 && ticks.len() >= 2, "{}", ticks.len());
        assert!(ticks.iter().all(|t| t.label.len() == 10), "{ticks:?}");
        assert!(time_ticks(day, day, 3600).is_empty());
    }

    #[test]
    fn stacked_totals_are_the_sums_of_the_series() {
        let series = fold_series(
            named(&[
                &[1, 0, 5, 9],
                &[2, 3, 0, 1],
                &[0, 0, 0, 0],
                &[7, 1, 1, u64::MAX],
            ]),
            "rulesets",
        );
        let bands = stack(&series);
        for bin in 0..4 {
            let sum = series
                .iter()
                .fold(0u64, |sum, s| sum.saturating_add(s.values[bin]));
            assert_eq!(bands.last().unwrap()[bin].1, sum, "bin {bin}");
            assert_eq!(bands[0][bin].0, 0);
            // Each band starts where the one below ends and is as tall as its value.
            for layer in 1..series.len() {
                assert_eq!(bands[layer][bin].0, bands[layer - 1][bin].1);
            }
            for (layer, s) in series.iter().enumerate() {
                let (low, high) = bands[layer][bin];
                assert_eq!(high - low, s.values[bin].min(u64::MAX - low));
            }
        }
    }

    #[test]
    fn series_beyond_the_palette_fold_into_other() {
        // Twelve series; totals 1..=12, so the seven largest are r5..r11.
        let many: Vec<Vec<u64>> = (1..=12u64).map(|total| vec![total, 0]).collect();
        let refs: Vec<&[u64]> = many.iter().map(Vec::as_slice).collect();
        let series = fold_series(named(&refs), "rulesets");
        assert_eq!(series.len(), PALETTE_SIZE);
        let names: Vec<&str> = series.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(&names[..7], ["r5", "r6", "r7", "r8", "r9", "r10", "r11"]);
        let other = series.last().unwrap();
        assert_eq!(other.class, OTHER_CLASS);
        assert!(other.name.contains("5 more rulesets"), "{}", other.name);
        assert_eq!(other.values, vec![1 + 2 + 3 + 4 + 5, 0]);
        // Nothing lost: the folded series carry the same total.
        let total: u64 = series.iter().map(Series::total).sum();
        assert_eq!(total, (1..=12).sum::<u64>());
        // Distinct palette colours for the kept ones.
        let mut classes: Vec<&str> = series.iter().map(|s| s.class.as_str()).collect();
        classes.dedup();
        assert_eq!(classes.len(), PALETTE_SIZE);
        // At the palette size nothing folds.
        let refs: Vec<&[u64]> = many.iter().take(PALETTE_SIZE).map(Vec::as_slice).collect();
        let series = fold_series(named(&refs), "rulesets");
        assert!(series.iter().all(|s| s.class != OTHER_CLASS));
    }

    #[test]
    fn an_empty_chart_says_so() {
        let chart = TimeChart {
            id: "chart-x",
            title: "X",
            unit: Unit::Count,
            shape: Shape::Bars,
            since: 0,
            until: 0,
            bin_seconds: 3600,
            bins: &[],
            series: &[],
            note: None,
        }
        .render();
        assert!(chart.contains(EMPTY_TEXT));
        assert!(!chart.contains("NaN") && !chart.contains("inf"));
        assert!(!chart.contains("class=\"series"));
        let bars = BarChart {
            id: "chart-y",
            title: "Y",
            unit: Unit::Count,
            measure: "packets",
            class: "s0",
            rows: &[],
        }
        .render();
        assert!(bars.contains(EMPTY_TEXT));
        assert!(!bars.contains("NaN") && !bars.contains("inf"));
    }

    #[test]
    fn a_chart_draws_one_element_per_non_zero_band() {
        let series = fold_series(named(&[&[1, 0, 3], &[2, 2, 0]]), "rulesets");
        let bins = [(0, 60), (60, 60), (120, 60)];
        let chart = TimeChart {
            id: "chart-x",
            title: "X",
            unit: Unit::Count,
            shape: Shape::Bars,
            since: 0,
            until: 180,
            bin_seconds: 60,
            bins: &bins,
            series: &series,
            note: None,
        };
        let bars = chart.render();
        assert_eq!(bars.matches("<rect class=\"series").count(), 4);
        assert!(!bars.contains(EMPTY_TEXT) && !bars.contains("NaN"));
        let areas = TimeChart {
            shape: Shape::Area,
            ..chart
        }
        .render();
        assert_eq!(areas.matches("<path class=\"series").count(), 2);
    }
}
