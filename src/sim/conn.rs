//! Serving connections by hand (hyper's HTTP/1 builder over a `TcpListener`) instead of
//! `axum::serve`, so a connection can be reset on purpose: when a handler answers with the
//! [`AbortConnection`] marker, the connection gets `SO_LINGER 0` and is dropped, which makes
//! the kernel send RST and the client see "connection reset" with no answer.

use std::convert::Infallible;
use std::os::fd::{AsRawFd, RawFd};
use std::pin::pin;
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::{Service, service_fn};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::reply::AbortConnection;

/// How long open connections get to finish their request at shutdown.
const DRAIN: Duration = Duration::from_secs(2);

/// Accepts until `shutdown` is cancelled; each connection runs in `tasks`.
pub(crate) async fn accept_loop(
    listener: TcpListener,
    app: Router,
    shutdown: CancellationToken,
    tasks: TaskTracker,
) {
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // Usually EMFILE: back off instead of spinning.
                    tracing::warn!("sim: accept failed: {e}; retrying");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let shutdown = shutdown.clone();
        tasks.spawn(async move {
            let fd = stream.as_raw_fd();
            let abort = CancellationToken::new();
            let inner = TowerToHyperService::new(app);
            let abort_svc = abort.clone();
            let svc = service_fn(move |req: hyper::Request<Incoming>| {
                let fut = inner.call(req);
                let abort = abort_svc.clone();
                async move {
                    let resp = fut.await?;
                    if resp.extensions().get::<AbortConnection>().is_some() {
                        abort.cancel();
                        // Never answer: the connection task drops us with the socket.
                        std::future::pending::<()>().await;
                    }
                    Ok::<_, Infallible>(resp)
                }
            });
            let mut builder = http1::Builder::new();
            // The sim writes its own Date header, from its own (possibly skewed) clock.
            builder.timer(TokioTimer::new()).auto_date_header(false);
            let mut conn = pin!(builder.serve_connection(TokioIo::new(stream), svc));
            tokio::select! {
                r = conn.as_mut() => {
                    if let Err(e) = r {
                        tracing::debug!("sim: connection from {peer} ended: {e}");
                    }
                }
                _ = abort.cancelled() => {
                    // The stream is still open (owned by `conn`), so `fd` is valid here.
                    set_linger_zero(fd);
                    tracing::info!("sim: reset connection from {peer} (fault injection)");
                }
                _ = shutdown.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(DRAIN, conn.as_mut()).await;
                }
            }
        });
    }
}

/// Makes the coming close() send RST instead of FIN.
fn set_linger_zero(fd: RawFd) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: `fd` is an open socket owned by the caller's connection for this whole call,
    // and `linger` is a valid, correctly sized value for SO_LINGER.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        tracing::warn!(
            "sim: could not set SO_LINGER on a connection being reset: {}",
            std::io::Error::last_os_error()
        );
    }
}
