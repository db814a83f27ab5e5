//! What each operation of the API answers on success, read once from the OpenAPI document (the
//! contract) and found per call by the route that matched, so the event written with a change
//! records the status the caller gets.

use std::collections::HashMap;

use axum::http::Method;

/// Operations by method and route template (`/api/v4/managed_keys/{id}`).
pub(crate) struct Operations(HashMap<(Method, String), u16>);

impl Operations {
    /// Each operation's success status: its lowest documented 2xx but 202, which only a request
    /// awaiting approval answers (and that writes no change of its own).
    pub(crate) fn from_document(doc: &utoipa::openapi::OpenApi) -> Self {
        let mut map = HashMap::new();
        for (path, item) in &doc.paths.paths {
            let operations = [
                (Method::GET, &item.get),
                (Method::POST, &item.post),
                (Method::PUT, &item.put),
                (Method::PATCH, &item.patch),
                (Method::DELETE, &item.delete),
            ];
            for (method, operation) in operations {
                let Some(operation) = operation else { continue };
                let success = operation
                    .responses
                    .responses
                    .keys()
                    .filter_map(|status| status.parse::<u16>().ok())
                    .filter(|status| (200..300).contains(status) && *status != 202)
                    .min()
                    .unwrap_or(200);
                map.insert((method, path.clone()), success);
            }
        }
        Self(map)
    }

    /// The success status of the operation `route` matched (200 for what the document lacks).
    pub(crate) fn success_status(&self, method: &Method, route: Option<&str>) -> u16 {
        let method = if method == Method::HEAD {
            &Method::GET
        } else {
            method
        };
        route
            .and_then(|r| self.0.get(&(method.clone(), r.to_owned())))
            .copied()
            .unwrap_or(200)
    }
}
