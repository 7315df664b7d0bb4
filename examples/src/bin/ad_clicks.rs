//! Ad impressions joined to their clicks within a time bound of event time
//! (a stream-stream join in the Streams API).
//!
//! `ad-clicks --config examples/config/ad-clicks.properties [--set k=v]...
//! [--until-end]` reads `impressions` (key: impression id, value: `{"ad":
//! "<text>", "ts": <epoch ms>}`) and `clicks` (key: impression id, value:
//! `{"ts": <epoch ms>}`), and sends to `ad-clicks-joined` (key: impression
//! id, value: `{"ad", "impression_ts", "click_ts"}`) every pair whose click
//! lies within `adclicks.window.ms` (default 10 min, inclusive) after its
//! impression. An inner join: with duplicates on either side, every pair.
//!
//! Both inputs are repartitioned by impression id, so they need not be
//! partitioned alike. Buffered records are dropped once the watermark
//! (trailing the newest record by `adclicks.max.out.of.order.ms`, default
//! 1 h) says no match can come; `--until-end` joins everything.

use gregor::TaskError;
use gregor::streams::{self, EventTime, JoinWindow, StreamApp};
use serde::{Deserialize, Serialize};
use std::process::ExitCode;
use std::time::Duration;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Impression {
    ad: String,
    ts: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Click {
    ts: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct AdClick {
    ad: String,
    impression_ts: i64,
    click_ts: i64,
}

fn describe(app: &mut StreamApp) -> Result<(), TaskError> {
    let window = app.setting_ms("adclicks.window.ms", Duration::from_secs(600))?;
    let disorder = app.setting_ms("adclicks.max.out.of.order.ms", Duration::from_secs(3600))?;
    let joined = app.output::<String, AdClick>("ad-clicks-joined");
    let impressions = app
        .input::<String, Impression>("impressions")
        .event_time(EventTime::extract(|_, i: &Impression, _| i.ts).max_out_of_order(disorder))
        .partition_by("impressions-by-id");
    let clicks = app
        .input::<String, Click>("clicks")
        .event_time(EventTime::extract(|_, c: &Click, _| c.ts).max_out_of_order(disorder))
        .partition_by("clicks-by-id");
    impressions
        .join(&clicks, "impressions-clicks", JoinWindow::within_after(window), |_, i, c| AdClick {
            ad: i.ad.clone(),
            impression_ts: i.ts,
            click_ts: c.ts,
        })
        .to(&joined);
    Ok(())
}

fn main() -> ExitCode {
    streams::app("ad-clicks", describe).main()
}

#[cfg(test)]
mod tests {
    use super::*;
    use gregor::Config;
    use gregor::testing::TestJob;

    #[test]
    fn every_click_within_the_window_after_its_impression_is_joined() {
        let text = include_str!("../../config/ad-clicks.properties");
        let mut config = Config::from_properties(text, "config").unwrap();
        config.set("task.processing.guarantee", "at-least-once");
        let mut job = TestJob::new(streams::app("ad-clicks", describe), config).unwrap();
        job.create_stream("impressions", 2).unwrap();
        job.create_stream("clicks", 3).unwrap();
        let imps = job.input::<String, Impression>("impressions").unwrap();
        let clicks = job.input::<String, Click>("clicks").unwrap();
        let t0 = 1_700_000_000_000;
        let imp = |ad: &str, ts: i64| Impression { ad: ad.into(), ts: t0 + ts };
        imps.send(0, "i1".into(), imp("shoes", 0)).unwrap();
        imps.send(1, "i2".into(), imp("hats", 1000)).unwrap();
        imps.send(1, "i1".into(), imp("shoes", 0)).unwrap(); // a duplicate impression
        clicks.send(2, "i1".into(), Click { ts: t0 + 600_000 }).unwrap(); // exactly at the bound
        clicks.send(0, "i2".into(), Click { ts: t0 + 601_001 }).unwrap(); // 1 ms too late
        clicks.send(1, "i2".into(), Click { ts: t0 + 999 }).unwrap(); // before the impression
        clicks.send(1, "i3".into(), Click { ts: t0 + 5 }).unwrap(); // no impression
        job.run_to_end().unwrap();
        let out = job.output::<String, AdClick>("ad-clicks-joined").unwrap();
        let got = out.key_values();
        let pair = AdClick { ad: "shoes".into(), impression_ts: t0, click_ts: t0 + 600_000 };
        assert_eq!(got, vec![("i1".to_owned(), Some(pair.clone())), ("i1".to_owned(), Some(pair))]);
    }
}
