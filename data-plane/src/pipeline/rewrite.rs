//! What the backend is asked for: the path with the route's prefix taken
//! off (`strip_prefix`) and another put on (`add_prefix`). Pure.

/// The target (path and query) the backend gets, or `None` when it is the
/// client's unchanged. `prefix` is the route's matched prefix (`/api`, or
/// empty for `/`).
pub fn target(
    path_and_query: &str,
    prefix: &str,
    strip: bool,
    add: Option<&str>,
) -> Option<String> {
    if !strip && add.is_none() {
        return None;
    }
    let (path, query) = match path_and_query.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (path_and_query, None),
    };
    let mut rest = path;
    if strip && !prefix.is_empty() {
        // The route matched on a segment boundary: what follows is `/…` or nothing.
        rest = path.strip_prefix(prefix).unwrap_or(path);
    }
    let add = add.unwrap_or_default();
    let mut out = String::with_capacity(path_and_query.len() + add.len() + 1);
    out.push_str(add);
    if !rest.is_empty() {
        out.push_str(rest);
    } else if out.is_empty() {
        out.push('/');
    }
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_prefix_comes_off_and_another_goes_on() {
        assert_eq!(
            target("/api/x?q=1", "/api", true, None).as_deref(),
            Some("/x?q=1")
        );
        assert_eq!(target("/api", "/api", true, None).as_deref(), Some("/"));
        assert_eq!(target("/api/", "/api", true, None).as_deref(), Some("/"));
        assert_eq!(target("/api?x", "/api", true, None).as_deref(), Some("/?x"));
        assert_eq!(target("/x", "", true, None).as_deref(), Some("/x"));
        assert_eq!(
            target("/x?y", "", false, Some("/v1")).as_deref(),
            Some("/v1/x?y")
        );
        assert_eq!(
            target("/api/x", "/api", true, Some("/v2")).as_deref(),
            Some("/v2/x")
        );
        assert_eq!(
            target("/api", "/api", true, Some("/v2")).as_deref(),
            Some("/v2")
        );
        assert_eq!(target("/api/x", "/api", false, None), None);
    }
}
