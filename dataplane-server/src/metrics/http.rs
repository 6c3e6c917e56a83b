//! The metrics endpoint: `GET /metrics` over HTTP/1.1, in the OpenMetrics text format. Anything
//! else gets 404; a scrape that cannot be encoded gets 500 with the reason.

use std::{net::SocketAddr, sync::Arc};

use http_body_util::Full;
use hyper::{body::Incoming, Method, Request, Response, StatusCode};
use prometheus_client::registry::Registry;
use tracing::{debug, warn};

/// What OpenMetrics text is served as.
const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Serves `registry` on `listener` until the process ends (each connection on a task of its
/// own; a scrape's kernel reads on a blocking thread).
pub async fn serve(listener: tokio::net::TcpListener, registry: Arc<Registry>) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                warn!(error = %e, "metrics: accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let registry = registry.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| answer(req, registry.clone(), peer));
            let io = hyper_util::rt::TokioIo::new(stream);
            if let Err(e) = hyper::server::conn::http1::Builder::new().serve_connection(io, service).await {
                debug!(%peer, error = %e, "metrics connection ended");
            }
        });
    }
}

async fn answer(
    req: Request<Incoming>,
    registry: Arc<Registry>,
    peer: SocketAddr,
) -> Result<Response<Full<bytes::Bytes>>, std::convert::Infallible> {
    let reply = |code: StatusCode, ctype: &str, body: String| {
        let mut r = Response::new(Full::new(bytes::Bytes::from(body)));
        *r.status_mut() = code;
        if let Ok(v) = ctype.parse() {
            r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
        }
        Ok(r)
    };
    if req.method() != Method::GET || req.uri().path() != "/metrics" {
        return reply(StatusCode::NOT_FOUND, "text/plain", "only GET /metrics here\n".into());
    }
    let encoded = tokio::task::spawn_blocking(move || {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).map(|()| text)
    })
    .await;
    match encoded {
        Ok(Ok(text)) => reply(StatusCode::OK, CONTENT_TYPE, text),
        Ok(Err(e)) => {
            warn!(%peer, error = %e, "metrics: encoding failed");
            reply(StatusCode::INTERNAL_SERVER_ERROR, "text/plain", format!("encoding the metrics failed: {e}\n"))
        }
        Err(e) => reply(StatusCode::INTERNAL_SERVER_ERROR, "text/plain", format!("the scrape task failed: {e}\n")),
    }
}
