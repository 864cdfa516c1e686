use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use governor::clock::FakeRelativeClock;

use super::*;

fn spec(rate: u32, per: Duration, burst: u32, max_keys: u32) -> RateLimitSpec {
    RateLimitSpec {
        rate,
        per,
        burst,
        key: RateKey::Client,
        max_keys,
        shared: None,
    }
}

fn ip(n: u32) -> Key {
    Key::Ip(IpAddr::V4(Ipv4Addr::from(n)))
}

#[test]
fn a_bucket_refills_at_the_rate_and_says_how_long_to_wait() {
    let clock = FakeRelativeClock::default();
    let buckets =
        Buckets::new(&spec(10, Duration::from_secs(1), 3, 100), clock.clone()).expect("quota");
    assert_eq!(buckets.take(ip(1)), Ok(2));
    assert_eq!(buckets.take(ip(1)), Ok(1));
    assert_eq!(buckets.take(ip(1)), Ok(0));
    let wait = buckets.take(ip(1)).expect_err("empty");
    assert_eq!(wait, Duration::from_millis(100), "one token every 100 ms");
    // Another key has its own bucket.
    assert_eq!(buckets.take(ip(2)), Ok(2));
    clock.advance(Duration::from_millis(100));
    assert_eq!(buckets.take(ip(1)), Ok(0));
    assert!(buckets.take(ip(1)).is_err());
    assert_eq!(buckets.refill_time(3), 1, "300 ms rounds up to a second");
}

#[test]
fn a_million_keys_stay_within_max_keys() {
    let clock = FakeRelativeClock::default();
    let buckets = Buckets::new(&spec(1, Duration::from_secs(60), 1, 1000), clock).expect("quota");
    for n in 0..1_000_000 {
        assert_eq!(buckets.take(ip(n)), Ok(0), "a new key has a full bucket");
    }
    assert_eq!(buckets.len(), 1000, "the table never grows past max_keys");
    // The most recent keys are still there (spent); the oldest were evicted (full again).
    assert!(buckets.take(ip(999_999)).is_err());
    assert_eq!(buckets.take(ip(0)), Ok(0));
}

#[test]
fn reset_seconds_read_the_same_made_once_or_per_response() {
    for seconds in [0, 1, 59, 60, 61, 3_600, u64::MAX] {
        assert_eq!(
            seconds_value(seconds).to_str().ok(),
            Some(seconds.to_string().as_str())
        );
    }
}
