//! The live console at `/`: a page and its script, built from the TypeScript client
//! (`clients/typescript/console`, `npm run build:console`) and committed under
//! `net/assets/console/`, so building the broker needs no Node. The page talks to this node
//! with the same API as any client: WebSocket, `/v1/admin/topics` and `/metrics`.

use bytes::Bytes;

use crate::api::reply::Reply;

static INDEX: &[u8] = include_bytes!("../../assets/console/index.html");
static APP: &[u8] = include_bytes!("../../assets/console/app.js");

/// What the page may load and connect to: this node only.
const CSP: &str = "default-src 'self'; connect-src 'self' ws: wss:; style-src 'self' 'unsafe-inline'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The console file at `path`, or 404.
pub(crate) fn serve(path: &str) -> Reply {
    let (content_type, body) = match path {
        "/" | "/console/" | "/console/index.html" => ("text/html; charset=utf-8", INDEX),
        "/console/app.js" => ("text/javascript; charset=utf-8", APP),
        _ => return Reply::text(404, Bytes::from_static(b"not found")),
    };
    Reply {
        status: 200,
        content_type,
        body: Bytes::from_static(body),
        headers: vec![
            ("Content-Security-Policy", CSP.to_owned()),
            ("X-Content-Type-Options", "nosniff".to_owned()),
            ("Cache-Control", "no-cache".to_owned()),
        ],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_loads_its_script_and_unknown_files_are_404() {
        let page = serve("/");
        assert_eq!(page.status, 200);
        let html = String::from_utf8_lossy(&page.body);
        assert!(html.contains("src=\"/console/app.js\""), "{html}");
        assert_eq!(serve("/console/app.js").status, 200);
        assert!(serve("/console/app.js")
            .content_type
            .starts_with("text/javascript"));
        assert_eq!(serve("/console/other.js").status, 404);
    }
}
