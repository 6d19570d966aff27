//! The web UI (`/ui`), the embeddable build button (`/ui/embed.js`), run watch links and status
//! badges (`/badge/{target}.svg`); see docs/ui.md.
//!
//! The page is plain HTML, CSS and ES modules embedded in the binary ([`assets`]); it talks to
//! the `/v1` API with the session cookie of [`session`].

use axum::Router;
use axum::routing::{get, post};
use base64::Engine;
use rand::RngCore;
use sha2::{Digest, Sha256};

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

/// A new random secret for a session cookie or a watch link: 32 bytes, 43 url-safe characters.
pub(crate) fn new_secret() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// The stored form of a session or watch-link secret: its SHA-256 in lower-case hex.
pub(crate) fn secret_hash(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}
