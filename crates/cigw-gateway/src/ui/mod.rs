//! The web UI (`/ui`), the embeddable build button (`/ui/embed.js`), run watch links and status
//! badges (`/badge/{target}.svg`); see docs/ui.md.
//!
//! The page is plain HTML, CSS and ES modules embedded in the binary ([`assets`]); it talks to
//! the `/v1` API with the session cookie of [`session`].

use axum::Router;
use axum::routing::{get, post};

use crate::state::AppState;

pub mod assets;
pub mod badge;
pub mod session;
pub mod watch;

/// The routes of the page, its session, watch links and badges.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/ui", get(assets::index))
        .route("/ui/", get(assets::index))
        .route("/ui/session", post(session::sign_in).get(session::current).delete(session::sign_out))
        .route("/ui/watch", post(watch::create))
        .route("/ui/watch/{run_id}", get(watch::stream))
        .route("/ui/{*path}", get(assets::asset))
        .route("/badge/{file}", get(badge::badge))
}
