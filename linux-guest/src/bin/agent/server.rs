//! The agent's HTTP/1.1 server (hyper on a single-threaded tokio runtime):
//! `/file` with the same content and `ETag` as the built-in guest's server,
//! `/health`, and the JSON endpoints of `linux_guest::api`. `GET` and `HEAD`,
//! and `POST /bench` (the bench runner), `POST /macro` (the Figure 3
//! stand-ins) and `POST /ttcp` (a ttcp transfer);
//! keep-alive and pipelining are hyper's.

use crate::bench::Runner;
use crate::figure::MacroRunner;
use crate::ttcp::TtcpRunner;
use crate::workload::Running;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{HeaderValue, CONTENT_TYPE, ETAG};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use linux_guest::api::{self, AgentStatus, BenchRequest, MacroRequest, TtcpRequest};
use linux_guest::params::GuestParams;
use std::convert::Infallible;
use std::sync::Arc;

struct State {
    file: Bytes,
    etag: HeaderValue,
    workload: Running,
    bench: Arc<Runner>,
    ttcp: Arc<TtcpRunner>,
    figure: Arc<MacroRunner>,
}

fn text(code: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *r.status_mut() = code;
    r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    r
}

fn json<T: serde::Serialize>(v: &T) -> Response<Full<Bytes>> {
    match serde_json::to_vec(v) {
        Ok(b) => {
            let mut r = Response::new(Full::new(Bytes::from(b)));
            r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            r
        }
        Err(_) => text(StatusCode::INTERNAL_SERVER_ERROR, "cannot encode the reply\n"),
    }
}

fn owned_text(code: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = code;
    r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    r
}

/// A JSON request body of at most `api::BENCH_REQUEST_MAX_BYTES`, or the
/// 400 reply that says why it is not one.
async fn read_json<T: serde::de::DeserializeOwned>(
    req: Request<hyper::body::Incoming>,
    what: &str,
) -> Result<T, Response<Full<Bytes>>> {
    let body = match Limited::new(req.into_body(), api::BENCH_REQUEST_MAX_BYTES).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => return Err(owned_text(StatusCode::BAD_REQUEST, format!("reading the request: {e}\n"))),
    };
    serde_json::from_slice(&body).map_err(|e| owned_text(StatusCode::BAD_REQUEST, format!("not a {what}: {e}\n")))
}

/// `POST /bench`: a [`BenchRequest`] body starts a run.
async fn start_bench(st: &State, req: Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
    let r: BenchRequest = match read_json(req, "bench request").await {
        Ok(r) => r,
        Err(reply) => return reply,
    };
    match st.bench.start(r) {
        Ok(s) => json(&s),
        Err(why) => owned_text(StatusCode::CONFLICT, format!("{why}\n")),
    }
}

/// `POST /macro`: a [`MacroRequest`] body starts the stand-ins.
async fn start_macro(st: &State, req: Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
    let r: MacroRequest = match read_json(req, "macro request").await {
        Ok(r) => r,
        Err(reply) => return reply,
    };
    match st.figure.start(r) {
        Ok(s) => json(&s),
        Err(why) => owned_text(StatusCode::CONFLICT, format!("{why}\n")),
    }
}

/// `POST /ttcp`: a [`TtcpRequest`] body starts a transfer.
async fn start_ttcp(st: &State, req: Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
    let r: TtcpRequest = match read_json(req, "ttcp request").await {
        Ok(r) => r,
        Err(reply) => return reply,
    };
    match st.ttcp.start(r) {
        Ok(s) => json(&s),
        Err(why) => owned_text(StatusCode::CONFLICT, format!("{why}\n")),
    }
}

fn uptime_ms() -> u64 {
    let s = std::fs::read_to_string("/proc/uptime").unwrap_or_default();
    let secs: f64 = s.split_whitespace().next().and_then(|t| t.parse().ok()).unwrap_or(0.0);
    (secs * 1000.0) as u64
}

fn handle(st: &State, req: &Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD (and POST /bench, /macro, /ttcp)\n");
    }
    match req.uri().path() {
        api::FILE_PATH => {
            // `Bytes` clones share the one buffer; hyper leaves out the body for HEAD.
            let mut r = Response::new(Full::new(st.file.clone()));
            r.headers_mut().insert(ETAG, st.etag.clone());
            r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
            r
        }
        api::HEALTH_PATH => text(StatusCode::OK, "ok\n"),
        api::STATUS_PATH => {
            let end = st.workload.end.lock().unwrap_or_else(|e| e.into_inner()).clone();
            json(&AgentStatus {
                uptime_ms: uptime_ms(),
                workload: st.workload.spec.clone(),
                workload_running: end.is_none(),
                workload_end: end,
                file_bytes: st.file.len() as u64,
            })
        }
        api::MEMCHECK_PATH => match &st.workload.memcheck {
            Some(m) => json(&m.report()),
            None => text(StatusCode::NOT_FOUND, "the workload is not memcheck\n"),
        },
        api::BENCH_PATH => json(&st.bench.status()),
        api::TTCP_PATH => json(&st.ttcp.status()),
        api::MACRO_PATH => json(&st.figure.status()),
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

/// Serves until the process ends; `nic` is the guest's NIC (for ttcp's MTU).
pub fn serve(p: &GuestParams, nic: String, workload: Running) -> Result<(), String> {
    let len = usize::try_from(p.file_bytes).map_err(|_| format!("file_bytes {} is too large", p.file_bytes))?;
    let mut file = vec![0u8; len];
    served_file::fill(&mut file, 0);
    let hash = served_file::fnv1a(served_file::FNV64_OFFSET, &file);
    let etag = HeaderValue::from_str(&format!("\"{hash:016x}\"")).map_err(|e| e.to_string())?;
    let st = Arc::new(State {
        file: Bytes::from(file),
        etag,
        workload,
        bench: Arc::new(Runner::default()),
        ttcp: Arc::new(TtcpRunner::new(nic)),
        figure: Arc::new(MacroRunner::default()),
    });
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| format!("tokio: {e}"))?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(("0.0.0.0", api::PORT))
            .await
            .map_err(|e| format!("binding port {}: {e}", api::PORT))?;
        eprintln!("migbench-agent: serving HTTP on port {}", api::PORT);
        loop {
            let (stream, _) = match listener.accept().await {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("migbench-agent: accept: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let st = st.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                    let st = st.clone();
                    async move {
                        let r = match (req.method() == Method::POST, req.uri().path()) {
                            (true, api::BENCH_PATH) => start_bench(&st, req).await,
                            (true, api::TTCP_PATH) => start_ttcp(&st, req).await,
                            (true, api::MACRO_PATH) => start_macro(&st, req).await,
                            _ => handle(&st, &req),
                        };
                        Ok::<_, Infallible>(r)
                    }
                });
                // A client that goes away mid-response is not an error of ours.
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await;
            });
        }
    })
}
