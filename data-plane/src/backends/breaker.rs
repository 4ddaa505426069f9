//! A circuit breaker per route backend: `threshold` consecutive failures open
//! it; after `timeout` it lets `half_open_requests` trial requests through,
//! which close it if they all succeed and reopen it on the first failure.

use std::time::SystemTime;

pub use portico_proto::settings::{BreakerPhase, BreakerSpec};
use portico_proto::time::unix_ms;
use portico_proto::v1;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Closed,
    Open { until: SystemTime },
    HalfOpen { in_flight: u32, succeeded: u32 },
}

#[derive(Debug, Clone)]
pub struct Breaker {
    pub state: State,
    pub failures: u32,
    pub last_failure: Option<SystemTime>,
}

impl Default for Breaker {
    fn default() -> Self {
        Breaker {
            state: State::Closed,
            failures: 0,
            last_failure: None,
        }
    }
}

impl Breaker {
    /// Whether a request may go to the backend now, without taking a trial slot.
    pub fn allows(&self, spec: &BreakerSpec, now: SystemTime) -> bool {
        match self.state {
            State::Closed => true,
            State::Open { until } => now >= until,
            State::HalfOpen {
                in_flight,
                succeeded,
            } => in_flight + succeeded < spec.half_open_requests,
        }
    }

    /// Takes the right to send one request; in half-open state, a trial slot.
    pub fn acquire(&mut self, spec: &BreakerSpec, now: SystemTime) -> bool {
        match self.state {
            State::Closed => true,
            State::Open { until } if now >= until => {
                self.state = State::HalfOpen {
                    in_flight: 1,
                    succeeded: 0,
                };
                true
            }
            State::Open { .. } => false,
            State::HalfOpen {
                in_flight,
                succeeded,
            } if in_flight + succeeded < spec.half_open_requests => {
                self.state = State::HalfOpen {
                    in_flight: in_flight + 1,
                    succeeded,
                };
                true
            }
            State::HalfOpen { .. } => false,
        }
    }

    /// Records how an acquired request went.
    pub fn record(&mut self, spec: &BreakerSpec, success: bool, now: SystemTime) {
        if !success {
            self.last_failure = Some(now);
        }
        match (self.state, success) {
            (State::Closed, true) => self.failures = 0,
            (State::Closed, false) => {
                self.failures += 1;
                if self.failures >= spec.threshold {
                    self.state = State::Open {
                        until: now + spec.timeout,
                    };
                }
            }
            (
                State::HalfOpen {
                    in_flight,
                    succeeded,
                },
                true,
            ) => {
                let succeeded = succeeded + 1;
                if succeeded >= spec.half_open_requests {
                    self.reset();
                } else {
                    self.state = State::HalfOpen {
                        in_flight: in_flight.saturating_sub(1),
                        succeeded,
                    };
                }
            }
            (State::HalfOpen { .. }, false) => {
                self.failures += 1;
                self.state = State::Open {
                    until: now + spec.timeout,
                };
            }
            // A request that started before the breaker opened.
            (State::Open { .. }, _) => {}
        }
    }

    /// An acquired request ended without saying anything about the backend
    /// (the client went away): frees a trial slot, counts nothing.
    pub fn release(&mut self) {
        if let State::HalfOpen {
            in_flight,
            succeeded,
        } = self.state
        {
            self.state = State::HalfOpen {
                in_flight: in_flight.saturating_sub(1),
                succeeded,
            };
        }
    }

    pub fn reset(&mut self) {
        self.state = State::Closed;
        self.failures = 0;
    }

    pub fn phase(&self) -> BreakerPhase {
        match self.state {
            State::Closed => BreakerPhase::Closed,
            State::Open { .. } => BreakerPhase::Open,
            State::HalfOpen { .. } => BreakerPhase::HalfOpen,
        }
    }

    pub fn name(&self) -> &'static str {
        self.phase().as_str()
    }

    /// As reported to the control plane.
    pub fn to_wire(&self, route_id: &str, backend_url: &str) -> v1::BreakerState {
        v1::BreakerState {
            route_id: route_id.to_string(),
            backend_url: backend_url.to_string(),
            state: self.name().to_string(),
            failures: self.failures,
            last_failure_unix_ms: self.last_failure.map_or(0, unix_ms),
            next_attempt_unix_ms: match self.state {
                State::Open { until } => unix_ms(until),
                _ => 0,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const SPEC: BreakerSpec = BreakerSpec {
        threshold: 3,
        timeout: Duration::from_secs(10),
        half_open_requests: 2,
    };

    #[test]
    fn opens_after_threshold_then_trials_decide() {
        let t0 = SystemTime::UNIX_EPOCH;
        let mut b = Breaker::default();
        for _ in 0..2 {
            assert!(b.acquire(&SPEC, t0));
            b.record(&SPEC, false, t0);
        }
        assert_eq!(b.name(), "closed");
        assert!(b.acquire(&SPEC, t0));
        b.record(&SPEC, false, t0);
        assert_eq!(b.name(), "open");
        assert!(!b.allows(&SPEC, t0 + Duration::from_secs(9)));
        let later = t0 + Duration::from_secs(10);
        assert!(b.acquire(&SPEC, later));
        assert!(b.acquire(&SPEC, later));
        assert!(!b.acquire(&SPEC, later), "only two trials");
        b.record(&SPEC, true, later);
        b.record(&SPEC, true, later);
        assert_eq!((b.name(), b.failures), ("closed", 0));
    }

    #[test]
    fn a_failed_trial_reopens() {
        let t0 = SystemTime::UNIX_EPOCH;
        let mut b = Breaker::default();
        for _ in 0..3 {
            b.acquire(&SPEC, t0);
            b.record(&SPEC, false, t0);
        }
        let later = t0 + Duration::from_secs(11);
        assert!(b.acquire(&SPEC, later));
        b.record(&SPEC, false, later);
        assert_eq!(
            b.state,
            State::Open {
                until: later + SPEC.timeout
            }
        );
        let mut ok = Breaker::default();
        ok.acquire(&SPEC, t0);
        ok.record(&SPEC, false, t0);
        ok.record(&SPEC, true, t0);
        assert_eq!(ok.failures, 0, "a success resets the consecutive count");
        let mut trial = Breaker::default();
        for _ in 0..3 {
            trial.acquire(&SPEC, t0);
            trial.record(&SPEC, false, t0);
        }
        assert!(trial.acquire(&SPEC, later) && trial.acquire(&SPEC, later));
        trial.release();
        assert!(
            trial.acquire(&SPEC, later),
            "a released slot can be taken again"
        );
    }
}
