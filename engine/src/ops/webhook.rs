//! Notifications: a run's outcome POSTed as JSON to webhooks (chat bridges, pagers, dashboards).
//! A webhook that cannot be reached is retried, then logged; it never changes the run's outcome.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::report::RunSummary;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Webhook {
    pub url: String,
    /// Which outcomes to send: `failure` (failed or cancelled runs) and/or `success`.
    #[serde(default = "both")]
    pub on: Vec<On>,
}

fn both() -> Vec<On> {
    vec![On::Failure, On::Success]
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum On {
    Failure,
    Success,
}

/// The JSON body: `event` is `run.succeeded` or `run.failed`; `summary` is the run report.
#[derive(Debug, Serialize)]
pub struct Payload<'a> {
    pub event: String,
    pub summary: &'a RunSummary,
    /// The HTML report, when one was written.
    pub report: Option<String>,
}

impl Webhook {
    pub fn wants(&self, summary: &RunSummary) -> bool {
        let on = if summary.state == "succeeded" {
            On::Success
        } else {
            On::Failure
        };
        self.on.contains(&on)
    }

    /// POSTs the payload: three attempts, 1 s then 2 s apart, 10 s each. Returns the HTTP status.
    pub fn send(&self, payload: &Payload) -> Result<u16, String> {
        let body = serde_json::to_vec(payload).map_err(|e| e.to_string())?;
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(10)))
            .http_status_as_error(false)
            .build()
            .into();
        let mut wait = Duration::from_secs(1);
        let mut last = String::new();
        for attempt in 1..=3 {
            match agent
                .post(&self.url)
                .header("content-type", "application/json")
                .send(&body[..])
            {
                Ok(r) if r.status().is_success() => return Ok(r.status().as_u16()),
                Ok(r) => last = format!("HTTP {}", r.status().as_u16()),
                Err(e) => last = e.to_string(),
            }
            if attempt < 3 {
                std::thread::sleep(wait);
                wait *= 2;
            }
        }
        Err(format!("webhook {}: {last} (3 attempts)", self.url))
    }
}

/// Sends a run's outcome to every webhook that wants it; failures are logged, not returned.
pub fn notify(hooks: &[Webhook], summary: &RunSummary, report: Option<String>) {
    let event = if summary.state == "succeeded" {
        "run.succeeded"
    } else {
        "run.failed"
    };
    let payload = Payload {
        event: event.into(),
        summary,
        report,
    };
    for h in hooks.iter().filter(|h| h.wants(summary)) {
        match h.send(&payload) {
            Ok(status) => tracing::info!("webhook {} answered {status}", h.url),
            Err(e) => {
                tracing::warn!("{e}");
                eprintln!("warning: {e}");
            }
        }
    }
}
