//! Operations: the night as the unit of work ([`nights`]), the unattended service ([`serve`]:
//! cron schedules and data-arrival triggers), run reports ([`report`]) and notifications
//! ([`webhook`]).

pub mod cron;
pub mod nights;
pub mod report;
pub mod serve;
pub mod webhook;
