//! The retry layer against a scripted inner service, on paused time.

use std::{collections::VecDeque, sync::Arc, time::Duration};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use parking_lot::Mutex;
use tokio::time::Instant;
use tower::{service_fn, Layer, ServiceExt};

use super::{RetryLayer, RetryPolicy};
use crate::{
    body,
    budget::LocalBudget,
    context::{ProxyRequest, ProxyResponse, RequestContext},
    error::ProxyError,
    metrics::Metrics,
};

type Script = Vec<Result<(u16, Option<&'static str>), ProxyError>>;

const POLICY: RetryPolicy = RetryPolicy {
    max_attempts: 3,
    max_wait: Duration::from_secs(60),
    fault_attempts: 3,
    backoff_base: Duration::from_millis(100),
    backoff_max: Duration::from_secs(1),
};

fn reset() -> ProxyError {
    ProxyError::UpstreamUnavailable("connection closed before message completed".into())
}

/// Run one request through Retry over an inner service that plays `script`; the instants of
/// the calls it received and the result.
async fn run(
    policy: RetryPolicy,
    method: Method,
    script: Script,
) -> (Vec<Instant>, Result<ProxyResponse, ProxyError>, Metrics) {
    let calls = Arc::new(Mutex::new(Vec::new()));
    let script = Arc::new(Mutex::new(VecDeque::from(script)));
    let inner = {
        let calls = calls.clone();
        service_fn(move |_req: ProxyRequest| {
            calls.lock().push(Instant::now());
            let next = script.lock().pop_front().unwrap_or(Ok((200, None)));
            async move {
                let (status, retry_after) = next?;
                let mut resp = Response::new(body::full(Bytes::from_static(b"{}")));
                *resp.status_mut() = StatusCode::from_u16(status).unwrap();
                if let Some(ra) = retry_after {
                    resp.headers_mut().insert(http::header::RETRY_AFTER, ra.parse().unwrap());
                }
                Ok::<_, ProxyError>(resp)
            }
        })
    };
    let metrics = Metrics::new();
    let budget = Arc::new(LocalBudget::new(100, Duration::from_secs(60), 0.0));
    let svc = RetryLayer::new(policy, budget, metrics.clone()).layer(inner);
    let mut req = Request::new(Bytes::from_static(b"{\"a\":1}"));
    *req.method_mut() = method;
    req.extensions_mut().insert(RequestContext {
        id: Arc::from("req_test"),
        client: Arc::from("svc"),
        deadline: Instant::now() + Duration::from_secs(60),
    });
    let result = svc.oneshot(req).await;
    let calls = calls.lock().clone();
    (calls, result, metrics)
}

fn gaps(calls: &[Instant]) -> Vec<Duration> {
    calls.windows(2).map(|w| w[1] - w[0]).collect()
}

#[tokio::test(start_paused = true)]
async fn a_get_is_replayed_after_faults_with_growing_jittered_backoff() {
    let (calls, result, metrics) = run(POLICY, Method::GET, vec![Err(reset()), Ok((502, None))]).await;
    assert_eq!(result.unwrap().status(), 200);
    assert_eq!(calls.len(), 3);
    let g = gaps(&calls);
    assert!(g[0] >= Duration::from_millis(50) && g[0] <= Duration::from_millis(100), "{g:?}");
    assert!(g[1] >= Duration::from_millis(100) && g[1] <= Duration::from_millis(200), "{g:?}");
    assert_eq!(metrics.retries.with_label_values(&["reset"]).get(), 1);
    assert_eq!(metrics.retries.with_label_values(&["5xx"]).get(), 1);
}

#[tokio::test(start_paused = true)]
async fn every_idempotent_method_is_replayed_after_a_timeout() {
    for method in [Method::GET, Method::HEAD, Method::PUT, Method::DELETE, Method::OPTIONS] {
        let timeout = ProxyError::UpstreamTimeout { after: Duration::from_secs(1) };
        let (calls, result, _) = run(POLICY, method.clone(), vec![Err(timeout)]).await;
        assert_eq!(result.unwrap().status(), 200, "{method}");
        assert_eq!(calls.len(), 2, "{method}");
    }
}

#[tokio::test(start_paused = true)]
async fn post_and_patch_are_not_replayed_once_the_request_may_have_reached_the_upstream() {
    for method in [Method::POST, Method::PATCH] {
        let (calls, result, _) = run(POLICY, method.clone(), vec![Err(reset())]).await;
        assert!(matches!(result, Err(ProxyError::UpstreamUnavailable(_))), "{method}");
        assert_eq!(calls.len(), 1, "{method}: reset");
        let timeout = ProxyError::UpstreamTimeout { after: Duration::from_secs(1) };
        let (calls, result, _) = run(POLICY, method.clone(), vec![Err(timeout)]).await;
        assert!(matches!(result, Err(ProxyError::UpstreamTimeout { .. })), "{method}");
        assert_eq!(calls.len(), 1, "{method}: timeout");
        for status in [502, 503, 504] {
            let (calls, result, _) = run(POLICY, method.clone(), vec![Ok((status, None))]).await;
            assert_eq!(result.unwrap().status(), status, "{method}: passed on as it was");
            assert_eq!(calls.len(), 1, "{method}: {status}");
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_refused_connection_is_retried_for_any_method() {
    let refused = || ProxyError::UpstreamConnect("tcp connect error: Connection refused".into());
    let (calls, result, metrics) = run(POLICY, Method::POST, vec![Err(refused()), Err(refused())]).await;
    assert_eq!(result.unwrap().status(), 200);
    assert_eq!(calls.len(), 3);
    assert_eq!(metrics.retries.with_label_values(&["connect"]).get(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_503_retry_after_is_honoured_over_the_shorter_backoff() {
    let (calls, result, _) = run(POLICY, Method::GET, vec![Ok((503, Some("3")))]).await;
    assert_eq!(result.unwrap().status(), 200);
    assert_eq!(calls.len(), 2);
    assert!(gaps(&calls)[0] >= Duration::from_secs(3), "{:?}", gaps(&calls));
}

#[tokio::test(start_paused = true)]
async fn faults_stop_at_fault_attempts_and_the_last_answer_is_passed_on() {
    let script = vec![Ok((502, None)), Ok((504, None)), Ok((503, None)), Ok((502, None))];
    let (calls, result, _) = run(POLICY, Method::GET, script).await;
    assert_eq!(result.unwrap().status(), 503);
    assert_eq!(calls.len(), 3, "fault_attempts bounds the attempts");
}

#[tokio::test(start_paused = true)]
async fn a_retry_after_beyond_max_wait_is_passed_on_at_once() {
    let policy = RetryPolicy { max_wait: Duration::from_secs(2), ..POLICY };
    let (calls, result, _) = run(policy, Method::GET, vec![Ok((503, Some("30")))]).await;
    assert_eq!(result.unwrap().status(), 503);
    assert_eq!(calls.len(), 1);
}

#[tokio::test(start_paused = true)]
async fn other_errors_are_never_replayed() {
    let full = ProxyError::QueueFull { capacity: 1, retry_after: Duration::from_secs(1) };
    let (calls, result, _) = run(POLICY, Method::GET, vec![Err(full), Err(ProxyError::ShuttingDown)]).await;
    assert!(matches!(result, Err(ProxyError::QueueFull { .. })));
    assert_eq!(calls.len(), 1);
}
