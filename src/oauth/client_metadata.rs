//! Client ID Metadata Documents: a `client_id` that is an https URL names
//! a JSON document (client_name, redirect_uris) the server fetches.
//!
//! NOT YET IMPLEMENTED: fetching needs an HTTPS client with an SSRF guard
//! on the resolved address (docs/oauth.md, "Not done yet"). Until then the
//! server says so in its metadata (`client_id_metadata_document_supported:
//! false`) and such a client id is refused as `invalid_client`, so clients
//! fall back to dynamic registration.

use super::register::Client;

/// Whether the metadata advertises support.
pub const SUPPORTED: bool = false;

/// The (bounded) cache of fetched documents; empty until fetching exists.
pub struct Cache {
    #[allow(dead_code)]
    allow_private: bool,
}

impl Cache {
    pub fn new(allow_private: bool) -> Self {
        Cache { allow_private }
    }

    /// The client a metadata-document URL describes; `None` (refused).
    pub async fn resolve(&self, _url: &str) -> Option<Client> {
        None
    }
}
