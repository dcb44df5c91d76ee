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
