//! Code every middleware of the crate shares word for word.

/// `get_ref`, `get_mut` and `into_inner` for a middleware `X<S>` whose inner
/// service is its field `inner` (the accessors tower-http's middleware have).
/// Used inside `impl<S> X<S> { .. }`.
macro_rules! inner_service_accessors {
    () => {
        /// The inner service.
        pub fn get_ref(&self) -> &S {
            &self.inner
        }

        /// The inner service, mutably.
        pub fn get_mut(&mut self) -> &mut S {
            &mut self.inner
        }

        /// Consumes `self`, returning the inner service.
        pub fn into_inner(self) -> S {
            self.inner
        }
    };
}

/// A middleware's own response body: `pub struct $name<B>` around the
/// crate-private `$inner`, forwarding `Body` (all three methods: the exact
/// size hint keeps fixed-length responses fixed-length). Each middleware
/// names its own, so no type of another module shows through.
macro_rules! opaque_body {
    ($(#[$m:meta])* $name:ident($inner:ty)) => {
        pin_project_lite::pin_project! {
            $(#[$m])*
            pub struct $name<B> {
                #[pin]
                inner: $inner,
            }
        }

        impl<B> $name<B> {
            #[inline(always)]
            pub(crate) fn new(inner: $inner) -> Self {
                Self { inner }
            }
        }

        impl<B> std::fmt::Debug for $name<B> {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_struct(stringify!($name)).finish_non_exhaustive()
            }
        }

        impl<B> http_body::Body for $name<B>
        where
            B: http_body::Body,
            B::Data: From<bytes::Bytes>,
        {
            type Data = B::Data;
            type Error = B::Error;

            #[inline(always)]
            fn poll_frame(
                self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
            ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
                self.project().inner.poll_frame(cx)
            }

            #[inline]
            fn is_end_stream(&self) -> bool {
                http_body::Body::is_end_stream(&self.inner)
            }

            #[inline]
            fn size_hint(&self) -> http_body::SizeHint {
                http_body::Body::size_hint(&self.inner)
            }
        }
    };
}

/// A middleware's own response future: `pub struct $name<F>` around the
/// crate-private `$inner`, forwarding `Future`; its responses have the body
/// `$body`.
macro_rules! opaque_future {
    ($(#[$m:meta])* $name:ident($inner:ty) -> $body:ident) => {
        pin_project_lite::pin_project! {
            $(#[$m])*
            #[must_use = "futures do nothing unless polled"]
            pub struct $name<F> {
                #[pin]
                inner: $inner,
            }
        }

        impl<F> $name<F> {
            #[inline(always)]
            pub(crate) fn new(inner: $inner) -> Self {
                Self { inner }
            }
        }

        impl<F> std::fmt::Debug for $name<F> {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_struct(stringify!($name)).finish_non_exhaustive()
            }
        }

        impl<F, B, E> std::future::Future for $name<F>
        where
            F: std::future::Future<Output = Result<http::Response<B>, E>>,
            B: http_body::Body,
            B::Data: From<bytes::Bytes>,
        {
            type Output = Result<http::Response<$body<B>>, E>;

            #[inline(always)]
            fn poll(
                self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
            ) -> std::task::Poll<Self::Output> {
                self.project().inner.poll(cx)
            }
        }
    };
}
