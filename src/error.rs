//! What every stage's errors share. Each module keeps its own error enum (one per module
//! boundary, each cause kept as its `source`); this module gives them [`io_err`], the one way
//! an `io::Error` gets the context an enum keeps beside it, and [`causes`], the chain behind
//! an error, which callers search by type (a full disk, a TLS failure), never by text.

use std::error::Error;
use std::io;

/// An `io::Error` and what was being done when it happened (a description or a path). It is
/// no error itself: `?` turns it into the function's error enum, whose `From` impl puts it in
/// that enum's I/O variant.
#[derive(Debug)]
pub(crate) struct IoFailure<C> {
    pub context: C,
    pub source: io::Error,
}

/// `.map_err(io_err(context))?`: the failed call's `io::Error` with `context`.
pub(crate) fn io_err<C: Clone>(context: C) -> impl Fn(io::Error) -> IoFailure<C> {
    move |source| IoFailure {
        context: context.clone(),
        source,
    }
}

/// `e` and its causes, outermost first. An `io::Error` that carries another error (as rustls
/// and `io::Error::other` make them) is followed by that error itself, where `source()`
/// would skip to the carried error's own cause.
pub(crate) fn causes<'a>(
    e: &'a (dyn Error + 'static),
) -> impl Iterator<Item = &'a (dyn Error + 'static)> {
    std::iter::successors(Some(e), |&e| {
        match e.downcast_ref::<io::Error>().and_then(io::Error::get_ref) {
            Some(carried) => Some(carried as &(dyn Error + 'static)),
            None => e.source(),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer: {0}")]
    struct Outer(#[source] io::Error);

    #[derive(Debug, thiserror::Error)]
    #[error("carried")]
    struct Carried;

    #[test]
    fn causes_follow_sources_and_what_an_io_error_carries() {
        let e = Outer(io::Error::other(Carried));
        let chain: Vec<String> = causes(&e).map(|c| c.to_string()).collect();
        assert_eq!(chain, ["outer: carried", "carried", "carried"]);
        assert!(causes(&e).any(|c| c.is::<Carried>()));
    }

    #[test]
    fn io_err_keeps_the_error_and_its_context() {
        let f = io_err("writing x")(io::Error::from(io::ErrorKind::StorageFull));
        assert_eq!(f.context, "writing x");
        assert_eq!(f.source.kind(), io::ErrorKind::StorageFull);
    }
}
