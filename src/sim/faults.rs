//! Seeded fault injection. Every faulted request rolls every kind once (so a seed replays
//! the same outcomes), then: `reset` aborts the connection before anything happens, `http500`
//! answers an HTML error page before anything happens, `slow` delays the answer by `latency`
//! after the work is done (a charged upload whose answer comes too late). The upload-only
//! kinds (`e9006`, `e9009`, `charge_drop`) are handed to the upload handler as a [`Plan`].

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::reply::{AbortConnection, abort_response};
use super::state::Shared;

/// The upload-only faults rolled for this request.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Plan {
    pub e9006: bool,
    pub e9009: bool,
    pub charge_drop: bool,
}

const HTML_500: &str = "<html>\r\n<head><title>500 Internal Server Error</title></head>\r\n<body>\r\n\
<center><h1>500 Internal Server Error</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n";

/// Middleware on every faultable route (the API and result downloads, never `/__sim`).
pub(crate) async fn inject(
    State(st): State<Arc<Shared>>,
    mut req: Request,
    next: Next,
) -> Response {
    let [reset, http500, slow, e9006, e9009, charge_drop] = st.roll_faults();
    if reset {
        st.count_fault("reset");
        return abort_response();
    }
    if http500 {
        st.count_fault("http500");
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(header::CONTENT_TYPE, "text/html")],
            HTML_500,
        )
            .into_response();
    }
    req.extensions_mut().insert(Plan {
        e9006,
        e9009,
        charge_drop,
    });
    let resp = next.run(req).await;
    if slow && resp.extensions().get::<AbortConnection>().is_none() {
        st.count_fault("slow");
        tokio::time::sleep(st.latency).await;
    }
    resp
}
